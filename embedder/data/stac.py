"""The catalog interface: search Sentinel-2 L2A and Sentinel-1 RTC items by bbox and period.

One small protocol, :class:`Catalog`, with four implementations behind :func:`open_catalog`:

* :class:`StacApiCatalog`: a STAC API read through pystac-client (Planetary Computer or any other),
  optionally signing asset hrefs with ``planetary_computer.sign_inplace`` (the only network-touching
  code of the data layer). When the API conforms to the STAC API sort extension (its landing page's
  ``conformsTo``; Planetary Computer does), a search is **one** paged request sequence over the whole
  period, sorted by ``properties.datetime`` then ``id``: an embedding work unit (366 days plus two
  temporal halos) costs one request per sensor when its items fit in a page (1000 items). Other APIs
  are searched month by month (one paged search per calendar month), the order then being made here;
* :class:`LocalCatalog`: a static STAC catalog on disk (the sample region, offline use);
* :class:`MemoryCatalog`: a list of items in memory (tests, hand-built item sets);
* :class:`~embedder.data.snapshot.GeoParquetCatalog`: a stac-geoparquet snapshot (a local or fsspec
  ``.parquet``), for continental runs that should not query an API per work unit.

``search`` always yields items sorted by time (then id) and holds at most one page (sorted API), one
month window (API without sorting), the light index (local catalog) or one search's matching rows
(snapshot) in memory, so a continent-wide period streams. :func:`open_catalog` keeps one
:class:`StacApiCatalog` per (URL, signing) per process, so a worker that reads many units opens the
API's landing page once.

Item helpers used by the cube loader: :func:`s2_scale_offset` (DN -> reflectance from
``s2:processing_baseline``; Planetary Computer items carry no raster offset), :func:`item_epsg`
(``proj:code`` or ``proj:epsg``) and :func:`check_item` (required assets present, map grid present).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import pystac

from embedder.geo import BBox, check_order, parse_datetime
from embedder.sensors import S2, SensorSpec

__all__ = [
    "PLANETARY_COMPUTER_URL",
    "SORT_BY_TIME",
    "BBox",
    "BBoxError",
    "Bounds",
    "Catalog",
    "CatalogError",
    "EmptySearchError",
    "ItemError",
    "LocalCatalog",
    "MemoryCatalog",
    "MissingAssetError",
    "NoMapGridError",
    "PeriodError",
    "StacApiCatalog",
    "catalog_file",
    "check_bbox",
    "check_item",
    "check_period",
    "clear_catalog_cache",
    "item_epsg",
    "item_time",
    "load_item_file",
    "month_windows",
    "open_catalog",
    "s2_baseline",
    "s2_scale_offset",
]

PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"
"""The Planetary Computer STAC API that ``open_catalog("planetary-computer")`` opens."""

Bounds = tuple[float, float, float, float]
"""Checked ``(lon_min, lat_min, lon_max, lat_max)`` degrees as a plain tuple (what STAC requests carry)."""

SORT_BY_TIME: list[dict[str, str]] = [
    {"field": "properties.datetime", "direction": "asc"},
    {"field": "id", "direction": "asc"},
]
"""The ``sortby`` of a sorted search (STAC API sort extension): time, then id, ascending."""

DateLike = dt.date | dt.datetime | str


class CatalogError(ValueError):
    """A catalog cannot be opened or searched as asked."""


class BBoxError(CatalogError):
    """A bounding box is not ``(lon_min, lat_min, lon_max, lat_max)`` in degrees."""


class PeriodError(CatalogError):
    """A search period is malformed (unparseable date, or end before start)."""


class EmptySearchError(CatalogError):
    """A search that must find items found none (the message names bbox, period and collection)."""


class ItemError(CatalogError):
    """A STAC item cannot be used (missing property, asset or map grid)."""


class MissingAssetError(ItemError):
    """An item lacks an asset the sensor needs (the message names item id and asset key)."""


class NoMapGridError(ItemError):
    """An item has no map grid (e.g. Sentinel-1 GRD in radar geometry): it cannot go onto a 10 m grid."""


# --------------------------------------------------------------------------------------------------
# Validation of the search arguments
# --------------------------------------------------------------------------------------------------


def check_bbox(bbox: BBox | Sequence[float]) -> Bounds:
    """Return ``bbox`` as a float 4-tuple, or raise :class:`BBoxError` naming it and the fix.

    The box must be ``(lon_min, lat_min, lon_max, lat_max)`` in degrees, with min < max, longitudes in
    [-180, 180] and latitudes in [-90, 90] (:meth:`embedder.geo.BBox.parse`). Projected coordinates
    (metres) and swapped corners fail.
    """
    return BBox.parse(bbox, error=BBoxError).bounds


def check_period(start: DateLike, end: DateLike) -> tuple[dt.datetime, dt.datetime]:
    """Return ``(start, end)`` as UTC datetimes (dates cover whole days), or raise :class:`PeriodError`.

    Dates are ``YYYY-MM-DD`` text or ``datetime.date``; datetimes are ISO text with ``T`` or
    ``datetime.datetime`` (naive ones are UTC); see :func:`embedder.geo.parse_datetime`.
    """
    t0 = parse_datetime(start, name="start", error=PeriodError)
    t1 = parse_datetime(end, end=True, name="end", error=PeriodError)
    check_order(t0, t1, error=PeriodError, shown=(start, end))
    return t0, t1


def month_windows(start: dt.datetime, end: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Split ``[start, end]`` into calendar-month windows ``[a, b]`` that do not overlap (b inclusive)."""
    a = start
    while a <= end:
        nxt = dt.datetime(a.year + (a.month == 12), a.month % 12 + 1, 1, tzinfo=dt.UTC)
        b = min(end, nxt - dt.timedelta(microseconds=1))
        yield a, b
        a = nxt


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --------------------------------------------------------------------------------------------------
# Item helpers
# --------------------------------------------------------------------------------------------------


