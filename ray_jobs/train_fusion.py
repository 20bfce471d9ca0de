"""Stage 2 on a Ray cluster: the fusion model over the best stage-1 autoencoders, data-parallel.

``python -m ray_jobs.train_fusion [--config YAML] [--smoke]``

Four parts, as in ``train_modality``: the datasets (fused shards), the per-worker train function
(``FusionModel`` over the two pretrained autoencoders, ``embedder.training.fit`` under DDP), the trainer
builder and argument parsing. Before anything starts, the driver resolves ``stage1`` (per sensor a
stage-1 run folder, whose ``best.json`` names the best checkpoint, or a checkpoint URL), loads each
checkpoint for its sensor and refuses one trained for another sensor or band list
(``CheckpointMismatchError`` naming the config key). The autoencoders travel to the workers with the
loop config; a resumed run restores the whole fusion model from its own last checkpoint instead.

The run folder gets the same files as stage 1, plus ``stage1.json`` (which checkpoints were used).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from embedder.checkpoints import CheckpointMismatchError, load_autoencoder
from embedder.config import ConfigError, load_config
from embedder.data.loader import ShardDataset
from embedder.data.shards import SPLITS
from embedder.models import FusionModel, ModalityAutoencoder
from embedder.sensors import get_sensor
from embedder.training import FusionObjective, seed_everything
from ray_jobs import train_common
from ray_jobs.config import TrainFusionJobConfig
from ray_jobs.train_common import RunFolder

__all__ = [
    "build_datasets",
    "build_trainer",
    "default_config_path",
    "load_stage1",
    "main",
    "train",
    "train_loop_per_worker",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
STAGE1_FILE = "stage1.json"
"""Which stage-1 checkpoints a fusion run started from (URL, epoch, validation centre MAE)."""


def default_config_path(*, smoke: bool = False) -> Path:
    """``configs/train_fusion.yaml`` (or its ``configs/smoke/`` twin)."""
    return (CONFIG_DIR / "smoke" if smoke else CONFIG_DIR) / "train_fusion.yaml"


# --- 1. datasets and the stage-1 autoencoders ------------------------------------------------------------


def build_datasets(cfg: TrainFusionJobConfig) -> dict[str, ShardDataset]:
    """The train/val/test fused :class:`ShardDataset` (test left out when empty)."""
    datasets = {
        split: ShardDataset(
            cfg.shard_root, split=split, kind="fused", storage_options=cfg.shard_storage_options
        )
        for split in SPLITS
    }
    train_common.check_datasets(datasets, shard_root=cfg.shard_root, kind="fused")
    return {split: ds for split, ds in datasets.items() if len(ds) > 0}


def load_stage1(cfg: TrainFusionJobConfig) -> tuple[dict[str, ModalityAutoencoder], dict[str, Any]]:
    """The best stage-1 autoencoder of every sensor, and a provenance record for ``stage1.json``.

    Raises ``CheckpointMismatchError`` (naming ``stage1.<sensor>``) when a checkpoint holds another
    sensor, band list or model kind, and ``StageOneError`` when a run has no usable checkpoint.
    """
    autoencoders: dict[str, ModalityAutoencoder] = {}
    record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="embedder-stage1-") as tmp:
        for name, url in sorted(cfg.stage1.items()):
            path = train_common.resolve_stage1_checkpoint(
                url, storage_options=cfg.stage1_storage_options, local_dir=tmp
            )
            try:
                autoencoders[name] = load_autoencoder(path, get_sensor(name))
            except CheckpointMismatchError as err:
                raise CheckpointMismatchError(
                    f"stage1.{name} = {url!r} cannot be the {name} autoencoder: {err}"
                ) from None
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            record[name] = {
                "url": url,
                "epoch": int(ckpt["epoch"]),
                "best_val_centre_mae": float(ckpt["best_metric"]),
                "bands": list(ckpt["sensors"][name]),
            }
    return autoencoders, record


# --- 2. the per-worker train function --------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: fusion model over the stage-1 autoencoders, then the epoch loop."""
    cfg: TrainFusionJobConfig = loop_config["job"]
    seed_everything(cfg.train.seed)
    model = FusionModel(loop_config["autoencoders"], cfg=cfg.fusion)
    train_common.apply_init_weights(model, loop_config.get("init_state"), cfg.init_checkpoint)
    train_common.run_epochs(
        model,
        loop_config["datasets"],
        objective=FusionObjective([get_sensor(n) for n in model.names]),
        cfg=cfg.train,
        run=cfg.run,
        workers=cfg.workers,
        max_steps_per_epoch=cfg.max_batches_per_epoch,
        kill_worker_at_epoch=loop_config.get("kill_worker_at_epoch"),
    )


