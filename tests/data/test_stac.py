"""The catalog layer: validation, item helpers, local catalog, a local STAC API with paging and signing."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pystac
import pytest

from embedder.data.stac import (
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
    item_epsg,
    item_time,
    load_item_file,
    month_windows,
    open_catalog,
    s2_scale_offset,
)
from embedder.sensors import S1, S2

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
# A tiny local STAC API (/search with `next` paging) + a SAS token stub, served by http.server
# ------------------------------------------------------------------------------------------------


class _Api:
    """State of the fake API: the items it serves and a log of the requests it answered."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.search_requests: list[dict[str, Any]] = []
        self.token_requests: list[str] = []
        self.base = ""


def _handler(api: _Api) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _search(self, params: dict[str, Any], method: str) -> None:
            api.search_requests.append(params)
            colls = params.get("collections") or []
            if isinstance(colls, str):
                colls = colls.split(",")
            bbox = params.get("bbox")
            if isinstance(bbox, str):
                bbox = [float(v) for v in bbox.split(",")]
            a, b = (pystac.utils.str_to_datetime(s) for s in params["datetime"].split("/"))
            limit = int(params.get("limit", 10))
            token = int(params.get("token", 0))
            hits = []
            for d in api.items:
                t = pystac.utils.str_to_datetime(d["properties"]["datetime"])
                ib = d["bbox"]
                if d["collection"] in colls and a <= t <= b:
                    if bbox is None or (
                        ib[0] <= bbox[2] and bbox[0] <= ib[2] and ib[1] <= bbox[3] and bbox[1] <= ib[3]
                    ):
                        hits.append(d)
            page = hits[token : token + limit]
            links: list[dict[str, Any]] = []
            if token + limit < len(hits):
                nxt = {**params, "token": token + limit}
                if method == "POST":
                    links.append({"rel": "next", "href": f"{api.base}/search", "method": "POST", "body": nxt})
                else:
                    query = "&".join(
                        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in nxt.items()
                    )
                    links.append({"rel": "next", "href": f"{api.base}/search?{query}", "method": "GET"})
            self._send({"type": "FeatureCollection", "features": page, "links": links})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path.startswith("/sas/"):
                api.token_requests.append(url.path)
                expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
                self._send({"token": "st=x&se=y&sp=rl&sig=fake", "msft:expiry": expiry})
            elif url.path in ("/api/stac/v1", "/api/stac/v1/"):
                self._send(
                    {
                        "type": "Catalog",
                        "id": "fake-pc",
                        "description": "local STAC API",
                        "stac_version": "1.0.0",
                        "conformsTo": [
                            "https://api.stacspec.org/v1.0.0/core",
                            "https://api.stacspec.org/v1.0.0/item-search",
                        ],
                        "links": [
                            {"rel": "self", "href": api.base},
                            {"rel": "root", "href": api.base},
                            {
                                "rel": "search",
                                "type": "application/geo+json",
                                "href": f"{api.base}/search",
                                "method": "GET",
                            },
                            {
                                "rel": "search",
                                "type": "application/geo+json",
                                "href": f"{api.base}/search",
                                "method": "POST",
                            },
                        ],
                    }
                )
            elif url.path == "/api/stac/v1/search":
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._search(params, "GET")
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            params = json.loads(self.rfile.read(length) or b"{}")
            self._search(params, "POST")

    return Handler


@pytest.fixture
def stac_api() -> Iterator[_Api]:
    items: list[dict[str, Any]] = []
    for name in (
        "pc_sentinel-2-l2a_T35MNM_2020jun-jul_13items.geojson",
        "pc_sentinel-2-l2a_20200606_strip_africa_9items.geojson",
    ):
        items += json.loads((REALDATA / name).read_text())["features"]
    api = _Api(items)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.base = f"http://127.0.0.1:{server.server_address[1]}/api/stac/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@needs_realdata
def test_stac_api_pages_month_by_month(stac_api: _Api) -> None:
    cat = StacApiCatalog(stac_api.base, page_size=4)
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
    assert all(
        it.assets["B04"].href.startswith("https://sentinel2l2a01.blob.core.windows.net/") for it in found
    )
    assert "sig=" not in found[0].assets["B04"].href  # no signing unless asked


@needs_realdata
def test_stac_api_with_planetary_computer_signing(stac_api: _Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import planetary_computer.sas
    import planetary_computer.settings

    sas_url = stac_api.base.replace("/api/stac/v1", "/sas")
    monkeypatch.setenv("PC_SDK_SAS_URL", sas_url)
    planetary_computer.settings.Settings.get.cache_clear()
    planetary_computer.sas.TOKEN_CACHE.clear()
    try:
        cat = open_catalog(stac_api.base, sign=True)
        assert isinstance(cat, StacApiCatalog)
        found = list(
            cat.search("sentinel-2-l2a", bbox=(27.2, -7.8, 27.5, -7.5), start="2020-06-05", end="2020-06-07")
        )
        assert {it.id[:26] for it in found} == {"S2B_MSIL2A_20200606T080609"}
        href = found[0].assets["B04"].href
        assert href.startswith("https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/")
        assert href.endswith("?st=x&se=y&sp=rl&sig=fake")
        assert stac_api.token_requests and stac_api.token_requests[0] == "/sas/sentinel2l2a01/sentinel2-l2"
    finally:
        planetary_computer.settings.Settings.get.cache_clear()
        planetary_computer.sas.TOKEN_CACHE.clear()


def test_open_catalog_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple[str, Any]] = []

    def fake_init(self: StacApiCatalog, url: str, *, modifier: Any = None, **_: Any) -> None:
        opened.append((url, modifier))

    monkeypatch.setattr(StacApiCatalog, "__init__", fake_init)
    import planetary_computer

    open_catalog("planetary-computer")
    open_catalog("https://example.invalid/stac")
    assert opened[0] == (
        "https://planetarycomputer.microsoft.com/api/stac/v1",
        planetary_computer.sign_inplace,
    )
    assert opened[1] == ("https://example.invalid/stac", None)
