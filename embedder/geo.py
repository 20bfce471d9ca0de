"""Geographic values, parsed once where they enter: lon/lat boxes and points, days, periods, UTM zones.

The command lines, the HTTP API and the config loader turn text into these small frozen types once; the
code behind them passes the objects on (a parser given an object it returns returns it unchanged):

* :class:`BBox`: a lon/lat box ``(lon_min, lat_min, lon_max, lat_max)`` in degrees (EPSG:4326, the STAC
  order), from a ``BBox``, a 4-sequence or ``"a,b,c,d"`` text; :func:`check_lonlat` for one point;
* :func:`parse_date` (``YYYY-MM-DD``, a date, a datetime or a numpy datetime64 -> a date),
  :func:`parse_datetime` (a date or ISO datetime -> an aware UTC datetime, a date as its first or last
  instant), :func:`check_order` and :class:`DateRange` (whole days ``start..end``, both inclusive);
* :data:`EPOCH`, :func:`day_index` and :func:`index_date`: the store's daily time axis;
* :class:`UtmZone`: one standard 6-degree UTM zone and hemisphere (EPSG 326zz / 327zz, store group
  ``utm32N``).

Every refusal names the value and the fix. It raises :class:`GeoError` (a ``ValueError``) unless the
caller passes ``error=``, the exception class of its own layer, which then carries the same message:
``ServeError`` (HTTP 422), the catalog's ``BBoxError`` / ``PeriodError``, ``GridError``,
``ConfigError`` or ``argparse.ArgumentTypeError``.

A leaf module: it imports only the standard library, so every part of the package can use it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EPOCH",
    "BBox",
    "DateRange",
    "ErrorType",
    "GeoError",
    "UtmZone",
    "add_bbox_option",
    "bbox_argv",
    "check_lonlat",
    "check_order",
    "day_index",
    "index_date",
    "parse_date",
    "parse_datetime",
]

EPOCH = dt.date(2015, 1, 1)
"""Day 0 of the store's daily time axis and of its period blocks (before S2A's launch, 2015-06-23)."""

ErrorType = type[Exception]
"""The exception class a parser raises (``error=``): :class:`GeoError` unless the caller names its own."""


class GeoError(ValueError):
    """A bbox, point, date, period or UTM zone is invalid; the message names the value and the fix."""


# ---------------------------------------------------------------------------------------------------
# lon/lat points and boxes
# ---------------------------------------------------------------------------------------------------

_BBOX_ORDER = "lon_min, lat_min, lon_max, lat_max"
_LATLON_HINT = " (it looks like (lat, lon) order: give lon first)"


def _lon_ok(lon: float) -> bool:
    return -180.0 <= lon <= 180.0


def _lat_ok(lat: float) -> bool:
    return -90.0 <= lat <= 90.0


def check_lonlat(lon: Any, lat: Any, *, error: ErrorType = GeoError) -> tuple[float, float]:
    """``(lon, lat)`` as floats, lon in [-180, 180] and lat in [-90, 90] degrees; ``error`` otherwise."""
    try:
        lon_f, lat_f = float(lon), float(lat)
    except (TypeError, ValueError) as exc:
        raise error(f"lon={lon!r}, lat={lat!r} must be numbers in degrees") from exc
    if not (_lon_ok(lon_f) and _lat_ok(lat_f)):  # NaN fails both comparisons
        hint = _LATLON_HINT if abs(lat_f) > 90 and abs(lon_f) <= 90 else ""
        raise error(
            f"lon={lon!r}, lat={lat!r} is out of range{hint}: lon must be in [-180, 180], lat in [-90, 90]"
        )
    return lon_f, lat_f


def _check_bbox(values: tuple[float, ...], shown: Any, error: ErrorType) -> None:
    """Refuse 4 floats that are not a lon/lat box; ``shown`` is the value as the caller gave it."""
    if not all(math.isfinite(v) for v in values):
        raise error(f"bbox {shown!r} has a non-finite number: give 4 finite numbers {_BBOX_ORDER} in degrees")
    lon0, lat0, lon1, lat1 = values
    if not (_lon_ok(lon0) and _lon_ok(lon1) and _lat_ok(lat0) and _lat_ok(lat1)):
        hint = _LATLON_HINT if abs(lon0) <= 90 and abs(lon1) <= 90 else ""
        raise error(
            f"bbox {shown!r} is out of range{hint}: give {_BBOX_ORDER} in degrees (EPSG:4326), lon in "
            "[-180, 180], lat in [-90, 90]; projected coordinates (metres) are not accepted"
        )
    if not (lon0 < lon1 and lat0 < lat1):
        raise error(
            f"bbox {shown!r} is empty or inverted: give lon_min < lon_max and lat_min < lat_max, in the "
            f"order {_BBOX_ORDER} (bboxes across the antimeridian are not supported: split them in two)"
        )


@dataclass(frozen=True)
class BBox:
    """A lon/lat box in degrees (EPSG:4326): ``lon_min < lon_max`` and ``lat_min < lat_max``.

    Construction validates (:class:`GeoError`); :meth:`parse` takes the forms that users give. It
    iterates as its :attr:`bounds`, so ``lon0, lat0, lon1, lat1 = bbox`` works. Boxes across the
    antimeridian are not supported: give the two halves separately.
    """

    lon_min: float
    """Western edge, degrees east."""
    lat_min: float
    """Southern edge, degrees north."""
    lon_max: float
    """Eastern edge, degrees east."""
    lat_max: float
    """Northern edge, degrees north."""

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in (self.lon_min, self.lat_min, self.lon_max, self.lat_max))
        _check_bbox(values, values, GeoError)
        for name, v in zip(("lon_min", "lat_min", "lon_max", "lat_max"), values, strict=True):
            object.__setattr__(self, name, v)

    @classmethod
    def parse(cls, value: Any, *, error: ErrorType = GeoError) -> BBox:
        """A box from a :class:`BBox` (returned as is), 4 numbers or ``"lon_min,lat_min,lon_max,lat_max"``.

        Raises ``error`` naming the value and the fix: not 4 numbers, a non-finite number, out of range
        (with a hint when it looks like (lat, lon) order or projected metres), empty or inverted.
        """
        if isinstance(value, cls):
            return value
        parts = value.split(",") if isinstance(value, str) else value
        try:
            values = tuple(float(v) for v in parts)
        except (TypeError, ValueError):
            raise error(f"bbox {value!r} must be 4 numbers: {_BBOX_ORDER} in degrees (EPSG:4326)") from None
        if len(values) != 4:
            raise error(f"bbox {value!r} must be 4 numbers: {_BBOX_ORDER} in degrees (EPSG:4326)")
        _check_bbox(values, value, error)
        return cls(*values)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(lon_min, lat_min, lon_max, lat_max)``, the STAC / shapely order."""
        return (self.lon_min, self.lat_min, self.lon_max, self.lat_max)

    @property
    def centre(self) -> tuple[float, float]:
        """``(lon, lat)`` of the box's centre."""
        return ((self.lon_min + self.lon_max) / 2, (self.lat_min + self.lat_max) / 2)

    def __iter__(self) -> Iterator[float]:
        return iter(self.bounds)


