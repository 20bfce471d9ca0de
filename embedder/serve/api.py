"""Queries on an embedding store: point series, bulk points, regions, time windows, exports, RGB PCA.

Everything reads only the chunks it needs through zarr (any fsspec URL: local, ``gs://``, ``s3://``)::

    reader = StoreReader("gs://bucket/emb.zarr")
    series = probe(reader, 8.01, 45.9, start="2021-01-01", end="2021-12-31")   # PointSeries
    ds = read_region(reader, (8.0, 45.9, 8.02, 45.92), start="2021-01-01", end="2021-12-31", window="MS")
    export_region(reader, bbox, "out.tif", start=..., end=..., window="QS-DEC")

Points and regions are given in lon/lat (EPSG:4326); a point is served from the store group of its own
UTM zone (or, near zone borders, from another zone group whose extent holds it). Regions come back on
the native 10 m grid of one zone group (that of the bbox centre when the store has it).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import ServeConfig
from embedder.grid import EPOCH, PIXEL_M, WorkUnit, utm_epsg
from embedder.sensors import EMBEDDING_DIM
from embedder.store import (
    FILL_CODE,
    Flag,
    SeriesReader,
    Store,
    StoreError,
    ZoneExtent,
    as_store,
    dequantise,
    get_json,
    list_done,
    put_object,
    zarr_store,
    zone_attrs,
)

__all__ = [
    "CSV_HEADER",
    "PCA_SIDECAR",
    "REDUCERS",
    "NoDataError",
    "PointSeries",
    "RegionTooLargeError",
    "ServeError",
    "StoreReader",
    "apply_pca",
    "check_region",
    "cli_export",
    "cli_probe",
    "cli_region",
    "default_cache_dir",
    "export_region",
    "iter_region_strips",
    "parse_bbox",
    "parse_date",
    "pca_cache_path",
    "probe",
    "read_region",
    "rgb_pca",
    "sample_points",
    "series_csv",
    "window_bins",
]

log = logging.getLogger(__name__)

REDUCERS = ("mean", "median", "min", "max")
"""How :func:`read_region` aggregates the dates inside one window."""
PCA_SIDECAR = "_serve/pca.json"
"""Object (relative to the store root) holding the fixed RGB PCA of the map tiles."""
_MAX_BINS = 10_000  # windows per query
_SEASONS = "QS-DEC"  # DJF, MAM, JJA, SON
_ALIAS = re.compile(r"^(\d*)(D|W|MS|ME|M|QS-[A-Z]{3}|QS|YS|Y|A|AS)$")


class ServeError(ValueError):
    """A query's input is invalid (coordinates, dates, windows, formats); the message says what to give."""


class NoDataError(ServeError):
    """The store holds no data where or when a query asks (outside every zone group's extent)."""


class RegionTooLargeError(ServeError):
    """A region extract exceeds the configured size limit (:class:`~embedder.config.ServeConfig`)."""


# ---------------------------------------------------------------------------------------------------
# input parsing
# ---------------------------------------------------------------------------------------------------


