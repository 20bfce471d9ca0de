"""Embedding a tile: windows, gap filling, and the predictor (../shared/SPEC.md section 7).

For each interior pixel and each usable S2 date ``t`` inside the period, the model sees the 15 x 15
window centred on the pixel over the 11 consecutive usable dates centred on ``t``. A tile's cube is
therefore read with a 7 px spatial halo and with enough days around the period for 5 usable dates of
temporal halo on each side (:func:`temporal_halo_days` gives a generous read margin).

Choices, stated once here:

* **Usable at inference**: at least ``sensors.S2.min_valid_infer`` (3.5 %) of the *interior* pixels have
  all 10 bands valid (SPEC 2).
* **Targets**: usable dates inside [start, end] with 5 usable dates before and after in the cube. A date
  of the period without that context (only at the very start or end of the archive) is not embedded;
  it is counted in :attr:`WindowPlan.skipped_context`.
* **200-day rule**: a window whose 10 gaps sum to ``MAX_GAP_SUM_DAYS`` or more gets 1-day steps
  instead, and its embeddings carry the ``FLAG_GAP_RULE`` bit (SPEC 7). The same applies to S1 gaps.
* **Gap filling** (a deliberate deviation, documented in docs/design.md): training fills a patch's
  missing values with the patch mean (SPEC 2). At inference the fill must not depend on which 11-date
  window a frame sits in, or the frame encodings could not be computed once and reused (the exact fast
  path). So each pixel's missing values are filled *before* windowing, by linear interpolation in time
  between its nearest valid observations on the usable-date axis (nearest value at the ends); a pixel
  with no valid value at all takes the date's interior mean of that band, else 0. Each embedding's
  flags say whether its own centre pixel-date was observed or filled.
"""

from __future__ import annotations

import contextlib
import typing
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from embedder.flags import Flag
from embedder.models.blocks import multiscale_blocks, spectral_convolutions
from embedder.models.dense import DenseFrameEncoder
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.models.spectral import MAX_FLOP_SHARE
from embedder.sensors import EMBEDDING_DIM, MAX_GAP_SUM_DAYS, PRIMARY_SENSOR, S1, WINDOW_DATES, WINDOW_PX

__all__ = [
    "CACHE_BYTES",
    "CPU_FRAME_BYTES",
    "CPU_TOKEN_BYTES",
    "FLAG_CENTRE_FILLED",
    "FLAG_GAP_RULE",
    "FLAG_S1_FILLED",
    "FLAG_S1_MISSING",
    "FLAG_VALID",
    "HALO_DATES",
    "HALO_PX",
    "Predictor",
    "TileInputs",
    "WindowPlan",
    "cpu_bf16_native",
    "fill_in_time",
    "masked_embeddings",
    "plan_windows",
    "prepare_tile",
    "temporal_halo_days",
    "warn_if_bf16_slow",
]

HALO_PX: int = WINDOW_PX // 2
"""Spatial halo read around a tile (7 px)."""
HALO_DATES: int = WINDOW_DATES // 2
"""Usable dates needed on each side of a target date (5)."""
CPU_FRAME_BYTES: int = 24 * 1024 * 1024
"""On the CPU a paper frame-encoder call gets as many windows as keep its widest activation (the
multi-scale block's concatenated maps) within this many bytes (``Predictor.frame_batch``): 93 windows of
the paper model, 582 of ``ModelConfig.cpu()``, 1,747 of ``ModelConfig.small()``. The activations then
stay in cache and below the heap's mmap threshold (:mod:`embedder.hostmem`); measured best on the 2-core
machine (``bench/inference.py``)."""

CPU_TOKEN_BYTES: int = 4 * 1024 * 1024
"""On the CPU a temporal-transformer call gets as many pixels as keep its attention's packed
``q, k, v`` (float32, ``[pixels, 11, 3 d_model]``) within this many bytes, and a fusion call likewise
(``Predictor.token_batch``): 124 pixels of the paper model, 496 of ``ModelConfig.cpu()``, 993 of
``ModelConfig.small()``, 1,365 for the paper fusion. Measured on a 2-core AMD EPYC (32 MiB L3, 1 MiB L2
per core): the paper token stage costs ~126 us per pixel-date and sensor at 128-256 pixels a call,
234 at 2,048 and 320-420 at 8,192; the paper fusion 11 us at 1,024 pixels and 22 at 65,536."""

CACHE_BYTES: int = 4 * 1024**3
"""The fast path embeds a tile in row strips whose frame-token cache stays within this many bytes
(``Predictor.cache_bytes``). The cache holds, per sensor, the tokens of the 11 frames a window spans for
every pixel of the strip, and with ``share_first_layer`` their first-layer projections: ~90 KB a pixel
for the paper model, so a whole 512 px store tile would need ~24 GB (more than an L4 or a 24 GB CPU node
holds); 4 GiB is ~93 rows of it (rounded down to the dense encoder's 64-row chunks: no extra halo)."""

# Quality flag bits: the store's (embedder.flags.Flag), as uint8 for numpy.
FLAG_VALID = np.uint8(Flag.VALID)
"""An embedding was computed for this pixel-date."""
FLAG_CENTRE_FILLED = np.uint8(Flag.CENTRE_FILLED)
"""The pixel's own S2 value at this date was missing (cloud/no data) and gap-filled."""
FLAG_GAP_RULE = np.uint8(Flag.GAP_RULE)
"""The window's gaps summed to >= 200 days and were replaced by 1-day steps (SPEC 7)."""
FLAG_S1_FILLED = np.uint8(Flag.S1_FILLED)
"""The pixel's matched S1 value at this date was missing and gap-filled."""
FLAG_S1_MISSING = np.uint8(Flag.S1_MISSING)
"""No S1 acquisition matched this date (S1 input entirely filled)."""

