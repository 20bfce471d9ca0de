"""Cube loading: scaling per baseline, SCL masking, merging, reprojection, S1 chain and alignment, errors.

Tiny seeded GeoTIFFs and STAC items are written per test (24 x 24 px at 10 m), read through a
MemoryCatalog, so every expected value is computed here independently of the loader.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import from_origin

from embedder.config import ConfigError, CubeConfig, load_config
from embedder.data.cubes import (
    CorruptAssetError,
    EmptyCubeError,
    cli_main,
    cube_from_cropharvest,
    geobox_from_bbox,
    load_cube,
    s1_to_unit,
)
from embedder.data.stac import EmptySearchError, MemoryCatalog, MissingAssetError, NoMapGridError, PeriodError
from embedder.sensors import S1, S2

LON, LAT = 11.95, 50.0  # near the zone 32/33 border, so both UTM zones cover it
SIZE_PX = 24
CROPHARVEST = Path("/work/shared/realdata/s1s2_pixels/cropharvest_98-togo_2019-02-06_2020-02-01.tif")

Field = Callable[[int, np.ndarray, np.ndarray], np.ndarray]  # (band index, X, Y) -> DN


def _origin(epsg: int, *, pad_px: int = 0) -> tuple[float, float]:
    """Upper-left corner (snapped to 20 m) of a SIZE_PX raster centred on (LON, LAT) in ``epsg``."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(LON, LAT)
    half = (SIZE_PX // 2 + pad_px) * 10
    return float(np.floor((x - half) / 20) * 20), float(np.ceil((y + half) / 20) * 20)


def _geobox(epsg: int = 32632) -> GeoBox:
    x0, y0 = _origin(epsg)
    return GeoBox((SIZE_PX, SIZE_PX), from_origin(x0, y0, 10, 10), f"EPSG:{epsg}")


def _write(
    path: Path, arr: np.ndarray, *, epsg: int, x0: float, y0: float, res: float, nodata: float
) -> None:
    with rasterio.open(
        path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
        crs=f"EPSG:{epsg}", transform=from_origin(x0, y0, res, res), nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(arr, 1)


def _lonlat_bbox(epsg: int, x0: float, y0: float, size_m: float) -> list[float]:
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    xs, ys = tr.transform([x0, x0 + size_m, x0, x0 + size_m], [y0, y0, y0 - size_m, y0 - size_m])
    return [min(xs), min(ys), max(xs), max(ys)]


def _item(
    item_id: str, when: dt.datetime, collection: str, epsg: int, bbox: list[float], **props: object
) -> pystac.Item:
    lon0, lat0, lon1, lat1 = bbox
    return pystac.Item(
        id=item_id,
        geometry={
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        bbox=bbox,
        datetime=when,
        properties={"proj:code": f"EPSG:{epsg}", **props},
        collection=collection,
    )


def s2_item(
    root: Path,
    item_id: str,
    when: dt.datetime,
    *,
    baseline: str = "05.10",
    epsg: int = 32632,
    dn: Field | float = 3000.0,
    scl: Callable[[np.ndarray, np.ndarray], np.ndarray] | int = 4,
    pad_px: int = 4,
) -> pystac.Item:
    """An S2 L2A item like Planetary Computer's: 10 bands + SCL as GeoTIFFs, 10/20 m, uint16, nodata 0."""
    x0, y0 = _origin(epsg, pad_px=pad_px)
    size_m = (SIZE_PX + 2 * pad_px) * 10
    item = _item(item_id, when, S2.collection, epsg, _lonlat_bbox(epsg, x0, y0, size_m),
                 **{"s2:processing_baseline": baseline, "sat:orbit_state": "descending", "platform": "Sentinel-2A"})  # fmt: skip
    for i, (asset, res) in enumerate([*zip(S2.assets, S2.native_res_m, strict=True), ("SCL", 20)]):
        n = int(size_m // res)
        centres = (np.arange(n) + 0.5) * res
        X, Y = np.meshgrid(x0 + centres, y0 - centres)  # [n, n] pixel centres in metres
        if asset == "SCL":
            values = scl(X, Y) if callable(scl) else np.full(X.shape, scl)
        else:
            values = dn(i, X, Y) if callable(dn) else np.full(X.shape, dn + 100 * i)
        path = root / f"{item_id}_{asset}.tif"
        _write(path, np.asarray(values).astype(np.uint16), epsg=epsg, x0=x0, y0=y0, res=res, nodata=0)
        item.add_asset(asset, pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF))
    return item


def s1_item(
    root: Path, item_id: str, when: dt.datetime, *, vv: float, vh: float, orbit: str = "ascending", epsg: int = 32632,
    nodata_rows: int = 0,
) -> pystac.Item:  # fmt: skip
    """An S1 RTC item: vv/vh float32 linear gamma0, nodata -32768, 10 m; first ``nodata_rows`` rows no data."""
    pad_px = 4
    x0, y0 = _origin(epsg, pad_px=pad_px)
    n = SIZE_PX + 2 * pad_px
    item = _item(item_id, when, S1.collection, epsg, _lonlat_bbox(epsg, x0, y0, n * 10.0),
                 **{"sat:orbit_state": orbit, "sat:relative_orbit": 15 if orbit == "ascending" else 66,
                    "sar:instrument_mode": "IW", "sar:polarizations": ["VV", "VH"]})  # fmt: skip
    for asset, value in (("vv", vv), ("vh", vh)):
        arr = np.full((n, n), value, dtype=np.float32)
        arr[: pad_px + nodata_rows] = S1.nodata if nodata_rows else value
        path = root / f"{item_id}_{asset}.tif"
        _write(path, arr, epsg=epsg, x0=x0, y0=y0, res=10, nodata=S1.nodata)
        item.add_asset(asset, pystac.Asset(href=str(path), media_type=pystac.MediaType.GEOTIFF))
    return item


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)


def expected_s1(powers: list[float]) -> np.ndarray:
    """Independent S1 chain on a 1-D series: centred mean of 3 (edges: 2), dB, clip, rescale."""
    out = []
    for i in range(len(powers)):
        window = powers[max(0, i - 1) : i + 2]
        db = 10 * np.log10(np.mean(window))
        out.append((np.clip(db, -30, 5) + 30) / 35)
    return np.array(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------------


def test_s2_scaling_per_baseline_mask_merge_and_layout(tmp_path: Path) -> None:
    gb = _geobox()

    def cloud_left(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        # cloud (9) on the left third of the geobox, vegetation (4) elsewhere
        return np.where(X < gb.transform.c + 80, 9, 4)

    items = [
        s2_item(tmp_path, "old", utc(2022, 1, 20, 10), baseline="03.01", dn=3000.0),
        s2_item(tmp_path, "new", utc(2022, 2, 4, 10), baseline="04.00", dn=3000.0),
        # same solar day, orbit overlap: first (cloudy left) then second fills the cloud
        s2_item(tmp_path, "dup1", utc(2022, 2, 14, 10), dn=2000.0, scl=cloud_left),
        s2_item(tmp_path, "dup2", utc(2022, 2, 14, 10, 0, 5), dn=5000.0),
    ]
    s1 = [
        s1_item(tmp_path, f"s1-{k}", utc(2022, 1, 18, 17) + dt.timedelta(days=6 * k), vv=0.1, vh=0.02)
        for k in range(5)
    ]
    cube = load_cube(MemoryCatalog(items + s1), gb, "2022-01-15", "2022-02-28", cfg=CubeConfig(halo_px=3))

    assert set(cube.data_vars) == {
        "s2",
        "s1",
        "s1_time",
        "s1_gap_days",
        "s1_own",
        "s2_valid_frac",
        "s2_usable",
    }
    assert cube["s2"].dims == ("time", "band_s2", "y", "x") and cube["s1"].dims == (
        "time",
        "band_s1",
        "y",
        "x",
    )
    assert cube["s1_own"].dims == ("time_s1", "band_s1", "y", "x")
    assert list(cube["band_s2"].values) == list(S2.bands) and list(cube["band_s1"].values) == list(S1.bands)
    assert cube["s2"].dtype == np.float32 and cube["s2_usable"].dtype == bool
    assert cube["time"].dtype == np.dtype("datetime64[ns]") and cube.sizes["time"] == 3  # dup merged
    assert cube.attrs["crs"] == "EPSG:32632" and cube.attrs["halo_px"] == 3
    assert tuple(cube.attrs["transform"]) == gb.transform.to_gdal()
    np.testing.assert_allclose(cube["x"].values, gb.transform.c + 5 + 10 * np.arange(SIZE_PX))
    np.testing.assert_allclose(cube["y"].values, gb.transform.f - 5 - 10 * np.arange(SIZE_PX))

    band_dn = 3000.0 + 100 * np.arange(10)  # [C]
    old = cube["s2"].isel(time=0).values  # [C, H, W]
    new = cube["s2"].isel(time=1).values
    np.testing.assert_allclose(old, np.broadcast_to((band_dn / 1e4)[:, None, None], old.shape), atol=1e-6)
    np.testing.assert_allclose(
        new, np.broadcast_to(((band_dn - 1000) / 1e4)[:, None, None], new.shape), atol=1e-6
    )

    merged = cube["s2"].isel(time=2).values  # [C, H, W]
    left = cube["x"].values < gb.transform.c + 80
    np.testing.assert_allclose(
        merged[:, :, left],
        ((5000 + 100 * np.arange(10) - 1000) / 1e4)[:, None, None] + 0 * merged[:, :, left],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        merged[:, :, ~left],
        ((2000 + 100 * np.arange(10) - 1000) / 1e4)[:, None, None] + 0 * merged[:, :, ~left],
        atol=1e-6,
    )
    assert np.isfinite(cube["s2"].values).all()
    np.testing.assert_allclose(cube["s2_valid_frac"].values, 1.0)
    assert cube.attrs["s1_missing"] is False


def test_scl_masking_clip_valid_share_and_unusable_dates(tmp_path: Path) -> None:
    gb = _geobox()
    x_mid = gb.transform.c + 120

    def mixed(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        scl = np.full(X.shape, 4)
        scl[X < x_mid] = 8  # medium-probability cloud on the left half
        scl[(X >= x_mid) & (Y > gb.transform.f - 40)] = 3  # cloud shadow on the top-right rows
        return scl

    def dark(i: int, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        return np.full(X.shape, 900 if i == 0 else 3000)  # B02 below the 04.00 offset -> clip to 0

    items = [
        s2_item(tmp_path, "a", utc(2023, 5, 1, 10), dn=dark, scl=mixed),
        s2_item(
            tmp_path, "b", utc(2023, 5, 11, 10), scl=lambda X, Y: np.where(Y > gb.transform.f - 20, 4, 9)
        ),
        s2_item(tmp_path, "c", utc(2023, 5, 21, 10), scl=10),  # all thin cirrus
    ]
    cube = load_cube(MemoryCatalog(items), gb, "2023-05-01", "2023-05-31")
    s2 = cube["s2"].values  # [3, C, H, W]
    left = cube["x"].values < x_mid
    top = cube["y"].values > gb.transform.f - 40
    assert np.isnan(s2[0][:, :, left]).all()
    assert np.isnan(s2[0][:, top][:, :, ~left]).all()
    kept = s2[0][:, ~top][:, :, ~left]
    assert np.isfinite(kept).all() and (kept[0] == 0).all()  # clipped at 0, not negative
    assert cube["s2_valid_frac"].values[0] == pytest.approx((~left).mean() * (~top).mean())
    # date b: two rows of 24 valid -> 8.3 % >= 3 %; date c: nothing valid, kept but not usable
    assert cube["s2_valid_frac"].values[1] == pytest.approx(2 / SIZE_PX)
    assert list(cube["s2_usable"].values) == [True, True, False]
    assert cube.sizes["time"] == 3 and np.isnan(s2[2]).all()


def test_mixed_crs_items_are_reprojected_onto_the_one_grid(tmp_path: Path) -> None:
    gb = _geobox(32632)
    to_ll = {e: Transformer.from_crs(e, 4326, always_xy=True) for e in (32632, 32633)}

    def field_of(epsg: int) -> Field:
        def dn(i: int, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
            lon, lat = to_ll[epsg].transform(X, Y)
            return 4000 + 4e5 * (lon - LON) + 4e5 * (lat - LAT)  # same ground field in both zones

        return dn

    items = [
        s2_item(tmp_path, "z32", utc(2023, 6, 1, 10), epsg=32632, dn=field_of(32632)),
        s2_item(tmp_path, "z33", utc(2023, 6, 6, 10), epsg=32633, dn=field_of(32633), pad_px=8),
    ]
    cube = load_cube(MemoryCatalog(items), gb, "2023-06-01", "2023-06-10")
    X, Y = np.meshgrid(cube["x"].values, cube["y"].values)
    lon, lat = to_ll[32632].transform(X, Y)
    expected = (4000 + 4e5 * (lon - LON) + 4e5 * (lat - LAT) - 1000) / 1e4  # [H, W]
    for t in range(2):
        b04 = cube["s2"].isel(time=t).sel(band_s2="B04").values
        assert np.isfinite(b04).all()
        np.testing.assert_allclose(b04, expected, atol=6e-4)  # < 6 DN: bilinear of a linear field
    # a loader that ignored the CRS would be off by the zones' offset, far beyond the tolerance
    assert np.abs(np.diff(expected, axis=1)).mean() > 3e-4


def test_s1_chain_alignment_max_gap_and_own_axis(tmp_path: Path) -> None:
    gb = _geobox()
    s2 = [s2_item(tmp_path, f"s2-{d}", utc(2023, 7, d, 10)) for d in (5, 15, 25)]
    vv = [0.02, 0.2, 0.05, 0.5, 0.08]  # linear power
    times = [
        utc(2023, 6, 28, 5),
        utc(2023, 7, 4, 17),
        utc(2023, 7, 10, 5),
        utc(2023, 7, 16, 17),
        utc(2023, 8, 30, 5),
    ]
    s1 = [
        s1_item(
            tmp_path,
            f"s1-{k}",
            t,
            vv=v,
            vh=v / 5,
            orbit="descending" if t.hour == 5 else "ascending",
            nodata_rows=3 if k == 2 else 0,
        )
        for k, (t, v) in enumerate(zip(times, vv, strict=True))
    ]
    cat = MemoryCatalog(s2 + s1)
    cube = load_cube(cat, gb, "2023-07-01", "2023-07-31", cfg=CubeConfig(s1_margin_days=40))
    exp_vv = expected_s1(vv)
    own = cube["s1_own"]
    assert [str(t)[:10] for t in cube["time_s1"].values] == ["2023-07-04", "2023-07-10", "2023-07-16"]
    np.testing.assert_allclose(own.sel(band_s1="VV").values[:, 10, 10], exp_vv[1:4], atol=1e-5)
    np.testing.assert_allclose(
        own.sel(band_s1="VH").values[:, 10, 10], expected_s1([v / 5 for v in vv])[1:4], atol=1e-5
    )
    # rows where acquisition 2 had no data: its window mean uses only the valid neighbours (>= 1 valid)
    exp_row0 = (np.clip(10 * np.log10(np.mean([vv[1], vv[3]])), -30, 5) + 30) / 35
    assert own.sel(band_s1="VV").values[1, 0, 0] == pytest.approx(exp_row0, abs=1e-5)
    # nearest-in-time: Jul 5 -> Jul 4 17:00 (0.71 d), Jul 15 -> Jul 16 17:00 (1.29 d), Jul 25 -> Jul 16 (8.71 d)
    assert [str(t)[:13] for t in cube["s1_time"].values] == [
        "2023-07-04T17",
        "2023-07-16T17",
        "2023-07-16T17",
    ]
    np.testing.assert_allclose(cube["s1_gap_days"].values, [17 / 24, 31 / 24, 8 + 17 / 24], atol=1e-4)
    np.testing.assert_allclose(cube["s1"].values[0, 0, 10, 10], exp_vv[1], atol=1e-5)
    np.testing.assert_allclose(cube["s1"].values[2, 0, 10, 10], exp_vv[3], atol=1e-5)

    capped = load_cube(
        cat, gb, "2023-07-01", "2023-07-31", cfg=CubeConfig(s1_margin_days=40, s1_max_gap_days=2.0)
    )
    assert np.isnan(capped["s1_gap_days"].values[2]) and np.isnat(capped["s1_time"].values[2])
    assert np.isnan(capped["s1"].values[2]).all() and np.isfinite(capped["s1"].values[0]).all()


def test_s1_to_unit_matches_the_chain() -> None:
    series = np.array([0.02, np.nan, 0.0, 1e-5, 4.0, np.nan, np.nan, np.nan], dtype=np.float32)
    got = s1_to_unit(series[:, None], time_axis=0)[:, 0]
    # centred windows of 3, NaN skipped, at least one valid
    means = np.array([0.02, 0.01, 1e-5 / 2, (0.0 + 1e-5 + 4.0) / 3, (1e-5 + 4.0) / 2, 4.0])
    exp = (np.clip(10 * np.log10(means), -30, 5) + 30) / 35
    np.testing.assert_allclose(got[:6], exp, atol=1e-6)
    assert np.isnan(got[6:]).all()  # no valid value in the window
    assert got[2] == 0.0 and got[5] == 1.0  # -53 dB and +6 dB clip to the ends
    assert s1_to_unit(np.array([0.0]))[0] == 0.0  # zero power clips to -30 dB


def test_s1_missing_is_flagged_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gb = _geobox()
    cat = MemoryCatalog([s2_item(tmp_path, "a", utc(2023, 3, 1, 10))])
    with caplog.at_level(logging.WARNING, logger="embedder.data.cubes"):
        cube = load_cube(cat, gb, "2023-03-01", "2023-03-05")
    assert cube.attrs["s1_missing"] is True and "s1_missing=True" in caplog.text
    assert np.isnan(cube["s1"].values).all() and np.isnan(cube["s1_gap_days"].values).all()
    assert np.isnat(cube["s1_time"].values).all() and cube.sizes["time_s1"] == 0
    assert cube["s2_usable"].values.all()


def test_fully_clouded_tile_raises_empty_cube(tmp_path: Path) -> None:
    gb = _geobox()
    items = [s2_item(tmp_path, f"c{d}", utc(2023, 3, d, 10), scl=9) for d in (1, 11)]  # all cloud
    items.append(
        s2_item(tmp_path, "nodata", utc(2023, 3, 21, 10), dn=lambda i, X, Y: np.zeros(X.shape), scl=4)
    )
    with pytest.raises(
        EmptyCubeError, match=r"no usable S2 date.*EPSG:32632.*2023-03-01\.\.2023-03-31.*all 3 dates"
    ):
        load_cube(MemoryCatalog(items), gb, "2023-03-01", "2023-03-31")


def test_errors_empty_search_period_missing_asset_grd_corrupt(tmp_path: Path) -> None:
    gb = _geobox()
    good = s2_item(tmp_path, "good", utc(2023, 3, 1, 10))
    with pytest.raises(EmptySearchError, match=r"bbox \(11\.9.*50\.0.*period 2024-01-01\.\.2024-02-01"):
        load_cube(MemoryCatalog([good]), gb, "2024-01-01", "2024-02-01")
    with pytest.raises(PeriodError, match="before start"):
        load_cube(MemoryCatalog([good]), gb, "2023-03-10", "2023-03-01")

    no_b8a = s2_item(tmp_path, "no-b8a", utc(2023, 3, 2, 10))
    del no_b8a.assets["B8A"]
    with pytest.raises(MissingAssetError, match=r"'no-b8a'.*'B8A'"):
        load_cube(MemoryCatalog([good, no_b8a]), gb, "2023-03-01", "2023-03-05")

    grd = s1_item(tmp_path, "S1A_IW_GRDH_fake", utc(2023, 3, 1, 5), vv=0.1, vh=0.01)
    del grd.properties["proj:code"]  # ground-range: no map grid
    with pytest.raises(NoMapGridError, match=r"S1A_IW_GRDH_fake.*no map grid"):
        load_cube(MemoryCatalog([good, grd]), gb, "2023-03-01", "2023-03-05")

    broken = s2_item(tmp_path, "broken", utc(2023, 3, 3, 10))
    href = broken.assets["B03"].href
    Path(href).write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header and garbage
    with pytest.raises(CorruptAssetError, match=f"{href}.*'broken'"):
        load_cube(MemoryCatalog([good, broken]), gb, "2023-03-01", "2023-03-05")


def test_geographic_geobox_is_refused_and_config_validation(tmp_path: Path) -> None:
    from embedder.data.cubes import CubeError

    gb = GeoBox((10, 10), from_origin(11.9, 50.1, 1e-4, 1e-4), "EPSG:4326")
    with pytest.raises(CubeError, match="not projected"):
        load_cube(MemoryCatalog([]), gb, "2023-03-01", "2023-03-05")
    assert load_config(CubeConfig, {"s1_max_gap_days": 12}).s1_max_gap_days == 12.0
    with pytest.raises(ConfigError, match="s1_max_gap_days"):
        CubeConfig(s1_max_gap_days=-1)
    with pytest.raises(ConfigError, match="dates_per_read"):
        CubeConfig(dates_per_read=0)


def test_batched_reads_equal_one_read(tmp_path: Path) -> None:
    gb = _geobox()
    rng = np.random.default_rng(0)
    items = [
        s2_item(
            tmp_path,
            f"d{d}",
            utc(2023, 4, d, 10),
            baseline=("03.01" if d < 10 else "04.00"),
            dn=float(rng.integers(1500, 4000)),
        )
        for d in (1, 6, 11, 16, 21)
    ]
    items += [
        s1_item(
            tmp_path,
            f"s1-{d}",
            utc(2023, 4, d, 5),
            vv=float(rng.uniform(0.01, 0.3)),
            vh=0.01,
            nodata_rows=d % 3,
        )
        for d in (3, 9, 15, 21, 27)
    ]
    one = load_cube(MemoryCatalog(items), gb, "2023-04-01", "2023-04-30", cfg=CubeConfig(dates_per_read=8))
    many = load_cube(MemoryCatalog(items), gb, "2023-04-01", "2023-04-30", cfg=CubeConfig(dates_per_read=2))
    for var in ("s2", "s1", "s1_own", "s1_gap_days"):
        np.testing.assert_array_equal(one[var].values, many[var].values)
    assert one.sizes["time_s1"] == 5 and np.isfinite(one["s1_own"].values).all()


def test_geobox_from_bbox_is_utm_10m() -> None:
    gb = geobox_from_bbox((11.9, 49.99, 11.92, 50.0))
    assert str(gb.crs) == "EPSG:32632" and gb.resolution.x == 10 and gb.resolution.y == -10
    assert gb.transform.c % 10 == 0 and 130 <= gb.shape.x <= 160
    assert str(geobox_from_bbox((-60.0, -10.0, -59.99, -9.99)).crs) == "EPSG:32721"


def test_cli_prints_summary_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cat = pystac.Catalog(id="c", description="cli test")
    coll = pystac.Collection(
        id=S2.collection, description="s2",
        extent=pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]), pystac.TemporalExtent([[dt.datetime(2015, 1, 1, tzinfo=dt.UTC), None]])),
    )  # fmt: skip
    cat.add_child(coll)
    coll.add_item(s2_item(tmp_path, "a", utc(2023, 3, 1, 10)))
    cat.normalize_hrefs(str(tmp_path / "cat"))
    cat.save(catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)
    path = str(tmp_path / "cat" / "catalog.json")
    bbox = ["11.948,49.999,11.952,50.001"]
    assert cli_main([path, "--bbox", *bbox, "--start", "2023-03-01", "--end", "2023-03-02"]) == 0
    out = capsys.readouterr().out
    assert "EPSG:32632" in out and "1 dates, 1 usable" in out and "s1_missing=True" in out
    assert (
        cli_main([path, "--bbox", "50.0,11.9,50.1,200", "--start", "2023-03-01", "--end", "2023-03-02"]) == 1
    )
    assert "BBoxError" in capsys.readouterr().err
    # a 2 x 2 degree bbox over the item: refused with its size before any pixel is read
    huge = ["11.0,49.0,13.0,51.0"]
    assert cli_main([path, "--bbox", *huge, "--start", "2023-03-01", "--end", "2023-03-02"]) == 1
    err = capsys.readouterr().err
    assert "CubeTooLargeError" in err and "GiB, more than the limit of 8 GiB" in err, err
    assert (
        cli_main([path, "--bbox", *bbox, "--start", "2023-03-01", "--end", "2023-03-02", "--max-gib", "0"])
        == 1
    )
    assert "max_gib=0.0 must be a positive" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# Real data: the CropHarvest Togo S1+S2 export
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CROPHARVEST.is_file(), reason=f"real CropHarvest tif not found at {CROPHARVEST}")
def test_cropharvest_real_cube() -> None:
    cube = cube_from_cropharvest(CROPHARVEST)
    assert cube["s2"].shape == (12, 10, 17, 17) and cube["s1"].shape == (12, 2, 17, 17)
    assert cube["s1_own"].shape == (12, 2, 17, 17)
    assert str(cube["time"].values[0])[:10] == "2019-02-21"  # window centre of 2019-02-06 + 15 d
    assert np.isfinite(cube["s2"].values).all() and np.isfinite(cube["s1"].values).all()
    assert 0 <= float(cube["s2"].min()) and float(cube["s2"].max()) <= 1
    assert cube["s2_usable"].values.all() and (cube["s1_gap_days"].values == 0).all()
    # the real seasonal cycle survives the mapping: NDVI rises Feb -> Nov, VV brightens
    red, nir = cube["s2"].sel(band_s2="B04"), cube["s2"].sel(band_s2="B08")
    ndvi = ((nir - red) / (nir + red)).mean(("y", "x")).values
    assert ndvi[0] < 0.2 and ndvi[9] > 0.5
    vv_db = cube["s1"].sel(band_s1="VV").mean(("y", "x")).values * 35 - 30
    assert vv_db[0] == pytest.approx(-14.47, abs=0.05) and vv_db[-3:].max() > -10
    with rasterio.open(CROPHARVEST) as src:
        names = list(src.descriptions)
        raw_b2 = src.read(names.index("B2") + 1)
    np.testing.assert_allclose(
        cube["s2"].sel(band_s2="B02").values[0], np.clip(raw_b2 / 1e4, 0, 1), rtol=1e-6
    )
    with pytest.raises(Exception, match="does not end in"):
        cube_from_cropharvest(CROPHARVEST.with_name("other.tif"))


# ------------------------------------------------------------------------------------------------
# The synthetic sample region (embedder.sample): a static catalog like Planetary Computer's
# ------------------------------------------------------------------------------------------------


def test_sample_region_cube_matches_its_truth(tmp_path: Path) -> None:
    import dataclasses

    from affine import Affine

    from embedder.config import SampleRegionConfig
    from embedder.data.stac import open_catalog
    from embedder.sample import write_sample_region

    tiny = SampleRegionConfig.tiny()
    region = write_sample_region(tmp_path / "region", cfg=dataclasses.replace(tiny, scenes=tiny.scenes[:1]))
    scene = region.scenes[0]
    gb = GeoBox((scene.size_px, scene.size_px), Affine(*scene.transform), scene.crs)
    cube = load_cube(open_catalog(region.catalog_path), gb, region.start, region.end)

    truth = np.load(scene.truth_path)
    assert cube.sizes["time"] == scene.n_s2 == len(truth["dates"])  # one S2 date per item, none lost
    np.testing.assert_array_equal(cube["time"].values.astype("datetime64[D]"), truth["dates"])
    ten_m = [list(S2.bands).index(b) for b in ("B02", "B03", "B04", "B08")]
    s2 = cube["s2"].values[:, ten_m]  # [T, 4, H, W]
    ref = truth["reflectance"][:, ten_m]
    both = np.isfinite(s2) & truth["clear"][:, None]
    assert both.sum() > 1000
    # DN rounding only, across both sides of the 04.00 baseline offset
    np.testing.assert_allclose(s2[both], ref[both], atol=1.01e-4)
    assert cube["s2_usable"].values.any()
    assert not cube.attrs["s1_missing"] and cube.sizes["time_s1"] > 0
    s1 = cube["s1"].values
    assert np.isfinite(s1).mean() > 0.9 and np.nanmin(s1) >= 0 and np.nanmax(s1) <= 1
    assert np.nanmax(cube["s1_gap_days"].values) <= tiny.s1_cadence_days


def test_cloud_mask_is_pluggable(tmp_path: Path) -> None:
    import dataclasses

    from affine import Affine

    from embedder.config import SampleRegionConfig
    from embedder.data.cubes import SclMask
    from embedder.data.stac import open_catalog
    from embedder.sample import write_sample_region

    tiny = SampleRegionConfig.tiny()
    region = write_sample_region(tmp_path / "region", cfg=dataclasses.replace(tiny, scenes=tiny.scenes[:1]))
    scene = region.scenes[0]
    gb = GeoBox((scene.size_px, scene.size_px), Affine(*scene.transform), scene.crs)
    catalog = open_catalog(region.catalog_path)
    calls = []

    class BrightIsCloud:
        """A stand-in for a learned mask: the SCL rule plus 'blue reflectance above 0.05 is cloud'."""

        def __call__(self, reflectance, scl, item):
            calls.append(item.id)
            return SclMask()(reflectance, scl, item) & (reflectance[0] <= 0.05)

    default = load_cube(catalog, gb, region.start, region.end)
    custom = load_cube(catalog, gb, region.start, region.end, cloud_mask=BrightIsCloud())
    assert calls, "the plugged-in mask was not called"
    blue_default, blue_custom = default["s2"].values[:, 0], custom["s2"].values[:, 0]
    assert np.nanmax(blue_custom) <= 0.05 < np.nanmax(blue_default)
    # where both are valid they agree; the custom mask only removes pixels
    both = np.isfinite(blue_default) & np.isfinite(blue_custom)
    np.testing.assert_array_equal(blue_default[both], blue_custom[both])
    assert np.isfinite(blue_custom).sum() < np.isfinite(blue_default).sum()
