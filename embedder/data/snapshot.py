"""Bulk item discovery from a stac-geoparquet snapshot: one file of items instead of an API per unit.

A continental embedding run reads tens of thousands of work units; each would search the STAC API twice
(S2, S1). A snapshot written once (:func:`write_geoparquet_snapshot`, ``embedder stac-snapshot``) holds
the items of a region and period in a GeoParquet file (the stac-geoparquet layout: one row per item,
properties as columns, ``bbox`` as a struct covering column, ``datetime`` as a UTC timestamp).
:class:`GeoParquetCatalog` searches it with pyarrow (filters on ``collection``, ``datetime`` and the
``bbox`` columns, pushed down to the row groups' statistics) and converts the rows back to items with
stac-geoparquet's own functions, yielding them in time order like every other
:class:`~embedder.data.stac.Catalog`. ``open_catalog`` opens it for a path or fsspec URL ending in
``.parquet``.

Round trip: rows are made into item dicts by ``stac_geoparquet.arrow.stac_table_to_items``, then the
timestamps (``datetime``, ``start_datetime``, ...; stac-geoparquet formats them to whole seconds) are
restored at full precision from their columns, and the nulls that a shared table adds (properties or assets another item has) are dropped, so an item reads back as it was written
(a property that was explicitly ``null`` reads back absent). Snapshots keep asset hrefs as written:
unsigned. A snapshot taken from Planetary Computer records that in its metadata and is signed on read
(``planetary_computer.sign_inplace``), like the API itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pystac

from embedder.data.stac import (
    PLANETARY_COMPUTER_URL,
    BBoxError,
    Bounds,
    Catalog,
    CatalogError,
    DateLike,
    MemoryCatalog,
    check_bbox,
    check_period,
    is_planetary_computer,
    open_catalog,
)
from embedder.geo import BBox, add_bbox_option, bbox_argv
from embedder.sensors import S1, S2

__all__ = [
    "SNAPSHOT_METADATA_KEY",
    "GeoParquetCatalog",
    "SnapshotError",
    "cli_main",
    "write_geoparquet_snapshot",
]

SNAPSHOT_METADATA_KEY = b"embedder"
"""Parquet key-value metadata written by :func:`write_geoparquet_snapshot`: source, query, ``sign``."""

_WORLD: Bounds = (-180.0, -90.0, 180.0, 90.0)
_FIRST_DAY = dt.date(2014, 4, 3)  # Sentinel-1A's launch: no Sentinel item is older


class SnapshotError(CatalogError):
    """A snapshot cannot be written or read as asked (the message names the path and the fix)."""


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """(pyarrow-usable filesystem or None for local, path) of a local path or fsspec URL."""
    if not _is_remote(url):
        return None, str(Path(url.removeprefix("file://")))
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


class GeoParquetCatalog:
    """A stac-geoparquet snapshot (local path or fsspec URL) searched with pyarrow.

    ``storage_options`` go to fsspec for remote URLs (credentials come from the environment otherwise).
    ``sign``: sign asset hrefs with ``planetary_computer.sign_inplace`` on read; ``None`` (default)
    signs when the snapshot's metadata says it was taken from Planetary Computer. ``modifier`` replaces
    the signing with any callable applied to each item. Opening reads the file's footer (schema,
    row-group statistics); each search reads only the row groups its filters can match.
    """

    def __init__(
        self,
        url: str | Path,
        *,
        storage_options: dict[str, Any] | None = None,
        sign: bool | None = None,
        modifier: Callable[[Any], Any] | None = None,
    ) -> None:
        import pyarrow.dataset as ds

        self.url = str(url)
        fs, path = _filesystem(self.url, storage_options)
        try:
            self._dataset = ds.dataset(path, filesystem=fs, format="parquet")
        except (FileNotFoundError, OSError) as err:
            raise SnapshotError(
                f"stac-geoparquet snapshot {self.url!r} cannot be opened ({err}); write one with "
                "`embedder stac-snapshot CATALOG OUT.parquet`"
            ) from None
        schema = self._dataset.schema
        missing = [
            c for c in ("id", "collection", "datetime", "bbox", "geometry", "assets") if c not in schema.names
        ]
        if missing:
            raise SnapshotError(
                f"{self.url!r} is not a stac-geoparquet snapshot of items: it has no {missing} column(s) "
                f"(columns: {schema.names[:12]}); write one with `embedder stac-snapshot`"
            )
        meta = (schema.metadata or {}).get(SNAPSHOT_METADATA_KEY)
        self.metadata: dict[str, Any] = json.loads(meta) if meta else {}
        """What :func:`write_geoparquet_snapshot` recorded (source, query, ``sign``), or ``{}``."""
        if modifier is None and (self.metadata.get("sign", False) if sign is None else sign):
            import planetary_computer

            modifier = planetary_computer.sign_inplace
        self.modifier = modifier

    def _filter(self, collection: str, box: Bounds, t0: dt.datetime, t1: dt.datetime) -> Any:
        import pyarrow as pa
        import pyarrow.compute as pc

        schema = self._dataset.schema
        time_type = schema.field("datetime").type
        if getattr(time_type, "tz", None) is None:  # a naive timestamp column holds UTC
            t0, t1 = t0.replace(tzinfo=None), t1.replace(tzinfo=None)
        expr = (
            (pc.field("collection") == collection)
            & (pc.field("datetime") >= pa.scalar(t0, type=time_type))
            & (pc.field("datetime") <= pa.scalar(t1, type=time_type))
        )
        bbox_type = schema.field("bbox").type
        if pa.types.is_struct(bbox_type):  # the GeoParquet 1.1 covering: filtered in the scan
            x0, y0, x1, y1 = ("xmin", "ymin", "xmax", "ymax")
            expr &= (
                (pc.field("bbox", x0) <= box[2])
                & (pc.field("bbox", x1) >= box[0])
                & (pc.field("bbox", y0) <= box[3])
                & (pc.field("bbox", y1) >= box[1])
            )
        return expr

    def search(
        self, collection: str, *, bbox: Sequence[float], start: DateLike, end: DateLike
    ) -> Iterator[pystac.Item]:
        """Yield the items of ``collection`` intersecting ``bbox`` acquired in [start, end], in time order.

        Items are matched on their ``datetime`` (items with only ``start_datetime`` are not found).
        """
        import pyarrow as pa
        from stac_geoparquet.arrow import stac_table_to_items

        box = check_bbox(bbox)
        t0, t1 = check_period(start, end)
        table = self._dataset.to_table(filter=self._filter(collection, box, t0, t1))
        if not pa.types.is_struct(table.schema.field("bbox").type):  # a list bbox: filter here
            keep = [_intersects(b, box) for b in table.column("bbox").to_pylist()]
            table = table.filter(pa.array(keep, type=pa.bool_()))
        if table.num_rows == 0:
            return
        table = table.sort_by([("datetime", "ascending"), ("id", "ascending")])
        # stac-geoparquet formats timestamps back to whole seconds: keep the full-precision values
        times = {
            name: table.column(name).to_pylist()
            for name in _TIME_PROPERTIES
            if name in table.schema.names and pa.types.is_timestamp(table.schema.field(name).type)
        }
        for row, d in enumerate(stac_table_to_items(table)):
            item = pystac.Item.from_dict(_clean(d, {name: values[row] for name, values in times.items()}))
            if self.modifier is not None:
                self.modifier(item)
            yield item

    def __repr__(self) -> str:
        return f"GeoParquetCatalog({self.url!r})"


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    half = len(a) // 2
    return a[0] <= b[2] and b[0] <= a[half] and a[1] <= b[3] and b[1] <= a[half + 1]


def _drop_nulls(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


_TIME_PROPERTIES = (
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "expires",
    "published",
    "unpublished",
)
"""The properties stac-geoparquet stores as timestamp columns (and formats back to whole seconds)."""


def _clean(d: dict[str, Any], times: dict[str, dt.datetime | None]) -> dict[str, Any]:
    """Undo what a shared table adds to a row: null properties and absent assets; full-precision times."""
    d = _drop_nulls(d)
    props = _drop_nulls(d.get("properties") or {})
    for name, t in times.items():
        if t is not None:
            t = t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)
            props[name] = pystac.utils.datetime_to_str(t)
    d["properties"] = props
    d["assets"] = {k: _drop_nulls(a) for k, a in (d.get("assets") or {}).items() if a is not None}
    d["links"] = [_drop_nulls(link) for link in d.get("links") or []]
    d.setdefault("type", "Feature")
    return d


# --------------------------------------------------------------------------------------------------
# Writing a snapshot
# --------------------------------------------------------------------------------------------------


def _check_unsigned(item: pystac.Item) -> None:
    for key, asset in item.assets.items():
        if "sig=" in asset.href and "se=" in asset.href:
            raise SnapshotError(
                f"item {item.id!r} asset {key!r} carries a SAS token (expiring) in its href; write snapshots "
                "from an unsigned catalog (open_catalog(url, sign=False)): they are signed on read"
            )


def _add_metadata(path: Path, meta: dict[str, Any]) -> None:
    """Add :data:`SNAPSHOT_METADATA_KEY` to a parquet file's metadata (rewritten one row group at a time).

    stac-geoparquet's writer sets the file metadata itself (``geo``, ``stac-geoparquet``); the footer of
    a written file cannot be amended, so the row groups are copied under the extended schema.
    """
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    schema = schema.with_metadata(
        {**(schema.metadata or {}), SNAPSHOT_METADATA_KEY: json.dumps(meta).encode()}
    )
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for i in range(source.num_row_groups):
            writer.write_table(source.read_row_group(i))
    source.close()
    os.replace(tmp, path)


def write_geoparquet_snapshot(
    catalog_or_items: Catalog | Iterable[pystac.Item],
    path: str | Path,
    *,
    collections: Sequence[str] = (S2.collection, S1.collection),
    bbox: Sequence[float] = _WORLD,
    start: DateLike = _FIRST_DAY,
    end: DateLike | None = None,
    sign_on_read: bool = False,
    source: str | None = None,
    storage_options: dict[str, Any] | None = None,
    row_group_rows: int = 8192,
) -> int:
    """Write the items of ``collections`` in ``bbox`` over [start, end] as a stac-geoparquet file; their count.

    ``catalog_or_items``: any :class:`~embedder.data.stac.Catalog` (searched collection by collection,
    so rows are grouped by collection and sorted by time: row-group statistics then prune well) or
    items (filtered the same way through a :class:`~embedder.data.stac.MemoryCatalog`). ``end``
    defaults to today. Items are streamed to a temporary newline-delimited JSON file, then converted by
    ``stac_geoparquet.arrow.parse_stac_ndjson_to_parquet`` (schema inferred over all items, written in
    chunks), so memory holds one chunk, not the snapshot. ``path`` is a local path or an fsspec URL
    (``storage_options`` for its filesystem; the file is written locally, then uploaded).
    ``sign_on_read`` is recorded in the file's metadata: :class:`GeoParquetCatalog` then signs hrefs
    with ``planetary_computer`` (set it for Planetary Computer sources). Asset hrefs must be unsigned.
    Raises :class:`SnapshotError` when no item matches (nothing is written).
    """
    from stac_geoparquet.arrow import parse_stac_ndjson_to_parquet

    out = str(path)
    if not out.split("?", 1)[0].endswith(".parquet"):
        raise SnapshotError(f"snapshot path {out!r} must end in '.parquet' (open_catalog dispatches on it)")
    if row_group_rows < 1:
        raise SnapshotError(f"row_group_rows={row_group_rows} must be at least 1")
    box = check_bbox(bbox)
    t0, t1 = check_period(start, dt.date.today() if end is None else end)
    catalog: Catalog
    if isinstance(catalog_or_items, Catalog):
        catalog = catalog_or_items
    else:
        catalog = MemoryCatalog(catalog_or_items)
    meta = {
        "source": source or repr(catalog),
        "collections": list(collections),
        "bbox": list(box),
        "start": t0.isoformat(),
        "end": t1.isoformat(),
        "sign": bool(sign_on_read),
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    n = 0
    with tempfile.TemporaryDirectory(prefix="stac_snapshot_") as tmp:
        ndjson = Path(tmp) / "items.ndjson"
        with ndjson.open("w") as fh:
            for collection in collections:
                for item in catalog.search(collection, bbox=box, start=t0, end=t1):
                    _check_unsigned(item)
                    d = item.to_dict(include_self_link=False, transform_hrefs=False)
                    fh.write(json.dumps(d, separators=(",", ":")) + "\n")
                    n += 1
        if n == 0:
            raise SnapshotError(
                f"no {list(collections)} items in {catalog!r} for bbox {box} over {t0.date()}..{t1.date()}; "
                "nothing written (check the bbox, dates and collections)"
            )
        local = Path(tmp) / "snapshot.parquet" if _is_remote(out) else Path(out.removeprefix("file://"))
        local.parent.mkdir(parents=True, exist_ok=True)
        # one record batch, hence one row group, per chunk of rows
        parse_stac_ndjson_to_parquet(ndjson, local, chunk_size=row_group_rows)
        _add_metadata(local, meta)
        if _is_remote(out):
            fs, remote = _filesystem(out, storage_options)
            fs.put_file(str(local), remote)
    return n


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder stac-snapshot CATALOG OUT.parquet [--bbox ...] [--start ...] [--end ...]``."""
    parser = argparse.ArgumentParser(
        prog="embedder stac-snapshot",
        description="Write the S2/S1 items of a catalog, bbox and period to a stac-geoparquet snapshot that "
        "open_catalog (and the embedding job's `catalog`) reads instead of querying the API per unit.",
    )
    parser.add_argument("catalog", help="'planetary-computer', a STAC API URL, or a local catalog.json path")
    parser.add_argument("out", help="the snapshot: a local path or fsspec URL ending in .parquet")
    add_bbox_option(parser, default=",".join(f"{v:g}" for v in _WORLD), extra="default: the whole world")
    parser.add_argument("--start", default=_FIRST_DAY.isoformat(), help="first day, YYYY-MM-DD")
    parser.add_argument("--end", default=None, help="last day, YYYY-MM-DD (default: today)")
    parser.add_argument(
        "--collections", nargs="+", default=[S2.collection, S1.collection],
        help=f"collections to include (default: {S2.collection} {S1.collection})",
    )  # fmt: skip
    args = parser.parse_args(bbox_argv(argv, parser))
    try:
        bbox = BBox.parse(args.bbox, error=BBoxError).bounds
    except BBoxError as err:
        print(f"embedder stac-snapshot: {err}", file=sys.stderr)
        return 1
    text = PLANETARY_COMPUTER_URL if args.catalog == "planetary-computer" else args.catalog
    is_pc = text.startswith(("http://", "https://")) and is_planetary_computer(text)
    # read unsigned (tokens expire); a Planetary Computer snapshot is signed when it is read
    catalog = open_catalog(text, sign=False)
    if isinstance(catalog, GeoParquetCatalog):  # a snapshot of a snapshot keeps its signing
        is_pc = bool(catalog.metadata.get("sign", False))
    n = write_geoparquet_snapshot(
        catalog,
        args.out,
        collections=args.collections,
        bbox=bbox,
        start=args.start,
        end=args.end,
        sign_on_read=is_pc,
        source=text,
    )
    print(f"wrote {n} items to {args.out}", file=sys.stdout)
    return 0
