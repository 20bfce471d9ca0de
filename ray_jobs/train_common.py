"""The Ray Train wiring shared by the two training jobs (train_modality.py and train_fusion.py).

Four things live here so the two job scripts stay about their own model and data:

* the run folder on any fsspec URL (``<storage_path>/<name>``): Ray Train's checkpoints, plus
  ``config.json`` (the resolved job config), ``metrics.jsonl`` (one JSON line per epoch, for
  ``embedder curves``) and ``best.json`` (which checkpoint is best, with its held-out metrics);
* :func:`build_trainer`: ``TorchTrainer`` with ``ScalingConfig``, DDP backend (nccl on GPU, gloo on CPU),
  ``RunConfig(storage_path, storage_filesystem)``, ``FailureConfig`` and ``CheckpointConfig``;
* per-worker helpers: a chunk-aware shuffled loader over a shard split, metric all-reduce across ranks;
* :func:`run_epochs`: the per-worker epoch loop (resume from ``ray.train.get_checkpoint()``, train,
  validate, schedule, early-stop, one checkpoint per epoch, held-out test of the best checkpoint).

Object storage reaches Ray Train as a pyarrow filesystem wrapping the fsspec one (gcsfs, s3fs, ...), so
the same ``storage_options`` (endpoint, project) serve checkpoints, metrics and shards.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import fsspec
import pyarrow.fs
import torch
from torch import nn

from embedder import hostmem
from embedder.checkpoints import CheckpointMismatchError, checkpoint_digest, load_checkpoint, unwrap
from embedder.config import TrainConfig, to_dict
from embedder.data.loader import ChunkShuffleSampler, ShardDataset
from embedder.training import (
    EpochReport,
    FusionObjective,
    ModalityObjective,
    Objective,
    evaluate,
    fit,
    frame_mean_floor,
)
from ray_jobs.config import RunStorageConfig, WorkersConfig

__all__ = [
    "BEST_FILE",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "DataSplitError",
    "RunFolder",
    "RunMismatchError",
    "StageOneError",
    "add_common_arguments",
    "apply_init_weights",
    "build_trainer",
    "check_datasets",
    "fit_and_summarise",
    "flat_metrics",
    "load_init_weights",
    "peak_rss_mb",
    "ray_storage",
    "record_config",
    "resolve_stage1_checkpoint",
    "run_epochs",
    "shard_loader",
    "training_failed_error",
]

CHECKPOINT_FILE = "checkpoint.pt"
"""Name of the torch checkpoint file inside each Ray Train checkpoint directory."""
METRICS_FILE = "metrics.jsonl"
"""Per-epoch metrics, one JSON object per line, in the run folder."""
BEST_FILE = "best.json"
"""The best checkpoint of a finished run (directory name, epoch, validation and test metrics)."""
CONFIG_FILE = "config.json"
"""The resolved job config of a run (``embedder.config.to_dict``)."""
FORWARDED_ENV = ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL_S3")
"""Non-secret environment the workers need for object storage (forwarded when set on the driver)."""


class StageOneError(ValueError):
    """A stage-1 run or checkpoint cannot be used (missing or unfinished)."""


class RunMismatchError(ValueError):
    """The run folder already holds a run with another model, data or optimisation config."""


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def ray_storage(
    url: str, *, storage_options: Mapping[str, Any] | None = None
) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig`` from an fsspec URL and its options.

    Local paths go to Ray as absolute paths (its own local filesystem). Any other URL is opened with
    fsspec (so gcsfs/s3fs options such as ``endpoint_url`` apply) and wrapped as a pyarrow filesystem;
    the path is then given without its protocol, as Ray expects with a custom filesystem.
    """
    if _is_local(url):
        path = url[len("file://") :] if url.startswith("file://") else url
        return str(Path(path).expanduser().resolve()), None
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run (``<storage_path>/<name>``) on any fsspec URL, for small JSON files."""

    url: str
    """Run folder URL."""
    storage_options: dict[str, Any]
    """fsspec options for :attr:`url`."""

    @classmethod
    def of(cls, run: RunStorageConfig) -> RunFolder:
        """The run folder of a job's run config."""
        return cls(f"{run.storage_path.rstrip('/')}/{run.name}", dict(run.storage_options))

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, str(path).rstrip("/")

    def join(self, name: str) -> str:
        """URL of ``name`` inside the run folder."""
        return f"{self.url.rstrip('/')}/{name}"

    def write_text(self, name: str, text: str) -> None:
        """Write (replace) a small text file in the run folder (one object: no appends on object stores)."""
        fs, path = self._fs()
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(f"{path}/{name}", text.encode())

    def read_text(self, name: str) -> str | None:
        """The text of ``name`` in the run folder, or None when it does not exist."""
        fs, path = self._fs()
        try:
            return bytes(fs.cat_file(f"{path}/{name}")).decode()
        except FileNotFoundError:
            return None

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``obj`` as indented JSON."""
        self.write_text(name, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any:
        """The parsed JSON file ``name``, or None when it does not exist."""
        text = self.read_text(name)
        return None if text is None else json.loads(text)

    def write_metrics(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Write the per-epoch metrics as JSON lines (the whole history: object stores cannot append)."""
        self.write_text(
            METRICS_FILE, "".join(json.dumps(dict(row), sort_keys=True) + "\n" for row in history)
        )

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch metrics rows (empty when none were written yet)."""
        text = self.read_text(METRICS_FILE) or ""  # not pd.read_json: see embedder.curves.read_metrics
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def download(self, name: str, local_dir: str | Path) -> Path:
        """Copy the file or folder ``name`` of the run folder into ``local_dir``; returns the local path."""
        fs, path = self._fs()
        target = Path(local_dir) / Path(name).name
        if fs.isdir(f"{path}/{name}"):
            fs.get(f"{path}/{name}/", f"{target}/", recursive=True)
        else:
            fs.get(f"{path}/{name}", str(target))
        return target


def build_trainer(
    train_loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    *,
    workers: WorkersConfig,
    run: RunStorageConfig,
) -> Any:
    """A ``ray.train.torch.TorchTrainer`` for ``train_loop`` with the job's workers and run folder.

    * ``ScalingConfig(num_workers, use_gpu, resources_per_worker)`` from ``workers``;
    * DDP backend nccl on GPU, gloo on CPU (``workers.backend`` may force one);
    * ``RunConfig(storage_path, storage_filesystem)`` on the run's URL (local, gs://, s3://, ...);
    * ``FailureConfig(max_failures)``: a lost worker restarts the group from the last checkpoint;
    * ``CheckpointConfig``: keep the best by ``val_centre_mae`` (and Ray always keeps the latest).
    """
    # Ray Train V2 classes by their own modules (what ray.train.* resolve to at runtime; typed for mypy).
    from ray.train.torch import TorchConfig
    from ray.train.v2.api.config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.torch.torch_trainer import TorchTrainer

    resources: dict[str, float] = {"CPU": workers.cpus_per_worker}
    if workers.use_gpu:
        resources["GPU"] = workers.gpus_per_worker
    backend = workers.backend if workers.backend != "auto" else ("nccl" if workers.use_gpu else "gloo")
    storage_path, storage_fs = ray_storage(run.storage_path, storage_options=run.storage_options)
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend),
        scaling_config=ScalingConfig(
            num_workers=workers.num_workers, use_gpu=workers.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=workers.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=run.keep_checkpoints,
                checkpoint_score_attribute="val_centre_mae",
                checkpoint_score_order="min",
            ),
            worker_runtime_env={"env_vars": env} if env else None,
        ),
    )


# --- inside each Ray Train worker ---------------------------------------------------------------------


def flat_metrics(line: Mapping[str, Any]) -> dict[str, float | int]:
    """Ray-friendly flat numbers of a ``fit`` metrics line: ``val_centre_mae``, ``train_s2_sam``, ``lr``, ..."""
    out: dict[str, float | int] = {}
    for key, value in line.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[f"{key}_{sub}".replace("/", "_")] = v
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def shard_loader(
    dataset: ShardDataset, *, batch_size: int, shuffle: bool, seed: int, loader_workers: int
) -> Any:
    """``(loader, sampler)``: a DataLoader over this worker's part of ``dataset`` (chunk-aware shuffle).

    :class:`~embedder.data.loader.ChunkShuffleSampler` deals whole Zarr chunks to the ranks (per-epoch
    seeded permutation) and shuffles samples within groups of chunks, so each chunk is decoded once per
    epoch and rank (once per loader process with ``loader_workers > 0``), where ``DistributedSampler``'s
    fully random order decoded a whole chunk for every sample (58x slower, issue 15). Every rank gets the
    same number of samples (short ranks repeat a few), so DDP steps and metric all-reduces line up; call
    ``sampler.set_epoch(epoch)`` to reshuffle per epoch.
    """
    import ray.train
    from torch.utils.data import DataLoader

    ctx = ray.train.get_context()
    sampler = ChunkShuffleSampler(
        dataset, shuffle=shuffle, seed=seed, num_replicas=ctx.get_world_size(), rank=ctx.get_world_rank(),
        interleave_chunks=min(4, dataset.cache_chunks),
    )  # fmt: skip
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=loader_workers,
        persistent_workers=loader_workers > 0, pin_memory=torch.cuda.is_available(),
    )  # fmt: skip
    return loader, sampler


def _download_checkpoint(checkpoint: Any, local_dir: Path) -> Path:
    """Local path of the torch file inside a Ray Train checkpoint (downloaded from storage)."""
    path = Path(checkpoint.to_directory(str(local_dir))) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"Ray Train checkpoint {checkpoint} holds no {CHECKPOINT_FILE}")
    return path


def run_epochs(
    model: nn.Module,
    datasets: Mapping[str, ShardDataset],
    *,
    objective: ModalityObjective | FusionObjective,
    cfg: TrainConfig,
    run: RunStorageConfig,
    workers: WorkersConfig,
    max_steps_per_epoch: int | None = None,
    kill_worker_at_epoch: int | None = None,
) -> None:
    """The per-worker training of both jobs: ``embedder.training.fit`` wired to Ray Train.

    ``workers`` gives the loader processes (``loader_workers``) and whether a CPU worker keeps freed host
    memory (``keep_freed_memory``, :mod:`embedder.hostmem`): the worker process is the job's, and each step
    would otherwise page-fault its activations back in.

    1. wrap ``model`` for DDP (``prepare_model``), one chunk-shuffled loader per split;
    2. resume from ``ray.train.get_checkpoint()`` when Ray restarts the group after a failure;
    3. ``fit``; after each epoch its hook reports the flat metrics to Ray with a checkpoint
       (``epoch_NNNN/checkpoint.pt``, rank 0) and rewrites ``metrics.jsonl`` in the run folder;
    4. the best checkpoint (validation centre MAE) is scored on the held-out ``test`` split and
       described in ``best.json``.

    ``kill_worker_at_epoch`` is a chaos switch for rehearsing recovery: the last rank kills its process
    (``os._exit``) before reporting that epoch, once per run folder (a marker object remembers it).
    """
    import ray.train
    import ray.train.torch

    # Both objectives implement embedder.training.Objective; their `sensors` tuples are typed narrower
    # than the protocol's mutable attribute, which mypy treats as a conflict.
    as_objective = cast(Objective, objective)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if workers.keep_freed_memory and device.type == "cpu":
        hostmem.keep_freed_memory()
    folder = RunFolder.of(run)
    ddp_model = ray.train.torch.prepare_model(model)  # to device; DDP when world > 1
    loaders = {
        split: shard_loader(
            ds,
            batch_size=cfg.batch_size,
            shuffle=split == "train",
            seed=cfg.seed,
            loader_workers=workers.loader_workers,
        )
        for split, ds in datasets.items()
    }

    def batches(split: str) -> Callable[[int], Iterable[Mapping[str, Any]]]:
        loader, sampler = loaders[split]

        def per_epoch(epoch: int) -> Iterable[Mapping[str, Any]]:
            sampler.set_epoch(epoch)
            return loader

        return per_epoch

    with tempfile.TemporaryDirectory(prefix="embedder-train-") as tmp:
        resume_path: Path | None = None
        start_epoch = 0
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            resume_path = _download_checkpoint(checkpoint, Path(tmp) / "resume")
            start_epoch = int(torch.load(resume_path, map_location="cpu", weights_only=True)["epoch"]) + 1
        history = (
            [row for row in folder.read_metrics() if int(row["epoch"]) < start_epoch] if rank == 0 else []
        )
        chaos_marker = f"chaos_killed_epoch_{kill_worker_at_epoch}"

        def report(rep: EpochReport) -> None:
            line = {
                **rep.metrics,
                "world_size": world,
                "resumed_from_epoch": start_epoch if resume_path else None,
                "reported_at": time.time(),  # unix s: epoch-to-epoch wall time includes checkpointing
                "cpu_s": time.process_time(),  # CPU seconds of this process so far (all its threads)
                "peak_rss_mb": peak_rss_mb(),  # of the rank writing the line (rank 0)
            }
            if (
                kill_worker_at_epoch == rep.epoch
                and rank == world - 1
                and folder.read_text(chaos_marker) is None
            ):
                folder.write_text(
                    chaos_marker, f"rank {rank} killed itself before reporting epoch {rep.epoch}\n"
                )
                os._exit(1)  # a lost worker, as far as Ray can tell
            if rank != 0:
                ray.train.report(flat_metrics(line))
                return
            history.append(line)
            folder.write_metrics(history)
            if rep.checkpoint is None:
                raise RuntimeError("fit wrote no checkpoint on rank 0; it needs a run_dir")
            with tempfile.TemporaryDirectory(prefix="embedder-ckpt-") as ckpt_dir:
                shutil.copyfile(rep.checkpoint, Path(ckpt_dir) / CHECKPOINT_FILE)
                ray.train.report(
                    flat_metrics(line),
                    checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                    checkpoint_dir_name=f"epoch_{rep.epoch:04d}",
                )

        fit(
            ddp_model, batches("train"), batches("val"), objective=as_objective, cfg=cfg,
            run_dir=Path(tmp) / "run", device=device, resume_from=resume_path, report=report,
            max_steps_per_epoch=max_steps_per_epoch,
        )  # fmt: skip

        # Held-out test of the best checkpoint (every rank takes part: evaluate all-reduces).
        reported = [r for r in ray.train.get_all_reported_checkpoints() if "val_centre_mae" in r.metrics]
        if not reported:
            raise RuntimeError("no checkpoint was reported; did training run at least one epoch?")
        best = min(reported, key=lambda r: float(r.metrics["val_centre_mae"]))
        best_path = _download_checkpoint(best.checkpoint, Path(tmp) / "best")
        ckpt = load_checkpoint(best_path, sensors=objective.sensors, kind=objective.kind)
        unwrap(ddp_model).load_state_dict(ckpt["model_state"])
        test_metrics = None
        if "test" in loaders:
            test_metrics = evaluate(
                ddp_model, batches("test")(0), objective=as_objective, cfg=cfg, device=device
            )
        if rank == 0:
            floors: dict[str, dict[str, float]] = next(
                (row["floors"] for row in reversed(history) if row.get("floors")), {}
            )
            floor = frame_mean_floor(floors)
            best_val = float(best.metrics["val_centre_mae"])
            folder.write_json(
                BEST_FILE,
                {
                    "val_floors": floors,  # on the validation windows (embedder.floors)
                    "val_floor_frame_mean": floor if floors else None,
                    "learned": bool(best_val < floor) if floors else None,
                    "checkpoint_dir": Path(best.checkpoint.path).name,
                    "checkpoint_file": CHECKPOINT_FILE,
                    "epoch": int(ckpt["epoch"]),
                    "val_centre_mae": float(best.metrics["val_centre_mae"]),
                    "test": test_metrics,
                    "test_note": None if test_metrics is not None else "the test split has no samples",
                    "sensors": {s.name: list(s.bands) for s in objective.sensors},
                    "kind": objective.kind,
                },
            )


# --- on the driver ------------------------------------------------------------------------------------

_RESUME_NEUTRAL_KEYS = frozenset(
    {"run", "workers", "shard_storage_options", "stage1_storage_options", "max_batches_per_epoch"}
)
"""Config sections that may change between a run and its resumption (where, on what, how many workers)."""
_RESUME_NEUTRAL_TRAIN_KEYS = frozenset({"max_epochs", "early_stopping_patience"})
"""Keys of ``train`` that may change on resumption (to let a run go on for longer)."""


class DataSplitError(ValueError):
    """A split the job needs has no samples in the shard root."""


def record_config(folder: RunFolder, cfg: Any) -> None:
    """Write the resolved job config as ``config.json`` in the run folder.

    When the folder already holds a run (a resumption), its model, data and optimisation settings must
    be the same; otherwise :class:`RunMismatchError` names the differing sections.
    """
    new = to_dict(cfg)
    old = folder.read_json(CONFIG_FILE)
    if old is not None:

        def comparable(d: dict[str, Any], key: str) -> Any:
            value = d.get(key)
            if key == "train" and isinstance(value, dict):  # a resumed run may be given more epochs
                value = {k: v for k, v in value.items() if k not in _RESUME_NEUTRAL_TRAIN_KEYS}
            return value

        differ = sorted(
            k
            for k in set(old) | set(new)
            if k not in _RESUME_NEUTRAL_KEYS and comparable(old, k) != comparable(new, k)
        )
        if differ:
            raise RunMismatchError(
                f"run folder {folder.url!r} already holds a run whose {differ} differ from this config; "
                "set run.name to a new name to start a new run, or restore those settings to resume it"
            )
    folder.write_json(CONFIG_FILE, new)


def check_datasets(datasets: Mapping[str, Any], *, shard_root: str, kind: str) -> None:
    """Raise :class:`DataSplitError` when the train or val split is empty (test may be empty)."""
    for split in ("train", "val"):
        if len(datasets[split]) == 0:
            sizes = {s: len(d) for s, d in datasets.items()}
            raise DataSplitError(
                f"the {split!r} split of {kind!r} shards under {shard_root!r} has no samples (sizes {sizes}); "
                "build more cubes with ray_jobs/build_shards.py (splits are dealt by cube, 375/83/42)"
            )


def resolve_stage1_checkpoint(url: str, *, storage_options: Mapping[str, Any], local_dir: str | Path) -> Path:
    """Download the stage-1 checkpoint that ``url`` names; returns the local ``.pt`` path.

    ``url`` is a run folder of ``train_modality`` (its ``best.json`` names the best checkpoint), a Ray
    checkpoint folder holding ``checkpoint.pt``, or a ``.pt`` file. Raises :class:`StageOneError`.
    """
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options))
    path = str(path).rstrip("/")
    if not fs.exists(path):
        raise StageOneError(
            f"stage-1 checkpoint {url!r} does not exist; run ray_jobs/train_modality.py first"
        )
    if fs.isdir(path):
        if fs.exists(f"{path}/{BEST_FILE}"):
            best = json.loads(bytes(fs.cat_file(f"{path}/{BEST_FILE}")).decode())
            path = f"{path}/{best['checkpoint_dir']}/{best.get('checkpoint_file', CHECKPOINT_FILE)}"
        elif fs.exists(f"{path}/{CHECKPOINT_FILE}"):
            path = f"{path}/{CHECKPOINT_FILE}"
        else:
            raise StageOneError(
                f"{url!r} holds neither {BEST_FILE} (a finished stage-1 run) nor {CHECKPOINT_FILE}; "
                "wait for the stage-1 run to finish or point at one of its epoch_NNNN checkpoint folders"
            )
    local = Path(local_dir) / f"{hashlib.sha1(url.encode()).hexdigest()[:12]}.pt"
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get(path, str(local))
    return local


def load_init_weights(
    url: str | None, *, storage_options: Mapping[str, Any], kind: str, sensors: Iterable[Any]
) -> tuple[dict[str, Any] | None, str]:
    """``(model_state, "sha256:<16 hex>")`` of a job's ``init_checkpoint`` (``(None, "")`` without one).

    Read on the driver (a run folder's best checkpoint, a checkpoint folder or a ``.pt`` file, any fsspec
    URL) and handed to the workers with the loop config. Raises ``CheckpointMismatchError`` for another
    kind of model or other sensors, :class:`StageOneError` when it does not exist.
    """
    if not url:
        return None, ""
    with tempfile.TemporaryDirectory(prefix="embedder-init-") as tmp:
        local = resolve_stage1_checkpoint(url, storage_options=storage_options, local_dir=tmp)
        digest = checkpoint_digest(local)
        ckpt = load_checkpoint(local, sensors=list(sensors), kind=kind)
    return dict(ckpt["model_state"]), digest


def apply_init_weights(model: nn.Module, state: Mapping[str, Any] | None, url: str | None) -> None:
    """Load ``state`` (from :func:`load_init_weights`) into ``model``; a size mismatch names the checkpoint."""
    if state is None:
        return
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointMismatchError(
            f"init_checkpoint {url!r} does not fit this model's size ({err}); use weights trained with the "
            "same model config (the committed weights/ are ModelConfig.cpu / FusionConfig.cpu)"
        ) from None


def fit_and_summarise(trainer: Any, folder: RunFolder) -> dict[str, Any]:
    """Run ``trainer.fit()`` (raises Ray's ``TrainingFailedError`` on failure) and return ``best.json``."""
    trainer.fit()
    best = folder.read_json(BEST_FILE)
    if best is None:
        raise RuntimeError(f"training finished but {folder.join(BEST_FILE)!r} was not written")
    return dict(best)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options both jobs share: config, smoke mode, where things are and how many workers."""
    parser.add_argument("--config", help="job YAML (see ray_jobs/configs/); --smoke picks the smoke one")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run from ray_jobs/configs/smoke/")
    parser.add_argument("--shard-root", help="override shard_root (URL of the training shards)")
    parser.add_argument("--storage-path", help="override run.storage_path (URL of the runs folder)")
    parser.add_argument("--name", help="override run.name (the run folder; reuse a name to resume)")
    parser.add_argument("--num-workers", type=int, help="override workers.num_workers")
    parser.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a local instance)")
    parser.add_argument(
        "--kill-worker-at-epoch", type=int, metavar="N",
        help="chaos rehearsal: the last worker dies once before reporting epoch N; training must resume",
    )  # fmt: skip


def apply_overrides(cfg: Any, args: argparse.Namespace) -> Any:
    """``cfg`` with the command-line overrides of :func:`add_common_arguments` applied."""
    import dataclasses

    run = cfg.run
    if args.storage_path:
        run = dataclasses.replace(run, storage_path=args.storage_path)
    if args.name:
        run = dataclasses.replace(run, name=args.name)
    changes: dict[str, Any] = {"run": run}
    if args.shard_root:
        changes["shard_root"] = args.shard_root
    if args.num_workers is not None:
        changes["workers"] = dataclasses.replace(cfg.workers, num_workers=args.num_workers)
    if args.max_epochs is not None:
        changes["train"] = dataclasses.replace(cfg.train, max_epochs=args.max_epochs)
    return dataclasses.replace(cfg, **changes)


def init_ray(address: str | None) -> None:
    """Connect to the cluster (``address``, ``RAY_ADDRESS``) or start a local instance; no-op if connected."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True)


def training_failed_error() -> type[Exception]:
    """Ray's ``TrainingFailedError`` (raised by ``fit`` when workers or the controller give up)."""
    from ray.train import TrainingFailedError

    return TrainingFailedError
