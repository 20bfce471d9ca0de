"""The tiling grid: fixed per-zone tiles, store-aligned periods, stable unit ids, bad input."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import Point, box

from embedder.grid import (
    EPOCH,
    GridError,
    Period,
    Tile,
    WorkUnit,
    periods,
    region_geometry,
    tiles_for_region,
    utm_epsg,
    work_units,
)


def _owner(tiles, lon, lat):
    """Tiles of the point's own zone that contain it (in that zone's projected metres)."""
    epsg = utm_epsg(lon, lat)
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return [
        t
        for t in tiles
        if t.epsg == epsg and t.bounds[0] <= x < t.bounds[2] and t.bounds[1] <= y < t.bounds[3]
    ]


@pytest.mark.parametrize(
    "region",
    [
        (5.7, 46.9, 6.4, 47.3),  # across the zone 31/32 border
        {
            "type": "Polygon",
            "coordinates": [[[12.9, -0.2], [13.3, -0.2], [13.1, 0.25], [12.9, -0.2]]],
        },  # equator
    ],
)
def test_tiles_cover_region_exactly_once(region):
    tiles = tiles_for_region(region, tile_px=256)
    geom = region_geometry(region)
    rng = np.random.default_rng(1)
    lon0, lat0, lon1, lat1 = geom.bounds
    pts = [(lon, lat) for lon, lat in zip(rng.uniform(lon0, lon1, 400), rng.uniform(lat0, lat1, 400), strict=True)
           if geom.contains(Point(lon, lat))]  # fmt: skip
    assert len(pts) > 100
    for lon, lat in pts:
        assert len(_owner(tiles, lon, lat)) == 1, (lon, lat)
    # no superfluous tile: each one meets the region, and tiles are unique
    assert len(set(tiles)) == len(tiles)
    for t in tiles:
        assert t.footprint().intersects(geom)
    assert {t.zone for t in tiles} == ({31, 32} if isinstance(region, tuple) else {33})
    if not isinstance(region, tuple):
        assert {t.south for t in tiles} == {True, False}


def test_tiles_snap_to_fixed_grid_across_runs():
    a = set(tiles_for_region((8.0, 47.0, 8.2, 47.1)))
    b = set(tiles_for_region((8.1, 47.05, 8.3, 47.2)))
    shared = a & b
    assert shared  # overlapping regions give identical tiles where they overlap
    for t in a | b:
        left, bottom, right, _top = t.bounds
        assert left % 5120 == 0 and bottom % 5120 == 0 and right - left == 5120


def test_geobox_has_halo_and_tile_grid():
    t = Tile(zone=32, south=False, col=90, row=1018)
    gb = t.geobox(halo_px=7)
    assert gb.shape == (526, 526)
    assert gb.crs.epsg == 32632
    assert gb.transform.a == 10 and gb.transform.e == -10
    assert gb.transform.c == 90 * 5120 - 70 and gb.transform.f == 1019 * 5120 + 70
    assert t.geobox(halo_px=0).shape == (512, 512)


def test_ids_are_stable_and_parse_back():
    u = work_units((8.0, 47.0, 8.01, 47.01), "2021-03-01", "2021-03-02")[0]
    assert u.id == "32N_512px_x0082_y1016__2021-01-05_366d"
    assert WorkUnit.from_id(u.id) == u
    assert Tile.from_id(u.tile.id) == u.tile
    with pytest.raises(GridError, match="not of the form"):
        WorkUnit.from_id("nonsense")
    with pytest.raises(GridError, match="not the start"):
        WorkUnit.from_id("32N_512px_x0082_y1016__2021-01-06_366d")


def test_units_travel_as_typed_rows():
    import numpy as np

    u = WorkUnit(
        tile=Tile(zone=33, south=True, col=7, row=1200, size_px=32),
        period=periods("2022-01-10", "2022-01-10")[0],
    )
    row = u.to_row()
    assert WorkUnit.from_row(row) == u
    assert WorkUnit.from_row({**row, "status": "ok"}) == u  # other keys of a pipeline row are ignored
    assert WorkUnit.from_row({k: np.int64(v) for k, v in row.items()}) == u  # as Ray Data hands them back
    assert all(isinstance(v, (int, bool)) for v in row.values())


def test_periods_align_to_epoch_blocks():
    ps = periods("2020-06-01", "2022-02-01")
    assert [p.index for p in ps] == [5, 6, 7]
    for p in ps:
        assert (p.start - EPOCH).days % 366 == 0 and (p.end - p.start).days == 365
    assert ps[0].contains(dt.date(2020, 6, 1)) and ps[-1].contains(dt.date(2022, 2, 1))
    assert Period(index=0).start == EPOCH


def test_sample_and_named_regions(tmp_path):
    tiles = tiles_for_region("sample")
    assert {t.zone for t in tiles} == {32, 33}
    p = tmp_path / "r.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(box(8.0, 47.0, 8.05, 47.02))}]}))  # fmt: skip
    assert tiles_for_region(str(p)) == tiles_for_region((8.0, 47.0, 8.05, 47.02))
    eu = region_geometry("europe")
    assert eu.bounds == (-25.0, 34.0, 45.0, 72.0)


@pytest.mark.parametrize(
    ("region", "match"),
    [
        ((8.2, 47.0, 8.0, 47.2), "order"),
        ((47.0, 181.0, 47.5, 182.0), "out of range"),
        ((8.0, 95.0, 9.0, 96.0), "lat, lon"),
        ((8.0, 47.0, 8.0, 47.2), "empty"),
        ("atlantis", "neither a named region"),
        ({"type": "Point", "coordinates": [8, 47]}, "not supported"),
        ((8.0, 84.5, 9.0, 85.0), "UTM range"),
    ],
)
def test_bad_regions(region, match):
    with pytest.raises(GridError, match=match):
        tiles_for_region(region)


def test_bad_periods():
    with pytest.raises(GridError, match="before its start"):
        periods("2021-05-01", "2021-04-30")
    with pytest.raises(GridError, match="epoch"):
        periods("2014-05-01", "2015-04-30")
    with pytest.raises(GridError, match="YYYY-MM-DD"):
        periods("May 2021", "2021-06-01")


def test_region_from_text_bbox_manifest_and_passthrough(tmp_path) -> None:
    import dataclasses

    from embedder.config import SampleRegionConfig
    from embedder.grid import region_from_text, tiles_for_region
    from embedder.sample import write_sample_region

    assert region_from_text("8.4,47.0,8.6,47.2") == (8.4, 47.0, 8.6, 47.2)
    assert region_from_text("europe") == "europe"
    tiny = SampleRegionConfig.tiny()
    region = write_sample_region(tmp_path / "r", cfg=dataclasses.replace(tiny, end=tiny.start))
    tiles = tiles_for_region(region_from_text(str(region.manifest_path)), tile_px=tiny.size_px)
    # the scenes are snapped to the grid of their own size: exactly one tile each, at the scene
    assert len(tiles) == len(region.scenes)
    assert sorted(t.bounds for t in tiles) == sorted(
        tuple(float(v) for v in s.bounds_utm) for s in region.scenes
    )
