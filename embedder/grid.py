"""Tiling of regions into UTM-zone tiles on the 10 m grid, and of periods into store-aligned blocks.

A *tile* is a square of ``tile_px`` x ``tile_px`` pixels of 10 m on the grid of one UTM zone (EPSG
326zz north of the equator, 327zz south). Tile origins are snapped to a fixed per-zone grid: tile
``(col, row)`` spans eastings ``[col * T, (col + 1) * T)`` and northings ``[row * T, (row + 1) * T)``
with ``T = tile_px * 10 m``, so tiles from different runs (and different regions) coincide exactly,
and a tile is exactly one spatial shard of the embedding store (:mod:`embedder.store`).

A *period* is one block of ``period_days`` days counted from the fixed :data:`EPOCH` (the store's day
axis, defined in :mod:`embedder.geo` and re-exported here); block ``k`` covers days
``[k * P, (k + 1) * P)`` since the epoch, which is exactly one time shard of the store.
A *work unit* is a (tile, period) pair; its :attr:`WorkUnit.id` is stable across runs and machines.

Regions are a lon/lat bbox ``(min_lon, min_lat, max_lon, max_lat)`` (a 4-sequence or an
:class:`embedder.geo.BBox`), a GeoJSON geometry / Feature / FeatureCollection (dict, or path to a
``.geojson`` file) in lon/lat, a shapely geometry, or a name from :data:`REGIONS` (``"europe"``,
``"sample"``).

Every point of a region belongs to exactly one tile: the tile of its own UTM zone (standard 6-degree
zones, no Norway/Svalbard exceptions) and hemisphere that contains it. Near zone borders the tile
squares of two zones overlap on the ground, as MGRS tiles do; each zone's store group holds its own.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import box, mapping, shape
from shapely.geometry.base import BaseGeometry

from embedder.geo import EPOCH, BBox, DateRange, UtmZone, day_index, index_date, parse_date

__all__ = [
    "DEFAULT_PERIOD_DAYS",
    "DEFAULT_TILE_PX",
    "EPOCH",
    "PIXEL_M",
    "REGIONS",
    "GridError",
    "Period",
    "Tile",
    "WorkUnit",
    "lonlat_bbox",
    "periods",
    "region_from_text",
    "region_geometry",
    "tiles_for_region",
    "utm_epsg",
    "work_units",
    "zone_parts",
]

PIXEL_M = 10.0
"""Pixel size of the grid in metres (the S2 10 m bands)."""
DEFAULT_TILE_PX = 512
"""Default tile side in pixels (5.12 km): one spatial shard of the store (docs/store.md)."""
DEFAULT_PERIOD_DAYS = 366
"""Default period block length in days: one time shard of the store (a year, see docs/store.md)."""

_MAX_LAT_N = 84.0  # UTM is defined from 80 S to 84 N
_MAX_LAT_S = -80.0

REGIONS: dict[str, tuple[float, float, float, float] | str] = {
    "europe": (-25.0, 34.0, 45.0, 72.0),
    "sample": "sample",
}
"""Named regions: a lon/lat bbox, or ``"sample"`` (the scenes of the default sample region)."""

_TILE_ID = re.compile(r"^(\d{2})([NS])_(\d+)px_x(\d+)_y(\d+)$")


class GridError(ValueError):
    """A region, tile or period given to the grid is invalid."""


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the standard UTM zone containing ``(lon, lat)`` (326zz north, 327zz south)."""
    return UtmZone.containing(lon, lat).epsg


def lonlat_bbox(epsg: int, bounds: tuple[float, float, float, float]) -> list[float]:
    """The lon/lat bbox ``[lon_min, lat_min, lon_max, lat_max]`` (7 decimals) around projected ``bounds``.

    ``bounds`` is ``(left, bottom, right, top)`` in the CRS ``epsg``; the edges are densified (21 points
    each), so the box holds the curved outline of the projected rectangle.
    """
    from pyproj import Transformer

    t = Transformer.from_crs(epsg, 4326, always_xy=True)
    x0, y0, x1, y1 = t.transform_bounds(*bounds, densify_pts=21)
    return [round(v, 7) for v in (x0, y0, x1, y1)]


