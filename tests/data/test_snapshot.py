"""Bulk discovery from a stac-geoparquet snapshot: the same items and cubes as the static catalog."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pystac
import pystac.utils
import pytest
import xarray as xr
from affine import Affine
from odc.geo.geobox import GeoBox

from embedder.cli import main as cli
from embedder.config import SampleRegionConfig
from embedder.data.cubes import load_cube
from embedder.data.snapshot import GeoParquetCatalog, SnapshotError, write_geoparquet_snapshot
from embedder.data.stac import Catalog, LocalCatalog, clear_catalog_cache, open_catalog
from embedder.sample import SampleRegion, write_sample_region
from embedder.sensors import S1, S2


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    tiny = SampleRegionConfig.tiny()
    return write_sample_region(
        tmp_path_factory.mktemp("snap") / "region", cfg=dataclasses.replace(tiny, scenes=tiny.scenes[:1])
    )


@pytest.fixture(scope="module")
def snapshot(region: SampleRegion, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("snapfile") / "items.parquet"
    n = write_geoparquet_snapshot(LocalCatalog(region.catalog_path), path, row_group_rows=7)
    assert n == len(LocalCatalog(region.catalog_path))
    return path


def _searches(region: SampleRegion) -> list[tuple[str, tuple[float, ...], str, str]]:
    lon0, lat0, lon1, lat1 = region.scenes[0].bbox_lonlat
    mid = ((lon0 + lon1) / 2, (lat0 + lat1) / 2)
    corner = (mid[0], mid[1], lon1 + 0.1, lat1 + 0.1)
    return [
        (S2.collection, (lon0, lat0, lon1, lat1), region.start.isoformat(), region.end.isoformat()),
        (S1.collection, (lon0, lat0, lon1, lat1), region.start.isoformat(), region.end.isoformat()),
        (S2.collection, corner, "2022-01-01", "2022-01-31"),
        (S1.collection, corner, "2021-12-20", "2022-01-10"),
        (S2.collection, (lon1 + 1, lat0, lon1 + 2, lat1), region.start.isoformat(), region.end.isoformat()),
    ]


def _times(props: dict[str, Any]) -> dict[str, Any]:
    return {k: pystac.utils.str_to_datetime(v) if k.endswith("datetime") else v for k, v in props.items()}


def _same_items(a: Catalog, b: Catalog, searches: list[tuple[str, tuple[float, ...], str, str]]) -> int:
    total = 0
    for coll, bbox, start, end in searches:
        left = list(a.search(coll, bbox=bbox, start=start, end=end))
        right = list(b.search(coll, bbox=bbox, start=start, end=end))
        assert [it.id for it in left] == [it.id for it in right], (coll, bbox, start, end)
        for x, y in zip(left, right, strict=True):
            assert {k: v.href for k, v in x.assets.items()} == {k: v.href for k, v in y.assets.items()}
            assert x.datetime == y.datetime and x.bbox == y.bbox and x.geometry == y.geometry
            # times are compared as instants: the snapshot writes them in one RFC 3339 form
            assert _times(x.properties) == _times(y.properties)
            assert x.collection_id == y.collection_id
        total += len(left)
    return total


def test_snapshot_gives_the_local_catalog_items(region: SampleRegion, snapshot: Path) -> None:
    cat = open_catalog(snapshot)
    assert isinstance(cat, GeoParquetCatalog) and isinstance(cat, Catalog)
    assert open_catalog(snapshot) is not cat  # local: not cached
    assert cat.modifier is None and cat.metadata["sign"] is False
    searches = _searches(region)
    n = _same_items(LocalCatalog(region.catalog_path), cat, searches)
    assert n > 10
    assert (
        list(cat.search(*searches[-1][:1], bbox=searches[-1][1], start=searches[-1][2], end=searches[-1][3]))
        == []
    )
    # small row groups: the filters are pushed down to their statistics
    assert pq.ParquetFile(snapshot).metadata.num_row_groups > 2


def test_load_cube_through_the_snapshot_gives_the_same_cube(region: SampleRegion, snapshot: Path) -> None:
    scene = region.scenes[0]
    gb = GeoBox((scene.size_px, scene.size_px), Affine(*scene.transform), scene.crs)
    local = load_cube(LocalCatalog(region.catalog_path), gb, region.start, region.end)
    snap = load_cube(open_catalog(str(snapshot)), gb, region.start, region.end)
    xr.testing.assert_identical(local, snap)
    assert local.sizes["time"] > 3


def test_snapshot_of_items_with_filters_and_a_remote_url(region: SampleRegion) -> None:
    items = list(
        LocalCatalog(region.catalog_path).search(
            S2.collection, bbox=(-180, -90, 180, 90), start=region.start, end=region.end
        )
    )
    url = "memory://snapshots/s2-jan.parquet"
    n = write_geoparquet_snapshot(
        items, url, collections=[S2.collection], start="2022-01-01", end="2022-01-31"
    )
    jan = [it.id for it in items if dt.date(2022, 1, 1) <= it.datetime.date() <= dt.date(2022, 1, 31)]
    assert n == len(jan) > 0
    clear_catalog_cache()
    cat = open_catalog(url)
    assert isinstance(cat, GeoParquetCatalog)
    # a remote snapshot is opened (its footer read) once per process; local files afresh
    assert open_catalog(url) is cat and open_catalog(url, cached=False) is not cat
    clear_catalog_cache()
    assert open_catalog(url) is not cat
    clear_catalog_cache()
    got = list(cat.search(S2.collection, bbox=(-180, -90, 180, 90), start=region.start, end=region.end))
    assert [it.id for it in got] == jan
    assert (
        list(cat.search(S1.collection, bbox=(-180, -90, 180, 90), start=region.start, end=region.end)) == []
    )


def test_sign_on_read_is_recorded_and_signing_leaves_local_hrefs(
    region: SampleRegion, tmp_path: Path
) -> None:
    import planetary_computer

    path = tmp_path / "pc.parquet"
    write_geoparquet_snapshot(
        LocalCatalog(region.catalog_path), path, collections=[S1.collection], sign_on_read=True, source="test"
    )
    cat = GeoParquetCatalog(path)
    assert cat.metadata["sign"] is True and cat.metadata["source"] == "test"
    assert cat.modifier is planetary_computer.sign_inplace
    assert GeoParquetCatalog(path, sign=False).modifier is None
    unsigned = open_catalog(path, sign=False)
    assert isinstance(unsigned, GeoParquetCatalog) and unsigned.modifier is None
    # a snapshot of this snapshot is written unsigned and keeps "sign on read"
    assert cli(["stac-snapshot", str(path), str(tmp_path / "copy.parquet")]) == 0
    assert GeoParquetCatalog(tmp_path / "copy.parquet").metadata["sign"] is True
    first = next(cat.search(S1.collection, bbox=(-180, -90, 180, 90), start=region.start, end=region.end))
    assert Path(first.assets["vv"].href).is_file()  # only Azure blob hrefs are signed


def test_snapshot_errors_name_the_path_and_the_fix(region: SampleRegion, tmp_path: Path) -> None:
    local = LocalCatalog(region.catalog_path)
    with pytest.raises(SnapshotError, match=r"'.*items.json' must end in '.parquet'"):
        write_geoparquet_snapshot(local, tmp_path / "items.json")
    with pytest.raises(SnapshotError, match=r"no .* items .* nothing written"):
        write_geoparquet_snapshot(local, tmp_path / "empty.parquet", start="2001-01-01", end="2001-12-31")
    assert not (tmp_path / "empty.parquet").exists()
    with pytest.raises(SnapshotError, match=r"cannot be opened.*embedder stac-snapshot"):
        open_catalog(tmp_path / "missing.parquet")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": np.arange(3)}), other)
    with pytest.raises(SnapshotError, match=r"not a stac-geoparquet snapshot.*\['id', 'collection'"):
        open_catalog(other)
    first = next(local.search(S2.collection, bbox=(-180, -90, 180, 90), start=region.start, end=region.end))
    first.assets["B02"].href += "?st=2024&se=2025&sp=rl&sig=abc"
    with pytest.raises(SnapshotError, match="SAS token"):
        write_geoparquet_snapshot([first], tmp_path / "signed.parquet")


def test_cli_writes_a_snapshot_open_catalog_reads(
    region: SampleRegion, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.parquet"
    argv = [
        "stac-snapshot",
        str(region.catalog_path),
        str(out),
        "--start",
        "2022-01-01",
        "--end",
        "2022-02-28",
    ]
    assert cli(argv) == 0
    assert f"to {out}" in capsys.readouterr().out
    cat = open_catalog(out)
    s2 = list(
        cat.search(S2.collection, bbox=region.scenes[0].bbox_lonlat, start="2021-01-01", end="2022-12-31")
    )
    assert s2 and all(dt.date(2022, 1, 1) <= it.datetime.date() <= dt.date(2022, 2, 28) for it in s2)
    assert cat.metadata["start"].startswith("2022-01-01") and cat.metadata["sign"] is False
    assert cli(["stac-snapshot", str(region.catalog_path), str(tmp_path / "x.txt")]) == 1
    assert "must end in '.parquet'" in capsys.readouterr().err
