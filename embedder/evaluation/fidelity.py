"""Fidelity of the dense-consistent encoder: paper-exact vs dense, same data and budget (issue 9).

:func:`compare_encoders` trains both frame encoders (``ModelConfig.encoder`` ``paper`` and ``dense``,
docs/dense.md) on identical shards with identical seeds, epochs, steps and batch sizes, and scores them
on the same held-out data and downstream checks. In order:

1. **Sample region** (:func:`embedder.evaluation.region.prepare_region`): ``cubes / cubes-per-scene`` scenes
   of ``scene_px`` (:func:`embedder.sample.default_scenes`); reused when ``region.json`` holds the
   same config.
2. **Training shards** (:func:`embedder.evaluation.region.prepare_shards`): the per-cube functions the Ray job ``ray_jobs/build_shards.py`` runs
   (:func:`embedder.data.shards.plan_cubes`, :func:`~embedder.data.shards.build_cube_task`), here
   in process; complete cubes are reused. Splits are dealt by cube as always (375/83/42).
3. **Training**, per encoder, the small preset (``ModelConfig.small``, ``FusionConfig.small``,
   ``TrainConfig.small`` with ``batch_size``): stage 1 S1 on S1-only windows, stage 1 S2 on fused
   windows, then the fusion over the two best stage-1 checkpoints, each with
   :func:`embedder.training.fit` (the function the Ray Train jobs run on every worker), ``epochs`` x
   at most ``steps_per_epoch`` steps, the best epoch chosen on the validation split.
4. **Centre MAE** (SPEC 4) of each best checkpoint on the held-out split
   (:func:`embedder.training.evaluate`): the test split, or the validation split when no cube was
   dealt to test (then it also chose the checkpoint: :attr:`FidelityResult.eval_split` says which).
5. **Land-cover probe** (:func:`embedder.evaluation.report.land_cover_probe`): each model embeds every region
   scene (:class:`embedder.inference.Predictor`; the dense model takes its dense path) and a logistic
   regression on the embedding is scored against the scenes' ground-truth land cover on held-out
   spatial blocks (accuracy pooled over scenes by test pixel-dates).
6. **GPP skill**: tower scenes driven by real fAPAR (:func:`embedder.evaluation.towers.write_tower_scenes`), each
   model's embedding at the towers (:func:`embedder.evaluation.towers.tower_scene_features`) and
   :func:`embedder.gpp.run_evaluation` against the towers' observed GPP (temporal split: train on all
   years but the last, evaluate the last). Needs the FluxDataKit files (``gpp_dir``); skipped with a
   reason otherwise.

The imagery is synthetic (see :mod:`embedder.sample` and :mod:`embedder.evaluation.towers`), the models are the
small preset, trained briefly on CPU: the numbers compare the two encoders under one budget, they are
not the paper-scale fidelity. ``bench/fidelity.py`` is the command line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from embedder.config import (
    ConfigError,
    FusionConfig,
    GppConfig,
    ModelConfig,
    PatchConfig,
    TrainConfig,
)
from embedder.evaluation.quality import ProbeScore, probe_inputs, probe_pooled
from embedder.evaluation.region import (
    STAGE1_KIND,
    EvaluationDataError,
    batch_loader,
    frame_mean_baselines,
    heldout_split,
    prepare_data,
    spread_indices,
)
from embedder.evaluation.towers import DEFAULT_GPP_DIR, TOWER_SITES
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sample import SampleRegion
from embedder.sensors import S1, S2

__all__ = [
    "ENCODERS",
    "STAGES",
    "FidelityConfig",
    "FidelityError",
    "FidelityResult",
    "VariantResult",
    "compare_encoders",
    "score_stage1",
    "train_stage1",
    "train_variant",
]

ENCODERS: tuple[str, ...] = ("paper", "dense")
"""The frame encoders compared (``ModelConfig.encoder``), the reference first."""
STAGES: tuple[str, ...] = ("s1", "s2", "fusion")
"""Training stages of each encoder: the two stage-1 autoencoders, then the fusion."""
RESULT_FILE = "fidelity.json"
"""Flat JSON of the last comparison, written in the work folder."""
_HALO_PX = 7  # spatial halo of a 15 px window: the scene's outer 7 px get no embedding


class FidelityError(EvaluationDataError):
    """A comparison setting cannot work (too few cubes for a validation split, missing files, ...)."""


def _smoke_patches() -> PatchConfig:
    # ray_jobs/configs/smoke/build_shards.yaml: small cubes give hundreds of samples, not a handful
    return PatchConfig(
        window_dates=11, temporal_stride=1, spatial_stride_px=3,
        s1only_window_acquisitions=11, s1only_temporal_stride=5, s1only_spatial_stride_px=5,
    )  # fmt: skip


@dataclass(frozen=True)
class FidelityConfig:
    """Data, budget and downstream checks of one comparison (identical for both encoders)."""

    scene_px: int = 64
    """Side of each sample-region scene, px (even). The land-cover probe embeds every scene."""
    cube_px: int = 32
    """Training cubes are ``cube_px`` squares cut from the scenes (``BuildShardsConfig.cube_size_px``)."""
    cubes: int = 8
    """Training cubes; the region gets as many scenes as they need. At least 3, so the split deal
    (375/83/42) gives a validation cube; 8 or more also give a test cube."""
    start: dt.date = dt.date(2021, 7, 1)
    """First day of the sample region (and of the shards and the probe's embeddings)."""
    end: dt.date = dt.date(2022, 6, 30)
    """Last day of the sample region."""
    s2_cadence_days: int = 5
    """S2 revisit of the sample region."""
    region_seed: int = 42
    """Seed of the sample region (the demo's)."""
    patches: PatchConfig = field(default_factory=_smoke_patches)
    """How samples are cut (the smoke/demo sampling: dense strides, 11-date windows)."""
    epochs: int = 3
    """Epochs of every training stage."""
    steps_per_epoch: int = 30
    """Optimiser steps per epoch of each stage-1 autoencoder (batches of the chunk-shuffled training split)."""
    fusion_steps_per_epoch: int | None = None
    """Optimiser steps per epoch of the fusion (a step costs about 3x a stage-1 step); None: ``steps_per_epoch``."""
    batch_size: int = 16
    """Samples per step (SPEC: 16)."""
    eval_samples: int | None = 512
    """Validation and held-out samples scored per split (evenly spread); None: all of them."""
    seed: int = 42
    """Seed of weights, batch order and the GPP regressors (``TrainConfig.seed``)."""
    lr: float | None = None
    """Peak learning rate of every stage, both encoders; None: ``TrainConfig.small().lr`` (1e-3)."""
    stage_lrs: tuple[tuple[str, float], ...] = ()
    """Per-stage peak learning rates that override :attr:`lr`, as ``(encoder.stage, lr)`` pairs with
    stage ``s1``, ``s2`` or ``fusion``: e.g. ``(("dense.s1", 3e-4),)``, or each encoder's best learning
    rate on validation from ``bench/fidelity_sweep.py`` (``bench/fidelity.py --lrs-from-sweep``)."""
    probe_block_px: int = 8
    """Side of the probe's spatial blocks (test blocks are held out whole)."""
    pixel_batch: int = 4096
    """Pixels per forward pass when embedding."""
    gpp: bool = True
    """Run the GPP check (needs the FluxDataKit files in :attr:`gpp_dir`)."""
    gpp_sites: tuple[str, ...] = TOWER_SITES
    """Tower sites (FluxDataKit ids) of the GPP check."""
    gpp_years: tuple[int, int] = (2019, 2020)
    """First and last year of the GPP check: train on all but the last, evaluate the last."""
    gpp_scene_px: int = 24
    """Side of each tower scene, px (10 x 10 embedded pixels at 24)."""
    gpp_cadence_days: int = 10
    """S2 revisit of the tower scenes."""
    gpp_s1_cadence_days: int = 24
    """S1 revisit per orbit direction of the tower scenes."""
    gpp_radius_m: float = 50.0
    """Tower footprint radius over which features are averaged."""
    gpp_epochs: int = 8
    """Epochs of the GPP regressors (``GppConfig.small``)."""
    gpp_dir: str = str(DEFAULT_GPP_DIR)
    """Folder with the FluxDataKit ``fdk_rsofun_11sites_*`` files."""

    def __post_init__(self) -> None:
        if self.cube_px < 15 or self.scene_px < self.cube_px or self.scene_px % 2:
            raise ConfigError(
                f"FidelityConfig: scene_px = {self.scene_px} must be even and >= cube_px = {self.cube_px} "
                ">= 15 (one window)"
            )
        if self.cubes < 3:
            raise ConfigError(
                f"FidelityConfig.cubes = {self.cubes}: at least 3 cubes are needed for a validation split "
                "(cubes are dealt 375/83/42); use 8+ for a test split too"
            )
        for name in (
            "epochs",
            "steps_per_epoch",
            "batch_size",
            "probe_block_px",
            "pixel_batch",
            "gpp_epochs",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"FidelityConfig.{name} = {getattr(self, name)} must be at least 1")
        if self.fusion_steps_per_epoch is not None and self.fusion_steps_per_epoch < 1:
            raise ConfigError(
                f"FidelityConfig.fusion_steps_per_epoch = {self.fusion_steps_per_epoch} must be >= 1"
            )
        if self.lr is not None and not (0 < self.lr < 1):
            raise ConfigError(f"FidelityConfig.lr = {self.lr} must be in (0, 1)")
        for key, value in self.stage_lrs:
            enc, _, stage = key.partition(".")
            if enc not in ENCODERS or stage not in STAGES or not (0 < value < 1):
                raise ConfigError(
                    f"FidelityConfig.stage_lrs: ({key!r}, {value}) must be 'encoder.stage' with encoder in "
                    f"{list(ENCODERS)}, stage in {list(STAGES)} and a learning rate in (0, 1)"
                )
        if self.eval_samples is not None and self.eval_samples < 1:
            raise ConfigError(f"FidelityConfig.eval_samples = {self.eval_samples} must be >= 1 or None")
        if self.end <= self.start or self.gpp_years[1] <= self.gpp_years[0]:
            raise ConfigError(
                f"FidelityConfig: period {self.start}..{self.end} and gpp_years {self.gpp_years} must "
                "each run forward (GPP needs two years: train and evaluate)"
            )

    def lr_for(self, encoder: str, stage: str) -> float:
        """Peak learning rate of one encoder's stage (``s1``, ``s2``, ``fusion``).

        :attr:`stage_lrs` first, else :attr:`lr`, else ``TrainConfig.small().lr``.
        """
        return dict(self.stage_lrs).get(f"{encoder}.{stage}") or self.lr or TrainConfig.small().lr

    @property
    def cubes_per_scene(self) -> int:
        """Cubes :func:`embedder.data.shards.plan_cubes` cuts from one scene (edge remainders dropped)."""
        return (self.scene_px // self.cube_px) ** 2

    @property
    def n_scenes(self) -> int:
        """Scenes of the sample region: as many as :attr:`cubes` need."""
        return math.ceil(self.cubes / self.cubes_per_scene)

    @property
    def sampling(self) -> str:
        """``"spec"`` when samples are cut as SPEC 2 says (:class:`PatchConfig` defaults), else ``"smoke"``."""
        return "spec" if self.patches == PatchConfig() else "smoke"

    @classmethod
    def spec(cls, **overrides: Any) -> FidelityConfig:
        """Non-smoke runs: SPEC 2's sampling on cubes large enough to give it windows.

        20-usable-date windows 17 dates apart with 11 drawn at random, fused windows 9 px apart and S1-only
        windows of 40 acquisitions 15 px apart (:class:`PatchConfig` defaults). A year of 5-day S2 gives
        about two such windows per position, and a 128 px cube 13 x 13 positions (~340 fused samples,
        against ~8 in the smoke runs' 32 px cubes); 8 cubes come from two 256 px scenes.
        """
        base: dict[str, Any] = {"scene_px": 256, "cube_px": 128, "cubes": 8, "patches": PatchConfig()}
        base.update(overrides)
        return cls(**base)

    @classmethod
    def tiny(cls, **overrides: Any) -> FidelityConfig:
        """Tests: one 32 px scene over four months, three 16 px cubes, 2 steps, one GPP tower."""
        base: dict[str, Any] = {
            "scene_px": 32, "cube_px": 16, "cubes": 3, "start": dt.date(2021, 12, 16),
            "end": dt.date(2022, 4, 15), "patches": dataclasses.replace(_smoke_patches(), spatial_stride_px=1),
            "epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "eval_samples": 16, "probe_block_px": 4,
            "gpp_sites": ("CH-Aws",), "gpp_scene_px": 16, "gpp_cadence_days": 20,
            "gpp_s1_cadence_days": 60, "gpp_epochs": 1,
        }  # fmt: skip
        base.update(overrides)
        return cls(**base)


@dataclass(frozen=True)
class VariantResult:
    """Everything measured for one encoder."""

    encoder: str
    """``ModelConfig.encoder`` of the trained models (read back from the fusion model)."""
    frame_encoder: str
    """Class of the S2 frame encoder (``_FrameEncoder`` or ``DenseFrameEncoder``)."""
    parameters: int
    """Parameters of the fusion model (both autoencoders included)."""
    centre_mae: dict[str, float]
    """Held-out centre MAE: ``s1``, ``s2`` (stage 1), ``fusion`` (mean of its parts), ``fusion_s1``, ``fusion_s2``."""
    val_centre_mae: dict[str, float]
    """Best validation centre MAE of each stage (``s1``, ``s2``, ``fusion``)."""
    best_epoch: dict[str, int]
    """Epoch of each stage's best checkpoint."""
    probe: ProbeScore | None
    """Land-cover probe (None when no scene had enough pixel-dates)."""
    gpp_r2: dict[str, float]
    """GPP R2 on the evaluation year per regressor (``transformer``, ``linear``); empty without GPP."""
    gpp_rmse: dict[str, float]
    """GPP RMSE (gC m-2 d-1) per regressor."""
    seconds: dict[str, float]
    """Wall time of ``train``, ``probe`` and ``gpp``."""
    stage1_checkpoints: dict[str, str] = field(default_factory=dict)
    """Stage-1 checkpoints taken as given (sensor -> path) instead of trained here; empty: all trained."""


@dataclass(frozen=True)
class FidelityResult:
    """Both variants, the baselines and the settings of one comparison."""

    cfg: FidelityConfig
    """The settings."""
    variants: dict[str, VariantResult]
    """``paper`` and ``dense``."""
    eval_split: str
    """Split the centre MAE was scored on (``test``, or ``val`` when no cube was dealt to test)."""
    shard_counts: dict[str, int]
    """Cubes per split and training samples per kind."""
    baseline_centre_mae: dict[str, float]
    """Centre MAE (``s1``, ``s2``) on the same held-out samples of a trivial reconstruction: every pixel
    of a frame set to that frame's mean over its valid pixels. A model below it has learned the pixel."""
    gpp_r2_bands: dict[str, float]
    """GPP R2 of the regressors on the raw S2 bands at the towers (baseline; empty without GPP)."""
    gpp_note: str
    """Why GPP was skipped (empty when it ran)."""
    seconds: dict[str, float]
    """Wall time of ``region``, ``shards``, ``towers`` and ``total``."""
    environment: dict[str, float]
    """``threads`` (torch intra-op) and ``load_average_1min`` at the end (the machine may be shared)."""

    def flat(self) -> dict[str, Any]:
        """Flat JSON-ready dict: ``paper_centre_mae_s2``, ``dense_landcover_acc``, ratios, settings, ..."""
        out: dict[str, Any] = {"preset": "small"}
        for enc, v in self.variants.items():
            out[f"{enc}_encoder"] = v.encoder
            out[f"{enc}_frame_encoder"] = v.frame_encoder
            out[f"{enc}_parameters"] = v.parameters
            for k, val in v.centre_mae.items():
                out[f"{enc}_centre_mae_{k}"] = val
            for k, val in v.val_centre_mae.items():
                out[f"{enc}_val_centre_mae_{k}"] = val
            for k, ep in v.best_epoch.items():
                out[f"{enc}_best_epoch_{k}"] = ep
            out[f"{enc}_landcover_acc"] = v.probe.accuracy if v.probe else None
            out[f"{enc}_gpp_r2"] = v.gpp_r2.get("transformer")
            out[f"{enc}_gpp_r2_linear"] = v.gpp_r2.get("linear")
            out[f"{enc}_gpp_rmse"] = v.gpp_rmse.get("transformer")
            for k, s in v.seconds.items():
                out[f"seconds_{enc}_{k}"] = round(s, 1)
            for stage in STAGES:
                out[f"{enc}_lr_{stage}"] = self.cfg.lr_for(enc, stage)
            for sensor, path in v.stage1_checkpoints.items():
                out[f"{enc}_stage1_checkpoint_{sensor}"] = path
        paper, dense = self.variants["paper"], self.variants["dense"]
        for k in ("s1", "s2", "fusion"):
            out[f"dense_vs_paper_mae_{k}"] = dense.centre_mae[k] / paper.centre_mae[k]
        if paper.probe and dense.probe:
            out["dense_minus_paper_landcover_acc"] = dense.probe.accuracy - paper.probe.accuracy
        if "transformer" in paper.gpp_r2 and "transformer" in dense.gpp_r2:
            out["dense_minus_paper_gpp_r2"] = dense.gpp_r2["transformer"] - paper.gpp_r2["transformer"]
        for k, val in self.baseline_centre_mae.items():
            out[f"baseline_centre_mae_{k}"] = val
        probe = paper.probe or dense.probe
        out["landcover_acc_bands"] = probe.accuracy_bands if probe else None
        out["landcover_acc_majority"] = probe.accuracy_majority if probe else None
        out["landcover_test_pixel_dates"] = probe.n_test if probe else None
        out["bands_gpp_r2"] = self.gpp_r2_bands.get("transformer")
        out["bands_gpp_r2_linear"] = self.gpp_r2_bands.get("linear")
        out["gpp_note"] = self.gpp_note
        c = self.cfg
        out.update(
            eval_split=self.eval_split, epochs=c.epochs, steps_per_epoch=c.steps_per_epoch,
            fusion_steps_per_epoch=c.fusion_steps_per_epoch or c.steps_per_epoch,
            batch_size=c.batch_size, eval_samples=c.eval_samples, seed=c.seed, cubes=c.cubes,
            lr=c.lr or TrainConfig.small().lr,
            cube_px=c.cube_px, scene_px=c.scene_px, scenes=c.n_scenes, period=f"{c.start}..{c.end}",
            gpp_sites=",".join(c.gpp_sites) if c.gpp else "", gpp_years=f"{c.gpp_years[0]}-{c.gpp_years[1]}",
            gpp_scene_px=c.gpp_scene_px, sampling=c.sampling,
        )  # fmt: skip
        out.update({f"shards_{k}": v for k, v in self.shard_counts.items()})
        out.update({f"seconds_{k}": round(v, 1) for k, v in self.seconds.items()})
        out.update(self.environment)
        return out

    def table(self) -> str:
        """The comparison as a Markdown table (metric, paper, dense, dense vs paper)."""
        p, d = self.variants["paper"], self.variants["dense"]

        def num(v: float | None, fmt: str = ".4g") -> str:
            return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)

        rows = [("metric", "paper", "dense", "dense vs paper")]
        for k, label in (("s1", "S1"), ("s2", "S2"), ("fusion", "fusion (S1+S2 mean)")):
            a, b = p.centre_mae[k], d.centre_mae[k]
            rows.append((f"centre MAE {label}, {self.eval_split}", num(a), num(b), f"x{b / a:.3f}"))
        for k in ("s1", "s2"):
            base = num(self.baseline_centre_mae.get(k))
            rows.append(
                (f"centre MAE {k.upper()}, frame-mean reconstruction", base, base, "trivial baseline")
            )
        if p.probe and d.probe:
            rows.append(
                (
                    "land-cover probe accuracy",
                    num(p.probe.accuracy, ".3f"),
                    num(d.probe.accuracy, ".3f"),
                    f"{d.probe.accuracy - p.probe.accuracy:+.3f} (bands {p.probe.accuracy_bands:.3f}, "
                    f"majority {p.probe.accuracy_majority:.3f})",
                )
            )
        for model in ("transformer", "linear"):
            if model in p.gpp_r2 and model in d.gpp_r2:
                bands = self.gpp_r2_bands.get(model)
                rows.append(
                    (
                        f"GPP R2 ({model}, {self.cfg.gpp_years[1]})",
                        num(p.gpp_r2[model], ".3f"),
                        num(d.gpp_r2[model], ".3f"),
                        f"{d.gpp_r2[model] - p.gpp_r2[model]:+.3f} (bands {num(bands, '.3f')})",
                    )
                )
        rows.append(("training time (s)", f"{p.seconds['train']:.0f}", f"{d.seconds['train']:.0f}", ""))
        rows.append(
            (
                "embedding + probe time, region scenes (s)",
                f"{p.seconds['probe']:.0f}",
                f"{d.seconds['probe']:.0f}",
                f"x{p.seconds['probe'] / max(d.seconds['probe'], 1e-9):.1f} faster",
            )
        )
        rows.append(("parameters", f"{p.parameters:,}", f"{d.parameters:,}", ""))
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|---|---:|---:|---|")
        return "\n".join(lines)


# --- 3 and 4. training and held-out centre MAE -------------------------------------------------------------


@dataclass(frozen=True)
class _Stage:
    best_epoch: int
    val_centre_mae: float
    heldout: dict[str, float]
    checkpoint: Path


def _train_stage(
    model: torch.nn.Module,
    objective: Any,
    data: Mapping[str, Any],
    run_dir: Path,
    *,
    cfg: FidelityConfig,
    train_cfg: TrainConfig,
    eval_split: str,
    steps_per_epoch: int,
) -> _Stage:
    """``fit`` on ``data['train']`` (best epoch on ``val``), then the best checkpoint on ``eval_split``."""
    from torch.utils.data import Subset

    from embedder.checkpoints import load_checkpoint
    from embedder.training import MONITOR, evaluate, fit

    if run_dir.exists():
        shutil.rmtree(run_dir)
    val = Subset(data["val"], spread_indices(len(data["val"]), cfg.eval_samples))
    held = Subset(data[eval_split], spread_indices(len(data[eval_split]), cfg.eval_samples))
    result = fit(
        model,
        batch_loader(data["train"], batch_size=cfg.batch_size, seed=cfg.seed, shuffle=True),
        batch_loader(val, batch_size=cfg.batch_size, seed=cfg.seed, shuffle=False),
        objective=objective,
        cfg=train_cfg,
        run_dir=run_dir,
        max_steps_per_epoch=steps_per_epoch,
    )
    best = run_dir / "best.pt"
    if not best.is_file():  # no finite validation metric in any epoch
        last = result.history[-1]["val"].get(MONITOR) if result.history else None
        raise FidelityError(
            f"training diverged: no epoch of {result.epochs_run} reached a finite validation centre MAE "
            f"(last {last}) at lr {train_cfg.lr:g}; use a lower learning rate"
        )
    ckpt = load_checkpoint(best, sensors=objective.sensors, kind=objective.kind)
    model.load_state_dict(ckpt["model_state"])
    heldout = evaluate(
        model, batch_loader(held, batch_size=cfg.batch_size, seed=cfg.seed, shuffle=False)(0),
        objective=objective, cfg=train_cfg,
    )  # fmt: skip
    return _Stage(result.best_epoch, result.best_metric, heldout, best)


def _small_train_config(cfg: FidelityConfig, *, seed: int, lr: float | None) -> TrainConfig:
    """``TrainConfig.small`` with the comparison's budget (patience >= epochs: no early stopping)."""
    return dataclasses.replace(
        TrainConfig.small(), max_epochs=cfg.epochs, batch_size=cfg.batch_size, seed=seed,
        early_stopping_patience=max(cfg.epochs, 4), lr=lr or TrainConfig.small().lr,
    )  # fmt: skip


def _check_splits(data: Mapping[str, Mapping[str, Any]], root: str) -> None:
    for kind, splits in data.items():
        empty = [s for s, ds in splits.items() if len(ds) == 0]
        if empty:
            raise FidelityError(
                f"the {empty} split(s) of the {kind!r} shards under {root!r} have no samples; use more cubes"
            )


def train_stage1(
    encoder: str,
    sensor: str,
    shard_root: str | Path,
    run_dir: str | Path,
    cfg: FidelityConfig,
    *,
    seed: int | None = None,
    lr: float | None = None,
    eval_split: str = "test",
) -> dict[str, Any]:
    """Train one stage-1 autoencoder (``sensor`` ``s1`` or ``s2``) with the ``encoder`` frame encoder.

    The small preset with ``cfg``'s budget, from :func:`embedder.training.seed_everything` with ``seed``
    (default ``cfg.seed``: weights and batch order) at peak learning rate ``lr`` (default
    ``cfg.lr_for(encoder, sensor)``).
    Returns the best epoch, its validation centre MAE, the best checkpoint's metrics on ``eval_split``
    (``heldout``) and the checkpoint path.
    """
    from embedder.data.loader import ShardDataset
    from embedder.training import ModalityObjective, seed_everything

    if encoder not in ENCODERS:
        raise FidelityError(f"encoder {encoder!r} is unknown; use one of {list(ENCODERS)}")
    if sensor not in STAGE1_KIND:
        raise FidelityError(f"sensor {sensor!r} is unknown; use one of {list(STAGE1_KIND)}")
    spec, kind, root = (S1 if sensor == "s1" else S2), STAGE1_KIND[sensor], str(shard_root)
    data = {kind: {s: ShardDataset(root, split=s, kind=kind) for s in ("train", "val", eval_split)}}
    _check_splits(data, root)
    seed = cfg.seed if seed is None else seed
    mcfg = dataclasses.replace(ModelConfig.small(), encoder=encoder)  # type: ignore[arg-type]
    train_cfg = _small_train_config(cfg, seed=seed, lr=lr or cfg.lr_for(encoder, sensor))
    seed_everything(seed)
    ae = ModalityAutoencoder(spec, cfg=mcfg)
    st = _train_stage(
        ae, ModalityObjective(spec, stage=1), data[kind], Path(run_dir), cfg=dataclasses.replace(cfg, seed=seed),
        train_cfg=train_cfg, eval_split=eval_split, steps_per_epoch=cfg.steps_per_epoch,
    )  # fmt: skip
    return {
        "best_epoch": st.best_epoch,
        "val_centre_mae": st.val_centre_mae,
        "heldout": st.heldout,
        "checkpoint": st.checkpoint,
    }


def score_stage1(
    encoder: str,
    sensor: str,
    checkpoint: str | Path,
    shard_root: str | Path,
    cfg: FidelityConfig,
    *,
    eval_split: str = "test",
) -> dict[str, Any]:
    """An already trained stage-1 checkpoint, scored as :func:`train_stage1` scores the ones it trains.

    The checkpoint must hold the ``encoder`` frame encoder and the ``sensor``; it keeps its recorded
    best epoch and validation centre MAE. Use it to build the fusion over longer-trained autoencoders
    (e.g. a ``bench/fidelity_sweep.py`` run) without training them again.
    """
    from torch.utils.data import Subset

    from embedder.checkpoints import load_autoencoder, load_checkpoint
    from embedder.data.loader import ShardDataset
    from embedder.training import ModalityObjective, evaluate

    if sensor not in STAGE1_KIND:
        raise FidelityError(f"sensor {sensor!r} is unknown; use one of {list(STAGE1_KIND)}")
    spec = S1 if sensor == "s1" else S2
    ckpt = load_checkpoint(checkpoint, sensors=[spec], kind="modality")
    have = ckpt["config"]["model"].get("encoder", "paper")
    if have != encoder:
        raise FidelityError(
            f"stage-1 checkpoint {str(checkpoint)!r} holds the {have!r} encoder, not {encoder!r}; "
            "pass each encoder its own checkpoints"
        )
    held = ShardDataset(str(shard_root), split=eval_split, kind=STAGE1_KIND[sensor])
    _check_splits({STAGE1_KIND[sensor]: {eval_split: held}}, str(shard_root))
    batches = batch_loader(
        Subset(held, spread_indices(len(held), cfg.eval_samples)),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        shuffle=False,
    )(0)
    objective: Any = ModalityObjective(spec, stage=1)
    heldout = evaluate(
        load_autoencoder(checkpoint, spec), batches, objective=objective,
        cfg=_small_train_config(cfg, seed=cfg.seed, lr=None),
    )  # fmt: skip
    return {
        "best_epoch": int(ckpt["best_epoch"]),
        "val_centre_mae": float(ckpt["best_metric"]),
        "heldout": heldout,
        "checkpoint": Path(checkpoint),
    }


def train_variant(
    encoder: str,
    shard_root: str | Path,
    run_dir: str | Path,
    cfg: FidelityConfig,
    *,
    eval_split: str = "test",
    stage1: Mapping[str, str | Path] | None = None,
) -> tuple[FusionModel, dict[str, Any]]:
    """Train stage 1 (S1, S2) and the fusion with the ``encoder`` frame encoder; the best fusion model.

    Every stage starts from :func:`embedder.training.seed_everything` with ``cfg.seed`` and sees the
    same batches for either encoder. ``stage1`` (sensor -> checkpoint) takes already trained stage-1
    autoencoders instead of training them (:func:`score_stage1`). The second value holds per stage the
    best epoch, the best validation centre MAE and the metrics of the best checkpoint on ``eval_split``.
    """
    from embedder.checkpoints import load_autoencoder
    from embedder.data.loader import ShardDataset
    from embedder.training import FusionObjective, seed_everything

    if encoder not in ENCODERS:
        raise FidelityError(f"encoder {encoder!r} is unknown; use one of {list(ENCODERS)}")
    root, runs = str(shard_root), Path(run_dir)
    fused = {"fused": {s: ShardDataset(root, split=s, kind="fused") for s in ("train", "val", eval_split)}}
    _check_splits(fused, root)
    given = dict(stage1 or {})
    stages: dict[str, dict[str, Any]] = {
        sensor: score_stage1(encoder, sensor, given[sensor], root, cfg, eval_split=eval_split)
        if sensor in given
        else train_stage1(encoder, sensor, root, runs / f"stage1-{sensor}", cfg, eval_split=eval_split)
        for sensor in ("s1", "s2")
    }
    seed_everything(cfg.seed)
    aes = {s.name: load_autoencoder(stages[s.name]["checkpoint"], s) for s in (S1, S2)}
    model = FusionModel(aes, cfg=FusionConfig.small())
    fusion_cfg = dataclasses.replace(
        _small_train_config(cfg, seed=cfg.seed, lr=cfg.lr_for(encoder, "fusion")), plateau_factor=0.3
    )  # as ray_jobs/configs/smoke/train_fusion.yaml
    st = _train_stage(
        model, FusionObjective([S1, S2]), fused["fused"], runs / "stage2-fusion",
        cfg=cfg, train_cfg=fusion_cfg, eval_split=eval_split,
        steps_per_epoch=cfg.fusion_steps_per_epoch or cfg.steps_per_epoch,
    )  # fmt: skip
    stages["fusion"] = {
        "best_epoch": st.best_epoch,
        "val_centre_mae": st.val_centre_mae,
        "heldout": st.heldout,
    }
    keep = ("best_epoch", "val_centre_mae", "heldout")
    return model.eval(), {name: {k: stage[k] for k in keep} for name, stage in stages.items()}


# --- 5. the land-cover probe -------------------------------------------------------------------------------


def _probe(
    predictor: Any, region: SampleRegion, cubes: Mapping[str, xr.Dataset], *, block_px: int, seed: int
) -> ProbeScore | None:
    """Embed every scene and pool :func:`embedder.evaluation.report.land_cover_probe` over them."""
    return probe_pooled(probe_inputs(predictor, region, cubes), block_px=block_px, seed=seed)


# --- 6. GPP at the towers ------------------------------------------------------------------------------------


def _tower_cubes(out_dir: Path, cfg: FidelityConfig) -> dict[str, xr.Dataset]:
    """Tower scenes (written once, reused when the settings match) and their cubes."""
    from embedder.evaluation.towers import CONTEXT_DAYS, load_scene_cube, write_tower_scenes
    from embedder.sample import MANIFEST_NAME, read_region_manifest

    y0, y1 = cfg.gpp_years
    start, end = dt.date(y0, 1, 1) - dt.timedelta(days=CONTEXT_DAYS), dt.date(y1, 12, 31)
    want = ([*cfg.gpp_sites], start, end, cfg.gpp_scene_px, cfg.gpp_cadence_days, cfg.gpp_s1_cadence_days)
    region = None
    if (out_dir / MANIFEST_NAME).is_file():
        region = read_region_manifest(out_dir)
        have = ([s.name for s in region.scenes], region.start, region.end, region.cfg.size_px,
                region.cfg.s2_cadence_days, region.cfg.s1_cadence_days)  # fmt: skip
        region = region if have == want else None
    if region is None:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        region = write_tower_scenes(
            out_dir, sites=cfg.gpp_sites, start=start, end=end, size_px=cfg.gpp_scene_px,
            cadence_days=cfg.gpp_cadence_days, s1_cadence_days=cfg.gpp_s1_cadence_days, seed=cfg.seed,
            gpp_dir=cfg.gpp_dir,
        )  # fmt: skip
    return {s.name: load_scene_cube(region, s) for s in region.scenes}


def _gpp_scores(features: Any, gpp: Any, gcfg: GppConfig) -> tuple[dict[str, float], dict[str, float]]:
    """``(r2, rmse)`` per regressor of :func:`embedder.gpp.run_evaluation` over all sites (``ALL`` rows)."""
    from embedder.gpp import run_evaluation

    metrics = run_evaluation(features, gpp, cfg=gcfg).metrics
    overall = metrics[metrics["site"] == "ALL"].set_index("model")
    return (
        {str(m): float(v) for m, v in overall["r2"].items()},
        {str(m): float(v) for m, v in overall["rmse"].items()},
    )


# --- the whole comparison ---------------------------------------------------------------------------------


def compare_encoders(
    out_dir: str | Path,
    cfg: FidelityConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
    stage1_checkpoints: Mapping[str, Mapping[str, str | Path]] | None = None,
) -> FidelityResult:
    """Run the comparison (module docstring) in the work folder ``out_dir``; writes ``fidelity.json`` there.

    ``out_dir`` keeps the sample region, shards and tower scenes for the next run with the same
    settings (models are always retrained). ``log`` receives progress lines. ``stage1_checkpoints``
    (encoder -> sensor -> checkpoint, e.g. :func:`embedder.evaluation.sweep.best_checkpoints`) builds the
    fusion over those stage-1 autoencoders instead of training new ones; they must have been trained
    on this comparison's shards.
    """
    cfg = cfg or FidelityConfig()
    say = log or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()

    region, counts = prepare_data(out, cfg, seconds=seconds, log=say)
    eval_split = heldout_split(counts)
    baseline = frame_mean_baselines(out / "shards", eval_split, cfg)

    from embedder.evaluation.towers import load_scene_cube

    scene_cubes = {s.name: load_scene_cube(region, s) for s in region.scenes}
    gpp_note = ""
    tower_cubes: dict[str, xr.Dataset] = {}
    gpp_table: Any = None
    gcfg: GppConfig | None = None
    gpp_dir = Path(cfg.gpp_dir)
    if not cfg.gpp:
        gpp_note = "GPP disabled (gpp=False)"
    elif not (gpp_dir / "fdk_rsofun_11sites_daily_forcing.csv.gz").is_file():
        gpp_note = f"no FluxDataKit files in {str(gpp_dir)!r}"
    else:
        from embedder.evaluation.towers import FLUX, tower_gpp_config
        from embedder.gpp import read_flux

        t0 = time.perf_counter()
        tower_cubes = _tower_cubes(out / "towers", cfg)
        seconds["towers"] = time.perf_counter() - t0
        say(f"tower scenes: {len(tower_cubes)} ({seconds['towers']:.0f} s)")
        gpp_table = read_flux(gpp_dir / FLUX)
        gpp_table = gpp_table[gpp_table["site"].isin(list(cfg.gpp_sites))]
        base = GppConfig.small(epochs=cfg.gpp_epochs, models=("transformer", "linear"), seed=cfg.seed)
        gcfg = tower_gpp_config(base, split="temporal", years=cfg.gpp_years)

    from embedder.evaluation.towers import tower_scene_features
    from embedder.inference import Predictor

    tower_kw: dict[str, Any] = {
        "start": dt.date(cfg.gpp_years[0], 1, 1), "end": dt.date(cfg.gpp_years[1], 12, 31),
        "radius_m": cfg.gpp_radius_m, "gpp_dir": gpp_dir,
    }  # fmt: skip
    gpp_bands: dict[str, float] = {}
    if gcfg is not None:
        gpp_bands, _ = _gpp_scores(tower_scene_features(tower_cubes, **tower_kw), gpp_table, gcfg)

    variants: dict[str, VariantResult] = {}
    for enc in ENCODERS:
        t0 = time.perf_counter()
        given = dict((stage1_checkpoints or {}).get(enc, {}))
        model, stages = train_variant(
            enc, out / "shards", out / "runs" / enc, cfg, eval_split=eval_split, stage1=given
        )
        t_train = time.perf_counter() - t0
        say(
            f"{enc}: trained in {t_train:.0f} s: "
            + json.dumps({k: v["heldout"]["centre_mae"] for k, v in stages.items()})
        )
        predictor = Predictor(model, pixel_batch=cfg.pixel_batch)
        t0 = time.perf_counter()
        probe = _probe(predictor, region, scene_cubes, block_px=cfg.probe_block_px, seed=cfg.seed)
        t_probe = time.perf_counter() - t0
        say(f"{enc}: land-cover probe {probe.accuracy if probe else None} ({t_probe:.0f} s)")
        r2: dict[str, float] = {}
        rmse: dict[str, float] = {}
        t0 = time.perf_counter()
        if gcfg is not None:
            r2, rmse = _gpp_scores(tower_scene_features(tower_cubes, predictor, **tower_kw), gpp_table, gcfg)
        t_gpp = time.perf_counter() - t0
        say(f"{enc}: GPP R2 {r2} ({t_gpp:.0f} s)")
        fusion = stages["fusion"]["heldout"]
        ae = model.autoencoder("s2")
        variants[enc] = VariantResult(
            encoder=ae.cfg.encoder,
            frame_encoder=type(ae.frame_encoder).__name__,
            parameters=sum(p.numel() for p in model.parameters()),
            centre_mae={
                "s1": stages["s1"]["heldout"]["centre_mae"],
                "s2": stages["s2"]["heldout"]["centre_mae"],
                "fusion": fusion["centre_mae"],
                "fusion_s1": fusion["s1/centre_mae"],
                "fusion_s2": fusion["s2/centre_mae"],
            },
            val_centre_mae={k: float(v["val_centre_mae"]) for k, v in stages.items()},
            best_epoch={k: int(v["best_epoch"]) for k, v in stages.items()},
            probe=probe,
            gpp_r2=r2,
            gpp_rmse=rmse,
            seconds={"train": t_train, "probe": t_probe, "gpp": t_gpp},
            stage1_checkpoints={k: str(v) for k, v in given.items()},
        )
    seconds["total"] = time.perf_counter() - t_all
    result = FidelityResult(
        cfg=cfg, variants=variants, eval_split=eval_split, shard_counts=counts, baseline_centre_mae=baseline,
        gpp_r2_bands=gpp_bands,
        gpp_note=gpp_note, seconds=seconds,
        environment={"threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2)},
    )  # fmt: skip
    (out / RESULT_FILE).write_text(json.dumps(result.flat(), indent=1) + "\n")
    return result
