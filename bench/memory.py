"""Peak memory of the fast path on a store-size tile: the frame-token cache is bounded, not the tile.

The fast path caches, per sensor, the tokens of the 11 frames a window spans for every pixel it embeds
(and their first-layer projections): ~88 KiB a pixel for the paper model, ~22 GiB for a whole 512 px
store tile (``StoreConfig.tile_px``). ``Predictor`` embeds a tile in row strips whose cache fits
``cache_bytes`` (``embedder.inference.CACHE_BYTES``, 4 GiB). This script measures it in one process:

(a) a 128 px tile embedded whole (its cache, ~1.4 GiB, fits the bound): the peak resident growth against
    the cache the per-pixel figure predicts (``tile128_*``);
(b) a 512 px tile with the default bound (``tile512_*``): strip rows, peak resident growth, and what the
    whole tile's cache would have needed (``tile512_whole_tile_cache_mb``).

Each run embeds one target date (11 S2 and 22 S1 dates; the cache is full from the first target on) with
the paper-width dense-consistent model (``ModelConfig(encoder="dense")``, untrained: memory and speed
do not depend on the weights; the paper encoder's cache is the same size but one 512 px target takes it
~25 min on 2 cores). The peak is the kernel's ``VmHWM``, reset (``/proc/self/clear_refs``) before each
run. Writes ``bench/results/memory.json``.

    .venv/bin/python bench/memory.py [--px 128 512] [--cache-mb 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import cpu, report, status_mb  # noqa: E402

from embedder.config import FusionConfig, ModelConfig  # noqa: E402
from embedder.data.testing import make_test_cube  # noqa: E402
from embedder.hostmem import keep_freed_memory  # noqa: E402
from embedder.inference import FLAG_VALID, Predictor, prepare_tile  # noqa: E402
from embedder.models.fusion import FusionModel  # noqa: E402
from embedder.models.modality import ModalityAutoencoder  # noqa: E402
from embedder.sensors import S1, S2  # noqa: E402

MIB = 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak resident size of this process to the current one."""
    Path("/proc/self/clear_refs").write_text("5")


def main(argv: list[str] | None = None) -> int:
    """Embed one target of each tile size, print and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--px", type=int, nargs="+", default=[128, 512], help="interior sides of the tiles")
    ap.add_argument("--cache-mb", type=int, default=0, help="the cache bound in MiB (0: CACHE_BYTES)")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/memory.json")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the embedding actors do
    torch.manual_seed(0)
    cfg = ModelConfig(encoder="dense")
    model = FusionModel({s.name: ModalityAutoencoder(s, cfg=cfg) for s in (S1, S2)}, cfg=FusionConfig())
    pred = Predictor(model, cache_bytes=args.cache_mb * MIB or None)
    per_px = pred.cache_bytes_per_px()
    res: dict[str, float | int | str] = {
        "cache_bytes_per_px": per_px,
        "cache_bound_mb": pred.cache_bytes / MIB,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        **cpu(),
    }
    warm = make_test_cube(1, size_px=16, n_dates=11, n_s1=22, cloud_frac=0.0)
    pred.embed_tile(prepare_tile(warm, start="2000-01-01", end="2100-01-01", halo_px=7))  # plans, kernels
    for px in args.px:
        cube = make_test_cube(2, size_px=px + 14, n_dates=11, n_s1=22, cloud_frac=0.1)
        tile = prepare_tile(cube, start="2000-01-01", end="2100-01-01", halo_px=7)
        del cube
        rows = pred.strip_rows(tile.interior_shape)
        before = status_mb("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        pred.embed_tile(tile)
        seconds = time.perf_counter() - t0
        growth = status_mb("VmHWM") - before
        fig = {
            "strip_rows": rows,
            "strips": -(-px // rows),
            "targets": len(tile.plan.targets),
            "rss_before_mb": before,
            "peak_growth_mb": growth,
            "strip_cache_mb": per_px * rows * px / MIB,
            "whole_tile_cache_mb": per_px * px * px / MIB,
            "px_dates_s": int((tile.flags & FLAG_VALID).sum()) / seconds,
        }
        res.update({f"tile{px}_{k}": v for k, v in fig.items()})
        print(
            f"[memory] {px} px: {fig['strips']} strip(s) of {rows} rows, peak +{growth:.0f} MiB "
            f"(strip cache {fig['strip_cache_mb']:.0f} MiB, whole tile {fig['whole_tile_cache_mb']:.0f} MiB), "
            f"{seconds:.0f} s",
            flush=True,
        )
    report(res, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
