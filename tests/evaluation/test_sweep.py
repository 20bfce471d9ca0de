"""Tests of embedder/evaluation/sweep.py: the learning-rate x seed sweep of paper vs dense (issue 9).

The selection and ratio logic is checked on hand-made records (where the validation and the held-out
split disagree, so choosing on the wrong one fails the test); one tiny real sweep (two learning rates,
two seeds, both sensors and encoders on the FidelityConfig.tiny data, two worker processes) checks that
every run trains, the JSON and PNG are written, the best learning rate is the validation argmin and a
second call reuses every run; a run that cannot train is recorded with its reason and trained again.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from embedder.config import ConfigError
from embedder.evaluation.fidelity import (
    FidelityConfig,
    FidelityError,
    compare_encoders,
    score_stage1,
    train_stage1,
)
from embedder.evaluation.sweep import (
    RESULT_FILE,
    RunRecord,
    SweepConfig,
    best_checkpoints,
    best_lrs,
    plot_sweep,
    summarise,
    sweep_encoders,
    val_curve,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rec(enc: str, sensor: str, lr: float, seed: int, val: float, held: float) -> RunRecord:
    return RunRecord(
        encoder=enc,
        sensor=sensor,
        lr=lr,
        seed=seed,
        val_centre_mae=val,
        heldout_centre_mae=held,
        best_epoch=0,
    )


def test_summarise_picks_the_learning_rate_on_validation_and_divides_best_by_best() -> None:
    lrs = (1e-3, 3e-3)
    records = [
        # paper: 1e-3 is better on validation, 3e-3 would be better on the held-out split
        _rec("paper", "s1", 1e-3, 1, 0.10, 0.20),
        _rec("paper", "s1", 1e-3, 2, 0.12, 0.22),
        _rec("paper", "s1", 3e-3, 1, 0.15, 0.10),
        _rec("paper", "s1", 3e-3, 2, 0.15, 0.10),
        # dense: 3e-3 best on validation
        _rec("dense", "s1", 1e-3, 1, 0.30, 0.30),
        _rec("dense", "s1", 1e-3, 2, 0.30, 0.30),
        _rec("dense", "s1", 3e-3, 1, 0.11, 0.21),
        _rec("dense", "s1", 3e-3, 2, 0.11, 0.25),
    ]
    s = summarise(records, lrs=lrs, sensors=("s1",))
    assert s["best_lr"] == {("paper", "s1"): 1e-3, ("dense", "s1"): 3e-3}
    assert s["ratio"]["s1"] == pytest.approx(0.23 / 0.21)
    assert s["ratio_by_seed"]["s1"] == pytest.approx({1: 0.21 / 0.20, 2: 0.25 / 0.22})
    assert s["ratio_at_lr"][("s1", 1e-3)] == pytest.approx(0.30 / 0.21)
    cell = s["cells"][("paper", "s1", 1e-3)]
    assert (cell.n_ok, cell.n_failed) == (2, 0)
    assert cell.heldout_sd == pytest.approx(math.sqrt(((0.20 - 0.21) ** 2 + (0.22 - 0.21) ** 2) / 1))


def test_summarise_never_picks_a_learning_rate_with_a_failed_seed() -> None:
    lrs = (1e-3, 3e-3)
    failed = RunRecord(
        encoder="dense", sensor="s2", lr=3e-3, seed=2, error="FidelityError: training diverged"
    )
    diverged = dataclasses.replace(_rec("paper", "s2", 3e-3, 2, float("nan"), float("nan")))
    records = [
        _rec("paper", "s2", 1e-3, 1, 0.05, 0.05),
        _rec("paper", "s2", 1e-3, 2, 0.05, 0.05),
        _rec("paper", "s2", 3e-3, 1, 0.01, 0.01),
        diverged,
        _rec("dense", "s2", 1e-3, 1, 0.06, 0.06),
        _rec("dense", "s2", 1e-3, 2, 0.06, 0.06),
        _rec("dense", "s2", 3e-3, 1, 0.01, 0.01),
        failed,
    ]
    assert not failed.ok and not diverged.ok
    s = summarise(records, lrs=lrs, sensors=("s2",))
    assert s["best_lr"] == {("paper", "s2"): 1e-3, ("dense", "s2"): 1e-3}
    assert s["ratio"]["s2"] == pytest.approx(0.06 / 0.05)
    assert s["cells"][("dense", "s2", 3e-3)].n_failed == 1
    # nothing usable on one side: no best, no ratio
    none = summarise([r for r in records if r.encoder == "paper"], lrs=lrs, sensors=("s2",))
    assert none["best_lr"][("dense", "s2")] is None and math.isnan(none["ratio"]["s2"])


def test_sweep_config_refuses_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"lrs = \(0.001, 0.001\)"):
        SweepConfig(lrs=(1e-3, 1e-3))
    with pytest.raises(ConfigError, match="lrs = "):
        SweepConfig(lrs=(2.0,))
    with pytest.raises(ConfigError, match="seeds = "):
        SweepConfig(seeds=())
    with pytest.raises(ConfigError, match=r"sensors = \('s3',\)"):
        SweepConfig(sensors=("s3",))
    with pytest.raises(ConfigError, match="workers = 0"):
        SweepConfig(workers=0)
    with pytest.raises(ConfigError, match=r"only: \('dense', 's1', 0.01\) needs"):
        SweepConfig(lrs=(1e-3,), only=(("dense", "s1", 1e-2),))


def test_tiny_sweep_trains_every_run_picks_on_validation_and_resumes(tmp_path: Path) -> None:
    cfg = SweepConfig(base=FidelityConfig.tiny(gpp=False), lrs=(1e-3, 3e-3), seeds=(1, 2), workers=2)
    lines: list[str] = []
    result = sweep_encoders(tmp_path, cfg, log=lines.append)
    assert len(result.records) == 2 * 2 * 2 * 2 and all(r.ok for r in result.records), result.records
    assert result.reused == 0 and sum("seed" in line for line in lines) == 16
    # every run has its own checkpoint, trained with its own learning rate and seed
    ckpt = torch.load(
        tmp_path / "runs" / "dense" / "s1" / "e1-s2-b4-lr0.003-seed2" / "best.pt",
        map_location="cpu",
        weights_only=False,
    )
    assert ckpt["config"]["train"]["lr"] == 3e-3 and ckpt["config"]["train"]["seed"] == 2
    assert ckpt["config"]["model"]["encoder"] == "dense"
    rec = next(r for r in result.records if (r.encoder, r.sensor, r.lr, r.seed) == ("dense", "s1", 3e-3, 2))
    curve = val_curve(result, "dense", "s1", 3e-3, 2)
    assert len(curve) == cfg.base.epochs and min(curve) == pytest.approx(rec.val_centre_mae)

    flat = json.loads((tmp_path / RESULT_FILE).read_text())
    for enc in ("paper", "dense"):
        for sensor in ("s1", "s2"):
            means = {
                lr: sum(
                    r.val_centre_mae or 0.0
                    for r in result.records
                    if (r.encoder, r.sensor, r.lr) == (enc, sensor, lr)
                )
                / 2
                for lr in cfg.lrs
            }
            assert flat[f"{enc}_best_lr_{sensor}"] == min(means, key=means.__getitem__)
            assert flat[f"{enc}_centre_mae_{sensor}"] > 0
    for sensor in ("s1", "s2"):
        assert flat[f"dense_vs_paper_mae_{sensor}"] == pytest.approx(
            flat[f"dense_centre_mae_{sensor}"] / flat[f"paper_centre_mae_{sensor}"]
        )
        assert flat[f"meets_target_{sensor}"] == (flat[f"dense_vs_paper_mae_{sensor}"] <= 1.10)
        assert flat[f"dense_vs_paper_mae_{sensor}_seed_min"] <= flat[f"dense_vs_paper_mae_{sensor}_seed_max"]
        assert flat[f"baseline_centre_mae_{sensor}"] > 0 and flat[f"baseline_val_centre_mae_{sensor}"] > 0
    assert (flat["runs"], flat["runs_ok"], flat["runs_failed"], flat["lrs"]) == (16, 16, 0, "0.001,0.003")
    assert "best vs best" in result.table()
    png = plot_sweep(result, tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the comparison builds its fusion over the sweep's best stage-1 autoencoders, without retraining them
    best = best_checkpoints(tmp_path, seed=1)
    assert (
        best["dense"]["s1"]
        == tmp_path / "runs" / "dense" / "s1" / f"e1-s2-b4-lr{flat['dense_best_lr_s1']:g}-seed1" / "best.pt"
    )
    compared = compare_encoders(tmp_path, cfg.base, stage1_checkpoints=best).flat()
    for enc in ("paper", "dense"):
        assert not (tmp_path / "runs" / enc / "stage1-s1").exists()
        assert (tmp_path / "runs" / enc / "stage2-fusion" / "best.pt").is_file()
        for sensor in ("s1", "s2"):
            lr = flat[f"{enc}_best_lr_{sensor}"]
            rec = next(
                r for r in result.records if (r.encoder, r.sensor, r.lr, r.seed) == (enc, sensor, lr, 1)
            )
            assert compared[f"{enc}_centre_mae_{sensor}"] == pytest.approx(rec.heldout_centre_mae, rel=1e-6)
            assert compared[f"{enc}_stage1_checkpoint_{sensor}"] == str(best[enc][sensor])
    with pytest.raises(FidelityError, match="holds the 'paper' encoder, not 'dense'"):
        score_stage1("dense", "s1", best["paper"]["s1"], tmp_path / "shards", cfg.base, eval_split="val")

    # each encoder and sensor only at its best learning rate: the grid's runs are reused, nothing else runs
    at_best = SweepConfig.at_best_lrs(best_lrs(tmp_path / RESULT_FILE), base=cfg.base, seeds=(1,), workers=1)
    assert len(at_best.only) == 4 and set(at_best.lrs) <= set(cfg.lrs)
    narrow = sweep_encoders(tmp_path, at_best)
    assert (len(narrow.records), narrow.reused) == (4, 4)
    assert narrow.summary["best_lr"] == result.summary["best_lr"]
    assert "not run" in narrow.table() or len(at_best.lrs) == 1

    again = sweep_encoders(tmp_path, cfg)
    assert again.reused == 16 and again.records == result.records
    # report only: runs not done yet are recorded as such, nothing is trained
    more = dataclasses.replace(cfg, seeds=(1, 2, 3))
    peek = sweep_encoders(tmp_path, more, train=False)
    assert peek.reused == 16 and sum(not r.ok for r in peek.records) == 8
    assert all("not trained" in r.error for r in peek.records if r.seed == 3)
    assert not (tmp_path / "runs" / "dense" / "s1" / "e1-s2-b4-lr0.003-seed3").exists()
    # a changed budget is a different run: nothing reused
    bigger = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, steps_per_epoch=3), seeds=(1,))
    assert sweep_encoders(tmp_path, bigger).reused == 0


def test_a_run_that_cannot_train_is_recorded_with_its_reason_and_retried(tmp_path: Path) -> None:
    from embedder.evaluation.sweep import RUN_RESULT, _reusable, _settings, _train_one

    base = FidelityConfig.tiny(gpp=False)
    run = tmp_path / "run"
    rec = _train_one(base, str(tmp_path / "no-shards"), str(run), "dense", "s1", 1e-3, 1, "val")
    assert not rec.ok and rec.error.startswith("ShardError: no shard root at") and "no-shards" in rec.error
    stored = json.loads((run / RUN_RESULT).read_text())
    assert stored["record"]["error"] == rec.error
    assert _reusable(run, _settings(base, "dense", "s1", 1e-3, 1)) is None  # failed runs train again


def test_a_diverged_stage_says_so_and_names_the_learning_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import embedder.training
    from embedder.evaluation.region import prepare_region, prepare_shards

    base = FidelityConfig.tiny(gpp=False)
    region = prepare_region(tmp_path / "region", base)
    prepare_shards(region, tmp_path / "shards", base)

    def nan_fit(*args: object, **kwargs: object) -> embedder.training.FitResult:
        nan = float("nan")
        return embedder.training.FitResult(
            best_metric=math.inf, best_epoch=-1, epochs_run=1, stopped_early=False,
            history=[{"val": {"centre_mae": nan}}],
        )  # fmt: skip

    monkeypatch.setattr(embedder.training, "fit", nan_fit)
    with pytest.raises(FidelityError, match=r"diverged.*\(last nan\) at lr 0.5; use a lower learning rate"):
        train_stage1("paper", "s2", tmp_path / "shards", tmp_path / "run", base, lr=0.5, eval_split="val")