def parse_date(value: Any, *, name: str = "date") -> dt.date:
    """``YYYY-MM-DD`` (or a date / datetime / numpy datetime64) -> date; :class:`ServeError` otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    s = str(value).strip()
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        raise ServeError(f"{name}={value!r} is not a date: give it as YYYY-MM-DD (e.g. 2021-06-30)")
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise ServeError(f"{name}={value!r} is not a valid calendar date: {exc}") from exc


def _check_lonlat(lon: float, lat: float) -> tuple[float, float]:
    try:
        lon_f, lat_f = float(lon), float(lat)
    except (TypeError, ValueError) as exc:
        raise ServeError(f"lon={lon!r}, lat={lat!r} must be numbers in degrees") from exc
    if not (math.isfinite(lon_f) and math.isfinite(lat_f)) or abs(lon_f) > 180 or abs(lat_f) > 90:
        hint = " (lat/lon swapped?)" if abs(lat_f) > 90 and abs(lon_f) <= 90 else ""
        raise ServeError(
            f"lon={lon!r}, lat={lat!r} is out of range{hint}: lon must be in [-180, 180], lat in [-90, 90]"
        )
    return lon_f, lat_f


def parse_bbox(bbox: Any) -> tuple[float, float, float, float]:
    """``(min_lon, min_lat, max_lon, max_lat)`` from a sequence or ``"a,b,c,d"``; :class:`ServeError` if bad."""
    parts = bbox.split(",") if isinstance(bbox, str) else list(bbox)
    try:
        vals = tuple(float(v) for v in parts)
    except (TypeError, ValueError) as exc:
        raise ServeError(f"bbox={bbox!r} must be 4 numbers: min_lon,min_lat,max_lon,max_lat") from exc
    if len(vals) != 4:
        raise ServeError(f"bbox={bbox!r} must be 4 numbers: min_lon,min_lat,max_lon,max_lat")
    lon0, lat0, lon1, lat1 = vals
    _check_lonlat(lon0, lat0)
    _check_lonlat(lon1, lat1)
    if lon0 >= lon1 or lat0 >= lat1:
        raise ServeError(
            f"bbox={bbox!r} is empty or inverted: give min_lon < max_lon and min_lat < max_lat "
            "(bboxes across the antimeridian are not supported: split them in two)"
        )
    return lon0, lat0, lon1, lat1


def window_bins(window: Any, *, start: dt.date, end: dt.date) -> list[tuple[dt.date, dt.date]]:
    """Inclusive ``(first day, last day)`` windows covering ``[start, end]``.

    ``window`` is a number of days (``10`` or ``"10D"``), a pandas offset alias (``"MS"`` months,
    ``"QS-DEC"`` or ``"season"`` for DJF/MAM/JJA/SON, ``"YS"`` years, ``"W"`` weeks), or a list of
    custom ``(first, last)`` date pairs. Calendar windows are aligned to the calendar and clipped to
    ``[start, end]``.
    """
    import pandas as pd

    if isinstance(window, (list, tuple)) and window and not isinstance(window[0], (int, float, str)):
        if len(window) > _MAX_BINS:
            raise ServeError(f"{len(window)} custom windows are more than {_MAX_BINS}")
        out = []
        for pair in window:
            if len(pair) != 2:
                raise ServeError(f"custom window {pair!r} must be a (first, last) date pair")
            a, b = parse_date(pair[0], name="window start"), parse_date(pair[1], name="window end")
            if b < a:
                raise ServeError(f"custom window ({a}, {b}) ends before it starts; swap its dates")
            out.append((a, b))
        return out
    if isinstance(window, (int, np.integer)) or (isinstance(window, str) and window.isdigit()):
        window = f"{int(window)}D"
    if not isinstance(window, str):
        raise ServeError(f"window={window!r} is not understood: give days (10), 'MS', 'season' or date pairs")
    spec = _SEASONS if window.lower() in ("season", "seasons") else window
    m = _ALIAS.match(spec)
    if m is None:
        raise ServeError(
            f"window={window!r} is not understood: give a number of days ('10D'), 'W', 'MS' (months), "
            "'season' (DJF/MAM/JJA/SON), 'YS' (years) or custom (first, last) date pairs"
        )
    if spec.endswith("D"):
        n = int(m.group(1) or 1)
        if not 0 < n <= 100_000:
            raise ServeError(f"window={window!r} must be 1 to 100000 days")
        if (end - start).days // n >= _MAX_BINS:
            raise ServeError(f"window={window!r} over {start}..{end} makes more than {_MAX_BINS} windows")
        firsts = [start + dt.timedelta(days=k) for k in range(0, (end - start).days + 1, n)]
        return [(a, min(end, a + dt.timedelta(days=n - 1))) for a in firsts]
    try:
        offset = pd.tseries.frequencies.to_offset(spec)
        # anchor: the calendar period that holds `start`
        first = pd.Timestamp(start) + pd.tseries.frequencies.to_offset("D") - offset  # at or before start
        edges = pd.date_range(first, pd.Timestamp(end) + offset, freq=offset)
    except (ValueError, TypeError, OverflowError, NotImplementedError) as exc:
        raise ServeError(f"window={window!r} is not usable over {start}..{end}: {exc}") from exc
    if len(edges) > _MAX_BINS:
        raise ServeError(f"window={window!r} over {start}..{end} makes more than {_MAX_BINS} windows")
    out = []
    try:
        for a, b in itertools.pairwise(edges):
            lo, hi = a.date(), (b - pd.Timedelta(days=1)).date()
            lo, hi = max(lo, start), min(hi, end)
            if lo <= hi:
                out.append((lo, hi))
    except (ValueError, OverflowError, NotImplementedError) as exc:  # dates beyond pandas' range
        raise ServeError(f"window={window!r} cannot be laid over {start}..{end}: {exc}") from exc
    return out


def _day(d: dt.date) -> int:
    return (d - EPOCH).days


def _date(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(day))


# ---------------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Any:
    """lon/lat -> zone CRS transformer (cached: building one costs milliseconds; thread-safe since pyproj 3.1)."""
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


@dataclasses.dataclass(frozen=True)
class _ZoneInfo:
    name: str
    zone: ZoneExtent
    x0: float  # left edge of the zone grid, metres
    y0: float  # top edge
    ny: int
    nx: int
    nt: int

    def pixel(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of projected ``(x, y)`` in the zone grid, or None outside it."""
        if not (math.isfinite(x) and math.isfinite(y)):  # e.g. the pole, far outside the zone
            return None
        col = math.floor((x - self.x0) / PIXEL_M)
        row = math.floor((self.y0 - y) / PIXEL_M)
        if 0 <= row < self.ny and 0 <= col < self.nx:
            return row, col
        return None


