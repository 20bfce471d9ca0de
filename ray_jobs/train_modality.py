"""Stage 1 on a Ray cluster: one sensor's modality autoencoder, data-parallel with Ray Train.

``python -m ray_jobs.train_modality --sensor s2 [--config YAML] [--smoke]``

The job has four parts: the datasets (shard splits, opened once on the driver so every rank sees the
same cubes in the same order), the per-worker train function (``embedder.training.fit`` under DDP, via
:func:`ray_jobs.train_common.run_epochs`), the trainer builder (``TorchTrainer`` with scaling, run folder
on any fsspec URL, failure recovery from the last checkpoint) and argument parsing.

The run folder ``<run.storage_path>/<run.name>`` ends up with ``epoch_NNNN/checkpoint.pt`` (the best
and the latest are kept), ``metrics.jsonl`` (``embedder curves``), ``config.json`` and ``best.json``
(best epoch, its validation and held-out test metrics); stage 2 reads ``best.json``. Starting the job
again with the same run folder resumes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from embedder.config import ConfigError, load_config
from embedder.data.loader import ShardDataset
from embedder.data.shards import SPLITS
from embedder.models import ModalityAutoencoder
from embedder.sensors import SENSORS, get_sensor
from embedder.training import ModalityObjective, seed_everything
from ray_jobs import train_common
from ray_jobs.config import TrainModalityJobConfig
from ray_jobs.train_common import RunFolder

__all__ = ["build_datasets", "build_trainer", "default_config_path", "main", "train", "train_loop_per_worker"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def default_config_path(sensor: str, *, smoke: bool = False) -> Path:
    """``configs/train_modality_<sensor>.yaml`` (or its ``configs/smoke/`` twin)."""
    return (CONFIG_DIR / "smoke" if smoke else CONFIG_DIR) / f"train_modality_{sensor}.yaml"


# --- 1. datasets ---------------------------------------------------------------------------------------


def build_datasets(cfg: TrainModalityJobConfig) -> dict[str, ShardDataset]:
    """The train/val/test :class:`ShardDataset` of the job's shard kind (test left out when empty)."""
    datasets = {
        split: ShardDataset(
            cfg.shard_root, split=split, kind=cfg.shard_kind, storage_options=cfg.shard_storage_options
        )
        for split in SPLITS
    }
    train_common.check_datasets(datasets, shard_root=cfg.shard_root, kind=cfg.shard_kind)
    return {split: ds for split, ds in datasets.items() if len(ds) > 0}


# --- 2. the per-worker train function --------------------------------------------------------------------


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker: build the autoencoder, then the shared epoch loop."""
    cfg: TrainModalityJobConfig = loop_config["job"]
    sensor = get_sensor(cfg.sensor)
    seed_everything(cfg.train.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = ModalityAutoencoder(sensor, cfg=cfg.model)
    train_common.apply_init_weights(model, loop_config.get("init_state"), cfg.init_checkpoint)
    train_common.run_epochs(
        model,
        loop_config["datasets"],
        objective=ModalityObjective(sensor, stage=1),
        cfg=cfg.train,
        run=cfg.run,
        workers=cfg.workers,
        max_steps_per_epoch=cfg.max_batches_per_epoch,
        kill_worker_at_epoch=loop_config.get("kill_worker_at_epoch"),
    )


# --- 3. the trainer --------------------------------------------------------------------------------------


def build_trainer(
    cfg: TrainModalityJobConfig, *, kill_worker_at_epoch: int | None = None, address: str | None = None
) -> Any:
    """Check the data, record the config in the run folder and return the ``TorchTrainer``.

    Ray is joined (``address``, else ``RAY_ADDRESS`` or a local instance) only after these checks pass.
    """
    datasets = build_datasets(cfg)
    init_state, init_from = train_common.load_init_weights(
        cfg.init_checkpoint, storage_options=cfg.shard_storage_options, kind="modality",
        sensors=[get_sensor(cfg.sensor)],
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from=init_from))
    train_common.record_config(RunFolder.of(cfg.run), cfg)
    loop_config = {
        "job": cfg, "datasets": datasets, "kill_worker_at_epoch": kill_worker_at_epoch, "init_state": init_state,
    }  # fmt: skip
    train_common.init_ray(address)
    return train_common.build_trainer(train_loop_per_worker, loop_config, workers=cfg.workers, run=cfg.run)


def train(
    cfg: TrainModalityJobConfig, *, kill_worker_at_epoch: int | None = None, address: str | None = None
) -> dict[str, Any]:
    """Train (or resume) the run of ``cfg`` on the connected Ray cluster; returns its ``best.json``."""
    trainer = build_trainer(cfg, kill_worker_at_epoch=kill_worker_at_epoch, address=address)
    return train_common.fit_and_summarise(trainer, RunFolder.of(cfg.run))


# --- 4. command line -------------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> tuple[TrainModalityJobConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.train_modality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sensor", required=True, choices=sorted(SENSORS), help="which autoencoder to train")
    train_common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    path = Path(args.config) if args.config else default_config_path(args.sensor, smoke=args.smoke)
    cfg = load_config(TrainModalityJobConfig, path)
    if cfg.sensor != args.sensor:
        raise ConfigError(
            f"--sensor {args.sensor} but {str(path)!r} trains sensor {cfg.sensor!r}; pass matching ones"
        )
    return train_common.apply_overrides(cfg, args), args


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit code (0: trained, 1: training failed, 2: bad configuration)."""
    try:
        cfg, args = _parse(sys.argv[1:] if argv is None else argv)
    except (ConfigError, FileNotFoundError) as err:
        print(f"train_modality: {err}", file=sys.stderr)
        return 2
    try:
        best = train(cfg, kill_worker_at_epoch=args.kill_worker_at_epoch, address=args.address)
    except (train_common.DataSplitError, train_common.RunMismatchError) as err:
        print(f"train_modality: {err}", file=sys.stderr)
        return 2
    except train_common.training_failed_error() as err:
        print(f"train_modality: training failed after the allowed retries: {err}", file=sys.stderr)
        return 1
    folder = RunFolder.of(cfg.run)
    print(f"train_modality: {cfg.sensor} run {folder.url} best epoch {best['epoch']}: {json.dumps(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
