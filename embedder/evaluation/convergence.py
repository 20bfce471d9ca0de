"""Does training converge? The CPU recipe from scratch, scored against its floors and the raw bands.

One run (``bench/convergence.py``):

1. the sample region and training shards of ``embedder.evaluation.fidelity`` (24 cubes of 32 px from 6 scenes, one
   year; the cubes are dealt to train/val/test, so the test split is spatially disjoint from training);
2. per seed: the S1 and S2 autoencoders (``ModelConfig.cpu`` + ``TrainConfig.cpu``), then the fusion
   (``FusionConfig.cpu``) over them; each stage's best checkpoint (validation centre MAE) is scored on
   the test split beside the floors of the same test windows (``embedder.floors``);
3. the land-cover probe of the fused 7-d embedding against the raw bands of the same pixel-dates
   (``embedder.evaluation.report.land_cover_probe``, spatially blocked split) over every scene of the region.

The flat figures (``ConvergenceResult.flat``) are what ``bench/results/convergence.json`` holds: per seed
and as mean / sd over seeds, ``s2_centre_mae`` next to ``s2_floor_frame_mean`` (and the other floors),
the same for S1, ``probe_emb_linear`` next to ``probe_bands_linear``, and ``train_minutes_cpu_preset``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import FusionConfig, ModelConfig, TrainConfig
from embedder.evaluation.fidelity import FidelityConfig
from embedder.evaluation.quality import probe_inputs, probe_pooled
from embedder.evaluation.region import batch_loader, heldout_split, prepare_region, prepare_shards
from embedder.evaluation.timing import CpuMeter, is_timing
from embedder.floors import centre_floors
from embedder.sensors import S1, S2, SensorSpec

__all__ = ["ConvergenceConfig", "ConvergenceResult", "probe_scores", "run_convergence", "train_seed"]

_STAGES = ("s1", "s2", "fusion")

_KIND = {"s1": "s1only", "s2": "fused"}
"""Training windows of each stage-1 autoencoder (S1 on its own time axis, S2 on fused windows)."""


@dataclass(frozen=True)
class ConvergenceConfig:
    """Data, model presets and budgets of a convergence run."""

    data: FidelityConfig = field(
        default_factory=lambda: FidelityConfig(cubes=24, gpp=False, eval_samples=None)
    )
    """Sample region, cubes and sampling (``embedder.evaluation.fidelity``'s, 24 cubes of 32 px from 6 scenes over a
    year; every test window is scored). With the fidelity comparison's 8 cubes (6 for training) the
    autoencoders overfit: S1 training error fell to half its floor while validation stayed above it."""
    model: ModelConfig = field(default_factory=ModelConfig.cpu)
    """Autoencoder preset of both sensors."""
    fusion: FusionConfig = field(default_factory=FusionConfig.cpu)
    """Fusion preset."""
    steps: tuple[tuple[str, int], ...] = (("s1", 2000), ("s2", 3000), ("fusion", 2000))
    """Optimiser steps per stage (the cosine schedule ends there)."""
    steps_per_epoch: int = 250
    """Steps between validations (and checkpoints)."""
    lr: tuple[tuple[str, float], ...] = ()
    """Per-stage peak learning rates overriding ``TrainConfig.cpu``'s 1e-3."""
    temporal_decay: tuple[tuple[str, float], ...] = (("fusion", 1.0),)
    """Per-stage ``TrainConfig.temporal_decay`` (option; absent: SPEC 4's 0.1). The fusion's 1.0 (every date of
    the window weighted as the centre's neighbours, the centre pixel of the centre date still weighted
    most) makes the 7-d embedding carry the window's season: land-cover probe 0.814 against 0.749 at 0.5
    and 0.731 at SPEC's 0.1, with the same budget (``bench/fusion_recipe.py``); the single-date bands score
    0.783."""
    batch_size: int = 16
    """Samples per step."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of weights and batch order; each seed trains all three stages."""
    probe_seeds: int = 3
    """Block splits of the land-cover probe per trained model (averaged)."""

    def train_config(self, stage: str, seed: int) -> TrainConfig:
        """``TrainConfig.cpu`` for ``stage`` (``s1``, ``s2``, ``fusion``) with this run's budget and seed."""
        cfg = TrainConfig.cpu(total_steps=dict(self.steps)[stage])
        lr = dict(self.lr).get(stage, cfg.lr)
        decay = dict(self.temporal_decay).get(stage)
        return dataclasses.replace(cfg, seed=seed, batch_size=self.batch_size, lr=lr, temporal_decay=decay)

    @classmethod
    def tiny(cls) -> ConvergenceConfig:
        """Tests: the tiny fidelity region, a few steps, one seed."""
        return cls(
            data=FidelityConfig.tiny(gpp=False, eval_samples=None),
            model=ModelConfig.small(),
            fusion=FusionConfig.small(),
            steps=(("s1", 30), ("s2", 30), ("fusion", 20)),
            steps_per_epoch=10,
            batch_size=8,
            seeds=(0,),
            probe_seeds=1,
        )


