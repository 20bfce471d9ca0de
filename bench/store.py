"""Benchmark of the embedding store: bytes per pixel-year, quantisation error, reads per query.

Writes ``bench/results/store.json`` (flat JSON). Targets: ``bytes_per_pixel_year`` <= 150,
``quant_err_rel_std`` <= 0.01 (worst feature's RMS quantisation error over its std),
``checked_read_overhead`` <= 0.05 (time of the series reader with every chunk's crc32c checked, over the
same reads unchecked, minus one).

Data: :func:`embedder.testing.embeddings.fake_unit_data` -- embedding-like fields that follow
parcels, vary with the season, carry pixel noise of 0.01 and have partial cloud holes; one S2 date
every 5 days, 45 % of them cloud-free (about 33 dates a year, typical of central Europe).

    .venv/bin/python bench/store.py [--units 2] [--out bench/results/store.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from embedder.config import StoreConfig
from embedder.grid import Period, Tile, WorkUnit
from embedder.store import FILL_CODE, create_store, open_store, verify, write_unit
from embedder.testing.embeddings import fake_unit_data
from embedder.testing.objstore import CountingFS


def _count_gets(counter: dict[str, int]) -> int:
    return sum(v for k, v in counter.items() if k.startswith("get"))


def _checked_read_times(st: Any, t_start: int, repeats: int = 7) -> tuple[float, float]:
    """Seconds to read a 64 x 64 px block's year of series with chunk checksums checked, and without.

    The same reader code both ways; "without" reads the store as one written before chunks carried a
    crc32c (the 4 trailing bytes are then ignored by Blosc). Best of ``repeats``, alternating, markers
    cached, so the figure is the decoding and checking, not the file system.
    """
    import dataclasses

    from embedder.store import SeriesReader

    attrs = {k: v for k, v in st.attrs.items() if k != "embedder:chunk_checksum"}
    readers = {
        True: SeriesReader(st),
        False: SeriesReader(dataclasses.replace(st, attrs=attrs)),
    }
    assert readers[True].store.checksummed and not readers[False].store.checksummed
    rows, cols = (a.ravel() for a in np.mgrid[128:192, 256:320])  # one 64 px chunk block
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeats):
        for checked, reader in readers.items():
            t0 = time.perf_counter()
            got = reader.series("utm32N", rows, cols, t_start, t_start + 365)
            best[checked] = min(best[checked], time.perf_counter() - t0)
            assert got is not None and got[0].days.size > 0
    return best[True], best[False]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=2, help="adjacent tiles to write (default 2)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "store.json"))
    a = p.parse_args(argv)
    cfg = StoreConfig()
    tp = cfg.tile_px
    units = [
        WorkUnit(tile=Tile(zone=32, south=False, col=90 + i, row=1018, size_px=tp), period=Period(index=6))
        for i in range(a.units)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"{tmp}/bench.zarr"
        st = create_store(url, units=units, model_version="bench", cfg=cfg)
        nbytes, n_dates, write_s = 0, 0, 0.0
        sq_err = np.zeros(7)
        sums = np.zeros(7)
        sq = np.zeros(7)
        n_vals = 0
        max_abs = 0.0
        for i, u in enumerate(units):
            d = fake_unit_data(u, seed=i)
            t0 = time.perf_counter()
            w = write_unit(st, u, d["embeddings"], d["flags"], d["dates"], valid_counts=d["valid_counts"])
            write_s += time.perf_counter() - t0
            nbytes += w.nbytes
            n_dates += w.n_dates
            ds = open_store(url)[u.tile.zone_name]
            left, _, _, top = u.tile.bounds
            got = (
                ds["embedding"]
                .sel(x=slice(left, left + tp * 10), y=slice(top, top - tp * 10))
                .sel(time=d["dates"].astype("datetime64[ns]"))
                .values
            )  # [T, 7, H, W]
            want = d["embeddings"]
            ok = np.isfinite(want).all(axis=1)  # [T, H, W]
            err = (got - want).transpose(1, 0, 2, 3)[:, ok]  # [7, N]
            vals = want.transpose(1, 0, 2, 3)[:, ok].astype(np.float64)
            sq_err += (err.astype(np.float64) ** 2).sum(axis=1)
            sums += vals.sum(axis=1)
            sq += (vals**2).sum(axis=1)
            n_vals += vals.shape[1]
            max_abs = max(max_abs, float(np.abs(err).max()))
        std = np.sqrt(sq / n_vals - (sums / n_vals) ** 2)
        rms = np.sqrt(sq_err / n_vals)
        pixel_years = a.units * tp * tp * cfg.period_days / 365.25

        # reads per query, counted at the zarr store level (one get = one object or byte-range read)
        import zarr
        from zarr.storage import LocalStore, LoggingStore

        logged = LoggingStore(LocalStore(st.root, read_only=True), log_handler=logging.NullHandler())
        arr = zarr.open_array(logged, path="utm32N/embedding", mode="r", zarr_format=3)
        t_start = units[0].period.start_day
        logged.counter.clear()
        series = np.asarray(arr[t_start : t_start + 365, :, 100, 100])  # [365, 7] one pixel, one year
        reads_pixel_year = _count_gets(logged.counter)
        day = t_start + int(np.flatnonzero((series != FILL_CODE).all(axis=1))[0])
        logged.counter.clear()
        tile = np.asarray(arr[day, :, 0:tp, 0:tp])  # [7, H, W] one tile, one date
        reads_tile_date = _count_gets(logged.counter)
        assert (tile != FILL_CODE).any()
        # the same pixel-year through the store's own point reader (marker + one range per array)
        from embedder.store import SeriesReader

        reader = SeriesReader(st)
        counted = CountingFS(reader.fs)
        reader.fs = counted
        got_px = reader.series("utm32N", np.array([100]), np.array([100]), t_start, t_start + 365)
        assert got_px is not None and np.array_equal(got_px[0].codes, series[got_px[0].days - t_start])
        reads_pixel_year_ranges = counted.reads
        checked_s, unchecked_s = _checked_read_times(st, t_start)
        rep = verify(url)
    result = {
        "bytes_per_pixel_year": round(nbytes / pixel_years, 2),
        "quant_err_rel_std": round(float((rms / std).max()), 5),
        "quant_err_max_abs": round(max_abs, 6),
        "quant_step": cfg.quant_step,
        "feature_std_min": round(float(std.min()), 4),
        "dates_per_year": round(n_dates / a.units * 365.25 / cfg.period_days, 1),
        "bytes_per_value": round(nbytes / (n_vals * 7), 3) if n_vals else None,
        "reads_pixel_year": reads_pixel_year_ranges,
        "reads_pixel_year_zarr": reads_pixel_year,
        "reads_tile_date": reads_tile_date,
        "write_unit_s": round(write_s / a.units, 2),
        "tile_px": tp,
        "chunk_px": cfg.chunk_px,
        "period_days": cfg.period_days,
        "chunk_days": cfg.chunk_days,
        "units": a.units,
        "verify_ok": rep.ok,
        "checked_read_s": round(checked_s, 4),
        "unchecked_read_s": round(unchecked_s, 4),
        "checked_read_overhead": round(checked_s / unchecked_s - 1, 4),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["bytes_per_pixel_year"] <= 150 and result["quant_err_rel_std"] <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
