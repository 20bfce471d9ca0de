"""What a store is: format id, error, quality flags, the opened-store handle, zone groups and georeferencing."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

from embedder.config import StoreConfig, from_dict
from embedder.flags import Flag as Flag  # re-exported: the store's flags array
from embedder.geo import UtmZone, index_date
from embedder.grid import PIXEL_M, Tile, WorkUnit
from embedder.store._fs import get_json, url_to_fs

STORE_FORMAT = "embedder-store/1"
"""Format id in the root attributes; bump when the layout changes incompatibly."""


class StoreError(RuntimeError):
    """The store is missing, inconsistent, or a unit's data does not fit it."""


class CorruptChunkError(StoreError):
    """A chunk failed its checksum or could not be decoded: its values are never returned.

    ``store``, ``array`` (``<zone>/<name>``) and ``key`` (the chunk's key inside the array, e.g.
    ``c/0/0/1/2``) name it; ``unit`` is the work unit whose shard holds it, when known.
    """

    def __init__(
        self,
        store: str,
        array: str,
        key: str,
        reason: str,
        *,
        unit: str | None = None,
        days: tuple[int, int] | None = None,
    ) -> None:
        self.store, self.array, self.key, self.reason, self.unit = store, array, key, reason, unit
        self.days = days
        """``[first, end)`` day indices (days since the store epoch) the chunk holds, when known."""
        fix = f"run `embedder verify {store} --repair` to re-embed the damaged units" + (
            f" (here {unit})" if unit else ""
        )
        super().__init__(f"corrupt chunk {array}/{key} in store {store!r}: {reason}; {fix}")

    def with_days(self, first: int, end: int) -> CorruptChunkError:
        """The same error for the days ``[first, end)`` of the chunk (what a partial result lost)."""
        return CorruptChunkError(
            self.store, self.array, self.key, self.reason, unit=self.unit, days=(first, end)
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-able description: array, chunk key, unit, reason and the dates it holds (ISO, inclusive)."""
        first = last = None
        if self.days is not None:
            first = index_date(self.days[0]).isoformat()
            last = index_date(self.days[1] - 1).isoformat()
        return {"array": self.array, "key": self.key, "unit": self.unit, "reason": self.reason,
                "first_date": first, "last_date": last}  # fmt: skip

    def short(self) -> str:
        """One line without the repair hint: ``<array> <key> [unit ...] [dates]: <reason>``."""
        j = self.to_json()
        dates = f" {j['first_date']}..{j['last_date']}" if j["first_date"] else ""
        unit = f" unit {self.unit}" if self.unit else ""
        return f"{self.array} {self.key}{unit}{dates}: {self.reason}"


def unit_marker(st: Store, zone: str, unit_id: str) -> dict[str, Any] | None:
    """A unit's done-marker (None: the unit is not done).

    A marker that is not a JSON object raises :class:`CorruptChunkError` for the unit (array ``_units``):
    the unit's data cannot be trusted, and ``embedder verify --repair`` re-embeds it.
    """
    path = f"{st.root}/_units/{zone}/{unit_id}.json"
    try:
        raw = st.fs.cat_file(path)
    except FileNotFoundError:
        return None
    return parse_marker(raw, st.url, zone, unit_id)


def parse_marker(raw: bytes, store: str, zone: str, unit_id: str) -> dict[str, Any]:
    """The done-marker object from its bytes; :class:`CorruptChunkError` naming the unit when damaged."""
    import json

    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptChunkError(
            store,
            "_units",
            f"{zone}/{unit_id}.json",
            f"the unit's done-marker is not JSON ({e})",
            unit=unit_id,
        ) from e
    if not isinstance(doc, dict):
        raise CorruptChunkError(
            store,
            "_units",
            f"{zone}/{unit_id}.json",
            "the unit's done-marker is not a JSON object",
            unit=unit_id,
        )
    return doc


class StoreMetadataError(StoreError):
    """A metadata object of the store (``zarr.json`` of the root, a zone group or an array) is damaged.

    ``embedder verify --repair`` re-embeds units; it does not rewrite metadata: restore the file from a
    copy of the store or rebuild the store.
    """


CHUNK_CHECKSUM = "crc32c"
"""Checksum appended to every compressed chunk of new stores (zarr v3 ``crc32c`` codec, little-endian);
recorded as the root attribute ``embedder:chunk_checksum``. Stores without it were written before chunks
carried checksums and are read unchecked."""


_ARRAYS = ("embedding", "flags", "valid_px")

# ---------------------------------------------------------------------------------------------------
# store handle
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Store:
    """An opened store: where it is and its resolved layout. Pass it (or the URL) to the functions."""

    url: str
    """Root URL (local path, ``file://``, ``gs://``, ``s3://``, ``memory://``)."""
    storage_options: dict[str, Any]
    """fsspec options for ``url`` (empty for local paths)."""
    cfg: StoreConfig
    """Layout and quantisation."""
    attrs: dict[str, Any]
    """Root group attributes."""

    @property
    def checksummed(self) -> bool:
        """Whether every chunk carries a :data:`CHUNK_CHECKSUM` (stores written since checked reads)."""
        return self.attrs.get("embedder:chunk_checksum") == CHUNK_CHECKSUM

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of the store."""
        return url_to_fs(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        """The store's root path inside :attr:`fs`."""
        return url_to_fs(self.url, self.storage_options)[1]

    @functools.cached_property
    def _zone_extents(self) -> dict[str, ZoneExtent]:
        return {}

    def zone_extent(self, zone: str) -> ZoneExtent:
        """The extent of zone group ``zone`` (:class:`StoreError` if there is none).

        Read from the zone's metadata once per handle and kept, also when the handle is pickled to another
        process: a job reads it once and its writers do not read it again per unit.
        """
        if zone not in self._zone_extents:
            self._zone_extents[zone] = ZoneExtent.from_attrs(zone, zone_attrs(self, zone))
        return self._zone_extents[zone]

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the fields and the zone extents read so far."""
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**state, "_zone_extents": dict(self._zone_extents)}


def as_store(store: Store | str, storage_options: dict[str, Any] | None = None) -> Store:
    """Open a store by URL (reads its root attributes once), or pass an opened :class:`Store` through.

    Raises :class:`StoreError` when there is no store or it is of another format.
    """
    if isinstance(store, Store):
        return store
    fs, root = url_to_fs(store, storage_options)
    attrs_doc = _metadata_json(fs, f"{root}/zarr.json", store, "the store's root metadata zarr.json")
    if attrs_doc is None:
        raise StoreError(
            f"no embedding store at {store!r} (no zarr.json there); check the URL, or write one with the "
            "embed job (python -m ray_jobs.embed, or make demo)"
        )
    attrs = attrs_doc.get("attributes", {})
    if attrs.get("embedder:format") != STORE_FORMAT:
        raise StoreError(
            f"{store!r} is not an embedding store of format {STORE_FORMAT!r} "
            f"(found {attrs.get('embedder:format')!r})"
        )
    try:
        cfg = from_dict(StoreConfig, attrs["embedder:store_config"], where=f"{store}/zarr.json")
        if not isinstance(attrs["embedder:zones"], list):
            raise TypeError("embedder:zones is not a list")
    except (KeyError, TypeError, ValueError) as e:
        raise StoreMetadataError(
            f"the root metadata zarr.json of store {store!r} is damaged ({type(e).__name__}: {e}); "
            + _METADATA_FIX
        ) from e
    return Store(url=store, storage_options=dict(storage_options or {}), cfg=cfg, attrs=attrs)


def zone_attrs(store: Store, zone: str) -> dict[str, Any]:
    """Attributes of a zone group (StoreError if the store has no such zone)."""
    doc = _metadata_json(
        store.fs, f"{store.root}/{zone}/zarr.json", store.url, f"zone group metadata {zone}/zarr.json"
    )
    if doc is None:
        raise StoreError(f"store {store.url!r} has no zone group {zone!r}")
    attrs = doc.get("attributes", {})
    for key in ("embedder:extent", "proj:epsg", "spatial:transform", "spatial:shape"):
        if key not in attrs:
            raise StoreMetadataError(
                f"zone group metadata {zone}/zarr.json of store {store.url!r} is damaged (no {key!r}); "
                + _METADATA_FIX
            )
    return attrs


_METADATA_FIX = (
    "`embedder verify --repair` re-embeds units but does not rewrite metadata: restore the file from a copy "
    "of the store, or rebuild the store"
)


def _metadata_json(fs: Any, path: str, store: str, what: str) -> dict[str, Any] | None:
    """A metadata document (None when absent); :class:`StoreMetadataError` when it is not a JSON object."""
    try:
        doc = get_json(fs, path)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise StoreMetadataError(
            f"{what} of store {store!r} is damaged (not JSON: {e}); " + _METADATA_FIX
        ) from e
    if doc is not None and not isinstance(doc, dict):
        raise StoreMetadataError(
            f"{what} of store {store!r} is damaged (not a JSON object); " + _METADATA_FIX
        )
    return doc


# ---------------------------------------------------------------------------------------------------
# zone extents
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ZoneExtent:
    """The tiles and periods one UTM zone group of a store spans (its ``embedder:extent`` attribute)."""

    name: str
    """Zone group name, e.g. ``utm32N``."""
    epsg: int
    """EPSG code of the zone's UTM CRS."""
    col0: int
    """Westmost tile column."""
    row_top: int
    """Northmost tile row."""
    n_cols: int
    """Tile columns."""
    n_rows: int
    """Tile rows."""
    n_periods: int
    """Periods from the store epoch (the time axis is ``n_periods * period_days`` days long)."""
    first_period: int = 0
    """First period with planned units (no unit is read before it; 0 in stores made before it existed)."""

    @classmethod
    def from_attrs(cls, name: str, a: dict[str, Any]) -> ZoneExtent:
        """The extent from a zone group's attributes."""
        e = a["embedder:extent"]
        return cls(
            name, int(a["proj:epsg"]), e["col0"], e["row_top"], e["n_cols"], e["n_rows"], e["n_periods"],
            int(e.get("first_period", 0)),
        )  # fmt: skip

    def tile_index(self, tile: Tile) -> tuple[int, int]:
        """(tile_y, tile_x) of a tile inside this zone's arrays, or StoreError."""
        ty, tx = self.row_top - tile.row, tile.col - self.col0
        if not (0 <= ty < self.n_rows and 0 <= tx < self.n_cols):
            raise StoreError(
                f"tile {tile.id} is outside the store's {self.name} extent (tile columns "
                f"{self.col0}..{self.col0 + self.n_cols - 1}, rows {self.row_top - self.n_rows + 1}..{self.row_top}); "
                "create the store with all the units it must hold"
            )
        return ty, tx

    def tile_at(self, ty: int, tx: int, size_px: int) -> Tile:
        """The tile at ``(tile_y, tile_x)`` of this zone's arrays (the inverse of :meth:`tile_index`)."""
        utm = UtmZone.from_name(self.name, error=StoreError)
        return Tile(
            zone=utm.number, south=utm.south, col=self.col0 + tx, row=self.row_top - ty, size_px=size_px
        )


def zone_extents(units: Sequence[WorkUnit]) -> dict[str, ZoneExtent]:
    """The extent of each UTM zone group that ``units`` need, by zone name (sorted)."""
    by_zone: dict[str, list[WorkUnit]] = {}
    for u in units:
        by_zone.setdefault(u.tile.zone_name, []).append(u)
    out = {}
    for name, us in sorted(by_zone.items()):
        cols = [u.tile.col for u in us]
        rows = [u.tile.row for u in us]
        out[name] = ZoneExtent(
            name=name,
            epsg=us[0].tile.epsg,
            col0=min(cols),
            row_top=max(rows),
            n_cols=max(cols) - min(cols) + 1,
            n_rows=max(rows) - min(rows) + 1,
            n_periods=max(u.period.index for u in us) + 1,
            first_period=min(u.period.index for u in us),
        )
    return out


# ---------------------------------------------------------------------------------------------------
# georeferencing
# ---------------------------------------------------------------------------------------------------


def georef_attrs(zone: ZoneExtent, cfg: StoreConfig) -> tuple[dict[str, Any], tuple[float, ...]]:
    """CF grid-mapping attributes of a zone's ``spatial_ref`` and its GDAL GeoTransform."""
    from pyproj import CRS

    crs = CRS.from_epsg(zone.epsg)
    tile_m = cfg.tile_px * PIXEL_M
    x0 = zone.col0 * tile_m
    y0 = (zone.row_top + 1) * tile_m
    gt = (x0, PIXEL_M, 0.0, y0, 0.0, -PIXEL_M)
    wkt = crs.to_wkt()
    cf = crs.to_cf()
    cf.update({"crs_wkt": wkt, "spatial_ref": wkt, "GeoTransform": " ".join(repr(v) for v in gt)})
    return cf, gt
