"""Shared by the bench scripts: the machine's matmul peak, FLOP counts and the efficiency keys.

Every benchmark records, beside its figure, the fp32 matmul peak measured in the same run
(``peak_gflops``), the GFLOP/s its figure implies (``achieved_gflops``) and their ratio (``efficiency``),
so figures taken on machines of different speed or load compare. Import as ``from _common import ...``
(each script puts ``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch


def matmul_peak_gflops(
    *,
    n: int = 1024,
    seconds: float = 1.0,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Best GFLOP/s of ``n x n`` matmuls in ``dtype`` on ``device`` over about ``seconds``.

    On the CPU torch's thread count applies; ``threads`` sets it for the measurement only.
    """
    device = torch.device(device)
    if device.type == "cpu" and dtype == torch.bfloat16:
        from embedder.inference import cpu_bf16_native

        if not cpu_bf16_native():  # fallback kernels: ~0.3 GFLOP/s, a 2,048-wide product takes a minute
            n = min(n, 256)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):  # warm-up (clocks, kernels)
            a @ b
        sync()
        best = 0.0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
            sync()
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
        return best
    finally:
        torch.set_num_threads(before)


def flops_of(fn: Callable[[], Any]) -> int:
    """FLOPs (one multiply-add = 2) of running ``fn()`` once, counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def efficiency(
    rate_per_s: float, flops_per_item: float, peak_gflops: float, *, prefix: str = ""
) -> dict[str, float]:
    """``{prefix}achieved_gflops`` (rate x FLOPs per item) and ``{prefix}efficiency`` (over the peak)."""
    achieved = rate_per_s * flops_per_item / 1e9
    return {f"{prefix}achieved_gflops": achieved, f"{prefix}efficiency": achieved / peak_gflops}


def machine() -> dict[str, float]:
    """The 1-minute load average and the torch thread count at the time of the call."""
    return {"load_average_1min": os.getloadavg()[0], "threads": float(torch.get_num_threads())}


def cpu() -> dict[str, str | bool]:
    """The CPU the figures were taken on: ``cpu_model``, torch's ``cpu_capability`` (its vector kernels:
    AVX2, AVX512, ...) and ``cpu_bf16_native`` (bf16 matrix instructions,
    :func:`embedder.inference.cpu_bf16_native`). Figures from an AMX machine and an AVX2 one differ by
    more than their matmul peaks: bf16 is x6 the fp32 peak on the first and x0.002 on the second."""
    import platform

    from embedder.inference import cpu_bf16_native

    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        model = names[0] if names else model
    return {
        "cpu_model": model,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_native": cpu_bf16_native(),
    }


def model_flops(
    tile: Any, *, encoder: Literal["paper", "dense"] = "paper", preset: Literal["paper", "small"] = "paper"
) -> dict[str, float]:
    """Model FLOPs per pixel-date of the fast (``cached``) and ``naive`` paths on ``tile``.

    The counts are :func:`embedder.plan.measure_flops`'s (per frame, per window of tokens, per fusion; a
    dense encoder's frame counted over this tile with its halo); the fast path encodes each frame of the
    tile once, i.e. ``frames / targets`` frames per pixel-date. Without the predictor's shortcuts (the
    shared first-layer projection): an efficiency over these FLOPs is model FLOPs utilisation.
    """
    from embedder.plan import measure_flops

    h, _ = tile.interior_shape
    fc = measure_flops(preset, encoder, tile_px=h)
    k = max(1, len(tile.plan.targets))
    n_frames = len(set(tile.plan.windows.reshape(-1).tolist())) if len(tile.plan.targets) else 0
    frames = sum(fc.encode_frames.values())
    rest = sum(fc.encode_tokens.values()) + fc.fuse
    return {
        "cached": n_frames / k * frames + rest,
        "cached_frames": n_frames / k * frames,  # the frame encoders' share (bf16 with frame_bf16)
        "naive": fc.naive_per_pixel_date,
    }


def mixed_efficiency(
    rate_per_s: float, flops: Mapping[str, float], peak_bf16_gflops: float, peak_gflops: float
) -> float:
    """Efficiency of the fast path with its frame encoders in bf16 and the rest in fp32 (``frame_bf16``).

    ``flops`` is :func:`model_flops`'s result for the tile. The time the item's FLOPs would take at the two
    measured peaks (``cached_frames`` at the bf16 matmul peak, the rest of ``cached`` at the fp32 one)
    over the time it took: 1.0 is both units saturated.
    """
    frames = flops["cached_frames"]
    ideal_s = frames / (peak_bf16_gflops * 1e9) + (flops["cached"] - frames) / (peak_gflops * 1e9)
    return ideal_s * rate_per_s


def quant_diff(emb: Any, ref: Any, flags: Any, *, prefix: str) -> dict[str, float]:
    """How far embeddings ``emb`` are from the fp32 ``ref`` (both ``[K, 7, h, w]``) on valid pixel-dates.

    ``max_abs_diff``; ``rms_quant_steps`` and ``max_quant_steps`` in units of the store's quantisation
    step (``StoreConfig().quant_step``; its own rounding error is 0.29 steps RMS); ``codes_changed``: the
    share of the store's uint16 codes that differ. Keys carry ``prefix``.
    """
    import numpy as np

    from embedder.config import StoreConfig
    from embedder.inference import FLAG_VALID

    step = StoreConfig().quant_step
    valid = (flags & FLAG_VALID) != 0  # [K, h, w]
    a = emb.transpose(1, 0, 2, 3)[:, valid]  # [7, n]
    b = ref.transpose(1, 0, 2, 3)[:, valid]
    d = np.abs(a - b)
    return {
        f"{prefix}max_abs_diff": float(d.max()),
        f"{prefix}rms_quant_steps": float(np.sqrt(np.mean(d**2)) / step),
        f"{prefix}max_quant_steps": float(d.max() / step),
        f"{prefix}codes_changed": float(np.mean(np.round(a / step) != np.round(b / step))),
    }


T = TypeVar("T")


def rotating_best(
    variants: Mapping[str, Callable[[], tuple[T, float]]], repeats: int
) -> tuple[dict[str, float], dict[str, T]]:
    """Each variant's best seconds over ``repeats`` rounds, and its last output.

    A variant returns ``(output, seconds)``. Round ``r`` runs them all, starting with the ``r``-th (a
    rotating order): on these VMs the matmul rate swings between ~95 and ~185 GFLOP/s in phases of
    seconds to minutes, so a fixed order could leave one variant in the slow phases.
    """
    names = list(variants)
    best = dict.fromkeys(names, float("inf"))
    outs: dict[str, T] = {}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            outs[name], seconds = variants[name]()
            best[name] = min(best[name], seconds)
    return best, outs


def status_mb(field: str = "VmRSS") -> float:
    """A memory field of ``/proc/self/status`` in MiB: ``VmRSS`` now, ``VmHWM`` its peak (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def report(result: Mapping[str, Any], out: Path, *, targets: Mapping[str, bool] | None = None) -> None:
    """Print ``result`` (and each target as MET / NOT MET) and write it as flat JSON to ``out``.

    The targets are also recorded in the JSON, as ``"target_met: <target>"`` keys.
    """
    flat = dict(result)
    if targets:
        flat.update({f"target_met: {k}": v for k, v in targets.items()})
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        print(f"{key:{width}s}  {value}")
    for key, met in (targets or {}).items():
        print(f"{'MET    ' if met else 'NOT MET'}  {key}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(flat, indent=1) + "\n")
    print(f"wrote {out}")
