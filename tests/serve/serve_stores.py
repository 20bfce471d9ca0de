"""Small seeded embedding stores for the serving tests (built with create_store + write_unit)."""

from __future__ import annotations

from typing import Any

import numpy as np

from embedder.config import StoreConfig
from embedder.grid import Period, Tile, WorkUnit
from embedder.store import create_store, write_unit
from embedder.testing.embeddings import fake_unit_data

CFG = StoreConfig(tile_px=64, chunk_px=32)
"""Small tiles (64 px, 32 px chunks) on the default time layout (366-day periods, 6-day chunks)."""
UNITS = [
    WorkUnit(tile=Tile(zone=32, south=False, col=889 + c, row=8000, size_px=64), period=Period(index=6))
    for c in range(2)
]
"""Two adjacent tiles near Lake Como (~9.9 E, 46.2 N) over 2021-01-05 .. 2022-01-05."""


def build_store(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create the test store at ``url`` and return what was written per unit id."""
    st = create_store(url, units=UNITS, model_version="test-1", cfg=CFG, storage_options=storage_options,
                      overwrite=True)  # fmt: skip
    written = {}
    for i, u in enumerate(UNITS):
        d = fake_unit_data(u, seed=10 + i)
        write_unit(st, u, d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
        written[u.id] = d
    return written


def pixel_lonlat(unit: WorkUnit, row: int, col: int) -> tuple[float, float]:
    """Lon/lat of the centre of pixel (row, col) of ``unit``'s tile."""
    from pyproj import Transformer

    left, _, _, top = unit.tile.bounds
    t = Transformer.from_crs(unit.tile.epsg, 4326, always_xy=True)
    lon, lat = t.transform(left + (col + 0.5) * 10.0, top - (row + 0.5) * 10.0)
    return float(lon), float(lat)


def expected_series(
    data: dict[str, np.ndarray], row: int, col: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dates, embeddings [T, 7], flags) written at one pixel, on its VALID dates only."""
    valid = (data["flags"][:, row, col] & 1) > 0
    return data["dates"][valid], data["embeddings"][valid, :, row, col], data["flags"][valid, row, col]


def upload_tree(local_dir: str, url: str, fs: Any) -> None:
    """Copy a local store directory object by object to ``url`` on the fsspec filesystem ``fs``."""
    import os

    root = url.split("://", 1)[-1].rstrip("/")
    for dirpath, _, files in os.walk(local_dir):
        for name in files:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, local_dir).replace(os.sep, "/")
            with open(full, "rb") as f:
                fs.pipe_file(f"{root}/{rel}", f.read())
