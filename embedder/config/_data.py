"""Configs of patches, training shards and cubes (embedder/data/, ray_jobs/build_shards.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Literal

from embedder.config._base import ConfigError
from embedder.geo import check_order
from embedder.sensors import MAX_GAP_SUM_DAYS as _MAX_GAP_SUM_DAYS

__all__ = ["BuildShardsConfig", "CubeConfig", "CubeSpec", "PatchConfig"]


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    """How training samples are cut from a cube (../shared/SPEC.md section 2, "Patches").

    The window size (15 x 15 px, 11 frames) is a model fact and lives in :mod:`embedder.sensors`
    (``WINDOW_PX``, ``WINDOW_DATES``); this config holds the sampling numbers around it.
    """

    window_dates: int = 20
    """Consecutive usable S2 dates per training window, from which ``WINDOW_DATES`` are drawn."""
    temporal_stride: int = 17
    """Step (in usable S2 dates) between the starts of consecutive training windows."""
    spatial_stride_px: int = 9
    """Step in pixels between the centres of neighbouring fused training samples."""
    max_gap_sum_days: int = _MAX_GAP_SUM_DAYS
    """A sample is dropped when its 10 gaps sum to this many days or more (sensors.MAX_GAP_SUM_DAYS)."""
    s1only_window_acquisitions: int = 40
    """Consecutive S1 acquisitions (S1's own time axis) per S1-only window."""
    s1only_temporal_stride: int = 40
    """Step between S1-only window starts. SPEC gives none; non-overlapping windows by default."""
    s1only_spatial_stride_px: int = 15
    """Step in pixels between the centres of neighbouring S1-only samples."""

    def __post_init__(self) -> None:
        from embedder.sensors import WINDOW_DATES

        for name in (
            "temporal_stride",
            "spatial_stride_px",
            "s1only_temporal_stride",
            "s1only_spatial_stride_px",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"PatchConfig.{name} = {getattr(self, name)} must be at least 1")
        for name in ("window_dates", "s1only_window_acquisitions"):
            if getattr(self, name) < WINDOW_DATES:
                raise ConfigError(
                    f"PatchConfig.{name} = {getattr(self, name)} is smaller than the {WINDOW_DATES} frames "
                    f"drawn from each window; use at least {WINDOW_DATES}"
                )
        if self.max_gap_sum_days < 1:
            raise ConfigError(f"PatchConfig.max_gap_sum_days = {self.max_gap_sum_days} must be positive")


@dataclasses.dataclass(frozen=True)
class CubeSpec:
    """One training cube (or a scene to be tiled into cubes): a named rectangle on a UTM 10 m grid."""

    name: str
    """Scene name; cube ids are ``<name>_y<row>_x<col>_<start>_<end>``."""
    epsg: int
    """EPSG code of the UTM zone the bounds are in (e.g. 32632)."""
    bounds: tuple[float, float, float, float]
    """``(left, bottom, right, top)`` in metres of ``epsg``, multiples of 10 m."""


@dataclasses.dataclass(frozen=True)
class BuildShardsConfig:
    """The shard-building job (ray_jobs/build_shards.py): which cubes, from where, to where."""

    catalog: str
    """STAC catalog: ``planetary-computer``, a STAC API URL, a stac-geoparquet snapshot (``.parquet`` path or
    URL, ``embedder stac-snapshot``) or a local ``catalog.json`` path."""
    shard_root: str
    """Root URL of the shards (local path, ``file://``, ``memory://``, ``gs://``, ``s3://``)."""
    start: dt.date
    """First day of the period of every cube (inclusive)."""
    end: dt.date
    """Last day of the period of every cube (inclusive)."""
    region_manifest: str | None = None
    """Path of a sample region's ``region.json``; its scenes become cubes (in addition to :attr:`cubes`)."""
    cubes: tuple[CubeSpec, ...] = ()
    """Explicit scenes (name, EPSG, bounds), in addition to those of :attr:`region`."""
    cube_size_px: int = 90
    """Scenes are tiled into square cubes of this many pixels (SPEC: 90); smaller scenes stay whole."""
    seed: int = 42
    """Seed of the random date draws; each cube's draws use (seed, cube id), so re-runs are identical."""
    kinds: tuple[Literal["fused", "s1only"], ...] = ("fused", "s1only")
    """Which shard kinds to build per cube."""
    patches: PatchConfig = dataclasses.field(default_factory=PatchConfig)
    """Sampling numbers (defaults = SPEC)."""
    cube: CubeConfig = dataclasses.field(default_factory=lambda: CubeConfig())
    """How each cube is loaded (S1 matching tolerance, read batching)."""
    chunk_samples: int = 256
    """Samples per Zarr chunk in the shards."""
    max_cubes: int | None = None
    """Build at most this many cubes (first ones in id order); None = all. Smoke runs use a few."""
    cpus_per_task: float = 1.0
    """Ray CPUs reserved by each cube-building task."""
    storage_options: dict[str, str] = dataclasses.field(default_factory=dict)
    """fsspec options for the shard root (e.g. ``endpoint_url``, ``token``)."""

    def __post_init__(self) -> None:
        check_order(self.start, self.end, name="BuildShardsConfig: period", error=ConfigError)
        if self.cube_size_px < 15:
            raise ConfigError(
                f"BuildShardsConfig.cube_size_px = {self.cube_size_px} is below one 15 px window"
            )
        if self.region_manifest is None and not self.cubes:
            raise ConfigError(
                "BuildShardsConfig: give `region_manifest` (a region.json) or `cubes` (name, epsg, bounds)"
            )
        if self.chunk_samples < 1:
            raise ConfigError(f"BuildShardsConfig.chunk_samples = {self.chunk_samples} must be at least 1")
        if self.max_cubes is not None and self.max_cubes < 1:
            raise ConfigError(f"BuildShardsConfig.max_cubes = {self.max_cubes} must be at least 1 (or null)")


# ---------------------------------------------------------------------------------------------------
# Cubes (embedder/data/cubes.py)
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CubeConfig:
    """How :func:`embedder.data.cubes.load_cube` reads and aligns one S1+S2 cube."""

    s1_max_gap_days: float | None = None
    """Drop the S1 match of an S2 date when abs(t_S1 - t_S2) exceeds this (None: no limit, as the reference)."""
    s1_margin_days: int = 36
    """S1 is read this many days beyond the period on each side, so the centred rolling mean and the
    nearest-in-time match have neighbours at the period's edges (36 = three 12-day repeat cycles)."""
    halo_px: int = 0
    """Spatial halo already included in the geobox; only recorded in the cube's ``halo_px`` attribute."""
    dates_per_read: int = 8
    """S2 solar days read per odc-stac call: bounds peak memory to that many days of raw items."""
    read_threads: int = 2
    """Threads odc-stac uses to read COG tiles."""
    max_gib: float = 8.0
    """Largest cube (float32 S2 + S1 of every searched date) a load may allocate, in GiB; checked after the
    search and before any read, so an oversize bbox or period is refused with its size instead of
    exhausting memory. A production tile (about 1,100 x 1,100 px, a year plus halos) takes 2-3 GiB."""

    def __post_init__(self) -> None:
        if not self.max_gib > 0:
            raise ConfigError(f"CubeConfig.max_gib={self.max_gib} must be a positive number of GiB")
        if self.s1_max_gap_days is not None and self.s1_max_gap_days < 0:
            raise ConfigError(f"CubeConfig.s1_max_gap_days={self.s1_max_gap_days} must be >= 0 or null")
        for key in ("dates_per_read", "read_threads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"CubeConfig.{key}={getattr(self, key)} must be at least 1")
        for key in ("s1_margin_days", "halo_px"):
            if getattr(self, key) < 0:
                raise ConfigError(f"CubeConfig.{key}={getattr(self, key)} must be >= 0")
