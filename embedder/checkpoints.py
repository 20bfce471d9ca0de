"""Checkpoints: the one file format both training stages write and every job loads.

A checkpoint (``torch.save`` of a dict, format :data:`CHECKPOINT_FORMAT`) holds the plain model's state
(:func:`unwrap` removes ``DistributedDataParallel`` / ``torch.compile`` wrappers), the optimiser and
scheduler states, epoch and best metric, the resolved configs and each sensor's name and bands.
:func:`save_checkpoint` writes it all or nothing; :func:`load_checkpoint` checks the kind and sensors so a
stage-1 checkpoint of the wrong sensor, a stage-1 file where a fusion model is expected, or a file that
is not a checkpoint at all is refused with :class:`CheckpointMismatchError` naming what differs;
:func:`load_autoencoder` / :func:`load_fusion` rebuild the models from the checkpoint's own configs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LinearLR, ReduceLROnPlateau

from embedder.config import FusionConfig, ModelConfig, TrainConfig, from_dict, to_dict
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import SensorSpec, get_sensor

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMismatchError",
    "checkpoint_digest",
    "checkpoint_encoders",
    "checkpoint_init_from",
    "load_autoencoder",
    "load_checkpoint",
    "load_fusion",
    "load_model_state",
    "save_checkpoint",
    "unwrap",
]

CHECKPOINT_FORMAT = "embedder-checkpoint/1"
"""Format tag stored in every checkpoint."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds other sensors, bands or a different kind of model than asked for."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under ``DistributedDataParallel`` / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, nn.parallel.DistributedDataParallel):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _model_description(model: nn.Module) -> tuple[str, dict[str, Any], dict[str, list[str]]]:
    """``(kind, configs, sensors)`` of a plain model."""
    if isinstance(model, ModalityAutoencoder):
        return "modality", {"model": to_dict(model.cfg)}, {model.sensor.name: list(model.sensor.bands)}
    if isinstance(model, FusionModel):
        aes = {n: model.autoencoder(n) for n in model.names}
        configs = {"fusion": to_dict(model.cfg), "models": {n: to_dict(ae.cfg) for n, ae in aes.items()}}
        return "fusion", configs, {n: list(ae.sensor.bands) for n, ae in aes.items()}
    raise TypeError(
        f"cannot checkpoint a {type(model).__name__}; expected ModalityAutoencoder or FusionModel"
    )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    warmup: LinearLR | LambdaLR | None = None,
    plateau: ReduceLROnPlateau | None = None,
    epoch: int = -1,
    best_metric: float = math.inf,
    best_epoch: int = -1,
    epochs_since_best: int = 0,
    train_cfg: TrainConfig | None = None,
) -> Path:
    """Write a checkpoint of the (unwrapped) model with training state, configs and sensors; returns the path.

    The file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    plain = unwrap(model)
    kind, configs, sensors = _model_description(plain)
    if train_cfg is not None:
        configs["train"] = to_dict(train_cfg)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "sensors": sensors,
        "config": configs,
        "model_state": plain.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "warmup_state": warmup.state_dict() if warmup is not None else None,
        "plateau_state": plateau.state_dict() if plateau is not None else None,
        "epoch": epoch,
        "best_metric": best_metric,
        "best_epoch": best_epoch,
        "epochs_since_best": epochs_since_best,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    sensors: Sequence[SensorSpec] | None = None,
    kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint; with ``sensors`` / ``kind``, check they match and raise :class:`CheckpointMismatchError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {str(path)!r} does not exist; pass the path of a .pt file written by fit"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and weights-only errors all mean "not a checkpoint of ours"
        raise CheckpointMismatchError(
            f"{str(path)!r} is not a readable checkpoint (torch.load failed: {type(err).__name__}); "
            "pass a .pt file written by embedder.training (a fit run's best.pt or weights/*.pt)"
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{str(path)!r} is not an embedder checkpoint (format {CHECKPOINT_FORMAT!r}); "
            "use a checkpoint written by embedder.training"
        )
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} holds a {ckpt['kind']!r} model but a {kind!r} model was asked for"
        )
    if sensors is not None:
        have = {n: list(b) for n, b in ckpt["sensors"].items()}
        want = {s.name: list(s.bands) for s in sensors}
        if have != want:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} holds sensors/bands {have} but {want} were asked for; "
                "pass the checkpoint trained for these sensors (stage 1 is one checkpoint per sensor)"
            )
    return ckpt


def load_model_state(model: nn.Module, ckpt: Mapping[str, Any], path: str | Path) -> None:
    """Load ``ckpt``'s model state into ``model``; a size mismatch is a :class:`CheckpointMismatchError`."""
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} (configs {ckpt['config']}) does not fit this model's size: {err}. "
            "Build the model with the checkpoint's config (see load_autoencoder)"
        ) from None