class StoreReader:
    """An opened store for queries: zone geometry and zarr arrays resolved once, reads on demand.

    Create one per store and reuse it (the HTTP service keeps one); it is safe to share between threads.
    """

    def __init__(
        self,
        url: str | Store,
        *,
        storage_options: dict[str, Any] | None = None,
        cfg: ServeConfig | None = None,
    ) -> None:
        import zarr

        self.store = as_store(url, storage_options)
        self.cfg = cfg or ServeConfig()
        self.url = self.store.url
        zstore = zarr_store(self.store.url, self.store.storage_options, read_only=True)
        self._group = zarr.open_group(zstore, mode="r", zarr_format=3)
        self.zones: dict[str, _ZoneInfo] = {}
        for name in self.store.attrs["embedder:zones"]:
            zat = zone_attrs(self.store, name)
            z = ZoneExtent.from_attrs(name, zat)
            _a, _, c, _, _, f = zat["spatial:transform"]
            ny, nx = zat["spatial:shape"]
            nt = z.n_periods * self.store.cfg.period_days
            self.zones[name] = _ZoneInfo(name, z, float(c), float(f), int(ny), int(nx), nt)
        self._arrays: dict[str, Any] = {}
        self._pca: dict[str, Any] | None = None
        self.series_reader = SeriesReader(self.store, cache_units=self.cfg.marker_cache_units)
        """Point series by byte range (done-markers cached): what probe and sample_points use."""

    @property
    def quant_step(self) -> float:
        """Quantisation step of the stored features."""
        return float(self.store.cfg.quant_step)

    def array(self, zone: str, name: str) -> Any:
        """The zarr array ``<zone>/<name>`` (cached)."""
        key = f"{zone}/{name}"
        if key not in self._arrays:
            self._arrays[key] = self._group[key]
        return self._arrays[key]

    def _project(self, zone: _ZoneInfo, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = _to_utm(zone.zone.epsg).transform(lon, lat)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def _zone_order(self, lon: float, lat: float) -> list[_ZoneInfo]:
        epsg = utm_epsg(lon, lat)
        native = f"utm{epsg % 100:02d}{'S' if epsg >= 32700 else 'N'}"
        return sorted(self.zones.values(), key=lambda z: (z.name != native, z.name))

    def locate(self, lon: float, lat: float) -> tuple[str, int, int] | None:
        """``(zone, row, col)`` of the store pixel holding ``(lon, lat)``, or None outside coverage."""
        lon, lat = _check_lonlat(lon, lat)
        for zi in self._zone_order(lon, lat):
            x, y = self._project(zi, np.array([lon]), np.array([lat]))
            px = zi.pixel(float(x[0]), float(y[0]))
            if px is not None:
                return zi.name, px[0], px[1]
        return None

    def day_range(self, start: Any, end: Any, *, zone: str | None = None) -> tuple[int, int]:
        """``[d0, d1)`` day indices for inclusive ``start``/``end`` (None: the store's whole time axis)."""
        nt = max(z.nt for z in self.zones.values()) if zone is None else self.zones[zone].nt
        d0 = 0 if start is None else _day(parse_date(start, name="start"))
        d1 = nt if end is None else _day(parse_date(end, name="end")) + 1
        if start is not None and end is not None and d1 <= d0:
            raise ServeError(f"end={end!r} is before start={start!r}; swap them")
        return max(d0, 0), min(d1, nt)

    def dates(self, *, zone: str | None = None, start: Any = None, end: Any = None) -> list[dt.date]:
        """Dates with at least one valid pixel (from ``valid_px``, a small per-tile array)."""
        out: set[int] = set()
        for name in [zone] if zone else list(self.zones):
            d0, d1 = self.day_range(start, end, zone=name)
            if d1 <= d0:
                continue
            counts = np.asarray(self.array(name, "valid_px")[d0:d1])  # [T, tile_y, tile_x]
            out.update((np.flatnonzero(counts.reshape(counts.shape[0], -1).sum(axis=1)) + d0).tolist())
        return [_date(d) for d in sorted(out)]

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: zones (EPSG, lon/lat bbox, shape), dates with data, layout, model."""
        from embedder.stac_store import _lonlat_bbox

        zones = {}
        for name, zi in self.zones.items():
            bounds = (zi.x0, zi.y0 - zi.ny * PIXEL_M, zi.x0 + zi.nx * PIXEL_M, zi.y0)
            zones[name] = {
                "epsg": zi.zone.epsg,
                "bbox": _lonlat_bbox(zi.zone.epsg, bounds),
                "shape": [zi.ny, zi.nx],
                "transform": [PIXEL_M, 0.0, zi.x0, 0.0, -PIXEL_M, zi.y0],
            }
        return {
            "url": self.url,
            "model_version": self.store.attrs.get("embedder:model_version"),
            "fingerprint": self.store.attrs.get("embedder:fingerprint"),
            "features": EMBEDDING_DIM,
            "quant_step": self.quant_step,
            "flags": {str(f.name).lower(): int(f) for f in Flag},
            "zones": zones,
            "dates": [d.isoformat() for d in self.dates()],
        }

    # -- raw reads ------------------------------------------------------------------------------

    def read_series(
        self, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int, *, method: str = "auto"
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per pixel ``(rows[i], cols[i])`` of ``zone``: (days [T], codes [T, 7], flags [T]) of its valid dates.

        ``method="auto"`` reads by byte range through the done-markers' shard indexes (falling back to
        zarr for units written without one); ``"zarr"`` always uses zarr's coordinate selection (the
        baseline of bench/serve.py).
        """
        return _series_at(self, zone, np.asarray(rows), np.asarray(cols), d0, d1, method=method)

    def read_codes(self, zone: str, days: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
        """uint16 codes ``[T, 7, h, w]`` at day indices ``days`` (orthogonal selection)."""
        arr = self.array(zone, "embedding")
        if len(days) == 0:
            return np.full((0, EMBEDDING_DIM, ys.stop - ys.start, xs.stop - xs.start), FILL_CODE, np.uint16)
        return np.asarray(
            arr.get_orthogonal_selection((np.asarray(days, dtype=np.int64), slice(None), ys, xs))
        )

    def region_days(self, zone: str, d0: int, d1: int, ys: slice, xs: slice) -> np.ndarray:
        """Day indices in ``[d0, d1)`` on which any tile under ``ys``/``xs`` has valid pixels."""
        d0, d1 = max(d0, 0), min(d1, self.zones[zone].nt)
        if d1 <= d0:
            return np.zeros(0, dtype=np.int64)
        tp = self.store.cfg.tile_px
        ty = slice(ys.start // tp, (ys.stop - 1) // tp + 1)
        tx = slice(xs.start // tp, (xs.stop - 1) // tp + 1)
        counts = np.asarray(self.array(zone, "valid_px")[d0:d1, ty, tx])  # [T, ty, tx]
        return np.flatnonzero(counts.reshape(counts.shape[0], -1).sum(axis=1)) + d0


def _reader(store: StoreReader | str, storage_options: dict[str, Any] | None = None) -> StoreReader:
    return store if isinstance(store, StoreReader) else StoreReader(store, storage_options=storage_options)


# ---------------------------------------------------------------------------------------------------
# points
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PointSeries:
    """One pixel's time series, or why there is none (``status == "no_data"``)."""

    lon: float
    """Requested longitude (degrees)."""
    lat: float
    """Requested latitude (degrees)."""
    status: str
    """``"ok"``: dates with embeddings; ``"no_data"``: none (see :attr:`reason`); never zeros instead."""
    reason: str = ""
    """Why there is no data (outside coverage, no valid date in the period)."""
    zone: str | None = None
    """Store group that served the point."""
    row: int | None = None
    """Pixel row in the zone grid."""
    col: int | None = None
    """Pixel column in the zone grid."""
    x_m: float | None = None
    """Pixel centre easting (metres, zone CRS)."""
    y_m: float | None = None
    """Pixel centre northing (metres, zone CRS)."""
    dates: tuple[dt.date, ...] = ()
    """Dates with an embedding, ascending."""
    embedding: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, EMBEDDING_DIM), np.float32)
    )
    """``[T, 7]`` float32 features, dequantised."""
    flags: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.uint8))
    """``[T]`` uint8 :class:`~embedder.store.Flag` bits."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (dates as ISO strings, features as lists, flags also by name)."""
        return {
            "lon": self.lon,
            "lat": self.lat,
            "status": self.status,
            "reason": self.reason,
            "zone": self.zone,
            "row": self.row,
            "col": self.col,
            "x_m": self.x_m,
            "y_m": self.y_m,
            "dates": [d.isoformat() for d in self.dates],
            "embedding": [[round(float(v), 6) for v in row] for row in self.embedding],
            "flags": [int(f) for f in self.flags],
            "flag_names": [[str(b.name).lower() for b in Flag if int(f) & int(b)] for f in self.flags],
        }

    def csv_rows(self) -> list[list[Any]]:
        """Rows ``lon, lat, date, f0..f6, flags`` (no rows when there is no data)."""
        return [
            [self.lon, self.lat, d.isoformat(), *(f"{float(v):.6f}" for v in e), int(f)]
            for d, e, f in zip(self.dates, self.embedding, self.flags, strict=True)
        ]


