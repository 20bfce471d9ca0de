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
from embedder.grid import EPOCH, PIXEL_M, Tile, WorkUnit
from embedder.sensors import EMBEDDING_DIM

__all__ = [
    "FILL_CODE",
    "STORE_FORMAT",
    "Flag",
    "Store",
    "StoreConfig",
    "StoreError",
    "UnitWrite",
    "VerifyReport",
    "cli_verify",
    "code_fingerprint",
    "create_store",
    "dequantise",
    "is_done",
    "list_done",
    "list_failures",
    "open_store",
    "quantise",
    "record_failure",
    "verify",
    "write_unit",
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
        return _url_to_fs(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        """The store's root path inside :attr:`fs`."""
        return _url_to_fs(self.url, self.storage_options)[1]


def _url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/")


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _zarr_store(url: str, storage_options: dict[str, Any] | None, *, read_only: bool) -> Any:
    import zarr.storage

    fs, path = _url_to_fs(url, storage_options)
    if _is_local(fs):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def _put(fs: Any, path: str, data: bytes) -> None:
    """Put one whole object (the single place objects are written; tests patch it to interrupt)."""
    if _is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def _get_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def _as_store(store: Store | str, storage_options: dict[str, Any] | None = None) -> Store:
    if isinstance(store, Store):
        return store
    fs, root = _url_to_fs(store, storage_options)
    attrs_doc = _get_json(fs, f"{root}/zarr.json")
    if attrs_doc is None:
        raise StoreError(f"no embedding store at {store!r} (no zarr.json); create it with create_store()")
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
class _Zone:
    name: str
    epsg: int
    col0: int  # westmost tile column
    row_top: int  # northmost tile row
    n_cols: int
    n_rows: int
    n_periods: int

    @classmethod
    def from_attrs(cls, name: str, a: dict[str, Any]) -> _Zone:
        e = a["embedder:extent"]
        return cls(
            name, int(a["proj:epsg"]), e["col0"], e["row_top"], e["n_cols"], e["n_rows"], e["n_periods"]
        )

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


def _zone_extents(units: Sequence[WorkUnit]) -> dict[str, _Zone]:
    by_zone: dict[str, list[WorkUnit]] = {}
    for u in units:
        by_zone.setdefault(u.tile.zone_name, []).append(u)
    out = {}
    for name, us in sorted(by_zone.items()):
        cols = [u.tile.col for u in us]
        rows = [u.tile.row for u in us]
        out[name] = _Zone(
            name=name,
            epsg=us[0].tile.epsg,
            col0=min(cols),
            row_top=max(rows),
            n_cols=max(cols) - min(cols) + 1,
            n_rows=max(rows) - min(rows) + 1,
            n_periods=max(u.period.index for u in us) + 1,
        )
    return out


# ---------------------------------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------------------------------


def _compressors(cfg: StoreConfig) -> Any:
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=cfg.compression_level, shuffle="bitshuffle")]


