"""Learning-rate and seed sweep of the paper vs dense fidelity comparison (issue 9).

One comparison at one learning rate and one seed (:func:`embedder.evaluation.fidelity.compare_encoders`) cannot
tell an architecture's fidelity from its learning-rate sensitivity or from the luck of one
initialisation: the two encoders swapped places between lr 1e-3 and 3e-4 (``docs/dense.md``). This
module runs the fair protocol instead, on the same region, shards and budget for both encoders:

1. for every encoder, stage-1 sensor (``s1``, ``s2``), peak learning rate and seed, train one
   stage-1 autoencoder (:func:`embedder.evaluation.fidelity.train_stage1`: the small preset, the budget of the
   :class:`~embedder.evaluation.fidelity.FidelityConfig`, the best epoch on the validation split) and score its
   best checkpoint's centre MAE on the held-out split;
2. per encoder and sensor, pick the learning rate with the lowest **validation** centre MAE averaged
   over the seeds (the held-out split never chooses anything);
3. report the held-out centre MAE at each encoder's own best learning rate (mean and standard
   deviation over seeds), the ratio dense / paper best against best (the issue's target: at most
   1.10), the per-seed ratios, the ratios at every common learning rate, and the trivial frame-mean
   reconstruction as the floor a model must beat to have learned the pixel.

Runs are independent processes (``workers``, one torch thread each: two small-model runs on two
cores are faster than one run with two threads). Every finished run leaves ``result.json`` in its run
folder; a re-run with the same settings reuses it, so an interrupted sweep resumes, and a failed run
(diverged, or any error) is recorded with its reason, the others carry on, and it is retried next time.
``bench/fidelity_sweep.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.config import ConfigError, to_dict
from embedder.evaluation.fidelity import ENCODERS, FidelityConfig, FidelityError, train_stage1
from embedder.evaluation.region import frame_mean_baselines, heldout_split, prepare_data

__all__ = [
    "RESULT_FILE",
    "SENSORS",
    "TARGET_RATIO",
    "CellStats",
    "RunRecord",
    "SweepConfig",
    "SweepResult",
    "best_checkpoints",
    "best_lrs",
    "plot_sweep",
    "summarise",
    "sweep_encoders",
    "val_curve",
]

SENSORS: tuple[str, ...] = ("s1", "s2")
"""Stage-1 autoencoders swept."""
TARGET_RATIO = 1.10
"""Issue 9's fidelity target: dense centre MAE within 10 % of the paper-exact model's."""
RESULT_FILE = "fidelity_sweep.json"
"""Flat JSON of the last sweep, written in the work folder."""
RUN_RESULT = "result.json"
"""Per-run record inside each run folder (its presence with the same settings means: done)."""


@dataclass(frozen=True)
class SweepConfig:
    """What is swept; the data and the budget of every run come from :attr:`base`."""

    base: FidelityConfig = dataclasses.field(default_factory=FidelityConfig)
    """Region, shards, epochs, steps per epoch, batch size and scored samples of every run."""
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    """Peak learning rates tried for every encoder and sensor."""
    seeds: tuple[int, ...] = (42, 43, 44)
    """Seeds of weights and batch order (the shards are built once, with ``base.seed``)."""
    sensors: tuple[str, ...] = SENSORS
    """Stage-1 autoencoders to train (``s1``, ``s2``)."""
    workers: int = 2
    """Runs trained at once, one process each."""
    threads_per_worker: int = 1
    """Torch intra-op threads of each worker process."""
    only: tuple[tuple[str, str, float], ...] = ()
    """When given, train only these ``(encoder, sensor, lr)`` (each at every seed) instead of the whole
    grid: e.g. each encoder at its best learning rate of an earlier sweep, with a longer budget
    (``bench/fidelity_sweep.py --at-best-lrs JSON``). Their learning rates must be in :attr:`lrs`."""

    def __post_init__(self) -> None:
        if not self.lrs or any(not (0 < lr < 1) for lr in self.lrs) or len(set(self.lrs)) != len(self.lrs):
            raise ConfigError(f"SweepConfig.lrs = {self.lrs} must be distinct learning rates in (0, 1)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"SweepConfig.seeds = {self.seeds} must be one or more distinct integers")
        unknown = [s for s in self.sensors if s not in SENSORS]
        if not self.sensors or unknown:
            raise ConfigError(f"SweepConfig.sensors = {self.sensors}: use one or both of {list(SENSORS)}")
        for name in ("workers", "threads_per_worker"):
            if getattr(self, name) < 1:
                raise ConfigError(f"SweepConfig.{name} = {getattr(self, name)} must be at least 1")
        for enc, sensor, lr in self.only:
            if enc not in ENCODERS or sensor not in self.sensors or lr not in self.lrs:
                raise ConfigError(
                    f"SweepConfig.only: ({enc!r}, {sensor!r}, {lr:g}) needs an encoder in {list(ENCODERS)}, "
                    f"a sensor in {list(self.sensors)} and a learning rate in lrs = {list(self.lrs)}"
                )

    @classmethod
    def at_best_lrs(cls, lrs: dict[str, float], **overrides: Any) -> SweepConfig:
        """Each encoder and sensor only at its own learning rate (``{"paper.s1": lr, ...}``, :func:`best_lrs`)."""
        only = tuple((k.partition(".")[0], k.partition(".")[2], lr) for k, lr in sorted(lrs.items()))
        sensors = tuple(sn for sn in SENSORS if any(o[1] == sn for o in only))
        return cls(lrs=tuple(sorted({lr for *_, lr in only})), only=only, sensors=sensors, **overrides)


@dataclass(frozen=True)
class RunRecord:
    """One trained stage-1 autoencoder (or the reason it could not be trained)."""

    encoder: str
    """``paper`` or ``dense``."""
    sensor: str
    """``s1`` or ``s2``."""
    lr: float
    """Peak learning rate."""
    seed: int
    """Seed of weights and batch order."""
    val_centre_mae: float | None = None
    """Best validation centre MAE (chose the checkpoint); None when the run failed."""
    heldout_centre_mae: float | None = None
    """Centre MAE of the best checkpoint on the held-out split; None when the run failed."""
    best_epoch: int | None = None
    """Epoch of the best checkpoint."""
    seconds: float = 0.0
    """Wall time of the run."""
    error: str = ""
    """Why the run failed (empty when it succeeded)."""

    @property
    def ok(self) -> bool:
        """The run finished with finite scores."""
        return (
            not self.error
            and self.val_centre_mae is not None
            and self.heldout_centre_mae is not None
            and math.isfinite(self.val_centre_mae)
            and math.isfinite(self.heldout_centre_mae)
        )


@dataclass(frozen=True)
class CellStats:
    """One encoder, sensor and learning rate over the seeds."""

    n_ok: int
    """Seeds that trained."""
    n_failed: int
    """Seeds that failed (a learning rate with any failure is never chosen)."""
    val_mean: float
    """Mean best validation centre MAE over the seeds that trained (nan when none did)."""
    heldout_mean: float
    """Mean held-out centre MAE (nan when none trained)."""
    heldout_sd: float
    """Sample standard deviation of the held-out centre MAE over seeds (0 with one seed)."""
    heldout_by_seed: dict[int, float]
    """Held-out centre MAE per seed that trained."""


def _cell(records: Sequence[RunRecord]) -> CellStats:
    good = [r for r in records if r.ok]
    vals = [float(r.val_centre_mae) for r in good if r.val_centre_mae is not None]
    held = {r.seed: float(r.heldout_centre_mae) for r in good if r.heldout_centre_mae is not None}
    nan = float("nan")
    return CellStats(
        n_ok=len(good),
        n_failed=len(records) - len(good),
        val_mean=statistics.fmean(vals) if vals else nan,
        heldout_mean=statistics.fmean(held.values()) if held else nan,
        heldout_sd=statistics.stdev(held.values()) if len(held) > 1 else 0.0,
        heldout_by_seed=held,
    )


def summarise(
    records: Sequence[RunRecord], *, lrs: Sequence[float], sensors: Sequence[str] = SENSORS
) -> dict[str, Any]:
    """Per encoder and sensor: statistics per learning rate, the best one (on validation) and the ratios.

    Returns ``{"cells": {(enc, sensor, lr): CellStats}, "best_lr": {(enc, sensor): lr | None},
    "ratio": {sensor: float}, "ratio_by_seed": {sensor: {seed: float}}, "ratio_at_lr": {(sensor, lr):
    float}}``. A learning rate is only chosen when every one of its seeds trained; ratios are dense over
    paper and nan when either side has no result.
    """
    cells: dict[tuple[str, str, float], CellStats] = {}
    for enc in ENCODERS:
        for sensor in sensors:
            for lr in lrs:
                mine = [r for r in records if (r.encoder, r.sensor, r.lr) == (enc, sensor, lr)]
                cells[(enc, sensor, lr)] = _cell(mine)
    best_lr: dict[tuple[str, str], float | None] = {}
    for enc in ENCODERS:
        for sensor in sensors:
            usable = [
                lr for lr in lrs if cells[(enc, sensor, lr)].n_ok and not cells[(enc, sensor, lr)].n_failed
            ]
            best_lr[(enc, sensor)] = min(
                usable, key=lambda lr: cells[(enc, sensor, lr)].val_mean, default=None
            )
    nan = float("nan")
    ratio: dict[str, float] = {}
    ratio_by_seed: dict[str, dict[int, float]] = {}
    ratio_at_lr: dict[tuple[str, float], float] = {}
    for sensor in sensors:
        lp, ld = best_lr[("paper", sensor)], best_lr[("dense", sensor)]
        if lp is None or ld is None:
            ratio[sensor], ratio_by_seed[sensor] = nan, {}
        else:
            p, d = cells[("paper", sensor, lp)], cells[("dense", sensor, ld)]
            ratio[sensor] = d.heldout_mean / p.heldout_mean
            both = sorted(set(p.heldout_by_seed) & set(d.heldout_by_seed))
            ratio_by_seed[sensor] = {s: d.heldout_by_seed[s] / p.heldout_by_seed[s] for s in both}
        for lr in lrs:
            p, d = cells[("paper", sensor, lr)], cells[("dense", sensor, lr)]
            ratio_at_lr[(sensor, lr)] = d.heldout_mean / p.heldout_mean if p.n_ok and d.n_ok else nan
    return {
        "cells": cells,
        "best_lr": best_lr,
        "ratio": ratio,
        "ratio_by_seed": ratio_by_seed,
        "ratio_at_lr": ratio_at_lr,
    }


@dataclass(frozen=True)
class SweepResult:
    """Every run of a sweep, its summary and the settings."""

    cfg: SweepConfig
    """The settings."""
    records: tuple[RunRecord, ...]
    """Every run, in sweep order."""
    eval_split: str
    """Split the held-out centre MAE was scored on (``test``, or ``val`` without a test cube)."""
    shard_counts: dict[str, int]
    """Cubes per split and training samples per kind."""
    baseline_centre_mae: dict[str, float]
    """Centre MAE of the trivial frame-mean reconstruction on the same held-out samples."""
    reused: int
    """Runs whose earlier result was reused (the rest were trained now)."""
    seconds: dict[str, float]
    """Wall time of ``region``, ``shards``, ``runs`` and ``total``."""
    work_dir: str = ""
    """The work folder (its ``runs/`` hold every run's ``metrics.jsonl``, for the learning curves)."""
    baseline_val_centre_mae: dict[str, float] = dataclasses.field(default_factory=dict)
    """The frame-mean reconstruction on the validation samples (the floor of the learning curves)."""

    @property
    def summary(self) -> dict[str, Any]:
        """:func:`summarise` of the records."""
        return summarise(self.records, lrs=self.cfg.lrs, sensors=self.cfg.sensors)

    def flat(self) -> dict[str, Any]:
        """Flat JSON-ready dict: ``dense_vs_paper_mae_s1`` (best vs best), ``paper_best_lr_s1``, ..."""
        s = self.summary
        out: dict[str, Any] = {"preset": "small"}
        for sensor in self.cfg.sensors:
            for enc in ENCODERS:
                lr = s["best_lr"][(enc, sensor)]
                out[f"{enc}_best_lr_{sensor}"] = lr
                cell = s["cells"][(enc, sensor, lr)] if lr is not None else None
                out[f"{enc}_centre_mae_{sensor}"] = _num(cell.heldout_mean) if cell else None
                out[f"{enc}_centre_mae_{sensor}_sd"] = _num(cell.heldout_sd) if cell else None
                out[f"{enc}_val_centre_mae_{sensor}"] = _num(cell.val_mean) if cell else None
                for lr_ in self.cfg.lrs:
                    c = s["cells"][(enc, sensor, lr_)]
                    out[f"{enc}_centre_mae_{sensor}_lr{lr_:g}"] = _num(c.heldout_mean)
                    out[f"{enc}_val_centre_mae_{sensor}_lr{lr_:g}"] = _num(c.val_mean)
            r = s["ratio"][sensor]
            out[f"dense_vs_paper_mae_{sensor}"] = _num(r)
            by_seed = list(s["ratio_by_seed"][sensor].values())
            out[f"dense_vs_paper_mae_{sensor}_seed_min"] = _num(min(by_seed)) if by_seed else None
            out[f"dense_vs_paper_mae_{sensor}_seed_max"] = _num(max(by_seed)) if by_seed else None
            for lr_ in self.cfg.lrs:
                out[f"dense_vs_paper_mae_{sensor}_lr{lr_:g}"] = _num(s["ratio_at_lr"][(sensor, lr_)])
            out[f"meets_target_{sensor}"] = bool(math.isfinite(r) and r <= TARGET_RATIO)
            out[f"baseline_centre_mae_{sensor}"] = self.baseline_centre_mae.get(sensor)
            out[f"baseline_val_centre_mae_{sensor}"] = self.baseline_val_centre_mae.get(sensor)
        b = self.cfg.base
        out.update(
            target_ratio=TARGET_RATIO, eval_split=self.eval_split, lrs=",".join(f"{lr:g}" for lr in self.cfg.lrs),
            seeds=",".join(str(x) for x in self.cfg.seeds), epochs=b.epochs, steps_per_epoch=b.steps_per_epoch,
            batch_size=b.batch_size, eval_samples=b.eval_samples, cubes=b.cubes, cube_px=b.cube_px,
            scene_px=b.scene_px, sampling=b.sampling, runs=len(self.records), runs_ok=sum(r.ok for r in self.records),
            runs_failed=sum(not r.ok for r in self.records), runs_reused=self.reused, workers=self.cfg.workers,
        )  # fmt: skip
        out.update({f"shards_{k}": v for k, v in self.shard_counts.items()})
        out.update({f"seconds_{k}": round(v, 1) for k, v in self.seconds.items()})
        out["load_average_1min"] = round(os.getloadavg()[0], 2)
        return out

    def table(self) -> str:
        """Markdown: per sensor and learning rate the held-out centre MAE (mean +- sd), best rows marked."""
        s = self.summary
        rows = [
            "| sensor | lr | paper centre MAE | dense centre MAE | dense / paper |",
            "|---|---|---:|---:|---:|",
        ]

        def cell_text(c: CellStats, best: bool) -> str:
            if not c.n_ok:
                return f"failed ({c.n_failed})" if c.n_failed else "not run"
            text = f"{c.heldout_mean:.4f} ± {c.heldout_sd:.4f}" + (
                f" ({c.n_failed} failed)" if c.n_failed else ""
            )
            return f"**{text}**" if best else text

        for sensor in self.cfg.sensors:
            for lr in self.cfg.lrs:
                p, d = s["cells"][("paper", sensor, lr)], s["cells"][("dense", sensor, lr)]
                rows.append(
                    f"| {sensor.upper()} | {lr:g} | {cell_text(p, s['best_lr'][('paper', sensor)] == lr)} | "
                    f"{cell_text(d, s['best_lr'][('dense', sensor)] == lr)} | "
                    f"{_fmt(s['ratio_at_lr'][(sensor, lr)], 'x{:.3f}')} |"
                )
            by_seed = s["ratio_by_seed"][sensor]
            spread = (
                f" (per seed {min(by_seed.values()):.3f}..{max(by_seed.values()):.3f})" if by_seed else ""
            )
            rows.append(
                f"| {sensor.upper()} | best vs best (lr {_fmt(s['best_lr'][('paper', sensor)], '{:g}')} / "
                f"{_fmt(s['best_lr'][('dense', sensor)], '{:g}')}) | | | "
                f"**{_fmt(s['ratio'][sensor], 'x{:.3f}')}**{spread} |"
            )
            base = self.baseline_centre_mae.get(sensor)
            rows.append(f"| {sensor.upper()} | frame-mean reconstruction | {_fmt(base, '{:.4f}')} | same | |")
        return "\n".join(rows)


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _fmt(v: float | None, pattern: str) -> str:
    return "n/a" if v is None or not math.isfinite(v) else pattern.format(v)


# --- the runs ------------------------------------------------------------------------------------------


def _run_dir(root: Path, base: FidelityConfig, encoder: str, sensor: str, lr: float, seed: int) -> Path:
    """A run's folder, named by budget too, so sweeps of other budgets can share a work folder.

    ``runs/<encoder>/<sensor>/e<epochs>-s<steps>-b<batch>-lr<lr>-seed<seed>``.
    """
    budget = f"e{base.epochs}-s{base.steps_per_epoch}-b{base.batch_size}"
    return root / encoder / sensor / f"{budget}-lr{lr:g}-seed{seed}"


_RUN_FIELDS = (
    "scene_px", "cube_px", "cubes", "start", "end", "s2_cadence_days", "region_seed", "patches", "seed",
    "epochs", "steps_per_epoch", "batch_size", "eval_samples",
)  # fmt: skip
"""The :class:`~embedder.evaluation.fidelity.FidelityConfig` fields a stage-1 run depends on (data, shards, budget,
scoring); the others (the comparison's own learning rates, fusion, probe and GPP settings) do not."""


def _settings(base: FidelityConfig, encoder: str, sensor: str, lr: float, seed: int) -> dict[str, Any]:
    """What makes a run's result reusable: the data and budget settings and the run's own four values."""
    full = json.loads(json.dumps(to_dict(base), default=str))
    return {
        "base": {k: full[k] for k in _RUN_FIELDS},
        "encoder": encoder,
        "sensor": sensor,
        "lr": lr,
        "seed": seed,
    }


def _same_settings(stored: Any, want: dict[str, Any]) -> bool:
    """``stored`` (a run's saved settings, a dict or its JSON text) describes the run ``want`` describes."""
    if isinstance(stored, str):
        stored = json.loads(stored)
    if not isinstance(stored, dict) or not isinstance(stored.get("base"), dict):
        return False
    base = stored["base"]
    return (
        all(k in base for k in _RUN_FIELDS) and {**stored, "base": {k: base[k] for k in _RUN_FIELDS}} == want
    )


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_one(
    base: FidelityConfig, shard_root: str, run_dir: str, encoder: str, sensor: str, lr: float, seed: int,
    eval_split: str,
) -> RunRecord:  # fmt: skip
    """One run, in a worker process; never raises: a failure comes back as a record with its reason."""
    t0 = time.perf_counter()
    try:
        out = train_stage1(
            encoder, sensor, shard_root, run_dir, base, seed=seed, lr=lr, eval_split=eval_split
        )
        record = RunRecord(
            encoder=encoder, sensor=sensor, lr=lr, seed=seed, val_centre_mae=float(out["val_centre_mae"]),
            heldout_centre_mae=float(out["heldout"]["centre_mae"]), best_epoch=int(out["best_epoch"]),
            seconds=time.perf_counter() - t0,
        )  # fmt: skip
    except Exception as exc:
        record = RunRecord(
            encoder=encoder, sensor=sensor, lr=lr, seed=seed, seconds=time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
    settings = _settings(base, encoder, sensor, lr, seed)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / RUN_RESULT).write_text(
        json.dumps({"settings": settings, "record": dataclasses.asdict(record)}, indent=1) + "\n"
    )
    return record


def _reusable(run_dir: Path, settings: dict[str, Any]) -> RunRecord | None:
    """The stored successful record of a run with the same settings, if any."""
    path = run_dir / RUN_RESULT
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        record = RunRecord(**stored["record"])
        same = _same_settings(stored.get("settings"), settings)
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: train again
    return record if same and record.ok else None


def sweep_encoders(
    out_dir: str | Path,
    cfg: SweepConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
    train: bool = True,
) -> SweepResult:
    """Run the sweep (module docstring) in the work folder ``out_dir``; writes ``fidelity_sweep.json``.

    ``out_dir`` keeps the region, the shards and every run; runs already done with the same settings
    are reused, failed ones are trained again. ``log`` receives a line per finished run. With
    ``train=False`` nothing is trained: the result holds the runs already done, the others are
    recorded as not trained (e.g. to look at a sweep that is still running).
    """
    cfg = cfg or SweepConfig()
    say = log or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    _, counts = prepare_data(out, cfg.base, seconds=seconds, log=say)
    eval_split = heldout_split(counts)
    baseline = frame_mean_baselines(out / "shards", eval_split, cfg.base)
    baseline_val = frame_mean_baselines(out / "shards", "val", cfg.base)
    say(f"frame-mean reconstruction, {eval_split}: {baseline}, val: {baseline_val}")

    # seed-major order: every finished seed is a whole grid, so a cut-short sweep is still usable
    plan = [
        (enc, sensor, lr, seed)
        for seed in cfg.seeds
        for lr in cfg.lrs
        for sensor in cfg.sensors
        for enc in ENCODERS
        if not cfg.only or (enc, sensor, lr) in cfg.only
    ]
    runs_root = out / "runs"
    records: dict[tuple[str, str, float, int], RunRecord] = {}
    todo = []
    for key in plan:
        enc, sensor, lr, seed = key
        done = _reusable(_run_dir(runs_root, cfg.base, *key), _settings(cfg.base, enc, sensor, lr, seed))
        if done is not None:
            records[key] = done
        else:
            todo.append(key)
    reused = len(records)
    say(f"runs: {len(plan)} ({reused} reused, {len(todo)} to train on {cfg.workers} worker(s))")
    t0 = time.perf_counter()
    if not train:
        for key in todo:
            records[key] = RunRecord(*key, error="not trained yet (train=False)")
        todo = []
    if todo:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
        with ProcessPoolExecutor(
            cfg.workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg.threads_per_worker,)
        ) as pool:
            futures = {
                pool.submit(
                    _train_one,
                    cfg.base,
                    str(out / "shards"),
                    str(_run_dir(runs_root, cfg.base, *key)),
                    *key,
                    eval_split,
                ): key
                for key in todo
            }
            for i, fut in enumerate(as_completed(futures), 1):
                key = futures[fut]
                rec = fut.result()
                records[key] = rec
                what = (
                    f"val {rec.val_centre_mae:.4f} {eval_split} {rec.heldout_centre_mae:.4f}"
                    if rec.ok
                    else f"FAILED: {rec.error}"
                )
                say(
                    f"[{i}/{len(todo)}] {key[0]} {key[1]} lr {key[2]:g} seed {key[3]}: {what} ({rec.seconds:.0f} s)"
                )
    seconds["runs"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_all
    result = SweepResult(
        cfg=cfg, records=tuple(records[k] for k in plan), eval_split=eval_split, shard_counts=counts,
        baseline_centre_mae=baseline, reused=reused, seconds=seconds, work_dir=str(out),
        baseline_val_centre_mae=baseline_val,
    )  # fmt: skip
    (out / RESULT_FILE).write_text(json.dumps(result.flat(), indent=1) + "\n")
    return result


def best_lrs(path: str | Path) -> dict[str, float]:
    """``{"paper.s1": lr, ...}``: each encoder's best stage-1 learning rate in a sweep's flat JSON.

    The keys are those of :attr:`embedder.evaluation.fidelity.FidelityConfig.stage_lrs`.
    """
    flat = json.loads(Path(path).read_text())
    out = {}
    for enc in ENCODERS:
        for sensor in SENSORS:
            lr = flat.get(f"{enc}_best_lr_{sensor}")
            if lr is None:
                raise FidelityError(
                    f"{str(path)!r} has no {enc}_best_lr_{sensor}: that part of the sweep failed or was not run"
                )
            out[f"{enc}.{sensor}"] = float(lr)
    return out


def best_checkpoints(work_dir: str | Path, *, seed: int) -> dict[str, dict[str, Path]]:
    """Encoder -> sensor -> ``best.pt`` of a sweep's run at that encoder's best learning rate and ``seed``.

    Read from the work folder's ``fidelity_sweep.json`` (the last sweep run there, whose budget names the
    run folders); for
    :func:`embedder.evaluation.fidelity.compare_encoders` ``(stage1_checkpoints=...)``.
    """
    root = Path(work_dir)
    lrs = best_lrs(root / RESULT_FILE)
    flat = json.loads((root / RESULT_FILE).read_text())
    base = dataclasses.replace(
        FidelityConfig(),
        epochs=flat["epochs"],
        steps_per_epoch=flat["steps_per_epoch"],
        batch_size=flat["batch_size"],
    )
    out: dict[str, dict[str, Path]] = {}
    for key, lr in lrs.items():
        enc, _, sensor = key.partition(".")
        path = _run_dir(root / "runs", base, enc, sensor, lr, seed) / "best.pt"
        if not path.is_file():
            raise FidelityError(f"no checkpoint {str(path)!r}: seed {seed} was not swept at lr {lr:g}")
        out.setdefault(enc, {})[sensor] = path
    return out


def val_curve(result: SweepResult, encoder: str, sensor: str, lr: float, seed: int) -> list[float]:
    """Validation centre MAE after every epoch of one run (from its ``metrics.jsonl``; empty if none)."""
    path = (
        _run_dir(Path(result.work_dir) / "runs", result.cfg.base, encoder, sensor, lr, seed) / "metrics.jsonl"
    )
    if not result.work_dir or not path.is_file():
        return []
    return [float(json.loads(line)["val"]["centre_mae"]) for line in path.read_text().splitlines() if line]


def plot_sweep(result: SweepResult, path: str | Path) -> Path:
    """PNG: per sensor, held-out centre MAE against learning rate and the validation learning curves.

    Top row: each encoder a line with error bars (mean +- sd over seeds), its best learning rate (on
    validation) ringed, the frame-mean reconstruction dashed. Bottom row: the validation centre MAE
    after every epoch at each encoder's best learning rate, per seed (thin) and their mean (thick).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result.summary
    sensors = result.cfg.sensors
    colours = dict(zip(ENCODERS, ("tab:blue", "tab:orange"), strict=True))
    fig, axes = plt.subplots(2, len(sensors), figsize=(5.4 * len(sensors), 8.0), squeeze=False)
    steps = result.cfg.base.steps_per_epoch
    for col, sensor in enumerate(sensors):
        ax, cur = axes[0][col], axes[1][col]
        for enc in ENCODERS:
            colour = colours[enc]
            lrs = [lr for lr in result.cfg.lrs if s["cells"][(enc, sensor, lr)].n_ok]
            means = [s["cells"][(enc, sensor, lr)].heldout_mean for lr in lrs]
            sds = [s["cells"][(enc, sensor, lr)].heldout_sd for lr in lrs]
            ax.errorbar(lrs, means, yerr=sds, marker="o", capsize=3, color=colour, label=enc)
            best = s["best_lr"][(enc, sensor)]
            if best is None:
                continue
            ax.plot(
                [best], [s["cells"][(enc, sensor, best)].heldout_mean], "o", ms=14, mfc="none", color=colour
            )
            curves = [c for seed in result.cfg.seeds if (c := val_curve(result, enc, sensor, best, seed))]
            for c in curves:
                cur.plot([steps * (i + 1) for i in range(len(c))], c, color=colour, alpha=0.3, lw=0.8)
            n = min((len(c) for c in curves), default=0)
            if n:
                mean = [statistics.fmean(c[i] for c in curves) for i in range(n)]
                cur.plot(
                    [steps * (i + 1) for i in range(n)], mean, color=colour, lw=2, label=f"{enc}, lr {best:g}"
                )
        bases = (result.baseline_centre_mae.get(sensor), result.baseline_val_centre_mae.get(sensor))
        for a, base in zip((ax, cur), bases, strict=True):
            if base is not None:
                a.axhline(base, ls="--", color="grey", label="frame-mean reconstruction")
            a.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(min(result.cfg.lrs) / 1.5, max(result.cfg.lrs) * 1.5)
        ax.set_title(
            f"{sensor.upper()} stage 1: dense / paper best vs best {_fmt(s['ratio'][sensor], 'x{:.3f}')}"
        )
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(f"centre MAE, {result.eval_split} (normalised)")
        cur.set_title(f"{sensor.upper()}: validation centre MAE at each encoder's best lr")
        cur.set_xlabel("optimiser steps")
        cur.set_ylabel("centre MAE, val (normalised)")
    b = result.cfg.base
    fig.suptitle(
        f"small preset, {b.epochs} x {b.steps_per_epoch} steps, batch {b.batch_size}, "
        f"{len(result.cfg.seeds)} seed(s); ring = best lr on validation",
        fontsize=9,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