@dataclass
class ConvergenceResult:
    """Per seed, per stage: test centre MAE, floors, best epoch and minutes; the probe per seed."""

    seeds: dict[int, dict[str, Any]]
    """``{seed: {"s1": {...}, "s2": {...}, "fusion": {...}, "probe": {...}, "minutes": m}}``."""
    data: dict[str, Any]
    """Cubes and samples per split, and the run settings."""

    def flat(self) -> dict[str, Any]:
        """The flat keys of ``bench/results/convergence.json`` (means over seeds, ``_sd``, per seed)."""
        rows: dict[str, list[float]] = {}
        out: dict[str, Any] = {"seeds": len(self.seeds)}
        timed_minutes: list[float] = []
        for seed, r in sorted(self.seeds.items()):
            # training time of the three stages (a stage reused from an earlier run keeps its own); it
            # is a timing only when every stage had the machine to itself (``evaluation.timing``)
            minutes = sum(r[s]["minutes"] for s in _STAGES)
            timed = all(is_timing(r[s].get("timing")) for s in _STAGES)
            if timed:
                timed_minutes.append(minutes)
            # per seed only: a mean over seeds that were not timings would mislead
            out[f"seed{seed}_train_minutes"], out[f"seed{seed}_train_timed"] = minutes, float(timed)
            one = {
                "probe_emb_linear": r["probe"]["emb"],
                "probe_bands_linear": r["probe"]["bands"],
                "probe_majority": r["probe"]["majority"],
                "fusion_centre_mae": r["fusion"]["test_centre_mae"],
                "fusion_floor_frame_mean": r["fusion"]["floor_frame_mean"],
            }
            for s in ("s1", "s2"):
                one[f"{s}_centre_mae"] = r[s]["test_centre_mae"]
                one[f"{s}_best_epoch"] = r[s]["best_epoch"]
                for name, value in r[s]["floors"].items():
                    one[f"{s}_floor_{name}"] = value
                one[f"{s}_vs_floor"] = r[s]["test_centre_mae"] / r[s]["floors"]["frame_mean"]
            for k, v in one.items():
                rows.setdefault(k, []).append(float(v))
                rows.setdefault(f"seed{seed}_{k}", []).append(float(v))
        for k, vs in rows.items():
            out[k] = float(np.mean(vs))
            if not k.startswith("seed") and len(vs) > 1:
                out[f"{k}_sd"] = float(np.std(vs, ddof=1))
        # the cost of the recipe: mean over the seeds trained on an otherwise idle machine, None if none
        out["train_minutes_cpu_preset"] = float(np.mean(timed_minutes)) if timed_minutes else None
        out["train_minutes_timed_seeds"] = len(timed_minutes)
        out.update(self.data)
        return out


