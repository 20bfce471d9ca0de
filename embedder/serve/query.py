"""Queries on an opened store: point series (one or many points) and regions per date or time window."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import io
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from embedder.geo import day_index, index_date
from embedder.grid import PIXEL_M
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.parse import (
    RegionTooLargeError,
    ServeError,
    check_lonlat,
    parse_bbox,
    parse_period,
    window_bins,
)
from embedder.serve.reader import (
    RegionWindow,
    StoreReader,
    as_reader,
    region_window,
    series_at,
)
from embedder.store import (
    CorruptChunkError,
    Flag,
    dequantise,
)

__all__ = [
    "CSV_HEADER",
    "REDUCERS",
    "PartialResultWarning",
    "PointSeries",
    "check_region",
    "iter_region_strips",
    "plan_strips",
    "probe",
    "read_region",
    "sample_points",
    "series_csv",
]

REDUCERS = ("mean", "median", "min", "max")
"""How :func:`read_region` aggregates the dates inside one window."""


class PartialResultWarning(UserWarning):
    """A query returned what could be read: some chunks of the store are damaged (listed in the message).

    The result says so itself too: ``PointSeries.status == "partial"`` with :attr:`PointSeries.unreadable`,
    a region Dataset's ``partial``/``unreadable`` attributes and ``unreadable`` variable, an export's
    ``unreadable`` metadata. Unreadable values are NaN (or left out), never zeros.
    """


_QUIET = threading.local()


@contextlib.contextmanager
def quiet_partial() -> Iterator[None]:
    """No :class:`PartialResultWarning` from this thread inside the block (the results still say so).

    For callers that report partial results themselves (the HTTP service: fields and a header);
    unlike ``warnings.catch_warnings`` it is safe with threads.
    """
    before = getattr(_QUIET, "on", False)
    _QUIET.on = True
    try:
        yield
    finally:
        _QUIET.on = before


def warn_partial(what: str, errors: Sequence[CorruptChunkError]) -> None:
    """Warn once per result that ``what`` is partial: the damaged chunks it was read around."""
    import warnings

    if errors and not getattr(_QUIET, "on", False):
        first = errors[0]
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        warnings.warn(
            f"PARTIAL {what}: {len(errors)} damaged chunk(s) could not be read and are left out (NaN): "
            f"{first.short()}{more}; run `embedder verify {first.store} --repair`",
            PartialResultWarning,
            stacklevel=3,
        )


def unique_errors(errors: Sequence[CorruptChunkError]) -> list[CorruptChunkError]:
    """``errors`` without repeats of the same array and chunk key (first kept)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in errors:
        if (e.array, e.key) not in seen:
            seen.add((e.array, e.key))
            out.append(e)
    return out