def item_time(item: pystac.Item) -> dt.datetime:
    """The item's acquisition time (``datetime``, else ``start_datetime``) as an aware UTC datetime."""
    t = item.datetime or pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def item_epsg(item: pystac.Item) -> int:
    """EPSG code of the item's grid from ``proj:code`` ("EPSG:32632") or ``proj:epsg`` (item or asset).

    Raises :class:`NoMapGridError` naming the item when neither is present (e.g. Sentinel-1 GRD).
    """
    # Read by hand, not with pystac's ProjectionExtension: its ext() refuses items that do not list the
    # extension's schema (catalogs and test items carry proj:code without it), and its epsg takes only an
    # exact "EPSG:" prefix (raising on a malformed code) and returns proj:epsg unchecked (even a bool).
    sources: list[dict[str, Any]] = [item.properties] + [a.extra_fields for a in item.assets.values()]
    for props in sources:
        code = props.get("proj:code")
        if isinstance(code, str):
            match = re.fullmatch(r"EPSG:(\d+)", code.strip(), flags=re.IGNORECASE)
            if match:
                return int(match.group(1))
        epsg = props.get("proj:epsg")
        if isinstance(epsg, int) and not isinstance(epsg, bool):
            return epsg
    raise NoMapGridError(
        f"item {item.id!r} (collection {item.collection_id!r}) has no proj:code/proj:epsg: it has no map "
        "grid (Sentinel-1 GRD is in radar geometry); use sentinel-1-rtc items, which are on a UTM grid"
    )


_BASELINE = re.compile(r"\d{1,2}(\.\d{1,2})?")
"""A processing baseline: ``04.00``, ``05.10`` (or a number such as ``5.1`` where a catalog stores one)."""


def s2_baseline(item: pystac.Item) -> float:
    """``s2:processing_baseline`` as a number ("05.10" -> 5.1); :class:`ItemError` if absent or bad."""
    prop = S2.extra["processing_baseline_property"]
    raw = item.properties.get(prop)
    if raw is None or isinstance(raw, bool) or not _BASELINE.fullmatch(str(raw).strip()):
        # float() alone would take "nan", "inf" or "1e3" and pick an offset from a meaningless number
        raise ItemError(
            f"item {item.id!r} has {prop}={raw!r}, which is not a baseline like '05.10'; "
            "Sentinel-2 L2A items must carry it to pick the DN offset"
        )
    return float(str(raw).strip())


def s2_scale_offset(item: pystac.Item) -> tuple[float, float]:
    """``(scale, offset)`` with ``reflectance = DN * scale + offset`` for a Sentinel-2 L2A item.

    From processing baseline 04.00 on, L2A DNs carry a +1000 offset, so ``offset = -1000 * scale``
    (-0.1); before, ``offset = 0``. Read from ``s2:processing_baseline`` because Planetary Computer items
    carry no ``raster:bands`` offset. Constants come from ``sensors.S2.s2_scaling``.
    """
    rule = S2.s2_scaling
    if rule is None:  # pragma: no cover - the sensor table always defines it
        raise ItemError("sensors.S2 has no s2_scaling rule")
    baseline = s2_baseline(item)
    offset = -rule.offset_dn * rule.scale if baseline >= rule.offset_from_baseline else 0.0
    return rule.scale, offset


