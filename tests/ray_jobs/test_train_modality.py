import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from embedder.checkpoints import CheckpointMismatchError, load_autoencoder
from embedder.config import PatchConfig, load_config, to_dict
from embedder.curves import plot_training_curves
from embedder.data.shards import build_cube_shards
from embedder.data.testing import make_test_cube
from ray_jobs import train_modality
from ray_jobs.config import TrainModalityJobConfig
from ray_jobs.train_common import RunFolder

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

SMOKE = train_modality.default_config_path("s2", smoke=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def build_tiny_shards(root: str, storage_options: dict, *, n_cubes: int = 6) -> None:
    """6 cubes: the 375/83/42 deal gives 4 train, 1 val, 1 test cube."""
    patches = PatchConfig(s1only_window_acquisitions=20, s1only_temporal_stride=10)
    for i in range(n_cubes):
        cube = make_test_cube(i, size_px=24, n_dates=22, n_s1=40)
        build_cube_shards(
            cube, root, f"cube{i}", kinds=("fused",), cfg=patches, storage_options=storage_options
        )


def write_job_yaml(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ddp_run_on_s3_survives_a_lost_worker(ray_cluster, s3_bucket, tmp_path: Path) -> None:
    opts = dict(s3_bucket.storage_options)
    shard_root = f"{s3_bucket.url}/shards"
    build_tiny_shards(shard_root, opts)
    job = write_job_yaml(
        tmp_path,
        shard_root=shard_root,
        shard_storage_options=opts,
        run={"storage_path": f"{s3_bucket.url}/runs", "name": "s2-test", "storage_options": opts},
        train={"max_epochs": 2},
    )
    # The last of the 2 workers dies (os._exit) before reporting epoch 1; FailureConfig restarts the group.
    code = train_modality.main(["--sensor", "s2", "--config", str(job), "--kill-worker-at-epoch", "1"])
    assert code == 0

    fs = s3_bucket.filesystem()
    run = f"{s3_bucket.bucket}/runs/s2-test"
    folder = RunFolder(f"{s3_bucket.url}/runs/s2-test", opts)
    assert fs.exists(f"{run}/chaos_killed_epoch_1"), "the chaos kill did not happen"
    lines = folder.read_metrics()
    assert [line["epoch"] for line in lines] == [0, 1]  # every epoch once, despite the restart
    assert [line["resumed_from_epoch"] for line in lines] == [None, 1]  # resumed from epoch 0's checkpoint
    assert all(line["world_size"] == 2 for line in lines)
    for line in lines:
        assert line["lr"] > 0
        for split in ("train", "val"):
            for key in ("centre_mae", "s2/centre_mae", "s2/surroundings_mae", "s2/sam", "s2/ssim"):
                assert math.isfinite(line[split][key]), (split, key)

    # A checkpoint per epoch was written; Ray keeps the best and the latest (keep_checkpoints: 2).
    kept = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run) if p.rsplit("/", 1)[-1].startswith("epoch_"))
    assert "epoch_0001" in kept and 1 <= len(kept) <= 2
    best = folder.read_json("best.json")
    val = [line["val"]["centre_mae"] for line in lines]
    assert best["epoch"] == val.index(min(val))
    assert best["val_centre_mae"] == pytest.approx(min(val))
    assert best["checkpoint_dir"] in kept
    assert math.isfinite(best["test"]["centre_mae"]) and best["test"]["centre_mae"] > 0
    cfg = load_config(TrainModalityJobConfig, job)
    assert folder.read_json("config.json") == json.loads(json.dumps(to_dict(cfg)))

    # The best checkpoint is a stage-1 checkpoint of S2 (and refuses to be loaded as S1).
    local = tmp_path / "best.pt"
    fs.get(f"{run}/{best['checkpoint_dir']}/checkpoint.pt", str(local))
    ae = load_autoencoder(local, "s2")
    assert ae.cfg == cfg.model
    assert torch.load(local, weights_only=True)["epoch"] == best["epoch"]
    with pytest.raises(CheckpointMismatchError, match="s1"):
        load_autoencoder(local, "s1")

    # metrics.jsonl is what `embedder curves` plots.
    (tmp_path / "run").mkdir()
    fs.get(f"{run}/metrics.jsonl", str(tmp_path / "run" / "metrics.jsonl"))
    png = plot_training_curves([tmp_path / "run"], out_png=tmp_path / "curves.png")
    assert png.stat().st_size > 1000


def test_dense_variant_trains_through_the_same_job(ray_cluster, tmp_path: Path) -> None:
    from embedder.models.dense import DenseFrameEncoder

    shard_root = str(tmp_path / "shards")
    build_tiny_shards(shard_root, {})
    dense_yaml = train_modality.default_config_path("s2_dense", smoke=True)
    data = yaml.safe_load(dense_yaml.read_text())
    assert data["model"]["encoder"] == "dense"
    data.update(shard_root=shard_root, max_batches_per_epoch=3)
    data["run"] = {**data["run"], "storage_path": str(tmp_path / "runs"), "name": "s2-dense"}
    data["train"] = {**data["train"], "max_epochs": 1}
    data["workers"] = {**data["workers"], "num_workers": 1}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    assert train_modality.main(["--sensor", "s2", "--config", str(job)]) == 0
    folder = RunFolder(str(tmp_path / "runs" / "s2-dense"), {})
    (line,) = folder.read_metrics()
    assert math.isfinite(line["val"]["centre_mae"])
    best = folder.read_json("best.json")
    ae = load_autoencoder(tmp_path / "runs" / "s2-dense" / best["checkpoint_dir"] / "checkpoint.pt", "s2")
    assert ae.cfg.encoder == "dense" and isinstance(ae.frame_encoder, DenseFrameEncoder)
    # fine-tuning: a second run starts from the first one's best weights and records their hash
    first = tmp_path / "runs" / "s2-dense" / best["checkpoint_dir"] / "checkpoint.pt"
    data["run"] = {**data["run"], "name": "s2-dense-tuned"}
    data["init_checkpoint"] = str(tmp_path / "runs" / "s2-dense")  # a run folder: its best checkpoint
    data["train"] = {**data["train"], "lr": 1e-9}  # (almost) no update: the weights must be the first run's
    job.write_text(yaml.safe_dump(data))
    assert train_modality.main(["--sensor", "s2", "--config", str(job)]) == 0
    tuned_folder = tmp_path / "runs" / "s2-dense-tuned"
    tuned_ckpt = (
        tuned_folder
        / json.loads((tuned_folder / "best.json").read_text())["checkpoint_dir"]
        / "checkpoint.pt"
    )
    tuned = torch.load(tuned_ckpt, map_location="cpu", weights_only=True)
    import hashlib

    assert (
        tuned["config"]["train"]["init_from"]
        == "sha256:" + hashlib.sha256(first.read_bytes()).hexdigest()[:16]
    )
    before = ae.state_dict()["frame_encoder.stem.0.weight"]
    torch.testing.assert_close(tuned["model_state"]["frame_encoder.stem.0.weight"], before, atol=1e-6, rtol=0)
    # weights of another sensor are refused before Ray starts, naming what is wrong
    data["init_checkpoint"] = str(first)
    data["sensor"] = "s1"
    data["shard_kind"] = "fused"
    job.write_text(yaml.safe_dump(data))
    with pytest.raises(CheckpointMismatchError, match="sensors/bands"):
        train_modality.train(load_config(TrainModalityJobConfig, job))
