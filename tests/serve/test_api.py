"""Queries on a store in fake-gcs-server (gcsfs): point series, windows, no-data status, exports, CLI."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
from serve_stores import CFG, UNITS, expected_series, pixel_lonlat, upload_tree

import embedder
from embedder.cli import main as cli_main
from embedder.config import ServeConfig
from embedder.serve.api import (
    PCA_SIDECAR,
    NoDataError,
    RegionTooLargeError,
    ServeError,
    StoreReader,
    apply_pca,
    export_region,
    iter_region_strips,
    parse_bbox,
    parse_date,
    pca_cache_path,
    probe,
    read_region,
    rgb_pca,
    sample_points,
    window_bins,
)
from embedder.store import dequantise, quantise


@pytest.fixture(scope="module")
def gcs_store(local_store):
    """The test store in a fake-gcs-server bucket: (reader, url, storage_options, written data).

    The store is written once locally (write_unit) and its objects copied to the bucket as they are.
    """
    from embedder.testing.objstore import fake_gcs

    local_url, written = local_store
    with fake_gcs() as gcs:
        url = f"{gcs.url}/emb.zarr"
        upload_tree(local_url, url, gcs.filesystem())
        reader = StoreReader(url, storage_options=gcs.storage_options)
        yield reader, url, gcs.storage_options, written


def _stored(v: np.ndarray) -> np.ndarray:
    """What the store gives back for float values (quantised, then decoded)."""
    return dequantise(quantise(v, step=CFG.quant_step)[0], step=CFG.quant_step)


def _bbox_of(unit, r0, r1, c0, c1):
    """A lon/lat bbox strictly inside pixel rows r0..r1-1, cols c0..c1-1 of a unit's tile."""
    lon_a, lat_a = pixel_lonlat(unit, r1 - 1, c0)  # lower-left pixel centre
    lon_b, lat_b = pixel_lonlat(unit, r0, c1 - 1)  # upper-right pixel centre
    return (lon_a, lat_a, lon_b, lat_b)


def test_open_store_is_georeferenced_for_rioxarray_and_odc(gcs_store):
    import odc.geo.xr  # noqa: F401  (registers .odc)
    import rioxarray  # noqa: F401  (registers .rio)

    _, url, so, _ = gcs_store
    dss = embedder.open_store(url, storage_options=so)
    ds = dss["utm32N"]
    assert ds.rio.crs.to_epsg() == 32632
    gb = ds.odc.geobox
    assert gb.crs.epsg == 32632 and gb.shape == (64, 128)
    left, _, _, top = UNITS[0].tile.bounds
    assert (gb.affine.c, gb.affine.f, gb.affine.a, gb.affine.e) == (left, top, 10.0, -10.0)


@pytest.mark.parametrize(("unit_i", "row", "col"), [(0, 0, 0), (0, 40, 17), (1, 63, 63), (1, 5, 50)])
def test_probe_equals_stored_values(gcs_store, unit_i, row, col):
    reader, _, _, written = gcs_store
    unit = UNITS[unit_i]
    dates, emb, flags = expected_series(written[unit.id], row, col)
    s = probe(reader, *pixel_lonlat(unit, row, col))
    assert s.status == "ok", s.reason
    assert (s.zone, s.row, s.col) == ("utm32N", row, 64 * unit_i + col)
    assert [np.datetime64(d) for d in s.dates] == list(dates)
    np.testing.assert_array_equal(s.embedding, _stored(emb))
    np.testing.assert_array_equal(s.flags, flags)
    assert s.embedding.shape == (len(dates), 7) and len(dates) > 5


