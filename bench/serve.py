"""Benchmark of serving a store from object storage: reads and latency per query, map tiles per second.

A one-unit store on the production layout (``StoreConfig()``: 512 px tiles, 64 px x 6-day chunks laid
out spatial-major in 366-day shards, zstd 5; :func:`embedder.testing.embeddings.fake_unit_data`, ~25
dates a year per pixel) is served from fake-gcs-server on 127.0.0.1 through gcsfs. Requests are counted
at the store: every HTTP request gcsfs sends (``GCSFileSystem._request``) counts as one object read.

- ``point_year``: :func:`embedder.serve.api.probe` of one pixel over its whole year (embedding + flags),
  at random pixels, on one reader as a service keeps it: its done-marker (shard index) is cached, so
  a probe is one byte range per array. ``point_year_cold_*``: the same pixel with the marker cache
  cleared (what a random point of a continent costs: marker + two ranges). ``point_year_first_*``: the
  first probe on a fresh reader (also reads the zone's metadata).
- ``tile_date``: one 256 x 256 native window on one date through zarr (what a map tile at native zoom
  needs): the shard index, then ``(256 / 64)**2`` chunks, concurrently.
- ``tiles_per_s``: the ``/tiles/{z}/{x}/{y}.png`` endpoint of a live uvicorn server, distinct tiles
  and dates (the tile cache never hits), one client.
- ``p50_ms_with_damaged_chunk``: the warm ``point_year`` probes again after one inner chunk of the
  unit's embedding shard is damaged (a flipped byte; issue 18): the probes of that block come back
  partial (``points_partial_with_damaged_chunk``), and the latency should stay that of ``point_year``.

Writes flat JSON ``bench/results/serve.json``. Targets: ``point_year_reads`` <= 3 (warm and cold) and
``point_year_p50_ms`` <= 30. The store is written once and kept under ``--cache`` and copied object by
object into the emulator.

    .venv/bin/python bench/serve.py [--points 30] [--tiles 40] [--out bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import StoreConfig
from embedder.grid import Period, Tile, WorkUnit
from embedder.store import create_store, list_done, write_unit
from embedder.testing.embeddings import fake_unit_data


def _unit(tile_px: int) -> WorkUnit:
    """One tile near Lake Como (~9.9 E, 46.2 N), 2021-01-05 .. 2022-01-05."""
    return WorkUnit(
        tile=Tile(zone=32, south=False, col=111 * 512 // tile_px, row=1000 * 512 // tile_px, size_px=tile_px),
        period=Period(index=6),
    )


UNIT = _unit(512)


class RequestCounter:
    """Counts the HTTP requests gcsfs sends (each one an object or byte-range read at the store)."""

    def __init__(self) -> None:
        import gcsfs.core

        self.n = 0
        self._lock = threading.Lock()
        self._cls = gcsfs.core.GCSFileSystem
        self._orig = self._cls._request
        counter = self

        async def counted(fs: Any, *args: Any, **kwargs: Any) -> Any:
            with counter._lock:
                counter.n += 1
            return await counter._orig(fs, *args, **kwargs)

        self._cls._request = counted

    def reset(self) -> None:
        with self._lock:
            self.n = 0


def _build(cache: Path, cfg: StoreConfig) -> Path:
    url = cache / f"serve-bench-{cfg.tile_px}-{cfg.chunk_px}-{cfg.chunk_days}-z{cfg.compression_level}.zarr"
    if url.exists() and list_done(str(url)) == [UNIT.id]:
        return url
    print(f"writing the bench store to {url} (once; a few minutes on 2 cores)", flush=True)
    st = create_store(str(url), units=[UNIT], model_version="bench-serve", cfg=cfg, overwrite=True)
    d = fake_unit_data(UNIT, seed=1)
    write_unit(st, UNIT, d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
    return url


def _upload(local: Path, url: str, fs: Any) -> None:
    root = url.split("://", 1)[1]
    for dirpath, _, files in os.walk(local):
        for name in files:
            full = Path(dirpath) / name
            fs.pipe_file(f"{root}/{full.relative_to(local).as_posix()}", full.read_bytes())


def _lonlat(row: int, col: int) -> tuple[float, float]:
    from pyproj import Transformer

    left, _, _, top = UNIT.tile.bounds
    t = Transformer.from_crs(UNIT.tile.epsg, 4326, always_xy=True)
    lon, lat = t.transform(left + (col + 0.5) * 10, top - (row + 0.5) * 10)
    return float(lon), float(lat)


def _tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    return int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def _damaged_point_year(
    url: str, so: dict[str, Any], local: Path, pts: list[tuple[float, float]], start: str, end: str
) -> tuple[list[float], int]:
    """Warm point-year probe latencies (ms) at ``pts`` after one embedding chunk of the unit is damaged.

    Damages the uploaded copy only (the cached local store stays intact). Returns the latencies and how
    many probes came back partial.
    """
    from embedder.serve.api import StoreReader, probe
    from embedder.serve.query import quiet_partial
    from embedder.store import MISSING_CHUNK, CorruptChunkError, ShardIndex, url_to_fs

    marker = json.loads((local / "_units" / "utm32N" / f"{UNIT.id}.json").read_text())
    idx = ShardIndex.from_json(marker["shard_index"]["embedding"])
    present = np.flatnonzero(idx.offsets[:, 0, 0, 0] != np.uint64(MISSING_CHUNK))
    c = int(present[min(2, present.size - 1)])
    off, nb = int(idx.offsets[c, 0, 0, 0]), int(idx.nbytes[c, 0, 0, 0])
    rel = f"utm32N/embedding/c/{UNIT.period.index}/0/0/0"
    data = bytearray((local / rel).read_bytes())
    data[off + nb // 2] ^= 0x10
    fs, root = url_to_fs(url, so)
    fs.pipe_file(f"{root}/{rel}", bytes(data))
    reader = StoreReader(url, storage_options=so)
    ms: list[float] = []
    n_partial = 0
    with quiet_partial():
        probe(reader, *pts[0], start=start, end=end)  # warm: metadata and markers, as in 1.
        for lon, lat in pts:
            t0 = time.perf_counter()
            try:
                s = probe(reader, lon, lat, start=start, end=end)
                n_partial += s.status == "partial"
            except CorruptChunkError:  # all of this pixel's dates in the damaged chunk
                n_partial += 1
            ms.append((time.perf_counter() - t0) * 1e3)
    return ms, n_partial


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=30, help="random pixels for the point-year series")
    p.add_argument("--tiles", type=int, default=40, help="distinct map tiles for tiles_per_s")
    p.add_argument("--cache", default="/tmp/embedder-bench-serve", help="where the written store is kept")
    p.add_argument("--tile-px", type=int, default=StoreConfig.tile_px, help="store layout: tile side (px)")
    p.add_argument("--chunk-px", type=int, default=StoreConfig.chunk_px, help="store layout: chunk side (px)")
    p.add_argument("--out", default=None, help="default bench/results/serve.json (production layout)")
    a = p.parse_args(argv)
    global UNIT
    UNIT = _unit(a.tile_px)
    cfg = StoreConfig(tile_px=a.tile_px, chunk_px=a.chunk_px)
    production = cfg == StoreConfig()
    default_out = "serve.json" if production else f"serve_tile{a.tile_px}_chunk{a.chunk_px}.json"
    out = Path(a.out or Path(__file__).parent / "results" / default_out)
    tp, win = cfg.tile_px, min(256, cfg.tile_px)

    import httpx
    import uvicorn

    from embedder.serve.api import StoreReader, probe
    from embedder.serve.http import create_app
    from embedder.testing.objstore import fake_gcs

    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    local = _build(cache, cfg)
    rng = np.random.default_rng(0)
    with fake_gcs() as gcs:
        url = f"{gcs.url}/{local.name}"
        _upload(local, url, gcs.filesystem())
        counter = RequestCounter()
        so = gcs.storage_options
        start, end = UNIT.period.start.isoformat(), UNIT.period.end.isoformat()

        # 1. point series over one year at random pixels. A running service keeps one reader (array
        # metadata resolved once); zarr caches no chunk data or shard index, so every probe reads its
        # objects afresh. The first probe on a fresh reader also reads the arrays' metadata.
        first_reader = StoreReader(url, storage_options=so)
        counter.reset()
        t0 = time.perf_counter()
        probe(first_reader, *_lonlat(1, 1), start=start, end=end)
        first_ms, first_reads = (time.perf_counter() - t0) * 1e3, counter.n
        warm_reader = first_reader
        reads, lat_ms, n_dates, cold_reads, cold_ms = [], [], [], [], []
        zarr_reads: list[int] = []
        zarr_ms: list[float] = []
        pts: list[tuple[float, float]] = []
        for _ in range(a.points):
            r_, c_ = (int(v) for v in rng.integers(0, tp, 2))
            lon, lat = _lonlat(r_, c_)
            pts.append((lon, lat))
            counter.reset()
            t0 = time.perf_counter()
            s = probe(warm_reader, lon, lat, start=start, end=end)
            lat_ms.append((time.perf_counter() - t0) * 1e3)
            reads.append(counter.n)
            n_dates.append(len(s.dates))
            # the same pixel on a reader that has not seen its unit yet (a random point of a continent)
            warm_reader.series_reader.clear_cache()
            counter.reset()
            t0 = time.perf_counter()
            s_cold = probe(warm_reader, lon, lat, start=start, end=end)
            cold_ms.append((time.perf_counter() - t0) * 1e3)
            cold_reads.append(counter.n)
            assert s_cold.dates == s.dates and np.array_equal(s_cold.embedding, s.embedding)
            # baseline, same pixel: zarr's coordinate selection (shard index + chunks per array)
            where = warm_reader.locate(lon, lat)
            assert where is not None
            d0, d1 = warm_reader.day_range(start, end)
            counter.reset()
            t0 = time.perf_counter()
            (days_z, codes_z, _), = warm_reader.read_series(
                where[0], np.array([where[1]]), np.array([where[2]]), d0, d1, method="zarr")  # fmt: skip
            zarr_ms.append((time.perf_counter() - t0) * 1e3)
            zarr_reads.append(counter.n)
            assert len(days_z) == len(s.dates) and np.array_equal(
                codes_z * warm_reader.quant_step, s.embedding
            )
        assert min(n_dates) > 0, "a probe found no data: the bench store is not where the points are"

        # 2. one 256 x 256 window (or the whole tile if smaller) on one date
        day = UNIT.period.start_day + int(np.flatnonzero(np.asarray(warm_reader.array("utm32N", "valid_px")[
            UNIT.period.start_day : UNIT.period.start_day + 366, 0, 0]))[5])  # fmt: skip
        tile_reads, tile_ms = [], []
        for k in range(4):
            reader = StoreReader(url, storage_options=so)
            oy, ox = (win * (k // 2)) % tp, (win * (k % 2)) % tp
            ys, xs = slice(oy, oy + win), slice(ox, ox + win)
            counter.reset()
            t0 = time.perf_counter()
            codes = reader.read_codes("utm32N", np.array([day]), ys, xs)  # [1, 7, win, win]
            tile_ms.append((time.perf_counter() - t0) * 1e3)
            tile_reads.append(counter.n)
            assert codes.shape == (1, 7, win, win)

        # 3. tiles per second through the HTTP endpoint
        app = create_app(url, storage_options=so)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        th = threading.Thread(target=srv.run, daemon=True)
        th.start()
        while not srv.started:
            time.sleep(0.05)
        dates = app.state.reader.dates()
        lon_c, lat_c = _lonlat(tp // 2, tp // 2)
        x0, y0 = _tile_xy(lon_c, lat_c, 16)
        reqs = [(16, x0 + dx, y0 + dy, dates[i % len(dates)]) for i, (dx, dy) in
                enumerate((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1))]  # fmt: skip
        reqs = [(z, x, y, dates[(i * 7 + j) % len(dates)]) for j in range(a.tiles // len(reqs) + 1)
                for i, (z, x, y, _) in enumerate(reqs)][: a.tiles]  # fmt: skip
        statuses = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            t0 = time.perf_counter()
            for z, x, y, d in reqs:
                statuses.append(
                    client.get(f"/tiles/{z}/{x}/{y}.png", params={"date": d.isoformat()}).status_code
                )
            tiles_s = time.perf_counter() - t0
        srv.should_exit = True
        th.join(timeout=10)

        # 4. the point-year probes of 1. again with one damaged unit: a flipped byte in one inner chunk of
        # the unit's embedding shard (block (0, 0), third stored time chunk). Probes read around it (the
        # points of that block come back partial), every other read as before: the latency must hold.
        damaged_ms, n_partial = _damaged_point_year(url, so, local, pts, start, end)

    result = {
        "point_year_reads": int(np.median(reads)),
        "point_year_reads_max": int(max(reads)),
        "point_year_p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "point_year_p95_ms": round(float(np.percentile(lat_ms, 95)), 1),
        "point_year_cold_reads": int(np.median(cold_reads)),
        "point_year_cold_p50_ms": round(float(np.percentile(cold_ms, 50)), 1),
        "point_year_zarr_reads": int(np.median(zarr_reads)),
        "point_year_zarr_p50_ms": round(float(np.percentile(zarr_ms, 50)), 1),
        "point_year_speedup_vs_zarr": round(float(np.percentile(zarr_ms, 50) / np.percentile(lat_ms, 50)), 2),
        "point_year_first_reads": first_reads,
        "point_year_first_ms": round(first_ms, 1),
        "point_year_dates": round(float(np.mean(n_dates)), 1),
        "tile_date_reads": int(np.median(tile_reads)),
        "tile_date_p50_ms": round(float(np.percentile(tile_ms, 50)), 1),
        "tiles_per_s": round(len(reqs) / tiles_s, 2),
        "p50_ms_with_damaged_chunk": round(float(np.percentile(damaged_ms, 50)), 1),
        "points_partial_with_damaged_chunk": n_partial,
        "tiles_ok": int(sum(s == 200 for s in statuses)),
        "tiles_requested": len(reqs),
        "points": a.points,
        "tile_date_px": win,
        "tile_px": cfg.tile_px,
        "chunk_px": cfg.chunk_px,
        "chunk_days": cfg.chunk_days,
        "compression_level": cfg.compression_level,
        "backend": "fake-gcs-server via gcsfs on 127.0.0.1",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    ok = (
        result["point_year_reads"] <= 3
        and result["point_year_cold_reads"] <= 3
        and result["point_year_p50_ms"] <= 30
        and result["tiles_ok"] == len(reqs)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
