"""The web map in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

The map must render embedding tiles, and a click on a covered pixel must draw its time-series plot.
A screenshot is saved to tests/artifacts/serve_web_map.png for a look by eye.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from embedder.serve.http import create_app

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
OPAQUE_PIXELS = """() => {
  let n = 0;
  for (const img of document.querySelectorAll('#tiles img.loaded')) {
    const c = document.createElement('canvas'); c.width = 256; c.height = 256;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, 256, 256).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] === 255) n++;
  }
  return n;
}"""
"""JS: opaque pixels over all loaded tiles (embedding drawn; no-data pixels are transparent)."""
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def live_url(local_store):
    import uvicorn

    url, _ = local_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not th.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(timeout=10)


def test_map_renders_tiles_and_click_plots_series(live_url, tmp_path):
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed (run `make browser` or apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1100, "height": 640},
        )  # fmt: skip
        try:
            page = ctx.new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live_url + "/", wait_until="networkidle")
            page.wait_for_selector("body[data-ready='1']", timeout=15_000)
            # tiles: at least one loaded with non-transparent embedding pixels
            page.wait_for_function(
                "document.querySelectorAll('#tiles img.loaded').length > 0", timeout=15_000
            )
            opaque = page.evaluate(OPAQUE_PIXELS)
            assert opaque > 2000, f"only {opaque} opaque tile pixels: the map shows no embedding"
            # click the middle of the map (the store's centre after fit-to-bounds)
            box = page.locator("#map").bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector("#series-plot polyline.series", timeout=15_000)
            assert page.locator("#series-plot polyline.series").count() == 7
            n_points = page.evaluate(
                "document.querySelector('#series-plot polyline').getAttribute('points').split(' ').length"
            )
            assert n_points > 10
            assert "dates" in page.locator("#status").inner_text()
            # switch to a month window: tiles are re-requested with start/end
            page.select_option("#mode", "month")
            page.wait_for_function(
                """() => { const imgs = Array.from(document.querySelectorAll('#tiles img'));
                           return imgs.length > 0 && imgs.every(i => i.src.includes('start=') && i.complete); }""",
                timeout=15_000,
            )
            assert page.evaluate(OPAQUE_PIXELS) > 2000, "the month-mean tiles show no embedding"
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "serve_web_map.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            assert not errors, errors
        finally:
            ctx.close()
    assert requests and all(u.startswith(live_url) for u in requests), "the page fetched something off-site"
