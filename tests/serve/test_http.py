"""The HTTP service on a live uvicorn server: every endpoint, bad input (never a 5xx), an OpenAPI fuzz run."""

from __future__ import annotations

import io
import math
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import rasterio
import xarray as xr
from PIL import Image
from serve_stores import UNITS, expected_series, pixel_lonlat

from embedder.config import ServeConfig
from embedder.serve.http import create_app

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(local_store):
    """``embedder serve`` of the test store on 127.0.0.1: (base URL, written data)."""
    import uvicorn

    url, written = local_store
    app = create_app(url, cfg=ServeConfig(max_region_px=40 * 40, max_tile_dates=20, max_tile_native_px=100))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", written
    srv.should_exit = True
    th.join(timeout=10)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _bbox(unit, r0, r1, c0, c1) -> str:
    lon_a, lat_a = pixel_lonlat(unit, r1 - 1, c0)
    lon_b, lat_b = pixel_lonlat(unit, r0, c1 - 1)
    return f"{lon_a},{lat_a},{lon_b},{lat_b}"


def test_info_dates_and_page(client):
    info = client.get("/api/info").json()
    assert list(info["zones"]) == ["utm32N"] and info["zones"]["utm32N"]["epsg"] == 32632
    assert len(info["dates"]) > 20 and info["dates"] == sorted(info["dates"])
    sub = client.get("/api/dates", params={"start": "2021-03-01", "end": "2021-03-31"}).json()["dates"]
    assert sub == [d for d in info["dates"] if "2021-03-01" <= d <= "2021-03-31"]
    page = client.get("/")
    assert (
        page.status_code == 200
        and "/static/app.js" in page.text
        and "http" not in page.text.split("<body>")[1]
    )
    for f in ("app.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "embedder store service"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # offline: every asset comes from this server
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert client.get(f"/docs-assets/{asset}").status_code == 200


def test_read_only_and_short_validation_errors(server, client):
    info = client.get("/api/info").json()
    store = Path(info["url"].removeprefix("file://"))
    files = sorted(p for p in store.rglob("*") if p.is_file())
    assert files
    lon, lat = pixel_lonlat(UNITS[0], 10, 10)
    x, y = _tile_of(lon, lat, 15)
    assert client.get(f"/tiles/15/{x}/{y}.png", params={"date": info["dates"][10]}).status_code == 200
    assert sorted(p for p in store.rglob("*") if p.is_file()) == files and not (store / "_serve").exists()
    body = {"points": [[0.0, 0.0]] * 200_000, "note": "x" * 1_000_000}  # several MB
    r = client.post("/api/points", json=body)
    assert r.status_code == 422 and len(r.content) < 4000 and "10000" in r.text, len(r.content)


def test_probe_json_and_csv_equal_stored(server, client):
    _, written = server
    unit = UNITS[1]
    lon, lat = pixel_lonlat(unit, 12, 7)
    dates, emb, flags = expected_series(written[unit.id], 12, 7)
    js = client.get("/api/probe", params={"lon": lon, "lat": lat}).json()
    assert js["status"] == "ok" and js["dates"] == [str(d) for d in dates] and js["flags"] == flags.tolist()
    np.testing.assert_allclose(np.array(js["embedding"]), emb, atol=1 / 512 + 1e-6)
    csv = client.get("/api/probe", params={"lon": lon, "lat": lat, "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0] == "lon,lat,date,f0,f1,f2,f3,f4,f5,f6,flags" and len(lines) == len(dates) + 1
    far = client.get("/api/probe", params={"lon": 20.0, "lat": -30.0}).json()
    assert far["status"] == "no_data" and "coverage" in far["reason"] and far["embedding"] == []


def test_points_json_and_csv(client):
    pts = [list(pixel_lonlat(UNITS[0], 1, 1)), [0.0, 0.0], list(pixel_lonlat(UNITS[1], 60, 60))]
    js = client.post("/api/points", json={"points": pts, "start": "2021-02-01", "end": "2021-05-01"}).json()
    assert [s["status"] for s in js["series"]] == ["ok", "no_data", "ok"]
    assert all("2021-02-01" <= d <= "2021-05-01" for s in js["series"] for d in s["dates"])
    csv = client.post("/api/points", params={"format": "csv"}, json={"points": pts}).text.strip().splitlines()
    assert len(csv) == 1 + sum(
        len(s["dates"]) for s in client.post("/api/points", json={"points": pts}).json()["series"]
    )


def test_region_formats(client):
    bbox = _bbox(UNITS[0], 4, 24, 4, 34)
    q = {"bbox": bbox, "start": "2021-04-01", "end": "2021-06-30", "window": "MS"}
    nc = client.get("/api/region", params=q)
    assert nc.status_code == 200 and nc.headers["content-type"] == "application/x-netcdf"
    ds = xr.open_dataset(io.BytesIO(nc.content), engine="scipy")
    assert ds["embedding"].shape == (3, 7, 20, 30)
    tif = client.get("/api/region", params={**q, "format": "geotiff"})
    with rasterio.MemoryFile(tif.content) as mf, mf.open() as f:
        assert f.count == 21 and f.crs.to_epsg() == 32632
        np.testing.assert_array_equal(f.read().reshape(3, 7, 20, 30), ds["embedding"].values)
    js = client.get("/api/region", params={**q, "format": "json", "reduce": "max"}).json()
    assert js["shape"] == [3, 7, 20, 30] and js["time"] == ["2021-04-01", "2021-05-01", "2021-06-01"]


def test_tiles_render_rgb_with_transparency(client):
    info = client.get("/api/info").json()
    lon, lat = pixel_lonlat(UNITS[0], 32, 60)
    x, y = _tile_of(lon, lat, 15)
    r = client.get(f"/tiles/15/{x}/{y}.png", params={"date": info["dates"][10]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (256, 256, 4)
    assert (img[..., 3] == 255).sum() > 1000 and (img[..., 3] == 0).sum() > 1000  # data and transparent edge
    assert len(np.unique(img[img[..., 3] == 255][:, :3], axis=0)) > 20  # colours vary with the embedding
    win = client.get(f"/tiles/15/{x}/{y}.png", params={"start": "2021-04-01", "end": "2021-04-30"})
    assert win.status_code == 200 and win.content != r.content
    empty = client.get("/tiles/15/0/0.png", params={"date": info["dates"][10]})
    assert np.asarray(Image.open(io.BytesIO(empty.content)))[..., 3].max() == 0
    zx, zy = _tile_of(lon, lat, 12)  # the whole store (128 px wide) is under one tile: over the 100 px limit
    zoomed_out = np.asarray(
        Image.open(
            io.BytesIO(client.get(f"/tiles/12/{zx}/{zy}.png", params={"date": info["dates"][10]}).content)
        )
    )
    assert zoomed_out[..., 3].max() == 96  # coverage shown, data not read at this zoom


def test_stac(client):
    coll = client.get("/stac/collection.json").json()
    assert coll["type"] == "Collection" and coll["emb:dimensions"] == 7
    items = client.get("/stac/items").json()["features"]
    assert [i["properties"]["proj:code"] for i in items] == ["EPSG:32632"]
    assert client.get(f"/stac/items/{items[0]['id']}").json()["id"] == items[0]["id"]
    assert client.get("/stac/items/nope").status_code == 404


BAD = [
    ("/api/probe", {"lon": 200, "lat": 46}, 422, "less than or equal to 180"),
    ("/api/probe", {"lon": 9.9, "lat": -91}, 422, "greater than or equal to -90"),
    ("/api/probe", {"lon": "nan", "lat": 46}, 422, ""),
    ("/api/probe", {"lon": 9.9, "lat": 46.2, "start": "05/01/2021"}, 422, "pattern"),
    ("/api/probe", {"lon": 9.9, "lat": 46.2, "start": "2021-13-45"}, 422, "not a valid calendar date"),
    (
        "/api/probe",
        {"lon": 9.9, "lat": 46.2, "start": "2021-05-01", "end": "2021-01-01"},
        422,
        "before start",
    ),
    ("/api/probe", {"lon": 9.9, "lat": 46.2, "format": "xml"}, 422, ""),
    (
        "/api/region",
        {"bbox": "9.91,46.2,9.90,46.21", "start": "2021-01-01", "end": "2021-02-01"},
        422,
        "inverted",
    ),
    ("/api/region", {"bbox": "9.9,46.2,9.91", "start": "2021-01-01", "end": "2021-02-01"}, 422, "4 numbers"),
    ("/api/region", {"bbox": "a,b,c,d", "start": "2021-01-01", "end": "2021-02-01"}, 422, "4 numbers"),
    ("/api/region", {"bbox": "20,10,20.1,10.1", "start": "2021-01-01", "end": "2021-02-01"}, 404, "coverage"),
    ("/api/region", {"bbox": "9.9,46.2,9.91,46.21", "start": "2021-01-01"}, 422, "Field required"),
    (
        "/api/region",
        {"bbox": "9.9,46.2,9.91,46.21", "start": "2021-01-01", "end": "2021-02-01", "window": "fortnight"},
        422,
        "not understood",
    ),
    (
        "/api/region",
        {"bbox": "9.9,46.2,9.91,46.21", "start": "0001-01-01", "end": "9999-12-31", "window": "1D"},
        422,
        "windows",
    ),
    ("/tiles/3/100/1.png", {"date": "2021-01-01"}, 422, "outside zoom 3"),
    ("/tiles/40/0/0.png", {"date": "2021-01-01"}, 422, "0..24"),
    ("/tiles/3/1/1.png", {}, 422, "needs date"),
    ("/tiles/3/1/1.png", {"date": "yesterday"}, 422, "pattern"),
    ("/tiles/3/1/1.png", {"date": "2021-01-01", "start": "2021-01-01", "end": "2021-02-01"}, 422, "not both"),
    ("/tiles/3/1/-1.png", {"date": "2021-01-01"}, 422, "outside zoom"),
    ("/static/../embedder/serve/api.py", {}, 404, ""),
    ("/static/%2e%2e/api.py", {}, 404, ""),
    ("/static/..%2fapi.py", {}, 404, ""),
    ("/static/%2e%2e%2f%2e%2e%2fpyproject.toml", {}, 404, ""),
    ("/stac/items/..%2f..%2fzarr.json", {}, 404, ""),
]


@pytest.mark.parametrize(("path", "params", "status", "needle"), BAD)
def test_bad_input_is_4xx_with_message(client, path, params, status, needle):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_region_over_size_limit_is_413(client):
    bbox = _bbox(UNITS[0], 0, 60, 0, 60)  # 60 x 60 > the 40 x 40 limit of this server
    r = client.get("/api/region", params={"bbox": bbox, "start": "2021-01-01", "end": "2021-02-01"})
    assert r.status_code == 413 and "over the limit of 1600" in r.json()["detail"]
    tif = client.get(
        "/api/region", params={"bbox": bbox, "start": "2021-01-01", "end": "2021-02-01", "format": "geotiff"}
    )
    assert tif.status_code == 413  # streamed formats obey the same limit over HTTP
    lon, lat = pixel_lonlat(UNITS[0], 32, 32)
    x, y = _tile_of(lon, lat, 15)
    year = client.get(f"/tiles/15/{x}/{y}.png", params={"start": "2021-01-01", "end": "2021-12-31"})
    assert year.status_code == 422 and "over the tile limit of 20" in year.json()["detail"]
    bad_points = client.post("/api/points", json={"points": [[0, 0, 1]]})
    assert bad_points.status_code == 422
    too_many = client.post("/api/points", json={"points": [[0.0, 0.0]] * 10_001})
    assert too_many.status_code == 422 and "10000" in too_many.text


def test_openapi_fuzz_finds_no_server_error(server):
    """A bounded schemathesis run over every operation: no 5xx, ever."""
    import hypothesis
    import schemathesis

    base, _ = server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    failures = []
    n_calls = 0
    t0 = time.monotonic()

    def fuzz(op):
        @hypothesis.settings(max_examples=35, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])  # fmt: skip
        @hypothesis.given(case=op.as_strategy())
        def run(case):
            nonlocal n_calls
            n_calls += 1
            resp = case.call(base_url=base, timeout=30)
            if resp.status_code >= 500:
                failures.append(
                    f"{op.method.upper()} {op.path}: {resp.status_code} for {case.path_parameters} {case.query} {case.body!r:.200}"
                )

        run()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert not failures, "\n".join(failures[:10])
    assert n_calls >= 200, n_calls
    assert time.monotonic() - t0 < 120
