"""Configurations of the Ray jobs: training workers and run storage, the two training jobs, the embed job.

Frozen dataclasses loaded with :func:`embedder.config.load_config` like every other config; they live
next to the jobs that read them (the library's own configs stay in :mod:`embedder.config`). Nothing
here imports Ray.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from embedder.config import ConfigError, FusionConfig, ModelConfig, StoreConfig, TrainConfig
from embedder.geo import check_order

__all__ = [
    "EmbedJobConfig",
    "RunStorageConfig",
    "TrainFusionJobConfig",
    "TrainModalityJobConfig",
    "WorkersConfig",
]


# --- Ray Train jobs (ray_jobs/train_modality.py, ray_jobs/train_fusion.py) --------------------------


@dataclasses.dataclass(frozen=True)
class WorkersConfig:
    """How a training job runs on the cluster: Ray Train workers, their resources and failure budget."""

    num_workers: int = 1
    """Data-parallel Ray Train workers (one DDP rank each)."""
    use_gpu: bool = False
    """One GPU per worker (DDP backend nccl); False trains on CPU (backend gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs reserved by each worker (on a 2-CPU test machine: 1, so that 2 workers fit)."""
    gpus_per_worker: float = 1.0
    """GPUs reserved by each worker when :attr:`use_gpu` is set."""
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    """torch.distributed backend; ``auto`` is nccl with GPUs and gloo without."""
    max_failures: int = 3
    """Worker failures (lost node, crash) to recover from, each time from the last checkpoint; -1: no limit."""
    loader_workers: int = 0
    """DataLoader worker processes per Ray worker (0: load in the training process)."""
    keep_freed_memory: bool = True
    """CPU workers keep freed host memory in the process instead of returning it to the OS after every
    step (glibc only; ``embedder.hostmem``): no page faults per step, ~5 % on the paper model's CPU step."""

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"WorkersConfig.num_workers = {self.num_workers} must be at least 1")
        if self.cpus_per_worker < 0 or self.gpus_per_worker <= 0:
            raise ConfigError(
                f"WorkersConfig: cpus_per_worker = {self.cpus_per_worker} must be >= 0 and "
                f"gpus_per_worker = {self.gpus_per_worker} > 0"
            )
        if self.backend == "nccl" and not self.use_gpu:
            raise ConfigError(
                "WorkersConfig.backend = 'nccl' needs use_gpu: true; use 'gloo' (or 'auto') on CPU"
            )
        if self.max_failures < -1:
            raise ConfigError(
                f"WorkersConfig.max_failures = {self.max_failures} must be -1 (no limit) or >= 0"
            )
        if self.loader_workers < 0:
            raise ConfigError(f"WorkersConfig.loader_workers = {self.loader_workers} must be >= 0")


@dataclasses.dataclass(frozen=True)
class RunStorageConfig:
    """Where a training run keeps its checkpoints, metrics and resolved config (infrastructure, not model).

    The run folder is ``<storage_path>/<name>``; starting a job again with the same folder resumes it.
    """

    storage_path: str
    """URL of the folder that holds runs: local path, ``file://``, ``gs://`` or ``s3://``."""
    name: str
    """Run folder name; keep it stable to resume a run (Ray Train picks up its checkpoints)."""
    storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for :attr:`storage_path` (e.g. ``endpoint_url``); credentials come from the environment."""
    keep_checkpoints: int = 2
    """Checkpoints kept: the best by validation centre MAE, plus always the latest (for resuming)."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"RunStorageConfig.name = {self.name!r} must be a non-empty name without '/'")
        if self.keep_checkpoints < 1:
            raise ConfigError(
                f"RunStorageConfig.keep_checkpoints = {self.keep_checkpoints} must be at least 1"
            )


def _check_max_batches(value: int | None) -> None:
    """The training jobs' ``max_batches_per_epoch``: None or at least 1."""
    if value is not None and value < 1:
        raise ConfigError(f"max_batches_per_epoch = {value} must be at least 1 (or null)")