# ---------------------------------------------------------------------------------------------------
# points
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PointSeries:
    """One pixel's time series, or why there is none (``status == "no_data"``), or what could not be read."""

    lon: float
    """Requested longitude (degrees)."""
    lat: float
    """Requested latitude (degrees)."""
    status: str
    """``"ok"``: dates with embeddings; ``"no_data"``: none (see :attr:`reason`); ``"partial"``: the dates
    that could be read, others held by damaged chunks (:attr:`unreadable`) left out; ``"unreadable"``:
    everything this pixel needs is damaged. Never zeros instead of values."""
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
    unreadable: tuple[CorruptChunkError, ...] = ()
    """Damaged chunks whose dates are missing from this series (empty unless ``status`` is ``"partial"`` or
    ``"unreadable"``); each names its array, chunk key, unit and dates."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (dates as ISO strings, features as lists, flags also by name).

        A partial or unreadable series also has ``"unreadable"``: the damaged chunks (array, key, unit,
        reason, first/last date).
        """
        extra = {"unreadable": [e.to_json() for e in self.unreadable]} if self.unreadable else {}
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
            **extra,
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
    Points whose chunks are damaged get ``status="partial"`` (the readable dates) or ``"unreadable"``,
    with the chunks in :attr:`PointSeries.unreadable`, and a :class:`PartialResultWarning` is issued.
    """
    r = as_reader(store, storage_options)
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
        checked.append(check_lonlat(p[0], p[1]))
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
        damaged: dict[int, list[CorruptChunkError]] = {}
        got = series_at(r, zone, rows, cols, d0, d1, damaged=damaged)
        for j, (i, row, col, (days, codes, flags)) in enumerate(zip(idx, rows, cols, got, strict=True)):
            lon, lat = checked[i]
            where_kw = {
                "zone": zone,
                "row": int(row),
                "col": int(col),
                "x_m": zi.x0 + (col + 0.5) * PIXEL_M,
                "y_m": zi.y0 - (row + 0.5) * PIXEL_M,
            }
            lost = tuple(unique_errors(damaged.get(j, [])))
            if days.size == 0 and lost:
                results[i] = PointSeries(
                    lon=lon, lat=lat, status="unreadable", unreadable=lost, **where_kw,
                    reason=f"every chunk this pixel needs in the period is damaged: {lost[0]}",
                )  # fmt: skip
                continue
            if days.size == 0:
                span = f"{index_date(d0)}..{index_date(d1 - 1)}" if d1 > d0 else "the requested period"
                results[i] = _no_data(lon, lat, f"no valid embedding at this pixel in {span}", **where_kw)
                continue
            results[i] = PointSeries(
                lon=lon,
                lat=lat,
                status="partial" if lost else "ok",
                reason=f"{len(lost)} damaged chunk(s) left out: {lost[0].short()}" if lost else "",
                unreadable=lost,
                dates=tuple(index_date(d) for d in days),
                embedding=dequantise(codes, step=r.quant_step),  # [T, 7]
                flags=flags.astype(np.uint8),
                **where_kw,
            )
    out = [s for s in results if s is not None]
    warn_partial(
        f"point series ({sum(s.status in ('partial', 'unreadable') for s in out)} of {len(out)} points)",
        unique_errors([e for s in out for e in s.unreadable]),
    )
    return out


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
    coverage, or without a valid date, the result has ``status="no_data"`` and a ``reason``. When some of
    the pixel's chunks are damaged the readable dates come back with ``status="partial"``; when all of
    them are, :class:`~embedder.store.CorruptChunkError` is raised (it names the chunk and the repair).
    """
    with quiet_partial():
        s = sample_points(store, [(lon, lat)], start=start, end=end, storage_options=storage_options)[0]
    if s.status == "unreadable":
        raise s.unreadable[0]
    warn_partial("point series", s.unreadable)
    return s


# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------


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


def region_plan(
    r: StoreReader, bbox: Any, start: Any, end: Any, window: Any, reduce: str, *, limit_px: int | None
) -> tuple[RegionWindow, np.ndarray, list[tuple[dt.date, dt.date]] | None]:
    """A region request parsed once: its pixel window, its stored days and its windows (None: per date)."""
    if reduce not in REDUCERS:
        raise ServeError(f"reduce={reduce!r} is not one of {', '.join(REDUCERS)}")
    if start is None or end is None:
        raise ServeError("a region needs both start and end (YYYY-MM-DD)")
    period = parse_period(start, end)
    # the window is validated before the coverage is looked up
    bins = None if window is None else window_bins(window, start=period.start, end=period.end)
    box = parse_bbox(bbox)
    reg = region_window(r, box)
    h, w = reg.ys.stop - reg.ys.start, reg.xs.stop - reg.xs.start
    if limit_px is not None and h * w > limit_px:
        raise RegionTooLargeError(
            f"bbox {box.bounds} covers {h} x {w} = {h * w} pixels, over the limit of {limit_px}; "
            "ask for a smaller bbox (or export it strip by strip with export_region)"
        )
    d0, d1 = r.day_range(period.start, period.end, zone=reg.zone.name)
    days = r.region_days(reg.zone.name, d0, d1, reg.ys, reg.xs)
    return reg, days, bins


