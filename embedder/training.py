"""Plain-torch training core for both stages (../shared/SPEC.md section 6); no Ray in here.

Read it top to bottom like nanoGPT's ``train.py``:

1. :class:`ModalityObjective` / :class:`FusionObjective` turn ``(model, batch)`` into a loss and metrics;
2. :func:`train_step` is one optimiser step (autocast, backward, clip, AdamW, per-step warm-up);
3. :func:`train_epoch` and :func:`evaluate` run any iterable of batches (dicts of tensors) and return
   per-sample means of the metrics, averaged over all ranks when ``torch.distributed`` is initialised;
4. :func:`fit` is the epoch loop: plateau scheduler on the validation centre MAE, best/last checkpoints,
   early stopping, one JSON line of metrics per epoch and a ``report`` hook (the Ray jobs use it);
Checkpoints (what :func:`fit` writes and the jobs load) are :mod:`embedder.checkpoints`.

The model may be wrapped in ``DistributedDataParallel`` or ``torch.compile``:
:func:`embedder.checkpoints.unwrap` gives the plain module, which is what checkpoints hold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LinearLR, ReduceLROnPlateau

from embedder.checkpoints import load_checkpoint, load_model_state, save_checkpoint, unwrap
from embedder.config import TrainConfig
from embedder.floors import centre_floors, sum_over_ranks
from embedder.losses import ContextAwareLoss, FusionLoss
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import LossWeights, SensorSpec

__all__ = [
    "LOG",
    "MONITOR",
    "EpochReport",
    "FitResult",
    "FusionObjective",
    "ModalityObjective",
    "Objective",
    "band_statistics",
    "build_optimizer",
    "build_schedulers",
    "evaluate",
    "fit",
    "frame_mean_floor",
    "loss_weights_at",
    "move_batch",
    "seed_everything",
    "train_epoch",
    "train_step",
]

MONITOR = "centre_mae"
"""Validation metric that drives the plateau scheduler, checkpoint choice and early stopping."""
METRICS_FILE = "metrics.jsonl"
"""One JSON object per epoch in the run directory."""
LOG = logging.getLogger("embedder.training")
"""Where :func:`fit` says that a stage ended above its frame-mean floor."""
STATS_BATCHES = 64
"""Training batches read for the per-band statistics of ``ModelConfig.standardize``."""
FLOOR_BATCHES = 64
"""Validation batches (at most) the floors are computed on, once per run."""


# --- 1. objectives ------------------------------------------------------------------------------------


class Objective(Protocol):
    """Computes the loss and metrics of one batch; ``metrics[MONITOR]`` is the centre MAE."""

    kind: str
    sensors: tuple[SensorSpec, ...]

    def __call__(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss, metrics)``; metrics are detached 0-d tensors."""
        ...


def loss_weights_at(weights: LossWeights, cfg: TrainConfig, step: int) -> LossWeights:
    """The loss weights in force at optimiser ``step`` under ``cfg.loss`` and ``cfg.temporal_decay``.

    ``cfg.loss`` is ``paper``, ``mae`` or ``mae_warm``. MAE-only weights keep ``l_mae`` and the centre weight ``c`` of ``weights`` and switch SSIM and SAM
    off; a sensor whose paper weights are MAE-only (S1) is unchanged by any mode.
    """
    mae_only = cfg.loss == "mae" or (cfg.loss == "mae_warm" and step < cfg.mae_warm_steps)
    if cfg.temporal_decay is not None:
        weights = dataclasses.replace(weights, temporal_decay=cfg.temporal_decay)
    return dataclasses.replace(weights, ssim=0.0, sam=0.0) if mae_only else weights