BBOX_HELP = (
    "lon/lat box W,S,E,N in degrees, one value: --bbox 8.49,47.10,8.51,47.12 (--bbox=-10,35,5,45 works too)"
)
"""What every command's ``--bbox`` says about its one syntax."""

_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def add_bbox_option(
    parser: argparse.ArgumentParser, *, required: bool = False, default: str | None = None, extra: str = ""
) -> None:
    """``--bbox W,S,E,N``, the one box syntax of every command (kept as text; :meth:`BBox.parse` it).

    Pair it with :func:`bbox_argv` on the argument list, so a western edge below zero needs no ``=``
    and the old four-number form gets a message that shows the one syntax.
    """
    parser.add_argument(
        "--bbox",
        required=required,
        default=default,
        metavar="W,S,E,N",
        help=BBOX_HELP + (f"; {extra}" if extra else ""),
    )


def bbox_argv(argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` (``sys.argv[1:]`` when None) with ``--bbox -10,35,5,45`` joined to ``--bbox=-10,35,5,45``.

    argparse would read a value that starts with ``-`` as an option. Four separate numbers after
    ``--bbox`` (``--bbox 8 47 9 48``) stop with a usage error that shows the comma form.
    """
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--bbox" and i + 1 < len(args):
            value = args[i + 1]
            rest = args[i + 2 : i + 5]
            if _NUMBER.match(value) and len(rest) == 3 and all(_NUMBER.match(r) for r in rest):
                parser.error(
                    f"--bbox takes one value W,S,E,N: write --bbox {','.join([value, *rest])}, not four "
                    "separate numbers"
                )
            if re.match(r"^-[\d.]", value):  # a negative western edge, not the next option
                out.append(f"--bbox={value}")
                i += 2
                continue
        out.append(a)
        i += 1
    return out


# ---------------------------------------------------------------------------------------------------
# days, instants and periods
# ---------------------------------------------------------------------------------------------------

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: Any, *, name: str = "date", error: ErrorType = GeoError) -> dt.date:
    """A day from ``YYYY-MM-DD`` text, a date, a datetime (its day) or a numpy datetime64.

    Raises ``error`` naming ``name`` and the value: text not of the form ``YYYY-MM-DD``, or not a
    calendar day (``2021-02-30``).
    """
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if str(getattr(value, "dtype", "")).startswith("datetime64"):  # numpy, without importing it here
        value = str(value.astype("datetime64[D]"))
    text = str(value).strip()
    if not _DAY.fullmatch(text):
        raise error(f"{name}={value!r} is not a date: give it as YYYY-MM-DD (e.g. 2021-06-30)")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise error(f"{name}={value!r} is not a valid calendar date: {exc}") from exc


def parse_datetime(
    value: Any, *, end: bool = False, name: str = "time", error: ErrorType = GeoError
) -> dt.datetime:
    """An aware UTC datetime from an ISO datetime (text with ``T``, or a datetime) or a day.

    A naive datetime is taken as UTC. A day (anything :func:`parse_date` takes) stands for its first
    instant, or its last (``23:59:59.999999``) with ``end=True``, so that ``[start, end]`` covers
    whole days.
    """
    if isinstance(value, str) and "T" in value:
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise error(
                f"{name}={value!r} is not an ISO date or datetime: give YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
            ) from None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    day = parse_date(value, name=name, error=error)
    first = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return first + dt.timedelta(days=1, microseconds=-1) if end else first


def check_order(
    start: Any,
    end: Any,
    *,
    name: str = "period",
    error: ErrorType = GeoError,
    shown: tuple[Any, Any] | None = None,
) -> None:
    """Refuse a period whose ``end`` is before its ``start`` (dates or datetimes; equal is fine).

    ``shown``: the two values as the caller was given them, for the message (default: ``start, end``).
    """
    if end < start:
        a, b = shown if shown is not None else (start, end)
        raise error(f"{name} {a}..{b} ends before its start (end {b} is before start {a}); swap them")


@dataclass(frozen=True)
class DateRange:
    """Whole days ``start..end``, both inclusive (``end`` may equal ``start``)."""

    start: dt.date
    """First day."""
    end: dt.date
    """Last day (inclusive)."""

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
                raise GeoError(f"DateRange.{name}={value!r} is not a datetime.date; use DateRange.parse")
        check_order(self.start, self.end)

    @classmethod
    def parse(cls, start: Any, end: Any, *, name: str = "period", error: ErrorType = GeoError) -> DateRange:
        """The range of two days as :func:`parse_date` takes them; ``error`` if bad or reversed."""
        first = parse_date(start, name="start", error=error)
        last = parse_date(end, name="end", error=error)
        check_order(first, last, name=name, error=error)
        return cls(first, last)

    @property
    def days(self) -> int:
        """Number of days in the range."""
        return (self.end - self.start).days + 1

    @property
    def day_indices(self) -> tuple[int, int]:
        """``[first, stop)`` indices of the range on the store's time axis (see :func:`day_index`)."""
        return day_index(self.start), day_index(self.end) + 1

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def day_index(day: dt.date) -> int:
    """Index of ``day`` on the store's time axis: days since :data:`EPOCH` (negative before it)."""
    return (day - EPOCH).days


def index_date(index: int) -> dt.date:
    """The day at ``index`` on the store's time axis (inverse of :func:`day_index`; numpy ints too)."""
    return EPOCH + dt.timedelta(days=int(index))


# ---------------------------------------------------------------------------------------------------
# UTM zones
# ---------------------------------------------------------------------------------------------------

_ZONE_NAME = re.compile(r"utm(\d{2})([NS])")


@dataclass(frozen=True, order=True)
class UtmZone:
    """One standard 6-degree UTM zone and hemisphere (no Norway / Svalbard exceptions).

    Zone ``n`` spans longitudes ``[-180 + 6 (n - 1), -180 + 6 n)``; the CRS is EPSG 326nn in the north
    and 327nn (false northing 10 000 km) in the south.
    """

    number: int
    """Zone number, 1..60."""
    south: bool = False
    """True for the southern-hemisphere CRS (EPSG 327nn)."""

    def __post_init__(self) -> None:
        if not 1 <= self.number <= 60:
            raise GeoError(f"UTM zone {self.number} does not exist; zones are 1..60")

    @classmethod
    def containing(cls, lon: float, lat: float) -> UtmZone:
        """The zone of the point ``(lon, lat)`` (lon 180 falls in zone 60; the equator is north)."""
        return cls(min(math.floor((lon + 180.0) / 6.0) + 1, 60), lat < 0)

    @classmethod
    def from_epsg(cls, epsg: int, *, error: ErrorType = GeoError) -> UtmZone:
        """The zone of an EPSG code 32601..32660 (north) or 32701..32760 (south); ``error`` otherwise."""
        if 32601 <= epsg <= 32660 or 32701 <= epsg <= 32760:
            return cls(epsg % 100, epsg >= 32700)
        raise error(f"EPSG:{epsg} is not a UTM zone: give 32601..32660 (north) or 32701..32760 (south)")

    @classmethod
    def from_name(cls, name: str, *, error: ErrorType = GeoError) -> UtmZone:
        """The zone of a store group name such as ``"utm32N"`` (see :attr:`name`); ``error`` otherwise."""
        m = _ZONE_NAME.fullmatch(name)
        if m is None or not 1 <= int(m.group(1)) <= 60:
            raise error(f"zone name {name!r} is not of the form 'utm32N' (zone 01..60, N or S)")
        return cls(int(m.group(1)), m.group(2) == "S")

    @property
    def epsg(self) -> int:
        """EPSG code of the zone's CRS."""
        return (32700 if self.south else 32600) + self.number

    @property
    def crs(self) -> str:
        """The CRS as ``"EPSG:326nn"``."""
        return f"EPSG:{self.epsg}"

    @property
    def name(self) -> str:
        """Store group name, e.g. ``"utm32N"``."""
        return f"utm{self.number:02d}{'S' if self.south else 'N'}"

    @property
    def west_lon(self) -> float:
        """Western edge of the zone, degrees east."""
        return -180.0 + (self.number - 1) * 6.0

    @property
    def central_lon(self) -> float:
        """Central meridian of the zone, degrees east."""
        return self.west_lon + 3.0
