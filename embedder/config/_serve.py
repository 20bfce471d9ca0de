"""Config of serving embedding stores (embedder/serve/): limits and defaults of the queries and the service."""

from __future__ import annotations

import dataclasses

from embedder.config._base import ConfigError

__all__ = ["ServeConfig"]


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Limits and defaults of the read-only store service (``embedder serve``) and the Python queries."""

    max_region_px: int = 1_048_576
    """Largest region extract in pixels (y * x) a request may ask for (1024 x 1024); larger: HTTP 413."""
    max_region_values: int = 20_000_000
    """Largest in-memory extract in values (pixels x dates or windows x 7 features; 80 MB as float32)."""
    max_points: int = 10_000
    """Most points one ``sample_points`` request may carry."""
    max_tile_native_px: int = 2048
    """Map tiles needing a native window wider than this (zoomed out) show the coverage only."""
    max_tile_dates: int = 62
    """Most store dates a window tile may average (a longer window: HTTP 422 naming the limit)."""
    strip_px: int = 256
    """Rows per strip when large regions are aggregated or exported strip by strip (fewer when a strip
    of that many rows would need more than ``max_request_mib``)."""
    max_request_mib: float = 1024.0
    """Most memory (MiB) one request may allocate, estimated before any chunk is read: a region extract
    (the result twice, while strips are joined, plus one strip of codes), one strip of an export, one map
    tile. Over it: :class:`~embedder.serve.api.RegionTooLargeError` (CLI exit 1, HTTP 413) with the size."""
    max_export_gib: float = 64.0
    """Largest export in GiB of float32 values written (dates or windows x 7 x pixels), checked before any
    chunk is read (:class:`~embedder.serve.api.RegionTooLargeError`)."""
    pca_samples: int = 20_000
    """Valid pixel-dates sampled from the store to fit the fixed RGB PCA of the map tiles."""
    marker_cache_units: int = 4096
    """Done-markers (shard indexes of a unit, ~10-40 kB each) a reader keeps for point queries."""

    def __post_init__(self) -> None:
        for name in ("max_region_px", "max_region_values", "max_points", "max_tile_native_px",
                     "max_tile_dates", "strip_px", "pca_samples", "marker_cache_units"):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ConfigError(f"ServeConfig.{name} = {getattr(self, name)} must be positive")
        for name in ("max_request_mib", "max_export_gib"):
            if not getattr(self, name) > 0:  # also NaN
                raise ConfigError(f"ServeConfig.{name} = {getattr(self, name)} must be a positive number")
