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
    RegionTooLargeError,
    ServeError,
)
from embedder.serve.query import (
    human_size,
    plan_strips,
    read_region,
    region_plan,
    region_strips,
    unique_errors,
    warn_partial,
)
from embedder.serve.reader import (
    RegionWindow,
    StoreReader,
    as_reader,
)
from embedder.store import CorruptChunkError

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
    max_gib: float | None = None,
    max_mib: float | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Write a region to GeoTIFF (``.tif``), NetCDF (``.nc``) or Zarr (``.zarr``), strip by strip.

    GeoTIFF: one float32 band per (date or window, feature), described ``"<date>/f<i>"``, NaN nodata.
    Zarr: the :func:`read_region` Dataset, appended strip by strip. NetCDF holds the whole extract
    (so it obeys the in-memory size limits). ``fmt`` overrides the format guessed from the suffix.

    Before any chunk is read, an export over ``max_gib`` GiB of float32 values (default
    ``ServeConfig.max_export_gib``), or whose single row of pixels needs more than ``max_mib`` MiB of
    memory (default ``ServeConfig.max_request_mib``), raises :class:`RegionTooLargeError`. Damaged chunks
    are written as NaN and listed in the file's ``unreadable`` metadata (attribute or GeoTIFF tag, with
    ``partial`` = 1), and a :class:`~embedder.serve.query.PartialResultWarning` is issued.
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
    reg, days, bins = region_plan(r, bbox, start, end, window, reduce, limit_px=None)
    h, w = reg.ys.stop - reg.ys.start, reg.xs.stop - reg.xs.start
    n_out = len(days) if bins is None else len(bins)
    out_bytes = n_out * EMBEDDING_DIM * h * w * 4
    limit = (max_gib or r.cfg.max_export_gib) * 2**30
    if out_bytes > limit:
        raise RegionTooLargeError(
            f"the export ({n_out} dates/windows x {EMBEDDING_DIM} x {h} x {w} px, float32) would be "
            f"{human_size(out_bytes)}, over the limit of {human_size(limit)} (ServeConfig.max_export_gib; "
            "`embedder export --max-gib`); split the bbox or the period, or use a window"
        )
    rows = plan_strips(r, reg, days, bins, max_mib=max_mib)
    lost: list[CorruptChunkError] = []
    # All or nothing: written under a temporary name beside dest, renamed when complete.
    part = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    try:
        if kind == "netcdf":  # read whole (warns itself when partial)
            ds = read_region(r, bbox, max_mib=max_mib, **kw)
            _netcdf_ready(ds).to_netcdf(part, engine="scipy")
        else:
            strips = region_strips(r, reg, days, bins, window=window, reduce=reduce, strip_px=rows, lost=lost)
            if kind == "zarr":
                for i, strip in enumerate(strips):
                    strip = _netcdf_ready(strip.drop_vars("unreadable", errors="ignore"))
                    if i == 0:
                        strip.to_zarr(part, mode="w", consolidated=False, zarr_format=3)
                    else:
                        strip.drop_vars(["time", "x", "spatial_ref", "time_end"], errors="ignore").to_zarr(
                            part, append_dim="y", consolidated=False, zarr_format=3
                        )
                if lost:
                    import zarr

                    g = zarr.open_group(str(part), mode="r+", zarr_format=3)
                    g.attrs.update({"partial": 1, "unreadable": [e.short() for e in unique_errors(lost)]})
            else:
                _write_geotiff(strips, reg, bbox, part, lost)
        if dest.is_dir():
            shutil.rmtree(dest)  # an earlier zarr export of the same name
        os.replace(part, dest)
    finally:
        if part.is_dir():
            shutil.rmtree(part, ignore_errors=True)
        elif part.exists():
            part.unlink()
    warn_partial(f"export {str(dest)!r}", unique_errors(lost))
    return dest


def _netcdf_ready(ds: Any) -> Any:
    """Drop attrs NetCDF-3 cannot hold and make the flag/count dtypes signed-safe."""
    out = ds.copy()
    for name in ("flags", "count", "unreadable"):
        if name in out:
            out[name] = out[name].astype(np.int16)
    if isinstance(out.attrs.get("unreadable"), list):  # NetCDF attributes hold no lists
        out.attrs["unreadable"] = "; ".join(out.attrs["unreadable"])
    return out


def _write_geotiff(
    strips: Iterator[Any], reg: RegionWindow, bbox: Any, dest: Path, lost: list[CorruptChunkError]
) -> Path:
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    first = next(strips)
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
        if lost:
            dst.update_tags(partial="1", unreadable="; ".join(e.short() for e in unique_errors(lost)))
    return dest
