"""The local STAC API: search semantics (filters, paging, sorting), conformance, SAS tokens, counts, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pystac
import pystac_client
import pytest
from pystac_client.conformance import ConformanceClasses

from embedder.testing.stac_api import SORT_CONFORMANCE, LocalStacApi, StacApiServerError


def _item(
    item_id: str, when: str, *, collection: str = "sentinel-2-l2a", lon: float = 10.0
) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[lon, 50], [lon + 1, 50], [lon + 1, 51], [lon, 51], [lon, 50]]],
        },
        "bbox": [lon, 50.0, lon + 1, 51.0],
        "properties": {"datetime": when, "platform": "sentinel-2a" if item_id < "m" else "sentinel-2b"},
        "links": [],
        "assets": {},
    }


ITEMS = [
    _item("c", "2021-05-02T10:00:00Z"),
    _item("a", "2021-04-20T10:00:00Z"),
    _item("b", "2021-04-20T10:00:00Z"),
    _item("far", "2021-04-21T10:00:00Z", lon=100.0),
    _item("s1", "2021-04-22T05:00:00Z", collection="sentinel-1-rtc"),
    _item("z", "2021-06-01T10:00:00Z"),
]


def _get(url: str, **params: Any) -> dict[str, Any]:
    full = f"{url}?{urlencode(params)}" if params else url
    with urllib.request.urlopen(full, timeout=10) as resp:
        return json.loads(resp.read())


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _error(call: Any, *args: Any) -> tuple[int, str]:
    """(HTTP status, body) of a request that must fail; the error's response is closed."""
    with pytest.raises(urllib.error.HTTPError) as err:
        call(*args)
    with err.value:
        return err.value.code, err.value.read().decode()


def _ids(page: dict[str, Any]) -> list[str]:
    return [f["id"] for f in page["features"]]


def test_landing_page_advertises_sort_only_when_asked() -> None:
    for sort in (False, True):
        with LocalStacApi(ITEMS, sort=sort) as api:
            landing = _get(api.url)
            assert (SORT_CONFORMANCE in landing["conformsTo"]) is sort
            assert _get(f"{api.url}/conformance")["conformsTo"] == landing["conformsTo"]
            assert {(ln["rel"], ln.get("method")) for ln in landing["links"]} >= {
                ("search", "GET"),
                ("search", "POST"),
            }
            assert api.counts == {"landing": 1, "conformance": 1}
            client = pystac_client.Client.open(api.url)
            assert client.conforms_to(ConformanceClasses.SORT) is sort
            assert client.conforms_to(ConformanceClasses.ITEM_SEARCH)


def test_search_filters_and_pages_get_and_post() -> None:
    with LocalStacApi(ITEMS, sort=True) as api:
        search = f"{api.url}/search"
        # GET: '+' encoded (as pystac-client sends it) or not (it then arrives as a space)
        page = _get(
            search, collections="sentinel-2-l2a", bbox="10,50,11,51", sortby="+properties.datetime,+id"
        )
        assert _ids(page) == ["a", "b", "c", "z"] and page["links"] == []
        raw = _get(f"{search}?collections=sentinel-2-l2a&bbox=10,50,11,51&sortby=+properties.datetime,+id")
        assert _ids(raw) == _ids(page)
        page = _get(search, collections="sentinel-2-l2a", datetime="2021-04-20T10:00:00Z", sortby="-id")
        assert _ids(page) == ["b", "a"]
        page = _get(search, datetime="../2021-04-30T00:00:00Z", sortby="+properties.datetime,-id", limit=2)
        assert _ids(page) == ["b", "a"]
        (nxt,) = [ln for ln in page["links"] if ln["rel"] == "next"]
        page = _get(nxt["href"])  # the next link keeps every parameter, sortby included
        assert _ids(page) == ["far", "s1"] and page["links"] == []
        page = _get(search, datetime="2021-05-01T00:00:00Z/..", sortby="-properties.datetime")
        assert _ids(page) == ["z", "c"]
        # POST: sortby as a list of dicts, paging by the body of the next link
        body = {
            "collections": ["sentinel-2-l2a"],
            "bbox": [10, 50, 11, 51],
            "sortby": [
                {"field": "properties.datetime", "direction": "desc"},
                {"field": "id", "direction": "asc"},
            ],
            "limit": 3,
        }
        page = _post(search, body)
        assert _ids(page) == ["z", "c", "a"] and page["numberMatched"] == 4
        (nxt,) = page["links"]
        assert nxt["method"] == "POST" and nxt["body"]["token"] == 3
        assert _ids(_post(nxt["href"], nxt["body"])) == ["b"]
        # sorting on another property; the limit is capped at max_limit
        page = _post(
            search, {"sortby": [{"field": "properties.platform", "direction": "desc"}], "limit": 10**6}
        )
        assert _ids(page)[:2] == ["s1", "z"] and len(page["features"]) == len(ITEMS)  # stable: given order
        assert api.counts["search"] == len(api.search_requests) == 9


