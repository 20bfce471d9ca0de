"""Feeding a GPU actor: read+prepare and write throughput per CPU core, and the CPU tasks one GPU needs.

The embedding job's CPU stages, on one core each, over real work units of a sample region (a year of
Sentinel-1 and -2 written as COGs like Planetary Computer's):

* **read+prepare**: ``ray_jobs.embed.read_unit`` itself (the unit's cube with its 7 px halo over its 366
  days plus the temporal halos, then :func:`embedder.inference.prepare_tile`);
* **write**: ``ray_jobs.embed.write_result`` itself, on the row ``EmbedActor`` would return (random
  embeddings of the model's output shape: only quantising, encoding and writing are measured), into a
  local Zarr store.

Rates are embedded pixel-dates (valid pixel x target date) per CPU-second of this process (all its threads
counted; torch is set to one), so they read as "per core". From them, and a GPU actor's
embedding rate, follow the CPU tasks one GPU actor needs so it never waits:
``read_tasks_per_gpu_<path> = gpu_rate / read_px_dates_per_core_s`` (likewise ``write_``). The GPU rates
are ``bench/results/gpu.json``'s when ``bench/gpu.py`` has been run on a device, else the reference
figures measured on one H200 (issue 19: the dense encoder 262,000 pixel-dates/s fp32, the cached paper
model 35,000 in bf16); ``gpu_rates_source`` says which.

    .venv/bin/python bench/feed.py [--size-px 256 --tile-px 128]

Writes flat JSON to ``bench/results/feed.json``; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _common import cpu, report  # noqa: E402

RESULTS = REPO / "bench" / "results" / "feed.json"
GPU_RESULTS = REPO / "bench" / "results" / "gpu.json"
REFERENCE_GPU = {"dense": 262_000.0, "cached": 35_000.0}
"""Pixel-dates/s of one H200 measured before bench/gpu.py existed (issue 19), used until gpu.json exists."""


def gpu_rates() -> tuple[dict[str, float], str]:
    """``({"dense": rate, "cached": rate}, source)`` from ``gpu.json`` when it holds both, else the reference."""
    if GPU_RESULTS.is_file():
        got = json.loads(GPU_RESULTS.read_text())
        dense, cached = got.get("dense_px_dates_s"), got.get("cached_px_dates_s")
        if dense and cached:
            return {
                "dense": float(dense),
                "cached": float(cached),
            }, f"bench/results/gpu.json ({got.get('device', '?')})"
    return dict(REFERENCE_GPU), "reference: one H200, issue 19"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-px", type=int, default=256, help="side of the sample scene, 10 m pixels")
    p.add_argument(
        "--tile-px", type=int, default=128, help="side of a work unit's tile (the store's tile_px)"
    )
    p.add_argument("--units", type=int, default=4, help="work units timed")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(a)
    finally:
        torch.set_num_threads(threads)


def _run(a: argparse.Namespace) -> int:
    import numpy as np

    from embedder.config import SampleRegionConfig, StoreConfig, load_config
    from embedder.grid import region_from_text, work_units
    from embedder.inference import TileInputs, temporal_halo_days
    from embedder.sample import write_sample_region
    from embedder.store import create_store
    from ray_jobs.config import EmbedJobConfig
    from ray_jobs.embed import read_unit, write_result

    base = SampleRegionConfig()
    start = dt.date(2022, 1, 1)
    halo_days = temporal_halo_days()
    region_cfg = dataclasses.replace(
        base,
        scenes=base.scenes[:1],
        size_px=a.size_px,
        start=start - dt.timedelta(days=halo_days + 40),
        end=start + dt.timedelta(days=2 * 366 + halo_days + 40),  # a whole store period after ``start``
    )
    layout = StoreConfig(tile_px=a.tile_px, chunk_px=min(64, a.tile_px), period_days=366, chunk_days=6)
    with tempfile.TemporaryDirectory(prefix="bench_feed_") as tmp:
        t0 = time.perf_counter()
        region = write_sample_region(Path(tmp) / "region", cfg=region_cfg)
        print(f"[feed] sample region {a.size_px} px, {region_cfg.start}..{region_cfg.end} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
        units = work_units(
            region_from_text(str(region.manifest_path)), start, start + dt.timedelta(days=2 * 366),
            tile_px=layout.tile_px, period_days=layout.period_days,
        )  # fmt: skip
        first = min(u.period.start for u in units if u.period.start >= start)  # the store's periods are fixed
        units = [u for u in units if u.period.start == first][: a.units]
        store_url = str(Path(tmp) / "store.zarr")
        cfg = load_config(
            EmbedJobConfig,
            {"catalog": str(region.catalog_path), "store": store_url, "region": str(region.manifest_path),
             "start": start.isoformat(), "end": (start + dt.timedelta(days=2 * 366)).isoformat(),
             "checkpoint": "unused: no model runs here", "store_layout": layout},
        )  # fmt: skip
        store = create_store(store_url, units=units, model_version="bench", cfg=layout)
        read_cpu = write_cpu = read_wall = write_wall = 0.0
        px_dates = targets = 0
        rng = np.random.default_rng(0)
        for unit in units:
            c0, w0 = time.process_time(), time.perf_counter()
            row = read_unit(unit.to_row(), cfg=cfg)  # the job's read stage
            read_cpu += time.process_time() - c0
            read_wall += time.perf_counter() - w0
            if row["status"] != "ok":
                raise RuntimeError(f"unit {unit.id} was not read: {row['status']}: {row['reason']}")
            tile = TileInputs.from_row(row)
            k, (h, w) = len(tile.plan.targets), tile.interior_shape
            embedded = {  # what EmbedActor returns, with random values of the model's output shape
                **unit.to_row(), "status": "ok", "reason": "",
                "embeddings": rng.normal(size=(k, 7, h, w)).astype(np.float32), "flags": tile.flags,
                "dates": tile.dates.astype(np.int64), "skipped_context": np.int64(tile.plan.skipped_context),
            }  # fmt: skip
            c0, w0 = time.process_time(), time.perf_counter()
            summary = write_result(embedded, store=store)  # the job's write stage
            write_cpu += time.process_time() - c0
            write_wall += time.perf_counter() - w0
            if summary["status"] != "ok":
                raise RuntimeError(f"unit {unit.id} was not written: {summary['reason']}")
            px_dates += int(summary["px_dates"])
            targets += k
            print(f"[feed] unit {unit.id}: {k} dates, {summary['px_dates']} pixel-dates", flush=True)
    if px_dates == 0:
        raise RuntimeError("no unit had an embeddable date: enlarge --size-px or check the sample region")
    rates, source = gpu_rates()
    read_rate, write_rate = px_dates / read_cpu, px_dates / write_cpu
    result: dict[str, Any] = {
        "read_px_dates_per_core_s": round(read_rate),
        "write_px_dates_per_core_s": round(write_rate),
        "read_wall_px_dates_s": round(px_dates / read_wall),
        "write_wall_px_dates_s": round(px_dates / write_wall),
        "units": len(units),
        "tile_px": a.tile_px,
        "dates_per_unit": round(targets / len(units), 1),
        "px_dates": px_dates,
        "gpu_dense_px_dates_s": rates["dense"],
        "gpu_cached_px_dates_s": rates["cached"],
        "gpu_rates_source": source,
    }
    for path, rate in rates.items():
        result[f"read_tasks_per_gpu_{path}"] = round(rate / read_rate, 1)
        result[f"write_tasks_per_gpu_{path}"] = round(rate / write_rate, 1)
        result[f"cpus_per_gpu_{path}"] = math.ceil(rate / read_rate + rate / write_rate)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    result.update(cpu())
    report(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
