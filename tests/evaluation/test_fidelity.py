"""Tests of embedder/evaluation/fidelity.py: the paper vs dense comparison on a tiny budget (FidelityConfig.tiny).

One 32 px scene over four months cut into three 16 px cubes (2 train, 1 validation), one epoch of two
steps per stage, one GPP tower on a 16 px scene: about half a minute. The numbers mean nothing at this
budget; the test checks the comparison really trains and scores two different encoders on the same data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from embedder.checkpoints import load_checkpoint
from embedder.config import ConfigError
from embedder.evaluation.fidelity import (
    RESULT_FILE,
    FidelityConfig,
    FidelityError,
    compare_encoders,
    train_variant,
)
from embedder.evaluation.region import prepare_region
from embedder.evaluation.towers import DEFAULT_GPP_DIR, FORCING

pytestmark = pytest.mark.usefixtures("torch_one_thread")

HAS_GPP = (DEFAULT_GPP_DIR / FORCING).is_file()


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_tiny_comparison_trains_and_scores_both_encoders(tmp_path: Path) -> None:
    # one stage of each encoder at its own learning rate (as --lrs-from-sweep sets them)
    cfg = FidelityConfig.tiny(gpp=HAS_GPP, stage_lrs=(("dense.s1", 3e-3), ("paper.fusion", 2e-3)))
    result = compare_encoders(tmp_path, cfg)
    flat = json.loads((tmp_path / RESULT_FILE).read_text())
    assert flat == json.loads(json.dumps(result.flat()))

    # two different models: the encoder each was built with, read back from the trained checkpoints
    assert (flat["paper_encoder"], flat["dense_encoder"]) == ("paper", "dense")
    assert (flat["paper_frame_encoder"], flat["dense_frame_encoder"]) == (
        "_FrameEncoder",
        "DenseFrameEncoder",
    )
    assert flat["paper_parameters"] != flat["dense_parameters"]
    for enc in ("paper", "dense"):
        for stage, sensor in (("stage1-s1", "s1"), ("stage1-s2", "s2")):
            ckpt = load_checkpoint(tmp_path / "runs" / enc / stage / "best.pt")
            assert ckpt["config"]["model"]["encoder"] == enc and list(ckpt["sensors"]) == [sensor]
            assert ckpt["config"]["train"]["lr"] == (3e-3 if (enc, sensor) == ("dense", "s1") else 1e-3)
        fusion = load_checkpoint(tmp_path / "runs" / enc / "stage2-fusion" / "best.pt", kind="fusion")
        assert {m["encoder"] for m in fusion["config"]["models"].values()} == {enc}
        assert fusion["config"]["train"]["lr"] == (2e-3 if enc == "paper" else 1e-3)
    assert (flat["dense_lr_s1"], flat["paper_lr_s1"], flat["paper_lr_fusion"]) == (3e-3, 1e-3, 2e-3)

    # every score exists and is a finite number; ratios are dense over paper
    keys = [f"{enc}_centre_mae_{k}" for enc in ("paper", "dense") for k in ("s1", "s2", "fusion")]
    keys += ["paper_landcover_acc", "dense_landcover_acc", "landcover_acc_bands", "landcover_acc_majority"]
    if HAS_GPP:
        keys += ["paper_gpp_r2", "dense_gpp_r2", "bands_gpp_r2"]
    else:
        assert flat["paper_gpp_r2"] is None and "no FluxDataKit" in flat["gpp_note"]
    assert all(_finite(flat[k]) for k in keys), {k: flat[k] for k in keys}
    assert all(flat[k] > 0 for k in keys if "centre_mae" in k)
    assert all(0.0 <= flat[k] <= 1.0 for k in keys if "landcover" in k)
    for k in ("s1", "s2", "fusion"):
        assert flat[f"dense_vs_paper_mae_{k}"] == pytest.approx(
            flat[f"dense_centre_mae_{k}"] / flat[f"paper_centre_mae_{k}"]
        )
    # the same budget and data for both, recorded with the result
    assert (flat["epochs"], flat["steps_per_epoch"], flat["batch_size"], flat["cubes"]) == (1, 2, 4, 3)
    assert flat["lr"] == 1e-3  # TrainConfig.small's, for both
    assert flat["eval_split"] == "val" and flat["shards_cubes_train"] == 2 and flat["shards_cubes_val"] == 1
    assert flat["seconds_total"] > 0 and flat["seconds_paper_train"] > 0
    assert "| centre MAE S2, val |" in result.table()

    # the region is reused as it is for the same settings
    manifest = tmp_path / "region" / "region.json"
    before = manifest.stat().st_mtime_ns
    assert prepare_region(tmp_path / "region", cfg).manifest_path == manifest
    assert manifest.stat().st_mtime_ns == before

    with pytest.raises(FidelityError, match="encoder 'sparse' is unknown"):
        train_variant("sparse", tmp_path / "shards", tmp_path / "x", cfg, eval_split="val")
    with pytest.raises(FidelityError, match=r"\['test'\] split"):
        train_variant("dense", tmp_path / "shards", tmp_path / "x", cfg, eval_split="test")


def test_config_refuses_budgets_without_a_validation_split() -> None:
    with pytest.raises(ConfigError, match="cubes = 2"):
        FidelityConfig(cubes=2)
    with pytest.raises(ConfigError, match="steps_per_epoch = 0"):
        FidelityConfig(steps_per_epoch=0)
    with pytest.raises(ConfigError, match="lr = 5"):
        FidelityConfig(lr=5.0)
    assert FidelityConfig().n_scenes == 2 and FidelityConfig(cubes=9).n_scenes == 3
    with pytest.raises(ConfigError, match=r"stage_lrs: \('dense.s3', 0.001\)"):
        FidelityConfig(stage_lrs=(("dense.s3", 1e-3),))
    with pytest.raises(ConfigError, match=r"stage_lrs: \('paper.s1', 2.0\)"):
        FidelityConfig(stage_lrs=(("paper.s1", 2.0),))
    own = FidelityConfig(stage_lrs=(("dense.s1", 3e-4),))
    assert (own.lr_for("dense", "s1"), own.lr_for("paper", "s1"), own.lr_for("dense", "fusion")) == (
        3e-4, 1e-3, 1e-3,
    )  # fmt: skip
    assert dataclasses.replace(own, lr=2e-3).lr_for("paper", "s2") == 2e-3


def test_spec_preset_cuts_spec_windows_from_a_year_of_cubes() -> None:
    """Non-smoke runs sample as SPEC 2 says, and the preset's cubes are large enough to give windows."""
    import numpy as np
    import xarray as xr

    from embedder.config import PatchConfig
    from embedder.data.patches import sample_fused_patches
    from embedder.sensors import S1, S2

    spec, smoke = FidelityConfig.spec(), FidelityConfig()
    assert spec.patches == PatchConfig() and spec.sampling == "spec" and smoke.sampling == "smoke"
    assert FidelityConfig.spec(cubes=32).cubes == 32 and FidelityConfig.spec().cubes_per_scene == 4
    # a year of 5-day S2 with ~30 % of dates cloudy: 20-usable-date windows 17 apart, positions 9 px apart
    rng = np.random.default_rng(0)
    time = np.arange("2021-07-01", "2022-07-01", 5, dtype="datetime64[D]").astype("datetime64[ns]")
    usable = rng.random(time.size) > 0.3
    px = spec.cube_px
    cube = xr.Dataset(
        {
            "s2": (
                ("time", S2.band_dim, "y", "x"),
                np.full((time.size, S2.n_channels, px, px), 0.2, np.float32),
            ),
            "s1": (
                ("time", S1.band_dim, "y", "x"),
                np.full((time.size, S1.n_channels, px, px), 0.1, np.float32),
            ),
            "s2_usable": ("time", usable),
            "s1_time": ("time", time),
        },
        coords={"time": time},
    )
    samples, _ = sample_fused_patches(cube, cfg=spec.patches, seed=0)
    windows = (int(usable.sum()) - 20) // 17 + 1
    positions = ((px - 15) // 9 + 1) ** 2
    assert windows >= 2 and len(samples["s2"]) == windows * positions  # every window kept (short gaps)