def prepare(
    work: str | Path, cfg: ConvergenceConfig, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The sample region and shards in ``work/region`` and ``work/shards`` (reused when unchanged)."""
    work = Path(work).resolve()  # the region's catalog holds paths relative to it: resolve once
    t0 = time.perf_counter()
    region = prepare_region(work / "region", cfg.data)
    counts = prepare_shards(region, work / "shards", cfg.data)
    log(f"region + shards: {counts} ({time.perf_counter() - t0:.0f} s)")
    return {
        "region": region,
        "shards": str(work / "shards"),
        "counts": counts,
        "eval_split": heldout_split(counts),
    }


def _score(
    model: Any, objective: Any, batches: Iterable[Any], sensors: Iterable[SensorSpec], cfg: TrainConfig
) -> dict[str, Any]:
    from embedder.training import evaluate, frame_mean_floor

    batches = list(batches)
    metrics = evaluate(model, batches, objective=objective, cfg=cfg)
    floors = centre_floors(batches, sensors)
    return {"test": metrics, "floors_by_sensor": floors, "floor_frame_mean": frame_mean_floor(floors)}


def fit_stage(
    model: Any,
    objective: Any,
    data: Mapping[str, Any],
    run_dir: Path,
    cfg: TrainConfig,
    *,
    steps_per_epoch: int,
    eval_split: str = "test",
) -> dict[str, Any]:
    """``fit`` on train (best on val), the best checkpoint scored on ``eval_split`` beside its floors.

    A stage already trained with the same model and settings (``run_dir/stage.json``) is reused.
    """
    import torch

    from embedder.checkpoints import load_checkpoint, unwrap
    from embedder.config import to_dict
    from embedder.training import fit

    key = json.dumps(
        {"model": repr(unwrap(model)), "train": to_dict(cfg), "steps_per_epoch": steps_per_epoch,
         "eval_split": eval_split},
        sort_keys=True, default=str,
    )  # fmt: skip
    done = run_dir / "stage.json"
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved.get("key") == key:
            ckpt = load_checkpoint(run_dir / "best.pt", sensors=objective.sensors, kind=objective.kind)
            model.load_state_dict(ckpt["model_state"])
            return dict(saved["result"])
    if run_dir.exists():  # another model or recipe trained here: start clean (metrics.jsonl appends)
        shutil.rmtree(run_dir)
    with CpuMeter(threads=torch.get_num_threads()) as meter:
        res = fit(
            model, batch_loader(data["train"], batch_size=cfg.batch_size, seed=cfg.seed, shuffle=True),
            batch_loader(data["val"], batch_size=64, seed=cfg.seed, shuffle=False), objective=objective,
            cfg=cfg, run_dir=run_dir, max_steps_per_epoch=steps_per_epoch,
        )  # fmt: skip
    minutes = meter.wall_s / 60
    ckpt = load_checkpoint(run_dir / "best.pt", sensors=objective.sensors, kind=objective.kind)
    model.load_state_dict(ckpt["model_state"])
    scored = _score(
        model,
        objective,
        batch_loader(data[eval_split], batch_size=64, seed=0, shuffle=False)(0),
        objective.sensors,
        cfg,
    )
    result = {
        "test_centre_mae": scored["test"]["centre_mae"],
        "test": scored["test"],
        "floors_by_sensor": scored["floors_by_sensor"],
        "floor_frame_mean": scored["floor_frame_mean"],
        "best_epoch": res.best_epoch,
        "val_best": res.best_metric,
        "val_curve": [h["val"]["centre_mae"] for h in res.history],
        "train_curve": [h["train"]["centre_mae"] for h in res.history],
        "minutes": minutes,
        "timing": meter.record(),
        "checkpoint": str(run_dir / "best.pt"),
    }
    done.write_text(json.dumps({"key": key, "result": result}, default=str))
    return result


def train_seed(
    seed: int,
    prepared: Mapping[str, Any],
    out: Path,
    cfg: ConvergenceConfig,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """S1 and S2 autoencoders, then the fusion, for one seed; test scores and the probe."""
    from embedder.checkpoints import load_autoencoder
    from embedder.data.loader import ShardDataset
    from embedder.evaluation.towers import load_scene_cube
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.training import FusionObjective, ModalityObjective, seed_everything

    root, held = prepared["shards"], prepared["eval_split"]
    result: dict[str, Any] = {}
    for spec in (S1, S2):
        data = {s: ShardDataset(root, split=s, kind=_KIND[spec.name]) for s in ("train", "val", held)}
        seed_everything(seed)
        ae = ModalityAutoencoder(spec, cfg=cfg.model)
        stage = fit_stage(
            ae, ModalityObjective(spec), data, out / f"seed{seed}" / f"stage1-{spec.name}",
            cfg.train_config(spec.name, seed), steps_per_epoch=cfg.steps_per_epoch, eval_split=held,
        )  # fmt: skip
        stage["floors"] = stage.pop("floors_by_sensor")[spec.name]
        result[spec.name] = stage
        log(
            f"seed {seed} {spec.name}: test centre MAE {stage['test_centre_mae']:.5f}, floors "
            + ", ".join(f"{k} {v:.5f}" for k, v in stage["floors"].items())
            + f" ({stage['minutes']:.1f} min)"
        )
    fused = {s: ShardDataset(root, split=s, kind="fused") for s in ("train", "val", held)}
    seed_everything(seed)
    aes = {spec.name: load_autoencoder(result[spec.name]["checkpoint"], spec) for spec in (S1, S2)}
    model = FusionModel(aes, cfg=cfg.fusion)
    stage = fit_stage(
        model, FusionObjective([S1, S2]), fused, out / f"seed{seed}" / "stage2-fusion",
        cfg.train_config("fusion", seed), steps_per_epoch=cfg.steps_per_epoch, eval_split=held,
    )  # fmt: skip
    result["fusion"] = stage
    result["minutes"] = sum(result[s]["minutes"] for s in _STAGES)
    log(
        f"seed {seed} fusion: test centre MAE {stage['test_centre_mae']:.5f} (floor {stage['floor_frame_mean']:.5f}); "
        f"training took {result['minutes']:.1f} min"
    )
    region = prepared["region"]
    cubes = {s.name: load_scene_cube(region, s) for s in region.scenes}
    predictor = Predictor(model.eval(), pixel_batch=cfg.data.pixel_batch)
    result["probe"] = _probe_seeds(predictor, region, cubes, cfg, seed=seed)
    log(f"seed {seed} probe: embedding {result['probe']['emb']:.3f}, bands {result['probe']['bands']:.3f}")
    return result


def _probe_seeds(
    predictor: Any, region: Any, cubes: Mapping[str, Any], cfg: ConvergenceConfig, *, seed: int
) -> dict[str, Any]:
    """The land-cover probe, pooled over scenes, averaged over ``cfg.probe_seeds`` block splits.

    Every scene is embedded once; the splits reuse the embeddings.
    """
    return probe_scores(probe_inputs(predictor, region, cubes), cfg, seed=seed)


def probe_scores(inputs: list[Any], cfg: ConvergenceConfig, *, seed: int) -> dict[str, Any]:
    """The probe of :func:`_probe_seeds` on already embedded scenes (``embedder.evaluation.quality.probe_inputs``)."""
    scores = [
        p
        for k in range(cfg.probe_seeds)
        if (p := probe_pooled(inputs, block_px=cfg.data.probe_block_px, seed=seed * 100 + k)) is not None
    ]
    if not scores:
        raise ValueError("the land-cover probe found too few pixel-dates in every scene; use larger scenes")
    return {
        "emb": float(np.mean([p.accuracy for p in scores])),
        "bands": float(np.mean([p.accuracy_bands for p in scores])),
        "majority": float(np.mean([p.accuracy_majority for p in scores])),
        "n_test": float(np.mean([p.n_test for p in scores])),
    }


def _settings(cfg: ConvergenceConfig) -> str:
    """The run settings a saved seed must share to be reused (the seed list itself aside)."""
    return json.dumps(dataclasses.asdict(dataclasses.replace(cfg, seeds=())), sort_keys=True, default=str)


def _settings_match(saved: str | None, settings: str) -> bool:
    """Whether a seed saved with ``saved`` settings (older runs kept the seed list in them) can be reused."""
    if saved is None:
        return False
    old = json.loads(saved)
    old["seeds"] = []
    return json.dumps(old, sort_keys=True) == json.dumps(json.loads(settings), sort_keys=True)


def run_convergence(
    work: str | Path, cfg: ConvergenceConfig, *, log: Callable[[str], None] = print
) -> ConvergenceResult:
    """Prepare the data, train every seed (re-runs resume per seed from ``work/runs/seed<k>.json``)."""
    work = Path(work)
    prepared = prepare(work, cfg, log=log)
    out = work / "runs"
    seeds: dict[int, dict[str, Any]] = {}
    settings = _settings(cfg)
    for seed in cfg.seeds:
        done = out / f"seed{seed}.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            if _settings_match(saved.get("settings"), settings):
                log(f"seed {seed}: done in an earlier run, reused")
                seeds[seed] = saved["result"]
                continue
        seeds[seed] = train_seed(seed, prepared, out, cfg, log=log)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"settings": settings, "result": seeds[seed]}, default=str))
    data = {f"data_{k}": v for k, v in prepared["counts"].items()}
    data.update(
        {"model": "ModelConfig.cpu()", "fusion": "FusionConfig.cpu()", "recipe": "TrainConfig.cpu()",
         **{f"steps_{k}": v for k, v in cfg.steps}}
    )  # fmt: skip
    return ConvergenceResult(seeds=seeds, data=data)


def export_weights(result: ConvergenceResult, seed: int, out_dir: str | Path) -> dict[str, Any]:
    """Write one seed's best checkpoints weights-only as ``out_dir/{s1,s2,fusion}.pt`` and ``weights.json``.

    These are the committed weights ``make demo`` fine-tunes (``make weights`` regenerates them); the
    manifest records each file's ``sha256:<16 hex>`` (what the fine-tuned runs and stores record as
    ``init_from`` / ``pretrained``), the test scores and floors behind them, and the command.
    """
    from embedder.checkpoints import (
        checkpoint_digest,
        load_autoencoder,
        load_checkpoint,
        load_fusion,
        save_checkpoint,
    )
    from embedder.config import TrainConfig, from_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = result.seeds[seed]
    manifest: dict[str, Any] = {
        "command": "make weights  (python bench/convergence.py --seeds 0 --weights-out weights)",
        "seed": seed,
        "model": "ModelConfig.cpu()",
        "fusion": "FusionConfig.cpu()",
        "files": {},
    }
    for name in ("s1", "s2", "fusion"):
        src = Path(r[name]["checkpoint"])
        ckpt = load_checkpoint(src)
        model = load_fusion(src) if name == "fusion" else load_autoencoder(src, name)
        train_cfg = from_dict(TrainConfig, ckpt["config"]["train"], where=f"{src}:train")
        path = save_checkpoint(
            out / f"{name}.pt", model, epoch=int(ckpt["epoch"]), best_metric=float(ckpt["best_metric"]),
            best_epoch=int(ckpt["best_epoch"]), train_cfg=train_cfg,
        )  # fmt: skip
        manifest["files"][name] = {
            "file": path.name,
            "sha256": checkpoint_digest(path),
            "test_centre_mae": r[name]["test_centre_mae"],
            "test_floor_frame_mean": r[name]["floors"]["frame_mean"]
            if "floors" in r[name]
            else r[name]["floor_frame_mean"],
        }
    manifest["probe"] = r["probe"]
    (out / "weights.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
