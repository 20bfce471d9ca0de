"""A STAC Collection and Items that describe an embedding store, so catalogs and tools can find it.

One Item per UTM-zone group of the store (its asset is the Zarr group), in one Collection with the
STAC embeddings extension fields (``emb:``), the projection extension and the planned time range::

    collection = store_collection("gs://bucket/emb.zarr", storage_options=...)
    write_store_stac("gs://bucket/emb.zarr")    # -> gs://bucket/emb.zarr/stac/collection.json (+ items)

Written with pystac; hrefs inside the catalog are relative, so the store can be moved with its catalog.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pystac
from pystac.extensions.projection import SCHEMA_URI, ProjectionExtension

from embedder.grid import EPOCH, PIXEL_M, lonlat_bbox
from embedder.store import Store, ZoneExtent, as_store, units_of, url_to_fs, zone_attrs

__all__ = ["EMB_EXTENSION", "PROJ_EXTENSION", "store_collection", "write_store_stac"]

EMB_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
"""Schema URL of the STAC embeddings extension (``emb:`` fields)."""
PROJ_EXTENSION = SCHEMA_URI
"""Schema URL of the STAC projection extension (``proj:`` fields)."""
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def _emb_fields(st: Store) -> dict[str, Any]:
    a = st.attrs
    return {
        "emb:type": "pixel",
        "emb:dimensions": a["emb:dimensions"],
        "emb:data_type": a["emb:data_type"],
        "emb:quantization": a["emb:quantization"],
        "emb:model": a["emb:model"],
        "emb:spatial_resolution": PIXEL_M,
        "emb:temporal_resolution": a["emb:temporal_resolution"],
        "emb:chip_layout": {"layout_type": "regular_grid", "tile_px": st.cfg.tile_px},
        "embedder:fingerprint": a["embedder:fingerprint"],
    }


def store_collection(
    url: str, *, storage_options: dict[str, Any] | None = None, collection_id: str = "embedder-embeddings"
) -> pystac.Collection:
    """Build (do not write) the Collection with one Item per zone group of the store at ``url``."""
    st = as_store(url, storage_options)
    units = units_of(st)
    if units:
        start = min(u.period.start for u in units)
        end = max(u.period.end for u in units)
    else:
        start = end = EPOCH
    t0 = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    t1 = dt.datetime.combine(end, dt.time(23, 59, 59), tzinfo=dt.UTC)
    emb = _emb_fields(st)
    items = []
    for zone in st.attrs["embedder:zones"]:
        zat = zone_attrs(st, zone)
        z = ZoneExtent.from_attrs(zone, zat)
        a, _, c, _, e, f = zat["spatial:transform"]
        ny, nx = zat["spatial:shape"]
        bounds = (c, f + e * ny, c + a * nx, f)
        bbox = lonlat_bbox(z.epsg, bounds)
        x0, y0, x1, y1 = bbox
        item = pystac.Item(
            id=f"{collection_id}-{zone}",
            geometry={"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            bbox=bbox,
            datetime=None,
            start_datetime=t0,
            end_datetime=t1,
            properties=dict(emb),
            stac_extensions=[EMB_EXTENSION],
            collection=collection_id,
        )
        proj = ProjectionExtension.ext(item, add_if_missing=True)  # lists PROJ_EXTENSION after EMB_EXTENSION
        proj.code = f"EPSG:{z.epsg}"
        proj.shape = [ny, nx]
        proj.transform = [a, 0.0, c, 0.0, e, f]
        proj.bbox = list(bounds)
        item.add_asset(
            "embeddings",
            pystac.Asset(
                href=f"{url.rstrip('/')}/{zone}",
                media_type=ZARR_MEDIA_TYPE,
                roles=["data", "embeddings"],
                title=f"Per-date 7-d embeddings, {zone} (Zarr v3 group)",
                extra_fields={
                    "xarray:open_kwargs": {
                        "engine": "zarr",
                        "group": zone,
                        "consolidated": False,
                        "zarr_format": 3,
                    },
                    "variables": ["embedding", "flags", "valid_px"],
                },
            ),
        )
        items.append(item)
    boxes = [i.bbox for i in items if i.bbox is not None]
    union = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    coll = pystac.Collection(
        id=collection_id,
        title="Per-date Sentinel-1 + Sentinel-2 embeddings (7-d, 10 m)",
        description=(
            "One 7-dimensional embedding per 10 m pixel per cloud-free Sentinel-2 acquisition date, from a "
            "15 x 15 px x 11 date context of Sentinel-2 and Sentinel-1 (Peters et al. 2025, arXiv 2511.11706). "
            "Stored as a Zarr v3 hierarchy, one group per UTM zone; see docs/store.md."
        ),
        extent=pystac.Extent(
            spatial=pystac.SpatialExtent([union, *boxes]), temporal=pystac.TemporalExtent([[t0, t1]])
        ),
        license="CC-BY-4.0",
        stac_extensions=[EMB_EXTENSION, PROJ_EXTENSION],
        keywords=["embeddings", "sentinel-1", "sentinel-2", "representation learning"],
        extra_fields={**emb, "data_type": st.attrs["emb:data_type"]},
    )
    coll.add_asset(
        "store",
        pystac.Asset(href=url, media_type=ZARR_MEDIA_TYPE, roles=["data"], title="The whole store (Zarr v3)"),
    )
    coll.add_items(items)
    return coll


class _FsspecStacIO(pystac.StacIO):
    """pystac IO through fsspec, so catalogs can be written next to stores on any URL."""

    def __init__(self, storage_options: dict[str, Any] | None) -> None:
        super().__init__()
        self.storage_options = storage_options or {}

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        fs, path = url_to_fs(str(source), self.storage_options)
        return bytes(fs.cat_file(path)).decode()

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        fs, path = url_to_fs(str(dest), self.storage_options)
        if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, txt.encode())


def write_store_stac(
    url: str,
    dest: str | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    collection_id: str = "embedder-embeddings",
) -> str:
    """Write the Collection (``collection.json``) and its Items under ``dest`` (default ``<url>/stac``).

    Self-contained catalog with relative hrefs (also to the Zarr groups); works on any fsspec URL.
    Returns the collection's URL.
    """
    coll = store_collection(url, storage_options=storage_options, collection_id=collection_id)
    dest = (dest or f"{url.rstrip('/')}/stac").rstrip("/")
    coll.normalize_hrefs(dest)
    coll.make_all_asset_hrefs_relative()
    coll.save(catalog_type=pystac.CatalogType.SELF_CONTAINED, stac_io=_FsspecStacIO(storage_options))
    return f"{dest}/collection.json"
