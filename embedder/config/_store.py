"""Config of the embedding store's layout and quantisation (embedder/store/, embedder/grid.py; docs/store.md)."""

from __future__ import annotations

import dataclasses

from embedder.config._base import ConfigError

__all__ = ["StoreConfig"]


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Layout and encoding of the embedding store; saved in the store's root attributes."""

    tile_px: int = 512
    """Tile (work unit and spatial shard) side in 10 m pixels; tiles snap to a fixed per-zone grid."""
    chunk_px: int = 64
    """Spatial side of an inner chunk; must divide ``tile_px``. A point query decodes its whole block over
    the period (64 px: ~6 ms a year), a 256 px tile-date ``(256 / chunk_px)**2`` chunks (bench/serve.py)."""
    period_days: int = 366
    """Work-unit period and time-shard length in days, counted from the store epoch 2015-01-01."""
    chunk_days: int = 6
    """Days per inner chunk; must divide ``period_days``. Chunks lie spatial-major in the shard, so a pixel's
    period is one byte range whatever this is; small values make a date's map cheap to decode."""
    quant_step: float = 1.0 / 256.0
    """Quantisation step of the features (uint16, value = code * step): RMS error step/sqrt(12) = 0.0011."""
    compression_level: int = 5
    """zstd level inside Blosc (bit-shuffled), 1..9. On the default layout 9 stores ~3 % less than 5 but
    encodes ~8x slower (~29 s vs ~4 s CPU per 512 px tile-year; docs/store.md)."""

    def __post_init__(self) -> None:
        for name in ("tile_px", "chunk_px", "period_days", "chunk_days"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"StoreConfig.{name} = {getattr(self, name)} must be positive")
        if self.tile_px % self.chunk_px:
            raise ConfigError(f"StoreConfig.chunk_px = {self.chunk_px} must divide tile_px = {self.tile_px}")
        if self.period_days % self.chunk_days:
            raise ConfigError(
                f"StoreConfig.chunk_days = {self.chunk_days} must divide period_days = {self.period_days}"
            )
        if not 0 < self.quant_step <= 0.1:
            raise ConfigError(f"StoreConfig.quant_step = {self.quant_step} must be in (0, 0.1]")
        if not 1 <= self.compression_level <= 9:
            raise ConfigError(f"StoreConfig.compression_level = {self.compression_level} must be in 1..9")
