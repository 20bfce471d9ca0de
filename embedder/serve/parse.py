"""What a query is given: its errors and the parsing of dates, points, bboxes and time windows."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from typing import Any

import numpy as np

from embedder.grid import EPOCH

__all__ = [
    "NoDataError",
    "RegionTooLargeError",
    "ServeError",
    "check_lonlat",
    "day_index",
    "index_date",
    "parse_bbox",
    "parse_date",
    "window_bins",
]

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


def check_lonlat(lon: float, lat: float) -> tuple[float, float]:
    """``(lon, lat)`` as floats inside -180..180 / -90..90; :class:`ServeError` otherwise."""
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
    check_lonlat(lon0, lat0)
    check_lonlat(lon1, lat1)
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


def day_index(d: dt.date) -> int:
    """Index of day ``d`` on the store's time axis (days since :data:`embedder.grid.EPOCH`)."""
    return (d - EPOCH).days


def index_date(day: int) -> dt.date:
    """The date of day index ``day`` on the store's time axis (inverse of :func:`day_index`)."""
    return EPOCH + dt.timedelta(days=int(day))
