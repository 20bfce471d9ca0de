"""Seeded fabricated cubes in the documented layout (docs/design.md "Cube"), for tests and examples.

Like ``xarray.tests.create_test_data(seed)``: small, fast, deterministic, and shipped in the package so
every room can build the same cube without a catalog. Values are smooth random fields in [0, 1]; clouds
are random rectangles of NaN; some dates can be made entirely unusable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from embedder.sensors import PRIMARY_SENSOR, S1

__all__ = ["make_test_cube"]

_DAY_NS = np.int64(86_400_000_000_000)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], size_px: int) -> np.ndarray:
    """Values in [0.05, 0.95] that vary smoothly over the last two axes (sum of a few low frequencies)."""
    yy, xx = np.meshgrid(np.arange(size_px), np.arange(size_px), indexing="ij")  # [H, W]
    out = np.zeros((*shape, size_px, size_px), dtype=np.float64)
    for _ in range(3):
        fy, fx = rng.uniform(0.02, 0.2, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=(*shape, 1, 1))
        out += np.sin(fy * yy + fx * xx + phase)
    out = 0.5 + 0.15 * out + 0.02 * rng.standard_normal(out.shape)
    return np.clip(out, 0.05, 0.95).astype(np.float32)


def make_test_cube(
    seed: int = 0,
    *,
    size_px: int = 33,
    n_dates: int = 30,
    revisit_days: int = 5,
    n_s1: int = 50,
    s1_revisit_days: int = 3,
    cloud_frac: float = 0.3,
    unusable_dates: tuple[int, ...] = (),
    start: str = "2021-01-03",
    s1_max_gap_days: float = 12.0,
) -> xr.Dataset:
    """Return a cube ``xarray.Dataset`` with the variables, dims, coords and attrs of ``load_cube``.

    ``n_dates`` S2 dates every ``revisit_days`` from ``start`` (10:30 UTC); ``n_s1`` S1 acquisitions
    every ``s1_revisit_days`` (17:45 UTC) from the same day. Each S2 date gets up to three cloud
    rectangles covering about ``cloud_frac`` of the tile; dates in ``unusable_dates`` are all NaN.
    ``s1``/``s1_time``/``s1_gap_days`` hold the nearest S1 acquisition of each S2 date (NaN/NaT when it
    is more than ``s1_max_gap_days`` away).
    """
    rng = np.random.default_rng(seed)
    s2_bands = PRIMARY_SENSOR.bands
    s1_bands = S1.bands
    t0 = np.datetime64(start, "ns") + np.timedelta64(10 * 60 + 30, "m")
    times = t0 + np.arange(n_dates) * np.timedelta64(revisit_days, "D")  # [T] datetime64[ns]
    s1_t0 = np.datetime64(start, "ns") + np.timedelta64(17 * 60 + 45, "m") - np.timedelta64(1, "D")
    times_s1 = s1_t0 + np.arange(n_s1) * np.timedelta64(s1_revisit_days, "D")  # [T1]

    s2 = _smooth_field(rng, (n_dates, len(s2_bands)), size_px)  # [T, C2, H, W]
    for t in range(n_dates):
        if t in unusable_dates:
            s2[t] = np.nan
            continue
        for _ in range(3):
            if rng.random() > cloud_frac * 2:
                continue
            h, w = rng.integers(size_px // 4, size_px // 2 + 1, size=2)
            y0, x0 = rng.integers(0, size_px - h + 1), rng.integers(0, size_px - w + 1)
            s2[t, :, y0 : y0 + h, x0 : x0 + w] = np.nan
    s1_own = _smooth_field(rng, (n_s1, len(s1_bands)), size_px)  # [T1, C1, H, W]
    # a few no-data speckles, as at swath edges
    speckle = rng.random(s1_own.shape) < 0.01
    s1_own[speckle] = np.nan

    # nearest S1 acquisition per S2 date
    diff_ns = np.abs(times_s1[None, :].astype(np.int64) - times[:, None].astype(np.int64))  # [T, T1]
    nearest = diff_ns.argmin(axis=1)  # [T]
    gap_days = diff_ns[np.arange(n_dates), nearest] / _DAY_NS  # [T] float days
    ok = gap_days <= s1_max_gap_days
    s1 = np.where(ok[:, None, None, None], s1_own[nearest], np.nan).astype(np.float32)  # [T, C1, H, W]
    s1_time = np.where(ok, times_s1[nearest], np.datetime64("NaT", "ns"))
    s1_gap = np.where(ok, gap_days, np.nan).astype(np.float32)

    valid_frac = np.isfinite(s2).mean(axis=(1, 2, 3)).astype(np.float32)  # [T]
    usable = valid_frac >= PRIMARY_SENSOR.min_valid_train
    x = 500_000.0 + 5.0 + 10.0 * np.arange(size_px)
    y = 5_600_000.0 - 5.0 - 10.0 * np.arange(size_px)
    return xr.Dataset(
        {
            "s2": (("time", PRIMARY_SENSOR.band_dim, "y", "x"), s2),
            "s1": (("time", S1.band_dim, "y", "x"), s1),
            "s1_time": (("time",), s1_time),
            "s1_gap_days": (("time",), s1_gap),
            "s1_own": (("time_s1", S1.band_dim, "y", "x"), s1_own),
            "s2_valid_frac": (("time",), valid_frac),
            "s2_usable": (("time",), usable),
        },
        coords={
            "time": pd.DatetimeIndex(times),
            "time_s1": pd.DatetimeIndex(times_s1),
            "y": y,
            "x": x,
            PRIMARY_SENSOR.band_dim: list(s2_bands),
            S1.band_dim: list(s1_bands),
        },
        attrs={
            "crs": "EPSG:32632",
            "transform": (500_000.0, 10.0, 0.0, 5_600_000.0, 0.0, -10.0),  # GDAL order
            "halo_px": 0,
        },
    )