@dataclass(frozen=True, order=True)
class Tile:
    """One square tile of the fixed per-zone grid."""

    zone: int
    """UTM zone number, 1..60."""
    south: bool
    """True for the southern-hemisphere CRS (EPSG 327zz, false northing 10 000 km)."""
    col: int
    """Column index: the tile spans eastings ``[col * size_m, (col + 1) * size_m)``."""
    row: int
    """Row index: the tile spans northings ``[row * size_m, (row + 1) * size_m)`` (north-up counting)."""
    size_px: int = DEFAULT_TILE_PX
    """Tile side in 10 m pixels."""

    def __post_init__(self) -> None:
        if not 1 <= self.zone <= 60:
            raise GridError(f"Tile zone {self.zone} is not a UTM zone; use 1..60")
        if self.size_px <= 0 or self.col < 0 or self.row < 0:
            raise GridError(
                f"Tile(col={self.col}, row={self.row}, size_px={self.size_px}): indices must be >= 0 "
                "and size_px > 0"
            )

    @property
    def utm(self) -> UtmZone:
        """The tile's UTM zone and hemisphere."""
        return UtmZone(self.zone, self.south)

    @property
    def epsg(self) -> int:
        """EPSG code of the tile's UTM CRS."""
        return self.utm.epsg

    @property
    def crs(self) -> str:
        """The CRS as ``"EPSG:326zz"``."""
        return self.utm.crs

    @property
    def zone_name(self) -> str:
        """Store group name of the zone, e.g. ``"utm32N"``."""
        return self.utm.name

    @property
    def size_m(self) -> float:
        """Tile side in metres."""
        return self.size_px * PIXEL_M

    @property
    def id(self) -> str:
        """Stable id, e.g. ``"32N_512px_x0093_y1023"``; :meth:`from_id` parses it back."""
        return f"{self.zone:02d}{'S' if self.south else 'N'}_{self.size_px}px_x{self.col:04d}_y{self.row:04d}"

    @classmethod
    def from_id(cls, tile_id: str) -> Tile:
        """Parse a :attr:`id` back into a tile."""
        m = _TILE_ID.match(tile_id)
        if m is None:
            raise GridError(f"tile id {tile_id!r} is not of the form '32N_512px_x0093_y1023'")
        zone, hemi, size, col, row = m.groups()
        return cls(zone=int(zone), south=hemi == "S", col=int(col), row=int(row), size_px=int(size))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in metres of :attr:`epsg` (no halo)."""
        s = self.size_m
        return (self.col * s, self.row * s, (self.col + 1) * s, (self.row + 1) * s)

    def geobox(self, halo_px: int = 7) -> Any:
        """The ``odc.geo`` GeoBox to read for this tile: the tile grown by ``halo_px`` pixels each side.

        The default halo of 7 px is half the 15 px inference window (SPEC.md section 7).
        """
        from odc.geo.gridspec import GridSpec

        if halo_px < 0:
            raise GridError(f"halo_px={halo_px} must be >= 0")
        # The zone's tile grid: origin (0, 0), north-up pixels, tile (col, row) above and right of it.
        grid = GridSpec(self.crs, (self.size_px, self.size_px), PIXEL_M)
        return grid.tile_geobox((self.col, self.row)).pad(halo_px)

    def footprint(self) -> BaseGeometry:
        """The tile square (no halo) in lon/lat (EPSG:4326), edges densified to follow the projection."""
        from pyproj import Transformer

        left, bottom, right, top = self.bounds
        square = shapely.segmentize(box(left, bottom, right, top), self.size_m / 16)
        to_ll = Transformer.from_crs(self.epsg, 4326, always_xy=True)
        return shapely.transform(square, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))


@dataclass(frozen=True, order=True)
class Period:
    """One store-aligned block of days: ``[start, end]`` inclusive."""

    index: int
    """Block number ``k`` since :data:`EPOCH`."""
    period_days: int = DEFAULT_PERIOD_DAYS
    """Block length in days."""

    def __post_init__(self) -> None:
        if self.index < 0 or self.period_days <= 0:
            raise GridError(f"Period(index={self.index}, period_days={self.period_days}) must be >= 0 / > 0")

    @property
    def start_day(self) -> int:
        """First day of the block, days since :data:`EPOCH`."""
        return self.index * self.period_days

    @property
    def start(self) -> dt.date:
        """First day of the block."""
        return index_date(self.start_day)

    @property
    def end(self) -> dt.date:
        """Last day of the block (inclusive)."""
        return self.start + dt.timedelta(days=self.period_days - 1)

    @property
    def id(self) -> str:
        """Stable id, e.g. ``"2020-01-05_366d"``."""
        return f"{self.start.isoformat()}_{self.period_days}d"

    def contains(self, day: dt.date) -> bool:
        """True if ``day`` lies in the block."""
        return self.start <= day <= self.end


@dataclass(frozen=True, order=True)
class WorkUnit:
    """One unit of inference work: a tile over a period; written to the store as one object per array."""

    tile: Tile
    """The tile (one spatial shard)."""
    period: Period
    """The period block (one time shard)."""

    @property
    def id(self) -> str:
        """Stable id ``"<tile id>__<period id>"``, safe as an object-key component."""
        return f"{self.tile.id}__{self.period.id}"

    @classmethod
    def from_id(cls, unit_id: str) -> WorkUnit:
        """Parse a :attr:`id` back into a unit."""
        try:
            tile_id, period_id = unit_id.split("__")
            start_s, days_s = period_id.split("_")
            start = parse_date(start_s)
            days = int(days_s.rstrip("d"))
        except ValueError as exc:
            raise GridError(
                f"unit id {unit_id!r} is not of the form '32N_512px_x0093_y1023__2020-01-05_366d'"
            ) from exc
        offset = day_index(start)
        if offset < 0 or offset % days:
            raise GridError(
                f"unit id {unit_id!r}: {start} is not the start of a {days}-day block since {EPOCH}"
            )
        return cls(tile=Tile.from_id(tile_id), period=Period(index=offset // days, period_days=days))

    def to_row(self) -> dict[str, Any]:
        """The unit's typed fields as flat ``unit_*`` keys of one Ray Data row; :meth:`from_row` inverts it.

        Pipelines carry these rather than :attr:`id`, so no stage parses a string; the id stays a label
        (logs, markers, failure records).
        """
        t, p = self.tile, self.period
        return {
            "unit_zone": t.zone,
            "unit_south": t.south,
            "unit_col": t.col,
            "unit_row": t.row,
            "unit_tile_px": t.size_px,
            "unit_period": p.index,
            "unit_period_days": p.period_days,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> WorkUnit:
        """The unit of a row holding :meth:`to_row`'s keys (other keys are ignored, numpy scalars accepted)."""
        tile = Tile(
            zone=int(row["unit_zone"]),
            south=bool(row["unit_south"]),
            col=int(row["unit_col"]),
            row=int(row["unit_row"]),
            size_px=int(row["unit_tile_px"]),
        )
        return cls(
            tile=tile, period=Period(index=int(row["unit_period"]), period_days=int(row["unit_period_days"]))
        )