def _georef_attrs(zone: _Zone, cfg: StoreConfig) -> tuple[dict[str, Any], tuple[float, ...]]:
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
) -> Store:
    """Create the store template for ``units`` (metadata and coordinates only), or reopen it.

    Every unit's tile must have ``cfg.tile_px`` and its period ``cfg.period_days``. If a store already
    exists at ``url`` and ``overwrite`` is False, it is reopened when its model version, inputs,
    parameters and layout fingerprint match and its extent holds all ``units`` (re-runs resume);
    otherwise :class:`StoreError` names the difference.

    ``inputs`` describes the data (catalog, collections, region); ``params`` the inference parameters;
    both go into the fingerprint and the root attributes together with ``model_version``.
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
    fs, root = _url_to_fs(url, storage_options)

    if not overwrite and fs.exists(f"{root}/zarr.json"):
        store = _as_store(url, storage_options)
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
            zat = _zone_attrs(store, name)
            have = _Zone.from_attrs(name, zat)
            for u in units:
                if u.tile.zone_name == name:
                    have.tile_index(u.tile)
                    if u.period.index >= have.n_periods:
                        raise StoreError(f"unit {u.id} is after the store's time extent; recreate the store")
        plan = _get_json(fs, f"{root}/_plan.json") or {"units": []}
        new = sorted(set(plan["units"]) | {u.id for u in units})
        if len(new) != len(plan["units"]):  # more units inside the extent: extend the plan
            _put(fs, f"{root}/_plan.json", json.dumps(_plan(WorkUnit.from_id(u) for u in new)).encode())
        return store

    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    zstore = _zarr_store(url, storage_options, read_only=False)
    root_attrs = _root_attrs(cfg, model_version, inputs, params, fingerprint, sorted(zones))
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
    _put(fs, f"{root}/_plan.json", json.dumps(_plan(units)).encode())
    return _as_store(url, storage_options)


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
) -> dict[str, Any]:
    quant = {"dtype": "uint16", "scale": cfg.quant_step, "offset": 0.0, "nodata": FILL_CODE}
    return {
        "embedder:format": STORE_FORMAT,
        "embedder:model_version": model_version,
        "embedder:fingerprint": fingerprint,
        "embedder:code_fingerprint": code_fingerprint(),
        "embedder:inputs": inputs,
        "embedder:params": params,
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
        "geoemb:model": {"name": "embedder fusion (Peters et al. 2025)", "version": model_version},
        "geoemb:groups": zones,
        "geoemb:crs_per_group": True,
    }


def _zone_attrs(store: Store, zone: str) -> dict[str, Any]:
    doc = _get_json(store.fs, f"{store.root}/{zone}/zarr.json")
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
    st = _as_store(store, storage_options)
    cfg = st.cfg
    tp, cp, pd_, cd = cfg.tile_px, cfg.chunk_px, cfg.period_days, cfg.chunk_days
    if unit.tile.size_px != tp or unit.period.period_days != pd_:
        raise StoreError(f"unit {unit.id} does not match the store layout (tile_px={tp}, period_days={pd_})")
    zone = _Zone.from_attrs(unit.tile.zone_name, _zone_attrs(st, unit.tile.zone_name))
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

    # 1. embedding shard: blocks of (chunk_days, 7, chunk_px, chunk_px), only where there are dates
    clipped = 0

    def emb_blocks() -> Iterable[tuple[tuple[slice, ...], np.ndarray]]:
        nonlocal clipped
        for c in np.unique(local // cd):
            in_c = np.flatnonzero(local // cd == c)
            for y0 in range(0, tp, cp):
                for x0 in range(0, tp, cp):
                    block = np.full((cd, EMBEDDING_DIM, cp, cp), FILL_CODE, dtype=np.uint16)
                    for t in in_c:
                        vals = np.where(
                            valid[t, None, y0 : y0 + cp, x0 : x0 + cp],
                            emb[t, :, y0 : y0 + cp, x0 : x0 + cp],
                            np.nan,
                        )
                        codes, n_clip = quantise(vals, step=cfg.quant_step)  # [7, cp, cp]
                        clipped += n_clip
                        block[local[t] - c * cd] = codes
                    yield (
                        (slice(c * cd, (c + 1) * cd), slice(None), slice(y0, y0 + cp), slice(x0, x0 + cp)),
                        block,
                    )

    def flag_blocks() -> Iterable[tuple[tuple[slice, ...], np.ndarray]]:
        for c in np.unique(local // cd):
            block = np.zeros((cd, tp, tp), dtype=np.uint8)
            for t in np.flatnonzero(local // cd == c):
                block[local[t] - c * cd] = flg[t]
            yield (slice(c * cd, (c + 1) * cd), slice(None), slice(None)), block

    counts_block = np.zeros((pd_, 1, 1), dtype=np.uint32)
    counts_block[local, 0, 0] = counts
    encoded = {
        "embedding": (
            _encode_shard(shape=(pd_, EMBEDDING_DIM, tp, tp), chunks=(cd, EMBEDDING_DIM, cp, cp),
                          shards=(pd_, EMBEDDING_DIM, tp, tp), dtype="uint16", fill_value=FILL_CODE, cfg=cfg,
                          blocks=emb_blocks()),
            (unit.period.index, 0, ty, tx),
        ),
        "flags": (
            _encode_shard(shape=(pd_, tp, tp), chunks=(cd, cp, cp), shards=(pd_, tp, tp), dtype="uint8",
                          fill_value=0, cfg=cfg, blocks=flag_blocks()),
            (unit.period.index, ty, tx),
        ),
        "valid_px": (
            _encode_shard(shape=(pd_, 1, 1), chunks=(pd_, 1, 1), shards=None, dtype="uint32", fill_value=0,
                          cfg=cfg, blocks=[((slice(None), slice(None), slice(None)), counts_block)]),
            (unit.period.index, ty, tx),
        ),
    }  # fmt: skip

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
        _put(fs, path, data)
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
        "code_fingerprint": code_fingerprint(),
        "fingerprint": st.attrs.get("embedder:fingerprint"),
        "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "info": info or {},
    }
    _put(fs, marker, json.dumps(doc, indent=1).encode())
    keys.append(marker[len(st.root) + 1 :])
    failure = _failure_path(st, unit)
    if fs.exists(failure):
        fs.rm_file(failure)
    return UnitWrite(unit_id=unit.id, keys=tuple(keys), nbytes=nbytes, n_dates=n_t, clipped=clipped)


def is_done(store: Store | str, unit: WorkUnit, *, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``unit`` has its done-marker (written after all its data)."""
    st = _as_store(store, storage_options)
    return bool(st.fs.exists(_marker_path(st, unit)))


