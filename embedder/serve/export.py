"""Export of a store region to GeoTIFF, NetCDF or Zarr, strip by strip."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from embedder.grid import PIXEL_M
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.parse import (
    NoDataError,
    ServeError,
)
from embedder.serve.query import (
    iter_region_strips,
    read_region,
)
from embedder.serve.reader import (
    StoreReader,
    as_reader,
    region_window,
)

__all__ = [
    "export_region",
]


def export_region(
    store: StoreReader | str,
    bbox: Any,
    dest: str | Path,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    fmt: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Write a region to GeoTIFF (``.tif``), NetCDF (``.nc``) or Zarr (``.zarr``), strip by strip.

    GeoTIFF: one float32 band per (date or window, feature), described ``"<date>/f<i>"``, NaN nodata.
    Zarr: the :func:`read_region` Dataset, appended strip by strip. NetCDF holds the whole extract
    (so it obeys the in-memory size limit). ``fmt`` overrides the format guessed from the suffix.
    """
    r = as_reader(store, storage_options)
    dest = Path(dest)
    kind = fmt or {".tif": "geotiff", ".tiff": "geotiff", ".nc": "netcdf", ".zarr": "zarr"}.get(
        dest.suffix.lower()
    )
    if kind not in ("geotiff", "netcdf", "zarr"):
        raise ServeError(f"cannot tell the export format of {str(dest)!r}: use .tif, .nc or .zarr (or fmt=)")
    if not dest.parent.is_dir():
        raise ServeError(
            f"the folder {str(dest.parent)!r} of the export {str(dest)!r} does not exist; create it first "
            f"(mkdir -p {dest.parent})"
        )
    kw = {"start": start, "end": end, "window": window, "reduce": reduce}
    # All or nothing: written under a temporary name beside dest, renamed when complete.
    part = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        if kind == "netcdf":
            ds = read_region(r, bbox, **kw)
            _netcdf_ready(ds).to_netcdf(part, engine="scipy")
        elif kind == "zarr":
            for i, strip in enumerate(iter_region_strips(r, bbox, **kw)):
                strip = _netcdf_ready(strip)
                if i == 0:
                    strip.to_zarr(part, mode="w", consolidated=False, zarr_format=3)
                else:
                    strip.drop_vars(["time", "x", "spatial_ref", "time_end"], errors="ignore").to_zarr(
                        part, append_dim="y", consolidated=False, zarr_format=3
                    )
        else:
            _write_geotiff(iter_region_strips(r, bbox, **kw), r, bbox, part)
        if dest.is_dir():
            shutil.rmtree(dest)  # an earlier zarr export of the same name
        os.replace(part, dest)
    finally:
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
        elif part.exists():
            part.unlink()
    return dest


def _netcdf_ready(ds: Any) -> Any:
    """Drop attrs NetCDF-3 cannot hold and make the flag/count dtypes signed-safe."""
    out = ds.copy()
    for name in ("flags", "count"):
        if name in out:
            out[name] = out[name].astype(np.int16)
    return out


def _write_geotiff(strips: Iterator[Any], r: StoreReader, bbox: Any, dest: Path) -> Path:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    first = next(strips)
    reg = region_window(r, bbox)
    h, w = reg.ys.stop - reg.ys.start, reg.xs.stop - reg.xs.start
    times = [str(t)[:10] for t in first["time"].values]
    count = len(times) * EMBEDDING_DIM
    if count == 0:
        raise NoDataError(f"no valid date in bbox {bbox!r} for the period: nothing to export")
    zi = reg.zone
    transform = from_origin(zi.x0 + reg.xs.start * PIXEL_M, zi.y0 - reg.ys.start * PIXEL_M, PIXEL_M, PIXEL_M)
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": count, "dtype": "float32", "nodata": float("nan"),
        "crs": f"EPSG:{zi.zone.epsg}", "transform": transform, "tiled": True, "blockxsize": 256,
        "blockysize": 256, "compress": "deflate", "predictor": 3, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    if w < 256 or h < 256:
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    row = 0
    with rasterio.open(dest, "w", **profile) as dst:
        for i, t in enumerate(times):
            for f in range(EMBEDDING_DIM):
                dst.set_band_description(i * EMBEDDING_DIM + f + 1, f"{t}/f{f}")
        for strip in [first, *strips]:
            emb = strip["embedding"].values  # [T, 7, h_s, w]
            hs = emb.shape[2]
            dst.write(emb.reshape(count, hs, w), window=Window(0, row, w, hs))
            row += hs
        dst.update_tags(window=first.attrs["window"], reduce=first.attrs["reduce"])
    return dest