CSV_HEADER = ["lon", "lat", "date", *(f"f{i}" for i in range(EMBEDDING_DIM)), "flags"]
"""Header of the CSV point series."""


def series_csv(series: Sequence[PointSeries]) -> str:
    """CSV text of point series (:data:`CSV_HEADER`)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for s in series:
        w.writerows(s.csv_rows())
    return buf.getvalue()


def _no_data(lon: float, lat: float, reason: str, **kw: Any) -> PointSeries:
    return PointSeries(lon=lon, lat=lat, status="no_data", reason=reason, **kw)


_POINT_BATCH = 512  # points per read batch: bounds memory at T x 7 x 512 codes


def _series_at(
    r: StoreReader, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int, *, method: str = "auto"
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per point: (days [T], codes [T, 7], flags [T]) for pixels of one zone.

    The store's :class:`~embedder.store.SeriesReader` reads each spatial block of a unit with one byte
    range per array (done-marker cached). Units written without a shard index in their marker (earlier
    versions) are read through zarr instead: points batched per spatial chunk, ``flags`` and
    ``embedding`` read concurrently with point-wise selections.
    """
    from concurrent.futures import ThreadPoolExecutor

    if d1 <= d0 or rows.size == 0:
        return [
            (np.zeros(0, np.int64), np.zeros((0, EMBEDDING_DIM), np.uint16), np.zeros(0, np.uint8))
        ] * rows.size
    if method not in ("auto", "zarr"):
        raise ServeError(f"method={method!r} must be 'auto' or 'zarr'")
    fast = r.series_reader.series(zone, rows, cols, d0, d1) if method == "auto" else None
    if fast is not None:
        return [(s.days, s.codes, s.flags) for s in fast]
    cp = r.store.cfg.chunk_px
    out: list[Any] = [None] * rows.size
    order = np.lexsort((cols // cp, rows // cp))  # points of one spatial chunk together
    days = np.arange(d0, d1)
    feats = np.arange(EMBEDDING_DIM)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for b0 in range(0, order.size, _POINT_BATCH):
            idx = order[b0 : b0 + _POINT_BATCH]
            rr, cc = rows[idx], cols[idx]
            f_job = pool.submit(
                r.array(zone, "flags").get_coordinate_selection, (days[:, None], rr[None, :], cc[None, :])
            )  # [T, P]
            e_job = pool.submit(
                r.array(zone, "embedding").get_coordinate_selection,
                (days[:, None, None], feats[None, :, None], rr[None, None, :], cc[None, None, :]),
            )  # [T, 7, P]
            flags, codes = np.asarray(f_job.result()), np.asarray(e_job.result())
            valid = (flags & Flag.VALID) > 0  # [T, P]
            for p, i in enumerate(idx):
                t = np.flatnonzero(valid[:, p])
                out[i] = (t + d0, codes[t, :, p], flags[t, p])
    return out


def sample_points(
    store: StoreReader | str,
    points: Sequence[tuple[float, float]] | np.ndarray,
    *,
    start: Any = None,
    end: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> list[PointSeries]:
    """Time series at many ``(lon, lat)`` points, grouped per zone and per spatial chunk (each read once).

    Returns one :class:`PointSeries` per point, in order; points outside coverage get ``status="no_data"``.
    """
    r = _reader(store, storage_options)
    r.day_range(start, end)  # validate the dates even when no point is covered
    pts = [tuple(p) for p in points]
    if len(pts) > r.cfg.max_points:
        raise RegionTooLargeError(
            f"{len(pts)} points exceed the limit of {r.cfg.max_points}; split the request"
        )
    checked = []
    for p in pts:
        if len(p) != 2:
            raise ServeError(f"point {p!r} must be a (lon, lat) pair")
        checked.append(_check_lonlat(p[0], p[1]))
    results: list[PointSeries | None] = [None] * len(checked)
    groups: dict[str, list[tuple[int, int, int]]] = {}
    for i, (lon, lat) in enumerate(checked):
        where = r.locate(lon, lat)
        if where is None:
            results[i] = _no_data(lon, lat, "outside the store's coverage (no zone group holds this point)")
        else:
            groups.setdefault(where[0], []).append((i, where[1], where[2]))
    for zone, members in groups.items():
        zi = r.zones[zone]
        d0, d1 = r.day_range(start, end, zone=zone)
        idx = np.array([m[0] for m in members])
        rows = np.array([m[1] for m in members], dtype=np.int64)
        cols = np.array([m[2] for m in members], dtype=np.int64)
        for i, row, col, (days, codes, flags) in zip(
            idx, rows, cols, _series_at(r, zone, rows, cols, d0, d1), strict=True
        ):
            lon, lat = checked[i]
            where_kw = {
                "zone": zone,
                "row": int(row),
                "col": int(col),
                "x_m": zi.x0 + (col + 0.5) * PIXEL_M,
                "y_m": zi.y0 - (row + 0.5) * PIXEL_M,
            }
            if days.size == 0:
                span = f"{_date(d0)}..{_date(d1 - 1)}" if d1 > d0 else "the requested period"
                results[i] = _no_data(lon, lat, f"no valid embedding at this pixel in {span}", **where_kw)
                continue
            results[i] = PointSeries(
                lon=lon,
                lat=lat,
                status="ok",
                dates=tuple(_date(d) for d in days),
                embedding=dequantise(codes, step=r.quant_step),  # [T, 7]
                flags=flags.astype(np.uint8),
                **where_kw,
            )
    return [s for s in results if s is not None]


def probe(
    store: StoreReader | str,
    lon: float,
    lat: float,
    *,
    start: Any = None,
    end: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> PointSeries:
    """One pixel's embedding time series (dates x 7, flags) at ``(lon, lat)``, from the right zone group.

    ``start``/``end`` (inclusive, ``YYYY-MM-DD``) default to the store's whole time axis. Outside
    coverage, or without a valid date, the result has ``status="no_data"`` and a ``reason``.
    """
    return sample_points(store, [(lon, lat)], start=start, end=end, storage_options=storage_options)[0]


# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Region:
    zone: _ZoneInfo
    ys: slice
    xs: slice


def _region(r: StoreReader, bbox: Any) -> _Region:
    lon0, lat0, lon1, lat1 = parse_bbox(bbox)
    ring_lon = np.concatenate(
        [np.linspace(lon0, lon1, 21), np.full(21, lon1), np.linspace(lon1, lon0, 21), np.full(21, lon0)]
    )
    ring_lat = np.concatenate(
        [np.full(21, lat0), np.linspace(lat0, lat1, 21), np.full(21, lat1), np.linspace(lat1, lat0, 21)]
    )
    for zi in r._zone_order((lon0 + lon1) / 2, (lat0 + lat1) / 2):
        x, y = r._project(zi, ring_lon, ring_lat)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():  # the ring leaves the projection's domain: not this zone's region
            continue
        c0 = max(0, math.floor((x.min() - zi.x0) / PIXEL_M))
        c1 = min(zi.nx, math.ceil((x.max() - zi.x0) / PIXEL_M))
        r0 = max(0, math.floor((zi.y0 - y.max()) / PIXEL_M))
        r1 = min(zi.ny, math.ceil((zi.y0 - y.min()) / PIXEL_M))
        if c1 > c0 and r1 > r0:
            return _Region(zi, slice(r0, r1), slice(c0, c1))
    raise NoDataError(
        f"bbox {bbox!r} is outside the store's coverage (zones {', '.join(r.zones)}); see /api/info"
    )


def _reduce(vals: np.ndarray, how: str) -> np.ndarray:
    """NaN-aware reduction over axis 0 of ``[T, ...]`` without warnings for all-NaN pixels."""
    valid = np.isfinite(vals)
    n = valid.sum(axis=0)
    if how == "mean":
        out = np.where(valid, vals, 0).sum(axis=0) / np.maximum(n, 1)
    elif how == "min":
        out = np.where(valid, vals, np.inf).min(axis=0)
    elif how == "max":
        out = np.where(valid, vals, -np.inf).max(axis=0)
    else:  # median
        srt = np.sort(np.where(valid, vals, np.inf), axis=0)  # NaN last
        lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
        hi = np.take_along_axis(srt, np.maximum(n // 2, 0)[None], axis=0)[0]
        out = (lo + hi) / 2
    return np.where(n > 0, out, np.nan).astype(np.float32)


def _region_plan(
    r: StoreReader, bbox: Any, start: Any, end: Any, window: Any, reduce: str, *, limit_px: int | None
) -> tuple[_Region, np.ndarray, list[tuple[dt.date, dt.date]] | None]:
    if reduce not in REDUCERS:
        raise ServeError(f"reduce={reduce!r} is not one of {', '.join(REDUCERS)}")
    if start is None or end is None:
        raise ServeError("a region needs both start and end (YYYY-MM-DD)")
    s, e = parse_date(start, name="start"), parse_date(end, name="end")
    if e < s:
        raise ServeError(f"end={end!r} is before start={start!r}; swap them")
    bins = None if window is None else window_bins(window, start=s, end=e)  # validate before coverage
    reg = _region(r, bbox)
    h, w = reg.ys.stop - reg.ys.start, reg.xs.stop - reg.xs.start
    if limit_px is not None and h * w > limit_px:
        raise RegionTooLargeError(
            f"bbox {bbox!r} covers {h} x {w} = {h * w} pixels, over the limit of {limit_px}; "
            "ask for a smaller bbox (or export it strip by strip with export_region)"
        )
    d0, d1 = r.day_range(s, e, zone=reg.zone.name)
    days = r.region_days(reg.zone.name, d0, d1, reg.ys, reg.xs)
    return reg, days, bins


def iter_region_strips(
    store: StoreReader | str,
    bbox: Any,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    strip_px: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield the region as xarray Datasets of ``strip_px`` rows each (top to bottom); see :func:`read_region`.

    Memory stays bounded by one strip of daily data, whatever the region's size.
    """
    r = _reader(store, storage_options)
    reg, days, bins = _region_plan(r, bbox, start, end, window, reduce, limit_px=None)
    yield from _strips(r, reg, days, bins, window=window, reduce=reduce, strip_px=strip_px)


def _strips(
    r: StoreReader,
    reg: _Region,
    days: np.ndarray,
    bins: list[tuple[dt.date, dt.date]] | None,
    *,
    window: Any,
    reduce: str,
    strip_px: int | None,
) -> Iterator[Any]:
    import xarray as xr

    zi = reg.zone
    step = strip_px or r.cfg.strip_px
    xs = reg.xs
    x = zi.x0 + (np.arange(xs.start, xs.stop) + 0.5) * PIXEL_M
    for y0 in range(reg.ys.start, reg.ys.stop, step):
        ys = slice(y0, min(y0 + step, reg.ys.stop))
        y = zi.y0 - (np.arange(ys.start, ys.stop) + 0.5) * PIXEL_M
        coords: dict[str, Any] = {"y": y, "x": x}
        if bins is None:
            codes = r.read_codes(zi.name, days, ys, xs)  # [T, 7, h, w]
            flags = (
                np.asarray(r.array(zi.name, "flags").get_orthogonal_selection((days, ys, xs)))
                if days.size
                else np.zeros((0, ys.stop - ys.start, xs.stop - xs.start), np.uint8)
            )  # [T, h, w]
            coords["time"] = np.array([np.datetime64(_date(d), "ns") for d in days], dtype="datetime64[ns]")
            ds = xr.Dataset(
                {
                    "embedding": (("time", "feature", "y", "x"), dequantise(codes, step=r.quant_step)),
                    "flags": (("time", "y", "x"), flags),
                },
                coords=coords,
            )
        else:
            emb = np.full(
                (len(bins), EMBEDDING_DIM, ys.stop - ys.start, xs.stop - xs.start), np.nan, np.float32
            )
            count = np.zeros((len(bins), ys.stop - ys.start, xs.stop - xs.start), np.uint16)
            for k, (a, b) in enumerate(bins):
                sel = days[(days >= _day(a)) & (days <= _day(b))]
                if sel.size == 0:
                    continue
                vals = dequantise(r.read_codes(zi.name, sel, ys, xs), step=r.quant_step)  # [T, 7, h, w]
                emb[k] = _reduce(vals, reduce)
                count[k] = np.isfinite(vals).all(axis=1).sum(axis=0)
            coords["time"] = np.array([np.datetime64(a, "ns") for a, _ in bins], dtype="datetime64[ns]")
            coords["time_end"] = (
                "time",
                np.array([np.datetime64(b, "ns") for _, b in bins], dtype="datetime64[ns]"),
            )
            ds = xr.Dataset(
                {
                    "embedding": (("time", "feature", "y", "x"), emb),
                    "count": (("time", "y", "x"), count),
                },
                coords=coords,
            )
        ds["embedding"].attrs.update({"long_name": "7-d embedding", "units": "1"})
        ds.attrs.update(
            {
                "crs": f"EPSG:{zi.zone.epsg}",
                "zone": zi.name,
                "window": "per date" if bins is None else str(window),
                "reduce": "none" if bins is None else reduce,
            }
        )
        yield _georef(ds, zi.zone.epsg)


def _georef(ds: Any, epsg: int) -> Any:
    import rioxarray  # noqa: F401  (registers .rio)

    return ds.rio.write_crs(f"EPSG:{epsg}").rio.write_coordinate_system()


def _checked_plan(
    r: StoreReader, bbox: Any, start: Any, end: Any, window: Any, reduce: str
) -> tuple[_Region, np.ndarray, list[tuple[dt.date, dt.date]] | None]:
    reg, days, bins = _region_plan(r, bbox, start, end, window, reduce, limit_px=r.cfg.max_region_px)
    n_t = len(days) if bins is None else len(bins)
    values = n_t * EMBEDDING_DIM * (reg.ys.stop - reg.ys.start) * (reg.xs.stop - reg.xs.start)
    if values > r.cfg.max_region_values:
        raise RegionTooLargeError(
            f"the extract would hold {values} values ({n_t} dates/windows), over the limit of "
            f"{r.cfg.max_region_values}; shorten the period, use a window, or export it"
        )
    return reg, days, bins


def check_region(
    store: StoreReader, bbox: Any, *, start: Any, end: Any, window: Any = None, reduce: str = "mean"
) -> None:
    """Raise what :func:`read_region` would raise for these arguments (bad input, no data, over a limit)."""
    _checked_plan(store, bbox, start, end, window, reduce)


def read_region(
    store: StoreReader | str,
    bbox: Any,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """A lon/lat ``bbox`` on its native 10 m grid, per date or aggregated over windows, as a Dataset.

    Without ``window``: ``embedding (time, feature, y, x)`` on every date with data in the region plus
    ``flags (time, y, x)``. With ``window`` (see :func:`window_bins`: days, ``"MS"``, ``"season"``,
    custom pairs): ``embedding`` reduced by ``reduce`` (``mean``/``median``/``min``/``max``) over the
    valid dates of each window, ``count (time, y, x)`` of the dates used, ``time`` = window start and
    ``time_end`` = its last day. NaN = no valid date. Read strip by strip; raises
    :class:`RegionTooLargeError` over ``ServeConfig.max_region_px`` (export large regions instead).
    """
    import xarray as xr

    r = _reader(store, storage_options)
    reg, days, bins = _checked_plan(r, bbox, start, end, window, reduce)
    strips = list(_strips(r, reg, days, bins, window=window, reduce=reduce, strip_px=None))
    ds = (
        xr.concat(strips, dim="y", data_vars="all", coords="minimal", compat="override", join="override")
        if len(strips) > 1
        else strips[0]
    )
    return _georef(ds, reg.zone.zone.epsg)


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
    r = _reader(store, storage_options)
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
    reg = _region(r, bbox)
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


# ---------------------------------------------------------------------------------------------------
# the fixed RGB PCA of the map tiles
# ---------------------------------------------------------------------------------------------------


def _fit_pca(samples: np.ndarray) -> dict[str, Any]:
    """PCA of ``[N, 7]`` samples -> mean, 3 components and the 2..98 % range of each projection."""
    mean = samples.mean(axis=0)  # [7]
    centred = samples - mean
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:3]  # [3, 7]
    for k in range(3):  # deterministic sign: the largest loading positive
        if comps[k, np.argmax(np.abs(comps[k]))] < 0:
            comps[k] = -comps[k]
    proj = centred @ comps.T  # [N, 3]
    lo, hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return {
        "mean": mean.tolist(),
        "components": comps.tolist(),
        "lo": lo.tolist(),
        "hi": hi.tolist(),
        "n_samples": int(samples.shape[0]),
    }


def pca_cache_path(store: StoreReader, cache_dir: str | Path) -> Path:
    """Where :func:`rgb_pca` keeps the PCA of ``store`` under ``cache_dir`` (one file per store URL)."""
    key = hashlib.sha256(store.store.url.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"pca-{key}.json"


def default_cache_dir() -> Path:
    """The server's cache folder: ``$EMBEDDER_CACHE_DIR``, else ``$XDG_CACHE_HOME/embedder`` (``~/.cache``)."""
    if os.environ.get("EMBEDDER_CACHE_DIR"):
        return Path(os.environ["EMBEDDER_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "embedder"


def rgb_pca(
    store: StoreReader,
    *,
    cache_dir: str | Path | None = None,
    write_sidecar: bool = False,
    recompute: bool = False,
) -> dict[str, Any]:
    """The store's fixed RGB PCA (mean, 3 components, display range), computed once from its data.

    Looked up in memory, then in the store's sidecar ``<store>/_serve/pca.json`` (written by the store's
    owner with ``write_sidecar``), then in ``cache_dir`` (:func:`pca_cache_path`); a copy is used only
    when its fingerprint matches the store's. Otherwise fitted on up to ``ServeConfig.pca_samples`` valid
    pixel-dates drawn (seeded) from the done units and saved in ``cache_dir`` (and, with
    ``write_sidecar``, in the store). Reading never writes into the store. Raises :class:`NoDataError`
    for a store without any embedding.
    """
    if store._pca is not None and not recompute:
        return store._pca
    st = store.store
    path = f"{st.root}/{PCA_SIDECAR}"
    fp = st.attrs.get("embedder:fingerprint")
    cached = pca_cache_path(store, cache_dir) if cache_dir is not None else None
    doc = None
    if not recompute:
        for candidate in (get_json(st.fs, path), _read_local_json(cached)):
            if candidate is not None and candidate.get("fingerprint") == fp:
                doc = candidate
                break
    if doc is None:
        rng = np.random.default_rng(0)
        done = list_done(st)
        if not done:
            raise NoDataError(f"store {st.url!r} has no done unit: nothing to fit the map's colours on")
        chosen = sorted(rng.choice(len(done), size=min(8, len(done)), replace=False).tolist())
        per_unit = max(1, store.cfg.pca_samples // len(chosen))
        samples = []
        tp = st.cfg.tile_px
        for i in chosen:
            unit = WorkUnit.from_id(done[i])
            zi = store.zones[unit.tile.zone_name]
            marker = get_json(st.fs, f"{st.root}/_units/{zi.name}/{unit.id}.json") or {}
            dates = marker.get("dates", [])
            if not dates:
                continue
            ty, tx = zi.zone.tile_index(unit.tile)
            pick = sorted(rng.choice(len(dates), size=min(4, len(dates)), replace=False).tolist())
            days = np.array([_day(dt.date.fromisoformat(dates[k])) for k in pick])
            codes = store.read_codes(
                zi.name, days, slice(ty * tp, (ty + 1) * tp), slice(tx * tp, (tx + 1) * tp)
            )
            vals = dequantise(codes, step=store.quant_step).transpose(0, 2, 3, 1).reshape(-1, EMBEDDING_DIM)
            vals = vals[np.isfinite(vals).all(axis=1)]  # [N, 7]
            if len(vals):
                samples.append(vals[rng.choice(len(vals), size=min(per_unit, len(vals)), replace=False)])
        if not samples:
            raise NoDataError(f"store {st.url!r} has no valid embedding to fit the map's colours on")
        doc = {**_fit_pca(np.concatenate(samples).astype(np.float64)), "fingerprint": fp, "version": 1}
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(doc))
                tmp.replace(cached)  # all or nothing: a reader never sees half a file
            except OSError as exc:  # an unwritable cache: keep it in memory
                log.warning("could not write %s (%s); the PCA is kept in memory only", cached, exc)
        if write_sidecar:
            put_object(st.fs, path, json.dumps(doc).encode())
    store._pca = doc
    return doc


def _read_local_json(path: Path | None) -> dict[str, Any] | None:
    """A local JSON document, or None when absent or unreadable (a cache is never trusted blindly)."""
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def apply_pca(values: np.ndarray, pca: dict[str, Any]) -> np.ndarray:
    """``[..., 7]`` features -> ``[..., 4]`` uint8 RGBA (alpha 0 where any feature is NaN)."""
    mean = np.asarray(pca["mean"], dtype=np.float32)
    comps = np.asarray(pca["components"], dtype=np.float32)  # [3, 7]
    lo, hi = np.asarray(pca["lo"], np.float32), np.asarray(pca["hi"], np.float32)
    valid = np.isfinite(values).all(axis=-1)
    proj = (np.where(valid[..., None], values, mean) - mean) @ comps.T  # [..., 3]
    rgb = np.clip((proj - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    alpha = np.where(valid, 255, 0).astype(np.uint8)[..., None]
    return np.concatenate([rgb, alpha], axis=-1)


# ---------------------------------------------------------------------------------------------------
# command line: embedder probe / region / export
# ---------------------------------------------------------------------------------------------------


def _cli_common(prog: str, doc: str | None) -> Any:
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("url", help="store URL (path, file://, gs://, s3://)")
    p.add_argument("--storage-options", default=None, help="fsspec storage options as JSON")
    return p


def _region_args(p: Any) -> None:
    p.add_argument("--bbox", required=True, help="min_lon,min_lat,max_lon,max_lat in degrees")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--window", default=None, help="aggregate over windows: 10D, W, MS, season, YS (default: per date)"
    )
    p.add_argument("--reduce", default="mean", choices=REDUCERS, help="how to aggregate a window")


def _run_cli(fn: Any) -> int:
    """Run ``fn``; user errors print one line to stderr and exit 2 (no data: 3)."""
    import sys

    try:
        return int(fn())
    except NoDataError as exc:
        print(f"no data: {exc}", file=sys.stderr)
        return 3
    except (ServeError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cli_probe(argv: list[str]) -> int:
    """``embedder probe STORE LON LAT``: one pixel's embedding time series as CSV or JSON (exit 3: no data)."""
    p = _cli_common("embedder probe", cli_probe.__doc__)
    p.add_argument("lon", type=float, help="longitude, degrees east")
    p.add_argument("lat", type=float, help="latitude, degrees north")
    p.add_argument("--start", default=None, help="first date, YYYY-MM-DD")
    p.add_argument("--end", default=None, help="last date, YYYY-MM-DD (inclusive)")
    p.add_argument("--format", default="csv", choices=("csv", "json"), help="output format")
    a = p.parse_args(argv)

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        s = probe(a.url, a.lon, a.lat, start=a.start, end=a.end, storage_options=so)
        print(
            json.dumps(s.to_json(), indent=1) if a.format == "json" else series_csv([s]),
            end="\n" if a.format == "json" else "",
        )
        if s.status != "ok":
            raise NoDataError(s.reason)
        return 0

    return _run_cli(run)


def cli_region(argv: list[str]) -> int:
    """``embedder region STORE --bbox ... --start ... --end ...``: summarise a region per date or window."""
    p = _cli_common("embedder region", cli_region.__doc__)
    _region_args(p)
    a = p.parse_args(argv)

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        ds = read_region(
            a.url, a.bbox, start=a.start, end=a.end, window=a.window, reduce=a.reduce, storage_options=so
        )
        emb = ds["embedding"].values  # [T, 7, h, w]
        print(
            f"zone {ds.attrs['zone']} {ds.rio.crs}  {ds.sizes['y']} x {ds.sizes['x']} px  window: {ds.attrs['window']}"
        )
        print("time        valid%  " + "  ".join(f"f{i}_mean" for i in range(EMBEDDING_DIM)))
        for t in range(emb.shape[0]):
            ok = np.isfinite(emb[t]).all(axis=0)  # [h, w]
            means = [float(emb[t, f][ok].mean()) if ok.any() else float("nan") for f in range(EMBEDDING_DIM)]
            print(
                f"{str(ds['time'].values[t])[:10]}  {100 * ok.mean():6.1f}  "
                + "  ".join(f"{m:7.3f}" for m in means)
            )
        return 0

    return _run_cli(run)


def cli_export(argv: list[str]) -> int:
    """``embedder export STORE OUT --bbox ... --start ... --end ...``: write a region to .tif, .nc or .zarr."""
    p = _cli_common("embedder export", cli_export.__doc__)
    p.add_argument("out", help="output file: .tif (GeoTIFF), .nc (NetCDF) or .zarr")
    _region_args(p)
    a = p.parse_args(argv)

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        out = export_region(a.url, a.bbox, a.out, start=a.start, end=a.end, window=a.window, reduce=a.reduce,
                            storage_options=so)  # fmt: skip
        print(f"wrote {out}")
        return 0

    return _run_cli(run)