def list_done(store: Store | str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Ids of all done units, sorted."""
    st = _as_store(store, storage_options)
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
    st = _as_store(store, storage_options)
    doc = {
        "unit": unit.id,
        "reason": reason,
        "exception": None if exc is None else f"{type(exc).__name__}: {exc}",
        "traceback": None if exc is None else "".join(traceback.format_exception(exc)),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    _put(st.fs, _failure_path(st, unit), json.dumps(doc, indent=1).encode())


def list_failures(
    store: Store | str, *, storage_options: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """All recorded failures (``unit``, ``reason``, ``exception``, ...), sorted by unit id."""
    st = _as_store(store, storage_options)
    docs = [json.loads(st.fs.cat_file(p)) for p in st.fs.glob(f"{st.root}/_failures/*/*.json")]
    return sorted(docs, key=lambda d: d["unit"])


# ---------------------------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------------------------


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

    st = _as_store(url, storage_options)
    out = {}
    for zone in st.attrs["embedder:zones"]:
        out[zone] = xr.open_zarr(
            _zarr_store(url, storage_options, read_only=True),
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


def _check_zone(st: Store, zone: str, problems: list[str]) -> _Zone | None:
    import xarray as xr

    try:
        zat = _zone_attrs(st, zone)
        z = _Zone.from_attrs(zone, zat)
    except (StoreError, KeyError) as exc:
        problems.append(f"{zone}: group metadata unreadable ({exc})")
        return None
    cfg = st.cfg
    expected_epsg = (32700 if zone.endswith("S") else 32600) + int(zone[3:5])
    if z.epsg != expected_epsg:
        problems.append(f"{zone}: proj:epsg is {z.epsg}, expected {expected_epsg}")
    _, gt = _georef_attrs(dataclasses.replace(z, epsg=expected_epsg), cfg)
    try:
        ds = xr.open_zarr(_zarr_store(st.url, st.storage_options, read_only=True), group=zone,
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
        st = _as_store(url, storage_options)
    except Exception as exc:
        problems.append(f"not an embedding store: {exc}")
        return report
    cfg = st.cfg
    fs, root = st.fs, st.root
    plan = _get_json(fs, f"{root}/_plan.json")
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

    zones: dict[str, _Zone] = {}
    for zone in st.attrs.get("embedder:zones", []):
        z = _check_zone(st, zone, problems)
        if z is not None:
            zones[zone] = z

    zstore = _zarr_store(url, storage_options, read_only=True)
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
        marker = _get_json(fs, f"{root}/_units/{zname}/{unit_id}.json") or {}
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


def _units_of(store: Store) -> list[WorkUnit]:  # used by embedder.stac_store
    plan = _get_json(store.fs, f"{store.root}/_plan.json") or {"units": []}
    return [WorkUnit.from_id(u) for u in plan["units"]]