def test_probe_reads_a_year_in_three_requests_and_equals_zarr(gcs_store, monkeypatch):
    """A point-year is the unit's marker + one byte range per array; cached markers leave two."""
    import gcsfs.core

    _, url, so, _ = gcs_store
    fresh = StoreReader(url, storage_options=so)
    calls = []
    orig = gcsfs.core.GCSFileSystem._request

    async def counted(fs, *args, **kwargs):
        calls.append(args[:2])
        return await orig(fs, *args, **kwargs)

    monkeypatch.setattr(gcsfs.core.GCSFileSystem, "_request", counted)
    lonlat = pixel_lonlat(UNITS[1], 40, 9)
    fresh.series_reader.zone("utm32N")  # zone metadata, read once per reader
    calls.clear()
    first = probe(fresh, *lonlat)
    assert len(calls) == 3, calls
    calls.clear()
    again = probe(fresh, *pixel_lonlat(UNITS[1], 2, 60))
    assert len(calls) == 2 and again.status == "ok"
    where = fresh.locate(*lonlat)
    assert where is not None
    d0, d1 = fresh.day_range(None, None)
    ((days, codes, flags),) = fresh.read_series(where[0], np.array([where[1]]), np.array([where[2]]), d0, d1,
                                               method="zarr")  # fmt: skip
    assert len(days) == len(first.dates)
    np.testing.assert_array_equal(codes * CFG.quant_step, first.embedding)
    np.testing.assert_array_equal(flags, first.flags)
    with pytest.raises(ServeError, match="method="):
        fresh.read_series("utm32N", np.array([0]), np.array([0]), d0, d1, method="fast")


def test_probe_period_and_csv(gcs_store):
    reader, _, _, written = gcs_store
    unit = UNITS[0]
    dates, _, _ = expected_series(written[unit.id], 10, 10)
    start, end = str(dates[3]), str(dates[6])
    s = probe(reader, *pixel_lonlat(unit, 10, 10), start=start, end=end)
    assert [np.datetime64(d) for d in s.dates] == list(dates[3:7])
    rows = s.csv_rows()
    assert len(rows) == 4 and rows[0][2] == start and len(rows[0]) == 11


def test_point_outside_coverage_is_no_data_not_zeros(gcs_store):
    reader, _, _, _written = gcs_store
    far = probe(reader, -60.0, -10.0)  # another zone and hemisphere
    assert far.status == "no_data" and "coverage" in far.reason and far.embedding.shape == (0, 7)
    lon, lat = pixel_lonlat(UNITS[0], 0, 0)
    near = probe(reader, lon - 0.01, lat)  # same zone, just west of the store's extent
    assert near.status == "no_data" and near.zone is None
    before = probe(reader, lon, lat, start="2016-01-01", end="2016-12-31")  # covered, but no date then
    assert before.status == "no_data" and "no valid embedding" in before.reason and before.zone == "utm32N"
    assert before.to_json()["embedding"] == []


def test_sample_points_grouped_equals_probe(gcs_store):
    reader, _, _, _ = gcs_store
    pts = [pixel_lonlat(UNITS[i], r, c) for i, r, c in [(0, 1, 2), (1, 3, 4), (0, 33, 40), (0, 1, 3)]]
    pts.insert(2, (100.0, 10.0))
    many = sample_points(reader, pts, start="2021-03-01", end="2021-09-30")
    assert [s.status for s in many] == ["ok", "ok", "no_data", "ok", "ok"]
    for p, s in zip(pts, many, strict=True):
        one = probe(reader, *p, start="2021-03-01", end="2021-09-30")
        assert one.dates == s.dates and one.row == s.row
        np.testing.assert_array_equal(one.embedding, s.embedding)
    with pytest.raises(RegionTooLargeError, match="exceed the limit of 2"):
        sample_points(StoreReader(reader.store, cfg=ServeConfig(max_points=2)), pts)