def load_autoencoder(
    path: str | Path, sensor: SensorSpec | str, *, map_location: str | torch.device = "cpu"
) -> ModalityAutoencoder:
    """A stage-1 :class:`ModalityAutoencoder` of ``sensor`` built from the checkpoint's own config.

    Raises :class:`CheckpointMismatchError` when the checkpoint holds another sensor or band list.
    """
    spec = get_sensor(sensor) if isinstance(sensor, str) else sensor
    ckpt = load_checkpoint(path, sensors=[spec], kind="modality", map_location=map_location)
    ae = ModalityAutoencoder(spec, cfg=from_dict(ModelConfig, ckpt["config"]["model"], where=f"{path}:model"))
    load_model_state(ae, ckpt, path)
    return ae


def checkpoint_encoders(checkpoint: str | Path | Mapping[str, Any]) -> dict[str, str]:
    """Frame encoder (``ModelConfig.encoder``: ``paper`` or ``dense``) of each sensor of a fusion checkpoint.

    ``checkpoint`` is its path or what :func:`load_checkpoint` returned for it (read once by a caller that
    needs several of its fields).
    """
    ckpt = load_checkpoint(checkpoint, kind="fusion") if isinstance(checkpoint, str | Path) else checkpoint
    if ckpt.get("kind") != "fusion":
        raise CheckpointMismatchError(
            f"a {ckpt.get('kind')!r} checkpoint has no fusion encoders; pass a fusion (stage-2) checkpoint"
        )
    return {str(n): str(c.get("encoder", "paper")) for n, c in ckpt["config"]["models"].items()}


def checkpoint_digest(path: str | Path) -> str:
    """``sha256:<16 hex>`` of a local checkpoint file: a model's version (stores, ``init_from``, ``weights/``)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def checkpoint_init_from(checkpoint: str | Path | Mapping[str, Any]) -> str:
    """``sha256:<16 hex>`` of the weights a checkpoint's training run started from ("" for none).

    ``checkpoint`` is its path or what :func:`load_checkpoint` returned for it.
    """
    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, str | Path) else checkpoint
    return str(ckpt["config"].get("train", {}).get("init_from", ""))


def load_fusion(path: str | Path, *, map_location: str | torch.device = "cpu") -> FusionModel:
    """A :class:`FusionModel` rebuilt from a stage-2 checkpoint (sensors and sizes from the checkpoint)."""
    ckpt = load_checkpoint(path, kind="fusion", map_location=map_location)
    aes = {
        n: ModalityAutoencoder(get_sensor(n), cfg=from_dict(ModelConfig, c, where=f"{path}:models.{n}"))
        for n, c in ckpt["config"]["models"].items()
    }
    for n, ae in aes.items():
        if list(ae.sensor.bands) != list(ckpt["sensors"][n]):
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} has bands {ckpt['sensors'][n]} for {n!r} but embedder.sensors "
                f"now lists {list(ae.sensor.bands)}; retrain or use a matching version"
            )
    model = FusionModel(aes, cfg=from_dict(FusionConfig, ckpt["config"]["fusion"], where=f"{path}:fusion"))
    load_model_state(model, ckpt, path)
    return model