def check_item(item: pystac.Item, sensor: SensorSpec) -> None:
    """Raise :class:`ItemError` unless ``item`` can be loaded as ``sensor`` onto a map grid.

    Checks that every band asset (and the mask asset) exists, that the item has a map grid
    (:class:`NoMapGridError` for Sentinel-1 GRD) and, for Sentinel-2, a readable processing baseline.
    """
    if item.collection_id and item.collection_id != sensor.collection:
        if item.collection_id == "sentinel-1-grd":
            raise NoMapGridError(
                f"item {item.id!r} is Sentinel-1 GRD (collection 'sentinel-1-grd'): ground-range data has no "
                "map grid; search the 'sentinel-1-rtc' collection instead"
            )
        raise ItemError(
            f"item {item.id!r} is from collection {item.collection_id!r}, expected {sensor.collection!r}"
        )
    needed = list(sensor.assets) + ([sensor.mask_asset] if sensor.mask_asset else [])
    for key in needed:
        if key not in item.assets:
            raise MissingAssetError(
                f"item {item.id!r} has no asset {key!r} (has {sorted(item.assets)}); "
                f"{sensor.collection} items need {needed}"
            )
    item_epsg(item)
    if sensor.s2_scaling is not None:
        s2_scale_offset(item)


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


# --------------------------------------------------------------------------------------------------
# The protocol and its implementations
# --------------------------------------------------------------------------------------------------


@runtime_checkable
class Catalog(Protocol):
    """Anything that can stream STAC items of one collection by bbox and period."""

    def search(
        self, collection: str, *, bbox: Sequence[float], start: DateLike, end: DateLike
    ) -> Iterator[pystac.Item]:
        """Yield the items of ``collection`` intersecting ``bbox`` (lon/lat) acquired in [start, end]."""
        ...


class MemoryCatalog:
    """A catalog over items already in memory (tests, hand-made item sets)."""

    def __init__(self, items: Iterable[pystac.Item]) -> None:
        self.items = list(items)

    def search(
        self, collection: str, *, bbox: Sequence[float], start: DateLike, end: DateLike
    ) -> Iterator[pystac.Item]:
        """Yield matching items sorted by time (filters: collection, bbox overlap, period)."""
        box = check_bbox(bbox)
        t0, t1 = check_period(start, end)
        hits = [
            it
            for it in self.items
            if it.collection_id == collection
            and (it.bbox is None or _intersects(it.bbox, box))
            and t0 <= item_time(it) <= t1
        ]
        yield from sorted(hits, key=lambda it: (item_time(it), it.id))

    def __repr__(self) -> str:
        return f"MemoryCatalog({len(self.items)} items)"


def catalog_file(path: str | Path) -> Path:
    """The ``catalog.json`` of a static catalog given as that file, its folder or a ``file://`` URL.

    Raises :class:`CatalogError` naming the path when there is no such file.
    """
    p = Path(str(path).removeprefix("file://"))
    if p.is_dir():
        p = p / "catalog.json"
    if not p.is_file():
        raise CatalogError(
            f"local catalog {str(path)!r} not found; pass a catalog.json path or its folder "
            "(e.g. the one `embedder sample-region` writes)"
        )
    return p


class LocalCatalog:
    """A static STAC catalog on disk (``catalog.json`` with child collections and items).

    Opening reads a light index (id, collection, time, bbox, path) of every item once; ``search`` then
    loads full items one at a time, in time order, so memory holds only the index.
    """

    def __init__(self, path: str | Path) -> None:
        p = catalog_file(path)
        self.path = p
        root = pystac.Catalog.from_file(str(p))
        self._index: list[tuple[dt.datetime, str, str, tuple[float, ...] | None, str]] = []
        for item in root.get_items(recursive=True):
            href = item.get_self_href()
            if href is None:  # pragma: no cover - items read from files always have one
                continue
            bbox = tuple(item.bbox) if item.bbox else None
            self._index.append((item_time(item), item.id, item.collection_id or "", bbox, href))
        self._index.sort()

    def __len__(self) -> int:
        return len(self._index)

    def search(
        self, collection: str, *, bbox: Sequence[float], start: DateLike, end: DateLike
    ) -> Iterator[pystac.Item]:
        """Yield matching items in time order, reading each item file only when it is yielded."""
        box = check_bbox(bbox)
        t0, t1 = check_period(start, end)
        for t, _id, coll, ibox, href in self._index:
            if coll == collection and t0 <= t <= t1 and (ibox is None or _intersects(ibox, box)):
                item = pystac.Item.from_file(href)
                item.make_asset_hrefs_absolute()
                yield item

    def __repr__(self) -> str:
        return f"LocalCatalog({str(self.path)!r}, {len(self)} items)"


