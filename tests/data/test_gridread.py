"""Direct aligned reads: where the grid fits, and the same pixels as odc-stac's warp wherever it does.

Random uint16 rasters with nodata holes at 10 m and 20 m (and an SCL layer) are written as GeoTIFFs in
one UTM zone, plus an item in the neighbouring zone; the loader's direct read is compared with odc-stac's
load (GDAL's warper) of the same items onto several output grids: exactly on the source grid, shifted by
odd pixels, reaching past the rasters' edges, and half a pixel off (which must fall back to odc-stac).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import from_origin

from embedder.config import CubeConfig
from embedder.data.cubes import read_items
from embedder.data.gridread import GridFit, grid_fit, read_aligned
from embedder.sensors import S2

X0, Y0 = 500_000.0, 5_300_000.0  # upper-left corner of the sources, on the 20 m grid
SRC_PX = 48  # 10 m pixels per side of a source raster
ASSETS = [*S2.assets, "SCL"]
RESAMPLING = {"*": S2.resampling, "SCL": "nearest"}


def _write(path: Path, arr: np.ndarray, *, res: float, epsg: int, x0: float, y0: float) -> str:
    with rasterio.open(
        path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
        crs=f"EPSG:{epsg}", transform=from_origin(x0, y0, res, res), nodata=0, tiled=True,
        blockxsize=16, blockysize=16,
    ) as dst:  # fmt: skip
        dst.write(arr, 1)
    return str(path)


def _item(root: Path, item_id: str, seed: int, *, epsg: int = 32632) -> pystac.Item:
    """An S2-like item: random DN with a nodata corner and a nodata stripe, per-band native resolution."""
    rng = np.random.default_rng(seed)
    size_m = SRC_PX * 10
    # the same place in ``epsg`` (another zone's grid is rotated and shifted against the output's)
    x, y = Transformer.from_crs(32632, epsg, always_xy=True).transform(X0, Y0)
    x0, y0 = float(np.floor(x / 20) * 20), float(np.ceil(y / 20) * 20)
    xs, ys = Transformer.from_crs(epsg, 4326, always_xy=True).transform(
        [x0, x0 + size_m, x0, x0 + size_m], [y0, y0, y0 - size_m, y0 - size_m]
    )
    lon0, lat0, lon1, lat1 = min(xs), min(ys), max(xs), max(ys)
    item = pystac.Item(
        id=item_id,
        geometry={
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        bbox=[lon0, lat0, lon1, lat1],
        datetime=dt.datetime(2023, 5, 1 + seed, 10, tzinfo=dt.UTC),
        properties={"proj:code": f"EPSG:{epsg}"},
        collection=S2.collection,
    )
    for asset, res in [*zip(S2.assets, S2.native_res_m, strict=True), ("SCL", 20)]:
        n = int(SRC_PX * 10 // res)
        if asset == "SCL":
            arr = rng.integers(0, 12, (n, n)).astype(np.uint16)
        else:
            arr = rng.integers(1, 10_000, (n, n)).astype(np.uint16)
            arr[: n // 3, : n // 4] = 0  # a nodata corner (swath edge)
            arr[:, n // 2 + seed % 3] = 0  # a one-pixel nodata stripe
        href = _write(root / f"{item_id}_{asset}.tif", arr, res=res, epsg=epsg, x0=x0, y0=y0)
        item.add_asset(asset, pystac.Asset(href=href, media_type=pystac.MediaType.GEOTIFF))
    return item


def _geobox(col: float, row: float, width: int, height: int) -> GeoBox:
    """A 10 m output grid whose top-left pixel is (col, row) 10 m pixels from the sources' corner."""
    return GeoBox((height, width), from_origin(X0 + 10 * col, Y0 - 10 * row, 10, 10), "EPSG:32632")


def _direct(items: list[pystac.Item], geobox: GeoBox, *, mode: str | None = None) -> list[int]:
    """``read_aligned`` of ``items``: the indices it left to odc-stac."""
    h, w = geobox.shape.yx
    out = {a: np.empty((len(items), h, w), dtype=S2.dtype) for a in ASSETS}
    return read_aligned(
        items, ASSETS, geobox, out, nodata=0, resampling=lambda a: mode or RESAMPLING.get(a, RESAMPLING["*"]),
        on_error=lambda item, asset, err: err,
    )  # fmt: skip


