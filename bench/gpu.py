"""GPU benchmark (issue 19): naive, cached and dense inference on the same tile, the GPU's busy share and peak.

One run, on one CUDA device, writes ``bench/results/gpu.json`` (flat keys):

- ``peak_bf16_tflops``: measured bf16 matmul peak (8192^3 products); ``peak_fp32_tflops`` likewise.
- per path and precision, ``<path>_<prec>_px_dates_s`` (pixel-dates per second through the same
  :class:`~embedder.inference.Predictor` the Ray job uses), ``<path>_<prec>_h2d_bytes_per_px_date`` and
  ``<path>_<prec>_gpu_busy`` (profiler kernel time / wall time of one profiled tile). Paths: ``naive``
  (paper model, every window re-encoded; fp32 only), ``cached`` (paper model, each frame encoded once),
  ``dense`` (the dense-consistent encoder, one fully convolutional pass per frame); precisions ``fp32``,
  ``bf16`` (the whole model) and ``frame_bf16`` (the frame encoders only). The unprefixed
  ``<path>_px_dates_s``, ``<path>_gpu_busy`` and ``<path>_h2d_bytes_per_px_date`` are those of the
  fastest precision (``<path>_precision``).
- ``<path>_<prec>_max_abs_diff`` and ``<path>_<prec>_mean_abs_diff`` (``bf16``, ``frame_bf16``): the
  embeddings against fp32 on the same tile (the fidelity check of the two bf16 options).
- ``frame_encoder_tflops`` (the bare paper S2 frame encoder on device-resident windows, bf16,
  ``cudnn.benchmark``) and ``frame_encoder_share_of_peak``.
- The continental estimate per path: ``<path>_km2_yr_per_gpu_hour``, ``<path>_gpu_hours_per_km2_yr`` and
  ``<path>_gpu_hours_europe_year`` at one date every 5 days (73 dates a year) over Europe's 10.18 million
  km^2 (TESSERA: ~4,700 km^2 yr per L40S-hour).

Models are paper-width and untrained (speed does not depend on the weights); the tile is synthetic (the
frames are random reflectances, the windows 5 days apart). It imports only torch, numpy, xarray, PyYAML
and the library's model and inference modules, so it runs on a bare GPU image. Without a CUDA device it
says so and exits 0; ``--cpu`` runs the same logic on the CPU (tests use it with ``--small`` and tiny
sizes; CPU figures are not GPU figures).

    python bench/gpu.py                      # on the GPU machine, under 5 minutes on an H200
    python bench/gpu.py --cpu --small --px 24 --cached-px 6 --naive-px 2 --dates 12   # logic check
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import matmul_peak_gflops, report  # noqa: E402  (torch only: light)

RESULTS = REPO / "bench" / "results"
DATES_PER_YEAR = 73
"""One date every 5 days (Sentinel-2's revisit with both satellites)."""
PRECISIONS = ("fp32", "bf16", "frame_bf16")
"""The predictor's precisions timed on the cached and dense paths (``Predictor(bf16=...)``, ``frame_bf16``)."""
EUROPE_KM2 = 10.18e6
"""Europe's area in km^2 (the continental estimate)."""
PIXEL_KM2 = 1e-4
"""One 10 m pixel in km^2."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_tile(interior_px: int, n_dates: int, *, seed: int = 0) -> Any:
    """A prepared tile of random reflectances: ``n_dates`` usable dates 5 days apart, all embeddable ones targeted."""
    from embedder.inference import HALO_DATES, HALO_PX, TileInputs, WindowPlan
    from embedder.sensors import S1, S2, WINDOW_DATES

    if n_dates < WINDOW_DATES:
        raise SystemExit(f"--dates {n_dates} must be at least {WINDOW_DATES} (one full window)")
    rng = np.random.default_rng(seed)
    side = interior_px + 2 * HALO_PX
    frames = {
        S2.name: rng.uniform(0.0, 0.5, (n_dates, S2.n_channels, side, side)).astype(np.float32),
        S1.name: rng.uniform(0.0, 0.3, (n_dates, S1.n_channels, side, side)).astype(np.float32),
    }
    targets = np.arange(HALO_DATES, n_dates - HALO_DATES)
    k = len(targets)
    plan = WindowPlan(
        usable=np.arange(n_dates),
        targets=targets,
        windows=targets[:, None] + np.arange(-HALO_DATES, HALO_DATES + 1)[None, :],
        s2_gaps=np.full((k, WINDOW_DATES - 1), 5.0, np.float32),
        s1_gaps=np.full((k, WINDOW_DATES - 1), 6.0, np.float32),
        s1_delta_days=np.ones(k, np.float32),
        gap_rule=np.zeros(k, bool),
        skipped_context=0,
    )
    flags = np.ones((k, interior_px, interior_px), np.uint8)
    dates = np.datetime64("2021-01-01") + 5 * np.arange(k)
    return TileInputs(frames=frames, plan=plan, flags=flags, dates=dates, halo_px=HALO_PX)


def fusion_model(encoder: str, *, small: bool, seed: int = 0) -> Any:
    """An untrained fusion model at the paper's widths (``small``: the CPU preset, for logic checks)."""
    from embedder.config import FusionConfig, ModelConfig
    from embedder.models.fusion import FusionModel
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2

    torch.manual_seed(seed)
    mcfg = ModelConfig.small() if small else ModelConfig()
    mcfg = dataclasses.replace(mcfg, encoder=encoder)  # type: ignore[arg-type]
    aes = {s.name: ModalityAutoencoder(s, cfg=mcfg) for s in (S1, S2)}
    return FusionModel(aes, cfg=FusionConfig.small() if small else FusionConfig()).eval()


def gpu_busy(device: torch.device, fn: Callable[[], Any]) -> float | None:
    """Share of the wall time of ``fn()`` during which GPU kernels ran (profiler kernel time / wall).

    None off CUDA.
    """
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        wall = time.perf_counter() - t0
    from torch.autograd import DeviceType

    kernel_us = sum(
        e.time_range.elapsed_us()
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
    )
    return float(kernel_us / 1e6 / wall)


def time_path(predictor: Any, tile: Any, method: str, *, reps: int = 1) -> tuple[np.ndarray, float, int]:
    """``(embeddings, pixel-dates per second, host -> device bytes per run)`` of ``reps`` timed runs."""
    device = predictor.device
    predictor.embed_tile(tile.crop(interior_px=min(8, tile.interior_shape[0]), n_targets=1), method=method)
    _sync(device)
    before = predictor.bytes_to_device
    t0 = time.perf_counter()
    for _ in range(reps):
        emb = predictor.embed_tile(tile, method=method)
    _sync(device)
    seconds = time.perf_counter() - t0
    h, w = tile.interior_shape
    px_dates = h * w * len(tile.plan.targets) * reps
    return emb, px_dates / seconds, (predictor.bytes_to_device - before) // reps


def frame_encoder_tflops(device: torch.device, *, small: bool, n: int, reps: int) -> float:
    """TFLOP/s of the bare paper S2 frame encoder on ``n`` device-resident windows (bf16 on CUDA)."""
    from torch.utils.flop_counter import FlopCounterMode

    from embedder.config import ModelConfig
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S2, WINDOW_PX

    ae = ModalityAutoencoder(S2, cfg=ModelConfig.small() if small else ModelConfig()).to(device).eval()
    x = torch.rand(n, S2.n_channels, WINDOW_PX, WINDOW_PX, device=device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            ae.encode_frames(x[:1])
        flops_per_frame = counter.get_total_flops()
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            for _ in range(2):
                ae.encode_frames(x)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                ae.encode_frames(x)
            _sync(device)
    return flops_per_frame * n * reps / (time.perf_counter() - t0) / 1e12


def continental(px_dates_s: float) -> dict[str, float]:
    """km^2 yr per GPU-hour, GPU-hours per km^2 yr and per year of Europe at one date every 5 days."""
    km2_yr = px_dates_s * 3600 / DATES_PER_YEAR * PIXEL_KM2
    return {
        "km2_yr_per_gpu_hour": km2_yr,
        "gpu_hours_per_km2_yr": 1.0 / km2_yr if km2_yr > 0 else math.inf,
        "gpu_hours_europe_year": EUROPE_KM2 / km2_yr if km2_yr > 0 else math.inf,
    }


def run(args: argparse.Namespace, device: torch.device, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement of the benchmark on ``device``; returns the flat figures."""
    from embedder.inference import Predictor

    t_start = time.perf_counter()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    out["torch"] = torch.__version__
    n_mm, secs = (8192, 2.0) if device.type == "cuda" else (512, 0.3)
    if device.type == "cuda":
        out["peak_bf16_tflops"] = (
            matmul_peak_gflops(n=n_mm, seconds=secs, device=device, dtype=torch.bfloat16) / 1e3
        )
    out["peak_fp32_tflops"] = matmul_peak_gflops(n=n_mm, seconds=secs, device=device) / 1e3
    log(f"matmul peak: {json.dumps({k: round(v, 3) for k, v in out.items() if k.startswith('peak')})}")
    tile = synthetic_tile(args.px, args.dates)
    tiles = {
        "naive": tile.crop(interior_px=args.naive_px, n_targets=args.naive_targets),
        "cached": tile.crop(interior_px=args.cached_px),
        "dense": tile,
    }
    for k, t in tiles.items():
        out[f"{k}_tile_px"] = t.interior_shape[0]
        out[f"{k}_targets"] = len(t.plan.targets)
    models = {
        "paper": fusion_model("paper", small=args.small),
        "dense": fusion_model("dense", small=args.small),
    }
    runs = (("naive", "paper", "naive"), ("cached", "paper", "fast"), ("dense", "dense", "fast"))
    for path, model, method in runs:
        t = tiles[path]
        px_dates = t.interior_shape[0] * t.interior_shape[1] * len(t.plan.targets)
        embs: dict[str, np.ndarray] = {}
        for prec in ("fp32",) if path == "naive" else PRECISIONS:  # the naive reference: fp32 only
            pred = Predictor(
                models[model], device=str(device), pixel_batch=args.pixel_batch, bf16=prec == "bf16",
                frame_bf16=prec == "frame_bf16", compile=args.compile,
            )  # fmt: skip
            embs[prec], rate, h2d = time_path(pred, t, method)
            key = f"{path}_{prec}"
            out[f"{key}_px_dates_s"] = rate
            out[f"{key}_h2d_bytes_per_px_date"] = h2d / px_dates
            out[f"{key}_gpu_busy"] = gpu_busy(device, functools.partial(pred.embed_tile, t, method=method))
            busy = out[f"{key}_gpu_busy"]
            log(f"{key}: {rate:,.0f} px-dates/s, GPU busy {'-' if busy is None else f'{busy:.2f}'}, "
                f"{h2d / px_dates:,.0f} B per px-date to the device")  # fmt: skip
        for prec in sorted(set(embs) - {"fp32"}):
            diff = np.abs(embs[prec] - embs["fp32"])
            out[f"{path}_{prec}_max_abs_diff"] = float(diff.max())
            out[f"{path}_{prec}_mean_abs_diff"] = float(diff.mean())
            out[f"{path}_fp32_mean_abs"] = float(np.abs(embs["fp32"]).mean())
        best = max(embs, key=lambda prec: out[f"{path}_{prec}_px_dates_s"])
        out[f"{path}_precision"] = best
        for k in ("px_dates_s", "gpu_busy", "h2d_bytes_per_px_date"):
            out[f"{path}_{k}"] = out[f"{path}_{best}_{k}"]
        for k, v in continental(out[f"{path}_px_dates_s"]).items():
            out[f"{path}_{k}"] = v
    out["dense_vs_naive"] = out["dense_px_dates_s"] / out["naive_px_dates_s"]
    out["cached_vs_naive"] = out["cached_px_dates_s"] / out["naive_px_dates_s"]
    tf = frame_encoder_tflops(device, small=args.small, n=args.encoder_frames, reps=5)
    out["frame_encoder_tflops"] = tf
    peak = out.get("peak_bf16_tflops", out["peak_fp32_tflops"])
    out["frame_encoder_share_of_peak"] = tf / peak
    out["seconds"] = time.perf_counter() - t_start
    return out


def targets(out: dict[str, Any]) -> dict[str, bool]:
    """Issue 19's GPU targets (one H200 as the reference)."""
    peak = out.get("peak_bf16_tflops", out["peak_fp32_tflops"])
    return {
        "dense_px_dates_s >= 1,500,000": out["dense_px_dates_s"] >= 1.5e6,
        "dense_gpu_busy >= 0.85": (out["dense_gpu_busy"] or 0.0) >= 0.85,
        "cached_bf16_px_dates_s >= 100,000": out["cached_bf16_px_dates_s"] >= 1e5,
        "frame_encoder_tflops >= 0.25 x peak_bf16_tflops": out["frame_encoder_tflops"] >= 0.25 * peak,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (0 also without a CUDA device)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--px", type=int, default=256, help="interior px of the dense path's tile (256)")
    p.add_argument("--cached-px", type=int, default=128, help="interior px of the cached path's crop (128)")
    p.add_argument("--naive-px", type=int, default=32, help="interior px of the naive path's crop (32)")
    p.add_argument("--naive-targets", type=int, default=2, help="target dates of the naive path (2)")
    p.add_argument("--dates", type=int, default=24, help="usable dates of the tile (24: 14 targets)")
    p.add_argument("--pixel-batch", type=int, default=16384, help="pixels per forward pass (16384)")
    p.add_argument("--encoder-frames", type=int, default=32768, help="windows per frame-encoder pass")
    p.add_argument("--compile", help="torch.compile backend for the predictor (e.g. inductor); default eager")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (logic check; not a GPU figure)")
    p.add_argument("--small", action="store_true", help="the small model preset (logic checks on a CPU)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    a = p.parse_args(argv)
    if a.cpu:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine, or with --cpu to check its logic.")  # fmt: skip
        return 0
    out = run(a, device)
    report(out, a.out, targets=targets(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
