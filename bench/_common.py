"""Shared by the bench scripts: the machine's matmul peak, FLOP counts and the efficiency keys.

Every benchmark records, beside its figure, the fp32 matmul peak measured in the same run
(``peak_gflops``), the GFLOP/s its figure implies (``achieved_gflops``) and their ratio (``efficiency``),
so figures taken on machines of different speed or load compare. Import as ``from _common import ...``
(each script puts ``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import torch


def matmul_peak_gflops(*, n: int = 1024, seconds: float = 1.0, threads: int | None = None) -> float:
    """Best fp32 GFLOP/s of ``n x n`` matmuls over about ``seconds`` on this CPU (torch's thread count).

    ``threads`` sets torch's thread count for the measurement only.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        best = 0.0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            a @ b
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


def model_flops(model: Any, tile: Any) -> dict[str, float]:
    """Model FLOPs per pixel-date of the fast (``cached``) and ``naive`` paths of ``model`` on ``tile``.

    The work the model defines, summed per part: each sensor's frame encoding (on the whole ``tile`` for
    a dense encoder, so its halo counts; once per frame of the tile in the fast path, 11 times per
    window in the naive one), the temporal transformer and head per window, the fusion. Counted with
    the layers in training mode (the eval fast path of torch's transformer layer is a fused op the
    counter does not see), without the predictor's shortcuts (the shared first-layer projection): an
    efficiency over these FLOPs is model FLOPs utilisation.
    """
    from embedder.models.dense import DenseFrameEncoder
    from embedder.sensors import WINDOW_DATES, WINDOW_PX

    n = 2
    frames: dict[str, float] = {}
    tokens: dict[str, float] = {}
    h, w = tile.interior_shape
    k = max(1, len(tile.plan.targets))
    n_frames = len(set(tile.plan.windows.reshape(-1).tolist())) if len(tile.plan.targets) else 0
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            for name in model.names:
                ae = model.autoencoders[name]
                enc = ae.frame_encoder
                if isinstance(enc, DenseFrameEncoder):
                    frame = torch.from_numpy(tile.frames[name][0])
                    frames[name] = flops_of(functools.partial(enc.encode_dense, frame)) / (h * w)
                else:
                    x = torch.zeros(n, ae.n_channels, WINDOW_PX, WINDOW_PX)
                    frames[name] = flops_of(functools.partial(ae.encode_frames, x)) / n
                t = torch.zeros(n, WINDOW_DATES, ae.cfg.d_model)
                tokens[name] = flops_of(functools.partial(ae.encode_tokens, t, torch.full((n, 10), 5.0))) / n
            z = {nm: torch.zeros(n, int(model.autoencoders[nm].bottleneck_dim)) for nm in model.names}
            fuse = flops_of(lambda: model.fuse(z, {d: torch.full((n,), 3.0) for d in model.delta_keys})) / n
    finally:
        model.train(was_training)
    rest = sum(tokens.values()) + fuse
    return {
        "cached": n_frames / k * sum(frames.values()) + rest,
        "naive": WINDOW_DATES * sum(frames.values()) + rest,
    }
