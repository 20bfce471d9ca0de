import dataclasses
import json

import matplotlib.image
import pytest
import torch

from embedder import cli
from embedder.config import ModelConfig, TrainConfig
from embedder.curves import CurvesError, plot_training_curves, read_metrics
from embedder.models import ModalityAutoencoder
from embedder.sensors import S1
from embedder.training import ModalityObjective, fit

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 11, 2, 15, 15, generator=g)
    return {"s1": x, "s1_mask": torch.ones_like(x, dtype=torch.bool), "s1_gaps": torch.full((2, 10), 6.0)}


def _write_run(run_dir, sensor, metrics, epochs=4):
    run_dir.mkdir(parents=True)
    with (run_dir / "metrics.jsonl").open("w") as fh:
        for e in range(epochs):
            line = {"epoch": e, "lr": 1e-4}
            for split, scale in (("train", 1.0), ("val", 1.2)):
                line[split] = {f"{sensor}/{m}": scale / (e + 1) for m in metrics} | {
                    "centre_mae": scale / (e + 1)
                }
            fh.write(json.dumps(line) + "\n")


def test_stage1_runs_to_png(tmp_path):
    _write_run(tmp_path / "s1", "s1", ["centre_mae", "surroundings_mae"])
    _write_run(tmp_path / "s2", "s2", ["centre_mae", "surroundings_mae", "sam", "ssim"])
    out = plot_training_curves([tmp_path / "s2", tmp_path / "s1"], out_png=tmp_path / "fig" / "curves.png")
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 500  # 4 rows x 2 sensor columns
    assert image.std() > 0.01  # not blank


def test_cli_on_a_real_fit_run(tmp_path, capsys):
    cfg = dataclasses.replace(TrainConfig.small(), max_epochs=2)
    fit(
        ModalityAutoencoder(S1, cfg=ModelConfig.small()),
        [_batch(0)],
        [_batch(1)],
        objective=ModalityObjective(S1),
        cfg=cfg,
        run_dir=tmp_path / "run",
    )
    assert len(read_metrics(tmp_path / "run")) == 2
    assert cli.main(["curves", str(tmp_path / "run"), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert str(tmp_path / "c.png") in capsys.readouterr().out


def test_errors(tmp_path):
    with pytest.raises(CurvesError, match=r"metrics\.jsonl' does not exist"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(CurvesError, match="line 2 is not JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 0, "train": {"loss": 1.0}}\n')
    with pytest.raises(CurvesError, match="no per-sensor"):
        plot_training_curves([tmp_path], out_png=tmp_path / "x.png")
    with pytest.raises(SystemExit) as exc:
        cli.main(["curves", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.png")])
    assert exc.value.code == 2


def test_centre_panels_draw_the_floors(tmp_path):
    import numpy as np

    _write_run(tmp_path / "plain", "s1", ["centre_mae", "surroundings_mae"])
    floored = tmp_path / "floored"
    floored.mkdir()
    lines = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    with (floored / "metrics.jsonl").open("w") as fh:
        for line in lines:
            line["floors"] = {"s1": {"frame_mean": 0.6, "temporal_mean": 0.3, "pca_k": 0.2}}
            fh.write(json.dumps(line) + "\n")
    a = matplotlib.image.imread(plot_training_curves([tmp_path / "plain"], out_png=tmp_path / "a.png"))
    b = matplotlib.image.imread(plot_training_curves([floored], out_png=tmp_path / "b.png"))
    assert a.shape == b.shape
    top = slice(0, a.shape[0] // 2)  # the centre-MAE panel: floor lines and their legend entries
    bottom = slice(a.shape[0] // 2, None)  # surroundings: no floors
    assert np.abs(a[top] - b[top]).sum() > 100
    np.testing.assert_array_equal(a[bottom], b[bottom])