_NS_PER_DAY = np.int64(86_400_000_000_000)


def temporal_halo_days(*, revisit_days: float = 5.0, cloudy_share: float = 0.7) -> int:
    """Days to read on each side of a period so that 5 usable dates are very likely inside the read.

    With a revisit of ``revisit_days`` and a share ``cloudy_share`` of dates unusable, 5 usable dates take
    about ``5 * revisit / (1 - cloudy_share)`` days; twice that is read. Dates outside the period are only
    used as context, never embedded.
    """
    return int(np.ceil(2 * HALO_DATES * revisit_days / max(1e-3, 1.0 - cloudy_share)))


def _days(times: np.ndarray) -> np.ndarray:
    """datetime64 -> whole days since 1970-01-01 (int64)."""
    return np.asarray(times).astype("datetime64[D]").astype(np.int64)


def fill_in_time(values: np.ndarray) -> np.ndarray:
    """Fill NaNs of ``[T, C, H, W]`` by linear interpolation along T per (c, y, x); ends take the nearest.

    Series without any valid value stay NaN. Pure numpy, vectorised over pixels.
    """
    t = values.shape[0]
    if t == 0:
        return values
    flat = values.reshape(t, -1)  # [T, P]
    valid = np.isfinite(flat)
    idx = np.arange(t)[:, None]  # [T, 1]
    big = np.int64(t)
    # index of the previous / next valid observation for every (t, p)
    prev = np.where(valid, idx, -1)
    prev = np.maximum.accumulate(prev, axis=0)  # [T, P]
    nxt = np.where(valid, idx, big)
    nxt = np.minimum.accumulate(nxt[::-1], axis=0)[::-1]  # [T, P]
    has_prev, has_next = prev >= 0, nxt < big
    cols = np.arange(flat.shape[1])[None, :]
    v_prev = np.where(has_prev, flat[np.clip(prev, 0, t - 1), cols], np.nan)
    v_next = np.where(has_next, flat[np.clip(nxt, 0, t - 1), cols], np.nan)
    span = np.maximum(nxt - prev, 1)
    w_next = np.where(has_prev & has_next, (idx - prev) / span, 0.0)
    interp = np.where(
        has_prev & has_next,
        v_prev * (1.0 - w_next) + v_next * w_next,
        np.where(has_prev, v_prev, v_next),
    )
    out = np.where(valid, flat, interp)
    return out.reshape(values.shape).astype(values.dtype, copy=False)


@dataclass(frozen=True)
class WindowPlan:
    """Which dates a tile embeds and with which 11-date windows (indices into the usable dates)."""

    usable: np.ndarray
    """``[U]`` cube time index of each inference-usable date."""
    targets: np.ndarray
    """``[K]`` position in :attr:`usable` of each date to embed (inside the period, with context)."""
    windows: np.ndarray
    """``[K, 11]`` positions in :attr:`usable` of each target's window (target at index 5)."""
    s2_gaps: np.ndarray
    """``[K, 10]`` float32 S2 day gaps after the 200-day rule."""
    s1_gaps: np.ndarray
    """``[K, 10]`` float32 S1 day gaps (matched acquisitions) after the 200-day rule."""
    s1_delta_days: np.ndarray
    """``[K]`` float32 abs(S1 - S2) days at the centre frame (0 where no S1 matched)."""
    gap_rule: np.ndarray
    """``[K]`` bool: the 200-day rule replaced this window's gaps."""
    skipped_context: int
    """Usable dates inside the period not embedded for lack of 5 usable dates on a side."""


