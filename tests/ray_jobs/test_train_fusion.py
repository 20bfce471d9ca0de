import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from embedder.checkpoints import load_fusion, save_checkpoint
from embedder.config import ModelConfig, PatchConfig
from embedder.data.shards import build_cube_shards
from embedder.data.testing import make_test_cube
from embedder.models import ModalityAutoencoder
from embedder.sensors import S1, S2
from embedder.training import seed_everything
from ray_jobs import train_fusion
from ray_jobs.train_common import RunFolder

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

SMOKE = train_fusion.default_config_path(smoke=True)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def build_tiny_shards(root: str, storage_options: dict, *, n_cubes: int = 6) -> None:
    """6 cubes: the 375/83/42 deal gives 4 train, 1 val, 1 test cube."""
    for i in range(n_cubes):
        cube = make_test_cube(i, size_px=24, n_dates=22)
        build_cube_shards(
            cube, root, f"cube{i}", kinds=("fused",), cfg=PatchConfig(), storage_options=storage_options
        )


def stage1_checkpoints(tmp_path: Path) -> dict[str, Path]:
    """Stage-1 checkpoints as train_modality leaves them: s2 a run folder with best.json, s1 a bare file."""
    seed_everything(0)
    model_cfg = ModelConfig.small()
    s2_run = tmp_path / "stage1-s2"
    save_checkpoint(s2_run / "epoch_0001" / "checkpoint.pt", ModalityAutoencoder(S2, cfg=model_cfg), epoch=1)
    (s2_run / "best.json").write_text(
        json.dumps({"checkpoint_dir": "epoch_0001", "checkpoint_file": "checkpoint.pt"})
    )
    s1_file = tmp_path / "s1.pt"
    save_checkpoint(s1_file, ModalityAutoencoder(S1, cfg=model_cfg), epoch=4)
    return {"s1": s1_file, "s2": s2_run}


def write_job_yaml(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_refuses_stage1_checkpoints_of_other_sensors_or_bands(tmp_path: Path, capsys) -> None:
    ckpts = stage1_checkpoints(tmp_path)
    run = {"storage_path": str(tmp_path / "runs"), "name": "fusion"}
    # The S2 run given as the S1 autoencoder.
    job = write_job_yaml(tmp_path, stage1={"s1": str(ckpts["s2"]), "s2": str(ckpts["s2"])}, run=run)
    assert train_fusion.main(["--config", str(job)]) == 2
    err = capsys.readouterr().err
    assert "stage1.s1" in err and "'s2': ['B02'" in err and "'s1': ['VV', 'VH']" in err
    # An S2 checkpoint trained with another band list (e.g. an older sensor table).
    old = torch.load(ckpts["s2"] / "epoch_0001" / "checkpoint.pt", weights_only=True)
    old["sensors"]["s2"] = [b for b in S2.bands if b != "B8A"]
    torch.save(old, tmp_path / "s2_old_bands.pt")
    job = write_job_yaml(
        tmp_path, stage1={"s1": str(ckpts["s1"]), "s2": str(tmp_path / "s2_old_bands.pt")}, run=run
    )
    assert train_fusion.main(["--config", str(job)]) == 2
    assert "stage1.s2" in capsys.readouterr().err
    # Nothing was started: the run folder was not even created.
    assert not (tmp_path / "runs" / "fusion").exists()


def test_ddp_fusion_on_gcs_from_stage1_runs(ray_cluster, gcs_bucket, tmp_path: Path) -> None:
    opts = dict(gcs_bucket.storage_options)
    fs = gcs_bucket.filesystem()
    build_tiny_shards(f"{gcs_bucket.url}/shards", opts)
    ckpts = stage1_checkpoints(tmp_path)
    fs.put(str(ckpts["s2"]), f"{gcs_bucket.bucket}/runs/", recursive=True)
    fs.put(str(ckpts["s1"]), f"{gcs_bucket.bucket}/elsewhere/s1.pt")
    job = write_job_yaml(
        tmp_path,
        shard_root=f"{gcs_bucket.url}/shards",
        shard_storage_options=opts,
        run={"storage_path": f"{gcs_bucket.url}/runs", "name": "fusion", "storage_options": opts},
        stage1={"s1": f"{gcs_bucket.url}/elsewhere/s1.pt", "s2": f"{gcs_bucket.url}/runs/stage1-s2"},
        stage1_storage_options=opts,
        fusion={"freeze_modalities": True},
        train={"max_epochs": 2},
    )
    assert train_fusion.main(["--config", str(job)]) == 0

    folder = RunFolder(f"{gcs_bucket.url}/runs/fusion", opts)
    lines = folder.read_metrics()
    assert [line["epoch"] for line in lines] == [0, 1] and all(line["world_size"] == 2 for line in lines)
    for line in lines:
        assert line["kind"] == "fusion" and line["sensors"] == ["s1", "s2"]
        for key in (
            "centre_mae",
            "s1/centre_mae",
            "s2/centre_mae",
            "s2/sam",
            "s2/ssim",
            "s1/surroundings_mae",
        ):
            assert math.isfinite(line["val"][key]), key
    best = folder.read_json("best.json")
    assert best["kind"] == "fusion" and set(best["sensors"]) == {"s1", "s2"}
    assert math.isfinite(best["test"]["centre_mae"])
    stage1 = folder.read_json("stage1.json")
    assert stage1["s1"]["epoch"] == 4 and stage1["s2"]["epoch"] == 1

    # Frozen mode under DDP: the fused model still holds exactly the stage-1 autoencoders.
    local = tmp_path / "fusion.pt"
    fs.get(f"{gcs_bucket.bucket}/runs/fusion/{best['checkpoint_dir']}/checkpoint.pt", str(local))
    fused = load_fusion(local)
    for name, path in (("s1", ckpts["s1"]), ("s2", ckpts["s2"] / "epoch_0001" / "checkpoint.pt")):
        stage1_state = torch.load(path, weights_only=True)["model_state"]
        fused_state = fused.autoencoders[name].state_dict()
        assert all(torch.equal(stage1_state[k], fused_state[k]) for k in stage1_state), name
    # ... while the fusion layers trained: AdamW holds state for exactly the non-autoencoder tensors.
    opt = torch.load(local, weights_only=True)["optimizer_state"]
    n_fusion_tensors = sum(1 for k, _ in fused.named_parameters() if not k.startswith("autoencoders."))
    assert len(opt["param_groups"][0]["params"]) == n_fusion_tensors == len(opt["state"])
    assert all(float(st["step"]) > 0 for st in opt["state"].values())