@dataclasses.dataclass(frozen=True)
class TrainModalityJobConfig:
    """Stage 1 job: one sensor's autoencoder trained alone, data-parallel (ray_jobs/train_modality.py)."""

    sensor: str
    """Sensor name from ``embedder.sensors.SENSORS`` (``s1`` or ``s2``)."""
    shard_root: str
    """Root URL of the training shards (``ray_jobs/build_shards.py``)."""
    run: RunStorageConfig
    """Where checkpoints, metrics and the resolved config go."""
    shard_kind: Literal["fused", "s1only"] = "fused"
    """Shard kind to train on: ``fused`` windows (S2 dates) or ``s1only`` windows (S1's own time axis)."""
    shard_storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for :attr:`shard_root`."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """Autoencoder size (paper default)."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    """Optimisation (paper stage 1 default)."""
    workers: WorkersConfig = dataclasses.field(default_factory=WorkersConfig)
    """Ray Train workers and failure budget."""
    max_batches_per_epoch: int | None = None
    """Cap on training batches per worker and epoch (smoke runs, benchmarks); None: the whole split."""
    init_checkpoint: str | None = None
    """Start from these weights instead of random initialisation (fine-tuning; the optimiser and the
    schedule start fresh): a ``.pt`` checkpoint or run folder of the same kind and model size, local or
    any fsspec URL (read with the stage-1/shard storage options). E.g. the committed CPU-preset weights
    (``weights/``, ``make weights``)."""

    def __post_init__(self) -> None:
        from embedder.sensors import SENSORS

        if self.sensor not in SENSORS:
            raise ConfigError(f"sensor {self.sensor!r} is unknown; use one of {sorted(SENSORS)}")
        if self.shard_kind == "s1only" and self.sensor != "s1":
            raise ConfigError(
                f"shard_kind 's1only' holds only S1 windows but sensor is {self.sensor!r}; use shard_kind 'fused'"
            )
        _check_max_batches(self.max_batches_per_epoch)


@dataclasses.dataclass(frozen=True)
class TrainFusionJobConfig:
    """Stage 2 job: the fusion model over the best stage-1 autoencoders (ray_jobs/train_fusion.py)."""

    shard_root: str
    """Root URL of the training shards (fused kind)."""
    run: RunStorageConfig
    """Where checkpoints, metrics and the resolved config go."""
    stage1: dict[str, str]
    """Per sensor, the stage-1 run folder (its ``best.json`` names the best checkpoint) or checkpoint URL."""
    stage1_storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for the :attr:`stage1` URLs."""
    shard_storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for :attr:`shard_root`."""
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    """Fusion size and ``freeze_modalities`` mode (paper default); autoencoder sizes come from stage 1."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig.fusion)
    """Optimisation (paper stage 2 default)."""
    workers: WorkersConfig = dataclasses.field(default_factory=WorkersConfig)
    """Ray Train workers and failure budget."""
    max_batches_per_epoch: int | None = None
    """Cap on training batches per worker and epoch (smoke runs, benchmarks); None: the whole split."""
    init_checkpoint: str | None = None
    """Start from these weights instead of random initialisation (fine-tuning; the optimiser and the
    schedule start fresh): a ``.pt`` checkpoint or run folder of the same kind and model size, local or
    any fsspec URL (read with the stage-1/shard storage options). E.g. the committed CPU-preset weights
    (``weights/``, ``make weights``)."""

    def __post_init__(self) -> None:
        from embedder.sensors import FUSION_ORDER

        unknown = sorted(set(self.stage1) - set(FUSION_ORDER))
        missing = [s for s in FUSION_ORDER if s not in self.stage1]
        if unknown or missing:
            raise ConfigError(
                f"stage1 must name one stage-1 run or checkpoint per sensor {list(FUSION_ORDER)}; "
                f"unknown {unknown}, missing {missing}"
            )
        _check_max_batches(self.max_batches_per_epoch)