def _gap_rule(gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply SPEC 7: windows whose gaps sum to >= MAX_GAP_SUM_DAYS get 1-day steps."""
    hit = gaps.sum(axis=1) >= MAX_GAP_SUM_DAYS  # [K]
    out = np.where(hit[:, None], 1.0, gaps).astype(np.float32)
    return out, hit


def plan_windows(
    cube: xr.Dataset, *, start: np.datetime64 | str, end: np.datetime64 | str, halo_px: int = HALO_PX
) -> WindowPlan:
    """Plan the target dates and windows of a tile cube whose interior lies ``halo_px`` inside its edge."""
    s2 = cube["s2"].values  # [T, C, H, W]
    interior = s2[:, :, halo_px : s2.shape[2] - halo_px, halo_px : s2.shape[3] - halo_px]
    all_valid = np.isfinite(interior).all(axis=1)  # [T, h, w]
    share = all_valid.reshape(all_valid.shape[0], -1).mean(axis=1)  # [T]
    usable = np.flatnonzero(share >= PRIMARY_SENSOR.min_valid_infer)  # [U]
    s2_day = _days(cube["time"].values)  # [T]
    s1_time = cube["s1_time"].values
    s1_day = np.where(np.isnat(s1_time), s2_day, _days(s1_time))  # [T]
    lo, hi = _days(np.asarray(start, dtype="datetime64[D]")), _days(np.asarray(end, dtype="datetime64[D]"))
    in_period = (s2_day[usable] >= lo) & (s2_day[usable] <= hi)  # [U]
    pos = np.arange(len(usable))
    has_context = (pos >= HALO_DATES) & (pos + HALO_DATES < len(usable))
    targets = np.flatnonzero(in_period & has_context)  # [K]
    windows = targets[:, None] + np.arange(-HALO_DATES, HALO_DATES + 1)[None, :]  # [K, 11]
    frames = usable[windows] if len(targets) else np.zeros((0, WINDOW_DATES), np.int64)
    s2_gaps, rule2 = _gap_rule(np.diff(s2_day[frames], axis=1).astype(np.float32))
    s1_days = np.maximum.accumulate(s1_day[frames], axis=1) if len(targets) else frames
    s1_gaps, rule1 = _gap_rule(np.diff(s1_days, axis=1).astype(np.float32))
    centre = frames[:, HALO_DATES] if len(targets) else np.zeros(0, np.int64)
    delta = np.abs(s1_day[centre] - s2_day[centre]).astype(np.float32)
    return WindowPlan(
        usable=usable,
        targets=targets,
        windows=windows.astype(np.int64),
        s2_gaps=s2_gaps,
        s1_gaps=s1_gaps,
        s1_delta_days=delta,
        gap_rule=rule2 | rule1,
        skipped_context=int((in_period & ~has_context).sum()),
    )


@dataclass(frozen=True)
class TileInputs:
    """A tile ready for the model: gap-filled usable frames, the window plan, and per-target flags."""

    frames: dict[str, np.ndarray]
    """Per sensor ``[U, C, H, W]`` float32, gap-filled, on the usable dates (halo included)."""
    plan: WindowPlan
    """Targets and windows."""
    flags: np.ndarray
    """``[K, h, w]`` uint8 quality flags of each target's interior pixels (``FLAG_*`` bits)."""
    dates: np.ndarray
    """``[K]`` datetime64[D] of the targets."""
    halo_px: int
    """Spatial halo around the interior."""

    @property
    def interior_shape(self) -> tuple[int, int]:
        """``(h, w)`` of the interior (the pixels that get embeddings)."""
        return int(self.flags.shape[1]), int(self.flags.shape[2])

    def crop(self, *, interior_px: int | None = None, n_targets: int | None = None) -> TileInputs:
        """The tile's top-left ``interior_px`` square (with its halo) and its first ``n_targets`` dates.

        The same frames and windows, fewer pixels or targets (benchmarks time a path on a part of a tile).
        """
        import dataclasses

        p = self.plan
        n = len(p.targets) if n_targets is None else n_targets
        plan = dataclasses.replace(
            p, targets=p.targets[:n], windows=p.windows[:n], s2_gaps=p.s2_gaps[:n], s1_gaps=p.s1_gaps[:n],
            s1_delta_days=p.s1_delta_days[:n], gap_rule=p.gap_rule[:n],
        )  # fmt: skip
        h, w = self.interior_shape
        py, px = (h, w) if interior_px is None else (interior_px, interior_px)
        frames = {
            k: np.ascontiguousarray(v[:, :, : py + 2 * self.halo_px, : px + 2 * self.halo_px])
            for k, v in self.frames.items()
        }
        return dataclasses.replace(
            self, plan=plan, frames=frames, flags=self.flags[:n, :py, :px], dates=self.dates[:n]
        )

    def to_row(self) -> dict[str, Any]:
        """Flat dict of numpy arrays (one Ray Data row); :meth:`from_row` inverts it."""
        p = self.plan
        row: dict[str, Any] = {f"frames_{k}": v for k, v in self.frames.items()}
        row.update(
            usable=p.usable, targets=p.targets, windows=p.windows, s2_gaps=p.s2_gaps, s1_gaps=p.s1_gaps,
            s1_delta_days=p.s1_delta_days, gap_rule=p.gap_rule, skipped_context=np.int64(p.skipped_context),
            flags=self.flags, dates=self.dates.astype(np.int64), halo_px=np.int64(self.halo_px),
        )  # fmt: skip
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TileInputs:
        """Rebuild from :meth:`to_row` output (arrays may arrive as read-only views)."""
        plan = WindowPlan(
            usable=np.asarray(row["usable"]),
            targets=np.asarray(row["targets"]),
            windows=np.asarray(row["windows"]).reshape(-1, WINDOW_DATES),
            s2_gaps=np.asarray(row["s2_gaps"], np.float32).reshape(-1, WINDOW_DATES - 1),
            s1_gaps=np.asarray(row["s1_gaps"], np.float32).reshape(-1, WINDOW_DATES - 1),
            s1_delta_days=np.asarray(row["s1_delta_days"], np.float32),
            gap_rule=np.asarray(row["gap_rule"], bool),
            skipped_context=int(row["skipped_context"]),
        )
        frames = {
            k[len("frames_") :]: np.ascontiguousarray(v, np.float32)
            for k, v in row.items()
            if k.startswith("frames_")
        }
        return cls(
            frames=frames,
            plan=plan,
            flags=np.asarray(row["flags"], np.uint8),
            dates=np.asarray(row["dates"]).astype("datetime64[D]"),
            halo_px=int(row["halo_px"]),
        )


def masked_embeddings(embeddings: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN the embeddings of pixel-dates without ``FLAG_VALID``; returns ``(embeddings, flags)`` for the store."""
    emb = np.array(embeddings, dtype=np.float32, copy=True)  # [K, 7, h, w]
    invalid = (np.asarray(flags) & FLAG_VALID) == 0  # [K, h, w]
    emb[np.broadcast_to(invalid[:, None], emb.shape)] = np.nan
    return emb, np.where(invalid, np.uint8(0), np.asarray(flags, np.uint8))


def _fill_sensor(values: np.ndarray, halo_px: int) -> np.ndarray:
    """Time-interpolate, then the date's interior band mean, then 0 (see the module docstring)."""
    filled = fill_in_time(values)  # [U, C, H, W]
    if np.isnan(filled).any():
        h, w = filled.shape[2:]
        interior = values[:, :, halo_px : h - halo_px, halo_px : w - halo_px]
        with np.errstate(invalid="ignore"):
            counts = np.isfinite(interior).sum(axis=(2, 3))  # [U, C]
            sums = np.nansum(interior, axis=(2, 3))
            means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
        filled = np.where(np.isnan(filled), means[:, :, None, None], filled)
    return filled.astype(np.float32)


def prepare_tile(
    cube: xr.Dataset, *, start: np.datetime64 | str, end: np.datetime64 | str, halo_px: int = HALO_PX
) -> TileInputs:
    """Plan a tile cube's windows and gap-fill its usable frames for the model."""
    plan = plan_windows(cube, start=start, end=end, halo_px=halo_px)
    sensors = {PRIMARY_SENSOR.name: cube[PRIMARY_SENSOR.name].values, S1.name: cube[S1.name].values}
    frames: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    for name, values in sensors.items():
        usable_values = values[plan.usable].astype(np.float32)  # [U, C, H, W]
        raw[name] = usable_values
        frames[name] = _fill_sensor(usable_values, halo_px)
    h, w = frames[PRIMARY_SENSOR.name].shape[2:]
    k = len(plan.targets)
    inner = (slice(halo_px, h - halo_px), slice(halo_px, w - halo_px))
    flags = np.zeros((k, h - 2 * halo_px, w - 2 * halo_px), dtype=np.uint8)
    if k:
        # a pixel never observed in S2 on any usable date has no embedding (outside the data footprint)
        s2_inner = raw[PRIMARY_SENSOR.name][:, :, inner[0], inner[1]]  # [U, C, h, w]
        observed = np.isfinite(s2_inner).all(axis=1).any(axis=0)  # [h, w]
        flags[:, observed] |= FLAG_VALID
        centre_raw = raw[PRIMARY_SENSOR.name][plan.targets][:, :, inner[0], inner[1]]  # [K, C, h, w]
        flags[~np.isfinite(centre_raw).all(axis=1)] |= FLAG_CENTRE_FILLED
        s1_raw = raw[S1.name][plan.targets][:, :, inner[0], inner[1]]
        flags[~np.isfinite(s1_raw).all(axis=1)] |= FLAG_S1_FILLED
        flags[plan.gap_rule] |= FLAG_GAP_RULE
        s1_time = cube["s1_time"].values[plan.usable[plan.targets]]
        flags[np.isnat(s1_time)] |= FLAG_S1_MISSING
    dates = cube["time"].values[plan.usable[plan.targets]].astype("datetime64[D]")
    return TileInputs(frames=frames, plan=plan, flags=flags, dates=dates, halo_px=halo_px)


# --------------------------------------------------------------------------------------------------
# The predictor
# --------------------------------------------------------------------------------------------------


def _frame_windows(values: np.ndarray, halo_px: int) -> np.ndarray:
    """All 15 x 15 windows around interior pixels of one date: ``[C, H, W] -> [h*w, C, 15, 15]`` (a view-copy).

    The reference (naive) path builds its windows here, on the host; the fast path builds them on the
    device (:meth:`Predictor.window_batches`).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    c = values.shape[0]
    size = 2 * halo_px + 1
    win = sliding_window_view(values, (size, size), axis=(1, 2))  # [C, h, w, 15, 15]
    return np.ascontiguousarray(win.transpose(1, 2, 0, 3, 4)).reshape(-1, c, size, size)


def cpu_bf16_native() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (AVX512-BF16 or Intel AMX tiles).

    Without them (AVX2-only CPUs, e.g. AMD Zen 3 or older Intel) bfloat16 runs through conversions and
    reference kernels: on a 2-core AMD EPYC the bf16 matmul peak measured 0.3 GFLOP/s against 145 in fp32,
    the paper fast path with ``frame_bf16`` x0.06 its fp32 speed and the dense path x0.31
    (``bench/inference.py``, ``bench/dense.py``). True when torch
    cannot tell (no warning is better than a wrong one).
    """
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(p is None for p in probes):
        return True
    return any(bool(p()) for p in probes)  # type: ignore[misc]


def warn_if_bf16_slow(setting: str, *, stacklevel: int = 3) -> None:
    """Warn (``RuntimeWarning``) that bf16 ``setting`` is on for a CPU without bfloat16 instructions.

    There (:func:`cpu_bf16_native` false) it runs 3-16x slower than float32; elsewhere this is silent.
    ``setting`` names what the user set (``"frame_bf16"``, ``"TrainConfig.bf16"``); ``stacklevel`` 3
    points at the caller of the function that calls this one.
    """
    if cpu_bf16_native():
        return
    warnings.warn(
        f"{setting}=True on a CPU without bfloat16 instructions (AVX512-BF16 or AMX; this one is "
        f"{torch.backends.cpu.get_cpu_capability()}): bf16 runs through slow fallback kernels here, "
        f"3-16x slower than float32 (docs/operations.md); set {setting} off on this machine",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def _maybe_compile(fn: Any, backend: str | None) -> Any:
    """``torch.compile(fn, backend=backend)``, or ``fn`` itself when ``backend`` is None."""
    return fn if backend is None else torch.compile(fn, backend=backend)


class Predictor:
    """Loads a fusion model once and embeds tiles (the Ray Data actor wraps one of these).

    The fast path is written for accelerators and runs the same code on CPU: a tile's gap-filled frames
    go to the device once (pinned host memory and non-blocking copies on CUDA), every 15 x 15 window is
    built there from the frame (``Tensor.unfold``), the positional and temporal embeddings of all the
    tile's windows are computed (and validated) once before the batch loop, and the embeddings stay on
    the device until the tile is done: the loop itself never waits for the host.

    Args:
        model: a trained :class:`~embedder.models.fusion.FusionModel` (put in eval mode here).
        device: torch device string; ``"cuda"`` on GPU actors.
        pixel_batch: pixels per forward pass (tune to device memory).
        bf16: run the whole model under bfloat16 autocast (GPU option; off = exact fp32). ``bench/gpu.py``
            reports its difference from fp32.
        frame_bf16: run only the frame encoders under bfloat16 autocast (their tokens come back as float32;
            the temporal transformer and the fusion stay in float32). The frame encoders take ~94 % of the
            paper model's fast path on a CPU, and on CPUs with bf16 matrix units (Intel AMX) this makes
            the path x3.4-3.8 faster than with direct fp32 convolutions, x1.7-1.9 faster than the fp32
            default (``spectral``), while the embeddings move by ~0.1 of the store's quantisation step
            (RMS; ``bench/inference.py`` measures both). Off (default): exact fp32. Implied by ``bf16``.
            On a CPU without bf16 instructions (:func:`cpu_bf16_native`) it makes the path 3-16x
            *slower*, so ``bf16`` and ``frame_bf16`` warn there (``RuntimeWarning``) and still run.
        channels_last: channels-last memory format for the convolutions; None (default) turns it on on the
            CPU, where it makes the paper model's oneDNN convolutions ~20 % faster (``bench/inference.py``),
            and off on GPUs, where it gave nothing on an H200.
        spectral: compute the paper frame encoder's multi-scale convolutions (7 x 7 and 3 x 3 on each
            15 x 15 window) through a 2-D DFT (:mod:`embedder.models.spectral`) when they run in float32:
            as accurate as the direct convolution against a float64 reference, and the frame encoder
            ~2x faster on CPU (``bench/inference.py``, ``spectral_*`` keys). None (default): on on the CPU
            unless ``compile`` is set, for encoders where the DFT needs at most half the direct FLOPs (the
            paper model's, ~0.24; not the small preset's 8-channel maps), off on GPUs (cuDNN picks its own
            algorithms). True: on for every encoder. Under ``frame_bf16``
            or ``bf16`` the convolutions run directly in bf16; the naive path always runs them directly.
            ``True`` with ``compile`` raises ``ValueError``.
        tf32: on CUDA, allow TF32 matmuls and convolutions (``cudnn.benchmark`` is always on there).
        compile: a ``torch.compile`` backend (``"inductor"`` on GPUs) for the encoders, the temporal
            transformer and the fusion; None runs eagerly.
        frame_batch: windows per call of the paper frame encoder; None (default): on the CPU as many as
            keep a call's widest activation within :data:`CPU_FRAME_BYTES` (93 for the paper model, whose
            encoder then runs at ~0.83 of the matmul peak against ~0.45 with 2,048 windows:
            ``bench/inference.py``), on GPUs :attr:`pixel_batch`.
        token_batch: pixels per temporal-transformer and fusion call in the fast path; None (default):
            on the CPU as many as keep a call's attention activations within :data:`CPU_TOKEN_BYTES` (124
            pixels for the paper model's transformers, 1,365 for its fusion; the token stage x1.85 faster
            than in 2,048-pixel calls on a 2-core AMD EPYC), on GPUs :attr:`pixel_batch`.
        cache_bytes: the fast path's frame-token cache bound (:data:`CACHE_BYTES` when None): a tile is
            embedded in row strips of :meth:`strip_rows` rows, so peak memory does not grow with the tile
            (the same numbers, to float rounding).
        share_first_layer: in the fast path, project each frame's token through the temporal
            transformer's first attention once and reuse it in the frame's 11 windows
            (:meth:`~embedder.models.modality.ModalityAutoencoder.encode_tokens_shared`; the same numbers
            to float rounding, a third less transformer work).

    """

    def __init__(
        self,
        model: FusionModel,
        *,
        device: str = "cpu",
        pixel_batch: int = 2048,
        bf16: bool = False,
        channels_last: bool | None = None,
        spectral: bool | None = None,
        tf32: bool = True,
        compile: str | None = None,
        frame_batch: int | None = None,
        token_batch: int | None = None,
        share_first_layer: bool = True,
        frame_bf16: bool = False,
        cache_bytes: int | None = None,
    ) -> None:
        if pixel_batch < 1:
            raise ValueError(f"pixel_batch = {pixel_batch} must be >= 1")
        if frame_batch is not None and frame_batch < 1:
            raise ValueError(f"frame_batch = {frame_batch} must be >= 1 (or None for the device's default)")
        if token_batch is not None and token_batch < 1:
            raise ValueError(f"token_batch = {token_batch} must be >= 1 (or None for the device's default)")
        if cache_bytes is not None and cache_bytes < 1:
            raise ValueError(f"cache_bytes = {cache_bytes} must be >= 1 (or None for CACHE_BYTES)")
        self.device = torch.device(device)
        if self.device.type == "cpu" and (bf16 or frame_bf16):
            warn_if_bf16_slow("bf16" if bf16 else "frame_bf16")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.backends.cudnn.benchmark = True
        self.model: FusionModel = model.to(self.device).eval()
        self.pixel_batch = int(pixel_batch)
        self.bf16 = bf16
        self.frame_bf16 = frame_bf16
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.names: tuple[str, ...] = self.model.names
        self.delta_keys: tuple[str, ...] = self.model.delta_keys
        self.frame_batch = int(
            frame_batch or (self._cpu_frame_batch() if self.device.type == "cpu" else pixel_batch)
        )
        cpu = self.device.type == "cpu" and token_batch is None
        self.token_batch: dict[str, int] = {
            n: self._cpu_token_batch(self._ae(n).cfg.d_model, WINDOW_DATES)
            if cpu
            else int(token_batch or pixel_batch)
            for n in self.names
        }
        """Pixels per temporal-transformer call of each sensor's autoencoder (``token_batch``)."""
        self.fuse_batch = (
            self._cpu_token_batch(self.model.cfg.width, len(self.names))
            if cpu
            else int(token_batch or pixel_batch)
        )
        """Pixels per fusion call (``token_batch``)."""
        self.cache_bytes = int(cache_bytes or CACHE_BYTES)
        """Bound of the fast path's frame-token cache, in bytes (``cache_bytes``)."""
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if spectral and compile is not None:
            raise ValueError(
                f"spectral=True cannot be combined with compile={compile!r} (the compiler picks its own "
                "convolution algorithms); leave spectral unset or False"
            )
        self._spectral_auto = spectral is None
        self.spectral = (self.device.type == "cpu" and compile is None) if spectral is None else spectral
        self.spectral_encoders: list[str] = []
        """Sensors whose frame encoder runs its multi-scale convolutions through the DFT (``spectral``)."""
        self.bytes_to_device = 0
        """Bytes copied host -> device so far (``bench/gpu.py`` reports them per pixel-date)."""
        self._frames_fn = {
            n: self._frame_precision(
                self._spectral_scope(n, _maybe_compile(self._ae(n).encode_frames, compile))
            )
            for n in self.names
        }
        self._dense_fn = {
            n: self._frame_precision(self._spectral_scope(n, _maybe_compile(enc.encode_dense, compile)))
            for n in self.names
            if isinstance(enc := self._ae(n).frame_encoder, DenseFrameEncoder)
        }
        self._tokens_fn = {n: _maybe_compile(self._ae(n).encode_tokens, compile) for n in self.names}
        self._shared = {
            n: _maybe_compile(self._ae(n).encode_tokens_shared, compile)
            for n in self.names
            if share_first_layer and self._ae(n).first_layer_shareable
        }
        self._fuse_fn = _maybe_compile(self.model.fuse, compile)

    # -- pieces ------------------------------------------------------------------------------------
    def _cpu_frame_batch(self) -> int:
        """Windows per frame-encoder call whose widest activation fits :data:`CPU_FRAME_BYTES` (float32)."""
        widest = max(
            self._ae(n).cfg.conv_channels[0] * len(self._ae(n).cfg.multiscale_kernels) for n in self.names
        )  # channels of the multi-scale block's concatenation, at 15 x 15
        return max(1, CPU_FRAME_BYTES // (widest * WINDOW_PX * WINDOW_PX * 4))

    @staticmethod
    def _cpu_token_batch(width: int, tokens: int) -> int:
        """Pixels per transformer call whose packed ``q, k, v`` fit :data:`CPU_TOKEN_BYTES` (float32)."""
        return max(1, CPU_TOKEN_BYTES // (tokens * 3 * width * 4))

    def _ae(self, name: str) -> ModalityAutoencoder:
        return typing.cast(ModalityAutoencoder, self.model.autoencoders[name])

    def _autocast(self) -> Any:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _spectral_scope(self, name: str, fn: Any) -> Any:
        """``fn`` (a frame encoder) with its multi-scale convolutions through a DFT, or ``fn``.

        Left as is when :attr:`spectral` is off, or unset (None) and the DFT would do more than half the
        direct convolutions' FLOPs on a window (a dense encoder: on a 64-row strip of a 64 px tile; narrow
        models such as the small preset).
        """
        encoder = self._ae(name).frame_encoder
        blocks = multiscale_blocks(encoder)  # found once, not per call
        if not self.spectral or not blocks:
            return fn
        if self._spectral_auto:
            side = WINDOW_PX + (64 - 1 if isinstance(encoder, DenseFrameEncoder) else 0)
            costs = [b.spectral_flops((side, side)) for b in blocks]
            if sum(dft for _, dft in costs) > MAX_FLOP_SHARE * sum(direct for direct, _ in costs):
                return fn
        if name not in self.spectral_encoders:
            self.spectral_encoders.append(name)

        def encode(*args: Any, **kwargs: Any) -> torch.Tensor:
            with spectral_convolutions(blocks):
                out: torch.Tensor = fn(*args, **kwargs)
            return out

        return encode

    def _frame_precision(self, fn: Any) -> Any:
        """``fn`` (a frame encoder) under bf16 autocast with float32 output, or ``fn`` itself.

        Wrapped when :attr:`frame_bf16` is set and the whole model is not already bf16.
        """
        if not self.frame_bf16 or self.bf16:
            return fn
        device_type = self.device.type

        def encode(*args: Any, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                out: torch.Tensor = fn(*args, **kwargs)
            return out.float()

        return encode

    def to_device(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device: pinned and copied without blocking on CUDA, a zero-copy view on CPU."""
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type == "cpu":
            return t
        self.bytes_to_device += t.nbytes
        if self.device.type == "cuda":
            t = t.pin_memory()
        return t.to(self.device, non_blocking=True)

    def window_batches(self, frame: torch.Tensor, halo_px: int) -> list[torch.Tensor]:
        """The 15 x 15 windows of every interior pixel of a device frame ``[C, H, W]``, built on the device.

        Returns row strips of ``[rows * w, C, 15, 15]`` (about :attr:`pixel_batch` pixels each), in
        row-major pixel order.
        """
        c, height, width = frame.shape
        size = 2 * halo_px + 1
        h, w = height - 2 * halo_px, width - 2 * halo_px
        rows = max(1, self.pixel_batch // max(1, w))
        out = []
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            strip = frame[:, r0 : r1 + 2 * halo_px, :]  # [C, r + 14, W]
            win = strip.unfold(1, size, 1).unfold(2, size, 1)  # [C, r, w, 15, 15] (a view)
            x = win.permute(1, 2, 0, 3, 4).reshape(-1, c, size, size)  # [r * w, C, 15, 15]
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(x)
        return out

    def _frame_tokens(self, name: str, frame: torch.Tensor, halo_px: int) -> torch.Tensor:
        """Tokens ``[h*w, d_model]`` of every interior pixel of one device frame ``[C, H, W]``.

        A dense-consistent encoder (``ModelConfig.encoder == "dense"``) runs once over the whole frame
        (exactly the per-window tokens); the paper encoder encodes each pixel's 15 x 15 window.
        """
        if name in self._dense_fn and 2 * halo_px + 1 == WINDOW_PX:
            rows = self._dense_rows(frame.shape[2] - 2 * halo_px)
            tokens = self._dense_fn[name](frame, rows_per_chunk=rows)  # [h, w, d_model]
            return tokens.reshape(-1, tokens.shape[-1])  # [h*w, d_model]
        fb = self.frame_batch
        return torch.cat(
            [
                self._frames_fn[name](x[lo : lo + fb])
                for x in self.window_batches(frame, halo_px)
                for lo in range(0, x.shape[0], fb)
            ]
        )

    def _plan_gaps(self, tile: TileInputs, name: str) -> np.ndarray:
        return tile.plan.s2_gaps if name == PRIMARY_SENSOR.name else tile.plan.s1_gaps  # [K, 10]

    def _positions(self, tile: TileInputs) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Positional embeddings ``{name: [K, 11, d]}`` and fusion temporal embeddings ``[K, S, w]`` of a tile.

        Computed (and their gaps validated, on the host) once per tile, before any batch runs.
        """
        pos = {n: self._ae(n).positional(self.to_device(self._plan_gaps(tile, n))) for n in self.names}
        deltas = self.to_device(tile.plan.s1_delta_days)  # [K]
        temporal = self.model.temporal_positions({k: deltas for k in self.delta_keys})
        return pos, temporal

    # -- the two paths -----------------------------------------------------------------------------
    @torch.inference_mode()
    def embed_tile(self, tile: TileInputs, *, method: str = "fast") -> np.ndarray:
        """Embeddings ``[K, 7, h, w]`` float32 of a prepared tile (``method`` "fast" or "naive").

        "fast" encodes each (pixel, date) frame once and reuses it in the 11 windows it belongs to (a
        dense-consistent model encodes each date's whole frame in one fully convolutional pass);
        "naive" re-encodes every window from its pixels, as the reference does. Both give the same
        numbers (to float rounding).
        """
        if method not in ("fast", "naive"):
            raise ValueError(f"method {method!r} must be 'fast' or 'naive'")
        h, w = tile.interior_shape
        k_total = len(tile.plan.targets)
        if k_total == 0:
            return np.zeros((k_total, EMBEDDING_DIM, h, w), dtype=np.float32)
        with self._autocast():
            out = self._embed_fast(tile) if method == "fast" else self._embed_naive(tile)  # [K, h*w, 7]
        # the one device -> host copy of the tile
        return out.transpose(1, 2).reshape(k_total, EMBEDDING_DIM, h, w).contiguous().cpu().numpy()

    def cache_bytes_per_px(self) -> int:
        """Bytes the fast path's frame cache holds per pixel of a strip.

        Every sensor's 11 float32 frame tokens, and their first-layer projections where shared
        (``share_first_layer``): 90,112 for the paper model.
        """
        return sum(
            WINDOW_DATES * self._ae(n).cfg.d_model * (4 if n in self._shared else 1) * 4 for n in self.names
        )

    def strip_rows(self, interior_shape: tuple[int, int]) -> int:
        """Interior rows per strip of the fast path for a tile of ``interior_shape`` ``(h, w)``.

        As many as keep the frame cache within :attr:`cache_bytes` (at least 1; the whole tile when it
        fits), rounded down to whole chunks of a dense encoder's pass when there is room for one, so that
        strips add no halo rows to its frames.
        """
        h, w = interior_shape
        rows = max(1, self.cache_bytes // (self.cache_bytes_per_px() * max(1, w)))
        if rows >= h:
            return max(1, h)
        chunk = self._dense_rows(w)
        if self._dense_fn and rows >= chunk:
            rows -= rows % chunk
        return rows

    def _dense_rows(self, w: int) -> int:
        """Rows per chunk of a dense encoder's pass over a frame ``w`` pixels wide."""
        return max(64, -(-self.pixel_batch // max(1, w)))

    def _embed_fast(self, tile: TileInputs) -> torch.Tensor:
        h, w = tile.interior_shape
        halo = tile.halo_px
        frames = {n: self.to_device(tile.frames[n]) for n in self.names}  # {name: [U, C, H, W]}
        pos, temporal = self._positions(tile)
        out = torch.empty(
            (len(tile.plan.targets), h * w, EMBEDDING_DIM), dtype=torch.float32, device=self.device
        )
        rows = self.strip_rows((h, w))
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            strip = {n: f[:, :, r0 : r1 + 2 * halo] for n, f in frames.items()}  # views, halo rows included
            self._embed_strip(strip, tile, pos, temporal, out[:, r0 * w : r1 * w])
        return out

    def _embed_strip(
        self,
        frames: dict[str, torch.Tensor],
        tile: TileInputs,
        pos: dict[str, torch.Tensor],
        temporal: torch.Tensor,
        out: torch.Tensor,
    ) -> None:
        """Embed the interior pixels of one row strip into ``out`` ``[K, r * w, 7]`` (a view of the tile's).

        ``frames`` ``{name: [U, C, r + 2 halo, W]}`` are the strip's rows of the tile's frames.
        """
        plan, n_px = tile.plan, out.shape[1]
        cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor | None]] = {}
        for k in range(len(plan.targets)):
            window = [int(u) for u in plan.windows[k]]  # 11 usable positions
            for key in [key for key in cache if key[1] < window[0]]:
                del cache[key]  # frames no later window needs (windows move forward in time)
            z: dict[str, torch.Tensor] = {}
            for name in self.names:
                shared = name in self._shared
                for u in window:
                    if (name, u) not in cache:
                        tok = self._frame_tokens(name, frames[name][u], tile.halo_px)  # [r*w, d]
                        cache[(name, u)] = (tok, self._ae(name).project_first_layer(tok) if shared else None)
                p = pos[name][k : k + 1]  # [1, 11, d]: the window's gaps, shared by its pixels
                entries = [cache[(name, u)] for u in window]
                batch, parts = self.token_batch[name], []
                for lo in range(0, n_px, batch):
                    # each call's [n, 11, d] tokens gathered from the 11 frames: a cache-sized copy
                    tokens = torch.stack([tok[lo : lo + batch] for tok, _ in entries], dim=1)
                    if shared:
                        proj = torch.stack(
                            [typing.cast(torch.Tensor, pr)[lo : lo + batch] for _, pr in entries], dim=1
                        )  # [n, 11, 3d]
                        parts.append(self._shared[name](tokens, proj, p))
                    else:
                        parts.append(self._tokens_fn[name](tokens, positional=p))
                z[name] = torch.cat(parts)  # [r*w, D]
            t_k, fb = temporal[k : k + 1], self.fuse_batch
            for lo in range(0, n_px, fb):
                zb = {n: v[lo : lo + fb] for n, v in z.items()}
                out[k, lo : lo + fb] = self._fuse_fn(zb, temporal=t_k).float()  # [n, 7]

    def _embed_naive(self, tile: TileInputs) -> torch.Tensor:
        """The reference path: every window of every target re-encoded from its pixels.

        Windows are built on the host for a block of interior rows at a time (about :attr:`pixel_batch`
        pixels), so host memory stays bounded by the batch rather than the tile (a 512 px tile's windows
        of one target would be ~26 GB for S2).
        """
        h, w = tile.interior_shape
        n_px, plan, batch, halo = h * w, tile.plan, self.pixel_batch, tile.halo_px
        out = torch.empty((len(plan.targets), n_px, EMBEDDING_DIM), dtype=torch.float32, device=self.device)
        rows = max(1, batch // w)  # interior rows per block
        for k in range(len(plan.targets)):
            window = plan.windows[k]
            gaps = {
                n: torch.from_numpy(self._plan_gaps(tile, n)[k : k + 1]).to(self.device) for n in self.names
            }
            delta = torch.tensor([float(plan.s1_delta_days[k])], device=self.device)
            for y0 in range(0, h, rows):
                y1 = min(h, y0 + rows)
                wins = {
                    name: np.stack(
                        [_frame_windows(tile.frames[name][u][:, y0 : y1 + 2 * halo], halo) for u in window],
                        axis=1,
                    )
                    for name in self.names
                }  # {name: [(y1 - y0) * w, 11, C, 15, 15]}
                for lo in range(0, (y1 - y0) * w, batch):
                    z = {}
                    for name in self.names:
                        # [n, 11, C, 15, 15]
                        x = torch.from_numpy(wins[name][lo : lo + batch]).to(self.device)
                        z[name] = self._ae(name).encode(x, gaps[name].expand(x.shape[0], -1))  # [n, D]
                    n = x.shape[0]
                    at = y0 * w + lo
                    out[k, at : at + n] = self.model.fuse(
                        z, {key: delta.expand(n) for key in self.delta_keys}
                    ).float()
        return out
