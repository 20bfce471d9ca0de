"""The catalog layer: validation, item helpers, local catalog, and the STAC API path (sorted or month by month,
paging, signing, the per-process cache) against embedder.testing's local STAC API."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest

from embedder.data.stac import (
    SORT_BY_TIME,
    BBoxError,
    Catalog,
    CatalogError,
    ItemError,
    LocalCatalog,
    MemoryCatalog,
    MissingAssetError,
    NoMapGridError,
    PeriodError,
    StacApiCatalog,
    check_bbox,
    check_item,
    check_period,
    clear_catalog_cache,
    item_epsg,
    item_time,
    load_item_file,
    month_windows,
    open_catalog,
    s2_scale_offset,
)
from embedder.sensors import S1, S2
from embedder.testing.stac_api import LocalStacApi

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "stac"
if not REALDATA.is_dir():  # the tree may be checked out elsewhere
    REALDATA = Path("/work/shared/realdata/stac")
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real STAC items not found at {REALDATA}")

# file -> (collection, n items, expected EPSG codes, expected S2 offset or None)
REAL_FILES: dict[str, tuple[str, int, set[int | None], float | None]] = {
    "pc_sentinel-2-l2a_T35MNM_2020jun-jul_13items.geojson": ("sentinel-2-l2a", 13, {32735}, 0.0),
    "pc_sentinel-2-l2a_20200606_strip_africa_9items.geojson": ("sentinel-2-l2a", 9, {32735}, 0.0),
    "pc_sentinel-2-l2a_S2B_T06VVN_20190629_item.json": ("sentinel-2-l2a", 1, {32606}, 0.0),
    "pc_sentinel-2-l2a_4items_20240419.json": ("sentinel-2-l2a", 4, {32647, 32646}, -0.1),
    "pc_sentinel-2-l2a_S2B_T53NKG_20250312_itemcollection.json": ("sentinel-2-l2a", 1, {32653}, -0.1),
    "pc_sentinel-1-rtc_4items_20240419.json": ("sentinel-1-rtc", 4, {32633}, None),
    "pc_sentinel-1-rtc_S1A_IW_GRDH_20250311_itemcollection.json": ("sentinel-1-rtc", 1, {32634}, None),
    "pc_sentinel-1-grd_S1A_IW_GRDH_20250312_itemcollection.json": ("sentinel-1-grd", 1, {None}, None),
}


# ------------------------------------------------------------------------------------------------
# Real Planetary Computer items
# ------------------------------------------------------------------------------------------------


@needs_realdata
@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_every_real_item_parses_with_right_scale_and_epsg(name: str) -> None:
    collection, n_items, epsgs, offset = REAL_FILES[name]
    items = load_item_file(REALDATA / name)
    assert len(items) == n_items
    for item in items:
        assert item.collection_id == collection
        assert item_time(item).tzinfo is not None
        if collection == "sentinel-1-grd":
            with pytest.raises(NoMapGridError, match=item.id):
                item_epsg(item)
            with pytest.raises(NoMapGridError, match="sentinel-1-rtc"):
                check_item(item, S1)
            continue
        assert item_epsg(item) in epsgs
        sensor = S2 if collection == "sentinel-2-l2a" else S1
        check_item(item, sensor)
        if offset is not None:
            baseline = item.properties["s2:processing_baseline"]
            scale, off = s2_scale_offset(item)
            assert scale == pytest.approx(1e-4)
            assert off == pytest.approx(offset), baseline
            # PC items carry no raster offset of their own: the baseline is the only source.
            assert "offset" not in json.dumps(item.assets["B04"].to_dict())


@needs_realdata
def test_real_baselines_cover_both_sides_of_the_offset() -> None:
    baselines = {
        it.properties["s2:processing_baseline"]
        for name, (coll, *_rest) in REAL_FILES.items()
        if coll == "sentinel-2-l2a"
        for it in load_item_file(REALDATA / name)
    }
    assert {"02.12", "05.10", "05.11"} <= baselines


def _tiny_item(item_id: str, when: str, *, collection: str = "sentinel-2-l2a", **props: Any) -> pystac.Item:
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[[10, 50], [11, 50], [11, 51], [10, 51], [10, 50]]]},
        bbox=[10.0, 50.0, 11.0, 51.0],
        datetime=dt.datetime.fromisoformat(when).replace(tzinfo=dt.UTC),
        properties={"proj:code": "EPSG:32632", "s2:processing_baseline": "04.00", **props},
        collection=collection,
    )
    for key in (*S2.assets, "SCL"):
        item.add_asset(key, pystac.Asset(href=f"https://example.invalid/{item_id}/{key}.tif"))
    return item


def test_item_helpers_errors() -> None:
    item = _tiny_item("x1", "2022-03-01T10:00:00")
    assert item_epsg(item) == 32632
    assert s2_scale_offset(item) == (pytest.approx(1e-4), pytest.approx(-0.1))
    del item.assets["B8A"]
    with pytest.raises(MissingAssetError, match=r"'x1'.*'B8A'"):
        check_item(item, S2)
    bad = _tiny_item("x2", "2022-03-01T10:00:00", **{"s2:processing_baseline": "N/A"})
    with pytest.raises(ItemError, match=r"'x2'.*N/A"):
        s2_scale_offset(bad)
    for raw in ("nan", "inf", float("nan"), "1e3", "", None):  # float() would take the first four
        odd = _tiny_item("x5", "2022-03-01T10:00:00", **{"s2:processing_baseline": raw})
        with pytest.raises(ItemError, match=r"'x5'.*not a baseline like '05.10'"):
            s2_scale_offset(odd)
    assert s2_scale_offset(_tiny_item("x6", "2022-03-01T10:00:00", **{"s2:processing_baseline": 5.1}))[1] < 0
    legacy_props: dict[str, Any] = {"proj:code": None, "proj:epsg": 32633}
    legacy = _tiny_item("x3", "2019-03-01T10:00:00", **legacy_props)
    assert item_epsg(legacy) == 32633
    assert s2_scale_offset(_tiny_item("x4", "2019-01-01T10:00:00", **{"s2:processing_baseline": "03.01"}))[
        1
    ] == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------------
# Argument validation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox",
    [
        (50.0, 10.0, 51.0, 200.0),  # lat/lon swapped with a lon > 90 in the lat slot
        (11.0, 50.0, 10.0, 51.0),  # corners swapped
        (500000.0, 5500000.0, 510000.0, 5510000.0),  # UTM metres
        (10.0, 50.0, 11.0),
        ("a", 1, 2, 3),
    ],
)
def test_bad_bbox_is_named(bbox: Any) -> None:
    with pytest.raises(BBoxError, match="lon_min, lat_min, lon_max, lat_max"):
        check_bbox(bbox)


def test_period_checks_and_month_windows() -> None:
    with pytest.raises(PeriodError, match=r"2021-01-01.*before start 2021-02-01"):
        check_period("2021-02-01", "2021-01-01")
    with pytest.raises(PeriodError, match="notadate"):
        check_period("notadate", "2021-01-01")
    t0, t1 = check_period(dt.date(2020, 11, 15), "2021-02-03")
    windows = list(month_windows(t0, t1))
    assert [(a.month, b.month) for a, b in windows] == [(11, 11), (12, 12), (1, 1), (2, 2)]
    assert windows[0][0] == t0 and windows[-1][1] == t1
    for (_, b), (a2, _) in itertools.pairwise(windows):
        assert a2 - b == dt.timedelta(microseconds=1)


# ------------------------------------------------------------------------------------------------
# Local static catalog and in-memory catalog
# ------------------------------------------------------------------------------------------------


def _write_static_catalog(root: Path, items: list[pystac.Item]) -> Path:
    cat = pystac.Catalog(id="t", description="test")
    by_coll: dict[str, pystac.Collection] = {}
    for it in items:
        coll_id = it.collection_id or ""
        if coll_id not in by_coll:
            by_coll[coll_id] = pystac.Collection(
                id=coll_id,
                description=coll_id,
                extent=pystac.Extent(
                    pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                    pystac.TemporalExtent([[dt.datetime(2015, 1, 1, tzinfo=dt.UTC), None]]),
                ),
            )
            cat.add_child(by_coll[coll_id])
        for key, asset in it.assets.items():
            asset.href = f"./data/{it.id}_{key}.tif"
        by_coll[coll_id].add_item(it)
    cat.normalize_hrefs(str(root))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_local_catalog_filters_streams_and_resolves_hrefs(tmp_path: Path) -> None:
    items = [
        _tiny_item("s2-b", "2021-05-02T10:00:00"),
        _tiny_item("s2-a", "2021-04-20T10:00:00"),
        _tiny_item("s2-late", "2021-09-01T10:00:00"),
        _tiny_item("s1-a", "2021-04-25T05:00:00", collection="sentinel-1-rtc"),
    ]
    far = _tiny_item("s2-far", "2021-04-22T10:00:00")
    far.bbox = [100.0, -10.0, 101.0, -9.0]
    items.append(far)
    path = _write_static_catalog(tmp_path / "cat", items)
    for cat in (open_catalog(path), open_catalog(path.parent), open_catalog(f"file://{path}")):
        assert isinstance(cat, LocalCatalog) and isinstance(cat, Catalog)
        got = cat.search(
            "sentinel-2-l2a", bbox=(10.2, 50.2, 10.4, 50.4), start="2021-04-01", end="2021-06-30"
        )
        assert isinstance(got, Iterator)
        found = list(got)
        assert [it.id for it in found] == ["s2-a", "s2-b"]
        href = found[0].assets["B02"].href
        assert Path(href).is_absolute() and href.endswith("data/s2-a_B02.tif")
    s1 = list(
        open_catalog(path).search(
            "sentinel-1-rtc", bbox=(10, 50, 11, 51), start="2021-01-01", end="2021-12-31"
        )
    )
    assert [it.id for it in s1] == ["s1-a"]
    with pytest.raises(CatalogError, match="nowhere"):
        open_catalog(tmp_path / "nowhere")
    with pytest.raises(CatalogError, match="ftp://x"):
        open_catalog("ftp://x")


def test_memory_catalog_matches_local_semantics() -> None:
    items = [_tiny_item("b", "2021-05-02T10:00:00"), _tiny_item("a", "2021-04-20T10:00:00")]
    cat = MemoryCatalog(items)
    assert [
        i.id
        for i in cat.search("sentinel-2-l2a", bbox=(10, 50, 11, 51), start="2021-04-20", end="2021-05-02")
    ] == [
        "a",
        "b",
    ]
    assert (
        list(cat.search("sentinel-2-l2a", bbox=(10, 50, 11, 51), start="2021-04-21", end="2021-05-01")) == []
    )
    with pytest.raises(BBoxError):
        list(cat.search("sentinel-2-l2a", bbox=(11, 50, 10, 51), start="2021-04-20", end="2021-05-02"))


# ------------------------------------------------------------------------------------------------
# The production STAC API path against a local STAC API (embedder.testing.stac_api)
# ------------------------------------------------------------------------------------------------


def _real_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for name in (
        "pc_sentinel-2-l2a_T35MNM_2020jun-jul_13items.geojson",
        "pc_sentinel-2-l2a_20200606_strip_africa_9items.geojson",
    ):
        items += json.loads((REALDATA / name).read_text())["features"]
    return items


@pytest.fixture
def stac_api() -> Iterator[LocalStacApi]:
    """Real Planetary Computer items (one tile over two months, one strip) behind an API without sorting."""
    with LocalStacApi(_real_items()) as api:
        yield api


@pytest.fixture
def sorted_stac_api() -> Iterator[LocalStacApi]:
    """The same items behind an API that conforms to the sort extension."""
    with LocalStacApi(_real_items(), sort=True) as api:
        yield api


@pytest.fixture(autouse=True)
def _fresh_catalog_cache() -> Iterator[None]:
    clear_catalog_cache()
    yield
    clear_catalog_cache()


@needs_realdata
def test_stac_api_pages_month_by_month(stac_api: LocalStacApi) -> None:
    """An API without the sort extension: one paged search per calendar month, sorted here."""
    cat = StacApiCatalog(stac_api.url, page_size=4)
    assert not cat.sorted_search
    bbox = (27.2, -7.8, 27.5, -7.5)  # inside tile 35MNM only
    found = list(cat.search("sentinel-2-l2a", bbox=bbox, start="2020-06-01", end="2020-07-31"))
    ids = [it.id for it in found]
    expected = sorted(
        {(it["properties"]["datetime"], it["id"]) for it in stac_api.items if "T35MNM" in it["id"]}
    )
    assert ids == [i for _, i in expected]
    assert len(ids) == len(set(ids)) >= 13
    # two month windows of 7 and 6 (+1 strip duplicate) tile items, pages of 4: several pages each.
    months = {r["datetime"][:7] for r in stac_api.search_requests}
    assert months == {"2020-06", "2020-07"}
    assert len(stac_api.search_requests) >= 4
    assert all(int(r.get("limit", 0)) == 4 for r in stac_api.search_requests)
    assert not any("sortby" in r for r in stac_api.search_requests)
    assert stac_api.counts["landing"] == 1 and stac_api.counts["search"] == len(stac_api.search_requests)
    assert all(
        it.assets["B04"].href.startswith("https://sentinel2l2a01.blob.core.windows.net/") for it in found
    )
    assert "sig=" not in found[0].assets["B04"].href  # no signing unless asked


@needs_realdata
@pytest.mark.parametrize("sort", [False, True])
def test_stac_api_with_planetary_computer_signing(monkeypatch: pytest.MonkeyPatch, sort: bool) -> None:
    import planetary_computer.sas
    import planetary_computer.settings

    stac_api = LocalStacApi(_real_items(), sort=sort).start()
    monkeypatch.setenv("PC_SDK_SAS_URL", stac_api.sas_url)
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()
    try:
        cat = open_catalog(stac_api.url, sign=True)
        assert isinstance(cat, StacApiCatalog) and cat.sorted_search == sort
        found = list(
            cat.search("sentinel-2-l2a", bbox=(27.2, -7.8, 27.5, -7.5), start="2020-06-05", end="2020-06-07")
        )
        assert {it.id[:26] for it in found} == {"S2B_MSIL2A_20200606T080609"}
        href = found[0].assets["B04"].href
        assert href.startswith("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/")
        assert href.endswith("?st=x&se=y&sp=rl&sig=fake")
        assert stac_api.token_requests == ["/sas/sentinel2l2a01/sentinel2-l2"]  # one token, then cached
        assert stac_api.counts["sas"] == 1
    finally:
        stac_api.close()
        planetary_computer.settings.Settings.get.cache_clear()
        planetary_computer.sas.TOKEN_CACHE.clear()


def test_open_catalog_dispatch_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, Any]] = []

    def fake_init(self: StacApiCatalog, url: str, *, modifier: Any = None, **_: Any) -> None:
        opened.append((url, modifier))

    monkeypatch.setattr(StacApiCatalog, "__init__", fake_init)
    import planetary_computer

    pc = open_catalog("planetary-computer")
    other = open_catalog("https://example.invalid/stac")
    assert opened[0] == (
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        planetary_computer.sign_inplace,
    )
    assert opened[1] == ("https://example.invalid/stac", None)
    # one catalog per (url, sign) per process: no second open for the same API, whatever its spelling
    assert open_catalog("planetary-computer") is pc
    assert open_catalog("https://planetarycomputer.microsoft.com/api/stac/v1") is pc
    assert open_catalog("https://example.invalid/stac") is other
    assert len(opened) == 2
    signed = open_catalog("https://example.invalid/stac", sign=True)
    assert signed is not other and opened[2] == (
        "https://example.invalid/stac",
        planetary_computer.sign_inplace,
    )
    assert open_catalog("https://example.invalid/stac", cached=False) is not other
    assert len(opened) == 4
    clear_catalog_cache()
    assert open_catalog("https://example.invalid/stac") is not other
    assert len(opened) == 5


@needs_realdata
def test_stac_api_sorted_search_is_one_paged_search(sorted_stac_api: LocalStacApi) -> None:
    """An API with the sort extension: one search over the whole period, pages in time order."""
    api = sorted_stac_api
    cat = open_catalog(api.url)
    assert isinstance(cat, StacApiCatalog) and cat.sorted_search and cat.page_size == 1000
    cat.page_size = 4
    bbox = (27.2, -7.8, 27.5, -7.5)
    found = list(cat.search("sentinel-2-l2a", bbox=bbox, start="2020-06-01", end="2020-07-31"))
    expected = sorted({(it["properties"]["datetime"], it["id"]) for it in api.items if "T35MNM" in it["id"]})
    assert [it.id for it in found] == [i for _, i in expected]  # the duplicate strip item once
    served = sum("T35MNM" in it["id"] for it in api.items)  # 14: the strip repeats one tile item
    assert len(api.search_requests) == math.ceil(served / 4)  # one search, its pages, not one per month
    first = api.search_requests[0]
    a, b = first["datetime"].split("/")
    assert a.startswith("2020-06-01T00:00:00") and b.startswith("2020-07-31T23:59:59")  # the whole period
    assert all(r["sortby"] == SORT_BY_TIME for r in api.search_requests)
    assert api.counts == {"landing": 1, "search": len(api.search_requests)}
    # a second unit read through open_catalog: no new landing page request
    api.reset_counts()
    assert open_catalog(api.url) is cat
    list(cat.search("sentinel-2-l2a", bbox=bbox, start="2020-06-01", end="2020-06-30"))
    assert api.counts["landing"] == 0 and api.counts["search"] >= 1


def _tied_items() -> list[pystac.Item]:
    """Items of three datatakes (several tiles share one timestamp), given out of order."""
    items = []
    for t, n in (("2021-04-20T10:00:00", 3), ("2021-04-25T10:00:00", 4), ("2021-05-02T10:00:00", 2)):
        for k in range(n):
            items.append(_tiny_item(f"S2_{t[:10]}_T{n - k:02d}", t))
    items.append(_tiny_item("s1-x", "2021-04-22T05:00:00", collection="sentinel-1-rtc"))
    return items[::-1]


@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 1000])
def test_sorted_search_orders_ties_across_pages_like_memory_catalog(page_size: int) -> None:
    items = _tied_items()
    with LocalStacApi(items, sort=True) as api:
        cat = StacApiCatalog(api.url, page_size=page_size)
        pages = 0
        for coll, start, end in (
            ("sentinel-2-l2a", "2021-04-01", "2021-05-31"),
            ("sentinel-2-l2a", "2021-04-21", "2021-04-30"),
            ("sentinel-1-rtc", "2021-04-01", "2021-05-31"),
        ):
            got = [it.id for it in cat.search(coll, bbox=(10, 50, 11, 51), start=start, end=end)]
            want = [
                it.id for it in MemoryCatalog(items).search(coll, bbox=(10, 50, 11, 51), start=start, end=end)
            ]
            assert got == want and got
            pages += math.ceil(len(want) / page_size)
        assert len(api.search_requests) == pages  # one search per call, one request per page


def test_sorted_search_refuses_an_api_that_does_not_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    import embedder.testing.stac_api as stac_api_module

    # the server advertises the sort extension but ignores sortby (hits in the order given: newest first)
    monkeypatch.setattr(stac_api_module, "_parse_sortby", lambda value: [])
    with LocalStacApi(sorted(_tied_items(), key=lambda it: it.datetime, reverse=True), sort=True) as api:
        cat = StacApiCatalog(api.url, page_size=2)
        with pytest.raises(
            CatalogError, match=r"asked to sort by time; open it with StacApiCatalog\(url, sort=False\)"
        ):
            list(cat.search("sentinel-2-l2a", bbox=(10, 50, 11, 51), start="2021-04-01", end="2021-05-31"))
        # month by month, the same API gives the right order
        cat = StacApiCatalog(api.url, page_size=2, sort=False)
        got = [
            it.id
            for it in cat.search(
                "sentinel-2-l2a", bbox=(10, 50, 11, 51), start="2021-04-01", end="2021-05-31"
            )
        ]
        want = [
            it.id
            for it in MemoryCatalog(_tied_items()).search(
                "sentinel-2-l2a", bbox=(10, 50, 11, 51), start="2021-04-01", end="2021-05-31"
            )
        ]
        assert got == want


@pytest.mark.parametrize("sort", [True, False])
def test_stac_api_over_a_static_catalog_gives_the_local_catalog_items(tmp_path: Path, sort: bool) -> None:
    items = [*_tied_items(), _tiny_item("s2-late", "2021-09-01T10:00:00")]
    far = _tiny_item("s2-far", "2021-04-22T10:00:00")
    far.bbox = [100.0, -10.0, 101.0, -9.0]
    path = _write_static_catalog(tmp_path / "cat", [*items, far])
    local = LocalCatalog(path)
    with LocalStacApi.from_catalog(path, sort=sort) as api:
        remote = open_catalog(api.url)
        assert isinstance(remote, StacApiCatalog) and remote.sorted_search == sort
        for coll, bbox, start, end in (
            ("sentinel-2-l2a", (10.2, 50.2, 10.4, 50.4), "2021-04-01", "2021-06-30"),
            ("sentinel-2-l2a", (-180, -90, 180, 90), "2021-01-01", "2021-12-31"),
            ("sentinel-1-rtc", (10, 50, 11, 51), "2021-04-22", "2021-04-22"),
        ):
            a = list(local.search(coll, bbox=bbox, start=start, end=end))
            b = list(remote.search(coll, bbox=bbox, start=start, end=end))
            assert [it.id for it in a] == [it.id for it in b] and a
            assert [it.assets["B02"].href for it in a if "B02" in it.assets] == [
                it.assets["B02"].href for it in b if "B02" in it.assets
            ]
        # sorted: one request per search; month by month: 3 + 12 + 1 windows
        assert api.counts["search"] == (3 if sort else 16)