def test_region_per_date_matches_written(gcs_store):
    reader, _, _, written = gcs_store
    unit = UNITS[0]
    data = written[unit.id]
    ds = read_region(reader, _bbox_of(unit, 10, 20, 5, 30), start="2021-01-01", end="2021-06-30")
    assert ds.rio.crs.to_epsg() == 32632 and ds.sizes["feature"] == 7
    y0 = round((unit.tile.bounds[3] - ds["y"].values[0]) / 10 - 0.5)
    x0 = round((ds["x"].values[0] - unit.tile.bounds[0]) / 10 - 0.5)
    h, w = ds.sizes["y"], ds.sizes["x"]
    assert (y0, x0) == (10, 5) and (h, w) == (10, 25)
    in_range = (data["dates"] >= np.datetime64("2021-01-01")) & (data["dates"] <= np.datetime64("2021-06-30"))
    want = data["embeddings"][in_range][:, :, y0 : y0 + h, x0 : x0 + w]
    keep = np.isfinite(want).any(axis=(1, 2, 3))  # dates with data in this bbox
    np.testing.assert_array_equal(ds["time"].values, data["dates"][in_range][keep].astype("datetime64[ns]"))
    np.testing.assert_array_equal(ds["embedding"].values, _stored(want[keep]))
    np.testing.assert_array_equal(
        ds["flags"].values, data["flags"][in_range][keep][:, y0 : y0 + h, x0 : x0 + w]
    )