class ModalityObjective:
    """Stage 1: one sensor's autoencoder on batch keys ``name``, ``name_mask``, ``name_gaps``."""

    kind = "modality"

    def __init__(self, sensor: SensorSpec, *, stage: int = 1) -> None:
        self.sensors: tuple[SensorSpec, ...] = (sensor,)
        self.loss = ContextAwareLoss.for_sensor(sensor, stage=stage)
        self.paper_weights = self.loss.weights

    def schedule_loss(self, cfg: TrainConfig, step: int) -> None:
        """Set the loss weights for optimiser ``step`` (:func:`loss_weights_at`)."""
        self.loss.weights = loss_weights_at(self.paper_weights, cfg, step)

    def __call__(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruct the sensor's window and score it with its context-aware loss."""
        name = self.sensors[0].name
        x, mask = batch[name], batch[f"{name}_mask"]
        self.loss.to(x.device)
        x_hat, _ = model(x, batch[f"{name}_gaps"])  # [B, T, C, H, W]
        terms = self.loss(x_hat, x, mask)
        metrics = terms.metrics(f"{name}/")
        metrics["loss"] = terms.total.detach()
        metrics[MONITOR] = terms.centre_mae
        return terms.total, metrics


class FusionObjective:
    """Stage 2: ``0.5 x S1 part + 0.5 x S2 part``; the monitored centre MAE is the mean over sensors."""

    kind = "fusion"

    def __init__(self, sensors: Sequence[SensorSpec]) -> None:
        self.sensors = tuple(sensors)
        self.loss = FusionLoss({s.name: s for s in self.sensors})
        self.paper_weights = {n: typing.cast(ContextAwareLoss, p).weights for n, p in self.loss.parts.items()}

    def schedule_loss(self, cfg: TrainConfig, step: int) -> None:
        """Set every part's loss weights for optimiser ``step`` (:func:`loss_weights_at`)."""
        for n, part in self.loss.parts.items():
            typing.cast(ContextAwareLoss, part).weights = loss_weights_at(self.paper_weights[n], cfg, step)

    def __call__(
        self, model: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruct every sensor from the fused embedding and score the parts."""
        names = [s.name for s in self.sensors]
        self.loss.to(batch[names[0]].device)
        recon = model(batch)  # {name: [B, T, C, H, W]}
        total, terms = self.loss(recon, {n: batch[n] for n in names}, {n: batch[f"{n}_mask"] for n in names})
        metrics: dict[str, torch.Tensor] = {}
        for n in names:
            metrics.update(terms[n].metrics(f"{n}/"))
        metrics["loss"] = total.detach()
        metrics[MONITOR] = torch.stack([terms[n].centre_mae for n in names]).mean()
        return total, metrics


# --- 2. one optimiser step ------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global state third-party code may still use
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (frozen autoencoders are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; check FusionConfig.freeze_modalities")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _cosine_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """Learning-rate factor of ``schedule: cosine`` at a step: linear warm-up, then cosine to the floor."""
    total = int(cfg.total_steps or 0)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * step / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_schedulers(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig
) -> tuple[LinearLR | LambdaLR, ReduceLROnPlateau]:
    """The per-step scheduler and the per-epoch reduce-on-plateau (multiplicative, so they compose).

    ``schedule: plateau`` (SPEC 6): a per-step linear warm-up, and the plateau rule cuts the rate;
    ``schedule: cosine``: warm-up then cosine decay per step; :func:`fit` then never steps the plateau.
    The per-step scheduler's ``last_epoch`` counts optimiser steps (it drives :func:`loss_weights_at`).
    """
    warmup: LinearLR | LambdaLR
    if cfg.schedule == "cosine":
        warmup = LambdaLR(optimizer, _cosine_factor(cfg))
    else:
        warmup = LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=cfg.warmup_steps)
    plateau = ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=cfg.plateau_factor,
        patience=cfg.plateau_patience,
        min_lr=cfg.plateau_min_lr,
        threshold=cfg.plateau_min_lr,
        threshold_mode="abs",
    )
    return warmup, plateau


def move_batch(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors (or NumPy arrays) of a batch on ``device``; other entries are dropped."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if isinstance(value, torch.Tensor):
            out[key] = value.to(device, non_blocking=True)
    return out


def _autocast(device: torch.device, cfg: TrainConfig) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.bf16)


def train_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    warmup: LinearLR | LambdaLR | None,
    cfg: TrainConfig,
) -> dict[str, torch.Tensor]:
    """One optimiser step on one batch (already on the model's device); returns the batch metrics.

    The objective's loss weights follow ``cfg.loss`` at the step count of ``warmup`` (when both exist).
    """
    device = next(iter(batch.values())).device
    schedule_loss = getattr(objective, "schedule_loss", None)
    if schedule_loss is not None and warmup is not None:
        schedule_loss(cfg, int(warmup.last_epoch))
    with _autocast(device, cfg):
        loss, metrics = objective(model, batch)  # forward
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # backward
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
    optimizer.step()  # AdamW
    if warmup is not None:
        warmup.step()  # per-step linear warm-up
    return metrics


# --- 3. epochs over any iterable of batches -------------------------------------------------------------


class _Means:
    """Per-sample running means of metric tensors, reduced over ranks at the end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device  # NCCL reduces only device tensors; gloo takes either
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, metrics: Mapping[str, torch.Tensor], n: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = (
                self.sums.get(k, torch.zeros((), dtype=torch.float64)) + v.detach().double().cpu() * n
            )
        self.n += n

    def result(self) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.stack(
            [self.sums[k] for k in keys] + [torch.tensor(float(self.n), dtype=torch.float64)]
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            values = values.to(self.device)
            torch.distributed.all_reduce(values)  # sums over ranks
            values = values.cpu()
        n = float(values[-1])
        if n == 0:
            raise ValueError("no batches were seen; the data iterable is empty (check the dataset split)")
        return {k: float(values[i]) / n for i, k in enumerate(keys)}


def _batch_size(batch: Mapping[str, torch.Tensor], objective: Objective) -> int:
    return int(batch[objective.sensors[0].name].shape[0])


def train_epoch(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    warmup: LinearLR | LambdaLR | None,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    max_steps: int | None = None,
) -> dict[str, float]:
    """Train over ``batches`` once (at most ``max_steps`` steps); per-sample mean metrics of the epoch."""
    device = torch.device(device)
    model.train()
    means = _Means(device)
    for step, raw in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        batch = move_batch(raw, device)
        metrics = train_step(model, batch, objective=objective, optimizer=optimizer, warmup=warmup, cfg=cfg)
        means.add(metrics, _batch_size(batch, objective))
    return means.result()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    objective: Objective,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Per-sample mean metrics over ``batches`` in eval mode (``centre_mae`` is the monitored one)."""
    device = torch.device(device)
    model.eval()
    means = _Means(device)
    for raw in batches:
        batch = move_batch(raw, device)
        with _autocast(device, cfg):
            _, metrics = objective(model, batch)
        means.add(metrics, _batch_size(batch, objective))
    return means.result()


# --- 4. the epoch loop ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpochReport:
    """What :func:`fit` hands to its ``report`` hook after every epoch."""

    epoch: int
    """Epoch index, from 0."""
    metrics: dict[str, Any]
    """The epoch's metrics line (``epoch``, ``lr``, ``train``, ``val``, ``best_val_centre_mae``, ...)."""
    checkpoint: Path | None
    """The ``last.pt`` written this epoch (None on non-main ranks or without a run directory)."""
    is_best: bool
    """This epoch improved the validation centre MAE (``best.pt`` was written)."""
    stop: bool
    """Early stopping fires after this epoch."""


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit`."""

    best_metric: float
    """Best validation centre MAE."""
    best_epoch: int
    """Epoch of the best validation centre MAE."""
    epochs_run: int
    """Epochs run in this call (after a resume, not counting earlier ones)."""
    stopped_early: bool
    """True when early stopping ended the run."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """The metrics lines of this call."""
    floors: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per sensor, the centre-MAE floors on the validation batches (``embedder.floors``)."""

    @property
    def frame_mean_floor(self) -> float:
        """The monitored metric's frame-mean floor (mean over sensors, as the fusion's centre MAE)."""
        return frame_mean_floor(self.floors)

    @property
    def above_floor(self) -> bool:
        """True when the best validation centre MAE is not below the frame-mean floor: nothing learned.

        False when no floor could be computed (no validation values).
        """
        return bool(self.floors) and not self.best_metric < self.frame_mean_floor


def _is_main() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def frame_mean_floor(floors: Mapping[str, Mapping[str, float]]) -> float:
    """Frame-mean floor of the monitored centre MAE: the mean over sensors (nan without floors)."""
    values = [f["frame_mean"] for f in floors.values()]
    return float(np.mean(values)) if values else math.nan


def band_statistics(
    batches: Iterable[Mapping[str, Any]], sensor: SensorSpec, *, max_batches: int = STATS_BATCHES
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band ``(mean, std)`` ``[C]`` of the valid values of ``sensor`` in the first ``max_batches``.

    All-reduced over ranks under ``torch.distributed``, so every rank standardises alike.
    """
    c = sensor.n_channels
    sums = torch.zeros(3, c, dtype=torch.float64)  # count, sum, sum of squares
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        x = torch.as_tensor(batch[sensor.name]).detach().cpu().double().transpose(0, 2).reshape(c, -1)
        m = (
            torch.as_tensor(batch[f"{sensor.name}_mask"])
            .detach()
            .cpu()
            .transpose(0, 2)
            .reshape(c, -1)
            .double()
        )
        sums += torch.stack([m.sum(1), (x * m).sum(1), (x * x * m).sum(1)])
    sums = sum_over_ranks(sums)
    if float(sums[0].min()) == 0:
        raise ValueError(f"no valid {sensor.name} values in the training batches; cannot standardise bands")
    mean = sums[1] / sums[0]
    std = (sums[2] / sums[0] - mean**2).clamp_min(0.0).sqrt()
    return mean.float(), std.float()


def _set_band_statistics(model: nn.Module, batches: Iterable[Mapping[str, Any]]) -> None:
    """Standardisation statistics of every autoencoder of ``model`` that has the option but no statistics."""
    aes = [model] if isinstance(model, ModalityAutoencoder) else []
    if isinstance(model, FusionModel):
        aes = [model.autoencoder(n) for n in model.names]
    for ae in aes:
        stats = ae.band_stats()
        if stats is None or not (bool((stats[0] == 0).all()) and bool((stats[1] == 1).all())):
            continue  # no option, or statistics already set (a stage-1 checkpoint, a resume)
        ae.set_band_stats(*band_statistics(batches, ae.sensor))


def _steps_left(cfg: TrainConfig, step: int) -> int | None:
    """Optimiser steps left before ``cfg.total_steps`` under the cosine schedule (None: no such end)."""
    if cfg.schedule != "cosine" or cfg.total_steps is None:
        return None
    return max(0, cfg.total_steps - step)


def _min_steps(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _epoch_batches(
    source: Iterable[Mapping[str, Any]] | Callable[[int], Iterable[Mapping[str, Any]]], epoch: int
) -> Iterable[Mapping[str, Any]]:
    return source(epoch) if callable(source) else source


def fit(
    model: nn.Module,
    train_batches: Iterable[Mapping[str, Any]] | Callable[[int], Iterable[Mapping[str, Any]]],
    val_batches: Iterable[Mapping[str, Any]] | Callable[[int], Iterable[Mapping[str, Any]]],
    *,
    objective: Objective,
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    resume_from: str | Path | None = None,
    report: Callable[[EpochReport], None] | None = None,
    max_steps_per_epoch: int | None = None,
) -> FitResult:
    """Train ``model`` until ``cfg.max_epochs`` or early stopping.

    ``train_batches`` / ``val_batches`` are re-iterable sources of batches (a DataLoader, a list) or
    callables ``epoch -> iterable`` (e.g. a Ray dataset shard per epoch). The model may be wrapped in
    DDP; checkpoints hold the unwrapped module. On the main rank, with a ``run_dir``, each epoch appends
    a line to ``run_dir/metrics.jsonl`` and writes ``last.pt`` (and ``best.pt`` on improvement).
    ``resume_from`` restores model, optimiser, schedulers, epoch and early-stopping state. ``fit`` seeds
    everything with ``cfg.seed`` at its start; call :func:`seed_everything` before building the model to
    make its initial weights reproducible too.
    """
    device = torch.device(device)
    if cfg.bf16 and device.type == "cpu":
        from embedder.inference import warn_if_bf16_slow  # the check the embedding actors make too

        warn_if_bf16_slow("TrainConfig.bf16")
    seed_everything(cfg.seed)
    plain = unwrap(model)
    if resume_from is None:
        _set_band_statistics(plain, _epoch_batches(train_batches, 0))
    plain.to(device)
    optimizer = build_optimizer(model, cfg)
    warmup, plateau = build_schedulers(optimizer, cfg)
    start_epoch, best, best_epoch, since_best = 0, math.inf, -1, 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, sensors=objective.sensors, kind=objective.kind)
        load_model_state(plain, ckpt, resume_from)
        for obj, key in (
            (optimizer, "optimizer_state"),
            (warmup, "warmup_state"),
            (plateau, "plateau_state"),
        ):
            if ckpt[key] is not None:  # a weights-only checkpoint resumes with fresh optimiser state
                obj.load_state_dict(ckpt[key])
        start_epoch = int(ckpt["epoch"]) + 1
        best, best_epoch, since_best = (
            float(ckpt["best_metric"]),
            int(ckpt["best_epoch"]),
            int(ckpt["epochs_since_best"]),
        )
    train_model = typing.cast(nn.Module, torch.compile(model)) if cfg.compile else model
    out_dir = Path(run_dir) if run_dir is not None and _is_main() else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    history: list[dict[str, Any]] = []
    # 0. the floors a trained model must beat, on (at most FLOOR_BATCHES of) the validation batches
    floors = centre_floors(_epoch_batches(val_batches, 0), objective.sensors, max_batches=FLOOR_BATCHES)
    floor = frame_mean_floor(floors)
    stopped = since_best >= cfg.early_stopping_patience  # resuming a run that already stopped
    for epoch in range(start_epoch, cfg.max_epochs if not stopped else start_epoch):
        steps_left = _steps_left(cfg, int(warmup.last_epoch))
        if steps_left == 0:  # the cosine schedule has run its course
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        # 1. train, 2. validate
        train_m = train_epoch(
            train_model,
            _epoch_batches(train_batches, epoch),
            objective=objective,
            optimizer=optimizer,
            warmup=warmup,
            cfg=cfg,
            device=device,
            max_steps=_min_steps(max_steps_per_epoch, steps_left),
        )
        val_m = evaluate(
            train_model, _epoch_batches(val_batches, epoch), objective=objective, cfg=cfg, device=device
        )
        # 3. plateau scheduler on the validation centre MAE, 4. best and early-stopping bookkeeping
        if cfg.schedule == "plateau":
            plateau.step(val_m[MONITOR])
        is_best = val_m[MONITOR] < best
        if is_best:
            best, best_epoch, since_best = val_m[MONITOR], epoch, 0
        else:
            since_best += 1
        stopped = since_best >= cfg.early_stopping_patience
        line = {
            "epoch": epoch,
            "kind": objective.kind,
            "sensors": [s.name for s in objective.sensors],
            "lr": lr,
            "train": train_m,
            "val": val_m,
            "best_val_centre_mae": best,
            "best_epoch": best_epoch,
            "floors": floors,
            "floor_frame_mean": floor,
            "val_vs_floor": val_m[MONITOR] / floor,
            "step": int(warmup.last_epoch),
            "time_s": round(time.perf_counter() - t0, 3),
        }
        history.append(line)
        # 5. checkpoints and the metrics line (main rank only)
        last = None
        if out_dir is not None:
            for name in ("last.pt", "best.pt") if is_best else ("last.pt",):
                written = save_checkpoint(
                    out_dir / name,
                    plain,
                    optimizer=optimizer,
                    warmup=warmup,
                    plateau=plateau,
                    epoch=epoch,
                    best_metric=best,
                    best_epoch=best_epoch,
                    epochs_since_best=since_best,
                    train_cfg=cfg,
                )
                last = written if name == "last.pt" else last
            with (out_dir / METRICS_FILE).open("a") as fh:
                fh.write(json.dumps(line) + "\n")
        # 6. report hook (Ray Train reports metrics and checkpoints here)
        if report is not None:
            report(EpochReport(epoch=epoch, metrics=line, checkpoint=last, is_best=is_best, stop=stopped))
        if stopped:
            break
    result = FitResult(
        best_metric=best,
        best_epoch=best_epoch,
        epochs_run=len(history),
        stopped_early=stopped,
        history=history,
        floors=floors,
    )
    if result.above_floor and _is_main():
        LOG.warning(
            "%s %s: NOT LEARNED - best validation centre MAE %.5f is not below the frame-mean floor %.5f "
            "(predicting each frame's mean does as well); train longer or use the converging recipe "
            "(TrainConfig.cpu, docs/convergence.md)",
            objective.kind,
            "+".join(s.name for s in objective.sensors),
            best,
            floor,
        )
    return result
