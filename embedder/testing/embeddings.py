"""Embedding-like test data for one work unit: smooth in space and time, like real embeddings.

Real per-date embeddings are Softplus outputs (>= 0, mostly 0..5) that follow land cover (piecewise
constant over parcels), vary smoothly with the season, and carry a little pixel noise. Random noise
alone would make compression look far worse than it is, so tests and benchmarks use this instead.
"""

from __future__ import annotations

import numpy as np

from embedder.geo import index_date
from embedder.grid import WorkUnit
from embedder.sensors import EMBEDDING_DIM

__all__ = ["fake_unit_data"]

_N_CLASSES = 6


def _smooth_field(
    rng: np.random.Generator, n: int, *, n_waves: int = 4, scale_px: float = 200.0
) -> np.ndarray:
    """A smooth random field [n, n] with unit-ish amplitude (sum of a few low-frequency waves)."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    out = np.zeros((n, n), dtype=np.float32)
    for _ in range(n_waves):
        k = rng.normal(size=2) / scale_px
        out += np.sin(2 * np.pi * (k[0] * y + k[1] * x) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out / np.sqrt(n_waves)


def _parcels(rng: np.random.Generator, n: int, *, size_px: int) -> np.ndarray:
    """Land-cover class per pixel [n, n]: jittered rectangular parcels of about ``size_px``."""
    n_cells = n // size_px + 2
    edges_y = np.cumsum(rng.integers(size_px // 2, size_px * 3 // 2 + 1, n_cells))
    edges_x = np.cumsum(rng.integers(size_px // 2, size_px * 3 // 2 + 1, n_cells))
    iy = np.searchsorted(edges_y, np.arange(n), side="right")
    ix = np.searchsorted(edges_x, np.arange(n), side="right")
    cls_of_cell = rng.integers(0, _N_CLASSES, (n_cells + 1, n_cells + 1))
    return cls_of_cell[iy[:, None], ix[None, :]]


def fake_unit_data(
    unit: WorkUnit,
    *,
    seed: int = 0,
    cadence_days: int = 5,
    clear_frac: float = 0.45,
    noise: float = 0.01,
    parcel_px: int = 12,
) -> dict[str, np.ndarray]:
    """Embeddings, flags, dates and valid counts for ``unit``, as :func:`embedder.store.write_unit` takes.

    Returns ``{"embeddings": [T, 7, H, W] float32, "flags": [T, H, W] uint8, "dates": [T] datetime64[D],
    "valid_counts": [T] int64}`` with one S2 date every ``cadence_days`` kept with probability
    ``clear_frac`` (cloud-free dates), partial cloud holes, and a few dates with S1 missing.
    """
    from embedder.store import Flag

    rng = np.random.default_rng(seed)
    n = unit.tile.size_px
    p = unit.period
    all_days = np.arange(
        p.start_day + int(rng.integers(0, cadence_days)), p.start_day + p.period_days, cadence_days
    )
    days = all_days[rng.random(all_days.size) < clear_frac]
    t_n = days.size
    dates = np.array([np.datetime64(index_date(d), "D") for d in days], dtype="datetime64[D]")
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.float32)  # [T] day of year

    cls = _parcels(rng, n, size_px=parcel_px)  # [H, W]
    base = rng.uniform(-1.0, 2.0, (_N_CLASSES, EMBEDDING_DIM)).astype(np.float32)
    amp = rng.uniform(0.2, 1.2, (_N_CLASSES, EMBEDDING_DIM)).astype(np.float32)
    phase = rng.uniform(60, 200, _N_CLASSES).astype(np.float32)
    season = np.sin(2 * np.pi * (doy[:, None] - phase[None, :]) / 365.0)  # [T, classes]
    spatial = np.stack([_smooth_field(rng, n) for _ in range(EMBEDDING_DIM)]) * 0.3  # [7, H, W]

    z = np.empty((t_n, EMBEDDING_DIM, n, n), dtype=np.float32)  # [T, 7, H, W]
    for t in range(t_n):
        per_class = base + amp * season[t][:, None]  # [classes, 7]
        z[t] = per_class[cls].transpose(2, 0, 1) + spatial  # [7, H, W]
    z += rng.standard_normal(z.shape, dtype=np.float32) * np.float32(noise)
    emb = np.logaddexp(np.float32(0.0), z, out=z)  # Softplus, in place: >= 0

    flags = np.full((t_n, n, n), Flag.VALID, dtype=np.uint8)
    for t in range(t_n):
        holes = _smooth_field(rng, n, scale_px=80.0) > rng.uniform(0.6, 2.0)  # partial clouds
        flags[t][holes] = 0
        if rng.random() < 0.1:
            flags[t][~holes] |= np.uint8(Flag.S1_MISSING)
    if t_n:
        flags[0][flags[0] > 0] |= np.uint8(Flag.EDGE)

    emb.transpose(1, 0, 2, 3)[:, flags == 0] = np.nan  # no embedding where not VALID
    counts = (flags > 0).sum(axis=(1, 2)).astype(np.int64)
    return {"embeddings": emb, "flags": flags, "dates": dates, "valid_counts": counts}
