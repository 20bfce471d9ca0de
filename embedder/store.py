"""The embedding store: a Zarr v3 hierarchy of per-date 7-d embeddings on UTM 10 m grids.

Layout (docs/store.md has the reasoning and the measured numbers)::

    <url>/zarr.json                       root group: store attrs (emb:, geoemb:, model, fingerprint)
    <url>/utm32N/zarr.json                one group per UTM zone (proj:/spatial: attrs)
    <url>/utm32N/embedding                (time, feature, y, x) uint16, value = code * quant_step, 65535 = none
    <url>/utm32N/flags                    (time, y, x) uint8 bit flags (:class:`Flag`), 0 = no embedding
    <url>/utm32N/valid_px                 (time, tile_y, tile_x) uint32 per-date valid-observation count
    <url>/utm32N/time, y, x, spatial_ref  daily time axis from 2015-01-01, pixel centres, CF grid mapping
    <url>/_plan.json                      the planned tiles and periods (what "complete" means)
    <url>/_units/<zone>/<unit id>.json    done markers, written last (dates, counts, object checksums)
    <url>/_failures/<zone>/<unit id>.json failed units with their reasons

The time axis is daily: index = days since 2015-01-01. A work unit (tile x period block,
:mod:`embedder.grid`) is exactly one shard of each array, so it is written as one object per array:
the shard is encoded in memory and put whole, then the done-marker is put. Writers of different units
never touch the same object; a unit without a marker is rewritten (its objects replaced whole).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import math
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import StoreConfig, from_dict, to_dict
from embedder.grid import EPOCH, PIXEL_M, Period, Tile, WorkUnit
from embedder.sensors import EMBEDDING_DIM

__all__ = [
    "FILL_CODE",
    "MISSING_CHUNK",
    "STORE_FORMAT",
    "Flag",
    "PixelSeries",
    "SeriesReader",
    "ShardIndex",
    "Store",
    "StoreConfig",
    "StoreError",
    "UnitWrite",
    "VerifyReport",
    "ZoneExtent",
    "as_store",
    "cli_verify",
    "code_fingerprint",
    "create_store",
    "decode_chunk",
    "dequantise",
    "encode_shard",
    "get_json",
    "is_done",
    "list_done",
    "list_failures",
    "open_store",
    "put_object",
    "quantise",
    "record_failure",
    "units_of",
    "url_to_fs",
    "verify",
    "write_unit",
    "zarr_store",
    "zone_attrs",
]

STORE_FORMAT = "embedder-store/1"
"""Format id in the root attributes; bump when the layout changes incompatibly."""
FILL_CODE = 65535
"""uint16 code of "no embedding" (CF ``_FillValue``); codes 0..65534 are values ``code * quant_step``."""


class StoreError(RuntimeError):
    """The store is missing, inconsistent, or a unit's data does not fit it."""


class Flag(enum.IntFlag):
    """Bits of the ``flags`` array (uint8). 0 means no embedding at this pixel and date."""

    VALID = 1
    """An embedding is stored here."""
    GAP_RULE = 2
    """The window's 10 gaps summed to >= 200 days and were replaced by 1-day steps (SPEC.md 7)."""
    S1_MISSING = 4
    """No Sentinel-1 acquisition could be matched to the centre date (S1 inputs were masked)."""
    S1_GAP_LARGE = 8
    """The matched S1 acquisition is far from the S2 date (beyond the cube's large-gap threshold)."""
    EDGE = 16
    """Fewer than 5 usable dates existed on one side of the centre (period or archive edge)."""
    CENTRE_FILLED = 32
    """The pixel's own S2 value on this date was missing (cloud, shadow, no data) and gap-filled."""
    S1_FILLED = 64
    """The pixel's matched S1 value on this date was missing and gap-filled."""


_ARRAYS = ("embedding", "flags", "valid_px")


# ---------------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------------


def quantise(values: np.ndarray, *, step: float) -> tuple[np.ndarray, int]:
    """Float embeddings -> uint16 codes ``round(v / step)``; NaN -> :data:`FILL_CODE`.

    Values below 0 (Softplus outputs are >= 0; tiny negatives are float noise) and above
    ``65534 * step`` are clipped. Returns the codes and the number of clipped values beyond half a step.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    q = np.rint(np.where(finite, v, 0.0) / step)
    clipped = int(np.count_nonzero(finite & ((q < -0.5) | (q > FILL_CODE - 1))))
    codes = np.clip(q, 0, FILL_CODE - 1).astype(np.uint16)
    codes[~finite] = FILL_CODE
    return codes, clipped


def dequantise(codes: np.ndarray, *, step: float) -> np.ndarray:
    """uint16 codes -> float32 values; :data:`FILL_CODE` -> NaN."""
    out = codes.astype(np.float32) * np.float32(step)
    out[codes == FILL_CODE] = np.nan
    return out


# ---------------------------------------------------------------------------------------------------
# store handle and IO helpers
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
    def fs(self) -> Any:
        """The fsspec filesystem of the store."""
        return url_to_fs(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        """The store's root path inside :attr:`fs`."""
        return url_to_fs(self.url, self.storage_options)[1]


