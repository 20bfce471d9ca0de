"""Direct reads of COGs whose pixels line up with the output grid: no warp, no reprojection machinery.

Sentinel-2 L2A and Sentinel-1 RTC assets share the UTM grid of their MGRS tile: a 10 m band is the cube's
10 m grid shifted by whole pixels, and a 20 m band is that grid with every source pixel covering 2 x 2
output pixels. For such an asset the cube needs a windowed read (10 m) or a windowed read of the native
20 m pixels and a 2x upsample (20 m), nothing else. odc-stac treats every asset that is not pixel-for-pixel
on the output grid as a warp (GDAL's warper per asset) and adds about 1 ms of planning per asset read;
``bench/load.py`` measured it at 0.46 of raw rasterio on the same files. This module is kept hand-written on
purpose for that aligned case only; anything else (another UTM zone, a rotated or non-integer grid, another
resampling) is left to odc-stac by :func:`read_aligned` returning those items.

Resampling matches GDAL's warper onto the same grid: ``nearest`` takes the source pixel under each output
pixel centre; ``bilinear`` interpolates between the four source pixel centres around it, ignoring source
nodata (and pixels outside the source) by renormalising the weights of the valid ones (nodata where they
carry less than half of the weight), and rounds half up for integer data. Tests check the result against odc-stac's own load.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pystac
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.crs import CRS
from rasterio.windows import Window

__all__ = ["GridFit", "grid_fit", "read_aligned", "upsample"]

_TOL = 1e-6
"""Relative tolerance (of an output pixel) for a grid offset or scale to count as whole."""

RESAMPLINGS = ("nearest", "bilinear")
"""Resampling modes the direct read reproduces exactly; any other goes to odc-stac."""


@dataclass(frozen=True)
class GridFit:
    """How an output grid sits on a source grid of the same CRS.

    Output pixel ``(row, col)`` lies inside source pixel ``((row0 + row) // factor, (col0 + col) // factor)``.
    """

    factor: int
    """Source pixel size over output pixel size (1 for 10 m onto 10 m, 2 for 20 m)."""
    row0: int
    """Output grid's first row, in output pixels below the source grid's top edge (may be negative)."""
    col0: int
    """Output grid's first column, in output pixels right of the source grid's left edge (may be negative)."""


def _whole(x: float) -> int | None:
    r = round(x)
    return int(r) if abs(x - r) <= _TOL * max(1.0, abs(x)) else None


def grid_fit(src_transform: Affine, dst_transform: Affine) -> GridFit | None:
    """The :class:`GridFit` of ``dst_transform`` on ``src_transform`` (same CRS assumed), or None.

    None unless both are north-up with no rotation, the source pixel is a whole multiple of the output
    pixel on both axes, and the output grid's origin falls on an output-pixel boundary of the subdivided
    source grid.
    """
    s, d = src_transform, dst_transform
    if s.b or s.d or d.b or d.d or s.a <= 0 or d.a <= 0 or s.e >= 0 or d.e >= 0:
        return None
    factor = _whole(s.a / d.a)
    if factor is None or factor < 1 or _whole(s.e / d.e) != factor:
        return None
    col0 = _whole((d.c - s.c) / d.a)
    row0 = _whole((d.f - s.f) / d.e)
    if col0 is None or row0 is None:
        return None
    return GridFit(factor, row0, col0)


def _axis(n_out: int, start: int, factor: int, bilinear: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Source indices and weights along one axis: ``(i0 [n_out], w [n_out], lo, hi)``.

    Output pixel ``j`` takes ``(1 - w) * src[i0] + w * src[i0 + 1]`` (nearest: ``w = 0``); ``lo..hi`` is
    the source index range needed (``hi`` exclusive), before clipping to the source's extent.
    """
    centre = (start + np.arange(n_out) + 0.5) / factor  # output pixel centres in source pixel units
    if not bilinear or factor == 1:
        i0 = np.floor(centre).astype(np.int64)
        return i0, np.zeros(n_out), int(i0[0]), int(i0[-1]) + 1
    u = centre - 0.5  # relative to source pixel centres
    i0 = np.floor(u).astype(np.int64)
    return i0, u - i0, int(i0[0]), int(i0[-1]) + 2


def upsample(
    block: np.ndarray,
    valid: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray],
    cols: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Separable nodata-aware interpolation of ``block [h, w]`` at ``rows``/``cols`` ``(i0, w)`` pairs.

    Indices are relative to ``block``. Returns ``(values [H, W] float64, ok [H, W] bool)``: each value is the
    weighted mean of the valid source pixels around it (weights renormalised); ``ok`` is False where the
    valid ones carry less than half of the weight (GDAL's warper leaves those pixels nodata).
    """
    (r0, wr), (c0, wc) = rows, cols
    m = valid.astype(np.float64)
    v = np.where(valid, block, 0).astype(np.float64)

    def along(a: np.ndarray, i0: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
        lo = np.take(a, i0, axis=axis)
        if not w.any():
            return lo
        hi = np.take(a, np.minimum(i0 + 1, a.shape[axis] - 1), axis=axis)
        shape = (-1, 1) if axis == 0 else (1, -1)
        return lo * (1 - w).reshape(shape) + hi * w.reshape(shape)

    num = along(along(v, r0, wr, 0), c0, wc, 1)
    den = along(along(m, r0, wr, 0), c0, wc, 1)
    ok = den >= 0.5 - _TOL  # GDAL's warper: nodata unless valid neighbours carry half the weight
    return np.divide(num, den, out=np.zeros_like(num), where=ok), ok


def _read_one(
    src: rasterio.DatasetReader, fit: GridFit, out: np.ndarray, nodata: float, bilinear: bool
) -> None:
    """Fill ``out [H, W]`` from band 1 of ``src`` placed by ``fit``."""
    h, w = out.shape
    r0, wr, rlo, rhi = _axis(h, fit.row0, fit.factor, bilinear)
    c0, wc, clo, chi = _axis(w, fit.col0, fit.factor, bilinear)
    # the needed source window, clipped to the source
    a_lo, a_hi = max(rlo, 0), min(rhi, src.height)
    b_lo, b_hi = max(clo, 0), min(chi, src.width)
    if a_lo >= a_hi or b_lo >= b_hi:  # no overlap
        out.fill(nodata)
        return
    window = Window(b_lo, a_lo, b_hi - b_lo, a_hi - a_lo)
    if fit.factor == 1 and (a_lo, a_hi, b_lo, b_hi) == (rlo, rhi, clo, chi):
        src.read(1, window=window, out=out)  # the common case: one windowed read straight into place
        return
    data = src.read(1, window=window)
    block = np.full((rhi - rlo, chi - clo), nodata, dtype=data.dtype)
    block[a_lo - rlo : a_hi - rlo, b_lo - clo : b_hi - clo] = data
    if fit.factor == 1:  # a shift: the block is the output, padded with nodata where the source ends
        out[...] = block
        return
    if not bilinear:
        out[...] = block[np.ix_(r0 - rlo, c0 - clo)]
        return
    valid = block != nodata if not math.isnan(nodata) else ~np.isnan(block)
    values, ok = upsample(block, valid, (r0 - rlo, wr), (c0 - clo, wc))
    if np.issubdtype(out.dtype, np.integer):
        values = np.floor(values + 0.5)  # GDAL rounds half up
    out[...] = np.where(ok, values, nodata).astype(out.dtype)


def read_aligned(
    items: Sequence[pystac.Item],
    assets: Sequence[str],
    geobox: GeoBox,
    out: dict[str, np.ndarray],
    *,
    nodata: float,
    resampling: Callable[[str], str],
    threads: int = 1,
    on_error: Callable[[pystac.Item, str, Exception], Exception],
) -> list[int]:
    """Read every asset of ``items`` whose grid lines up with ``geobox`` into ``out[asset][item_index]``.

    ``out`` holds one ``[n_items, H, W]`` array per asset; ``resampling(asset)`` names the asset's
    resampling. Returns the indices of the items that could not be read directly (another CRS, an
    unaligned grid, an unsupported resampling): the caller loads those with odc-stac. A read error is
    raised as ``on_error(item, asset, err)``.
    """
    dst_crs = CRS.from_wkt(geobox.crs.wkt) if geobox.crs is not None else None
    if dst_crs is None:
        return list(range(len(items)))
    h, w = geobox.shape.yx
    dst_transform = geobox.transform
    for asset in assets:
        if out[asset].shape != (len(items), h, w):
            raise ValueError(f"out[{asset!r}] has shape {out[asset].shape}, expected {(len(items), h, w)}")

    def item_task(i: int) -> bool:
        with rasterio.Env(
            GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"
        ):  # per thread: GDAL options are thread-local
            return read_item(i)

    def read_item(i: int) -> bool:
        item = items[i]
        for asset in assets:
            mode = resampling(asset)
            if mode not in RESAMPLINGS:
                return False
            href = item.assets[asset].href
            try:
                with rasterio.open(href) as src:
                    if src.crs != dst_crs:
                        return False
                    fit = grid_fit(src.transform, dst_transform)
                    if fit is None:
                        return False
                    _read_one(src, fit, out[asset][i], nodata, mode == "bilinear")
            except rasterio.errors.RasterioError as err:
                raise on_error(item, asset, err) from err
        return True

    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(threads) as pool:
            done = list(pool.map(item_task, range(len(items))))
    else:
        done = [item_task(i) for i in range(len(items))]
    return [i for i, ok in enumerate(done) if not ok]
