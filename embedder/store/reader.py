"""Reading a store: pixel series by byte range, everything else through zarr and xarray.

:class:`SeriesReader` reads point series with one byte range per array and unit (the shard index from the
done-marker); :func:`open_store` opens the zone groups lazily as xarray Datasets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedder._cache import LRUCache
from embedder.grid import Period, WorkUnit
from embedder.sensors import EMBEDDING_DIM
from embedder.store._codec import FILL_CODE, MISSING_CHUNK, ChunkRef, ShardIndex, decode_chunk
from embedder.store._fs import zarr_store
from embedder.store._layout import (
    CorruptChunkError,
    Flag,
    Store,
    ZoneExtent,
    as_store,
    parse_marker,
    zone_attrs,
)

_Entry = tuple["dict[str, Any] | CorruptChunkError | None", "dict[str, ShardIndex]"]
"""A cached done-marker: the document (or the error of a damaged one, or None: not done) and its shard
indexes parsed once."""


@dataclasses.dataclass(frozen=True)
class PixelSeries:
    """The stored values of one pixel over a day range: only days with :attr:`Flag.VALID`."""

    days: np.ndarray
    """``[T]`` int64 days since the store epoch, ascending."""
    codes: np.ndarray
    """``[T, 7]`` uint16 quantised features (value = code * quant_step)."""
    flags: np.ndarray
    """``[T]`` uint8 :class:`Flag` bits."""
    unreadable: tuple[CorruptChunkError, ...] = ()
    """Chunks of this pixel's series that could not be read (``skip_damaged`` only; each with its
    ``days``): their dates are left out, never returned as values."""


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

        self.store = as_store(store, storage_options)
        self.fs = self.store.fs
        self.root = self.store.root
        self.cache_units = cache_units
        # (zone, unit id) -> (done-marker or None, its shard indexes parsed once)
        self._markers: LRUCache[tuple[str, str], _Entry] = LRUCache(cache_units)
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
        """The done-marker of a unit (None: not done), cached; :class:`CorruptChunkError` when it is damaged."""
        doc = self._entry(zone, unit_id)[0]
        if isinstance(doc, CorruptChunkError):
            raise doc
        return doc

    def _entry(self, zone: str, unit_id: str) -> _Entry:
        key = (zone, unit_id)
        with self._lock:
            hit = self._markers.get(key)
        if hit is not None:
            return hit
        try:
            raw: bytes | None = self.fs.cat_file(f"{self.root}/_units/{zone}/{unit_id}.json")
        except FileNotFoundError:
            raw = None
        return self._remember({key: raw})[key]

    def _parsed(self, key: tuple[str, str], raw: bytes | None) -> _Entry:
        """A marker's bytes -> (doc, shard indexes); a damaged marker -> (its error, {})."""
        if raw is None:
            return None, {}
        try:
            doc = parse_marker(raw, self.store.url, *key)
            return doc, {n: ShardIndex.from_json(d) for n, d in doc.get("shard_index", {}).items()}
        except CorruptChunkError as e:
            return e, {}
        except (ValueError, KeyError, TypeError) as e:  # JSON, but not a marker's shape
            return CorruptChunkError(
                self.store.url, "_units", f"{key[0]}/{key[1]}.json",
                f"the unit's done-marker is damaged ({type(e).__name__}: {e})", unit=key[1],
            ), {}  # fmt: skip

    def _remember(self, raws: dict[tuple[str, str], bytes | None]) -> dict[tuple[str, str], _Entry]:
        """Cache markers with their shard indexes parsed (evicting the least recently used)."""
        entries = {key: self._parsed(key, raw) for key, raw in raws.items()}
        with self._lock:
            for key, entry in entries.items():
                self._markers.put(key, entry)
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
            {(zone, uid): bytes(got[path]) if path in got else None for path, uid in paths.items()}
        )

    def _cat_ranges(self, reqs: list[tuple[str, int, int]]) -> list[bytes | Exception]:
        """The byte ranges; an object that cannot be read (missing, permissions) gives its exception."""
        paths, starts, ends = (list(v) for v in zip(*reqs, strict=True))
        got = self.fs.cat_ranges(paths, starts, ends, on_error="return")
        return [b if isinstance(b, Exception) else bytes(b) for b in got]

    def series(
        self, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int, *, skip_damaged: bool = False
    ) -> list[PixelSeries] | None:
        """Series of the pixels ``(rows[i], cols[i])`` of zone group ``zone`` over days ``[d0, d1)``.

        Returns None when a unit the query needs is done but its marker has no shard index (written by
        an earlier version): read those through zarr instead. A chunk that fails its checksum, does not
        decode, or whose object is missing although the unit's marker lists it raises
        :class:`CorruptChunkError`; with ``skip_damaged`` its dates are left out of the pixels' series
        instead and the error is listed in their :attr:`PixelSeries.unreadable`.
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
            tile = z.tile_at(ty, tx, tp)
            for p in periods:
                uid = WorkUnit(tile=tile, period=Period(index=p, period_days=pd_)).id
                groups.setdefault((uid, p, ty, tx, (r % tp) // cp, (c % tp) // cp), []).append(i)

        # 1. markers (one small read per unit, cached) -> one byte range per array and block
        self.prefetch(zone, (key[0] for key in groups))
        damaged_units: list[list[CorruptChunkError]] = [[] for _ in range(rows.size)]
        reqs: list[tuple[str, int, int]] = []  # (object path, start, end)
        parts: list[tuple[tuple[Any, ...], str, list[tuple[int, int, int]]]] = []  # (group, array, chunks)
        for key, members in groups.items():
            uid, p, ty, tx, by, bx = key
            doc, indexes = self._entry(zone, uid)
            if doc is None:
                continue  # not done: no data
            if isinstance(doc, CorruptChunkError):  # a damaged done-marker: the unit cannot be read
                if not skip_damaged:
                    raise doc
                gone = doc.with_days(max(p * pd_, d0), min((p + 1) * pd_, d1))
                for i in members:
                    damaged_units[i].append(gone)
                continue
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
        chunks: dict[tuple[tuple[Any, ...], str], dict[int, bytes | Exception]] = {}
        for (key, name, cs), blob in zip(parts, blobs, strict=True):
            if isinstance(blob, Exception):  # the marker lists the object: it must be there
                chunks[(key, name)] = {c: blob for c, _, _ in cs}
                continue
            chunks[(key, name)] = {c: blob[o : o + n] for c, o, n in cs}

        # 3. decode each chunk once (checksum checked: a damaged chunk raises, never returns values),
        #    pick the points' pixels
        crc = self.store.checksummed
        found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(rows.size)]
        lost: list[list[CorruptChunkError]] = damaged_units  # damaged markers first, then damaged chunks

        def decode(blob: bytes | Exception, shape: tuple[int, ...], dtype: Any, ref: ChunkRef) -> np.ndarray:
            if isinstance(blob, Exception):
                raise CorruptChunkError(
                    ref.store, ref.array, ref.key,
                    "the object is missing although the unit's done-marker lists it"
                    if isinstance(blob, FileNotFoundError)
                    else f"its object cannot be read ({type(blob).__name__}: {blob})", unit=ref.unit,
                ) from blob  # fmt: skip
            return decode_chunk(blob, shape, dtype, checksum=crc, ref=ref)

        for key, members in groups.items():
            uid, p, ty, tx, by, bx = key
            embs, flags = chunks.get((key, "embedding"), {}), chunks.get((key, "flags"), {})

            for c in sorted(flags):
                inner = f"(inner chunk {c}, {by}, {bx})"
                days = p * pd_ + c * cd + np.arange(cd)
                span = (max(int(days[0]), d0), min(int(days[-1]) + 1, d1))
                try:
                    fl = decode(flags[c], (cd, cp, cp), np.uint8,
                                ChunkRef(self.store.url, f"{zone}/flags", f"c/{p}/{ty}/{tx} {inner}", uid))  # fmt: skip
                except CorruptChunkError as e:
                    if not skip_damaged:
                        raise
                    for i in members:  # which of these dates hold data is unknown
                        lost[i].append(e.with_days(*span))
                    continue
                em = None
                em_error = None
                if c in embs:
                    try:
                        em = decode(embs[c], (cd, EMBEDDING_DIM, cp, cp), np.uint16,
                                    ChunkRef(self.store.url, f"{zone}/embedding", f"c/{p}/0/{ty}/{tx} {inner}", uid))  # fmt: skip
                    except CorruptChunkError as e:
                        if not skip_damaged:
                            raise
                        em_error = e.with_days(*span)
                for i in members:
                    r, cc = int(rows[i]) % cp, int(cols[i]) % cp
                    f = fl[:, r, cc]
                    keep = ((f & Flag.VALID) > 0) & (days >= d0) & (days < d1)
                    if keep.any() and em_error is not None:
                        lost[i].append(em_error)  # valid dates whose values cannot be read: left out
                        continue
                    if keep.any():
                        codes = (
                            em[keep, :, r, cc]
                            if em is not None
                            else np.full((int(keep.sum()), EMBEDDING_DIM), FILL_CODE, np.uint16)
                        )
                        found[i].append((days[keep], codes, f[keep]))
        out = []
        for got, bad in zip(found, lost, strict=True):
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
                    unreadable=tuple(bad),
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
        raw = xr.open_zarr(
            zarr_store(url, storage_options, read_only=True),
            group=zone,
            zarr_format=3,
            consolidated=False,
            chunks=chunks,
            mask_and_scale=False,
        )
        # a JSON scale_factor is a Python float, which xarray decodes to float64 (twice the memory, for
        # 16-bit codes); typed float32 the same lazy CF decoding gives float32 (exact: the step is 2^-k)
        emb = raw["embedding"]
        emb.attrs["scale_factor"] = np.float32(emb.attrs["scale_factor"])
        out[zone] = xr.decode_cf(raw)
    return out
