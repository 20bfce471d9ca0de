"""The manifest of a written sample region (``region.json``): the part production code reads.

A sample region (written by :func:`embedder.sample.write_sample_region`) is described by its manifest.

``region.json``: ``catalog`` and ``classes`` (paths relative to the folder), ``period`` (``start``,
``end``), ``collections``, ``external_veg_drivers`` (scene names), ``config`` (``to_dict`` of the
:class:`~embedder.config.SampleRegionConfig`) and ``scenes``: one entry per scene with ``name``, ``epsg``,
``crs``, ``size_px``, ``transform`` (GDAL 6-tuple of the 10 m grid), ``bounds_utm``, ``bbox_lonlat``,
``mgrs_tile``, ``landcover`` and ``truth`` (relative paths), ``n_s2`` and ``n_s1``. Read it with
:func:`read_region_manifest`.

``truth/<scene>/truth.npz`` layout (``np.load``; T = S2 dates of the scene, H = W = ``size_px``):

=====================  =================  ====================================================================
key                    shape, dtype       meaning
=====================  =================  ====================================================================
``dates``              [T] datetime64[D]  S2 acquisition days (UTC), same order as the S2 Items
``veg_state``          [T, H, W] float32  vegetation state (green cover fraction, 0..1) on each S2 date
``clear``              [T, H, W] bool     pixel is data and untouched by cloud, cirrus or shadow
``landcover``          [H, W] uint8       class codes (also ``landcover.tif``)
``parcel_id``          [H, W] int32       agricultural parcel of each pixel (-1 outside parcels)
``soil_days``          [D] datetime64[D]  every day of the period
``soil_moisture``      [D] float32        scene soil moisture (relative saturation 0..1) per day
``soil_wetness``       [H, W] float32     static per-pixel factor on ``soil_moisture``
``bands``              [10] str           band order of ``reflectance`` (``sensors.S2.bands``)
``reflectance``        [T, 10, H, W] f4   clear-sky L2A surface reflectance as written (before clouds,
                                          no data and DN rounding; 20 m bands at 10 m, written as
                                          2 x 2 means), only with ``cfg.truth_reflectance``
=====================  =================  ====================================================================
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from embedder.config import ConfigError, SampleRegionConfig, from_dict, to_dict
from embedder.geo import parse_date
from embedder.sensors import S1, S2

__all__ = [
    "MANIFEST_NAME",
    "SampleRegion",
    "SampleRegionError",
    "SceneInfo",
    "read_region_manifest",
    "write_region_manifest",
]

MANIFEST_NAME = "region.json"
"""File name of the region manifest inside the output folder."""


class SampleRegionError(ValueError):
    """The sample region cannot be written or read as asked."""


@dataclass(frozen=True)
class SceneInfo:
    """Where one scene of a written sample region lies, and where its truth is."""

    name: str
    """Scene id (``SceneSpec.name``)."""
    epsg: int
    """UTM EPSG code of the scene grid."""
    size_px: int
    """Width and height in 10 m pixels."""
    transform: tuple[float, float, float, float, float, float]
    """GDAL-style affine of the 10 m grid: ``(10, 0, x_left, 0, -10, y_top)``, metres."""
    bounds_utm: tuple[float, float, float, float]
    """``(x_min, y_min, x_max, y_max)`` in metres of the scene CRS."""
    bbox_lonlat: tuple[float, float, float, float]
    """``(lon_min, lat_min, lon_max, lat_max)``, degrees."""
    mgrs_tile: str
    """MGRS 100 km square of the scene centre (``s2:mgrs_tile``)."""
    landcover_path: Path
    """``truth/<scene>/landcover.tif``."""
    truth_path: Path
    """``truth/<scene>/truth.npz`` (layout in the module docstring)."""
    n_s2: int
    """Number of S2 Items of the scene."""
    n_s1: int
    """Number of S1 Items of the scene."""

    @property
    def crs(self) -> str:
        """``"EPSG:<code>"``."""
        return f"EPSG:{self.epsg}"


@dataclass(frozen=True)
class SampleRegion:
    """A written sample region: its catalog, scenes and ground truth."""

    root: Path
    """The output folder."""
    catalog_path: Path
    """``catalog.json`` of the static STAC catalog."""
    classes_path: Path
    """``truth/classes.json``."""
    manifest_path: Path
    """``region.json``."""
    start: dt.date
    """First day of the period."""
    end: dt.date
    """Last day of the period."""
    scenes: tuple[SceneInfo, ...]
    """The scenes, in config order."""
    cfg: SampleRegionConfig
    """The config the region was written with."""

    def scene(self, name: str) -> SceneInfo:
        """The scene called ``name``; ``KeyError`` listing the scene names otherwise."""
        for s in self.scenes:
            if s.name == name:
                return s
        raise KeyError(f"no scene {name!r} in {self.root}; scenes are {[s.name for s in self.scenes]}")


def read_region_manifest(out_dir: str | Path) -> SampleRegion:
    """Read ``region.json`` of a sample region written by :func:`write_sample_region`."""
    root = Path(out_dir)
    path = root / MANIFEST_NAME if root.is_dir() or not root.name.endswith(".json") else root
    root = path.parent
    if not path.is_file():
        raise SampleRegionError(
            f"no {MANIFEST_NAME} at {str(path)!r}; write a region first (embedder sample-region {root})"
        )
    doc = json.loads(path.read_text())
    try:
        cfg = from_dict(SampleRegionConfig, doc["config"], where=f"{path}:config")
        scenes = tuple(
            SceneInfo(
                name=s["name"],
                epsg=int(s["epsg"]),
                size_px=int(s["size_px"]),
                transform=tuple(float(v) for v in s["transform"]),  # type: ignore[arg-type]
                bounds_utm=tuple(float(v) for v in s["bounds_utm"]),  # type: ignore[arg-type]
                bbox_lonlat=tuple(float(v) for v in s["bbox_lonlat"]),  # type: ignore[arg-type]
                mgrs_tile=s["mgrs_tile"],
                landcover_path=root / s["landcover"],
                truth_path=root / s["truth"],
                n_s2=int(s["n_s2"]),
                n_s1=int(s["n_s1"]),
            )
            for s in doc["scenes"]
        )
        return SampleRegion(
            root=root,
            catalog_path=root / doc["catalog"],
            classes_path=root / doc["classes"],
            manifest_path=path,
            start=parse_date(doc["period"]["start"], name="period.start"),
            end=parse_date(doc["period"]["end"], name="period.end"),
            scenes=scenes,
            cfg=cfg,
        )
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise SampleRegionError(
            f"{str(path)!r} is not a valid sample-region manifest ({err}); rewrite the region"
        ) from err


def write_region_manifest(region: SampleRegion, *, drivers: list[str]) -> None:
    """Write ``region.json`` of ``region`` (read back by :func:`read_region_manifest`)."""
    root = region.root

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    doc = {
        "kind": "embedder-sample-region",
        "version": 1,
        "catalog": rel(region.catalog_path),
        "classes": rel(region.classes_path),
        "period": {"start": region.start.isoformat(), "end": region.end.isoformat()},
        "collections": {"s2": S2.collection, "s1": S1.collection},
        "external_veg_drivers": drivers,
        "scenes": [
            {
                "name": s.name,
                "epsg": s.epsg,
                "crs": s.crs,
                "size_px": s.size_px,
                "transform": list(s.transform),
                "bounds_utm": list(s.bounds_utm),
                "bbox_lonlat": list(s.bbox_lonlat),
                "mgrs_tile": s.mgrs_tile,
                "landcover": rel(s.landcover_path),
                "truth": rel(s.truth_path),
                "n_s2": s.n_s2,
                "n_s1": s.n_s1,
            }
            for s in region.scenes
        ],
        "config": to_dict(region.cfg),
    }
    region.manifest_path.write_text(json.dumps(doc, indent=1) + "\n")