# --- Continental inference job (ray_jobs/embed.py) ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EmbedJobConfig:
    """The embedding job: which region and period, from which catalog, with which model, into which store."""

    catalog: str
    """STAC catalog: ``planetary-computer``, a STAC API URL, a stac-geoparquet snapshot (``.parquet`` path or
    URL, ``embedder stac-snapshot``) or a local ``catalog.json`` path."""
    store: str
    """Store URL (local path, ``file://``, ``gs://``, ``s3://``); created on the first run, resumed after."""
    region: str
    """A named region (``europe``, ``sample``), a bbox ``"lon0,lat0,lon1,lat1"``, a GeoJSON file, or a
    sample region's ``region.json``."""
    start: dt.date
    """First day to embed (inclusive); whole store periods around it are embedded."""
    end: dt.date
    """Last day to embed (inclusive)."""
    checkpoint: str
    """Fusion (stage-2) checkpoint; its hash is the store's model version (a different model is refused)."""
    store_layout: StoreConfig | None = None
    """Store layout (tile size, chunking, quantisation); None = the production default."""
    halo_px: int = 7
    """Spatial halo read around each tile (SPEC 7: 7 px for the 15 x 15 window)."""
    temporal_halo_days: int = 0
    """Days read before and after each period for the 5-usable-date context; 0 = the default of
    ``embedder.inference.temporal_halo_days()``."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Torch device of the embedding actors; ``auto`` picks CUDA when the actor has a GPU."""
    pixel_batch: int = 2048
    """Pixels per forward pass in an actor (raise on large GPUs)."""
    frame_batch: int = 0
    """Windows per call of the paper frame encoder; 0 = the device's default: on CPUs as many as keep the
    widest activation within 24 MiB (93 for the paper model; x1.3-1.6 over 2,048-window calls on a 32 px
    tile, ``bench/inference.py``), on GPUs ``pixel_batch``. See ``embedder.inference.Predictor``."""
    token_batch: int = 0
    """Pixels per temporal-transformer and fusion call; 0 = the device's default: on CPUs as many as keep
    the attention's activations within 4 MiB (124 pixels for the paper model's transformers, 1,365 for
    its fusion; the token stage x1.85 faster than at 2,048 pixels a call and x2.5-3.3 than at 8,192, on 2
    cores), on GPUs ``pixel_batch``. See ``embedder.inference.CPU_TOKEN_BYTES``."""
    cache_mb: int = 0
    """Bound of an actor's frame-token cache in MiB; 0 = the default, 4,096 (``embedder.inference.CACHE_BYTES``).
    The fast path embeds a unit in row strips whose cache fits it: a whole 512 px tile of the paper model
    would need ~24 GB, a 64-row strip of it needs 3 GB. Lower it on small GPUs or CPU nodes with little
    memory per actor; strips change the embeddings by float rounding only."""
    keep_freed_memory: bool = True
    """Actors keep freed host memory in the process instead of returning it to the OS after every
    tensor (glibc only; ``embedder.hostmem``): no page faults in the batch loop, ~5 % on CPU actors."""
    bf16: bool = False
    """bfloat16 autocast through the whole model (GPU option; off = exact fp32; ``bench/gpu.py`` reports
    the difference)."""
    frame_bf16: bool = False
    """bfloat16 autocast in the frame encoders only (the temporal transformer and the fusion stay float32):
    on CPUs with bf16 matrix units (Intel AMX, Sapphire Rapids and newer) the paper model's actors run
    ~1.7-1.9x faster than in fp32 with ``spectral`` (~3.4-3.8x than with direct convolutions) and the
    embeddings move by ~0.1 of ``store.quant_step`` (RMS; ``bench/inference.py`` records both). Off (default): exact fp32. Recorded in the store's parameters when on.
    On CPUs without bf16 instructions (AVX2 only, e.g. AMD Zen 3) it is 3-16x *slower* and the actors
    warn (``embedder.inference.cpu_bf16_native``)."""
    channels_last: bool | None = None
    """Channels-last memory format for the convolutions; null (default): on for CPU actors (~20 % faster
    paper-model convolutions), off for GPU actors (no gain measured on an H200)."""
    spectral: bool | None = None
    """The paper frame encoder's multi-scale convolutions through a 2-D DFT when they run in float32
    (``embedder.models.spectral``): as accurate as the direct convolution, the fp32 frame encoder ~2x
    faster on CPU. Null (default): on for CPU actors unless ``torch_compile`` is set, off on GPUs. Not part
    of the store's parameters: it changes embeddings by float rounding only, like ``channels_last``."""
    tf32: bool = True
    """On CUDA, allow TF32 matmuls and convolutions (``cudnn.benchmark`` is always on there)."""
    torch_compile: str | None = None
    """A ``torch.compile`` backend for the actors' model (``inductor`` on GPUs); None runs eagerly."""
    actor_threads: int = 0
    """Torch threads per embedding actor; 0 = the CPUs the actor is given (``actor_num_cpus`` rounded
    up). The ``EMBEDDER_TORCH_THREADS`` environment variable overrides both."""
    min_actors: int = 1
    """Smallest embedding actor pool (autoscaling lower bound)."""
    max_actors: int = 1
    """Largest embedding actor pool (autoscaling upper bound; one per GPU on GPU clusters); 0 = as many as
    the cluster holds when the job starts (its GPUs / ``actor_num_gpus`` on GPU actors, else its CPUs
    left after one read and one write task / ``actor_num_cpus``, at most one torch thread per CPU and as
    many as Ray's ``memory`` holds at ``cache_mb`` + 1.5 GiB each). Set it on autoscaling clusters, whose
    workers are not there yet at submission."""
    actor_num_gpus: float = 0.0
    """GPUs per embedding actor (1 on GPU workers)."""
    actor_num_cpus: float = 0.5
    """CPUs per embedding actor: below 1 on small machines so read tasks still get a CPU (STACK.md)."""
    read_num_cpus: float = 1.0
    """CPUs per cube-reading task."""
    write_num_cpus: float = 0.25
    """CPUs per store-writing task."""
    max_attempts: int = 2
    """Passes over failed units within one run (failures stay recorded in the store for later runs)."""
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Non-secret fsspec options for the store (e.g. an emulator's ``endpoint_url``); credentials come
    from the environment or workload identity, never from this file."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        check_order(self.start, self.end, name="EmbedJobConfig: period", error=ConfigError)
        if self.min_actors < 1 or (self.max_actors != 0 and self.max_actors < self.min_actors):
            raise ConfigError(
                f"EmbedJobConfig: min_actors = {self.min_actors}, max_actors = {self.max_actors}; "
                "need 1 <= min_actors <= max_actors (or max_actors 0: as many as the cluster holds)"
            )
        if self.actor_threads < 0:
            raise ConfigError(
                f"EmbedJobConfig.actor_threads = {self.actor_threads} must be >= 0 (0: the actor's CPUs)"
            )
        if self.frame_batch < 0:
            raise ConfigError(
                f"EmbedJobConfig.frame_batch = {self.frame_batch} must be >= 0 (0: the device's default)"
            )
        if self.token_batch < 0:
            raise ConfigError(
                f"EmbedJobConfig.token_batch = {self.token_batch} must be >= 0 (0: the device's default)"
            )
        if self.cache_mb < 0:
            raise ConfigError(
                f"EmbedJobConfig.cache_mb = {self.cache_mb} must be >= 0 (0: the default, 4,096 MiB)"
            )
        if not self.actor_num_cpus > 0:
            raise ConfigError(f"EmbedJobConfig.actor_num_cpus = {self.actor_num_cpus} must be positive")
        if self.max_attempts < 1:
            raise ConfigError(f"EmbedJobConfig.max_attempts = {self.max_attempts} must be at least 1")
        if self.halo_px < 7:
            raise ConfigError(
                f"EmbedJobConfig.halo_px = {self.halo_px} must be at least 7 (the 15 px window)"
            )
