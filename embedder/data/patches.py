"""Training samples cut from a cube: 15 x 15 px x 11 frames (../shared/SPEC.md section 2, "Patches").

Fused samples (both autoencoders' stage 1 for S2, and fusion): windows of ``cfg.window_dates`` (20)
consecutive *usable* S2 dates, window starts ``cfg.temporal_stride`` (17) usable dates apart; in each
window and at each spatial position (window centres ``cfg.spatial_stride_px`` (9) px apart, windows fully
inside the cube) ``WINDOW_DATES`` (11) dates are drawn at random without replacement and kept sorted, a
fresh draw per sample. A sample is dropped when its centre pixel (7, 7) on its centre frame (index 5)
has no valid S2 band, or when its 10 gaps sum to ``cfg.max_gap_sum_days`` (200) days or more.

S1 rides along on the same 11 S2 dates (the cube's nearest-S1 matching); ``s1_gaps`` come from the
matched S1 acquisition days, ``s1_delta_days`` is the S1 - S2 distance at the centre frame.

S1-only samples (stage 1 of the S1 autoencoder): windows of ``cfg.s1only_window_acquisitions`` (40)
consecutive acquisitions of the cube's own S1 axis (``s1_own``), 11 drawn, spatial stride
``cfg.s1only_spatial_stride_px`` (15); dropped when the centre pixel of the centre frame has no valid S1
band or the gaps sum to the same day limit (the positional table has ``max_gap_sum_days + 1`` entries).

Days are whole UTC calendar days (``datetime64[D]``), so a gap is the difference of two day numbers.
Missing values inside a kept patch are filled with the patch's per-band mean over time and space (0 when
a band has no valid value in the patch) and a boolean mask (True = real value) travels with them.

Everything is vectorised with numpy fancy indexing; memory is bounded by gathering at most
``gather_batch`` samples at a time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import xarray as xr

from embedder.config import PatchConfig
from embedder.sensors import PRIMARY_SENSOR, S1, WINDOW_DATES, WINDOW_PX

__all__ = [
    "CENTRE_FRAME",
    "CENTRE_PX",
    "FUSED_KEYS",
    "S1ONLY_KEYS",
    "CubeLayoutError",
    "SamplingStats",
    "cube_seed",
    "day_numbers",
    "empty_samples",
    "fill_missing",
    "sample_fused_patches",
    "sample_s1only_patches",
    "window_starts",
]

CENTRE_FRAME: int = WINDOW_DATES // 2
"""Index of the target frame in a sample (5 of 0..10)."""
CENTRE_PX: int = WINDOW_PX // 2
"""Row/column of the target pixel inside a sample (7 of 0..14)."""

FUSED_KEYS: tuple[str, ...] = (
    "s2", "s2_mask", "s1", "s1_mask", "s2_gaps", "s1_gaps", "s1_delta_days", "centre_day", "row", "col",
)  # fmt: skip
"""Keys of a fused sample (docs/design.md "Patches")."""
S1ONLY_KEYS: tuple[str, ...] = ("s1", "s1_mask", "s1_gaps", "centre_day", "row", "col")
"""Keys of an S1-only sample: the ``s1*`` keys plus where and when the centre is."""


class CubeLayoutError(ValueError):
    """The cube lacks a variable or dimension of the documented layout (docs/design.md "Cube")."""


@dataclass(frozen=True)
class SamplingStats:
    """What happened to the candidate samples of one cube (for logs and shard attributes)."""

    candidates: int
    """Window x position combinations considered."""
    dropped_gap: int
    """Dropped because the 10 gaps summed to ``max_gap_sum_days`` or more."""
    dropped_centre: int
    """Dropped because the centre pixel of the centre frame had no valid value (and gaps were fine)."""
    kept: int
    """Samples returned."""


def cube_seed(seed: int, cube_id: str, kind: str = "fused") -> int:
    """A stable 63-bit seed for ``(seed, cube_id, kind)`` (independent of process and hash seed).

    The sampling seed of one cube's shard of one kind (``embedder.data.shards.build_cube_shards``).
    """
    digest = hashlib.sha256(f"{seed}:{cube_id}:{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def day_numbers(times: np.ndarray) -> np.ndarray:
    """Whole UTC days since 1970-01-01 of ``datetime64`` values, as int64 (NaT -> INT64 minimum)."""
    return np.asarray(times).astype("datetime64[D]").astype(np.int64)


def window_starts(n: int, *, window: int, stride: int) -> np.ndarray:
    """Start indices of windows of ``window`` consecutive items ``stride`` apart in ``n`` items."""
    if n < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n - window + 1, stride, dtype=np.int64)


def fill_missing(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN in ``[N, T, C, H, W]`` patches with each patch's per-band mean over (T, H, W).

    Returns ``(filled, mask)``: float32 values without NaN and a bool mask, True where the value is real.
    A band with no valid value in a patch is filled with 0 (its mask is all False).
    """
    mask = np.isfinite(values)  # [N, T, C, H, W]
    counts = mask.sum(axis=(1, 3, 4))  # [N, C]
    sums = np.where(mask, values, 0.0).sum(axis=(1, 3, 4), dtype=np.float64)  # [N, C]
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0).astype(np.float32)  # [N, C]
    filled = np.where(mask, values, means[:, None, :, None, None]).astype(np.float32)  # [N, T, C, H, W]
    return filled, mask


