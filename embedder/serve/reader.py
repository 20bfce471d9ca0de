"""The serving reader: an opened store, its zone grids resolved once, raw reads and located points/bboxes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from typing import Any

import numpy as np

from embedder.config import ServeConfig
from embedder.grid import PIXEL_M, utm_epsg
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.parse import (
    NoDataError,
    ServeError,
    check_lonlat,
    day_index,
    index_date,
    parse_bbox,
    parse_date,
)
from embedder.store import (
    FILL_CODE,
    Flag,
    SeriesReader,
    Store,
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
        zstore = zarr_store(self.store.url, self.store.storage_options, read_only=True)
        self._group = zarr.open_group(zstore, mode="r", zarr_format=3)
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
        """The zarr array ``<zone>/<name>`` (cached)."""
        key = f"{zone}/{name}"
        if key not in self._arrays:
            self._arrays[key] = self._group[key]
        return self._arrays[key]

    def _project(self, zone: ZoneInfo, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = _to_utm(zone.zone.epsg).transform(lon, lat)
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def _zone_order(self, lon: float, lat: float) -> list[ZoneInfo]:
        epsg = utm_epsg(lon, lat)
        native = f"utm{epsg % 100:02d}{'S' if epsg >= 32700 else 'N'}"
        return sorted(self.zones.values(), key=lambda z: (z.name != native, z.name))

    def locate(self, lon: float, lat: float) -> tuple[str, int, int] | None:
        """``(zone, row, col)`` of the store pixel holding ``(lon, lat)``, or None outside coverage."""
        lon, lat = check_lonlat(lon, lat)
        for zi in self._zone_order(lon, lat):
            x, y = self._project(zi, np.array([lon]), np.array([lat]))
            px = zi.pixel(float(x[0]), float(y[0]))
            if px is not None:
                return zi.name, px[0], px[1]
        return None

    def day_range(self, start: Any, end: Any, *, zone: str | None = None) -> tuple[int, int]:
        """``[d0, d1)`` day indices for inclusive ``start``/``end`` (None: the store's whole time axis)."""
        nt = max(z.nt for z in self.zones.values()) if zone is None else self.zones[zone].nt
        d0 = 0 if start is None else day_index(parse_date(start, name="start"))
        d1 = nt if end is None else day_index(parse_date(end, name="end")) + 1
        if start is not None and end is not None and d1 <= d0:
            raise ServeError(f"end={end!r} is before start={start!r}; swap them")
        return max(d0, 0), min(d1, nt)

    def dates(self, *, zone: str | None = None, start: Any = None, end: Any = None) -> list[dt.date]:
        """Dates with at least one valid pixel (from ``valid_px``, a small per-tile array)."""
        out: set[int] = set()
        for name in [zone] if zone else list(self.zones):
            d0, d1 = self.day_range(start, end, zone=name)
            if d1 <= d0:
                continue
            counts = np.asarray(self.array(name, "valid_px")[d0:d1])  # [T, tile_y, tile_x]
            out.update((np.flatnonzero(counts.reshape(counts.shape[0], -1).sum(axis=1)) + d0).tolist())
        return [index_date(d) for d in sorted(out)]

    def info(self) -> dict[str, Any]:
        """A JSON-able summary: zones (EPSG, lon/lat bbox, shape), dates with data, layout, model."""
        from embedder.stac_store import _lonlat_bbox

        zones = {}
        for name, zi in self.zones.items():
            bounds = (zi.x0, zi.y0 - zi.ny * PIXEL_M, zi.x0 + zi.nx * PIXEL_M, zi.y0)
            zones[name] = {
                "epsg": zi.zone.epsg,
                "bbox": _lonlat_bbox(zi.zone.epsg, bounds),
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
        """uint16 codes ``[T, 7, h, w]`` at day indices ``days`` (orthogonal selection)."""
        arr = self.array(zone, "embedding")
        if len(days) == 0:
            return np.full((0, EMBEDDING_DIM, ys.stop - ys.start, xs.stop - xs.start), FILL_CODE, np.uint16)
        return np.asarray(
            arr.get_orthogonal_selection((np.asarray(days, dtype=np.int64), slice(None), ys, xs))
        )

    def region_days(self, zone: str, d0: int, d1: int, ys: slice, xs: slice) -> np.ndarray:
        """Day indices in ``[d0, d1)`` on which any tile under ``ys``/``xs`` has valid pixels."""
        d0, d1 = max(d0, 0), min(d1, self.zones[zone].nt)
        if d1 <= d0:
            return np.zeros(0, dtype=np.int64)
        tp = self.store.cfg.tile_px
        ty = slice(ys.start // tp, (ys.stop - 1) // tp + 1)
        tx = slice(xs.start // tp, (xs.stop - 1) // tp + 1)
        counts = np.asarray(self.array(zone, "valid_px")[d0:d1, ty, tx])  # [T, ty, tx]
        return np.flatnonzero(counts.reshape(counts.shape[0], -1).sum(axis=1)) + d0


def as_reader(store: StoreReader | str, storage_options: dict[str, Any] | None = None) -> StoreReader:
    """``store`` itself when it is a :class:`StoreReader`, else a reader opened on the URL."""
    return store if isinstance(store, StoreReader) else StoreReader(store, storage_options=storage_options)


_POINT_BATCH = 512  # points per read batch: bounds memory at T x 7 x 512 codes


def series_at(
    r: StoreReader, zone: str, rows: np.ndarray, cols: np.ndarray, d0: int, d1: int, *, method: str = "auto"
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per point: (days [T], codes [T, 7], flags [T]) for pixels of one zone.

    The store's :class:`~embedder.store.SeriesReader` reads each spatial block of a unit with one byte
    range per array (done-marker cached). Units written without a shard index in their marker (earlier
    versions) are read through zarr instead: points batched per spatial chunk, ``flags`` and
    ``embedding`` read concurrently with point-wise selections.
    """
    from concurrent.futures import ThreadPoolExecutor

    if d1 <= d0 or rows.size == 0:
        return [
            (np.zeros(0, np.int64), np.zeros((0, EMBEDDING_DIM), np.uint16), np.zeros(0, np.uint8))
        ] * rows.size
    if method not in ("auto", "zarr"):
        raise ServeError(f"method={method!r} must be 'auto' or 'zarr'")
    fast = r.series_reader.series(zone, rows, cols, d0, d1) if method == "auto" else None
    if fast is not None:
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
            flags, codes = np.asarray(f_job.result()), np.asarray(e_job.result())
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
    lon0, lat0, lon1, lat1 = parse_bbox(bbox)
    ring_lon = np.concatenate(
        [np.linspace(lon0, lon1, 21), np.full(21, lon1), np.linspace(lon1, lon0, 21), np.full(21, lon0)]
    )
    ring_lat = np.concatenate(
        [np.full(21, lat0), np.linspace(lat0, lat1, 21), np.full(21, lat1), np.linspace(lat1, lat0, 21)]
    )
    for zi in r._zone_order((lon0 + lon1) / 2, (lat0 + lat1) / 2):
        x, y = r._project(zi, ring_lon, ring_lat)
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.all():  # the ring leaves the projection's domain: not this zone's region
            continue
        c0 = max(0, math.floor((x.min() - zi.x0) / PIXEL_M))
        c1 = min(zi.nx, math.ceil((x.max() - zi.x0) / PIXEL_M))
        r0 = max(0, math.floor((zi.y0 - y.max()) / PIXEL_M))
        r1 = min(zi.ny, math.ceil((zi.y0 - y.min()) / PIXEL_M))
        if c1 > c0 and r1 > r0:
            return RegionWindow(zi, slice(r0, r1), slice(c0, c1))
    raise NoDataError(
        f"bbox {bbox!r} is outside the store's coverage (zones {', '.join(r.zones)}); see /api/info"
    )