class StacApiCatalog:
    """A STAC API read with pystac-client: one sorted paged search per call, or month by month.

    ``modifier`` is applied to every item (``planetary_computer.sign_inplace`` signs Azure hrefs with a
    SAS token). ``page_size`` is the ``limit`` of each page request: 1000 by default, Planetary
    Computer's maximum (it returns at most 1000 items per page whatever is asked). ``sort``: search the
    whole period at once, sorted by the server (:data:`SORT_BY_TIME`); ``None`` (default) decides from
    the landing page's ``conformsTo`` (the STAC API sort extension), ``False`` forces the month-window
    search, ``True`` forces sorting on an API that does not advertise it. Opening reads the landing
    page (one request); :func:`open_catalog` caches opened catalogs per process.
    """

    def __init__(
        self,
        url: str,
        *,
        modifier: Callable[[Any], Any] | None = None,
        page_size: int = 1000,
        request_timeout_s: float = 60.0,
        sort: bool | None = None,
    ) -> None:
        import pystac_client  # imported here: local-only use never needs it
        from pystac_client.conformance import ConformanceClasses

        if page_size < 1:
            raise CatalogError(
                f"page_size={page_size} must be at least 1 (Planetary Computer allows up to 1000)"
            )
        self.url = url
        self.page_size = page_size
        self._client = pystac_client.Client.open(url, modifier=modifier, timeout=request_timeout_s)
        conforms = self._client.conforms_to(ConformanceClasses.SORT)
        self.sorted_search: bool = conforms if sort is None else sort
        """Whether :meth:`search` makes one sorted search (else one search per calendar month)."""
        if self.sorted_search and not conforms:
            # forced: tell pystac-client, which otherwise warns that the API does not conform
            self._client.add_conforms_to("SORT")

    def search(
        self, collection: str, *, bbox: Sequence[float], start: DateLike, end: DateLike
    ) -> Iterator[pystac.Item]:
        """Yield matching items in time order (then id), each once, as pages arrive.

        Sorted search: one search over ``[start, end]``, pages following ``next`` links. Otherwise one
        such search per calendar month, each window sorted here.
        """
        box = check_bbox(bbox)
        t0, t1 = check_period(start, end)
        if self.sorted_search:
            yield from self._search_sorted(collection, box, t0, t1)
        else:
            yield from self._search_by_month(collection, box, t0, t1)

    def _pages(
        self, collection: str, box: Bounds, a: dt.datetime, b: dt.datetime, *, sortby: Any = None
    ) -> Iterator[list[pystac.Item]]:
        search = self._client.search(
            collections=[collection],
            bbox=list(box),
            datetime=f"{_iso(a)}/{_iso(b)}",
            limit=self.page_size,
            sortby=sortby,
        )
        for page in search.pages():  # one request per page, following `next` links
            yield list(page.items)

    def _search_sorted(
        self, collection: str, box: Bounds, t0: dt.datetime, t1: dt.datetime
    ) -> Iterator[pystac.Item]:
        """One sorted search; the items of a page's last timestamp wait for the next page.

        The server orders by time then id, but its id collation may differ from Python's, and one
        timestamp (one datatake, several tiles) can span two pages: holding back the last timestamp's
        items makes the order exactly (time, id) here too. A server that does not sort by time is
        refused with :class:`CatalogError` instead of yielding out of order.
        """

        def key(it: pystac.Item) -> tuple[dt.datetime, str]:
            return item_time(it), it.id

        seen: set[str] = set()
        pending: list[pystac.Item] = []
        last: tuple[dt.datetime, str] | None = None
        for page in self._pages(collection, box, t0, t1, sortby=SORT_BY_TIME):
            for item in page:
                if item.id in seen:
                    continue
                seen.add(item.id)
                if last is not None and item_time(item) < last[0]:
                    raise CatalogError(
                        f"STAC API {self.url} returned {item.id!r} ({item_time(item).isoformat()}) after "
                        f"{last[1]!r} ({last[0].isoformat()}) although asked to sort by time; open it with "
                        "StacApiCatalog(url, sort=False) to search month by month instead"
                    )
                pending.append(item)
            if not pending:
                continue
            pending.sort(key=key)
            newest = item_time(pending[-1])
            cut = next(i for i, it in enumerate(pending) if item_time(it) == newest)
            ready, pending = pending[:cut], pending[cut:]
            if ready:
                last = key(ready[-1])
                yield from ready
        yield from pending

    def _search_by_month(
        self, collection: str, box: Bounds, t0: dt.datetime, t1: dt.datetime
    ) -> Iterator[pystac.Item]:
        """One paged search per calendar month, each window sorted here (APIs without sorting)."""
        seen_last_window: set[str] = set()
        for a, b in month_windows(t0, t1):
            window: dict[str, pystac.Item] = {}
            for page in self._pages(collection, box, a, b):
                for item in page:
                    if item.id not in seen_last_window:
                        window.setdefault(item.id, item)
            # At most one month of items is held, to yield them in time order.
            yield from sorted(window.values(), key=lambda it: (item_time(it), it.id))
            seen_last_window = set(window)

    def __repr__(self) -> str:
        return f"StacApiCatalog({self.url!r})"