def test_grid_fit_accepts_whole_shifts_and_multiples_only() -> None:
    dst = from_origin(X0 + 30, Y0 - 50, 10, 10)
    assert grid_fit(from_origin(X0, Y0, 10, 10), dst) == GridFit(1, 5, 3)
    assert grid_fit(from_origin(X0, Y0, 20, 20), dst) == GridFit(2, 5, 3)
    assert grid_fit(from_origin(X0 + 100, Y0, 60, 60), dst) == GridFit(6, 5, -7)
    assert grid_fit(from_origin(X0 + 5, Y0, 10, 10), dst) is None  # half a pixel off
    assert grid_fit(from_origin(X0, Y0, 15, 15), dst) is None  # not a whole multiple
    assert grid_fit(from_origin(X0, Y0, 5, 5), dst) is None  # finer than the output
    assert grid_fit(Affine(10, 0.5, X0, 0, -10, Y0), dst) is None  # rotated
    assert grid_fit(from_origin(X0, Y0, 20, 10), dst) is None  # different factors per axis


@pytest.mark.parametrize(
    ("col", "row", "width", "height"),
    [
        (0, 0, SRC_PX, SRC_PX),  # exactly the sources' grid
        (3, 5, 31, 27),  # odd shifts: output pixels start halfway into 20 m pixels
        (-7, -4, 60, 57),  # reaching past every edge of the sources
        (40, 44, 20, 20),  # mostly outside
    ],
)
def test_direct_read_equals_odc_stac(tmp_path: Path, col: int, row: int, width: int, height: int) -> None:
    items = [_item(tmp_path, f"it{k}", k) for k in range(3)]
    geobox = _geobox(col, row, width, height)
    cfg = CubeConfig(read_threads=1)
    out = {a: np.empty((len(items), height, width), dtype=S2.dtype) for a in ASSETS}
    rest = read_aligned(
        items, ASSETS, geobox, out, nodata=S2.nodata,
        resampling=lambda a: RESAMPLING.get(a, RESAMPLING["*"]), on_error=lambda i, a, e: e,
    )  # fmt: skip
    assert rest == []  # every item lies on the output grid
    warped = read_items(items, geobox, S2, cfg, direct=False)
    for asset in ASSETS:
        direct, gdal = out[asset].astype(np.int64), warped[asset].astype(np.int64)
        np.testing.assert_array_equal(direct == 0, gdal == 0, err_msg=f"{asset}: nodata pixels differ")
        if asset == "SCL" or asset in ("B02", "B03", "B04", "B08"):
            np.testing.assert_array_equal(direct, gdal, err_msg=asset)  # nearest, or a pure shift: exact
        else:  # bilinear from 20 m: GDAL's arithmetic, at most a rounding step apart
            assert np.abs(direct - gdal).max() <= 1, asset
            assert (direct != gdal).mean() < 0.01, asset
    threaded = read_items(items, geobox, S2, CubeConfig(read_threads=2))
    for asset in ASSETS:
        np.testing.assert_array_equal(threaded[asset], out[asset], err_msg=f"{asset}: threads changed pixels")


def test_unaligned_grids_and_other_zones_go_to_odc_stac(tmp_path: Path) -> None:
    items = [_item(tmp_path, "here", 0), _item(tmp_path, "zone33", 1, epsg=32633)]
    cfg = CubeConfig(read_threads=1)
    aligned = _geobox(2, 2, 24, 24)
    half_off = GeoBox((24, 24), aligned.transform * Affine.translation(0.5, 0), aligned.crs)
    assert _direct(items, aligned) == [1]
    assert _direct(items, half_off) == [0, 1]
    assert _direct(items, aligned, mode="cubic") == [0, 1]  # a resampling the direct read does not reproduce
    # the loader mixes both paths and returns what odc-stac alone returns
    for geobox in (aligned, half_off):
        mixed = read_items(items, geobox, S2, cfg)
        warped = read_items(items, geobox, S2, cfg, direct=False)
        assert (warped["B02"][1] != 0).mean() > 0.5  # the other zone's item does cover the output
        for asset in ASSETS:
            assert np.abs(mixed[asset].astype(np.int64) - warped[asset].astype(np.int64)).max() <= 1, asset


def test_unreadable_asset_is_raised_through_on_error(tmp_path: Path) -> None:
    item = _item(tmp_path, "broken", 0)
    Path(item.assets["B05"].href).write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    out = {a: np.empty((1, 8, 8), dtype=S2.dtype) for a in ASSETS}

    class Named(Exception):
        pass

    with pytest.raises(Named, match="broken B05"):
        read_aligned(
            [item], ASSETS, _geobox(0, 0, 8, 8), out, nodata=0, resampling=lambda a: "bilinear",
            on_error=lambda it, asset, err: Named(f"{it.id} {asset}"),
        )  # fmt: skip
