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

A measurement that fails (out of device memory, a compiler error) is recorded as ``<key>_error`` (the
exception's type and message) and the run goes on with the others; the JSON is rewritten after every
measurement with ``"complete": false`` until the end, so a run cut short by a time limit still leaves
what it measured. The exit code is 1 when anything failed. ``--paths`` and ``--precisions`` pick a
subset (e.g. to re-measure only what failed).

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


def _error(exc: BaseException) -> str:
    """``"Type: message"`` of a failed measurement (first line, at most 300 characters)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def _free(device: torch.device) -> None:
    """Release what a failed measurement left on the device (cached blocks after an out-of-memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure(
    out: dict[str, Any],
    embs: dict[str, np.ndarray],
    model: Any,
    args: argparse.Namespace,
    device: torch.device,
    tile: Any,
    *,
    method: str,
    prec: str,
    key: str,
    log: Callable[[str], None],
) -> None:
    """Time one path at one precision (``key``: ``<path>_<prec>``) through a fresh predictor.

    Records ``<key>_px_dates_s``, ``_h2d_bytes_per_px_date`` and ``_gpu_busy`` in ``out`` and the
    embeddings in ``embs[prec]``.
    """
    from embedder.inference import Predictor

    pred = Predictor(
        model, device=str(device), pixel_batch=args.pixel_batch, bf16=prec == "bf16",
        frame_bf16=prec == "frame_bf16", compile=args.compile,
    )  # fmt: skip
    emb, rate, h2d = time_path(pred, tile, method)
    busy = gpu_busy(device, functools.partial(pred.embed_tile, tile, method=method))
    h, w = tile.interior_shape
    px_dates = h * w * len(tile.plan.targets)
    embs[prec] = emb
    out[f"{key}_px_dates_s"] = rate
    out[f"{key}_h2d_bytes_per_px_date"] = h2d / px_dates
    out[f"{key}_gpu_busy"] = busy
    log(f"{key}: {rate:,.0f} px-dates/s, GPU busy {'-' if busy is None else f'{busy:.2f}'}, "
        f"{h2d / px_dates:,.0f} B per px-date to the device")  # fmt: skip


def run(
    args: argparse.Namespace,
    device: torch.device,
    log: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every measurement of the benchmark on ``device``; returns the flat figures.

    A measurement that raises is recorded as ``<key>_error`` and the others go on; ``save(out)`` is
    called after each measurement with the figures so far.
    """
    t_start = time.perf_counter()
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    out["torch"] = torch.__version__

    def attempt(key: str, fn: Callable[[], None]) -> bool:
        """``fn()``; on an exception record ``<key>_error``, free the device and return False."""
        try:
            fn()
            return True
        except Exception as exc:  # one failure must not cost the other measurements
            out[f"{key}_error"] = _error(exc)
            log(f"{key}: FAILED, {out[f'{key}_error']}")
        finally:
            if save is not None:
                save(out)
        _free(device)  # after the except clause: the traceback's tensors are released by now
        return False

    n_mm, secs = (8192, 2.0) if device.type == "cuda" else (512, 0.3)

    def peaks() -> None:
        if device.type == "cuda":
            out["peak_bf16_tflops"] = (
                matmul_peak_gflops(n=n_mm, seconds=secs, device=device, dtype=torch.bfloat16) / 1e3
            )
        out["peak_fp32_tflops"] = matmul_peak_gflops(n=n_mm, seconds=secs, device=device) / 1e3
        log(f"matmul peak: {json.dumps({k: round(v, 3) for k, v in out.items() if k.startswith('peak')})}")

    attempt("peak", peaks)
    tile = synthetic_tile(args.px, args.dates)
    tiles = {
        "naive": tile.crop(interior_px=args.naive_px, n_targets=args.naive_targets),
        "cached": tile.crop(interior_px=args.cached_px),
        "dense": tile,
    }
    models: dict[str, Any] = {}
    runs = (("naive", "paper", "naive"), ("cached", "paper", "fast"), ("dense", "dense", "fast"))
    for path, model, method in runs:
        if path not in args.paths:
            continue
        t = tiles[path]
        out[f"{path}_tile_px"] = t.interior_shape[0]
        out[f"{path}_targets"] = len(t.plan.targets)
        if model not in models:
            models[model] = fusion_model(model, small=args.small)
        embs: dict[str, np.ndarray] = {}
        precisions = ("fp32",) if path == "naive" else PRECISIONS  # the naive reference: fp32 only
        for prec in (p for p in precisions if p in args.precisions):
            key = f"{path}_{prec}"
            measure = functools.partial(_measure, out, embs, models[model], args, device, t, method=method,
                                        prec=prec, key=key, log=log)  # fmt: skip
            attempt(key, measure)
        if "fp32" in embs and len(embs) > 1:
            out[f"{path}_fp32_mean_abs"] = float(np.abs(embs["fp32"]).mean())
            for prec in sorted(set(embs) - {"fp32"}):
                diff = np.abs(embs[prec] - embs["fp32"])
                out[f"{path}_{prec}_max_abs_diff"] = float(diff.max())
                out[f"{path}_{prec}_mean_abs_diff"] = float(diff.mean())
        if not embs:
            continue  # every precision of the path failed: no summary figures
        best = max(embs, key=lambda prec: out[f"{path}_{prec}_px_dates_s"])
        out[f"{path}_precision"] = best
        for k in ("px_dates_s", "gpu_busy", "h2d_bytes_per_px_date"):
            out[f"{path}_{k}"] = out[f"{path}_{best}_{k}"]
        for k, v in continental(out[f"{path}_px_dates_s"]).items():
            out[f"{path}_{k}"] = v
    for path in ("dense", "cached"):
        if f"{path}_px_dates_s" in out and "naive_px_dates_s" in out:
            out[f"{path}_vs_naive"] = out[f"{path}_px_dates_s"] / out["naive_px_dates_s"]

    def frame_encoder() -> None:
        tf = frame_encoder_tflops(device, small=args.small, n=args.encoder_frames, reps=5)
        out["frame_encoder_tflops"] = tf
        peak = out.get("peak_bf16_tflops", out.get("peak_fp32_tflops"))
        if peak:
            out["frame_encoder_share_of_peak"] = tf / peak

    attempt("frame_encoder", frame_encoder)
    out["seconds"] = time.perf_counter() - t_start
    return out


def errors(out: dict[str, Any]) -> list[str]:
    """The measurements of ``out`` that failed (``<key>_error`` keys)."""
    return [k.removesuffix("_error") for k in out if k.endswith("_error")]


def targets(out: dict[str, Any]) -> dict[str, bool]:
    """Issue 19's GPU targets (one H200 as the reference); a figure that was not measured is not met."""
    peak = out.get("peak_bf16_tflops", out.get("peak_fp32_tflops", math.inf))
    return {
        "dense_px_dates_s >= 1,500,000": out.get("dense_px_dates_s", 0.0) >= 1.5e6,
        "dense_gpu_busy >= 0.85": (out.get("dense_gpu_busy") or 0.0) >= 0.85,
        "cached_bf16_px_dates_s >= 100,000": out.get("cached_bf16_px_dates_s", 0.0) >= 1e5,
        "frame_encoder_tflops >= 0.25 x peak_bf16_tflops": out.get("frame_encoder_tflops", 0.0)
        >= 0.25 * peak,
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
    p.add_argument("--paths", default="naive,cached,dense", help="paths to time (naive,cached,dense)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="precisions (fp32,bf16,frame_bf16)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu.json")
    a = p.parse_args(argv)
    for name, allowed in (("paths", ("naive", "cached", "dense")), ("precisions", PRECISIONS)):
        chosen = [x.strip() for x in getattr(a, name).split(",") if x.strip()]
        if not chosen or set(chosen) - set(allowed):
            p.error(f"--{name} {getattr(a, name)!r}: choose from {','.join(allowed)}")
        setattr(a, name, chosen)
    if a.cpu:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine, or with --cpu to check its logic.")  # fmt: skip
        return 0

    def save(figures: dict[str, Any]) -> None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({**figures, "complete": False}, indent=1) + "\n")

    out = run(a, device, save=save)
    out["complete"] = True
    report(out, a.out, targets=targets(out))
    failed = errors(out)
    if failed:
        print(
            f"bench/gpu.py: {len(failed)} measurement(s) failed: {', '.join(failed)} (see *_error in {a.out})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
