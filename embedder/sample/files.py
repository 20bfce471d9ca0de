"""File output of the sample region: COGs, the truth ``.npz`` and the static STAC catalog."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine

from embedder.config import SampleRegionConfig
from embedder.sensors import S1, S2

__all__ = [
    "COG_TYPE",
    "EO_EXT",
    "PROJ_EXT",
    "RASTER_EXT",
    "SAR_EXT",
    "SAT_EXT",
    "save_npz",
    "scl_to_20m",
    "write_catalog",
    "write_cog",
]

PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EO_EXT = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
SAT_EXT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
SAR_EXT = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_ITEM_ASSETS_EXT = "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def scl_to_20m(scl: np.ndarray) -> np.ndarray:
    """SCL [H, W] -> [H/2, W/2]: each 20 m pixel takes its most severe 10 m class (no data > cloud > ...)."""
    rank = np.zeros(256, np.int16)
    for r, cls in enumerate((5, 4, 6, 7, 11, 2, 3, 10, 8, 9, 1, 0)):  # low -> high precedence
        rank[cls] = r + 1
    h, w = scl.shape
    blocks = scl.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(h // 2, w // 2, 4)
    pick = np.take_along_axis(blocks, rank[blocks].argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return pick.astype(np.uint8)


def write_cog(path: Path, data: np.ndarray, *, crs: str, transform: Affine, nodata: float) -> None:
    """Write one single-band Cloud-Optimised GeoTIFF (GDAL COG driver, deflate)."""
    h, w = data.shape
    predictor = 3 if data.dtype.kind == "f" else 2
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
        compress="DEFLATE",
        predictor=predictor,
        blocksize=256 if max(h, w) > 256 else 512,
    ) as dst:
        dst.write(data, 1)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so the same arrays give identical bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def _item_assets_s2() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for band, key, res in zip(S2.bands, S2.assets, S2.native_res_m, strict=True):
        out[key] = {
            "gsd": res,
            "type": COG_TYPE,
            "roles": ["data"],
            "title": f"Band {band}",
            "raster:bands": [{"nodata": S2.nodata, "data_type": S2.dtype}],
            "eo:bands": [{"name": band}],
        }
    if S2.mask_asset:
        out[S2.mask_asset] = {
            "gsd": 20,
            "type": COG_TYPE,
            "roles": ["data"],
            "title": "Scene classfication map (SCL)",
            "raster:bands": [{"nodata": 0, "data_type": "uint8"}],
        }
    return out


def _item_assets_s1() -> dict[str, Any]:
    return {
        key: {
            "type": COG_TYPE,
            "roles": ["data"],
            "title": f"{band}",
            "raster:bands": [{"nodata": S1.nodata, "data_type": S1.dtype, "spatial_resolution": 10.0}],
        }
        for band, key in zip(S1.bands, S1.assets, strict=True)
    }


def write_catalog(
    root: Path, cfg: SampleRegionConfig, s2_items: list[pystac.Item], s1_items: list[pystac.Item]
) -> Path:
    """Write the static STAC catalog (one collection per sensor with items) under ``root``; its path."""
    catalog = pystac.Catalog(
        id="embedder-sample-region",
        description="Synthetic Sentinel-1 RTC + Sentinel-2 L2A sample region (embedder.sample); not real data.",
        title="embedder sample region",
    )
    for collection_id, items, item_assets, title in (
        (S2.collection, s2_items, _item_assets_s2(), "Sentinel-2 Level-2A (synthetic)"),
        (
            S1.collection,
            s1_items,
            _item_assets_s1(),
            "Sentinel 1 Radiometrically Terrain Corrected (synthetic)",
        ),
    ):
        if not items:
            continue
        bboxes = np.array([it.bbox for it in items])
        extent = pystac.Extent(
            pystac.SpatialExtent(
                [[*bboxes[:, :2].min(axis=0).tolist(), *bboxes[:, 2:].max(axis=0).tolist()]]
            ),
            pystac.TemporalExtent([[min(it.datetime for it in items), max(it.datetime for it in items)]]),  # type: ignore[type-var]
        )
        coll = pystac.Collection(
            id=collection_id,
            description=f"{title} written by embedder.sample with seed {cfg.seed}.",
            extent=extent,
            title=title,
            license="proprietary",
            stac_extensions=[_ITEM_ASSETS_EXT, RASTER_EXT, EO_EXT],
        )
        coll.extra_fields["item_assets"] = item_assets
        coll.add_items(items)
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(root.resolve()))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"