_MIB = 2**20


def human_size(nbytes: float) -> str:
    """``nbytes`` for a message: MiB below a GiB, else GiB (TiB above)."""
    for unit, div in (("TiB", 2**40), ("GiB", 2**30)):
        if nbytes >= div:
            return f"{nbytes / div:,.1f} {unit}"
    return f"{nbytes / _MIB:,.1f} MiB"


def _dates_per_read(days: np.ndarray, bins: list[tuple[dt.date, dt.date]] | None) -> int:
    """Most store dates read at once for one strip: all of them per date, the fullest window otherwise."""
    if bins is None:
        return int(days.size)
    return max((int(((days >= day_index(a)) & (days <= day_index(b))).sum()) for a, b in bins), default=0)


def _strip_bytes(n_out: int, n_read: int, rows: int, w: int) -> int:
    """Memory of one strip: its float32 result with flags/count, and the uint16 codes and float32 values read."""
    return rows * w * (n_out * (EMBEDDING_DIM * 4 + 2) + n_read * EMBEDDING_DIM * (2 + 4))


def plan_strips(
    r: StoreReader,
    reg: RegionWindow,
    days: np.ndarray,
    bins: list[tuple[dt.date, dt.date]] | None,
    *,
    strip_px: int | None = None,
    max_mib: float | None = None,
) -> int:
    """Rows per strip: ``strip_px`` (default ``ServeConfig.strip_px``) or fewer.

    Fewer when a strip would need more than ``max_mib`` (default ``ServeConfig.max_request_mib``);
    :class:`RegionTooLargeError` when even one row would.
    """
    limit = (max_mib or r.cfg.max_request_mib) * _MIB
    w = reg.xs.stop - reg.xs.start
    n_out = len(days) if bins is None else len(bins)
    per_row = _strip_bytes(n_out, _dates_per_read(days, bins), 1, w)
    if per_row > limit:
        raise RegionTooLargeError(
            f"one row of {w} px of this region over {n_out} dates/windows needs {human_size(per_row)} in memory, "
            f"over the limit of {human_size(limit)} (ServeConfig.max_request_mib); ask for a narrower bbox or a "
            "shorter period or window"
        )
    rows = min(strip_px or r.cfg.strip_px, reg.ys.stop - reg.ys.start)
    return int(max(1, min(rows, limit // per_row)))


def iter_region_strips(
    store: StoreReader | str,
    bbox: Any,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    strip_px: int | None = None,
    max_mib: float | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield the region as xarray Datasets of ``strip_px`` rows each (top to bottom); see :func:`read_region`.

    Memory stays bounded by one strip of daily data, whatever the region's size: strips get fewer rows
    when one would need more than ``max_mib`` (default ``ServeConfig.max_request_mib``), and
    :class:`RegionTooLargeError` is raised, before reading, when a single row would. A strip with damaged
    chunks has NaN there, an ``unreadable`` variable and ``partial``/``unreadable`` attributes.
    """
    r = as_reader(store, storage_options)
    reg, days, bins = region_plan(r, bbox, start, end, window, reduce, limit_px=None)
    rows = plan_strips(r, reg, days, bins, strip_px=strip_px, max_mib=max_mib)
    yield from region_strips(r, reg, days, bins, window=window, reduce=reduce, strip_px=rows, lost=[])


def region_strips(
    r: StoreReader,
    reg: RegionWindow,
    days: np.ndarray,
    bins: list[tuple[dt.date, dt.date]] | None,
    *,
    window: Any,
    reduce: str,
    strip_px: int | None,
    lost: list[CorruptChunkError],
) -> Iterator[Any]:
    """The strips; damaged chunks are read around (NaN, ``unreadable`` > 0) and appended to ``lost``."""
    import xarray as xr

    zi = reg.zone
    step = strip_px or r.cfg.strip_px
    xs = reg.xs
    x = zi.x0 + (np.arange(xs.start, xs.stop) + 0.5) * PIXEL_M
    for y0 in range(reg.ys.start, reg.ys.stop, step):
        ys = slice(y0, min(y0 + step, reg.ys.stop))
        h, w = ys.stop - ys.start, xs.stop - xs.start
        y = zi.y0 - (np.arange(ys.start, ys.stop) + 0.5) * PIXEL_M
        coords: dict[str, Any] = {"y": y, "x": x}
        errors: list[CorruptChunkError] = []
        if bins is None:
            codes, bad_e, err_e = r.read_checked(zi.name, "embedding", days, ys, xs)  # [T, 7, h, w]
            flags, bad_f, err_f = r.read_checked(zi.name, "flags", days, ys, xs)  # [T, h, w]
            errors += err_e + err_f
            bad = np.zeros((len(days), h, w), bool) | (bad_e if bad_e is not None else False)
            bad |= bad_f if bad_f is not None else False
            coords["time"] = np.array(
                [np.datetime64(index_date(d), "ns") for d in days], dtype="datetime64[ns]"
            )
            ds = xr.Dataset(
                {
                    "embedding": (("time", "feature", "y", "x"), dequantise(codes, step=r.quant_step)),
                    "flags": (("time", "y", "x"), flags),
                },
                coords=coords,
            )
            n_bad = bad.astype(np.uint16)
        else:
            emb = np.full((len(bins), EMBEDDING_DIM, h, w), np.nan, np.float32)
            count = np.zeros((len(bins), h, w), np.uint16)
            n_bad = np.zeros((len(bins), h, w), np.uint16)
            for k, (a, b) in enumerate(bins):
                sel = days[(days >= day_index(a)) & (days <= day_index(b))]
                if sel.size == 0:
                    continue
                codes, bad_k, err_k = r.read_checked(zi.name, "embedding", sel, ys, xs)
                vals = dequantise(codes, step=r.quant_step)  # [T, 7, h, w]
                emb[k] = _reduce(vals, reduce)
                count[k] = np.isfinite(vals).all(axis=1).sum(axis=0)
                if bad_k is not None:  # a window missing dates is not reduced over the rest: NaN, count 0
                    n_bad[k] = bad_k.sum(axis=0)
                    emb[k][:, n_bad[k] > 0] = np.nan
                    count[k][n_bad[k] > 0] = 0
                errors += err_k
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
        if errors:
            lost += errors
            _mark_partial(ds, errors, n_bad)
        yield _georef(ds, zi.zone.epsg)


def _mark_partial(ds: Any, errors: Sequence[CorruptChunkError], n_bad: np.ndarray | None) -> None:
    """Mark a region Dataset partial.

    ``partial`` = 1; ``unreadable``: as an attribute the damaged chunks, one line each; as a variable,
    per time step and pixel, the store dates that could not be read.
    """
    ds.attrs["partial"] = 1
    ds.attrs["unreadable"] = [e.short() for e in unique_errors(errors)]
    if n_bad is not None:
        ds["unreadable"] = (("time", "y", "x"), n_bad)
        ds["unreadable"].attrs["long_name"] = "store dates that could not be read (damaged chunks)"


def _georef(ds: Any, epsg: int) -> Any:
    import rioxarray  # noqa: F401  (registers .rio)

    return ds.rio.write_crs(f"EPSG:{epsg}").rio.write_coordinate_system()


def region_bytes(r: StoreReader, reg: RegionWindow, days: np.ndarray, bins: Any) -> int:
    """Memory :func:`read_region` allocates for this plan (bytes).

    The result twice (the strips and their join) and one strip of codes and values read.
    """
    h, w = reg.ys.stop - reg.ys.start, reg.xs.stop - reg.xs.start
    n_out = len(days) if bins is None else len(bins)
    rows = min(r.cfg.strip_px, h)
    return 2 * _strip_bytes(n_out, 0, h, w) + _strip_bytes(0, _dates_per_read(days, bins), rows, w)


def _checked_plan(
    r: StoreReader, bbox: Any, start: Any, end: Any, window: Any, reduce: str, *, max_mib: float | None = None
) -> tuple[RegionWindow, np.ndarray, list[tuple[dt.date, dt.date]] | None]:
    reg, days, bins = region_plan(r, bbox, start, end, window, reduce, limit_px=r.cfg.max_region_px)
    n_t = len(days) if bins is None else len(bins)
    values = n_t * EMBEDDING_DIM * (reg.ys.stop - reg.ys.start) * (reg.xs.stop - reg.xs.start)
    if values > r.cfg.max_region_values:
        raise RegionTooLargeError(
            f"the extract would hold {values} values ({n_t} dates/windows), over the limit of "
            f"{r.cfg.max_region_values}; shorten the period, use a window, or export it"
        )
    need, limit = region_bytes(r, reg, days, bins), (max_mib or r.cfg.max_request_mib) * _MIB
    if need > limit:
        raise RegionTooLargeError(
            f"the extract ({n_t} dates/windows x {EMBEDDING_DIM} x {reg.ys.stop - reg.ys.start} x "
            f"{reg.xs.stop - reg.xs.start} px) needs about {human_size(need)} in memory, over the limit of "
            f"{human_size(limit)} (ServeConfig.max_request_mib); shorten the period, use a window, or export it"
        )
    return reg, days, bins


def check_region(
    store: StoreReader,
    bbox: Any,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    max_mib: float | None = None,
) -> None:
    """Raise what :func:`read_region` would raise for these arguments (bad input, no data, over a limit)."""
    _checked_plan(store, bbox, start, end, window, reduce, max_mib=max_mib)


def read_region(
    store: StoreReader | str,
    bbox: Any,
    *,
    start: Any,
    end: Any,
    window: Any = None,
    reduce: str = "mean",
    max_mib: float | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    """A lon/lat ``bbox`` on its native 10 m grid, per date or aggregated over windows, as a Dataset.

    Without ``window``: ``embedding (time, feature, y, x)`` on every date with data in the region plus
    ``flags (time, y, x)``. With ``window`` (see :func:`window_bins`: days, ``"MS"``, ``"season"``,
    custom pairs): ``embedding`` reduced by ``reduce`` (``mean``/``median``/``min``/``max``) over the
    valid dates of each window, ``count (time, y, x)`` of the dates used, ``time`` = window start and
    ``time_end`` = its last day. NaN = no valid date. Read strip by strip; raises
    :class:`RegionTooLargeError`, before reading, over ``ServeConfig.max_region_px``, ``max_region_values``
    or ``max_mib`` MiB of memory (default ``ServeConfig.max_request_mib``; export large regions instead).

    Damaged chunks are read around: their values are NaN (a window missing any date is NaN), the Dataset
    gets ``attrs["partial"] = 1``, ``attrs["unreadable"]`` (the chunks, one line each) and an
    ``unreadable (time, y, x)`` variable counting the store dates lost, and a
    :class:`PartialResultWarning` is issued.
    """
    import xarray as xr

    r = as_reader(store, storage_options)
    reg, days, bins = _checked_plan(r, bbox, start, end, window, reduce, max_mib=max_mib)
    lost: list[CorruptChunkError] = []
    strips = list(region_strips(r, reg, days, bins, window=window, reduce=reduce, strip_px=None, lost=lost))
    if lost:  # every strip the same variables, the attributes of the whole region
        for st in strips:
            if "unreadable" not in st:
                st["unreadable"] = (
                    ("time", "y", "x"),
                    np.zeros((st.sizes["time"], st.sizes["y"], st.sizes["x"]), np.uint16),
                )
    ds = (
        xr.concat(strips, dim="y", data_vars="all", coords="minimal", compat="override", join="override")
        if len(strips) > 1
        else strips[0]
    )
    if lost:
        _mark_partial(ds, lost, None)
        warn_partial(f"region {bbox!r}", unique_errors(lost))
    return _georef(ds, reg.zone.zone.epsg)