def is_planetary_computer(url: str) -> bool:
    """Whether ``url`` is Planetary Computer's STAC API (its items need signing)."""
    return urlparse(url).netloc.endswith("planetarycomputer.microsoft.com")


@functools.lru_cache(maxsize=16)
def _cached_api(url: str, sign: bool) -> StacApiCatalog:
    return _open_api(url, sign)


def _open_api(url: str, sign: bool) -> StacApiCatalog:
    modifier = None
    if sign:
        import planetary_computer

        modifier = planetary_computer.sign_inplace
    return StacApiCatalog(url, modifier=modifier)


@functools.lru_cache(maxsize=16)
def _cached_snapshot(url: str) -> Catalog:
    from embedder.data.snapshot import GeoParquetCatalog

    return GeoParquetCatalog(url)


def clear_catalog_cache() -> None:
    """Forget the catalogs :func:`open_catalog` keeps: STAC APIs and remote snapshots (tests; a change)."""
    _cached_api.cache_clear()
    _cached_snapshot.cache_clear()


def open_catalog(
    url: str | Path,
    *,
    sign: bool | None = None,
    cached: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Catalog:
    """Open ``"planetary-computer"``, an ``http(s)://`` STAC API URL, a geoparquet snapshot or a local catalog.

    * STAC APIs: ``sign`` (default: only for Planetary Computer) signs asset hrefs with
      ``planetary_computer.sign_inplace``; the SAS endpoint is taken from ``PC_SDK_SAS_URL`` if set.
      With ``cached`` (default) the same :class:`StacApiCatalog` is returned for the same (URL, sign)
      in this process, so a worker reading many units opens the API (its landing page) once;
      ``cached=False`` opens a new one, :func:`clear_catalog_cache` forgets them all.
    * A path or fsspec URL ending in ``.parquet``: a stac-geoparquet snapshot
      (:class:`~embedder.data.snapshot.GeoParquetCatalog`; ``storage_options`` for its filesystem;
      ``sign`` defaults to what the snapshot's metadata says: signed when taken from Planetary Computer).
      Remote snapshots opened without ``storage_options`` are cached like APIs (one footer read per
      process); local files are opened afresh.
    * Anything else: a static catalog on disk (``catalog.json``, its folder or a ``file://`` URL),
      read afresh on every call (its files may change).
    """
    text = str(url)
    if text == "planetary-computer":
        text = PLANETARY_COMPUTER_URL
    if text.split("?", 1)[0].endswith(".parquet"):
        from embedder.data.snapshot import GeoParquetCatalog

        remote = "://" in text and not text.startswith("file://")
        if cached and remote and not storage_options and sign is None:
            return _cached_snapshot(text)
        return GeoParquetCatalog(text, storage_options=storage_options, sign=sign)
    if text.startswith(("http://", "https://")):
        use_sign = is_planetary_computer(text) if sign is None else bool(sign)
        return _cached_api(text, use_sign) if cached else _open_api(text, use_sign)
    if "://" in text and not text.startswith("file://"):
        raise CatalogError(
            f"catalog {text!r}: only 'planetary-computer', http(s) STAC API URLs, '.parquet' snapshots "
            "and local catalog paths are supported"
        )
    return LocalCatalog(text)


def load_item_file(path: str | Path) -> list[pystac.Item]:
    """Read items from a JSON file holding one Item, a FeatureCollection, or a plain list of Items."""
    with open(path) as fh:
        data = json.load(fh)
    if isinstance(data, list):
        return [pystac.Item.from_dict(d) for d in data]
    if data.get("type") == "FeatureCollection":  # parsed once above, so from_dict (from_file reads again)
        return list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
    if data.get("type") == "Feature":
        return [pystac.Item.from_dict(data)]
    raise CatalogError(f"{str(path)!r} holds neither an Item, a FeatureCollection nor a list of Items")