@pytest.mark.parametrize("reduce", ["mean", "median", "max"])
def test_windows_aggregate_correctly(gcs_store, reduce):
    reader, _, _, _ = gcs_store
    bbox = _bbox_of(UNITS[1], 0, 12, 0, 9)
    daily = read_region(reader, bbox, start="2021-01-05", end="2021-12-31")
    win = read_region(reader, bbox, start="2021-01-05", end="2021-12-31", window="MS", reduce=reduce)
    assert win.sizes["time"] == 12 and str(win["time"].values[0])[:10] == "2021-01-05"
    assert str(win["time_end"].values[1])[:10] == "2021-02-28"
    emb = daily["embedding"].values.astype(np.float64)
    fn = {"mean": np.nanmean, "median": np.nanmedian, "max": np.nanmax}[reduce]
    months = daily["time"].values.astype("datetime64[M]")
    for k, m in enumerate(np.unique(months)):
        sel = emb[months == m]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: "Mean of empty slice"
            want = fn(sel, axis=0)
        np.testing.assert_allclose(win["embedding"].values[k], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(win["count"].values[k], np.isfinite(sel).all(axis=1).sum(axis=0))


def test_custom_and_season_windows(gcs_store):
    reader, _, _, _ = gcs_store
    bbox = _bbox_of(UNITS[0], 30, 34, 30, 34)
    daily = read_region(reader, bbox, start="2021-03-01", end="2021-08-31")
    pairs = [("2021-03-01", "2021-04-15"), ("2021-04-16", "2021-08-31")]
    custom = read_region(reader, bbox, start="2021-03-01", end="2021-08-31", window=pairs)
    seasons = read_region(reader, bbox, start="2021-03-01", end="2021-08-31", window="season")
    assert [str(t)[:10] for t in seasons["time"].values] == ["2021-03-01", "2021-06-01"]
    t = daily["time"].values
    for k, (a, b) in enumerate(pairs):
        sel = daily["embedding"].values[(t >= np.datetime64(a)) & (t <= np.datetime64(b))]
        n = np.isfinite(sel).sum(axis=0)
        want = np.where(n > 0, np.nansum(sel, axis=0) / np.maximum(n, 1), np.nan)
        np.testing.assert_allclose(custom["embedding"].values[k], want, rtol=1e-5)


def test_strips_equal_whole_region(gcs_store):
    reader, _, _, _ = gcs_store
    bbox = _bbox_of(UNITS[0], 0, 40, 50, 64)
    bbox = (bbox[0], bbox[1], pixel_lonlat(UNITS[1], 0, 10)[0], bbox[3])  # across both tiles
    whole = read_region(reader, bbox, start="2021-05-01", end="2021-08-31", window="MS")
    strips = list(
        iter_region_strips(reader, bbox, start="2021-05-01", end="2021-08-31", window="MS", strip_px=7)
    )
    assert len(strips) == 6 and sum(s.sizes["y"] for s in strips) == whole.sizes["y"]
    np.testing.assert_array_equal(
        xr.concat([s["embedding"] for s in strips], dim="y").values, whole["embedding"].values
    )


def test_bad_input_names_the_value():
    with pytest.raises(ServeError, match="inverted"):
        parse_bbox("10,46,9,47")
    with pytest.raises(ServeError, match="out of range"):
        parse_bbox((9, 95, 10, 96))
    with pytest.raises(ServeError, match="4 numbers"):
        parse_bbox("9,46,10")
    with pytest.raises(ServeError, match="YYYY-MM-DD"):
        parse_date("05/01/2021")
    with pytest.raises(ServeError, match="not a valid calendar date"):
        parse_date("2021-02-30")
    with pytest.raises(ServeError, match="window='fortnight'"):
        window_bins("fortnight", start=dt.date(2021, 1, 1), end=dt.date(2021, 2, 1))
    assert window_bins("10D", start=dt.date(2021, 1, 1), end=dt.date(2021, 1, 25))[-1] == (
        dt.date(2021, 1, 21),
        dt.date(2021, 1, 25),
    )


def test_region_errors(gcs_store):
    reader, _, _, _ = gcs_store
    bbox = _bbox_of(UNITS[0], 0, 64, 0, 64)
    small = StoreReader(reader.store, cfg=ServeConfig(max_region_px=100))
    with pytest.raises(RegionTooLargeError, match="over the limit of 100"):
        read_region(small, bbox, start="2021-01-01", end="2021-02-01")
    with pytest.raises(NoDataError, match="outside the store's coverage"):
        read_region(reader, (20.0, 10.0, 20.1, 10.1), start="2021-01-01", end="2021-02-01")
    with pytest.raises(ServeError, match="reduce='mode'"):
        read_region(reader, bbox, start="2021-01-01", end="2021-02-01", window="MS", reduce="mode")
    with pytest.raises(ServeError, match="before start"):
        read_region(reader, bbox, start="2021-03-01", end="2021-02-01")


def test_export_formats_round_trip(gcs_store, tmp_path):
    reader, _, _, _ = gcs_store
    bbox = _bbox_of(UNITS[0], 3, 23, 4, 34)
    kw = {"start": "2021-04-01", "end": "2021-06-30", "window": "MS"}
    ref = read_region(reader, bbox, **kw)
    tif = export_region(reader, bbox, tmp_path / "r.tif", **kw)
    with rasterio.open(tif) as f:
        assert f.crs.to_epsg() == 32632 and f.count == 21 and f.shape == (20, 30)
        assert f.descriptions[7] == "2021-05-01/f0"
        assert (
            f.transform.c == float(ref["x"].values[0]) - 5 and f.transform.f == float(ref["y"].values[0]) + 5
        )
        np.testing.assert_array_equal(f.read().reshape(3, 7, 20, 30), ref["embedding"].values)
    nc = xr.open_dataset(export_region(reader, bbox, tmp_path / "r.nc", **kw), engine="scipy")
    np.testing.assert_array_equal(nc["embedding"].values, ref["embedding"].values)
    nc.close()
    # zarr, written strip by strip from a reader with small strips
    strip_reader = StoreReader(reader.store, cfg=ServeConfig(strip_px=6))
    z = xr.open_zarr(export_region(strip_reader, bbox, tmp_path / "r.zarr", **kw), consolidated=False)
    np.testing.assert_array_equal(z["embedding"].values, ref["embedding"].values)
    np.testing.assert_array_equal(z["y"].values, ref["y"].values)
    with pytest.raises(ServeError, match="export format"):
        export_region(reader, bbox, tmp_path / "r.csv", **kw)
    with pytest.raises(ServeError, match=r"does not exist; create it first \(mkdir -p"):
        export_region(reader, bbox, tmp_path / "missing" / "r.tif", **kw)
    # all or nothing: a failed export leaves neither the file nor a partial one behind
    with pytest.raises(Exception):  # noqa: B017 - any failure mid-write
        export_region(reader, bbox, tmp_path / "bad.tif", **{**kw, "window": "nonsense"})
    assert not (tmp_path / "bad.tif").exists() and not list(tmp_path.glob(".bad.tif.partial-*"))
    # a second zarr export of the same name replaces the first
    again = export_region(strip_reader, bbox, tmp_path / "r.zarr", **kw)
    assert again == tmp_path / "r.zarr" and not list(tmp_path.glob(".r.zarr.partial-*"))


def test_pca_computed_once_cached_outside_the_store(gcs_store, tmp_path):
    reader, url, so, _ = gcs_store
    fs = reader.store.fs
    before = sorted(fs.find(reader.store.root))
    pca = rgb_pca(reader, cache_dir=tmp_path / "cache")
    assert np.asarray(pca["components"]).shape == (3, 7) and pca["n_samples"] > 1000
    assert sorted(fs.find(reader.store.root)) == before  # reading never writes into the store
    cached = pca_cache_path(reader, tmp_path / "cache")
    assert json.loads(cached.read_text())["components"] == pca["components"]
    again = rgb_pca(StoreReader(url, storage_options=so), cache_dir=tmp_path / "cache")  # not refitted
    assert again == pca
    cached.write_text(json.dumps({**pca, "fingerprint": "another store"}))  # a stale cache is refitted
    assert rgb_pca(StoreReader(url, storage_options=so), cache_dir=tmp_path / "cache") == pca
    assert json.loads(cached.read_text())["fingerprint"] == pca["fingerprint"]
    # the store's owner may publish the PCA as a sidecar; readers then take it from the store
    owner = rgb_pca(StoreReader(url, storage_options=so), write_sidecar=True, recompute=True)
    assert json.loads(fs.cat_file(f"{reader.store.root}/{PCA_SIDECAR}"))["components"] == owner["components"]
    assert rgb_pca(StoreReader(url, storage_options=so)) == owner
    fs.rm(f"{reader.store.root}/{PCA_SIDECAR}")
    rgba = apply_pca(np.array([[np.nan] * 7, pca["mean"]], dtype=np.float32), pca)
    assert rgba[0, 3] == 0 and rgba[1, 3] == 255


def test_cli_probe_region_export(local_store, tmp_path, capsys):
    url, written = local_store
    lon, lat = pixel_lonlat(UNITS[0], 8, 9)
    assert cli_main(["probe", url, str(lon), str(lat), "--start", "2021-01-01", "--end", "2021-12-31"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lon,lat,date,f0") and len(out) - 1 == len(
        expected_series(written[UNITS[0].id], 8, 9)[0]
    )
    assert cli_main(["probe", url, "120", "-5"]) == 3
    assert "no data" in capsys.readouterr().err
    bbox = ",".join(str(v) for v in _bbox_of(UNITS[0], 0, 10, 0, 10))
    assert (
        cli_main(
            [
                "region",
                url,
                "--bbox",
                bbox,
                "--start",
                "2021-01-01",
                "--end",
                "2021-12-31",
                "--window",
                "season",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("zone utm32N EPSG:32632  10 x 10 px") and len(table) == 2 + 5
    out_tif = tmp_path / "x.tif"
    assert (
        cli_main(
            [
                "export",
                url,
                str(out_tif),
                "--bbox",
                bbox,
                "--start",
                "2021-01-01",
                "--end",
                "2021-03-01",
                "--window",
                "MS",
            ]
        )
        == 0
    )
    assert out_tif.exists()
    assert (
        cli_main(
            [
                "export",
                url,
                str(out_tif),
                "--bbox",
                "10,46,9,47",
                "--start",
                "2021-01-01",
                "--end",
                "2021-03-01",
            ]
        )
        == 2
    )
    assert "inverted" in capsys.readouterr().err
