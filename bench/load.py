"""Cube-loading throughput: odc-stac vs a plain rasterio windowed read of the same COGs.

Writes a sample region (one scene, larger than the test one) into a temporary folder, then reads all
Sentinel-2 items (10 bands + SCL) of the scene onto its 10 m grid twice:

* ``odc.stac.load(items, groupby="id", geobox=...)`` (what :func:`embedder.data.cubes.load_cube` uses);
* per item and asset, ``rasterio.open(href).read(1, window=..., out_shape=(H, W))`` with the same
  resampling (bilinear, SCL nearest), i.e. the same output arrays with no reprojection machinery.

Both single-threaded, best of ``--repeats`` (warm page cache). Throughput is output MB (native dtype)
per second and pixel-dates (pixels x items) per second; ``ratio = odc_stac_mb_s / rasterio_mb_s``.
Also times the whole :func:`load_cube` (S2 + S1 processing) for reference. Prints the figures and
writes flat JSON to ``bench/results/load.json``.

Run: ``.venv/bin/python bench/load.py [--size-px 256] [--days 60]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import odc.stac
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from embedder.config import SampleRegionConfig
from embedder.data.cubes import load_cube
from embedder.data.stac import open_catalog
from embedder.sample import write_sample_region
from embedder.sensors import S2

RESULTS = Path(__file__).resolve().parent / "results" / "load.json"


def odc_read(items: list[pystac.Item], geobox: GeoBox, assets: list[str]) -> int:
    ds = odc.stac.load(
        items,
        bands=assets,
        geobox=geobox,
        groupby="id",
        preserve_original_order=True,
        resampling={"*": S2.resampling, "SCL": "nearest"},
        stac_cfg={S2.collection: {"assets": {"*": {"data_type": S2.dtype, "nodata": S2.nodata}}}},
        pool=1,
        chunks=None,
    )
    return int(sum(ds[a].nbytes for a in assets))


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


def best_time(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    times, nbytes = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        nbytes = fn()
        times.append(time.perf_counter() - t0)
    return min(times), nbytes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-px", type=int, default=256, help="scene width/height, 10 m pixels")
    parser.add_argument("--days", type=int, default=60, help="length of the period")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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

        odc_s, odc_bytes = best_time(lambda: odc_read(items, geobox, assets), args.repeats)
        rio_s, rio_bytes = best_time(lambda: rasterio_read(items, geobox, assets), args.repeats)
        if odc_bytes != rio_bytes:
            raise RuntimeError(f"the two readers produced different sizes: {odc_bytes} vs {rio_bytes} bytes")
        cube_s, _ = best_time(lambda: load_cube(catalog, geobox, region.start, region.end).sizes["time"], 1)

    pixel_dates = scene.size_px * scene.size_px * len(items)
    result = {
        "odc_stac_mb_s": round(odc_bytes / odc_s / 1e6, 2),
        "rasterio_mb_s": round(rio_bytes / rio_s / 1e6, 2),
        "ratio": round((odc_bytes / odc_s) / (rio_bytes / rio_s), 3),
        "odc_stac_pixel_dates_s": round(pixel_dates / odc_s),
        "rasterio_pixel_dates_s": round(pixel_dates / rio_s),
        "load_cube_pixel_dates_s": round(pixel_dates / cube_s),
        "load_cube_s": round(cube_s, 3),
        "odc_stac_s": round(odc_s, 3),
        "rasterio_s": round(rio_s, 3),
        "output_mb": round(odc_bytes / 1e6, 2),
        "size_px": scene.size_px,
        "n_items": len(items),
        "n_assets": len(assets),
        "threads": 1,
        "write_region_s": round(write_s, 1),
    }
    for key, value in result.items():
        print(f"{key:26s} {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
