"""S1 + S2 cubes: search, odc-stac load onto one UTM 10 m grid, scale, mask and align in time.

:func:`load_cube` returns the Dataset described in docs/design.md ("Cube"):

* Sentinel-2: every item is read onto the caller's GeoBox (items in other UTM zones are reprojected by
  odc-stac), DN -> reflectance with the item's own processing baseline (:func:`~embedder.data.stac.
  s2_scale_offset`, so one cube may mix baselines), DN 0 and the SCL classes of ``sensors.S2.mask_classes``
  (SCL resampled nearest) -> NaN, clip to [0, 1]. Items of the same solar day (orbit overlaps) are merged,
  first valid value wins (items in time order). One ``time`` entry per solar day: the time of its first item.
* Sentinel-1 RTC: read over the period plus ``cfg.s1_margin_days`` on each side; slices of the same pass
  (solar day, orbit direction, relative orbit) merged; acquisitions with no valid pixel dropped; then on
  S1's own time axis (ascending and descending mixed): centred rolling mean over 3 acquisitions in linear
  power with at least one valid, ``10 * log10``, clip to [-30, 5] dB, ``(dB + 30) / 35``.
* Alignment: each S2 date takes the nearest-in-time processed S1 acquisition; the gap in days is recorded,
  and matches beyond ``cfg.s1_max_gap_days`` are dropped (NaN, NaT).

Fallbacks and errors: no S2 item -> :class:`~embedder.data.stac.EmptySearchError`; no usable S2 date ->
:class:`EmptyCubeError` (callers skip the cube, never fill zeros); no S1 item or no valid S1 pixel -> all S1
variables NaN with ``attrs["s1_missing"] = True`` (the cube is still usable for S2-only work); a Sentinel-1
GRD item -> :class:`~embedder.data.stac.NoMapGridError`; an unreadable COG -> :class:`CorruptAssetError`
naming the href.

:func:`cube_from_cropharvest` builds the same layout from the real CropHarvest S1+S2 GeoTIFF export.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from embedder.config import ConfigError, CubeConfig
from embedder.data.gridread import read_aligned
from embedder.data.stac import (
    BBoxError,
    Catalog,
    CatalogError,
    EmptySearchError,
    check_bbox,
    check_item,
    check_period,
    item_time,
    open_catalog,
    s2_scale_offset,
)
from embedder.geo import BBox, UtmZone, add_bbox_option, bbox_argv
from embedder.sensors import S1, S2, SensorSpec

__all__ = [
    "CloudMask",
    "CorruptAssetError",
    "CubeError",
    "CubeTooLargeError",
    "EmptyCubeError",
    "SclMask",
    "cli_main",
    "cube_from_cropharvest",
    "geobox_from_bbox",
    "load_cube",
    "read_items",
    "s1_to_unit",
]

log = logging.getLogger(__name__)

_NS_PER_DAY = 86_400 * 10**9


class CubeError(ValueError):
    """A cube cannot be built as asked."""


class EmptyCubeError(CubeError):
    """The cube has no usable Sentinel-2 date (fully clouded or no data); callers skip it with the reason."""


class CorruptAssetError(CubeError):
    """An asset cannot be read (corrupt or truncated COG); the message names the href and the item."""


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _naive_utc_ns(t: dt.datetime) -> np.datetime64:
    """An aware datetime as naive-UTC ``datetime64[ns]``."""
    return np.datetime64(t.astimezone(dt.UTC).replace(tzinfo=None), "ns")


def _item_lon(item: pystac.Item) -> float:
    if item.bbox:
        return (float(item.bbox[0]) + float(item.bbox[2])) / 2.0
    return 0.0


def _solar_day(item: pystac.Item) -> dt.date:
    """Local solar date of the acquisition (UTC time shifted by longitude / 15 hours), as odc-stac does."""
    return (item_time(item) + dt.timedelta(hours=_item_lon(item) / 15.0)).date()


def _group(items: list[pystac.Item], *, by_pass: bool) -> list[list[pystac.Item]]:
    """Group time-sorted items by solar day (S2) or by (solar day, orbit direction, relative orbit) (S1)."""
    groups: dict[tuple[Any, ...], list[pystac.Item]] = {}
    for item in items:
        key: tuple[Any, ...] = (_solar_day(item),)
        if by_pass:
            props = item.properties
            key += (props.get("sat:orbit_state"), props.get("sat:relative_orbit"))
        groups.setdefault(key, []).append(item)
    return sorted(groups.values(), key=lambda g: (item_time(g[0]), g[0].id))


def _stac_cfg(sensor: SensorSpec) -> dict[str, Any]:
    """odc-stac per-collection config: dtype and nodata of every asset from the sensor table."""
    return {sensor.collection: {"assets": {"*": {"data_type": sensor.dtype, "nodata": sensor.nodata}}}}


def _find_corrupt(items: Sequence[pystac.Item], assets: Sequence[str]) -> tuple[str, str] | None:
    """``(item id, href)`` of the first asset that rasterio cannot open and read, else None."""
    import rasterio
    from rasterio.windows import Window

    for item in items:
        for key in assets:
            href = item.assets[key].href
            try:
                with rasterio.open(href) as src:
                    src.read(1, window=Window(0, 0, min(16, src.width), min(16, src.height)))
                    if src.overviews(1):
                        src.read(1, out_shape=(1, 1))
            except Exception:
                return item.id, href
    return None


def _corrupt(item: pystac.Item, href: str, err: Exception) -> CorruptAssetError:
    return CorruptAssetError(
        f"cannot read asset {href!r} of item {item.id!r} ({type(err).__name__}: {err}); the COG is "
        "corrupt or truncated: re-download it, or remove the item from the catalog"
    )


def read_items(
    items: list[pystac.Item], geobox: GeoBox, sensor: SensorSpec, cfg: CubeConfig, *, direct: bool = True
) -> dict[str, np.ndarray]:
    """Read ``items`` onto ``geobox``: one slice per item, in the given order, native dtype, no scaling.

    Returns ``{asset: array [n_items, H, W]}`` for the sensor's band assets and its mask asset (resampled
    nearest). Items on the output grid's own UTM grid (every asset a whole-pixel shift or a whole-multiple
    coarsening of it) are read directly (:func:`embedder.data.gridread.read_aligned`, the same pixels as
    odc-stac's warp); the rest, or all with ``direct=False``, go through odc-stac. An unreadable asset
    raises :class:`CorruptAssetError`.
    """
    assets = list(sensor.assets) + ([sensor.mask_asset] if sensor.mask_asset else [])
    resampling: dict[str, str] = {"*": sensor.resampling}
    if sensor.mask_asset:
        resampling[sensor.mask_asset] = "nearest"  # class labels must never be interpolated
    if not direct:
        return _read_odc(items, geobox, sensor, assets, resampling, cfg)
    h, w = geobox.shape.yx
    out = {a: np.empty((len(items), h, w), dtype=sensor.dtype) for a in assets}
    rest = read_aligned(
        items,
        assets,
        geobox,
        out,
        nodata=sensor.nodata,
        resampling=lambda a: resampling.get(a, resampling["*"]),
        threads=cfg.read_threads,
        on_error=lambda item, asset, err: _corrupt(item, item.assets[asset].href, err),
    )
    if rest:
        warped = _read_odc([items[i] for i in rest], geobox, sensor, assets, resampling, cfg)
        for a in assets:
            out[a][rest] = warped[a]
    return out


def _read_odc(
    items: list[pystac.Item],
    geobox: GeoBox,
    sensor: SensorSpec,
    assets: list[str],
    resampling: dict[str, str],
    cfg: CubeConfig,
) -> dict[str, np.ndarray]:
    """odc-stac's load of ``items`` onto ``geobox`` (reprojecting), one slice per item, native dtype."""
    import odc.stac

    try:
        with warnings.catch_warnings():
            # rasterio's reproject of in-memory arrays (inside odc-loader) warns spuriously on every read.
            warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
            ds = odc.stac.load(
                items,
                bands=assets,
                geobox=geobox,
                groupby="id",
                preserve_original_order=True,
                resampling=resampling,
                stac_cfg=_stac_cfg(sensor),
                pool=cfg.read_threads,
                chunks=None,
            )
    except Exception as err:
        bad = _find_corrupt(items, assets)
        if bad is not None:
            item = next(it for it in items if it.id == bad[0])
            raise _corrupt(item, bad[1], err) from err
        raise
    if ds.sizes["time"] != len(items):  # pragma: no cover - groupby="id" gives one slice per item
        raise CubeError(f"odc-stac returned {ds.sizes['time']} slices for {len(items)} items")
    return {key: ds[key].values for key in assets}  # each [n_items, H, W]


# --------------------------------------------------------------------------------------------------
# Sentinel-2
# --------------------------------------------------------------------------------------------------


class CloudMask(Protocol):
    """The cloud-mask step (SPEC 2): which pixels of one S2 item are clear.

    The default is :class:`SclMask` (the L2A scene classification); a learned mask model (e.g. a
    CloudSEN12-style U-Net) plugs in by implementing this call and passing it to :func:`load_cube`.
    """

    def __call__(
        self, reflectance: np.ndarray, scl: np.ndarray | None, item: pystac.Item
    ) -> np.ndarray:  # pragma: no cover - protocol
        """``reflectance [C, H, W]`` float32 (scaled, unclipped), ``scl [H, W]`` or None -> clear ``[H, W]`` bool."""
        ...


@dataclass(frozen=True)
class SclMask:
    """Clear unless the SCL class is one of ``classes`` (default ``sensors.S2.mask_classes``)."""

    classes: tuple[int, ...] = S2.mask_classes
    """SCL classes that make a pixel invalid."""

    def __call__(self, reflectance: np.ndarray, scl: np.ndarray | None, item: pystac.Item) -> np.ndarray:
        """Clear pixels ``[H, W]``; without an SCL layer every pixel is clear."""
        if scl is None:
            return np.ones(reflectance.shape[1:], dtype=bool)
        return ~np.isin(scl, np.asarray(self.classes))


def _s2_dates(
    groups: list[list[pystac.Item]], geobox: GeoBox, cfg: CubeConfig, cloud_mask: CloudMask
) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance ``[T, C, H, W]`` float32 (NaN invalid) and times ``[T]`` for S2 solar-day groups."""
    clip_lo, clip_hi = S2.s2_scaling.clip if S2.s2_scaling else (0.0, 1.0)
    h, w = geobox.shape.yx
    out = np.full((len(groups), S2.n_channels, h, w), np.nan, dtype=np.float32)  # [T, C, H, W]
    times = np.array([_naive_utc_ns(item_time(g[0])) for g in groups], dtype="datetime64[ns]")
    for b0 in range(0, len(groups), cfg.dates_per_read):
        batch = groups[b0 : b0 + cfg.dates_per_read]
        items = [it for g in batch for it in g]
        raw = read_items(items, geobox, S2, cfg)
        dn = np.stack([raw[a] for a in S2.assets], axis=1)  # [n_items, C, H, W] uint16
        scl = raw[S2.mask_asset] if S2.mask_asset else None  # [n_items, H, W]
        k = 0
        for j, group in enumerate(batch):
            merged = out[b0 + j]  # [C, H, W] view, starts all NaN
            for item in group:
                scale, offset = s2_scale_offset(item)
                valid = dn[k] != S2.nodata  # [C, H, W]
                unclipped = dn[k].astype(np.float32) * np.float32(scale) + np.float32(offset)  # [C, H, W]
                valid &= cloud_mask(unclipped, None if scl is None else scl[k], item)[None]
                refl = np.clip(unclipped, clip_lo, clip_hi)
                fill = valid & np.isnan(merged)  # first valid value wins
                merged[fill] = refl[fill]
                k += 1
    return out, times


# --------------------------------------------------------------------------------------------------
# Sentinel-1
# --------------------------------------------------------------------------------------------------


def s1_to_unit(power: np.ndarray, *, time_axis: int = 0) -> np.ndarray:
    """S1 linear power (NaN invalid) -> the model's [0, 1] range, along ``time_axis`` (SPEC.md 2).

    Centred rolling mean over ``sensors.S1.s1_scaling.rolling_acquisitions`` acquisitions with at least
    one valid value, ``10 * log10``, clip to ``db_range``, ``(dB - low) / (high - low)``. Zero power
    clips to the low end; NaN stays NaN where the whole window is invalid.
    """
    rule = S1.s1_scaling
    if rule is None:  # pragma: no cover - the sensor table always defines it
        raise CubeError("sensors.S1 has no s1_scaling rule")
    x = np.moveaxis(np.asarray(power, dtype=np.float32), time_axis, 0)  # [T, ...]
    half = rule.rolling_acquisitions // 2
    total = np.zeros_like(x)
    count = np.zeros(x.shape, dtype=np.int32)
    n = x.shape[0]
    for shift in range(-half, rule.rolling_acquisitions - half):
        lo, hi = max(0, -shift), min(n, n - shift)  # target indices whose neighbour t+shift exists
        if lo >= hi:
            continue
        src = x[lo + shift : hi + shift]
        ok = np.isfinite(src)
        total[lo:hi] += np.where(ok, src, 0.0)
        count[lo:hi] += ok
    mean = np.full_like(x, np.nan)
    np.divide(total, count, out=mean, where=count > 0)  # linear power, NaN without any valid value
    low, high = rule.db_range
    db = np.full_like(x, np.nan)
    np.log10(mean, out=db, where=mean > 0)
    db *= 10.0
    db[(count > 0) & (mean <= 0)] = low  # zero power: the floor
    unit = (np.clip(db, low, high) - low) / (high - low)
    return np.moveaxis(unit.astype(np.float32), 0, time_axis)


def _s1_acquisitions(
    items: list[pystac.Item], geobox: GeoBox, cfg: CubeConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Merged S1 linear power ``[N, 2, H, W]`` (NaN invalid, empty acquisitions dropped) and times ``[N]``."""
    groups = _group(items, by_pass=True)
    h, w = geobox.shape.yx
    merged = np.full((len(groups), S1.n_channels, h, w), np.nan, dtype=np.float32)  # [N, 2, H, W]
    for b0 in range(0, len(groups), cfg.dates_per_read):
        batch = groups[b0 : b0 + cfg.dates_per_read]
        batch_items = [it for g in batch for it in g]
        raw = read_items(batch_items, geobox, S1, cfg)
        power = np.stack([raw[a] for a in S1.assets], axis=1).astype(np.float32)  # [n_items, 2, H, W]
        power[(power == np.float32(S1.nodata)) | (power < 0)] = np.nan
        k = 0
        for j, group in enumerate(batch):
            for _item in group:
                fill = np.isfinite(power[k]) & np.isnan(merged[b0 + j])  # first valid value wins
                merged[b0 + j][fill] = power[k][fill]
                k += 1
    times = np.array([_naive_utc_ns(item_time(g[0])) for g in groups], dtype="datetime64[ns]")
    keep = np.isfinite(merged).any(axis=(1, 2, 3))
    return merged[keep], times[keep]


# --------------------------------------------------------------------------------------------------
# The cube
# --------------------------------------------------------------------------------------------------


def _search_checked(
    catalog: Catalog, sensor: SensorSpec, bbox: tuple[float, float, float, float], start: Any, end: Any
) -> list[pystac.Item]:
    items = list(catalog.search(sensor.collection, bbox=bbox, start=start, end=end))
    for item in items:
        check_item(item, sensor)
    return sorted(items, key=lambda it: (item_time(it), it.id))


def _geobox_bbox(geobox: GeoBox) -> tuple[float, float, float, float]:
    if geobox.crs is None or geobox.crs.geographic:
        raise CubeError(
            f"geobox CRS {geobox.crs} is not projected; pass a UTM 10 m GeoBox (see geobox_from_bbox)"
        )
    bb = geobox.extent.to_crs("EPSG:4326").boundingbox
    return check_bbox((bb.left, bb.bottom, bb.right, bb.top))


def _valid_frac(s2: np.ndarray) -> np.ndarray:
    """Share of band x pixel values that are valid, per date: ``[T, C, H, W] -> [T]``."""
    per_date = s2.reshape(s2.shape[0], -1)
    return np.isfinite(per_date).mean(axis=1).astype(np.float32)


def _assemble(
    *,
    s2: np.ndarray,
    s2_time: np.ndarray,
    s1_proc: np.ndarray,
    s1_time: np.ndarray,
    s1_own_mask: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    max_gap_days: float | None,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Match S1 to S2 dates and build the Dataset of the design's cube table."""
    n_t = s2.shape[0]
    h, w = s2.shape[2:]
    s1 = np.full((n_t, S1.n_channels, h, w), np.nan, dtype=np.float32)  # [T, 2, H, W]
    matched_time = np.full(n_t, np.datetime64("NaT"), dtype="datetime64[ns]")
    gap_days = np.full(n_t, np.nan, dtype=np.float32)
    if s1_proc.shape[0]:
        diff = np.abs(s1_time[None, :].astype(np.int64) - s2_time[:, None].astype(np.int64))  # [T, N] ns
        nearest = diff.argmin(axis=1)
        gaps = diff[np.arange(n_t), nearest] / _NS_PER_DAY  # [T] days
        ok = np.ones(n_t, bool) if max_gap_days is None else gaps <= max_gap_days
        s1[ok] = s1_proc[nearest[ok]]
        matched_time[ok] = s1_time[nearest[ok]]
        gap_days[ok] = gaps[ok]
    valid_frac = _valid_frac(s2)
    band_s2, band_s1 = S2.band_dim, S1.band_dim
    return xr.Dataset(
        data_vars={
            "s2": (("time", band_s2, "y", "x"), s2),
            "s1": (("time", band_s1, "y", "x"), s1),
            "s1_time": ("time", matched_time),
            "s1_gap_days": ("time", gap_days),
            "s1_own": (("time_s1", band_s1, "y", "x"), s1_proc[s1_own_mask]),
            "s2_valid_frac": ("time", valid_frac),
            "s2_usable": ("time", valid_frac >= S2.min_valid_train),
        },
        coords={
            "time": s2_time,
            "time_s1": s1_time[s1_own_mask],
            band_s2: list(S2.bands),
            band_s1: list(S1.bands),
            "y": y,
            "x": x,
        },
        attrs=attrs,
    )


class CubeTooLargeError(CubeError):
    """The cube a load would allocate exceeds ``CubeConfig.max_gib``."""


def _check_size(geobox: GeoBox, n_s2: int, n_s1: int, period: str, cfg: CubeConfig) -> None:
    """Refuse, before reading, a cube whose float32 S2 and S1 arrays would exceed ``cfg.max_gib``."""
    h, w = geobox.shape.yx
    gib = 4 * h * w * (n_s2 * len(S2.bands) + n_s1 * len(S1.bands)) / 2**30
    if gib > cfg.max_gib:
        raise CubeTooLargeError(
            f"the cube of {h} x {w} px with {n_s2} S2 and {n_s1} S1 dates over {period} needs {gib:,.1f} GiB, "
            f"more than the limit of {cfg.max_gib:g} GiB (CubeConfig.max_gib); split the bbox into tiles "
            "(embedder plan) or shorten the period"
        )


def load_cube(
    catalog: Catalog,
    geobox: GeoBox,
    start: dt.date | dt.datetime | str,
    end: dt.date | dt.datetime | str,
    *,
    cfg: CubeConfig = CubeConfig(),  # noqa: B008 - frozen dataclass, safe as a default
    cloud_mask: CloudMask | None = None,
) -> xr.Dataset:
    """Load the S1+S2 cube of ``geobox`` (UTM 10 m, halo included) over [start, end] from ``catalog``.

    See the module docstring and docs/design.md for the layout. Raises
    :class:`~embedder.data.stac.EmptySearchError` when no S2 item intersects (names bbox and period),
    :class:`EmptyCubeError` when no S2 date passes ``sensors.S2.min_valid_train``,
    :class:`~embedder.data.stac.MissingAssetError` / :class:`~embedder.data.stac.NoMapGridError` for
    unusable items and :class:`CorruptAssetError` for unreadable COGs. ``cloud_mask`` replaces the
    default SCL rule (:class:`SclMask`) with another :class:`CloudMask`, e.g. a learned model.
    """
    bbox = _geobox_bbox(geobox)
    t0, t1 = check_period(start, end)
    period = f"{t0.date()}..{t1.date()}"

    s2_items = _search_checked(catalog, S2, bbox, t0, t1)
    if not s2_items:
        raise EmptySearchError(
            f"no {S2.collection} items in {catalog!r} for bbox {bbox} and period {period}; "
            "check the bbox (lon/lat order) and dates, or the catalog's coverage"
        )
    margin = dt.timedelta(days=cfg.s1_margin_days)
    s1_items = _search_checked(catalog, S1, bbox, t0 - margin, t1 + margin)
    groups = _group(s2_items, by_pass=False)
    _check_size(geobox, len(groups), len(_group(s1_items, by_pass=True)), period, cfg)
    s2, s2_time = _s2_dates(groups, geobox, cfg, cloud_mask or SclMask())  # [T, C, H, W], [T]
    valid_frac = _valid_frac(s2)
    if not (valid_frac >= S2.min_valid_train).any():
        raise EmptyCubeError(
            f"no usable S2 date for geobox {geobox.shape.yx} px at {tuple(geobox.transform.to_gdal())} "
            f"({geobox.crs}) over {period}: all {len(groups)} dates are cloud/no data (best valid share "
            f"{float(valid_frac.max()):.1%} < {S2.min_valid_train:.0%}); skip this cube"
        )

    h, w = geobox.shape.yx
    if s1_items:
        power, s1_time = _s1_acquisitions(s1_items, geobox, cfg)  # [N, 2, H, W], [N]
    else:
        power = np.zeros((0, S1.n_channels, h, w), dtype=np.float32)
        s1_time = np.zeros(0, dtype="datetime64[ns]")
    s1_missing = power.shape[0] == 0
    if s1_missing:
        log.warning(
            "no valid %s data for bbox %s over %s (+-%d days): S1 variables are all NaN (s1_missing=True)",
            S1.collection,
            bbox,
            period,
            cfg.s1_margin_days,
        )
    s1_proc = s1_to_unit(power)  # [N, 2, H, W] in [0, 1]
    own = (s1_time >= _naive_utc_ns(t0)) & (s1_time <= _naive_utc_ns(t1))

    coords = geobox.coordinates
    y_name, x_name = geobox.dimensions
    attrs: dict[str, Any] = {
        "crs": str(geobox.crs),
        "transform": list(geobox.transform.to_gdal()),
        "halo_px": cfg.halo_px,
        "start": t0.date().isoformat(),
        "end": t1.date().isoformat(),
        "s1_missing": bool(s1_missing),
        "s2_items": len(s2_items),
        "s1_items": len(s1_items),
        "bbox_lonlat": list(bbox),
    }
    return _assemble(
        s2=s2,
        s2_time=s2_time,
        s1_proc=s1_proc,
        s1_time=s1_time,
        s1_own_mask=own,
        y=np.asarray(coords[y_name].values, dtype=np.float64),
        x=np.asarray(coords[x_name].values, dtype=np.float64),
        max_gap_days=cfg.s1_max_gap_days,
        attrs=attrs,
    )


# --------------------------------------------------------------------------------------------------
# Grid helper and the real CropHarvest cube
# --------------------------------------------------------------------------------------------------


def geobox_from_bbox(bbox: BBox | Sequence[float], *, resolution_m: float = 10.0) -> GeoBox:
    """The UTM ``resolution_m`` GeoBox (zone of the bbox centre) covering a lon/lat ``bbox``."""
    from odc.geo.geom import BoundingBox

    lonlat = BBox.parse(bbox, error=BBoxError)
    box = BoundingBox(*lonlat.bounds, "EPSG:4326").to_crs(UtmZone.containing(*lonlat.centre).crs)
    return GeoBox.from_bbox(box, resolution=resolution_m, tight=False)


_CROPHARVEST_NAME = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{4}-\d{2}-\d{2})\.tif$")
CROPHARVEST_DAYS_PER_STEP = 30
"""CropHarvest exports 30-day composites (``cropharvest.config.DAYS_PER_TIMESTEP``)."""


def cube_from_cropharvest(path: str | Path) -> xr.Dataset:
    """The real CropHarvest S1+S2 GeoTIFF (Google Earth Engine export) as a cube of the same layout.

    Mapping (documented because the source is not Planetary Computer data):

    * time: 12 steps of 30-day composites starting at the date in the file name; ``time`` is each
      window's centre (start + 30 k + 15 days). ``s1_time = time``, ``s1_gap_days = 0`` (same composite).
    * ``s2``: bands ``B2 ... B12`` of GEE ``COPERNICUS/S2`` (Level-1C top-of-atmosphere, not L2A),
      renamed to the sensor table's ``B02 ... B12`` (B1, B9, B10 dropped), ``DN / 10000`` with no
      baseline offset (GEE harmonises nothing here), clipped to [0, 1]; NaN stays invalid.
    * ``s1``: ``VV, VH`` of GEE ``COPERNICUS/S1_GRD`` (sigma0 already in dB, one orbit direction,
      monthly composite, so no rolling mean): clip to [-30, 5] dB and ``(dB + 30) / 35``; ``s1_own`` is
      the same values on ``time_s1 = time``.
    * grid: the file's own EPSG:4326 grid (~10 m pixels; ``x``/``y`` in degrees, ``attrs["crs"]`` says so).
    """
    import rasterio

    p = Path(path)
    match = _CROPHARVEST_NAME.search(p.name)
    if match is None:
        raise CubeError(
            f"{p.name!r} does not end in _<start YYYY-MM-DD>_<end YYYY-MM-DD>.tif like CropHarvest exports"
        )
    t_start = np.datetime64(match.group(1), "ns")
    with rasterio.open(p) as src:
        names = list(src.descriptions)
        data = src.read().astype(np.float64)  # [bands, H, W]
        transform = src.transform
        crs = str(src.crs)
        h, w = src.height, src.width
    index = {n: i for i, n in enumerate(names) if n}
    steps = sum(1 for n in names if n and re.fullmatch(r"VV(_\d+)?", n))
    if steps == 0:
        raise CubeError(f"{str(p)!r} has no VV band; band names are {names[:20]}...")

    def band(name: str, step: int) -> np.ndarray:
        key = name if step == 0 else f"{name}_{step}"
        if key not in index:
            raise CubeError(f"{str(p)!r} lacks band {key!r}; is it a CropHarvest S1+S2 export?")
        return data[index[key]]  # [H, W]

    s2_names = [b[0] + b[1:].lstrip("0") for b in S2.bands]  # "B02" -> "B2", "B8A" stays
    s2 = np.stack([[band(n, k) for n in s2_names] for k in range(steps)])  # [T, C, H, W] DN x 10000
    s2_rule = S2.s2_scaling
    lo, hi = s2_rule.clip if s2_rule else (0.0, 1.0)
    s2 = np.clip(s2 * (s2_rule.scale if s2_rule else 1e-4), lo, hi).astype(np.float32)
    s1_db = np.stack([[band(n, k) for n in S1.bands] for k in range(steps)])  # [T, 2, H, W] dB
    db_lo, db_hi = S1.s1_scaling.db_range if S1.s1_scaling else (-30.0, 5.0)
    s1 = ((np.clip(s1_db, db_lo, db_hi) - db_lo) / (db_hi - db_lo)).astype(np.float32)

    step_ns = np.timedelta64(CROPHARVEST_DAYS_PER_STEP, "D").astype("timedelta64[ns]")
    times = t_start + step_ns * np.arange(steps) + step_ns // 2  # window centres
    x = transform.c + transform.a * (np.arange(w) + 0.5)
    y = transform.f + transform.e * (np.arange(h) + 0.5)
    attrs = {
        "crs": crs,
        "transform": list(transform.to_gdal()),
        "halo_px": 0,
        "start": match.group(1),
        "end": match.group(2),
        "s1_missing": False,
        "source": f"CropHarvest GEE export {p.name}: S2 L1C TOA/10000, S1 GRD sigma0 dB rescaled, 30-day composites",
    }
    ds = _assemble(
        s2=s2,
        s2_time=times,
        s1_proc=s1,
        s1_time=times,
        s1_own_mask=np.ones(steps, dtype=bool),
        y=y,
        x=x,
        max_gap_days=None,
        attrs=attrs,
    )
    return ds


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def summarize(cube: xr.Dataset) -> str:
    """A few lines describing a cube: grid, dates, usability, S1 matching."""
    n_t = cube.sizes["time"]
    usable = int(cube["s2_usable"].sum())
    gaps = cube["s1_gap_days"].values
    lines = [
        f"grid      {cube.sizes['y']} x {cube.sizes['x']} px, {cube.attrs['crs']}, transform {cube.attrs['transform']}",
        f"period    {cube.attrs.get('start')} .. {cube.attrs.get('end')}",
        f"s2        {n_t} dates, {usable} usable (>= {S2.min_valid_train:.0%} valid), "
        f"valid share mean {float(cube['s2_valid_frac'].mean()):.1%}",
        f"s1        {cube.sizes['time_s1']} own acquisitions, s1_missing={cube.attrs.get('s1_missing')}",
    ]
    if np.isfinite(gaps).any():
        lines.append(
            f"s1 match  {int(np.isfinite(gaps).sum())}/{n_t} dates, gap days median "
            f"{float(np.nanmedian(gaps)):.1f}, max {float(np.nanmax(gaps)):.1f}"
        )
    for t, frac, ok in zip(
        cube["time"].values, cube["s2_valid_frac"].values, cube["s2_usable"].values, strict=True
    ):
        lines.append(f"  {str(t)[:19]}  valid {float(frac):6.1%}  {'usable' if ok else '-'}")
    return "\n".join(lines)


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder cube CATALOG --bbox W,S,E,N --start DATE --end DATE``: print a cube summary."""
    parser = argparse.ArgumentParser(prog="embedder cube", description=cli_main.__doc__)
    parser.add_argument(
        "catalog",
        help="'planetary-computer', a STAC API URL, a stac-geoparquet snapshot (.parquet) or a local catalog.json path",
    )
    add_bbox_option(parser, required=True)
    parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", required=True, help="last day, YYYY-MM-DD")
    parser.add_argument("--resolution-m", type=float, default=10.0, help="pixel size of the UTM grid")
    parser.add_argument("--s1-max-gap-days", type=float, default=None, help="drop S1 matches farther apart")
    parser.add_argument(
        "--max-gib", type=float, default=CubeConfig.max_gib,
        help=f"refuse cubes larger than this many GiB, before reading (default {CubeConfig.max_gib:g})",
    )  # fmt: skip
    args = parser.parse_args(bbox_argv(argv, parser))
    try:
        geobox = geobox_from_bbox(args.bbox, resolution_m=args.resolution_m)
        cube = load_cube(
            open_catalog(args.catalog),
            geobox,
            args.start,
            args.end,
            cfg=CubeConfig(s1_max_gap_days=args.s1_max_gap_days, max_gib=args.max_gib),
        )
    except (CatalogError, CubeError, ConfigError) as err:
        print(f"embedder cube: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(summarize(cube))
    return 0