def test_without_sort_hits_keep_the_given_order_and_sortby_is_refused() -> None:
    with LocalStacApi(ITEMS) as api:
        page = _get(f"{api.url}/search", collections="sentinel-2-l2a")
        assert _ids(page) == ["c", "a", "b", "far", "z"]
        code, body = _error(_get, f"{api.url}/search?sortby=%2Bid")
        assert code == 400 and "sort extension" in body


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bbox": "1,2,3"}, "has 3 values"),
        ({"bbox": "a,b,c,d"}, "not four numbers"),
        ({"datetime": "yesterday"}, "'yesterday' is not an RFC 3339 datetime"),
        ({"limit": "0"}, "limit 0 must be >= 1"),
        ({"limit": "ten"}, "is not an integer"),
    ],
)
def test_bad_search_parameters_get_400_naming_them(params: dict[str, str], message: str) -> None:
    with LocalStacApi(ITEMS, sort=True) as api:
        code, body = _error(_get, f"{api.url}/search?{urlencode(params)}")
        assert code == 400 and message in json.loads(body)["description"]
        code, body = _error(_post, f"{api.url}/search", {"sortby": [{"field": "id", "direction": "up"}]})
        assert code == 400 and "'up' is not 'asc' or 'desc'" in body


def test_sas_tokens_other_paths_counts_and_reset() -> None:
    with LocalStacApi(ITEMS) as api:
        token = _get(f"{api.sas_url}/account/container")
        assert token["token"].endswith("sig=fake") and "msft:expiry" in token
        assert _error(_get, f"{api.base}/nowhere")[0] == 404
        assert api.counts == {"sas": 1, "other": 1} and api.total_requests == 2
        assert api.token_requests == ["/sas/account/container"]
        api.reset_counts()
        assert api.total_requests == 0 and api.token_requests == []
    with pytest.raises(StacApiServerError, match="not running"):
        _ = api.url
    assert "not running" in repr(api)


def test_items_from_pystac_and_from_a_static_catalog(tmp_path: Path) -> None:
    items = [pystac.Item.from_dict(d) for d in ITEMS]
    for it in items:
        it.add_asset("B02", pystac.Asset(href=f"./{it.id}_B02.tif"))
    cat = pystac.Catalog(id="t", description="t")
    for it in items:
        cat.add_item(it)
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    with LocalStacApi.from_catalog(tmp_path / "cat", sort=True) as api:
        page = _get(f"{api.url}/search", sortby="+properties.datetime,+id", collections="sentinel-2-l2a")
        assert _ids(page) == ["a", "b", "far", "c", "z"]
        href = page["features"][0]["assets"]["B02"]["href"]
        assert Path(href).is_absolute() and href.endswith("a_B02.tif")
        assert page["features"][0]["links"] == []
    with LocalStacApi([pystac.Item.from_dict(d) for d in ITEMS]) as api:
        assert len(_get(f"{api.url}/search", limit=100)["features"]) == len(ITEMS)


def test_bad_items_and_limits_are_named() -> None:
    with pytest.raises(StacApiServerError, match="not a STAC item dict"):
        LocalStacApi([{"id": "x"}])
    no_time = _item("x", "2021-01-01T00:00:00Z")
    no_time["properties"] = {}
    with pytest.raises(StacApiServerError, match="'x' has neither datetime nor start_datetime"):
        LocalStacApi([no_time])
    with pytest.raises(StacApiServerError, match="max_limit=0"):
        LocalStacApi(ITEMS, max_limit=0)
    start_only = _item("y", "2021-01-01T00:00:00Z")
    start_only["properties"] = {"datetime": None, "start_datetime": "2021-01-01T00:00:00Z"}
    with LocalStacApi([start_only]) as api:
        assert _ids(_get(f"{api.url}/search", datetime="2021-01-01T00:00:00Z/2021-01-02T00:00:00Z")) == ["y"]