def _require(cube: xr.Dataset, name: str, dims: tuple[str, ...]) -> np.ndarray:
    if name not in cube.variables:
        raise CubeLayoutError(
            f"cube has no variable {name!r} (has {sorted(map(str, cube.data_vars))}); "
            "build it with embedder.data.cubes.load_cube or embedder.data.testing.make_test_cube"
        )
    var = cube[name]
    if tuple(var.dims) != dims:
        raise CubeLayoutError(f"cube variable {name!r} has dims {var.dims}, expected {dims} (docs/design.md)")
    return np.asarray(var.values)


def _positions(height: int, width: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, cols) of all windows fully inside the cube, ``stride`` px apart."""
    r0 = window_starts(height, window=WINDOW_PX, stride=stride)
    c0 = window_starts(width, window=WINDOW_PX, stride=stride)
    rr, cc = np.meshgrid(r0, c0, indexing="ij")
    return rr.ravel(), cc.ravel()  # [P], [P]


def _draw(
    rng: np.random.Generator, starts: np.ndarray, n_pos: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """For every (window, position): ``WINDOW_DATES`` sorted distinct offsets drawn in ``window``.

    Returns ``(axis_index [N, 11], position_index [N])`` with N = len(starts) * n_pos, window-major.
    """
    n = len(starts) * n_pos
    offsets = np.sort(np.argsort(rng.random((n, window)), axis=1)[:, :WINDOW_DATES], axis=1)  # [N, 11]
    idx = np.repeat(starts, n_pos)[:, None] + offsets  # [N, 11] index into the window's axis
    pos = np.tile(np.arange(n_pos), len(starts))  # [N]
    return idx, pos


def _gather(arr: np.ndarray, frames: np.ndarray, r0: np.ndarray, c0: np.ndarray) -> np.ndarray:
    """``arr[T, C, H, W]`` -> patches ``[N, 11, C, 15, 15]`` at ``frames [N, 11]`` and corners ``[N]``."""
    win = np.arange(WINDOW_PX)
    t = frames[:, :, None, None, None]  # [N, 11, 1, 1, 1]
    c = np.arange(arr.shape[1])[None, None, :, None, None]  # [1, 1, C, 1, 1]
    y = (r0[:, None] + win[None, :])[:, None, None, :, None]  # [N, 1, 1, 15, 1]
    x = (c0[:, None] + win[None, :])[:, None, None, None, :]  # [N, 1, 1, 1, 15]
    return arr[t, c, y, x]  # [N, 11, C, 15, 15]


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _empty(keys: tuple[str, ...], channels: dict[str, int]) -> dict[str, np.ndarray]:
    frame = (0, WINDOW_DATES)
    out: dict[str, np.ndarray] = {}
    for key in keys:
        if key in channels:
            out[key] = np.zeros((*frame, channels[key], WINDOW_PX, WINDOW_PX), np.float32)
        elif key.endswith("_mask"):
            out[key] = np.zeros((*frame, channels[key[: -len("_mask")]], WINDOW_PX, WINDOW_PX), bool)
        elif key.endswith("_gaps"):
            out[key] = np.zeros((0, WINDOW_DATES - 1), np.float32)
        elif key == "centre_day":
            out[key] = np.zeros(0, np.int64)
        elif key in ("row", "col"):
            out[key] = np.zeros(0, np.int32)
        else:
            out[key] = np.zeros(0, np.float32)
    return out


def empty_samples(kind: str = "fused") -> dict[str, np.ndarray]:
    """A sample dict with N = 0 of ``kind`` (``"fused"`` or ``"s1only"``), channels from the sensor table."""
    if kind not in ("fused", "s1only"):
        raise ValueError(f"unknown sample kind {kind!r}; use 'fused' or 's1only'")
    keys = FUSED_KEYS if kind == "fused" else S1ONLY_KEYS
    return _empty(keys, {"s2": PRIMARY_SENSOR.n_channels, "s1": S1.n_channels})


def sample_fused_patches(
    cube: xr.Dataset,
    *,
    cfg: PatchConfig | None = None,
    seed: int | np.random.Generator = 0,
    gather_batch: int = 512,
) -> tuple[dict[str, np.ndarray], SamplingStats]:
    """Cut all fused (S2 + matched S1) training samples of ``cube``.

    Returns a dict of arrays with a leading sample dim N (keys :data:`FUSED_KEYS`, shapes and dtypes of
    docs/design.md "Patches"), in window-major, row-major position order, and the :class:`SamplingStats`.
    The same ``seed`` gives the same samples.
    """
    cfg = cfg or PatchConfig()
    rng = _rng(seed)
    s2_dim, s1_dim = PRIMARY_SENSOR.band_dim, S1.band_dim
    s2 = _require(cube, "s2", ("time", s2_dim, "y", "x"))  # [T, C2, H, W]
    s1 = _require(cube, "s1", ("time", s1_dim, "y", "x"))  # [T, C1, H, W]
    usable = _require(cube, "s2_usable", ("time",)).astype(bool)  # [T]
    s1_time = _require(cube, "s1_time", ("time",))  # [T] datetime64, NaT = no match
    s2_day = day_numbers(cube["time"].values)  # [T]
    s1_day = np.where(np.isnat(s1_time), s2_day, day_numbers(s1_time))  # [T]; no match -> the S2 day
    channels = {"s2": s2.shape[1], "s1": s1.shape[1]}

    usable_idx = np.flatnonzero(usable)  # [U] cube time index of each usable date
    starts = window_starts(len(usable_idx), window=cfg.window_dates, stride=cfg.temporal_stride)
    r0_all, c0_all = _positions(s2.shape[2], s2.shape[3], cfg.spatial_stride_px)
    if len(starts) == 0 or len(r0_all) == 0:
        return _empty(FUSED_KEYS, channels), SamplingStats(0, 0, 0, 0)

    draw, pos = _draw(rng, starts, len(r0_all), cfg.window_dates)  # [N, 11], [N]
    frames = usable_idx[draw]  # [N, 11] cube time index
    r0, c0 = r0_all[pos], c0_all[pos]  # [N], [N]
    s2_gaps = np.diff(s2_day[frames], axis=1)  # [N, 10] days
    gap_ok = s2_gaps.sum(axis=1) < cfg.max_gap_sum_days  # [N]
    centre = s2[frames[:, CENTRE_FRAME], :, r0 + CENTRE_PX, c0 + CENTRE_PX]  # [N, C2]
    centre_ok = np.isfinite(centre).any(axis=1)  # [N]
    keep = np.flatnonzero(gap_ok & centre_ok)
    stats = SamplingStats(
        candidates=len(frames),
        dropped_gap=int((~gap_ok).sum()),
        dropped_centre=int((gap_ok & ~centre_ok).sum()),
        kept=len(keep),
    )
    if len(keep) == 0:
        return _empty(FUSED_KEYS, channels), stats

    parts: dict[str, list[np.ndarray]] = {k: [] for k in FUSED_KEYS}
    for lo in range(0, len(keep), gather_batch):
        sel = keep[lo : lo + gather_batch]
        f, r, c = frames[sel], r0[sel], c0[sel]
        for name, arr in (("s2", s2), ("s1", s1)):
            filled, mask = fill_missing(_gather(arr, f, r, c))  # [n, 11, C, 15, 15] x2
            parts[name].append(filled)
            parts[f"{name}_mask"].append(mask)
        parts["s2_gaps"].append(s2_gaps[sel].astype(np.float32))  # [n, 10]
        # matched S1 days are monotone in the S2 days (nearest neighbour); clamp guards the fallback days
        s1_days = np.maximum.accumulate(s1_day[f], axis=1)  # [n, 11]
        parts["s1_gaps"].append(np.diff(s1_days, axis=1).astype(np.float32))  # [n, 10]
        centre_t = f[:, CENTRE_FRAME]  # [n]
        parts["s1_delta_days"].append(np.abs(s1_day[centre_t] - s2_day[centre_t]).astype(np.float32))
        parts["centre_day"].append(s2_day[centre_t].astype(np.int64))
        parts["row"].append((r + CENTRE_PX).astype(np.int32))
        parts["col"].append((c + CENTRE_PX).astype(np.int32))
    return {k: np.concatenate(v) for k, v in parts.items()}, stats


def sample_s1only_patches(
    cube: xr.Dataset,
    *,
    cfg: PatchConfig | None = None,
    seed: int | np.random.Generator = 0,
    gather_batch: int = 2048,
) -> tuple[dict[str, np.ndarray], SamplingStats]:
    """Cut all S1-only training samples of ``cube`` from its own S1 time axis (``s1_own``).

    Returns a dict with keys :data:`S1ONLY_KEYS` (``centre_day`` is the centre S1 acquisition's day) and
    the :class:`SamplingStats`.
    """
    cfg = cfg or PatchConfig()
    rng = _rng(seed)
    s1 = _require(cube, "s1_own", ("time_s1", S1.band_dim, "y", "x"))  # [T1, C1, H, W]
    day = day_numbers(cube["time_s1"].values)  # [T1]
    channels = {"s1": s1.shape[1]}
    starts = window_starts(
        s1.shape[0], window=cfg.s1only_window_acquisitions, stride=cfg.s1only_temporal_stride
    )
    r0_all, c0_all = _positions(s1.shape[2], s1.shape[3], cfg.s1only_spatial_stride_px)
    if len(starts) == 0 or len(r0_all) == 0:
        return _empty(S1ONLY_KEYS, channels), SamplingStats(0, 0, 0, 0)

    frames, pos = _draw(rng, starts, len(r0_all), cfg.s1only_window_acquisitions)  # [N, 11], [N]
    r0, c0 = r0_all[pos], c0_all[pos]
    gaps = np.diff(day[frames], axis=1)  # [N, 10] days
    gap_ok = gaps.sum(axis=1) < cfg.max_gap_sum_days
    centre_ok = np.isfinite(s1[frames[:, CENTRE_FRAME], :, r0 + CENTRE_PX, c0 + CENTRE_PX]).any(axis=1)
    keep = np.flatnonzero(gap_ok & centre_ok)
    stats = SamplingStats(
        candidates=len(frames),
        dropped_gap=int((~gap_ok).sum()),
        dropped_centre=int((gap_ok & ~centre_ok).sum()),
        kept=len(keep),
    )
    if len(keep) == 0:
        return _empty(S1ONLY_KEYS, channels), stats
    parts: dict[str, list[np.ndarray]] = {k: [] for k in S1ONLY_KEYS}
    for lo in range(0, len(keep), gather_batch):
        sel = keep[lo : lo + gather_batch]
        f, r, c = frames[sel], r0[sel], c0[sel]
        filled, mask = fill_missing(_gather(s1, f, r, c))  # [n, 11, C1, 15, 15] x2
        parts["s1"].append(filled)
        parts["s1_mask"].append(mask)
        parts["s1_gaps"].append(gaps[sel].astype(np.float32))
        parts["centre_day"].append(day[f[:, CENTRE_FRAME]].astype(np.int64))
        parts["row"].append((r + CENTRE_PX).astype(np.int32))
        parts["col"].append((c + CENTRE_PX).astype(np.int32))
    return {k: np.concatenate(v) for k, v in parts.items()}, stats
