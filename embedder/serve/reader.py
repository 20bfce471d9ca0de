"""The serving reader: an opened store, its zone grids resolved once, raw reads and located points/bboxes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import threading
from typing import Any

import numpy as np

from embedder.config import ServeConfig
from embedder.geo import UtmZone, check_order, day_index, index_date
from embedder.grid import PIXEL_M, Period, WorkUnit, lonlat_bbox
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.parse import (
    NoDataError,
    ServeError,
    check_lonlat,
    parse_bbox,
    parse_date,
)
from embedder.store import (
    FILL_CODE,
    CorruptChunkError,
    Flag,
    SeriesReader,
    Store,
    StoreMetadataError,
    ZoneExtent,
    as_store,
    zarr_store,
    zone_attrs,
)

__all__ = [
    "RegionWindow",
    "StoreReader",
    "ZoneInfo",
    "as_reader",
    "region_window",
    "series_at",
]

_READ_ERRORS = (ValueError, RuntimeError, TypeError, OSError, KeyError)
"""What zarr (its crc32c and Blosc codecs, the sharding index, the file system) raises for a damaged chunk."""
_DATA_ARRAYS = ("embedding", "flags", "valid_px")


def _checked_zarr_store(inner: Any, missing: Any) -> Any:
    """``inner`` wrapped so that a chunk object the unit's done-marker lists but the store lacks raises.

    zarr reads an absent chunk object as fill (no data): for a done unit that would be silently wrong.
    ``missing(key)`` returns the :class:`CorruptChunkError` to raise for an absent ``key``, or None
    (an all-fill object that was never written).
    """
    from zarr.storage import WrapperStore

    class CheckedStore(WrapperStore[Any]):
        def _with_store(self, store: Any) -> Any:
            return CheckedStore(store)

        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            buf = await self._store.get(key, prototype, byte_range)
            if buf is None and (err := missing(key)) is not None:
                raise err
            return buf

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
            key_ranges = list(key_ranges)
            got = await self._store.get_partial_values(prototype, key_ranges)
            for (key, _), buf in zip(key_ranges, got, strict=True):
                if buf is None and (err := missing(key)) is not None:
                    raise err
            return list(got)

    return CheckedStore(inner)


# ---------------------------------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _to_utm(epsg: int) -> Any:
    """lon/lat -> zone CRS transformer (cached: building one costs milliseconds; thread-safe since pyproj 3.1)."""
    from pyproj import Transformer

    return Transformer.from_crs(4326, epsg, always_xy=True)


@dataclasses.dataclass(frozen=True)
class ZoneInfo:
    """One zone group's grid as the reader sees it: extent, top-left corner and shape."""

    name: str
    zone: ZoneExtent
    x0: float  # left edge of the zone grid, metres
    y0: float  # top edge
    ny: int
    nx: int
    nt: int

    def pixel(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, col) of projected ``(x, y)`` in the zone grid, or None outside it."""
        if not (math.isfinite(x) and math.isfinite(y)):  # e.g. the pole, far outside the zone
            return None
        col = math.floor((x - self.x0) / PIXEL_M)
        row = math.floor((self.y0 - y) / PIXEL_M)
        if 0 <= row < self.ny and 0 <= col < self.nx:
            return row, col
        return None


class StoreReader:
    """An opened store for queries: zone geometry and zarr arrays resolved once, reads on demand.

    Create one per store and reuse it (the HTTP service keeps one); it is safe to share between threads.
    """

    def __init__(
        self,
        url: str | Store,
        *,
        storage_options: dict[str, Any] | None = None,
        cfg: ServeConfig | None = None,
    ) -> None:
        import zarr

        self.store = as_store(url, storage_options)
        self.cfg = cfg or ServeConfig()
        self.url = self.store.url
        zstore = _checked_zarr_store(
            zarr_store(self.store.url, self.store.storage_options, read_only=True), self._missing_object
        )
        try:
            self._group = zarr.open_group(zstore, mode="r", zarr_format=3)
        except _READ_ERRORS as e:
            raise StoreMetadataError(
                f"the store {self.url!r} cannot be opened as a zarr group ({type(e).__name__}: {e})"
            ) from e
        self._damage: dict[tuple[str, str], CorruptChunkError] = {}
        self._damage_lock = threading.Lock()
        self.zones: dict[str, ZoneInfo] = {}
        for name in self.store.attrs["embedder:zones"]:
            zat = zone_attrs(self.store, name)
            z = ZoneExtent.from_attrs(name, zat)
            _a, _, c, _, _, f = zat["spatial:transform"]
            ny, nx = zat["spatial:shape"]
            nt = z.n_periods * self.store.cfg.period_days
            self.zones[name] = ZoneInfo(name, z, float(c), float(f), int(ny), int(nx), nt)
        self._arrays: dict[str, Any] = {}
        self._pca: dict[str, Any] | None = None
        self.series_reader = SeriesReader(self.store, cache_units=self.cfg.marker_cache_units)
        """Point series by byte range (done-markers cached): what probe and sample_points use."""

    @property
    def quant_step(self) -> float:
        """Quantisation step of the stored features."""
        return float(self.store.cfg.quant_step)

    def array(self, zone: str, name: str) -> Any:
        """The zarr array ``<zone>/<name>`` (cached); :class:`StoreMetadataError` when its metadata is damaged."""
        key = f"{zone}/{name}"
        if key not in self._arrays:
            try:
                self._arrays[key] = self._group[key]
            except _READ_ERRORS as e:
                raise StoreMetadataError(
                    f"the array metadata {key}/zarr.json of store {self.url!r} is damaged or missing "
                    f"({type(e).__name__}: {e}); restore it from a copy of the store, or rebuild the store"
                ) from e
        return self._arrays[key]

    # -- damage: what could not be read ----------------------------------------------------------

    @property
    def damaged(self) -> list[CorruptChunkError]:
        """The damaged chunks this reader has met so far (one per array and chunk key), oldest first."""
        with self._damage_lock:
            return list(self._damage.values())

    def note_damage(self, errors: list[CorruptChunkError] | tuple[CorruptChunkError, ...]) -> None:
        """Remember damaged chunks (for ``/health``); each is kept once."""
        with self._damage_lock:
            for e in errors:
                self._damage.setdefault((e.array, e.key.split(" ")[0] + str(e.unit)), e)

    def unit_id(self, zone: str, period: int, ty: int, tx: int) -> str:
        """Id of the work unit of tile ``(ty, tx)`` (array tile indices) and ``period`` in zone group ``zone``."""
        tile = self.zones[zone].zone.tile_at(ty, tx, self.store.cfg.tile_px)
        return WorkUnit(tile=tile, period=Period(index=period, period_days=self.store.cfg.period_days)).id

    def _missing_object(self, key: str) -> CorruptChunkError | None:
        """The error for an absent chunk object ``key`` that its unit's done-marker lists (else None)."""
        parts = key.split("/")
        if len(parts) < 5 or parts[1] not in _DATA_ARRAYS or parts[2] != "c" or parts[0] not in self.zones:
            return None
        try:
            coords = [int(v) for v in parts[3:]]
        except ValueError:
            return None
        p, ty, tx = coords[0], coords[-2], coords[-1]
        uid = self.unit_id(parts[0], p, ty, tx)
        try:
            marker = self.series_reader.marker(parts[0], uid)
        except CorruptChunkError as damaged:  # the done-marker itself is damaged: so is the unit
            return damaged
        if marker is None:
            return None  # not done: no data, and no claim that there is
        listed = (marker.get("objects") or {}).get(key)
        if listed is None or not listed.get("nbytes"):
            return None  # all fill: never written
        pd_ = self.store.cfg.period_days
        return CorruptChunkError(
            self.url, f"{parts[0]}/{parts[1]}", "/".join(parts[2:]),
            f"the object is missing although the unit's done-marker lists it ({listed['nbytes']} bytes)",
            unit=uid, days=(p * pd_, (p + 1) * pd_),
        )  # fmt: skip

    def _corrupt(
        self, zone: str, name: str, day: int, y: int, x: int, exc: BaseException
    ) -> CorruptChunkError:
        """``exc`` raised reading the chunk of ``<zone>/<name>`` holding ``(day, y, x)``, as a CorruptChunkError."""
        cfg = self.store.cfg
        pd_, cd, tp, cp = cfg.period_days, cfg.chunk_days, cfg.tile_px, cfg.chunk_px
        p = day // pd_
        if name == "valid_px":  # one chunk per unit; y, x are tile indices
            ty, tx, key, span = y, x, f"c/{p}/{y}/{x}", (p * pd_, (p + 1) * pd_)
        else:
            ty, tx = y // tp, x // tp
            c, by, bx = (day % pd_) // cd, (y % tp) // cp, (x % tp) // cp
            shard = f"c/{p}/0/{ty}/{tx}" if name == "embedding" else f"c/{p}/{ty}/{tx}"
            key = f"{shard} (inner chunk {c}, {by}, {bx})"
            span = (p * pd_ + c * cd, p * pd_ + (c + 1) * cd)
        if isinstance(exc, CorruptChunkError):
            return exc if exc.days is not None else exc.with_days(*span)
        msg = str(exc)
        reason = "crc32c checksum mismatch" if "checksum" in msg.lower() else "cannot be read or decoded"
        return CorruptChunkError(
            self.url, f"{zone}/{name}", key, f"{reason} ({type(exc).__name__}: {msg[:160]})",
            unit=self.unit_id(zone, p, ty, tx), days=span,
        )  # fmt: skip

    def project(self, zone: ZoneInfo, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat arrays -> ``(x, y)`` metres in ``zone``'s UTM CRS."""
        x, y = _to_utm(zone.zone.epsg).transform(lon, lat)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def _zone_order(self, lon: float, lat: float) -> list[ZoneInfo]:
        native = UtmZone.containing(lon, lat).name
        return sorted(self.zones.values(), key=lambda z: (z.name != native, z.name))

    def locate(self, lon: float, lat: float) -> tuple[str, int, int] | None:
        """``(zone, row, col)`` of the store pixel holding ``(lon, lat)``, or None outside coverage."""
        lon, lat = check_lonlat(lon, lat)
        for zi in self._zone_order(lon, lat):
            x, y = self.project(zi, np.array([lon]), np.array([lat]))
            px = zi.pixel(float(x[0]), float(y[0]))
            if px is not None:
                return zi.name, px[0], px[1]
        return None

    def day_range(self, start: Any, end: Any, *, zone: str | None = None) -> tuple[int, int]:
        """``[d0, d1)`` day indices for inclusive ``start``/``end`` (None: the store's whole time axis)."""
        nt = max(z.nt for z in self.zones.values()) if zone is None else self.zones[zone].nt
        first = None if start is None else parse_date(start, name="start")
        last = None if end is None else parse_date(end, name="end")
        if first is not None and last is not None:
            check_order(first, last, error=ServeError)
        d0 = 0 if first is None else day_index(first)
        d1 = nt if last is None else day_index(last) + 1
        return max(d0, 0), min(d1, nt)

    def dates(self, *, zone: str | None = None, start: Any = None, end: Any = None) -> list[dt.date]:
        """Dates with at least one valid pixel (from ``valid_px``, a small per-tile array)."""
        out: set[int] = set()
        for name in [zone] if zone else list(self.zones):
            d0, d1 = self.day_range(start, end, zone=name)
            if d1 <= d0:
                continue
            zi = self.zones[name]
            counts, _, _errors = self.read_checked(
                name, "valid_px", np.arange(d0, d1), slice(0, zi.zone.n_rows), slice(0, zi.zone.n_cols)
            )  # [T, tile_y, tile_x]; the dates of damaged chunks are left out (and noted)
            out.update((np.flatnonzero(counts.reshape(counts.shape[0], -1).sum(axis=1)) + d0).tolist())
        return [index_date(d) for d in sorted(out)]

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: zones (EPSG, lon/lat bbox, shape), dates with data, layout, model."""
        zones = {}
        for name, zi in self.zones.items():
            bounds = (zi.x0, zi.y0 - zi.ny * PIXEL_M, zi.x0 + zi.nx * PIXEL_M, zi.y0)
            zones[name] = {
                "epsg": zi.zone.epsg,
                "bbox": lonlat_bbox(zi.zone.epsg, bounds),
                "shape": [zi.ny, zi.nx],
                "transform": [PIXEL_M, 0.0, zi.x0, 0.0, -PIXEL_M, zi.y0],
            }
        return {
            "url": self.url,
            "model_version": self.store.attrs.get("embedder:model_version"),
            "fingerprint": self.store.attrs.get("embedder:fingerprint"),
            "features": EMBEDDING_DIM,
            "quant_step": self.quant_step,
            "flags": {str(f.name).lower(): int(f) for f in Flag},
            "zones": zones,
            "dates": [d.isoformat() for d in self.dates()],
        }

    # -- raw reads ------------------------------------------------------------------------------

    def read_series(
        self, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int, *, method: str = "auto"
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per pixel ``(rows[i], cols[i])`` of ``zone``: (days [T], codes [T, 7], flags [T]) of its valid dates.

        ``method="auto"`` reads by byte range through the done-markers' shard indexes (falling back to
        zarr for units written without one); ``"zarr"`` always uses zarr's coordinate selection (the
        baseline of bench/serve.py).
        """
        return series_at(self, zone, np.asarray(rows), np.asarray(cols), d0, d1, method=method)

    def read_codes(self, zone: str, days: np.ndarray, ys: slice, xs: slice) -> np.ndarray:
        """uint16 codes ``[T, 7, h, w]`` at day indices ``days`` (orthogonal selection).

        A damaged chunk raises :class:`CorruptChunkError`; :meth:`read_checked` reads around it instead.
        """
        codes, _, errors = self.read_checked(zone, "embedding", days, ys, xs)
        if errors:
            raise errors[0]
        return codes

    def read_checked(
        self, zone: str, name: str, days: np.ndarray, ys: slice, xs: slice
    ) -> tuple[np.ndarray, np.ndarray | None, list[CorruptChunkError]]:
        """Orthogonal read of ``<zone>/<name>`` at day indices ``days`` and rows ``ys``/columns ``xs``.

        Returns ``(data, bad, errors)``: ``data`` (``[T, 7, h, w]`` for ``embedding``, ``[T, h, w]``
        otherwise) holds the array's fill value where a chunk could not be read, ``bad`` is the
        ``[T, h, w]`` mask of those places (None when everything was read) and ``errors`` one
        :class:`CorruptChunkError` per damaged chunk (also noted in :attr:`damaged`). An undamaged read
        is one zarr selection; after a failure the selection is read again time chunk by time chunk,
        and a failing time chunk spatial chunk by spatial chunk.
        """
        arr = self.array(zone, name)
        days = np.asarray(days, dtype=np.int64)
        feat: tuple[Any, ...] = (slice(None),) if name == "embedding" else ()
        h, w = ys.stop - ys.start, xs.stop - xs.start
        fill = FILL_CODE if name == "embedding" else 0
        if days.size == 0:
            shape = (0, EMBEDDING_DIM, h, w) if feat else (0, h, w)
            return np.full(shape, fill, arr.dtype), None, []
        try:
            return np.asarray(arr.get_orthogonal_selection((days, *feat, ys, xs))), None, []
        except _READ_ERRORS:
            pass
        out = np.full((days.size, *((EMBEDDING_DIM,) if feat else ()), h, w), fill, arr.dtype)
        bad = np.zeros((days.size, h, w), dtype=bool)
        errors: list[CorruptChunkError] = []
        cd, cy, cx = arr.chunks[0], arr.chunks[-2], arr.chunks[-1]
        dead: dict[tuple[int, int, int], CorruptChunkError] = {}
        for tc in np.unique(days // cd):
            ti = np.flatnonzero(days // cd == tc)
            try:
                out[ti] = np.asarray(arr.get_orthogonal_selection((days[ti], *feat, ys, xs)))
                continue
            except _READ_ERRORS:
                pass
            for y0 in range(ys.start - ys.start % cy, ys.stop, cy):
                yy = slice(max(y0, ys.start), min(y0 + cy, ys.stop))
                for x0 in range(xs.start - xs.start % cx, xs.stop, cx):
                    xx = slice(max(x0, xs.start), min(x0 + cx, xs.stop))
                    oy, ox = (
                        slice(yy.start - ys.start, yy.stop - ys.start),
                        slice(xx.start - xs.start, xx.stop - xs.start),
                    )
                    piece = self._piece(
                        zone, name, int(days[ti[0]]), yy.start, xx.start, dead, errors,
                        lambda ti=ti, yy=yy, xx=xx: arr.get_orthogonal_selection((days[ti], *feat, yy, xx)),
                    )  # fmt: skip
                    if piece is None:
                        bad[ti[:, None, None], oy, ox] = True
                        continue
                    if feat:
                        out[ti[:, None, None, None], np.arange(EMBEDDING_DIM)[None, :, None, None],
                            np.arange(oy.start, oy.stop)[None, None, :, None],
                            np.arange(ox.start, ox.stop)[None, None, None, :]] = piece  # fmt: skip
                    else:
                        out[ti[:, None, None], np.arange(oy.start, oy.stop)[None, :, None],
                            np.arange(ox.start, ox.stop)[None, None, :]] = piece  # fmt: skip
        self.note_damage(errors)
        return out, (bad if bad.any() else None), errors

    def read_points_checked(
        self, zone: str, days: np.ndarray, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, list[CorruptChunkError]]:
        """uint16 codes ``[T, 7, P]`` of the pixels ``(rows[p], cols[p])`` on ``days`` (coordinate selection).

        As :meth:`read_checked`: ``FILL_CODE`` where a chunk could not be read, the ``[T, P]`` mask of
        those places (or None) and the errors.
        """
        arr = self.array(zone, "embedding")
        days = np.asarray(days, dtype=np.int64)
        feats = np.arange(EMBEDDING_DIM)

        def sel(d: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return np.asarray(arr.get_coordinate_selection(
                (d[:, None, None], feats[None, :, None], r[None, None, :], c[None, None, :])
            ))  # fmt: skip

        try:
            return sel(days, rows, cols), None, []
        except _READ_ERRORS:
            pass
        out = np.full((days.size, EMBEDDING_DIM, rows.size), FILL_CODE, np.uint16)
        bad = np.zeros((days.size, rows.size), dtype=bool)
        errors: list[CorruptChunkError] = []
        cd, cp = arr.chunks[0], arr.chunks[-1]
        dead: dict[tuple[int, int, int], CorruptChunkError] = {}
        block = (rows // cp) * (1 << 32) + cols // cp
        for tc in np.unique(days // cd):
            ti = np.flatnonzero(days // cd == tc)
            for b in np.unique(block):
                pi = np.flatnonzero(block == b)
                piece = self._piece(
                    zone, "embedding", int(days[ti[0]]), int(rows[pi[0]]), int(cols[pi[0]]), dead, errors,
                    lambda ti=ti, pi=pi: sel(days[ti], rows[pi], cols[pi]),
                )  # fmt: skip
                if piece is None:
                    bad[ti[:, None], pi[None, :]] = True
                else:
                    out[ti[:, None, None], feats[None, :, None], pi[None, None, :]] = piece
        self.note_damage(errors)
        return out, (bad if bad.any() else None), errors

    def _piece(
        self,
        zone: str,
        name: str,
        day: int,
        y: int,
        x: int,
        dead: dict[tuple[int, int, int], CorruptChunkError],
        errors: list[CorruptChunkError],
        read: Any,
    ) -> np.ndarray | None:
        """``read()`` of the piece of one chunk holding ``(day, y, x)``, or None on a damaged chunk.

        The error is added to ``errors`` once per chunk; a shard whose whole object is missing
        (``dead``) is not read again.
        """
        cfg = self.store.cfg
        per_tile = 1 if name == "valid_px" else cfg.tile_px
        shard = (day // cfg.period_days, y // per_tile, x // per_tile)
        if shard in dead:
            return None
        try:
            return np.asarray(read())
        except _READ_ERRORS as e:
            err = self._corrupt(zone, name, day, y, x, e)
            if "(inner chunk" not in err.key:  # the object as a whole: every chunk of it is lost
                dead[shard] = err
            if all((o.array, o.key) != (err.array, err.key) for o in errors):
                errors.append(err)
            return None

    def region_days(self, zone: str, d0: int, d1: int, ys: slice, xs: slice) -> np.ndarray:
        """Day indices in ``[d0, d1)`` on which any tile under ``ys``/``xs`` has valid pixels.

        ``valid_px`` (a small per-tile count) answers; where one of its chunks is damaged the dates are
        taken from the ``flags`` array itself over the same days (the damage is noted for ``/health``).
        Only when those flags cannot be read either is the answer unknown: :class:`CorruptChunkError`.
        """
        d0, d1 = max(d0, 0), min(d1, self.zones[zone].nt)
        if d1 <= d0:
            return np.zeros(0, dtype=np.int64)
        tp = self.store.cfg.tile_px
        ty = slice(ys.start // tp, (ys.stop - 1) // tp + 1)
        tx = slice(xs.start // tp, (xs.stop - 1) // tp + 1)
        days = np.arange(d0, d1)
        counts, bad, _errors = self.read_checked(zone, "valid_px", days, ty, tx)  # [T, ty, tx]
        found = counts.reshape(counts.shape[0], -1).sum(axis=1) > 0  # [T]
        if bad is not None:  # damaged valid_px chunks: ask the flags of those days
            unknown = days[bad.reshape(bad.shape[0], -1).any(axis=1)]
            flags, _, ferrors = self.read_checked(zone, "flags", unknown, ys, xs)  # [U, h, w]
            if ferrors:
                raise ferrors[0]
            has = ((flags & np.uint8(Flag.VALID)) > 0).reshape(flags.shape[0], -1).any(axis=1)
            found[unknown[has] - d0] = True
        return days[found]


def as_reader(store: StoreReader | str, storage_options: dict[str, Any] | None = None) -> StoreReader:
    """``store`` itself when it is a :class:`StoreReader`, else a reader opened on the URL."""
    return store if isinstance(store, StoreReader) else StoreReader(store, storage_options=storage_options)


_POINT_BATCH = 512  # points per read batch: bounds memory at T x 7 x 512 codes


def series_at(
    r: StoreReader,
    zone: str,
    rows: np.ndarray,
    cols: np.ndarray,
    d0: int,
    d1: int,
    *,
    method: str = "auto",
    damaged: dict[int, list[CorruptChunkError]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per point: (days [T], codes [T, 7], flags [T]) for pixels of one zone.

    The store's :class:`~embedder.store.SeriesReader` reads each spatial block of a unit with one byte
    range per array (done-marker cached). Units written without a shard index in their marker (earlier
    versions) are read through zarr instead: points batched per spatial chunk, ``flags`` and
    ``embedding`` read concurrently with point-wise selections.

    A damaged chunk raises :class:`CorruptChunkError`; given a ``damaged`` dict, the dates it holds are
    left out of the points' series instead and ``damaged[i]`` lists the errors of point ``i``.
    """
    from concurrent.futures import ThreadPoolExecutor

    if d1 <= d0 or rows.size == 0:
        return [
            (np.zeros(0, np.int64), np.zeros((0, EMBEDDING_DIM), np.uint16), np.zeros(0, np.uint8))
        ] * rows.size
    if method not in ("auto", "zarr"):
        raise ServeError(f"method={method!r} must be 'auto' or 'zarr'")
    fast = (
        r.series_reader.series(zone, rows, cols, d0, d1, skip_damaged=damaged is not None)
        if method == "auto"
        else None
    )
    if fast is not None:
        for i, s in enumerate(fast):
            if s.unreadable and damaged is not None:
                damaged.setdefault(i, []).extend(s.unreadable)
                r.note_damage(s.unreadable)
        return [(s.days, s.codes, s.flags) for s in fast]
    cp = r.store.cfg.chunk_px
    out: list[Any] = [None] * rows.size
    order = np.lexsort((cols // cp, rows // cp))  # points of one spatial chunk together
    days = np.arange(d0, d1)
    feats = np.arange(EMBEDDING_DIM)
    with ThreadPoolExecutor(max_workers=2) as pool:
        for b0 in range(0, order.size, _POINT_BATCH):
            idx = order[b0 : b0 + _POINT_BATCH]
            rr, cc = rows[idx], cols[idx]
            f_job = pool.submit(
                r.array(zone, "flags").get_coordinate_selection, (days[:, None], rr[None, :], cc[None, :])
            )  # [T, P]
            e_job = pool.submit(
                r.array(zone, "embedding").get_coordinate_selection,
                (days[:, None, None], feats[None, :, None], rr[None, None, :], cc[None, None, :]),
            )  # [T, 7, P]
            try:
                flags, codes = np.asarray(f_job.result()), np.asarray(e_job.result())
            except _READ_ERRORS as e:  # units of earlier versions: the batch is lost as a whole
                err = r._corrupt(zone, "embedding", d0, int(rr[0]), int(cc[0]), e)
                err = err if err.days is not None else err.with_days(d0, d1)
                r.note_damage([err])
                if damaged is None:
                    raise err from e
                for i in idx:
                    damaged.setdefault(int(i), []).append(err)
                    out[i] = (
                        np.zeros(0, np.int64),
                        np.zeros((0, EMBEDDING_DIM), np.uint16),
                        np.zeros(0, np.uint8),
                    )
                continue
            valid = (flags & Flag.VALID) > 0  # [T, P]
            for p, i in enumerate(idx):
                t = np.flatnonzero(valid[:, p])
                out[i] = (t + d0, codes[t, :, p], flags[t, p])
    return out


@dataclasses.dataclass(frozen=True)
class RegionWindow:
    """The pixel window (rows ``ys``, columns ``xs``) of a bbox on one zone grid."""

    zone: ZoneInfo
    ys: slice
    xs: slice


def region_window(r: StoreReader, bbox: Any) -> RegionWindow:
    """The window of a lon/lat bbox on the first zone grid (bbox centre's zone first) that holds it."""
    from pyproj.exceptions import ProjError

    box = parse_bbox(bbox)
    for zi in r._zone_order(*box.centre):
        try:  # edges densified to 21 points each (corners included), so the window holds their curves
            x_min, y_min, x_max, y_max = _to_utm(zi.zone.epsg).transform_bounds(
                *box.bounds, densify_pts=19, errcheck=True
            )
        except ProjError:  # an edge leaves the projection's domain: not this zone's region
            continue
        c0 = max(0, math.floor((x_min - zi.x0) / PIXEL_M))
        c1 = min(zi.nx, math.ceil((x_max - zi.x0) / PIXEL_M))
        r0 = max(0, math.floor((zi.y0 - y_max) / PIXEL_M))
        r1 = min(zi.ny, math.ceil((zi.y0 - y_min) / PIXEL_M))
        if c1 > c0 and r1 > r0:
            return RegionWindow(zi, slice(r0, r1), slice(c0, c1))
    raise NoDataError(
        f"bbox {box.bounds} is outside the store's coverage (zones {', '.join(r.zones)}); see /api/info"
    )