# --- 3. the trainer --------------------------------------------------------------------------------------


def build_trainer(
    cfg: TrainFusionJobConfig, *, kill_worker_at_epoch: int | None = None, address: str | None = None
) -> Any:
    """Check stage 1 and the data, record config and provenance in the run folder; the ``TorchTrainer``.

    Ray is joined (``address``, else ``RAY_ADDRESS`` or a local instance) only after these checks pass.
    """
    autoencoders, record = load_stage1(cfg)
    datasets = build_datasets(cfg)
    init_state, init_from = train_common.load_init_weights(
        cfg.init_checkpoint, storage_options=cfg.stage1_storage_options, kind="fusion",
        sensors=[get_sensor(n) for n in sorted(cfg.stage1)],
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=init_from))
    folder = RunFolder.of(cfg.run)
    train_common.record_config(folder, cfg)
    folder.write_json(STAGE1_FILE, record)
    loop_config = {
        "job": cfg,
        "datasets": datasets,
        "autoencoders": autoencoders,
        "kill_worker_at_epoch": kill_worker_at_epoch,
        "init_state": init_state,
    }
    train_common.init_ray(address)
    return train_common.build_trainer(train_loop_per_worker, loop_config, workers=cfg.workers, run=cfg.run)


def train(
    cfg: TrainFusionJobConfig, *, kill_worker_at_epoch: int | None = None, address: str | None = None
) -> dict[str, Any]:
    """Train (or resume) the fusion run of ``cfg`` on the connected Ray cluster; returns its ``best.json``."""
    trainer = build_trainer(cfg, kill_worker_at_epoch=kill_worker_at_epoch, address=address)
    return train_common.fit_and_summarise(trainer, RunFolder.of(cfg.run))


# --- 4. command line -------------------------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[TrainFusionJobConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.train_fusion", description=__doc__.split("\n")[0]
    )
    train_common.add_common_arguments(parser)
    parser.add_argument(
        "--stage1", action="append", default=[], metavar="SENSOR=URL",
        help="override stage1.SENSOR (a stage-1 run folder or checkpoint URL); repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    path = Path(args.config) if args.config else default_config_path(smoke=args.smoke)
    overrides = {}
    for pair in args.stage1:
        if "=" not in pair:
            raise ConfigError(f"--stage1 {pair!r} is not SENSOR=URL (e.g. s2=gs://bucket/runs/stage1-s2)")
        sensor, url = pair.split("=", 1)
        overrides[sensor] = url
    cfg = load_config(TrainFusionJobConfig, path)
    if overrides:
        cfg = load_config(TrainFusionJobConfig, path, stage1={**cfg.stage1, **overrides})
    return train_common.apply_overrides(cfg, args), args


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code (0: trained, 1: training failed, 2: bad configuration or stage 1)."""
    try:
        cfg, args = _parse(sys.argv[1:] if argv is None else argv)
    except (ConfigError, FileNotFoundError) as err:
        print(f"train_fusion: {err}", file=sys.stderr)
        return 2
    try:
        best = train(cfg, kill_worker_at_epoch=args.kill_worker_at_epoch, address=args.address)
    except (
        CheckpointMismatchError,
        train_common.StageOneError,
        train_common.DataSplitError,
        train_common.RunMismatchError,
    ) as err:
        print(f"train_fusion: {err}", file=sys.stderr)
        return 2
    except train_common.training_failed_error() as err:
        print(f"train_fusion: training failed after the allowed retries: {err}", file=sys.stderr)
        return 1
    print(f"train_fusion: run {RunFolder.of(cfg.run).url} best epoch {best['epoch']}: {json.dumps(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