def url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem and root path (no trailing slash) of ``url``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/")


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def zarr_store(url: str, storage_options: dict[str, Any] | None, *, read_only: bool) -> Any:
    """A zarr store object for ``url``: ``LocalStore`` for local paths, ``FsspecStore`` otherwise."""
    import zarr.storage

    fs, path = url_to_fs(url, storage_options)
    if _is_local(fs):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def put_object(fs: Any, path: str, data: bytes) -> None:
    """Put one whole object (the single place objects are written; tests patch it to interrupt)."""
    if _is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def get_json(fs: Any, path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when it does not exist."""
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def as_store(store: Store | str, storage_options: dict[str, Any] | None = None) -> Store:
    """Open a store by URL (reads its root attributes once), or pass an opened :class:`Store` through.

    Raises :class:`StoreError` when there is no store or it is of another format.
    """
    if isinstance(store, Store):
        return store
    fs, root = url_to_fs(store, storage_options)
    attrs_doc = get_json(fs, f"{root}/zarr.json")
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
    cfg = from_dict(StoreConfig, attrs["embedder:store_config"], where=f"{store}/zarr.json")
    return Store(url=store, storage_options=dict(storage_options or {}), cfg=cfg, attrs=attrs)


def code_fingerprint() -> str:
    """sha256 (16 hex) of the ``embedder`` package's Python sources: which code wrote a unit."""
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(pkg.rglob("*.py")):
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _fingerprint(model_version: str, inputs: dict[str, Any], params: dict[str, Any], cfg: StoreConfig) -> str:
    blob = json.dumps(
        {"model_version": model_version, "inputs": inputs, "params": params, "store": to_dict(cfg)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def _zone_extents(units: Sequence[WorkUnit]) -> dict[str, ZoneExtent]:
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
# create
# ---------------------------------------------------------------------------------------------------


def _compressors(cfg: StoreConfig) -> Any:
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=cfg.compression_level, shuffle="bitshuffle")]


def _georef_attrs(zone: ZoneExtent, cfg: StoreConfig) -> tuple[dict[str, Any], tuple[float, ...]]:
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


def create_store(
    url: str,
    *,
    units: Sequence[WorkUnit],
    model_version: str,
    inputs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    cfg: StoreConfig | None = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    encoders: dict[str, str] | None = None,
) -> Store:
    """Create the store template for ``units`` (metadata and coordinates only), or reopen it.

    Every unit's tile must have ``cfg.tile_px`` and its period ``cfg.period_days``. If a store already
    exists at ``url`` and ``overwrite`` is False, it is reopened when its model version, inputs,
    parameters and layout fingerprint match and its extent holds all ``units`` (re-runs resume);
    otherwise :class:`StoreError` names the difference.

    ``inputs`` describes the data (catalog, collections, region); ``params`` the inference parameters;
    both go into the fingerprint and the root attributes together with ``model_version``. ``encoders``
    (sensor -> ``ModelConfig.encoder``, :func:`embedder.training.checkpoint_encoders`) says which frame
    encoder made the embeddings (``embedder:encoders``, ``geoemb:model.encoders``); it follows from the
    model version, so it is recorded but not fingerprinted.
    """
    import zarr

    cfg = cfg or StoreConfig()
    inputs, params = dict(inputs or {}), dict(params or {})
    if not units:
        raise StoreError("create_store got no units; give the work units from embedder.grid.work_units()")
    for u in units:
        if u.tile.size_px != cfg.tile_px or u.period.period_days != cfg.period_days:
            raise StoreError(
                f"unit {u.id} has tile_px={u.tile.size_px}, period_days={u.period.period_days} but the store "
                f"layout has tile_px={cfg.tile_px}, period_days={cfg.period_days}; make both from one StoreConfig"
            )
    fingerprint = _fingerprint(model_version, inputs, params, cfg)
    zones = _zone_extents(units)
    fs, root = url_to_fs(url, storage_options)

    if not overwrite and fs.exists(f"{root}/zarr.json"):
        store = as_store(url, storage_options)
        old = store.attrs.get("embedder:fingerprint")
        if old != fingerprint:
            raise StoreError(
                f"store {url!r} exists with fingerprint {old} (model {store.attrs.get('embedder:model_version')!r}), "
                f"not {fingerprint} (model {model_version!r}): use another URL or overwrite=True"
            )
        existing = set(store.attrs.get("embedder:zones", []))
        for name in zones:
            if name not in existing:
                raise StoreError(f"store {url!r} has no zone group {name}; recreate it with all units")
            zat = zone_attrs(store, name)
            have = ZoneExtent.from_attrs(name, zat)
            for u in units:
                if u.tile.zone_name == name:
                    have.tile_index(u.tile)
                    if not have.first_period <= u.period.index < have.n_periods:
                        raise StoreError(
                            f"unit {u.id} is outside the store's time extent; recreate the store"
                        )
        plan = get_json(fs, f"{root}/_plan.json") or {"units": []}
        new = sorted(set(plan["units"]) | {u.id for u in units})
        if len(new) != len(plan["units"]):  # more units inside the extent: extend the plan
            put_object(fs, f"{root}/_plan.json", json.dumps(_plan(WorkUnit.from_id(u) for u in new)).encode())
        return store

    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    zstore = zarr_store(url, storage_options, read_only=False)
    root_attrs = _root_attrs(cfg, model_version, inputs, params, fingerprint, sorted(zones), encoders or {})
    group = zarr.open_group(zstore, mode="w", zarr_format=3, attributes=root_attrs)
    tp, cp, pd_, cd = cfg.tile_px, cfg.chunk_px, cfg.period_days, cfg.chunk_days
    for name, z in zones.items():
        georef, gt = _georef_attrs(z, cfg)
        ny, nx, nt = z.n_rows * tp, z.n_cols * tp, z.n_periods * pd_
        zattrs = {
            "proj:epsg": z.epsg,
            "proj:code": f"EPSG:{z.epsg}",
            "proj:wkt2": georef["crs_wkt"],
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]],
            "spatial:shape": [ny, nx],
            "embedder:extent": {
                "col0": z.col0,
                "row_top": z.row_top,
                "n_cols": z.n_cols,
                "n_rows": z.n_rows,
                "n_periods": z.n_periods,
                "first_period": z.first_period,
            },
        }
        g = group.create_group(name, attributes=zattrs)
        comp = _compressors(cfg)
        common = {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref"}
        g.create_array(
            "embedding",
            shape=(nt, EMBEDDING_DIM, ny, nx),
            chunks=(cd, EMBEDDING_DIM, cp, cp),
            shards=(pd_, EMBEDDING_DIM, tp, tp),
            dtype="uint16",
            fill_value=FILL_CODE,
            compressors=comp,
            dimension_names=("time", "feature", "y", "x"),
            attributes={
                **common,
                "long_name": "per-date 7-d embedding (Softplus outputs, quantised)",
                "scale_factor": cfg.quant_step,
                "_FillValue": FILL_CODE,
                "units": "1",
            },
        )
        g.create_array(
            "flags",
            shape=(nt, ny, nx),
            chunks=(cd, cp, cp),
            shards=(pd_, tp, tp),
            dtype="uint8",
            fill_value=0,
            compressors=comp,
            dimension_names=("time", "y", "x"),
            attributes={
                **common,
                "long_name": "quality bit flags (0 = no embedding)",
                "flag_masks": [int(f) for f in Flag],
                "flag_meanings": " ".join(str(f.name).lower() for f in Flag),
            },
        )
        g.create_array(
            "valid_px",
            shape=(nt, z.n_rows, z.n_cols),
            chunks=(pd_, 1, 1),
            dtype="uint32",
            fill_value=0,
            compressors=comp,
            dimension_names=("time", "tile_y", "tile_x"),
            attributes={"long_name": "valid observation pixels of the tile on each date (0 = no date)"},
        )
        time = g.create_array("time", shape=(nt,), chunks=(nt,), dtype="int32", fill_value=0,
                              dimension_names=("time",),
                              attributes={"units": f"days since {EPOCH.isoformat()}",
                                          "calendar": "proleptic_gregorian", "standard_name": "time"})  # fmt: skip
        time[:] = np.arange(nt, dtype=np.int32)
        x = g.create_array("x", shape=(nx,), chunks=(nx,), dtype="float64", fill_value=0.0,
                           dimension_names=("x",),
                           attributes={"standard_name": "projection_x_coordinate", "units": "m", "axis": "X"})  # fmt: skip
        x[:] = gt[0] + PIXEL_M * (np.arange(nx) + 0.5)
        y = g.create_array("y", shape=(ny,), chunks=(ny,), dtype="float64", fill_value=0.0,
                           dimension_names=("y",),
                           attributes={"standard_name": "projection_y_coordinate", "units": "m", "axis": "Y"})  # fmt: skip
        y[:] = gt[3] - PIXEL_M * (np.arange(ny) + 0.5)
        sref = g.create_array("spatial_ref", shape=(), dtype="int32", fill_value=0, attributes=georef)
        sref[...] = 0
    put_object(fs, f"{root}/_plan.json", json.dumps(_plan(units)).encode())
    return as_store(url, storage_options)


def _plan(units: Iterable[WorkUnit]) -> dict[str, list[Any]]:
    us = list(units)
    return {
        "tiles": sorted({u.tile.id for u in us}),
        "periods": sorted({u.period.index for u in us}),
        "units": sorted(u.id for u in us),
    }


def _root_attrs(
    cfg: StoreConfig,
    model_version: str,
    inputs: dict[str, Any],
    params: dict[str, Any],
    fingerprint: str,
    zones: list[str],
    encoders: dict[str, str],
) -> dict[str, Any]:
    quant = {"dtype": "uint16", "scale": cfg.quant_step, "offset": 0.0, "nodata": FILL_CODE}
    return {
        "embedder:format": STORE_FORMAT,
        "embedder:model_version": model_version,
        "embedder:fingerprint": fingerprint,
        "embedder:code_fingerprint": code_fingerprint(),
        "embedder:inputs": inputs,
        "embedder:params": params,
        "embedder:encoders": encoders,
        "embedder:store_config": to_dict(cfg),
        "embedder:zones": zones,
        "embedder:epoch": EPOCH.isoformat(),
        "embedder:flags": {str(f.name).lower(): int(f) for f in Flag},
        # STAC embeddings extension fields, mirrored on the store's STAC Collection (embedder.stac_store)
        "emb:dimensions": EMBEDDING_DIM,
        "emb:type": "pixel",
        "emb:data_type": "uint16",
        "emb:quantization": quant,
        "emb:model": model_version,
        "emb:spatial_resolution": PIXEL_M,
        "emb:temporal_resolution": "per Sentinel-2 acquisition date",
        # geoemb: Zarr convention: where the embedding lives in this hierarchy and how to decode it
        "geoemb:version": "0.1",
        "geoemb:variable": "embedding",
        "geoemb:dimension_name": "feature",
        "geoemb:dimensions": EMBEDDING_DIM,
        "geoemb:quality_variable": "flags",
        "geoemb:quantization": quant,
        "geoemb:model": {
            "name": "embedder fusion (Peters et al. 2025)",
            "version": model_version,
            "encoders": encoders,
        },
        "geoemb:groups": zones,
        "geoemb:crs_per_group": True,
    }


def zone_attrs(store: Store, zone: str) -> dict[str, Any]:
    """Attributes of a zone group (StoreError if the store has no such zone)."""
    doc = get_json(store.fs, f"{store.root}/{zone}/zarr.json")
    if doc is None:
        raise StoreError(f"store {store.url!r} has no zone group {zone!r}")
    return doc.get("attributes", {})


# ---------------------------------------------------------------------------------------------------
# write
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UnitWrite:
    """What :func:`write_unit` did."""

    unit_id: str
    """The unit."""
    keys: tuple[str, ...]
    """Object keys written or removed (relative to the store root), the done-marker last."""
    nbytes: int
    """Bytes written in data objects (without the marker)."""
    n_dates: int
    """Dates written."""
    clipped: int
    """Feature values clipped to the quantisation range (should be 0)."""


def _marker_path(store: Store, unit: WorkUnit) -> str:
    return f"{store.root}/_units/{unit.tile.zone_name}/{unit.id}.json"


def _failure_path(store: Store, unit: WorkUnit) -> str:
    return f"{store.root}/_failures/{unit.tile.zone_name}/{unit.id}.json"


def _encode_shard(
    *, shape: tuple[int, ...], chunks: tuple[int, ...], shards: tuple[int, ...] | None, dtype: str,
    fill_value: int, cfg: StoreConfig, blocks: Iterable[tuple[tuple[slice, ...], np.ndarray]],
) -> bytes | None:  # fmt: skip
    """Encode one shard (or chunk) exactly as the store array would, in memory; None if all fill."""
    import zarr
    import zarr.storage
    from zarr.core.buffer import Buffer

    mem: dict[str, Buffer] = {}
    arr = zarr.create_array(
        zarr.storage.MemoryStore(mem),
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        fill_value=fill_value,
        compressors=_compressors(cfg),
        config={"write_empty_chunks": False},
    )
    for sel, block in blocks:
        arr[sel] = block
    key = arr.metadata.encode_chunk_key((0,) * len(shape))
    buf = mem.get(key)
    return None if buf is None else buf.to_bytes()


# ---------------------------------------------------------------------------------------------------
# shards: encoded here, chunk by chunk, in the order that makes a pixel's year one byte range
# ---------------------------------------------------------------------------------------------------

MISSING_CHUNK = 2**64 - 1
"""Offset and length of an absent (all-fill) inner chunk in a shard index (zarr v3 sharding)."""


def _blosc(cfg: StoreConfig) -> Any:
    import numcodecs.blosc
    from numcodecs import Blosc

    # Blosc's own threads write compressed blocks in the order they finish (same size, other bytes);
    # off, as zarr sets it on import, so shards are bitwise reproducible. encode_shard uses a pool instead.
    numcodecs.blosc.use_threads = False

    # the bytes of zarr's BloscCodec(cname="zstd", shuffle="bitshuffle"), typesize from the dtype
    return Blosc(cname="zstd", clevel=cfg.compression_level, shuffle=Blosc.BITSHUFFLE)


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """Where each inner chunk of one shard object lies: ``offsets`` and ``nbytes`` over the chunk grid.

    The grid is the shard's chunk grid (``(period_days / chunk_days, [1,] tile_px / chunk_px,
    tile_px / chunk_px)``); absent chunks have :data:`MISSING_CHUNK` in both. It is the zarr v3 shard
    index, also saved in the unit's done-marker, so a reader gets every byte range of a unit with one
    small read (the marker) instead of one index read per array.
    """

    offsets: np.ndarray
    """uint64 byte offset of each chunk in the shard object."""
    nbytes: np.ndarray
    """uint64 encoded length of each chunk."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for the done-marker: the grid and the zlib-compressed index, base64."""
        import base64
        import zlib

        both = np.stack([self.offsets, self.nbytes], axis=-1).astype("<u8")
        packed = base64.b64encode(zlib.compress(both.tobytes(), 9)).decode()
        return {"grid": list(self.offsets.shape), "zlib_b64": packed}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ShardIndex:
        """Inverse of :meth:`to_json` (StoreError if it is damaged)."""
        import base64
        import zlib

        try:
            grid = tuple(int(g) for g in doc["grid"])
            both = np.frombuffer(zlib.decompress(base64.b64decode(doc["zlib_b64"])), dtype="<u8")
            both = both.reshape(*grid, 2)
        except (KeyError, ValueError, TypeError, zlib.error) as e:
            raise StoreError(f"damaged shard index in a done-marker ({e}); re-run the unit") from e
        return cls(offsets=both[..., 0].astype(np.uint64), nbytes=both[..., 1].astype(np.uint64))

    @classmethod
    def from_shard_bytes(cls, data: bytes, grid: tuple[int, ...]) -> ShardIndex:
        """Parse the index at the end of a shard object (checks its crc32c)."""
        import google_crc32c

        n = int(np.prod(grid)) * 16
        body, crc = data[-n - 4 : -4], data[-4:]
        if len(body) != n or google_crc32c.value(body) != int.from_bytes(crc, "little"):
            raise StoreError("shard index checksum mismatch: the shard object is damaged; re-run the unit")
        both = np.frombuffer(body, dtype="<u8").reshape(*grid, 2)
        return cls(offsets=both[..., 0].astype(np.uint64), nbytes=both[..., 1].astype(np.uint64))

    def present(self, coords: tuple[int, ...]) -> bool:
        """Whether the chunk at ``coords`` is stored (False: all fill)."""
        return int(self.offsets[coords]) != MISSING_CHUNK


def encode_shard(
    chunks: dict[tuple[int, ...], np.ndarray], grid: tuple[int, ...], *, cfg: StoreConfig, fill_value: int
) -> tuple[bytes, ShardIndex] | None:
    """Encode inner chunks into one zarr v3 shard object (index at the end, crc32c); None if all fill.

    ``chunks`` maps chunk-grid coordinates (time first) to arrays of the inner chunk shape. Chunks equal
    to ``fill_value`` everywhere are left out (as zarr's ``write_empty_chunks=False``). The chunks are
    laid out **spatial-major, time-minor**: all time chunks of one spatial block are adjacent, so one
    pixel's series over the whole period is a single byte range (``docs/store.md``). Zarr reads any
    order through the index.
    """
    from concurrent.futures import ThreadPoolExecutor

    import google_crc32c

    blosc = _blosc(cfg)
    keys = [k for k in sorted(chunks, key=lambda k: (k[1:], k[0])) if not (chunks[k] == fill_value).all()]
    # chunks in parallel, each single-threaded in Blosc (_blosc): bitwise reproducible objects
    with ThreadPoolExecutor(max_workers=min(4, len(keys) or 1)) as pool:
        encoded = list(pool.map(lambda k: bytes(blosc.encode(np.ascontiguousarray(chunks[k]))), keys))
    offsets = np.full(grid, MISSING_CHUNK, dtype=np.uint64)
    nbytes = np.full(grid, MISSING_CHUNK, dtype=np.uint64)
    parts: list[bytes] = []
    pos = 0
    for key, enc in zip(keys, encoded, strict=True):
        offsets[key], nbytes[key] = pos, len(enc)
        parts.append(enc)
        pos += len(enc)
    if not parts:
        return None
    index = np.stack([offsets, nbytes], axis=-1).astype("<u8").tobytes()
    parts += [index, google_crc32c.value(index).to_bytes(4, "little")]
    return b"".join(parts), ShardIndex(offsets=offsets, nbytes=nbytes)


def decode_chunk(data: bytes, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Decode one inner chunk of the store's arrays (Blosc) into an array of ``shape``."""
    from numcodecs import Blosc

    return np.frombuffer(Blosc().decode(data), dtype=dtype).reshape(shape)


def _to_days(dates: Sequence[Any] | np.ndarray) -> np.ndarray:
    arr = np.asarray(dates)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind in "OUS":
        arr = np.array(
            [np.datetime64(d if not isinstance(d, dt.datetime) else d.date(), "D") for d in arr.ravel()]
        )
    return (arr.astype("datetime64[D]") - np.datetime64(EPOCH, "D")).astype(np.int64)


def write_unit(
    store: Store | str,
    unit: WorkUnit,
    embeddings: np.ndarray,
    flags: np.ndarray,
    dates: Sequence[Any] | np.ndarray,
    *,
    valid_counts: np.ndarray | Sequence[int] | None = None,
    info: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> UnitWrite:
    """Write one work unit whole: one object per array, then the done-marker.

    ``embeddings`` is ``[T, 7, H, W]`` float (NaN where none), ``flags`` ``[T, H, W]`` uint8
    (:class:`Flag` bits), ``dates`` ``[T]`` distinct dates inside ``unit.period`` (datetime64, date or
    ISO strings), ``valid_counts`` ``[T]`` valid observation pixels per date (default: pixels with
    :attr:`Flag.VALID`), ``H = W = tile_px``. Embeddings are stored only where ``flags`` has VALID;
    a VALID pixel with a NaN embedding is an error. ``info`` is saved in the marker.
    A previous marker is removed first, so an interrupted rewrite is never taken as done.
    """
    st = as_store(store, storage_options)
    cfg = st.cfg
    tp, cp, pd_, cd = cfg.tile_px, cfg.chunk_px, cfg.period_days, cfg.chunk_days
    if unit.tile.size_px != tp or unit.period.period_days != pd_:
        raise StoreError(f"unit {unit.id} does not match the store layout (tile_px={tp}, period_days={pd_})")
    zone = ZoneExtent.from_attrs(unit.tile.zone_name, zone_attrs(st, unit.tile.zone_name))
    ty, tx = zone.tile_index(unit.tile)
    if unit.period.index >= zone.n_periods:
        raise StoreError(f"unit {unit.id} is after the store's time extent ({zone.n_periods} periods)")

    emb = np.asarray(embeddings)
    flg = np.asarray(flags)
    days = _to_days(dates)
    n_t = days.shape[0]
    if emb.shape != (n_t, EMBEDDING_DIM, tp, tp):
        raise StoreError(
            f"embeddings shape {emb.shape} != (T={n_t}, {EMBEDDING_DIM}, {tp}, {tp}) for unit {unit.id}"
        )
    if flg.shape != (n_t, tp, tp):
        raise StoreError(f"flags shape {flg.shape} != (T={n_t}, {tp}, {tp}) for unit {unit.id}")
    if flg.dtype != np.uint8:
        if flg.size and (flg.min() < 0 or flg.max() > 255):
            raise StoreError(f"flags of unit {unit.id} do not fit uint8 (range {flg.min()}..{flg.max()})")
        flg = flg.astype(np.uint8)
    local = days - unit.period.start_day  # [T] day index inside the period
    if n_t and (local.min() < 0 or local.max() >= pd_):
        bad = days[(local < 0) | (local >= pd_)][0]
        raise StoreError(
            f"date {EPOCH + dt.timedelta(days=int(bad))} is outside unit {unit.id} "
            f"({unit.period.start}..{unit.period.end}); split the dates by period"
        )
    if len(np.unique(days)) != n_t:
        raise StoreError(f"dates of unit {unit.id} are not distinct")
    valid = (flg & Flag.VALID) > 0  # [T, H, W]
    nan_valid = valid & ~np.isfinite(emb).all(axis=1)
    if nan_valid.any():
        t, r, c = np.argwhere(nan_valid)[0]
        raise StoreError(
            f"unit {unit.id}: pixel (row {r}, col {c}) on {EPOCH + dt.timedelta(days=int(days[t]))} is flagged "
            "VALID but its embedding is not finite; clear the VALID bit or fix the embedding"
        )
    if valid_counts is None:
        counts = valid.sum(axis=(1, 2)).astype(np.uint32)
    else:
        counts = np.asarray(valid_counts)
        if counts.shape != (n_t,) or (counts < 0).any():
            raise StoreError(
                f"valid_counts of unit {unit.id} must be [T={n_t}] non-negative, got {counts.shape}"
            )
        counts = counts.astype(np.uint32)

    # 1. quantised codes per time chunk, cut into (chunk_days, 7, chunk_px, chunk_px) blocks
    n_ct, n_s = pd_ // cd, tp // cp
    emb_chunks: dict[tuple[int, ...], np.ndarray] = {}
    flag_chunks: dict[tuple[int, ...], np.ndarray] = {}
    clipped = 0
    for c in np.unique(local // cd):
        codes = np.full((cd, EMBEDDING_DIM, tp, tp), FILL_CODE, dtype=np.uint16)
        fl = np.zeros((cd, tp, tp), dtype=np.uint8)
        for t in np.flatnonzero(local // cd == c):
            q, n_clip = quantise(np.where(valid[t, None], emb[t], np.nan), step=cfg.quant_step)  # [7, tp, tp]
            clipped += n_clip
            codes[local[t] - c * cd] = q
            fl[local[t] - c * cd] = flg[t]
        for by in range(n_s):
            for bx in range(n_s):
                ys, xs = slice(by * cp, (by + 1) * cp), slice(bx * cp, (bx + 1) * cp)
                emb_chunks[(int(c), 0, by, bx)] = codes[:, :, ys, xs]
                flag_chunks[(int(c), by, bx)] = fl[:, ys, xs]
    counts_block = np.zeros((pd_, 1, 1), dtype=np.uint32)
    counts_block[local, 0, 0] = counts
    emb_shard = encode_shard(emb_chunks, (n_ct, 1, n_s, n_s), cfg=cfg, fill_value=FILL_CODE)
    flag_shard = encode_shard(flag_chunks, (n_ct, n_s, n_s), cfg=cfg, fill_value=0)
    encoded = {
        "embedding": (None if emb_shard is None else emb_shard[0], (unit.period.index, 0, ty, tx)),
        "flags": (None if flag_shard is None else flag_shard[0], (unit.period.index, ty, tx)),
        "valid_px": (
            _encode_shard(shape=(pd_, 1, 1), chunks=(pd_, 1, 1), shards=None, dtype="uint32", fill_value=0,
                          cfg=cfg, blocks=[((slice(None), slice(None), slice(None)), counts_block)]),
            (unit.period.index, ty, tx),
        ),
    }  # fmt: skip
    shard_index = {
        name: sh[1].to_json()
        for name, sh in (("embedding", emb_shard), ("flags", flag_shard))
        if sh is not None
    }

    fs = st.fs
    marker = _marker_path(st, unit)
    keys: list[str] = []
    if fs.exists(marker):  # a rewrite: never leave a marker over objects being replaced
        fs.rm_file(marker)
    objects: dict[str, dict[str, Any]] = {}
    nbytes = 0
    for name, (data, coords) in encoded.items():
        rel = f"{zone.name}/{name}/c/" + "/".join(str(int(i)) for i in coords)
        path = f"{st.root}/{rel}"
        keys.append(rel)
        if data is None:  # all fill: no object (remove a stale one from an earlier attempt)
            if fs.exists(path):
                fs.rm_file(path)
            objects[rel] = {"nbytes": 0, "sha256": None}
            continue
        put_object(fs, path, data)
        nbytes += len(data)
        objects[rel] = {"nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    doc = {
        "unit": unit.id,
        "tile": unit.tile.id,
        "period": unit.period.id,
        "dates": [(EPOCH + dt.timedelta(days=int(d))).isoformat() for d in days],
        "valid_counts": [int(c) for c in counts],
        "valid_embedding_px": [int(v) for v in valid.sum(axis=(1, 2))],
        "clipped": clipped,
        "objects": objects,
        "shard_index": shard_index,
        "code_fingerprint": code_fingerprint(),
        "fingerprint": st.attrs.get("embedder:fingerprint"),
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "info": info or {},
    }
    put_object(fs, marker, json.dumps(doc, indent=1).encode())
    keys.append(marker[len(st.root) + 1 :])
    failure = _failure_path(st, unit)
    if fs.exists(failure):
        fs.rm_file(failure)
    return UnitWrite(unit_id=unit.id, keys=tuple(keys), nbytes=nbytes, n_dates=n_t, clipped=clipped)


def is_done(store: Store | str, unit: WorkUnit, *, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``unit`` has its done-marker (written after all its data)."""
    st = as_store(store, storage_options)
    return bool(st.fs.exists(_marker_path(st, unit)))


def list_done(store: Store | str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Ids of all done units, sorted."""
    st = as_store(store, storage_options)
    paths = st.fs.glob(f"{st.root}/_units/*/*.json")
    return sorted(p.rsplit("/", 1)[-1][: -len(".json")] for p in paths)


def record_failure(
    store: Store | str,
    unit: WorkUnit,
    reason: str,
    *,
    exc: BaseException | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Record that ``unit`` failed (or was skipped) with ``reason``; :func:`list_failures` shows it."""
    st = as_store(store, storage_options)
    doc = {
        "unit": unit.id,
        "reason": reason,
        "exception": None if exc is None else f"{type(exc).__name__}: {exc}",
        "traceback": None if exc is None else "".join(traceback.format_exception(exc)),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    put_object(st.fs, _failure_path(st, unit), json.dumps(doc, indent=1).encode())


def list_failures(
    store: Store | str, *, storage_options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """All recorded failures (``unit``, ``reason``, ``exception``, ...), sorted by unit id."""
    st = as_store(store, storage_options)
    docs = [json.loads(st.fs.cat_file(p)) for p in st.fs.glob(f"{st.root}/_failures/*/*.json")]
    return sorted(docs, key=lambda d: d["unit"])


# ---------------------------------------------------------------------------------------------------
# read: point series by byte range (the shard index from the done-marker), everything else via zarr
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PixelSeries:
    """The stored values of one pixel over a day range: only days with :attr:`Flag.VALID`."""

    days: np.ndarray
    """``[T]`` int64 days since the store epoch, ascending."""
    codes: np.ndarray
    """``[T, 7]`` uint16 quantised features (value = code * quant_step)."""
    flags: np.ndarray
    """``[T]`` uint8 :class:`Flag` bits."""


_EMPTY_SERIES_DAYS = np.zeros(0, np.int64)


class SeriesReader:
    """Reads pixel time series with one byte-range read per array and unit (``docs/store.md``).

    A unit's done-marker holds the shard index of its ``embedding`` and ``flags`` objects, and the chunks
    of one spatial block lie together in a shard (:func:`encode_shard`), so the series of any pixels of
    one block over a period costs the marker (one small read, cached here) and one range of each array,
    the ranges fetched concurrently. Units without a marker are not done and give no data (a partly
    written unit is never read). Markers are cached (up to ``cache_units``); a unit rewritten after this
    reader cached it needs :meth:`clear_cache`. Safe to share between threads.
    """

    def __init__(
        self, store: Store | str, *, storage_options: dict[str, Any] | None = None, cache_units: int = 4096
    ) -> None:
        import threading
        from collections import OrderedDict

        self.store = as_store(store, storage_options)
        self.fs = self.store.fs
        self.root = self.store.root
        self.cache_units = cache_units
        # (zone, unit id) -> (done-marker or None, its shard indexes parsed once)
        self._markers: OrderedDict[tuple[str, str], tuple[dict[str, Any] | None, dict[str, ShardIndex]]]
        self._markers = OrderedDict()
        self._lock = threading.Lock()
        self._zones: dict[str, ZoneExtent] = {}

    def clear_cache(self) -> None:
        """Forget the cached done-markers (after units of the store were rewritten)."""
        with self._lock:
            self._markers.clear()

    def zone(self, name: str) -> ZoneExtent:
        """The extent of zone group ``name`` (cached)."""
        if name not in self._zones:
            self._zones[name] = ZoneExtent.from_attrs(name, zone_attrs(self.store, name))
        return self._zones[name]

    def marker(self, zone: str, unit_id: str) -> dict[str, Any] | None:
        """The done-marker of a unit (None: not done), cached."""
        return self._entry(zone, unit_id)[0]

    def _entry(self, zone: str, unit_id: str) -> tuple[dict[str, Any] | None, dict[str, ShardIndex]]:
        key = (zone, unit_id)
        with self._lock:
            if key in self._markers:
                self._markers.move_to_end(key)
                return self._markers[key]
        return self._remember({key: get_json(self.fs, f"{self.root}/_units/{zone}/{unit_id}.json")})[key]

    def _remember(
        self, docs: dict[tuple[str, str], dict[str, Any] | None]
    ) -> dict[tuple[str, str], tuple[dict[str, Any] | None, dict[str, ShardIndex]]]:
        """Cache markers with their shard indexes parsed (evicting the least recently used)."""
        entries = {
            key: (
                doc,
                {name: ShardIndex.from_json(d) for name, d in (doc or {}).get("shard_index", {}).items()},
            )
            for key, doc in docs.items()
        }
        with self._lock:
            for key, entry in entries.items():
                self._markers[key] = entry
                self._markers.move_to_end(key)
            while len(self._markers) > self.cache_units:
                self._markers.popitem(last=False)
        return entries

    def prefetch(self, zone: str, unit_ids: Iterable[str]) -> None:
        """Read the markers of ``unit_ids`` not cached yet, concurrently (one request each)."""
        with self._lock:
            todo = sorted({u for u in unit_ids if (zone, u) not in self._markers})
        if len(todo) <= 1:
            return  # marker() reads a single one
        paths = {f"{self.root}/_units/{zone}/{u}.json": u for u in todo}
        got = self.fs.cat(list(paths), on_error="omit")
        got = got if isinstance(got, dict) else {}
        self._remember(
            {(zone, uid): json.loads(got[path]) if path in got else None for path, uid in paths.items()}
        )

    def _cat_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes]:
        paths, starts, ends = (list(v) for v in zip(*reqs, strict=True))
        return [bytes(b) for b in self.fs.cat_ranges(paths, starts, ends)]

    def series(
        self, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int
    ) -> list[PixelSeries] | None:
        """Series of the pixels ``(rows[i], cols[i])`` of zone group ``zone`` over days ``[d0, d1)``.

        Returns None when a unit the query needs is done but its marker has no shard index (written by
        an earlier version): read those through zarr instead.
        """
        cfg = self.store.cfg
        tp, cp, pd_, cd = cfg.tile_px, cfg.chunk_px, cfg.period_days, cfg.chunk_days
        z = self.zone(zone)
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        d0, d1 = max(d0, z.first_period * pd_), min(d1, z.n_periods * pd_)
        # (unit id, period, tile y, tile x, block y, block x) -> indices of the points in it
        groups: dict[tuple[str, int, int, int, int, int], list[int]] = {}
        periods = range(d0 // pd_, (d1 - 1) // pd_ + 1) if d1 > d0 else range(0)
        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            ty, tx = r // tp, c // tp
            tile = Tile(
                zone=int(zone[3:5]), south=zone.endswith("S"), col=z.col0 + tx, row=z.row_top - ty, size_px=tp
            )
            for p in periods:
                uid = WorkUnit(tile=tile, period=Period(index=p, period_days=pd_)).id
                groups.setdefault((uid, p, ty, tx, (r % tp) // cp, (c % tp) // cp), []).append(i)

        # 1. markers (one small read per unit, cached) -> one byte range per array and block
        self.prefetch(zone, (key[0] for key in groups))
        reqs: list[tuple[str, int, int]] = []  # (object path, start, end)
        parts: list[tuple[tuple[Any, ...], str, list[tuple[int, int, int]]]] = []  # (group, array, chunks)
        for key in groups:
            uid, p, ty, tx, by, bx = key
            doc, indexes = self._entry(zone, uid)
            if doc is None:
                continue  # not done: no data
            if "shard_index" not in doc:
                return None
            c0 = max(d0 - p * pd_, 0) // cd
            c1 = (min(d1 - p * pd_, pd_) - 1) // cd + 1
            for name, sel, coords in (
                ("embedding", (slice(c0, c1), 0, by, bx), (p, 0, ty, tx)),
                ("flags", (slice(c0, c1), by, bx), (p, ty, tx)),
            ):
                idx = indexes.get(name)
                if idx is None:
                    continue  # all fill
                offs, nbs = idx.offsets[sel].astype(np.int64), idx.nbytes[sel].astype(np.int64)
                have = np.flatnonzero(idx.offsets[sel] != np.uint64(MISSING_CHUNK))
                if have.size == 0:
                    continue
                start, end = int(offs[have].min()), int((offs[have] + nbs[have]).max())
                path = f"{self.root}/{zone}/{name}/c/" + "/".join(str(v) for v in coords)
                reqs.append((path, start, end))
                parts.append((key, name, [(int(c0 + k), int(offs[k]) - start, int(nbs[k])) for k in have]))

        # 2. all ranges at once (concurrent requests on object storage)
        blobs = self._cat_ranges(reqs) if reqs else []
        chunks: dict[tuple[tuple[Any, ...], str], dict[int, bytes]] = {}
        for (key, name, cs), blob in zip(parts, blobs, strict=True):
            chunks[(key, name)] = {c: blob[o : o + n] for c, o, n in cs}

        # 3. decode each chunk once, pick the points' pixels
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(rows.size)]
        for key, members in groups.items():
            p = key[1]
            embs, flags = chunks.get((key, "embedding"), {}), chunks.get((key, "flags"), {})
            for c in sorted(flags):
                fl = decode_chunk(flags[c], (cd, cp, cp), np.uint8)
                em = decode_chunk(embs[c], (cd, EMBEDDING_DIM, cp, cp), np.uint16) if c in embs else None
                days = p * pd_ + c * cd + np.arange(cd)
                for i in members:
                    r, cc = int(rows[i]) % cp, int(cols[i]) % cp
                    f = fl[:, r, cc]
                    keep = ((f & Flag.VALID) > 0) & (days >= d0) & (days < d1)
                    if keep.any():
                        codes = (
                            em[keep, :, r, cc]
                            if em is not None
                            else np.full((int(keep.sum()), EMBEDDING_DIM), FILL_CODE, np.uint16)
                        )
                        found[i].append((days[keep], codes, f[keep]))
        out = []
        for got in found:
            got.sort(key=lambda t: int(t[0][0]))
            out.append(
                PixelSeries(
                    days=np.concatenate([g[0] for g in got]) if got else _EMPTY_SERIES_DAYS.copy(),
                    codes=np.concatenate([g[1] for g in got])
                    if got
                    else np.zeros((0, EMBEDDING_DIM), np.uint16),
                    flags=np.concatenate([g[2] for g in got]).astype(np.uint8)
                    if got
                    else np.zeros(0, np.uint8),
                )
            )
        return out


def open_store(
    url: str, *, storage_options: dict[str, Any] | None = None, chunks: Any = None
) -> dict[str, Any]:
    """Open the store lazily: ``{zone name: xarray.Dataset}`` (e.g. ``"utm32N"``).

    Each Dataset has ``embedding`` (time, feature, y, x; float32 after CF decoding, NaN = none),
    ``flags``, ``valid_px``, a datetime ``time`` axis, ``x``/``y`` in metres and a ``spatial_ref``
    coordinate that rioxarray understands. ``chunks=None`` gives lazily indexed arrays (each selection
    reads only the chunks it needs); pass ``chunks={}`` for dask arrays on the zarr chunks.
    """
    import xarray as xr

    st = as_store(url, storage_options)
    out = {}
    for zone in st.attrs["embedder:zones"]:
        out[zone] = xr.open_zarr(
            zarr_store(url, storage_options, read_only=True),
            group=zone,
            zarr_format=3,
            consolidated=False,
            chunks=chunks,
        )
    return out


# ---------------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VerifyReport:
    """Result of :func:`verify`: ``ok`` only when the store is complete and consistent."""

    url: str
    """The store."""
    problems: list[str] = dataclasses.field(default_factory=list)
    """Everything wrong, one line each (empty when consistent)."""
    planned: int = 0
    """Units in the store's plan."""
    done: int = 0
    """Units with a done-marker."""
    missing: list[str] = dataclasses.field(default_factory=list)
    """Planned units without a done-marker."""
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Recorded failures."""
    feature_std: list[float] = dataclasses.field(default_factory=list)
    """Std of each stored feature over the checked units."""
    quant_err_rel_std: float = float("nan")
    """Worst feature's RMS quantisation error (step / sqrt(12)) over its std."""

    @property
    def complete(self) -> bool:
        """Every planned unit is done."""
        return not self.missing

    @property
    def ok(self) -> bool:
        """Complete and without problems."""
        return self.complete and not self.problems

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        lines = [
            f"store {self.url}: {'OK' if self.ok else 'NOT OK'}",
            f"  units done {self.done} / planned {self.planned}, failures recorded {len(self.failures)}",
            f"  quantisation RMS error / feature std (worst) = {self.quant_err_rel_std:.4f} (bound 0.01)",
        ]
        if self.missing:
            more = f" (+{len(self.missing) - 10} more)" if len(self.missing) > 10 else ""
            lines.append(f"  missing units: {', '.join(self.missing[:10])}{more}")
        for f in self.failures[:10]:
            lines.append(f"  failed {f['unit']}: {f['reason']}")
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _check_zone(st: Store, zone: str, problems: list[str]) -> ZoneExtent | None:
    import xarray as xr

    try:
        zat = zone_attrs(st, zone)
        z = ZoneExtent.from_attrs(zone, zat)
    except (StoreError, KeyError) as exc:
        problems.append(f"{zone}: group metadata unreadable ({exc})")
        return None
    cfg = st.cfg
    expected_epsg = (32700 if zone.endswith("S") else 32600) + int(zone[3:5])
    if z.epsg != expected_epsg:
        problems.append(f"{zone}: proj:epsg is {z.epsg}, expected {expected_epsg}")
    _, gt = _georef_attrs(dataclasses.replace(z, epsg=expected_epsg), cfg)
    try:
        ds = xr.open_zarr(zarr_store(st.url, st.storage_options, read_only=True), group=zone,
                          zarr_format=3, consolidated=False, chunks=None)  # fmt: skip
    except Exception as exc:
        problems.append(f"{zone}: cannot be opened by xarray ({type(exc).__name__}: {exc})")
        return None
    sref = ds["spatial_ref"].attrs if "spatial_ref" in ds.variables else {}
    got_gt = [float(v) for v in str(sref.get("GeoTransform", "")).split()] if sref else []
    if not np.allclose(got_gt, gt) if len(got_gt) == 6 else True:
        problems.append(f"{zone}: spatial_ref GeoTransform {sref.get('GeoTransform')!r} != expected {gt}")
    try:
        from pyproj import CRS

        if CRS.from_wkt(sref.get("crs_wkt", "")).to_epsg() != expected_epsg:
            problems.append(f"{zone}: spatial_ref crs_wkt is not EPSG:{expected_epsg}")
    except Exception as exc:
        problems.append(f"{zone}: spatial_ref crs_wkt unreadable ({exc})")
    tp = cfg.tile_px
    exp_x = gt[0] + PIXEL_M * (np.arange(z.n_cols * tp) + 0.5)
    exp_y = gt[3] - PIXEL_M * (np.arange(z.n_rows * tp) + 0.5)
    if ds.sizes.get("x") != exp_x.size or not np.allclose(ds["x"].values, exp_x):
        problems.append(f"{zone}: x coordinate does not match the zone extent / GeoTransform")
    if ds.sizes.get("y") != exp_y.size or not np.allclose(ds["y"].values, exp_y):
        problems.append(f"{zone}: y coordinate does not match the zone extent / GeoTransform")
    t = ds["time"].values
    if t.size != z.n_periods * cfg.period_days or (t.size and t[0] != np.datetime64(EPOCH.isoformat(), "ns")):
        problems.append(f"{zone}: time axis is not daily from {EPOCH} over {z.n_periods} periods")
    emb = ds["embedding"]
    if emb.dims != ("time", "feature", "y", "x") or emb.sizes["feature"] != EMBEDDING_DIM:
        problems.append(
            f"{zone}: embedding dims {emb.dims} / sizes {dict(emb.sizes)} are not (time, 7, y, x)"
        )
    if emb.encoding.get("scale_factor") != cfg.quant_step:
        problems.append(
            f"{zone}: embedding scale_factor {emb.encoding.get('scale_factor')} != {cfg.quant_step}"
        )
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        rio_crs = ds["embedding"].rio.crs
        if rio_crs is None or rio_crs.to_epsg() != expected_epsg:
            problems.append(f"{zone}: rioxarray sees CRS {rio_crs}, expected EPSG:{expected_epsg}")
        tr = ds["embedding"].rio.transform()
        if not np.allclose([tr.c, tr.a, tr.b, tr.f, tr.d, tr.e], gt):
            problems.append(f"{zone}: rioxarray transform {tuple(tr)[:6]} != expected {gt}")
    except Exception as exc:
        problems.append(f"{zone}: rioxarray cannot read the georeferencing ({type(exc).__name__}: {exc})")
    return z


def verify(
    url: str,
    *,
    storage_options: dict[str, Any] | None = None,
    max_units_read: int | None = None,
) -> VerifyReport:
    """Check that the store is complete and consistent.

    Checks: root and zone metadata; georeferencing (CRS, GeoTransform, x/y coordinates, and what
    rioxarray reads); every planned unit has a done-marker; every done unit's objects exist with the
    recorded size and sha256 and decode; embeddings are stored exactly where ``flags`` has VALID and
    only on the marker's dates; ``valid_px`` matches the marker; the quantisation RMS error is at most
    1 % of each feature's std. ``max_units_read`` limits how many done units are decoded (default all).
    """
    import zarr

    report = VerifyReport(url=url)
    problems = report.problems
    try:
        st = as_store(url, storage_options)
    except Exception as exc:
        problems.append(f"not an embedding store: {exc}")
        return report
    cfg = st.cfg
    fs, root = st.fs, st.root
    plan = get_json(fs, f"{root}/_plan.json")
    if plan is None:
        problems.append("_plan.json is missing: cannot tell whether the store is complete")
        plan = {"units": []}
    done = set(list_done(st))
    report.planned = len(plan["units"])
    report.done = len(done)
    report.missing = sorted(set(plan["units"]) - done)
    report.failures = list_failures(st)
    extra = sorted(done - set(plan["units"]))
    if extra:
        problems.append(f"done units not in the plan: {', '.join(extra[:5])}")

    zones: dict[str, ZoneExtent] = {}
    for zone in st.attrs.get("embedder:zones", []):
        z = _check_zone(st, zone, problems)
        if z is not None:
            zones[zone] = z

    zstore = zarr_store(url, storage_options, read_only=True)
    group = zarr.open_group(zstore, mode="r", zarr_format=3)
    sums = np.zeros(EMBEDDING_DIM)
    sq = np.zeros(EMBEDDING_DIM)
    n = 0
    tp, pd_ = cfg.tile_px, cfg.period_days
    for i, unit_id in enumerate(sorted(done)):
        if max_units_read is not None and i >= max_units_read:
            break
        unit = WorkUnit.from_id(unit_id)
        zname = unit.tile.zone_name
        marker = get_json(fs, f"{root}/_units/{zname}/{unit_id}.json") or {}
        if zname not in zones:
            problems.append(f"{unit_id}: its zone {zname} is not in the store")
            continue
        for rel, meta in marker.get("objects", {}).items():
            path = f"{root}/{rel}"
            if meta["sha256"] is None:
                continue
            try:
                data = fs.cat_file(path)
            except FileNotFoundError:
                problems.append(f"{unit_id}: object {rel} is missing")
                continue
            if len(data) != meta["nbytes"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
                problems.append(f"{unit_id}: object {rel} differs from what was written (size/sha256)")
        z = zones[zname]
        ty, tx = z.tile_index(unit.tile)
        t0 = unit.period.start_day
        ys, xs = slice(ty * tp, (ty + 1) * tp), slice(tx * tp, (tx + 1) * tp)
        try:
            days = sorted((dt.date.fromisoformat(d) - EPOCH).days for d in marker.get("dates", []))
            flags = np.asarray(_array(group, f"{zname}/flags")[t0 : t0 + pd_, ys, xs])  # [P, H, W]
            counts = np.asarray(_array(group, f"{zname}/valid_px")[t0 : t0 + pd_, ty, tx])  # [P]
            day_idx = np.asarray(days, dtype=np.int64)
            codes = np.asarray(
                _array(group, f"{zname}/embedding").get_orthogonal_selection((day_idx, slice(None), ys, xs))
            )  # [T, 7, H, W]
        except Exception as exc:
            problems.append(f"{unit_id}: data cannot be decoded ({type(exc).__name__}: {exc})")
            continue
        off_dates = np.setdiff1d(np.flatnonzero(flags.any(axis=(1, 2))) + t0, days)
        if off_dates.size:
            problems.append(f"{unit_id}: flags set on days not in its marker ({off_dates[:3].tolist()})")
        exp_counts = np.zeros(pd_, dtype=np.int64)
        exp_counts[np.asarray(days, dtype=np.int64) - t0] = marker.get("valid_counts", [])
        if not np.array_equal(counts, exp_counts):
            problems.append(f"{unit_id}: valid_px differs from the marker's valid_counts")
        if codes.size:
            valid = (flags[np.asarray(days) - t0] & Flag.VALID) > 0  # [T, H, W]
            stored = (codes != FILL_CODE).all(axis=1)
            if not np.array_equal(valid, stored):
                problems.append(
                    f"{unit_id}: embeddings present at {int((stored & ~valid).sum())} pixels without VALID and "
                    f"missing at {int((valid & ~stored).sum())} VALID pixels"
                )
            vals = codes.transpose(1, 0, 2, 3)[:, valid].astype(np.float64) * cfg.quant_step  # [7, N]
            sums += vals.sum(axis=1)
            sq += (vals**2).sum(axis=1)
            n += vals.shape[1]
        if marker.get("clipped"):
            problems.append(f"{unit_id}: {marker['clipped']} values were clipped by the quantisation range")
    if n > 1:
        std = np.sqrt(np.maximum(sq / n - (sums / n) ** 2, 0.0))
        report.feature_std = [float(s) for s in std]
        rel = cfg.quant_step / math.sqrt(12.0) / np.maximum(std, 1e-12)
        report.quant_err_rel_std = float(rel.max())
        if report.quant_err_rel_std > 0.01:
            problems.append(
                f"quantisation RMS error {cfg.quant_step / math.sqrt(12):.5f} exceeds 1 % of feature std "
                f"{float(std.min()):.4f}; use a smaller StoreConfig.quant_step"
            )
    return report


def _array(group: Any, path: str) -> Any:
    import zarr

    node = group[path]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path} is a group, expected an array")
    return node


def cli_verify(argv: list[str]) -> int:
    """``embedder verify STORE_URL``: exit 0 only when the store is complete and consistent."""
    import argparse

    p = argparse.ArgumentParser(prog="embedder verify", description=cli_verify.__doc__)
    p.add_argument("url", help="store URL (path, file://, gs://, s3://)")
    p.add_argument("--storage-options", default=None, help="fsspec storage options as JSON")
    p.add_argument("--max-units-read", type=int, default=None, help="decode at most this many done units")
    a = p.parse_args(argv)
    so = json.loads(a.storage_options) if a.storage_options else None
    report = verify(a.url, storage_options=so, max_units_read=a.max_units_read)
    print(report.summary())
    return 0 if report.ok else 1


def units_of(store: Store) -> list[WorkUnit]:
    """The store's planned work units (from ``_plan.json``)."""
    plan = get_json(store.fs, f"{store.root}/_plan.json") or {"units": []}
    return [WorkUnit.from_id(u) for u in plan["units"]]
