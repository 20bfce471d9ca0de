"""The convergence harness on the tiny region: flat keys, floors of the scored windows, resume, weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from embedder.checkpoints import checkpoint_encoders, load_autoencoder, load_fusion
from embedder.evaluation.convergence import ConvergenceConfig, export_weights, run_convergence

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_tiny_run_reports_every_key_resumes_and_exports_weights(tmp_path: Path) -> None:
    cfg = ConvergenceConfig.tiny()
    result = run_convergence(tmp_path / "work", cfg, log=lambda m: None)
    flat = result.flat()
    for key in (
        "s1_centre_mae", "s1_floor_frame_mean", "s1_floor_temporal_mean", "s1_floor_pca_k", "s2_centre_mae",
        "s2_floor_frame_mean", "probe_emb_linear", "probe_bands_linear", "train_minutes_cpu_preset",
        "fusion_centre_mae", "seeds",
    ):  # fmt: skip
        assert key in flat, key
    assert flat["seeds"] == 1 and 0 <= flat["probe_emb_linear"] <= 1
    assert flat["s2_vs_floor"] == pytest.approx(flat["s2_centre_mae"] / flat["s2_floor_frame_mean"])
    # training minutes count only from stages that had every core to themselves; this one had one thread
    timing = result.seeds[0]["s2"]["timing"]
    assert timing["threads"] == 1 and timing["wall_s"] > 0
    timed = all(result.seeds[0][s]["timing"]["timed"] for s in ("s1", "s2", "fusion"))
    assert flat["train_minutes_timed_seeds"] == int(timed)
    assert (flat["train_minutes_cpu_preset"] is None) == (not timed)
    assert flat["seed0_train_minutes"] == pytest.approx(
        sum(result.seeds[0][s]["minutes"] for s in ("s1", "s2", "fusion"))
    )
    stage = result.seeds[0]["s2"]
    assert len(stage["val_curve"]) == len(stage["train_curve"]) >= 2  # 30 steps in epochs of 10 or fewer
    # a second run reuses the seed (no training): same figures
    again = run_convergence(tmp_path / "work", cfg, log=lambda m: None)
    assert again.flat()["s2_centre_mae"] == flat["s2_centre_mae"]
    # the weights: weights-only files the demo can fine-tune, with hashes in the manifest
    manifest = export_weights(result, 0, tmp_path / "weights")
    saved = json.loads((tmp_path / "weights" / "weights.json").read_text())
    assert saved["files"].keys() == {"s1", "s2", "fusion"} == manifest["files"].keys()
    assert all(v["sha256"].startswith("sha256:") for v in saved["files"].values())
    assert load_autoencoder(tmp_path / "weights" / "s2.pt", "s2").cfg == cfg.model
    assert load_fusion(tmp_path / "weights" / "fusion.pt").cfg == cfg.fusion
    assert checkpoint_encoders(tmp_path / "weights" / "fusion.pt") == {"s1": "paper", "s2": "paper"}
    import torch

    assert torch.load(tmp_path / "weights" / "s1.pt", weights_only=True)["optimizer_state"] is None
