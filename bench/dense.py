"""Benchmark of the dense-consistent encoder (issue 9) against the paper procedure, on one tile.

Writes ``bench/results/dense.json`` (flat JSON) with ``naive_px_dates_s``, ``cached_px_dates_s``,
``dense_px_dates_s``, ``dense_vs_naive``, ``dense_vs_cached``, ``flops_per_px_date_dense`` (plus the
FLOPs of the other two paths, the dense rate on the cached crop and the exactness checks). Targets:
``dense_vs_naive`` >= 25 (moonshot 100+).

All three use paper-width models (``ModelConfig()`` / ``FusionConfig()``, untrained: speed and FLOPs do
not depend on the weights) and one synthetic tile (``make_test_cube``, ``--px`` interior, ``--dates``):

(a) naive: the paper model, every window re-encoded (``Predictor.embed_tile(method="naive")``), timed on
    the tile's top-left ``--naive-px`` crop and first target date (its cost per pixel-date is constant);
(b) cached: the paper model with the frame cache (``method="fast"``) on the ``--cached-px`` crop with
    all target dates (per pixel its cost does not depend on the tile size; the whole tile would take
    hours on a shared CPU);
(c) dense: ``ModelConfig(encoder="dense")`` through the same predictor, whose fast path encodes each
    date's whole frame in one fully convolutional pass, on the whole tile (``dense_px_dates_s``; its
    7 px halo costs relatively less on larger tiles; the best of ``--repeat`` runs) and on the cached
    crop (``dense_crop_px_dates_s``);
    (d) the dense path with ``--baseline-token-batch`` pixels per transformer and fusion call instead of
    the CPU default (``Predictor(token_batch=...)``, ``embedder.inference.CPU_TOKEN_BYTES``):
    ``dense_baseline_token_batch_px_dates_s`` and ``dense_token_batch_speedup``; and with the direct
    convolutions instead of the DFT (``Predictor(spectral=False)``): ``dense_direct_px_dates_s`` and
    ``dense_spectral_speedup``; and ``--per-core-procs`` processes (default: one per core) of one torch
    thread each embedding the whole tile at the same time, the layout of one 1-CPU embedding actor per
    core against one actor on every core (:class:`PerCorePool`): ``dense_per_core_px_dates_s`` (all
    processes' pixel-dates over the round's wall time) and ``dense_per_core_speedup`` (the four
    alternated in a rotating order, best of ``--repeat`` each);
    (e) the dense path with bf16 frame encoders (``Predictor(frame_bf16=True)``) on the whole tile:
    ``dense_frame_bf16_*`` (rate, speed-up, difference from fp32 in the store's quantisation steps, and
    the efficiency over the bf16 and fp32 matmul peaks, ``_common.mixed_efficiency``).

FLOPs per pixel-date (one multiply-add = 2 FLOPs) are counted with ``torch.utils.flop_counter`` on the
same code paths (the dense frame cost is counted on the tile, so it includes its halo). The JSON also
records exactness (dense vs the same model's per-window path) and the load average (shared machine).

    .venv/bin/python bench/dense.py [--px 32 --dates 20 --cached-px 6 --naive-px 3 --naive-targets 1]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
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

from _common import (  # noqa: E402
    cpu,
    efficiency,
    matmul_peak_gflops,
    mixed_efficiency,
    model_flops,
    quant_diff,
    rotating_best,
)

from embedder.config import FusionConfig, ModelConfig  # noqa: E402
from embedder.data.testing import make_test_cube  # noqa: E402
from embedder.hostmem import keep_freed_memory  # noqa: E402
from embedder.inference import FLAG_VALID, Predictor, TileInputs, prepare_tile  # noqa: E402
from embedder.models.fusion import FusionModel  # noqa: E402
from embedder.models.modality import ModalityAutoencoder  # noqa: E402
from embedder.sensors import S1, S2  # noqa: E402


def _model(encoder: str, seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    mcfg = ModelConfig(encoder=encoder)  # type: ignore[arg-type]
    aes = {s.name: ModalityAutoencoder(s, cfg=mcfg) for s in (S1, S2)}
    return FusionModel(aes, cfg=FusionConfig()).eval()


def _tile(interior_px: int, n_dates: int) -> TileInputs:
    cube = make_test_cube(3, size_px=interior_px + 14, n_dates=n_dates, n_s1=2 * n_dates, cloud_frac=0.1)
    return prepare_tile(cube, start="2021-01-01", end="2030-12-31", halo_px=7)


def _timed(pred: Predictor, tile: TileInputs, method: str) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = pred.embed_tile(tile, method=method)  # [K, 7, h, w]
    return out, time.perf_counter() - t0


def _per_core_worker(px: int, dates: int, out: Path) -> None:
    """One process of :class:`PerCorePool` (``dense.py --per-core-worker PX DATES OUT``): one torch thread,
    its own dense predictor and tile (both deterministic); for each ``go`` line on stdin it embeds the
    tile, saves the output to ``OUT`` and prints the seconds it took."""
    torch.set_num_threads(1)
    keep_freed_memory()
    tile = _tile(px, dates)
    pred = Predictor(_model("dense"))
    pred.embed_tile(tile.crop(n_targets=1, interior_px=2))  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        emb, t = _timed(pred, tile, "fast")
        np.save(out, emb)
        print(f"{t:.6f}", flush=True)


class PerCorePool:
    """``procs`` worker processes of one torch thread each, embedding the same tile at the same time:
    the layout of one 1-thread embedding actor per core (docs/operations.md, "Sizing the embedding
    actors") against one process on every thread. Use as a context manager; :meth:`run` returns the wall time of one round
    (all workers started together, until the last one is done) and the first worker's output."""

    def __init__(self, procs: int, px: int, dates: int) -> None:
        import subprocess
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="dense-per-core-"))
        script = str(Path(__file__).resolve())
        self.procs: list[Any] = [
            subprocess.Popen(
                [
                    sys.executable,
                    script,
                    "--per-core-worker",
                    str(px),
                    str(dates),
                    str(self.dir / f"out{i}.npy"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(procs)
        ]
        try:
            for p in self.procs:  # they start together; this only waits
                self._reply(p)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _reply(p: Any) -> str:
        line = p.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"a per-core worker exited (code {p.wait()}); its error is above")
        return str(line)

    def run(self) -> tuple[float, np.ndarray]:
        """One round: wall seconds and the first worker's ``[K, 7, h, w]`` output."""
        t0 = time.perf_counter()
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in self.procs:
            float(self._reply(p))  # the worker's own seconds: a number, or it failed
        return time.perf_counter() - t0, np.load(self.dir / "out0.npy")

    def close(self) -> None:
        """End the workers (end of input stops their loop; killed after 60 s) and remove their outputs."""
        import shutil

        for p in self.procs:
            with contextlib.suppress(OSError):  # a worker that died has a broken pipe
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except Exception:
                p.kill()
                p.wait()
            p.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PerCorePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """Run the three paths, print a table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--px", type=int, default=32, help="interior side of the tile (px)")
    ap.add_argument("--dates", type=int, default=20, help="S2 dates of the tile (targets = dates - 10)")
    ap.add_argument("--cached-px", type=int, default=6, help="interior side of the cached path's crop (px)")
    ap.add_argument("--naive-px", type=int, default=3, help="interior side of the naive path's crop (px)")
    ap.add_argument("--naive-targets", type=int, default=1, help="target dates of the naive path")
    ap.add_argument("--pixel-batch", type=int, default=256)
    ap.add_argument(
        "--repeat",
        type=int,
        default=6,
        help="whole-tile dense runs and baseline runs, alternated in a rotating order; best of each",
    )
    ap.add_argument(
        "--baseline-token-batch",
        type=int,
        default=2048,
        help="pixels per transformer call of the baseline dense run (2,048: the Predictor's "
        "pixel_batch, which set it before the CPU token_batch default)",
    )
    ap.add_argument(
        "--per-core-procs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes of one torch thread each embedding the tile together, timed in the same rotation "
        "(one 1-CPU actor per core); 0 = skip",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/dense.json")
    ap.add_argument("--per-core-worker", nargs=3, metavar=("PX", "DATES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.per_core_worker:
        px, dates, out = args.per_core_worker
        _per_core_worker(int(px), int(dates), Path(out))
        return 0
    keep_freed_memory()  # as the embedding actors do (EmbedJobConfig.keep_freed_memory)

    peak = matmul_peak_gflops()
    peak_bf16 = matmul_peak_gflops(n=2048, dtype=torch.bfloat16)
    print(f"[dense] matmul peak {peak:.1f} GFLOP/s fp32, {peak_bf16:.1f} bf16 on {torch.get_num_threads()} threads",
          flush=True)  # fmt: skip
    tile = _tile(args.px, args.dates)
    k = len(tile.plan.targets)
    paper, dense = _model("paper"), _model("dense")
    pp = Predictor(paper, pixel_batch=args.pixel_batch)
    pd = Predictor(dense, pixel_batch=args.pixel_batch)
    pb = Predictor(dense, pixel_batch=args.pixel_batch, frame_bf16=True)  # EmbedJobConfig.frame_bf16
    pt = Predictor(dense, pixel_batch=args.pixel_batch, token_batch=args.baseline_token_batch)
    pdir = Predictor(dense, pixel_batch=args.pixel_batch, spectral=False)  # direct convolutions
    warm = tile.crop(n_targets=1, interior_px=2)
    pp.embed_tile(warm)
    pd.embed_tile(warm)  # warm-up (allocator, kernels)
    pb.embed_tile(warm)
    pt.embed_tile(warm)
    pdir.embed_tile(warm)

    def px_dates(t: TileInputs) -> int:
        return int(np.count_nonzero(t.flags & FLAG_VALID))

    naive_tile = tile.crop(n_targets=args.naive_targets, interior_px=args.naive_px)
    naive, t_naive = _timed(pp, naive_tile, "naive")
    print(f"[dense] naive: {px_dates(naive_tile)} px-dates in {t_naive:.1f} s", flush=True)
    crop = tile.crop(n_targets=k, interior_px=args.cached_px)
    cached, t_cached = _timed(pp, crop, "fast")
    print(f"[dense] cached: {px_dates(crop)} px-dates in {t_cached:.1f} s", flush=True)
    dense_crop, t_dense_crop = _timed(pd, crop, "fast")
    print(f"[dense] dense on the crop: {px_dates(crop)} px-dates in {t_dense_crop:.1f} s", flush=True)
    # alternated in a rotating order, best of each (_common.rotating_best: the VMs' speed drifts)
    variants: dict[str, Callable[[], tuple[np.ndarray, float]]] = {
        name: functools.partial(_timed, pred, tile, "fast")
        for name, pred in (("dense", pd), ("token_batch", pt), ("direct", pdir))
    }
    pool = PerCorePool(args.per_core_procs, args.px, args.dates) if args.per_core_procs else None
    if pool is not None:
        variants["per_core"] = lambda: pool.run()[::-1]
    with pool or contextlib.nullcontext():
        best, outs = rotating_best(variants, args.repeat)
    if pool is not None:
        t_pc = best["per_core"]
        print(f"[dense] dense, {args.per_core_procs} processes of one thread: "
              f"{args.per_core_procs * px_dates(tile)} px-dates in {t_pc:.1f} s", flush=True)  # fmt: skip
    dense_out, dense_tb, dense_dir = outs["dense"], outs["token_batch"], outs["direct"]
    t_dense, t_tb, t_dir = best["dense"], best["token_batch"], best["direct"]
    print(f"[dense] dense, direct convolutions: {px_dates(tile)} px-dates in {t_dir:.1f} s", flush=True)
    print(f"[dense] dense: {px_dates(tile)} px-dates in {t_dense:.1f} s (best of {args.repeat})", flush=True)
    print(f"[dense] dense, {args.baseline_token_batch} pixels per transformer call: {px_dates(tile)} px-dates in "
          f"{t_tb:.1f} s (default {pd.token_batch['s2']})", flush=True)  # fmt: skip
    dense_bf16, t_bf16 = _timed(pb, tile, "fast")
    print(f"[dense] dense, bf16 frame encoders: {px_dates(tile)} px-dates in {t_bf16:.1f} s", flush=True)
    # exactness of the dense pass against the same variant's per-window path, on the naive crop
    dense_naive = pd.embed_tile(naive_tile, method="naive")
    n_t, n_px = len(naive_tile.plan.targets), args.naive_px
    fl_paper = model_flops(tile)
    fl_dense = model_flops(tile, encoder="dense")
    fl_dense_crop = model_flops(crop, encoder="dense")
    res: dict[str, float | int | str] = {
        "tile_interior_px": args.px,
        "cached_crop_px": args.cached_px,
        "naive_crop_px": args.naive_px,
        "targets": k,
        "naive_px_dates": px_dates(naive_tile),
        "cached_px_dates": px_dates(crop),
        "dense_px_dates": px_dates(tile),
        "naive_px_dates_s": px_dates(naive_tile) / t_naive,
        "cached_px_dates_s": px_dates(crop) / t_cached,
        "dense_px_dates_s": px_dates(tile) / t_dense,
        "dense_crop_px_dates_s": px_dates(crop) / t_dense_crop,
        "flops_per_px_date_naive": fl_paper["naive"],
        "flops_per_px_date_cached": model_flops(crop)["cached"],
        "flops_per_px_date_dense": fl_dense["cached"],
        "flops_per_px_date_dense_crop": fl_dense_crop["cached"],
        "cached_vs_naive_max_abs_diff": float(np.abs(cached[:n_t, :, :n_px, :n_px] - naive).max()),
        "dense_vs_per_window_max_abs_diff": float(np.abs(dense_out[:n_t, :, :n_px, :n_px] - dense_naive).max()),
        "dense_crop_vs_tile_max_abs_diff": float(np.abs(dense_out[:, :, : args.cached_px, : args.cached_px] - dense_crop).max()),
        "threads": torch.get_num_threads(),
        "repeat": args.repeat,
        "load_average_1min": os.getloadavg()[0],
        **cpu(),
    }  # fmt: skip
    res["dense_vs_naive"] = float(res["dense_px_dates_s"]) / float(res["naive_px_dates_s"])
    res["dense_vs_cached"] = float(res["dense_px_dates_s"]) / float(res["cached_px_dates_s"])
    res["dense_crop_vs_naive"] = float(res["dense_crop_px_dates_s"]) / float(res["naive_px_dates_s"])
    res["cached_vs_naive"] = float(res["cached_px_dates_s"]) / float(res["naive_px_dates_s"])
    res["peak_gflops"] = peak
    res["peak_bf16_gflops"] = peak_bf16
    res["dense_token_batch"] = pd.token_batch["s2"]
    res["dense_fuse_batch"] = pd.fuse_batch
    res["baseline_token_batch"] = args.baseline_token_batch
    res["dense_baseline_token_batch_px_dates_s"] = px_dates(tile) / t_tb
    res["dense_token_batch_speedup"] = t_tb / t_dense
    res["dense_token_batch_max_abs_diff"] = float(np.abs(dense_tb - dense_out).max())
    res["dense_spectral_encoders"] = ",".join(pd.spectral_encoders)
    res["dense_direct_px_dates_s"] = px_dates(tile) / t_dir
    res["dense_spectral_speedup"] = t_dir / t_dense
    res["dense_spectral_max_abs_diff"] = float(np.abs(dense_dir - dense_out).max())
    if pool is not None:
        res["dense_per_core_procs"] = args.per_core_procs
        res["dense_per_core_px_dates_s"] = args.per_core_procs * px_dates(tile) / t_pc
        res["dense_per_core_speedup"] = float(res["dense_per_core_px_dates_s"]) / float(
            res["dense_px_dates_s"]
        )
        res["dense_per_core_max_abs_diff"] = float(np.abs(outs["per_core"] - dense_out).max())
    res["dense_frame_bf16_px_dates_s"] = px_dates(tile) / t_bf16
    res["dense_frame_bf16_speedup"] = t_dense / t_bf16
    res.update(quant_diff(dense_bf16, dense_out, tile.flags, prefix="dense_frame_bf16_"))
    res["dense_frame_bf16_efficiency"] = mixed_efficiency(
        float(res["dense_frame_bf16_px_dates_s"]), fl_dense, peak_bf16, peak
    )
    res.update(efficiency(float(res["dense_px_dates_s"]), fl_dense["cached"], peak))  # the headline path
    for path in ("naive", "cached"):
        res.update(
            efficiency(
                float(res[f"{path}_px_dates_s"]),
                float(res[f"flops_per_px_date_{path}"]),
                peak,
                prefix=f"{path}_",
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