def _sample_geometry() -> BaseGeometry:
    from pyproj import Transformer

    from embedder.config import SampleRegionConfig

    cfg = SampleRegionConfig()
    parts = []
    for scene in cfg.scenes:
        to_utm = Transformer.from_crs(4326, scene.epsg, always_xy=True)
        x, y = to_utm.transform(scene.lon, scene.lat)
        half = cfg.size_px * PIXEL_M / 2
        sq = shapely.segmentize(box(x - half, y - half, x + half, y + half), half / 4)
        to_ll = Transformer.from_crs(scene.epsg, 4326, always_xy=True)
        parts.append(
            shapely.transform(sq, lambda xy, t=to_ll: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
        )
    return shapely.union_all(parts)


def region_from_text(text: str) -> Any:
    """A region given as command-line / YAML text, as a value :func:`region_geometry` accepts.

    ``"lon0,lat0,lon1,lat1"`` is a bbox; a sample region's ``region.json`` becomes the union of its scenes'
    UTM squares (shrunk by half a pixel so each selects only the tiles it covers); anything else (a
    named region, a GeoJSON path) is passed on unchanged.
    """
    parts = text.split(",")
    if len(parts) == 4:
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            pass
        else:
            return BBox.parse(numbers, error=GridError).bounds
    path = Path(text)
    if path.name == "region.json" and path.is_file():
        from pyproj import Transformer

        from embedder.sample import read_region_manifest

        features = []
        for scene in read_region_manifest(path.parent).scenes:
            left, bottom, right, top = scene.bounds_utm
            square = box(left + PIXEL_M / 2, bottom + PIXEL_M / 2, right - PIXEL_M / 2, top - PIXEL_M / 2)
            to_lonlat = Transformer.from_crs(scene.epsg, 4326, always_xy=True).transform
            geometry = mapping(shapely.ops.transform(to_lonlat, square))
            features.append({"type": "Feature", "geometry": geometry, "properties": {}})
        return {"type": "FeatureCollection", "features": features}
    return text


def region_geometry(region: Any) -> BaseGeometry:
    """The region as a shapely geometry in lon/lat; see the module docstring for accepted forms."""
    if isinstance(region, BaseGeometry):
        geom = region
    elif isinstance(region, str) and region in REGIONS:
        named = REGIONS[region]
        geom = _sample_geometry() if named == "sample" else box(*BBox.parse(named, error=GridError).bounds)
    elif isinstance(region, (str, Path)):
        path = Path(region)
        if not path.is_file():
            raise GridError(
                f"region {str(region)!r} is neither a named region ({', '.join(sorted(REGIONS))}) "
                "nor an existing GeoJSON file"
            )
        return region_geometry(json.loads(path.read_text()))
    elif isinstance(region, dict):
        kind = region.get("type")
        if kind == "FeatureCollection":
            geom = shapely.union_all([shape(f["geometry"]) for f in region.get("features", [])])
        elif kind == "Feature":
            geom = shape(region["geometry"])
        elif kind in ("Polygon", "MultiPolygon"):
            geom = shape(region)
        else:
            raise GridError(
                f"GeoJSON type {kind!r} is not supported: give a (Multi)Polygon, Feature or FeatureCollection"
            )
    elif isinstance(region, (tuple, list, BBox)):
        geom = box(*BBox.parse(region, error=GridError).bounds)
    else:
        raise GridError(
            f"region {region!r} is not a bbox, GeoJSON, shapely geometry or a name in {sorted(REGIONS)}"
        )
    if geom.is_empty or geom.area <= 0:
        raise GridError(f"region {mapping(geom) if not geom.is_empty else region!r} is empty (zero area)")
    lon0, lat0, lon1, lat1 = geom.bounds
    if lon0 < -180 or lon1 > 180 or lat0 < -90 or lat1 > 90:
        raise GridError(f"region bounds {geom.bounds} are not lon/lat degrees; give geometries in EPSG:4326")
    if lat0 < _MAX_LAT_S or lat1 > _MAX_LAT_N:
        raise GridError(
            f"region bounds {geom.bounds} leave the UTM range {_MAX_LAT_S}..{_MAX_LAT_N} degrees latitude"
        )
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def zone_parts(geom: BaseGeometry) -> Iterable[tuple[UtmZone, BaseGeometry]]:
    """The part of a lon/lat geometry in each UTM zone and hemisphere it meets, in that zone's metres.

    Parts of zero area are left out; edges are densified (~1 km in lon/lat) before projecting, so the
    projected edges follow the curve.
    """
    from pyproj import Transformer

    lon0, _lat0, lon1, _lat1 = geom.bounds
    z0, z1 = UtmZone.containing(lon0, 0.0).number, UtmZone.containing(lon1, 0.0).number
    for zone in range(z0, z1 + 1):
        for utm, (b, t) in ((UtmZone(zone), (0.0, 90.0)), (UtmZone(zone, south=True), (-90.0, 0.0))):
            part = geom.intersection(box(utm.west_lon, b, utm.west_lon + 6.0, t))
            if part.is_empty or part.area <= 0:
                continue
            to_utm = Transformer.from_crs(4326, utm.epsg, always_xy=True).transform
            dense = shapely.segmentize(part, 0.01)
            yield utm, shapely.transform(dense, lambda xy, f=to_utm: np.column_stack(f(xy[:, 0], xy[:, 1])))


def tiles_for_region(region: Any, *, tile_px: int = DEFAULT_TILE_PX) -> list[Tile]:
    """All tiles whose interior meets the region, sorted; each region point is in exactly one tile.

    Raises :class:`GridError` for an invalid or empty region.
    """
    if tile_px <= 0:
        raise GridError(f"tile_px={tile_px} must be positive")
    geom = region_geometry(region)
    size_m = tile_px * PIXEL_M
    out: list[Tile] = []
    for utm, proj in zone_parts(geom):
        left, bottom, right, top = proj.bounds
        cols = np.arange(max(0, math.floor(left / size_m)), math.ceil(right / size_m))
        rows = np.arange(max(0, math.floor(bottom / size_m)), math.ceil(top / size_m))
        grid_c, grid_r = np.meshgrid(cols, rows, indexing="xy")
        cc, rr = grid_c.ravel(), grid_r.ravel()
        boxes = shapely.box(cc * size_m, rr * size_m, (cc + 1) * size_m, (rr + 1) * size_m)
        shapely.prepare(proj)
        hit = shapely.intersects(proj, boxes)
        idx = np.flatnonzero(hit)
        areas = shapely.area(shapely.intersection(boxes[idx], proj))
        for i in idx[areas > 0]:
            out.append(
                Tile(zone=utm.number, south=utm.south, col=int(cc[i]), row=int(rr[i]), size_px=tile_px)
            )
    if not out:
        raise GridError(f"region {geom.bounds} covers no tile")
    return sorted(out)


def periods(
    start: dt.date | str, end: dt.date | str, *, period_days: int = DEFAULT_PERIOD_DAYS
) -> list[Period]:
    """The store-aligned period blocks that overlap ``[start, end]`` (inclusive), in order."""
    span = DateRange.parse(start, end, error=GridError)
    if span.start < EPOCH:
        raise GridError(f"period start {span.start} is before the store epoch {EPOCH}; start on or after it")
    if period_days <= 0:
        raise GridError(f"period_days={period_days} must be positive")
    k0 = day_index(span.start) // period_days
    k1 = day_index(span.end) // period_days
    return [Period(index=k, period_days=period_days) for k in range(k0, k1 + 1)]


def work_units(
    region: Any,
    start: dt.date | str,
    end: dt.date | str,
    *,
    tile_px: int = DEFAULT_TILE_PX,
    period_days: int = DEFAULT_PERIOD_DAYS,
) -> list[WorkUnit]:
    """All (tile, period) units for a region and date range, sorted by tile then period."""
    ps = periods(start, end, period_days=period_days)
    return [WorkUnit(tile=t, period=p) for t in tiles_for_region(region, tile_px=tile_px) for p in ps]
