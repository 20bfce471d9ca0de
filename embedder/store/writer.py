"""Writing a store: the template (:func:`create_store`), whole units with their done-markers, failures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import StoreConfig, to_dict
from embedder.geo import EPOCH, index_date
from embedder.grid import PIXEL_M, WorkUnit
from embedder.sensors import EMBEDDING_DIM
from embedder.store._codec import FILL_CODE, compressors, encode_shard, encode_with_zarr, quantise
from embedder.store._fs import get_json, put_object, url_to_fs, zarr_store
from embedder.store._layout import (
    CHUNK_CHECKSUM,
    STORE_FORMAT,
    Flag,
    Store,
    StoreError,
    as_store,
    georef_attrs,
    zone_extents,
)

# ---------------------------------------------------------------------------------------------------
# fingerprints
# ---------------------------------------------------------------------------------------------------


def code_fingerprint() -> str:
    """sha256 (16 hex) of the ``embedder`` package's Python sources: which code wrote a unit."""
    pkg = Path(__file__).resolve().parent.parent  # embedder/, above embedder/store/
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
# create
# ---------------------------------------------------------------------------------------------------


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
    (sensor -> ``ModelConfig.encoder``, :func:`embedder.checkpoints.checkpoint_encoders`) says which frame
    encoder made the embeddings (``embedder:encoders``, ``geoemb:model.encoders``); it follows from the
    model version, so it is recorded but not fingerprinted.

    The returned handle holds the extents of the units' zones (:meth:`Store.zone_extent`): passed to
    writers, in this process or pickled to others, it spares them a metadata read per unit.
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
    zones = zone_extents(units)
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
            have = store.zone_extent(name)
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
        georef, gt = georef_attrs(z, cfg)
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
        comp = compressors(cfg)
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
    store = as_store(url, storage_options)
    for name in zones:
        store.zone_extent(name)
    return store


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
        "embedder:chunk_checksum": CHUNK_CHECKSUM,
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
    zone = st.zone_extent(unit.tile.zone_name)
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
            f"date {index_date(bad)} is outside unit {unit.id} "
            f"({unit.period.start}..{unit.period.end}); split the dates by period"
        )
    if len(np.unique(days)) != n_t:
        raise StoreError(f"dates of unit {unit.id} are not distinct")
    valid = (flg & Flag.VALID) > 0  # [T, H, W]
    nan_valid = valid & ~np.isfinite(emb).all(axis=1)
    if nan_valid.any():
        t, r, c = np.argwhere(nan_valid)[0]
        raise StoreError(
            f"unit {unit.id}: pixel (row {r}, col {c}) on {index_date(days[t])} is flagged "
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
    crc = st.checksummed  # chunks as the store's codec chain says (stores from before checks: none)
    emb_shard = encode_shard(emb_chunks, (n_ct, 1, n_s, n_s), cfg=cfg, fill_value=FILL_CODE, checksum=crc)
    flag_shard = encode_shard(flag_chunks, (n_ct, n_s, n_s), cfg=cfg, fill_value=0, checksum=crc)
    encoded = {
        "embedding": (None if emb_shard is None else emb_shard[0], (unit.period.index, 0, ty, tx)),
        "flags": (None if flag_shard is None else flag_shard[0], (unit.period.index, ty, tx)),
        "valid_px": (
            encode_with_zarr(shape=(pd_, 1, 1), chunks=(pd_, 1, 1), shards=None, dtype="uint32", fill_value=0,
                          cfg=cfg, blocks=[((slice(None), slice(None), slice(None)), counts_block)], checksum=crc),
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
        "dates": [index_date(d).isoformat() for d in days],
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
