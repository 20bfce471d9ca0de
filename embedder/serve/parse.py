"""What a query is given: its errors and the parsing of dates, points, bboxes and time windows.

Dates, points and bboxes are parsed by :mod:`embedder.geo`; the functions here raise :class:`ServeError`
(HTTP 422) with its messages.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Any

import numpy as np

from embedder import geo

__all__ = [
    "NoDataError",
    "RegionTooLargeError",
    "ServeError",
    "check_lonlat",
    "parse_bbox",
    "parse_date",
    "parse_period",
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
    return geo.parse_date(value, name=name, error=ServeError)


def parse_period(start: Any, end: Any) -> geo.DateRange:
    """Days ``start..end`` (inclusive) as :func:`parse_date` takes them; :class:`ServeError` if reversed."""
    return geo.DateRange.parse(start, end, error=ServeError)


def check_lonlat(lon: Any, lat: Any) -> tuple[float, float]:
    """``(lon, lat)`` as floats inside -180..180 / -90..90; :class:`ServeError` otherwise."""
    return geo.check_lonlat(lon, lat, error=ServeError)


def parse_bbox(bbox: Any) -> geo.BBox:
    """A :class:`~embedder.geo.BBox` from a BBox, a sequence or ``"a,b,c,d"``; :class:`ServeError` if bad."""
    return geo.BBox.parse(bbox, error=ServeError)


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
            geo.check_order(a, b, name="custom window", error=ServeError)
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
