"""The store's STAC Collection + Items: emb: fields, one Item per zone, assets that open with xarray."""

from __future__ import annotations

import pystac
import shapely
import xarray as xr
from shapely.geometry import shape

from embedder.config import StoreConfig
from embedder.grid import Period, Tile, WorkUnit
from embedder.stac_store import EMB_EXTENSION, store_collection, write_store_stac
from embedder.store import create_store

CFG = StoreConfig(tile_px=64, chunk_px=32)


def test_collection_and_items_describe_the_store(tmp_path):
    units = [
        WorkUnit(tile=Tile(zone=32, south=False, col=82, row=1016, size_px=64), period=Period(index=6)),
        WorkUnit(tile=Tile(zone=33, south=False, col=10, row=1000, size_px=64), period=Period(index=7)),
    ]
    url = str(tmp_path / "emb.zarr")
    create_store(url, units=units, model_version="m1", cfg=CFG)
    coll = store_collection(url)
    assert coll.extra_fields["emb:dimensions"] == 7 and coll.extra_fields["emb:type"] == "pixel"
    assert EMB_EXTENSION in coll.stac_extensions
    href = write_store_stac(url)
    back = pystac.Collection.from_file(href)
    items = {i.id: i for i in back.get_items()}
    assert set(items) == {"embedder-embeddings-utm32N", "embedder-embeddings-utm33N"}
    assert str(back.extent.temporal.intervals[0][0].date()) == str(units[0].period.start)
    assert str(back.extent.temporal.intervals[0][1].date()) == str(units[1].period.end)
    for u in units:
        item = items[f"embedder-embeddings-{u.tile.zone_name}"]
        assert item.properties["proj:code"] == u.tile.crs
        assert item.properties["emb:quantization"]["scale"] == CFG.quant_step
        assert shape(item.geometry).contains(shapely.centroid(u.tile.footprint()))
        asset = item.assets["embeddings"]
        ds = xr.open_zarr(asset.get_absolute_href().rsplit("/", 1)[0], **{
            k: v for k, v in asset.extra_fields["xarray:open_kwargs"].items() if k != "engine"})  # fmt: skip
        assert "embedding" in ds and ds["embedding"].sizes["feature"] == 7
