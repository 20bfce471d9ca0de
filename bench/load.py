"""Cube-loading throughput: the loader vs a plain rasterio windowed read of the same COGs.

Writes a sample region (one scene, larger than the test one) into a temporary folder, then reads all
Sentinel-2 items (10 bands + SCL) of the scene onto its 10 m grid three times:

* the loader, :func:`embedder.data.cubes.read_items` (what :func:`~embedder.data.cubes.load_cube` reads
  with): assets on the output's UTM grid are read directly (:mod:`embedder.data.gridread`), anything else
  through odc-stac;
* odc-stac alone (``read_items(..., direct=False)``: ``odc.stac.load(items, groupby="id", geobox=...)``);
* per item and asset, ``rasterio.open(href).read(1, window=..., out_shape=(H, W))`` with the same
  resampling (bilinear, SCL nearest), i.e. the same output arrays with no reprojection machinery.

All single-threaded, best of ``--repeats`` rounds (warm page cache); each round times the three readers
in turn, in a rotating order, so a machine whose speed drifts over the run does not favour one of them.
Throughput is output MB (native dtype) per second and pixel-dates (pixels x items) per second; ``ratio =
loader_mb_s / rasterio_mb_s`` and ``odc_stac_ratio = odc_stac_mb_s / rasterio_mb_s``. Correctness: the
loader's pixels must equal odc-stac's (same nodata pixels, values at most 1 DN apart: GDAL's rounding),
or the bench fails. Also times the whole :func:`load_cube` (S2 + S1 processing) for reference.

``stac_requests_per_unit`` counts catalog requests, not time: the region's catalog is served by a local
STAC API (:class:`embedder.testing.stac_api.LocalStacApi`, with the sort extension like Planetary
Computer) and several work units of the region are read as the embedding job reads them
(``ray_jobs.embed.read_unit``: :func:`open_catalog` on the URL, then :func:`load_cube` over 366 days
plus :func:`embedder.inference.temporal_halo_days` on each side, S2 and S1 searches). It is every request
the server answered (landing page included: one per worker process, the catalog being cached) divided
by the units read; ``stac_requests_per_unit_month_windows`` is the same against an API without the sort
extension (one search per calendar month). Prints the figures and the targets (``ratio`` >= 0.8,
``stac_requests_per_unit`` <= 4) and writes flat JSON to ``bench/results/load.json`` (``--out``).

Run: ``.venv/bin/python bench/load.py [--size-px 256] [--days 60] [--units 8 --unit-px 128]``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from embedder.config import CubeConfig, SampleRegionConfig
from embedder.data.cubes import load_cube, read_items
from embedder.data.stac import clear_catalog_cache, open_catalog
from embedder.grid import region_from_text, work_units
from embedder.inference import temporal_halo_days
from embedder.sample import SampleRegion, write_sample_region
from embedder.sensors import S2
from embedder.testing.stac_api import LocalStacApi

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/, for _common (also when imported)
from _common import cpu, report, rotating_best

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


ONE_THREAD = CubeConfig(read_threads=1)


def loader_read(items: list[pystac.Item], geobox: GeoBox, *, direct: bool) -> dict[str, np.ndarray]:
    return read_items(items, geobox, S2, ONE_THREAD, direct=direct)


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays.values()))


def check_same_pixels(loader: dict[str, np.ndarray], odc: dict[str, np.ndarray]) -> int:
    """The largest DN difference between the loader's and odc-stac's arrays; raises unless they agree."""
    worst = 0
    for asset, a in loader.items():
        b = odc[asset]
        if not np.array_equal(a == S2.nodata, b == S2.nodata):
            raise RuntimeError(f"{asset}: the loader and odc-stac disagree on which pixels are nodata")
        worst = max(worst, int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max()))
    if worst > 1:
        raise RuntimeError(f"the loader's pixels differ from odc-stac's by up to {worst} DN (allowed: 1)")
    return worst


def rasterio_read(items: list[pystac.Item], geobox: GeoBox, assets: list[str]) -> int:
    h, w = geobox.shape.yx
    left, bottom, right, top = geobox.boundingbox
    nbytes = 0
    for item in items:
        for key in assets:
            with rasterio.open(item.assets[key].href) as src:
                window = from_bounds(left, bottom, right, top, transform=src.transform)
                resampling = Resampling.nearest if key == "SCL" else Resampling[S2.resampling]
                arr = src.read(1, window=window, out_shape=(h, w), resampling=resampling, boundless=False)
                nbytes += np.asarray(arr, dtype=S2.dtype).nbytes
    return nbytes


def best_times(fns: dict[str, Callable[[], int]], repeats: int) -> dict[str, tuple[float, int]]:
    """Best seconds and the byte count of each reader over ``repeats`` rounds, alternated.

    Round ``r`` starts with the ``r``-th reader (a rotating order, ``_common.rotating_best``): the
    baseline is timed beside the others all through the run rather than before or after them.
    """

    def timed(fn: Callable[[], int]) -> Callable[[], tuple[int, float]]:
        def run() -> tuple[int, float]:
            t0 = time.perf_counter()
            return fn(), time.perf_counter() - t0

        return run

    best, sizes = rotating_best({name: timed(fn) for name, fn in fns.items()}, repeats)
    return {name: (best[name], sizes[name]) for name in fns}


def stac_requests_per_unit(
    region: SampleRegion, *, sort: bool = True, tile_px: int = 128, max_units: int = 8
) -> dict[str, Any]:
    """Read up to ``max_units`` work units of ``region`` through a local STAC API; count its requests.

    Units are the embedding job's (``tile_px`` tiles over the region, 366-day store periods); each is read
    by ``ray_jobs.embed.read_unit`` as in a fresh worker process (the catalog cache is cleared first, so
    the landing page is counted once). A unit whose read fails raises: its requests would mean nothing.
    Returns ``stac_requests_per_unit`` (all requests / units), the units, the counts by kind and the
    units' statuses (``empty`` is fine: its searches were made).
    """
    from embedder.config import load_config
    from ray_jobs.config import EmbedJobConfig
    from ray_jobs.embed import read_unit

    units = work_units(region_from_text(str(region.manifest_path)), region.start, region.end, tile_px=tile_px)
    units = units[:max_units]
    statuses: collections.Counter[str] = collections.Counter()
    with LocalStacApi.from_catalog(region.catalog_path, sort=sort) as api:
        doc = {"catalog": api.url, "store": "unused", "region": str(region.manifest_path),
               "start": region.start.isoformat(), "end": region.end.isoformat(), "checkpoint": "unused"}  # fmt: skip
        cfg = load_config(EmbedJobConfig, doc)
        clear_catalog_cache()
        try:
            for unit in units:
                row = read_unit(unit.to_row(), cfg=cfg)
                if row["status"] == "failed":
                    raise RuntimeError(f"unit {unit.id} could not be read: {row['reason']}")
                statuses[row["status"]] += 1
        finally:
            clear_catalog_cache()
        counts = dict(api.counts)
        total = api.total_requests
    return {
        "stac_requests_per_unit": round(total / len(units), 2),
        "units": len(units),
        "unit_read_days": 366 + 2 * temporal_halo_days(),
        "requests": counts,
        "statuses": dict(statuses),
    }


def targets(result: dict[str, Any]) -> dict[str, bool]:
    """Issue 19's loading targets."""
    return {
        "ratio >= 0.8": result["ratio"] >= 0.8,
        "stac_requests_per_unit <= 4": result["stac_requests_per_unit"] <= 4,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (``argv``: the command-line arguments); returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=256, help="scene width/height, 10 m pixels")
    parser.add_argument("--days", type=int, default=60, help="length of the period")
    parser.add_argument("--repeats", type=int, default=6, help="timing rounds (best of)")
    parser.add_argument("--units", type=int, default=8, help="work units read for the request count")
    parser.add_argument("--unit-px", type=int, default=128, help="side of those work units (px)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    warnings.filterwarnings("ignore", category=rasterio.errors.NotGeoreferencedWarning)

    base = SampleRegionConfig()
    start = dt.date(2022, 4, 1)
    cfg = dataclasses.replace(
        base,
        scenes=base.scenes[:1],
        size_px=args.size_px,
        start=start,
        end=start + dt.timedelta(days=args.days - 1),
    )
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        t0 = time.perf_counter()
        region = write_sample_region(Path(tmp) / "region", cfg=cfg)
        write_s = time.perf_counter() - t0
        scene = region.scenes[0]
        geobox = GeoBox((scene.size_px, scene.size_px), Affine(*scene.transform), scene.crs)
        catalog = open_catalog(region.catalog_path)
        items = list(
            catalog.search(S2.collection, bbox=scene.bbox_lonlat, start=region.start, end=region.end)
        )
        assets = [*S2.assets, "SCL"]

        max_dn_diff = check_same_pixels(
            loader_read(items, geobox, direct=True), loader_read(items, geobox, direct=False)
        )
        timed = best_times(
            {
                "loader": lambda: nbytes(loader_read(items, geobox, direct=True)),
                "odc_stac": lambda: nbytes(loader_read(items, geobox, direct=False)),
                "rasterio": lambda: rasterio_read(items, geobox, assets),
            },
            args.repeats,
        )
        (loader_s, loader_bytes), (odc_s, odc_bytes) = timed["loader"], timed["odc_stac"]
        rio_s, rio_bytes = timed["rasterio"]
        if not loader_bytes == odc_bytes == rio_bytes:
            raise RuntimeError(
                f"the readers produced different sizes: {loader_bytes}, {odc_bytes}, {rio_bytes} bytes"
            )
        t0 = time.perf_counter()
        load_cube(catalog, geobox, region.start, region.end)  # once, for reference
        cube_s = time.perf_counter() - t0
        units = {"tile_px": args.unit_px, "max_units": args.units}
        requests = stac_requests_per_unit(region, **units)
        requests_months = stac_requests_per_unit(region, sort=False, **units)

    pixel_dates = scene.size_px * scene.size_px * len(items)
    result = {
        "loader_mb_s": round(loader_bytes / loader_s / 1e6, 2),
        "odc_stac_mb_s": round(odc_bytes / odc_s / 1e6, 2),
        "rasterio_mb_s": round(rio_bytes / rio_s / 1e6, 2),
        "ratio": round((loader_bytes / loader_s) / (rio_bytes / rio_s), 3),
        "odc_stac_ratio": round((odc_bytes / odc_s) / (rio_bytes / rio_s), 3),
        "loader_vs_odc_max_dn_diff": max_dn_diff,
        "loader_pixel_dates_s": round(pixel_dates / loader_s),
        "odc_stac_pixel_dates_s": round(pixel_dates / odc_s),
        "rasterio_pixel_dates_s": round(pixel_dates / rio_s),
        "load_cube_pixel_dates_s": round(pixel_dates / cube_s),
        "load_cube_s": round(cube_s, 3),
        "loader_s": round(loader_s, 3),
        "odc_stac_s": round(odc_s, 3),
        "rasterio_s": round(rio_s, 3),
        "output_mb": round(odc_bytes / 1e6, 2),
        "size_px": scene.size_px,
        "n_items": len(items),
        "n_assets": len(assets),
        "threads": 1,
        "repeats": args.repeats,
        "write_region_s": round(write_s, 1),
        "stac_requests_per_unit": requests["stac_requests_per_unit"],
        "stac_requests_per_unit_month_windows": requests_months["stac_requests_per_unit"],
        "stac_units": requests["units"],
        "stac_unit_read_days": requests["unit_read_days"],
        "load_average_1min_start": load_start,
        **cpu(),
    }
    report(result, args.out, targets=targets(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
