"""The sample region: a synthetic, physically plausible S1 + S2 catalog (the project's embedded default).

:func:`write_sample_region` writes, under one folder::

    catalog.json                                   static STAC catalog (relative hrefs: the folder can move)
    sentinel-2-l2a/collection.json                 PC-like collection with ``item_assets``
    sentinel-2-l2a/<item id>/<item id>.json        one Item per scene per acquisition
    sentinel-2-l2a/<item id>/B02.tif ... SCL.tif   COGs: uint16 DN (SCL uint8), nodata 0, 20 m bands at 20 m
    sentinel-1-rtc/collection.json
    sentinel-1-rtc/<item id>/{vv,vh}.tif           COGs: float32 linear gamma0, nodata -32768, 10 m
    truth/classes.json                             land-cover classes: code, name, description, colour
    truth/<scene>/landcover.tif                    uint8 class codes on the scene's 10 m grid (COG)
    truth/<scene>/truth.npz                        per-date vegetation state etc. (layout below)
    region.json                                    the manifest: scenes, grids, bboxes, period, config

The Items look like Planetary Computer's (collection ids, asset keys, ``s2:processing_baseline`` with the
+1000 DN offset from 04.00 on, ``sat:*``, ``sar:*``, ``proj:code``/``proj:epsg``, asset ``proj:shape`` and
``proj:transform``); band names, asset keys, dtypes, nodata and the DN scaling all come from
:mod:`embedder.sensors`.

The physics, per scene (all seeded from ``cfg.seed``; the same config writes byte-identical files):

* **Land cover** (:data:`CLASSES`): agricultural parcels from recursive splits (grassland, winter and
  summer crops), forest blobs (needleleaf/broadleaf), an urban blob and a river.
* **Vegetation state** ``v`` in [0, 1] (green cover) per pixel and day: double-logistic phenology for
  forests, grassland with mowing, crops with per-parcel sowing and harvest dates; per-pixel amplitude
  noise; a scene-wide calendar shift. An external daily series (e.g. tower fAPAR) can drive the natural
  classes through ``veg_drivers``.
* **Soil moisture**: a daily bucket series per scene (seasonal mean plus rain pulses) times a static
  per-pixel wetness factor.
* **S2 reflectance**: linear mixture ``v * green + (1 - v) * background`` (soil darkened by moisture,
  litter, water with rain turbidity, urban), residual atmosphere and noise; clouds (SCL 8/9), thin
  cirrus (SCL 10), cloud shadows (SCL 3) displaced away from the sun by the cloud height, fully cloudy
  dates, slanted swath-edge no data (DN 0, SCL 0).
* **S1 RTC**: a water-cloud model (vegetation volume + attenuated soil term driven by soil moisture),
  double bounce over urban, wind-roughened water, incidence angle per orbit direction, gamma speckle.

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

import argparse
import dataclasses
import datetime as dt
import json
import math
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from affine import Affine
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import Polygon, box, mapping
from shapely.ops import transform as shapely_transform

from embedder.config import ConfigError, SampleRegionConfig, SceneSpec, from_dict, load_config, to_dict
from embedder.sensors import S1, S2

__all__ = [
    "CLASSES",
    "LandCoverClass",
    "SampleRegion",
    "SampleRegionError",
    "SceneInfo",
    "VegDriver",
    "cli_main",
    "default_scenes",
    "read_region_manifest",
    "series_driver",
    "write_sample_region",
]

MANIFEST_NAME = "region.json"
"""File name of the region manifest inside the output folder."""

VegDriver = Callable[[np.ndarray], np.ndarray]
"""An external vegetation driver: S2 days (``datetime64[D]``, shape [T]) -> state in [0, 1], shape [T]."""


class SampleRegionError(ValueError):
    """The sample region cannot be written or read as asked."""


@dataclass(frozen=True)
class LandCoverClass:
    """One land-cover class of the sample region."""

    code: int
    """Value in ``landcover.tif`` (0 is nodata)."""
    name: str
    """Short id."""
    description: str
    """What the class looks like in the data."""
    colour: str
    """Hex colour for maps."""


CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass(1, "needleleaf_forest", "evergreen conifers: dark, small seasonal cycle", "#1b5e20"),
    LandCoverClass(2, "broadleaf_forest", "deciduous trees: leaf-out in April, leaf fall in October", "#66bb6a"),
    LandCoverClass(3, "grassland", "meadows: green from March, mown two to three times a year", "#c5e1a5"),
    LandCoverClass(4, "winter_crop", "winter cereal: sown in October, peak in May, harvest in July", "#fbc02d"),
    LandCoverClass(5, "summer_crop", "maize-like: sown late April, peak in August, harvest late September", "#ff8f00"),
    LandCoverClass(6, "water", "river: dark, turbid after rain, wind-roughened in S1", "#1565c0"),
    LandCoverClass(7, "urban", "buildings and roads: bright, double bounce in S1", "#9e9e9e"),
)  # fmt: skip
"""The land-cover classes, by code."""

_C = {c.name: c.code for c in CLASSES}

# Synthetic end-member spectra (surface reflectance) per S2 band name; typical values of green
# vegetation, needles, dry litter, bare dry soil, clear water, built-up and cloud tops. Keyed by band
# name so they follow embedder.sensors.S2.bands whatever its order.
_SPECTRA: dict[str, dict[str, float]] = {
    "green": {"B02": 0.030, "B03": 0.070, "B04": 0.032, "B05": 0.100, "B06": 0.280, "B07": 0.380,
              "B08": 0.420, "B8A": 0.440, "B11": 0.200, "B12": 0.090},
    "needle": {"B02": 0.020, "B03": 0.045, "B04": 0.020, "B05": 0.070, "B06": 0.180, "B07": 0.230,
               "B08": 0.250, "B8A": 0.270, "B11": 0.120, "B12": 0.050},
    "litter": {"B02": 0.070, "B03": 0.100, "B04": 0.130, "B05": 0.170, "B06": 0.210, "B07": 0.240,
               "B08": 0.260, "B8A": 0.280, "B11": 0.340, "B12": 0.240},
    "soil": {"B02": 0.090, "B03": 0.130, "B04": 0.170, "B05": 0.200, "B06": 0.220, "B07": 0.235,
             "B08": 0.250, "B8A": 0.270, "B11": 0.360, "B12": 0.300},
    "water": {"B02": 0.060, "B03": 0.060, "B04": 0.040, "B05": 0.030, "B06": 0.020, "B07": 0.015,
              "B08": 0.012, "B8A": 0.010, "B11": 0.005, "B12": 0.003},
    "urban": {"B02": 0.100, "B03": 0.120, "B04": 0.130, "B05": 0.150, "B06": 0.170, "B07": 0.180,
              "B08": 0.200, "B8A": 0.210, "B11": 0.240, "B12": 0.210},
    "cloud": {"B02": 0.450, "B03": 0.450, "B04": 0.460, "B05": 0.470, "B06": 0.480, "B07": 0.480,
              "B08": 0.490, "B8A": 0.490, "B11": 0.380, "B12": 0.280},
    # Soil darkening per unit moisture (stronger in the SWIR water absorption bands).
    "wet_darkening": {"B02": 0.40, "B03": 0.40, "B04": 0.40, "B05": 0.42, "B06": 0.44, "B07": 0.45,
                      "B08": 0.45, "B8A": 0.46, "B11": 0.60, "B12": 0.65},
    # Suspended sediment in water, relative by band (peaks in the red, absorbed by water in the SWIR).
    "sediment": {"B02": 0.50, "B03": 0.80, "B04": 1.00, "B05": 0.90, "B06": 0.40, "B07": 0.30,
                 "B08": 0.25, "B8A": 0.20, "B11": 0.02, "B12": 0.01},
    # Residual haze after atmospheric correction, relative by band (Rayleigh/aerosol ~ wavelength^-k).
    "haze": {"B02": 1.00, "B03": 0.70, "B04": 0.50, "B05": 0.40, "B06": 0.32, "B07": 0.28, "B08": 0.25,
             "B8A": 0.23, "B11": 0.08, "B12": 0.05},
}  # fmt: skip

# Processing baselines in force (ESA L2A history) as (first day, baseline); DN offset follows sensors.S2.
_BASELINES: tuple[tuple[dt.date, str], ...] = (
    (dt.date(1900, 1, 1), "02.12"),
    (dt.date(2021, 3, 30), "03.00"),
    (dt.date(2021, 6, 30), "03.01"),
    (dt.date(2022, 1, 25), "04.00"),
    (dt.date(2022, 12, 6), "05.09"),
    (dt.date(2024, 2, 6), "05.10"),
)
_UTC = dt.UTC
_PROJ_EXT = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_EO_EXT = "https://stac-extensions.github.io/eo/v1.0.0/schema.json"
_SAT_EXT = "https://stac-extensions.github.io/sat/v1.0.0/schema.json"
_SAR_EXT = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
_RASTER_EXT = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_ITEM_ASSETS_EXT = "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json"
_COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"

# Scenes added by default_scenes(n) beyond the first two: plausible European spots in several zones.
_EXTRA_SITES: tuple[tuple[str, float, float], ...] = (
    ("loire_valley", 0.6, 47.4),
    ("danube_plain", 16.6, 48.3),
    ("silesia", 18.5, 50.2),
    ("po_valley", 10.6, 45.1),
    ("wallonia", 4.6, 50.5),
    ("bohemia", 15.4, 49.8),
    ("castile", -4.5, 41.7),
    ("wielkopolska", 17.0, 52.3),
)


# --------------------------------------------------------------------------------------------- public API


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


def default_scenes(n: int) -> tuple[SceneSpec, ...]:
    """The default two scenes (EPSG 32632 and 32633), plus ``n - 2`` more European scenes in other zones."""
    if n < 1:
        raise SampleRegionError(f"number of scenes {n} must be at least 1")
    base = SampleRegionConfig().scenes
    extra: list[SceneSpec] = []
    for i, (name, lon, lat) in enumerate(_EXTRA_SITES * (1 + n // len(_EXTRA_SITES))):
        if len(base) + len(extra) >= n:
            break
        zone = int((lon + 180) // 6) + 1
        suffix = "" if i < len(_EXTRA_SITES) else f"_{i // len(_EXTRA_SITES)}"
        lat_i = lat + 0.2 * (i // len(_EXTRA_SITES))
        extra.append(
            SceneSpec(
                name=f"{name}{suffix}",
                epsg=32600 + zone,
                lon=lon,
                lat=lat_i,
                s2_relative_orbit=1 + (37 * (i + 3)) % 143,
                s1_relative_orbits=(1 + (29 * i) % 175, 1 + (53 * i + 11) % 175),
                phenology_shift_days=(lat_i - 47.0) * 3.0,
            )
        )
    return (base + tuple(extra))[:n]


def series_driver(days: np.ndarray, values: np.ndarray) -> VegDriver:
    """A :data:`VegDriver` from a daily series (e.g. tower fAPAR): linear in time, clipped to [0, 1].

    ``days`` are ``datetime64`` (any unit, sorted), ``values`` the series, both shape [D]; NaNs are
    dropped. Asking the driver for a day outside the series raises :class:`SampleRegionError`.
    """
    d = np.asarray(days, dtype="datetime64[D]").astype(np.int64)
    v = np.asarray(values, dtype=np.float64)
    if d.shape != v.shape or d.ndim != 1:
        raise SampleRegionError(
            f"series_driver: days {d.shape} and values {v.shape} must be 1-d of one length"
        )
    keep = np.isfinite(v)
    d, v = d[keep], v[keep]
    if d.size < 2 or np.any(np.diff(d) <= 0):
        raise SampleRegionError("series_driver needs at least two finite values on strictly increasing days")

    def driver(when: np.ndarray) -> np.ndarray:
        t = np.asarray(when, dtype="datetime64[D]").astype(np.int64)
        if t.size and (t.min() < d[0] or t.max() > d[-1]):
            span = f"{np.datetime64(int(d[0]), 'D')}..{np.datetime64(int(d[-1]), 'D')}"
            raise SampleRegionError(
                f"vegetation series covers {span} but the region needs {np.datetime64(int(t.min()), 'D')}.."
                f"{np.datetime64(int(t.max()), 'D')}; give a longer series or a shorter period"
            )
        return np.clip(np.interp(t, d, v), 0.0, 1.0)

    return driver


def write_sample_region(
    out_dir: str | Path,
    *,
    cfg: SampleRegionConfig | None = None,
    veg_drivers: Mapping[str, VegDriver] | None = None,
    progress: bool = False,
) -> SampleRegion:
    """Write the sample region (COGs, static STAC catalog, truth, ``region.json``) into ``out_dir``.

    ``cfg`` defaults to :meth:`SampleRegionConfig.small`. ``veg_drivers`` maps a scene name to a
    :data:`VegDriver` (see :func:`series_driver` for a daily series such as real tower fAPAR). It replaces
    the seasonal shape (0 dormant .. 1 peak) of the scene's natural classes, which each map it to their
    own range of vegetation state (needleleaf 0.62-0.82, broadleaf 0.12-0.92, grassland 0.25-0.85 before
    mowing, urban greenery 0.06-0.14); crops keep their sowing/harvest calendar. It is called with the
    S2 days and with the S1 days of the scene. ``out_dir`` must be empty or not exist.
    """
    cfg = SampleRegionConfig() if cfg is None else cfg
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise SampleRegionError(f"output path {str(root)!r} is a file; pass a new or empty folder")
    if root.exists() and any(root.iterdir()):
        raise SampleRegionError(f"output folder {str(root)!r} is not empty; pass a new or empty folder")
    drivers = dict(veg_drivers or {})
    unknown = sorted(set(drivers) - {s.name for s in cfg.scenes})
    if unknown:
        raise SampleRegionError(
            f"veg_drivers names unknown scene(s) {unknown}; scenes are {[s.name for s in cfg.scenes]}"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "truth").mkdir()
    classes_path = root / "truth" / "classes.json"
    classes_path.write_text(json.dumps([dataclasses.asdict(c) for c in CLASSES], indent=1) + "\n")

    scenes_info: list[SceneInfo] = []
    s2_items: list[pystac.Item] = []
    s1_items: list[pystac.Item] = []
    total = sum(len(_s2_days(cfg)) + len(_s1_acquisitions(cfg, s)) for s in cfg.scenes)
    with _progress(total, progress) as tick:
        for index, spec in enumerate(cfg.scenes):
            scene = _Scene(cfg, spec, index, driver=drivers.get(spec.name))
            items2 = scene.write_s2(root, tick)
            items1 = scene.write_s1(root, tick)
            info = scene.write_truth(root, n_s2=len(items2), n_s1=len(items1))
            s2_items += items2
            s1_items += items1
            scenes_info.append(info)

    catalog_path = _write_catalog(root, cfg, s2_items, s1_items)
    region = SampleRegion(
        root=root,
        catalog_path=catalog_path,
        classes_path=classes_path,
        manifest_path=root / MANIFEST_NAME,
        start=cfg.start,
        end=cfg.end,
        scenes=tuple(scenes_info),
        cfg=cfg,
    )
    _write_manifest(region, drivers=sorted(drivers))
    return region


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
            start=dt.date.fromisoformat(doc["period"]["start"]),
            end=dt.date.fromisoformat(doc["period"]["end"]),
            scenes=scenes,
            cfg=cfg,
        )
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise SampleRegionError(
            f"{str(path)!r} is not a valid sample-region manifest ({err}); rewrite the region"
        ) from err


# ------------------------------------------------------------------------------------------ date tables


def _s2_days(cfg: SampleRegionConfig) -> list[dt.date]:
    n = (cfg.end - cfg.start).days // cfg.s2_cadence_days + 1
    return [cfg.start + dt.timedelta(days=i * cfg.s2_cadence_days) for i in range(n)]


def _s1_acquisitions(cfg: SampleRegionConfig, spec: SceneSpec) -> list[tuple[dt.date, str, str]]:
    """S1 (day, platform, orbit state) of a scene: S1A every cadence per direction, S1B in between."""
    out = []
    for direction, first in (("ascending", 1 + spec.s2_relative_orbit % 3), ("descending", 4)):
        day = cfg.start + dt.timedelta(days=first % cfg.s1_cadence_days)
        while day <= cfg.end:
            out.append((day, "SENTINEL-1A", direction))
            half = day + dt.timedelta(days=cfg.s1_cadence_days // 2)
            if cfg.s1b_until is not None and half <= min(cfg.s1b_until, cfg.end) and cfg.s1_cadence_days > 1:
                out.append((half, "SENTINEL-1B", direction))
            day += dt.timedelta(days=cfg.s1_cadence_days)
    return sorted(out)


def _baseline(day: dt.date) -> str:
    current = _BASELINES[0][1]
    for first, name in _BASELINES:
        if day >= first:
            current = name
    return current


def _baseline_offset_dn(baseline: str) -> float:
    scaling = S2.s2_scaling
    if scaling is None:  # pragma: no cover - sensors.py always sets it for S2
        raise SampleRegionError("sensors.S2 has no s2_scaling; cannot encode DN")
    return scaling.offset_dn if float(baseline) >= scaling.offset_from_baseline else 0.0


def _solar_geometry(day: dt.date, lat_deg: float, local_hour: float) -> tuple[float, float]:
    """Sun (zenith, azimuth clockwise from north) in degrees at a local solar hour."""
    doy = day.timetuple().tm_yday
    decl = math.radians(23.44) * math.sin(2 * math.pi * (284 + doy) / 365.0)
    lat = math.radians(lat_deg)
    hour_angle = math.radians(15.0 * (local_hour - 12.0))
    cos_zen = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    zen = math.acos(max(-1.0, min(1.0, cos_zen)))
    cos_az = (math.sin(decl) - math.sin(lat) * cos_zen) / (math.cos(lat) * math.sin(zen))
    az = math.degrees(math.acos(max(-1.0, min(1.0, cos_az))))
    if hour_angle > 0:
        az = 360.0 - az
    return math.degrees(zen), az


def _mgrs_tile(lon: float, lat: float, epsg: int, easting: float, northing: float) -> str:
    """MGRS 100 km square id (e.g. ``32TMT``) of a point in its UTM zone."""
    zone = epsg % 100
    bands = "CDEFGHJKLMNPQRSTUVWX"
    band = bands[min(max(int((lat + 80) // 8), 0), len(bands) - 1)]
    col_sets = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
    col = col_sets[(zone - 1) % 3][int(easting // 100_000) - 1]
    rows = "ABCDEFGHJKLMNPQRSTUV"
    row = rows[(int(northing // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{col}{row}"


# ---------------------------------------------------------------------------------------- random fields


def _rng(cfg: SampleRegionConfig, scene_index: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, scene_index, *stream])


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean and unit variance, shape ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_px, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _parcels(rng: np.random.Generator, n: int, field_px: int) -> np.ndarray:
    """Recursive rectangle splits -> [n, n] int32 parcel ids (0..P-1)."""
    out = np.zeros((n, n), np.int32)
    stack = [(0, n, 0, n)]
    next_id = 0
    while stack:
        r0, r1, c0, c1 = stack.pop()
        h, w = r1 - r0, c1 - c0
        if max(h, w) <= 1.5 * field_px or min(h, w) < 4:
            out[r0:r1, c0:c1] = next_id
            next_id += 1
            continue
        frac = rng.uniform(0.35, 0.65)
        if h >= w:
            cut = r0 + max(2, round(h * frac))
            stack += [(r0, cut, c0, c1), (cut, r1, c0, c1)]
        else:
            cut = c0 + max(2, round(w * frac))
            stack += [(r0, r1, c0, cut), (r0, r1, cut, c1)]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _double_logistic(doy: np.ndarray, sos: float, eos: float, k_up: float, k_down: float) -> np.ndarray:
    """Season shape in [0, 1]: rises around day-of-year ``sos``, falls around ``eos``."""
    return np.clip(_sigmoid(k_up * (doy - sos)) - _sigmoid(k_down * (doy - eos)), 0.0, 1.0)


def _band_vector(name: str) -> np.ndarray:
    """End-member ``name`` as a [10] float32 vector in ``sensors.S2.bands`` order."""
    spectrum = _SPECTRA[name]
    missing = [b for b in S2.bands if b not in spectrum]
    if missing:  # pragma: no cover - only if sensors.S2 gains a band this module has no spectrum for
        raise SampleRegionError(
            f"no synthetic {name!r} spectrum for S2 band(s) {missing}; add them to _SPECTRA"
        )
    return np.array([spectrum[b] for b in S2.bands], np.float32)


# ------------------------------------------------------------------------------------------ one scene


@dataclass
class _S2Date:
    day: dt.date
    reflectance: np.ndarray  # [10, H, W] float32, clear-sky L2A as written
    veg: np.ndarray  # [H, W] float32


class _Scene:
    """Everything random about one scene, generated once; then S2/S1 dates are rendered from it."""

    def __init__(
        self, cfg: SampleRegionConfig, spec: SceneSpec, index: int, *, driver: VegDriver | None
    ) -> None:
        self.cfg, self.spec, self.index, self.driver = cfg, spec, index, driver
        n = self.n = cfg.size_px
        # 1. Grid: centre -> UTM, snap the corner to 20 m so the 10 m and 20 m grids share edges (as PC's).
        zone = int((spec.lon + 180) // 6) + 1
        expected = (32600 if spec.lat >= 0 else 32700) + zone
        if spec.epsg != expected:
            raise SampleRegionError(
                f"scene {spec.name!r}: EPSG:{spec.epsg} is not the UTM zone of lon {spec.lon}, lat {spec.lat}; "
                f"use epsg={expected}"
            )
        to_utm = Transformer.from_crs("EPSG:4326", f"EPSG:{spec.epsg}", always_xy=True)
        self.to_lonlat = Transformer.from_crs(f"EPSG:{spec.epsg}", "EPSG:4326", always_xy=True)
        cx, cy = to_utm.transform(spec.lon, spec.lat)
        half_m = n * 10 / 2
        # Snap the scene to the store's tile grid (multiples of the scene size, embedder.grid): a scene is
        # then exactly one tile of its own size, so the demo embeds whole tiles. Always on the 20 m grid.
        step_m = n * 10.0 if (n * 10) % 20 == 0 else 20.0
        self.x0 = float(round((cx - half_m) / step_m) * step_m)
        self.y1 = float(round((cy + half_m) / step_m) * step_m)
        self.bounds = (self.x0, self.y1 - n * 10.0, self.x0 + n * 10.0, self.y1)
        self.transform10 = Affine(10.0, 0.0, self.x0, 0.0, -10.0, self.y1)
        self.transform20 = Affine(20.0, 0.0, self.x0, 0.0, -20.0, self.y1)
        self.mgrs = _mgrs_tile(spec.lon, spec.lat, spec.epsg, cx, cy)
        footprint = shapely_transform(self.to_lonlat.transform, box(*self.bounds).segmentize(n * 10 / 4))
        self.bbox_lonlat = tuple(round(v, 7) for v in footprint.bounds)

        # 2. Landscape.
        rng = _rng(cfg, index, 1)
        self.parcel_id = _parcels(rng, n, cfg.field_size_px)
        n_parcels = int(self.parcel_id.max()) + 1
        farm_classes = np.array([_C["grassland"], _C["winter_crop"], _C["summer_crop"]])
        order = np.concatenate([rng.permutation(farm_classes) for _ in range(n_parcels // 3 + 1)])[:n_parcels]
        lc = order[self.parcel_id].astype(np.uint8)
        relief = _smooth_noise(rng, (n, n), max(2.0, n / 8))
        forest = relief > np.quantile(relief, 0.72)
        kind = _smooth_noise(rng, (n, n), max(2.0, n / 6))
        kind_thr = np.median(kind[forest]) if forest.any() else 0.0
        lc[forest & (kind >= kind_thr)] = _C["needleleaf_forest"]
        lc[forest & (kind < kind_thr)] = _C["broadleaf_forest"]
        rr, cc = np.mgrid[0:n, 0:n]
        centre = rng.uniform(0.2, 0.8, size=2) * n
        town = np.hypot(rr - centre[0], cc - centre[1]) + 1.5 * _smooth_noise(rng, (n, n), 1.5)
        lc[town <= np.quantile(town, 0.07)] = _C["urban"]
        phase, wiggle = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.12) * n
        river_col = rng.uniform(0.25, 0.75) * n + wiggle * np.sin(2 * np.pi * rr / (0.8 * n) + phase)
        lc[np.abs(cc - river_col) < max(1.0, n / 40)] = _C["water"]
        if spec.footprint_class is not None:  # e.g. a flux tower's vegetation around the scene centre
            if spec.footprint_class not in _C:
                raise SampleRegionError(
                    f"scene {spec.name!r}: footprint_class {spec.footprint_class!r} is not one of {sorted(_C)}"
                )
            disc = np.hypot(rr - (n - 1) / 2, cc - (n - 1) / 2) <= spec.footprint_radius_px
            lc[disc] = _C[spec.footprint_class]
        self.landcover = lc  # [H, W] uint8
        self.parcel_id = np.where(np.isin(lc, farm_classes), self.parcel_id, -1).astype(np.int32)

        # 3. Per-parcel calendars and per-pixel amplitudes (one value per parcel, broadcast by id).
        pid = np.maximum(self.parcel_id, 0)
        self.sow_jitter = rng.normal(0.0, 8.0, n_parcels)[pid]  # days
        self.harvest_jitter = rng.normal(0.0, 7.0, n_parcels)[pid]  # days
        self.mow_days = np.stack(
            [rng.normal(m, 8.0, n_parcels)[pid] for m in (150.0, 205.0, 260.0)]
        )  # [3, H, W]
        self.vmax = (
            rng.uniform(0.78, 0.95, n_parcels)[pid] * (1 + 0.04 * _smooth_noise(rng, (n, n), 1.0))
        ).astype(np.float32)
        self.pheno_jitter = 4.0 * _smooth_noise(rng, (n, n), max(1.0, n / 16))  # days
        self.soil_wetness = np.clip(
            1.0 + 0.15 * _smooth_noise(rng, (n, n), max(1.0, n / 10)), 0.6, 1.4
        ).astype(np.float32)
        self.urban_bright = rng.gamma(2.0, 0.5, (n, n)).astype(np.float32)  # strong scatterers, mean 1

        # 4. Weather: daily soil moisture over the period (plus 30 spin-up days).
        wrng = _rng(cfg, index, 2)
        n_days = (cfg.end - cfg.start).days + 1
        days = [cfg.start + dt.timedelta(days=i) for i in range(-30, n_days)]
        sm, out = 0.5, []
        for day in days:
            doy = day.timetuple().tm_yday
            seasonal = 0.45 + 0.18 * math.cos(2 * math.pi * (doy - 20) / 365.0)  # wet winters, dry summers
            rain_mm = wrng.exponential(8.0) if wrng.random() < 0.3 else 0.0
            sm = seasonal + (sm - seasonal) * math.exp(-1.0 / 6.0) + rain_mm / 120.0
            sm = min(max(sm, 0.05), 0.98)
            out.append(sm)
        self.soil_days = np.array(days[30:], dtype="datetime64[D]")
        self.soil_moisture = np.array(out[30:], np.float32)  # [D]

    # ---------------------------------------------------------------------------------- state per day

    def sm_on(self, day: dt.date) -> float:
        return float(self.soil_moisture[(day - self.cfg.start).days])

    def veg_state(self, days: Sequence[dt.date]) -> np.ndarray:
        """Vegetation state [T, H, W] float32 in [0, 1] on ``days``."""
        t = np.array([(d - dt.date(1970, 1, 1)).days for d in days], np.float64)[:, None, None]  # [T, 1, 1]
        shift = self.spec.phenology_shift_days + self.pheno_jitter[None]  # [1, H, W] days
        year_start = np.array([(dt.date(d.year, 1, 1) - dt.date(1970, 1, 1)).days for d in days])[
            :, None, None
        ]
        doy = t - year_start - shift  # [T, H, W] day of year, shifted
        lc = self.landcover[None]
        if self.driver is None:
            broad = _double_logistic(doy, 115.0, 290.0, 0.12, 0.09)
            needle = _double_logistic(doy, 100.0, 285.0, 0.05, 0.05)
            grass = _double_logistic(doy, 85.0, 300.0, 0.08, 0.06)
        else:
            series = np.asarray(self.driver(np.array(days, dtype="datetime64[D]")), np.float64)
            if series.shape != (len(days),) or not np.all(np.isfinite(series)):
                raise SampleRegionError(
                    f"veg driver of scene {self.spec.name!r} returned shape {series.shape} or non-finite values; "
                    f"it must return {len(days)} finite values in [0, 1]"
                )
            broad = needle = grass = np.broadcast_to(np.clip(series, 0, 1)[:, None, None], doy.shape)
        mow = np.ones_like(doy)
        for k in range(self.mow_days.shape[0] if self.driver is None else 0):  # a real series has its cuts
            since = doy - self.mow_days[k][None]
            mow *= 1.0 - 0.6 * np.where(since >= 0, np.exp(-np.maximum(since, 0) / 18.0), 0.0)
        crops = self._crop_state(t, shift)
        v = np.zeros(doy.shape, np.float64)
        v = np.where(lc == _C["needleleaf_forest"], 0.62 + 0.2 * needle, v)
        v = np.where(lc == _C["broadleaf_forest"], 0.12 + 0.8 * broad, v)
        v = np.where(lc == _C["grassland"], (0.25 + 0.6 * grass) * mow, v)
        v = np.where(np.isin(lc, (_C["winter_crop"], _C["summer_crop"])), crops, v)
        v = np.where(lc == _C["urban"], 0.06 + 0.08 * broad, v)
        v = v * np.where(lc == _C["water"], 0.0, self.vmax[None] / 0.9)
        return np.clip(v, 0.0, 1.0).astype(np.float32)

    def _veg_in_batches(self, days: Sequence[dt.date], *, batch: int = 8) -> np.ndarray:
        """:meth:`veg_state` a few dates at a time (bounded float64 temporaries for large scenes)."""
        if self.driver is not None:  # the driver sees the whole series at once
            return self.veg_state(days)
        parts = [self.veg_state(days[i : i + batch]) for i in range(0, len(days), batch)]
        return np.concatenate(parts) if parts else np.zeros((0, self.n, self.n), np.float32)

    def _crop_state(self, t: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Crop green cover [T, H, W]: per-parcel sowing -> growth -> senescence -> harvest -> bare."""
        lc = self.landcover[None]
        epoch = dt.date(1970, 1, 1)
        v = np.zeros(np.broadcast_shapes(t.shape, shift.shape))
        for year in range(self.cfg.start.year - 1, self.cfg.end.year + 1):
            base = shift + self.sow_jitter[None]
            # Winter cereal: sown ~5 Oct of `year`, tillers before winter, spring growth, harvest ~15 July.
            sow = (dt.date(year, 10, 5) - epoch).days + base
            harvest = (dt.date(year + 1, 7, 15) - epoch).days + shift + self.harvest_jitter[None]
            spring = (dt.date(year + 1, 4, 5) - epoch).days + shift
            senesce = harvest - 30.0
            w = (
                0.25 * (1 - np.exp(-np.maximum(t - sow - 10, 0) / 25.0))
                + 0.65 * _sigmoid(0.08 * (t - spring))
            ) * (1 - 0.85 * _sigmoid(0.12 * (t - senesce)))
            w = np.where((t >= sow + 10) & (t < harvest), w, 0.0)
            # Summer crop: sown ~25 April, canopy closes in July, dries in September, harvest ~25 Sept.
            sow_s = (dt.date(year, 4, 25) - epoch).days + base
            harvest_s = (dt.date(year, 9, 25) - epoch).days + shift + self.harvest_jitter[None]
            s = _sigmoid(0.09 * (t - sow_s - 50.0)) * (1 - 0.9 * _sigmoid(0.1 * (t - harvest_s + 25.0)))
            s = np.where((t >= sow_s + 10) & (t < harvest_s), s, 0.0)
            v = v + np.where(lc == _C["winter_crop"], w, 0.0) + np.where(lc == _C["summer_crop"], s, 0.0)
        return v

    def surface_reflectance(self, day: dt.date, veg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clear-sky L2A reflectance [10, H, W] float32 for one day from the vegetation state [H, W]."""
        lc = self.landcover
        sm = np.clip(self.sm_on(day) * self.soil_wetness, 0.0, 1.0)  # [H, W]
        soil = _band_vector("soil")[:, None, None] * (
            1 - _band_vector("wet_darkening")[:, None, None] * sm[None]
        )
        litter = _band_vector("litter")[:, None, None]
        green = _band_vector("green")[:, None, None]
        needle = _band_vector("needle")[:, None, None]
        background = np.where(
            np.isin(lc, (_C["winter_crop"], _C["summer_crop"]))[None],
            0.8 * soil + 0.2 * litter,
            np.where(
                (lc == _C["grassland"])[None], 0.4 * soil + 0.6 * litter, 0.5 * (0.3 * soil + 0.7 * litter)
            ),
        )  # [10, H, W]
        background = np.where(
            (lc == _C["urban"])[None],
            _band_vector("urban")[:, None, None] * self.urban_bright[None] ** 0.3,
            background,
        )
        canopy = np.where((lc == _C["needleleaf_forest"])[None], needle, green)
        refl = veg[None] * canopy + (1 - veg[None]) * background  # [10, H, W]
        turbidity = 0.08 * max(0.0, self.sm_on(day) - 0.55)  # rain-fed sediment brightens red/red-edge
        water = _band_vector("water")[:, None, None] + turbidity * _band_vector("sediment")[:, None, None]
        refl = np.where((lc == _C["water"])[None], water, refl)
        gain = rng.normal(1.0, 0.015)  # residual atmosphere, per date
        haze = abs(rng.normal(0.0, 0.006)) * _band_vector("haze")[:, None, None]
        noise = rng.normal(0.0, self.cfg.reflectance_noise, refl.shape) * (1 + 2 * refl)
        return np.clip(refl * gain + haze + noise, 0.0005, 1.2).astype(np.float32)

    # ------------------------------------------------------------------------------------------- S2

    def write_s2(self, root: Path, tick: Callable[[], None]) -> list[pystac.Item]:
        cfg, spec, n = self.cfg, self.spec, self.n
        days = _s2_days(cfg)
        self.s2_days = days
        self.s2_veg = self._veg_in_batches(days)  # [T, H, W]
        self.s2_clear = np.zeros((len(days), n, n), bool)
        self.s2_refl = (
            np.zeros((len(days), len(S2.bands), n, n), np.float32) if cfg.truth_reflectance else None
        )
        edge_side = 1 if self.index % 2 == 0 else -1  # which side of the swath the scene lies on
        # Which dates are fully cloudy, cut by the swath edge or streaked by cirrus: fixed shares of the dates.
        sched = _rng(cfg, self.index, 5)
        full, edge, cirrus = (
            set(sched.permutation(len(days))[: round(frac * len(days))].tolist())
            for frac in (cfg.full_cloud_frac, spec.swath_edge_frac, cfg.cirrus_frac)
        )
        items = []
        for ti, day in enumerate(days):
            rng = _rng(cfg, self.index, 3, ti)
            refl = self.surface_reflectance(day, self.s2_veg[ti], rng)
            if self.s2_refl is not None:
                self.s2_refl[ti] = refl
            hour_local = 10.5 + rng.normal(0.0, 0.05)
            zen, az = _solar_geometry(day, spec.lat, hour_local)
            flags = (ti in full, edge_side if ti in edge else 0, ti in cirrus)
            obs, scl, clear, stats = self._sky(refl, self.s2_veg[ti], day, zen, az, rng, flags)
            self.s2_clear[ti] = clear
            platform = "Sentinel-2A" if ti % 2 == 0 else "Sentinel-2B"
            items.append(self._s2_item(root, day, hour_local, platform, obs, scl, zen, az, stats))
            tick()
        return items

    def _sky(
        self,
        refl: np.ndarray,
        veg: np.ndarray,
        day: dt.date,
        zen_deg: float,
        az_deg: float,
        rng: np.random.Generator,
        flags: tuple[bool, int, bool],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
        """Clouds, cirrus, shadows, swath edge: -> observed [10, H, W], SCL [H/2, W/2], clear [H, W], stats.

        ``flags``: (fully cloudy, swath edge side: 0 none / 1 east / -1 west, thin cirrus).
        """
        cfg, n = self.cfg, self.n
        full, edge_side, with_cirrus = flags
        doy = day.timetuple().tm_yday
        margin = max(4, n // 4)
        big = (n + 2 * margin, n + 2 * margin)
        inner = (slice(margin, margin + n), slice(margin, margin + n))
        # Cloud cover of the date: a few fully cloudy dates, else a U-shaped draw, cloudier in winter.
        mean_cc = float(
            np.clip(cfg.mean_cloud_cover * (1 + 0.35 * math.cos(2 * math.pi * (doy - 15) / 365)), 0.02, 0.95)
        )
        cover = 1.0 if full else float(rng.beta(0.5, 0.5 * (1 - mean_cc) / mean_cc))
        # Two scales: cloud bodies plus ragged edges. [H+2m, W+2m]
        field = _smooth_noise(rng, big, max(2.0, n / 10)) + 0.35 * _smooth_noise(rng, big, max(0.7, n / 40))
        if cover >= 0.999:
            alpha_big = np.clip(0.85 + 0.1 * field, 0.6, 1.0)
        elif cover <= 0.005:
            alpha_big = np.zeros(big)
        else:
            thr = np.quantile(field, 1 - cover)
            alpha_big = np.clip((field - thr) / 0.6 + 0.1, 0.0, 1.0) * (field > thr)
        # Shadow: the cloud field displaced away from the sun by height / tan(elevation), capped at the margin.
        height_m = rng.uniform(800.0, 2500.0)
        length_px = min(height_m * math.tan(math.radians(zen_deg)) / 10.0, float(margin))
        # A shadow pixel sees its cloud towards the sun: sun in the south -> cloud below (row + k);
        # sun in the east -> cloud to the right (col + k). Shadows fall north-west of clouds in the morning.
        drow = round(-length_px * math.cos(math.radians(az_deg)))
        dcol = round(length_px * math.sin(math.radians(az_deg)))
        alpha = alpha_big[inner]  # [H, W]
        shadow = alpha_big[margin + drow : margin + drow + n, margin + dcol : margin + dcol + n] * (
            alpha < 0.05
        )
        # Thin cirrus: streaky, faint, on some dates.
        cirrus = np.zeros((n, n))
        if with_cirrus and not full:
            streak = _smooth_noise(rng, (n, n), (max(1.0, n / 32), max(3.0, n / 6)))
            cirrus = np.clip((streak - 0.3) * 0.15, 0.0, 0.2)
        # Compose: shadow darkens (diffuse skylight keeps some blue), cirrus and cloud add their spectra.
        diffuse = 0.3 + 0.15 * _band_vector("haze")[:, None, None]
        obs = refl * (1 - shadow[None] * (1 - diffuse))
        obs = obs * (1 - cirrus[None]) + cirrus[None] * 0.6 * _band_vector("cloud")[:, None, None]
        obs = obs * (1 - alpha[None]) + alpha[None] * _band_vector("cloud")[:, None, None] * (
            0.9 + 0.2 * alpha[None]
        )
        # SCL as the L2A classifier would see it (faint edges and weak shadows go unflagged).
        lc = self.landcover
        scl = np.where(veg > 0.3, 4, 5).astype(np.uint8)
        scl[lc == _C["water"]] = 6
        scl[rng.random((n, n)) < 0.005] = 7
        scl[cirrus > 0.06] = 10
        scl[shadow > 0.4] = 3
        scl[(alpha >= 0.15) & (alpha < 0.6)] = 8
        scl[alpha >= 0.6] = 9
        # Swath edge: a slanted strip of no data on one side on some dates.
        nodata = np.zeros((n, n), bool)
        if edge_side:
            # Drawn on the 20 m grid so every band and SCL share the same edge, then repeated to 10 m.
            m = n // 2
            rr, cc = np.mgrid[0:m, 0:m]
            width = rng.uniform(0.15, 0.65) * m  # share of the scene beyond the swath
            lean = 0.2 * (rr - m / 2)  # orbit tracks run ~11 degrees off north
            edge20 = (cc + lean < width) if edge_side < 0 else (cc + lean > m - width)
            nodata = np.repeat(np.repeat(edge20, 2, axis=0), 2, axis=1)
        scl[nodata] = 0
        clear = (alpha == 0) & (shadow == 0) & (cirrus == 0) & ~nodata
        # Like L2A, the SCL and its scene statistics are at 20 m.
        scl = _scl_to_20m(scl)  # [H/2, W/2]
        data = scl != 0
        n_data = max(int(data.sum()), 1)

        def pct(mask: np.ndarray) -> float:
            return round(100.0 * float((mask & data).sum()) / n_data, 6)

        stats = {
            "eo:cloud_cover": pct(np.isin(scl, (8, 9, 10))),
            "s2:high_proba_clouds_percentage": pct(scl == 9),
            "s2:medium_proba_clouds_percentage": pct(scl == 8),
            "s2:thin_cirrus_percentage": pct(scl == 10),
            "s2:cloud_shadow_percentage": pct(scl == 3),
            "s2:vegetation_percentage": pct(scl == 4),
            "s2:not_vegetated_percentage": pct(scl == 5),
            "s2:water_percentage": pct(scl == 6),
            "s2:unclassified_percentage": pct(scl == 7),
            "s2:nodata_pixel_percentage": round(100.0 * float((~data).mean()), 6),
            "s2:snow_ice_percentage": 0.0,
            "s2:saturated_defective_pixel_percentage": 0.0,
        }
        obs = np.where(nodata[None], np.nan, obs)
        self._nodata = nodata
        return obs.astype(np.float32), scl, clear, stats

    def _s2_item(
        self,
        root: Path,
        day: dt.date,
        hour_local: float,
        platform: str,
        obs: np.ndarray,
        scl: np.ndarray,
        zen: float,
        az: float,
        stats: dict[str, float],
    ) -> pystac.Item:
        spec = self.spec
        when = dt.datetime(day.year, day.month, day.day, tzinfo=_UTC) + dt.timedelta(
            hours=hour_local - spec.lon / 15.0
        )
        when = when.replace(microsecond=(when.microsecond // 1000) * 1000)
        baseline = _baseline(day)
        offset = _baseline_offset_dn(baseline)
        stamp = when.strftime("%Y%m%dT%H%M%S")
        gen = (when + dt.timedelta(hours=3, minutes=7)).strftime("%Y%m%dT%H%M%S")
        sat = platform[-2:].replace("-", "")  # "2A" / "2B"
        item_id = f"S{sat}_MSIL2A_{stamp}_R{spec.s2_relative_orbit:03d}_T{self.mgrs}_{gen}"
        folder = root / S2.collection / item_id
        folder.mkdir(parents=True)
        scale = 1.0 / (S2.s2_scaling.scale if S2.s2_scaling else 1e-4)
        assets: dict[str, pystac.Asset] = {}
        for bi, (band, asset_key, res) in enumerate(zip(S2.bands, S2.assets, S2.native_res_m, strict=True)):
            values = obs[bi]
            if res == 20:
                values = values.reshape(self.n // 2, 2, self.n // 2, 2).mean(axis=(1, 3))  # [H/2, W/2]
            dn = np.where(
                np.isnan(values), 0, np.clip(np.rint(np.nan_to_num(values) * scale + offset), 1, 65535)
            )
            self._write_asset(
                folder,
                asset_key,
                dn.astype(S2.dtype),
                res,
                S2.nodata,
                assets,
                title=f"Band {band}",
                eo_bands=[{"name": band}],
            )
        if S2.mask_asset:
            self._write_asset(
                folder, S2.mask_asset, scl, 20, 0, assets, title="Scene classfication map (SCL)"
            )
        geometry = self._footprint(self._nodata)
        props: dict[str, Any] = {
            "platform": platform,
            "constellation": "Sentinel 2",
            "instruments": ["msi"],
            "proj:code": f"EPSG:{spec.epsg}",
            "proj:epsg": spec.epsg,
            "s2:mgrs_tile": self.mgrs,
            "s2:processing_baseline": baseline,
            "s2:product_type": "S2MSI2A",
            "s2:datatake_type": "INS-NOBS",
            "s2:product_uri": f"S{sat}_MSIL2A_{stamp}_N{baseline.replace('.', '')}_R{spec.s2_relative_orbit:03d}_T{self.mgrs}_{gen}.SAFE",
            "s2:generation_time": (when + dt.timedelta(hours=3, minutes=7)).strftime(
                "%Y-%m-%dT%H:%M:%S.000000Z"
            ),
            "s2:mean_solar_zenith": round(zen, 6),
            "s2:mean_solar_azimuth": round(az, 6),
            "sat:orbit_state": "descending",
            "sat:relative_orbit": spec.s2_relative_orbit,
            **stats,
        }
        item = pystac.Item(
            id=item_id,
            geometry=geometry,
            bbox=list(Polygon(geometry["coordinates"][0]).bounds),
            datetime=when,
            properties=props,
            stac_extensions=[_EO_EXT, _SAT_EXT, _PROJ_EXT],
            collection=S2.collection,
        )
        for key, asset in assets.items():
            item.add_asset(key, asset)
        return item

    def _write_asset(
        self,
        folder: Path,
        key: str,
        data: np.ndarray,
        res_m: float,
        nodata: float,
        assets: dict[str, pystac.Asset],
        *,
        title: str,
        raster_bands: list[dict[str, Any]] | None = None,
        eo_bands: list[dict[str, Any]] | None = None,
    ) -> None:
        transform = self.transform10 if res_m == 10 else self.transform20
        path = folder / f"{key}.tif"
        _write_cog(path, data, crs=f"EPSG:{self.spec.epsg}", transform=transform, nodata=nodata)
        h, w = data.shape
        extra: dict[str, Any] = {
            "proj:bbox": list(self.bounds),
            "proj:shape": [h, w],
            "proj:transform": list(transform)[:6],
            "gsd": float(res_m),
        }
        if raster_bands is not None:
            extra["raster:bands"] = raster_bands
        if eo_bands is not None:
            extra["eo:bands"] = eo_bands
        assets[key] = pystac.Asset(
            href=str(Path(path).resolve()),
            media_type=_COG_TYPE,
            roles=["data"],
            title=title,
            extra_fields=extra,
        )

    def _footprint(self, nodata: np.ndarray) -> dict[str, Any]:
        """Lon/lat polygon of the scene's data pixels (the full square minus a swath-edge strip)."""
        n = self.n
        poly = box(0, 0, n, n)
        if nodata.any():
            # The valid side of the swath edge: rows with any data, from the first/last valid column.
            pts_l, pts_r = [], []
            for r in (0, n - 1):
                cols = np.flatnonzero(~nodata[r])
                if cols.size:
                    pts_l.append((float(cols[0]), float(r if r == 0 else n)))
                    pts_r.append((float(cols[-1] + 1), float(r if r == 0 else n)))
            if len(pts_l) == 2:
                poly = Polygon([pts_l[0], pts_r[0], pts_r[1], pts_l[1]]).intersection(poly)
        utm = shapely_transform(lambda c, r: (self.x0 + 10.0 * c, self.y1 - 10.0 * r), poly)
        ll = shapely_transform(self.to_lonlat.transform, utm.segmentize(n * 10 / 4))
        geom = mapping(ll.simplify(0))
        coords = [[[round(x, 7), round(y, 7)] for x, y in ring] for ring in geom["coordinates"]]
        return {"type": "Polygon", "coordinates": coords}

    # ------------------------------------------------------------------------------------------- S1

    def write_s1(self, root: Path, tick: Callable[[], None]) -> list[pystac.Item]:
        cfg, spec, n = self.cfg, self.spec, self.n
        acq = _s1_acquisitions(cfg, spec)
        if not acq:
            return []
        veg = self._veg_in_batches([a[0] for a in acq])  # [T1, H, W]
        lc = self.landcover
        items = []
        for k, (day, platform, direction) in enumerate(acq):
            rng = _rng(cfg, self.index, 4, k)
            theta = math.radians(34.0 if direction == "ascending" else 41.0) + rng.normal(0, 0.003)
            cos_t = math.cos(theta)
            sm = np.clip(self.sm_on(day) * self.soil_wetness, 0.0, 1.0)  # [H, W]
            soil_vv_db = -21.0 + 14.0 * sm  # [H, W] rougher, wetter soil -> brighter
            ploughed = np.isin(lc, (_C["winter_crop"], _C["summer_crop"])) & (veg[k] < 0.05)
            soil_vv_db = soil_vv_db + 2.0 * ploughed
            soil_vv = 10 ** (soil_vv_db / 10) * cos_t**2 / math.cos(math.radians(37.5)) ** 2
            soil_vh = soil_vv * 10 ** (-9.0 / 10)
            # Water-cloud model: volume term A * cos(theta) * (1 - tau2) plus the attenuated soil term.
            woody = np.where(np.isin(lc, (_C["needleleaf_forest"], _C["broadleaf_forest"])), 0.45, 0.0)
            biomass = np.select(
                [lc == _C["grassland"], np.isin(lc, (_C["winter_crop"], _C["summer_crop"])), woody > 0],
                [1.0, 2.5, 4.0],
                0.0,
            ) * (veg[k] + woody)
            tau2 = np.exp(-2 * 0.35 * biomass / cos_t)
            a_vv = np.where(woody > 0, 0.20, np.where(lc == _C["grassland"], 0.08, 0.12))
            a_vh = np.where(woody > 0, 0.055, np.where(lc == _C["grassland"], 0.02, 0.04))
            vv = a_vv * cos_t * (1 - tau2) + tau2 * soil_vv
            vh = a_vh * cos_t * (1 - tau2) + tau2 * soil_vh
            wind = rng.gamma(2.0, 2.5)  # m/s
            water_vv = 10 ** ((-23.0 + 1.0 * min(wind, 8.0)) / 10)  # calm -23 dB, rough up to -15 dB
            vv = np.where(lc == _C["water"], water_vv, vv)
            vh = np.where(lc == _C["water"], water_vv * 10 ** (-7.0 / 10), vh)
            vv = np.where(lc == _C["urban"], 10 ** (-2.5 / 10) * self.urban_bright, vv)
            vh = np.where(lc == _C["urban"], 10 ** (-10.0 / 10) * self.urban_bright, vh)
            looks = self.cfg.s1_looks
            vv = vv * rng.gamma(looks, 1.0 / looks, (n, n))  # speckle, mean 1
            vh = vh * rng.gamma(looks, 1.0 / looks, (n, n))
            nodata = np.zeros((n, n), bool)
            if rng.random() < 0.05:  # scene at the edge of the IW swath
                nodata[:, : int(rng.uniform(0.1, 0.3) * n)] = True
            values = {"vv": vv, "vh": vh}
            items.append(self._s1_item(root, day, platform, direction, values, nodata))
            tick()
        return items

    def _s1_item(
        self,
        root: Path,
        day: dt.date,
        platform: str,
        direction: str,
        values: dict[str, np.ndarray],
        nodata: np.ndarray,
    ) -> pystac.Item:
        spec = self.spec
        local = 17.6 if direction == "ascending" else 5.6
        start = dt.datetime(day.year, day.month, day.day, tzinfo=_UTC) + dt.timedelta(
            hours=local - spec.lon / 15.0
        )
        start = start.replace(microsecond=0)
        end = start + dt.timedelta(seconds=25)
        rel = spec.s1_relative_orbits[0 if direction == "ascending" else 1]
        # Absolute orbit: S1A 058252 on 2025-03-11 (a PC item), 175 orbits per 12 days; S1B ran 6 days apart.
        abs_orbit = 58252 + round((day - dt.date(2025, 3, 11)).days * 175 / 12)
        if platform.endswith("B"):
            abs_orbit -= 5000
        datatake = f"{(abs_orbit * 2654435761 + rel) % 0xFFFFFF:06X}"
        sat = "S1A" if platform.endswith("A") else "S1B"
        item_id = (
            f"{sat}_IW_GRDH_1SDV_{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}_{abs_orbit:06d}_{datatake}_rtc"
        )
        folder = root / S1.collection / item_id
        folder.mkdir(parents=True)
        assets: dict[str, pystac.Asset] = {}
        for band, key in zip(S1.bands, S1.assets, strict=True):
            data = np.where(nodata, S1.nodata, values[key]).astype(S1.dtype)
            rb = [{"nodata": S1.nodata, "data_type": S1.dtype, "spatial_resolution": 10.0}]
            title = f"{band}: vertical transmit, {'vertical' if band[1] == 'V' else 'horizontal'} receive"
            self._write_asset(folder, key, data, 10, S1.nodata, assets, title=title, raster_bands=rb)
        props: dict[str, Any] = {
            "platform": platform,
            "constellation": "Sentinel-1",
            "start_datetime": start.isoformat(),
            "end_datetime": end.isoformat(),
            "proj:code": f"EPSG:{spec.epsg}",
            "proj:epsg": spec.epsg,
            "proj:bbox": list(self.bounds),
            "proj:shape": [self.n, self.n],
            "proj:transform": [*list(self.transform10)[:6], 0.0, 0.0, 1.0],
            "sar:instrument_mode": "IW",
            "sar:polarizations": list(S1.bands),
            "sar:frequency_band": "C",
            "sar:center_frequency": 5.405,
            "sar:product_type": "GRD",
            "sar:looks_equivalent_number": self.cfg.s1_looks,
            "sar:observation_direction": "right",
            "sat:orbit_state": direction,
            "sat:relative_orbit": rel,
            "sat:absolute_orbit": abs_orbit,
            "s1:datatake_id": str(int(datatake, 16)),
            "s1:resolution": "high",
            "s1:processing_level": "1",
        }
        geometry = self._footprint(nodata)
        item = pystac.Item(
            id=item_id,
            geometry=geometry,
            bbox=list(Polygon(geometry["coordinates"][0]).bounds),
            datetime=start + (end - start) / 2,
            properties=props,
            stac_extensions=[_SAR_EXT, _SAT_EXT, _PROJ_EXT, _RASTER_EXT],
            collection=S1.collection,
        )
        for key, asset in assets.items():
            item.add_asset(key, asset)
        return item

    # ----------------------------------------------------------------------------------------- truth

    def write_truth(self, root: Path, *, n_s2: int, n_s1: int) -> SceneInfo:
        folder = root / "truth" / self.spec.name
        folder.mkdir(parents=True)
        lc_path = folder / "landcover.tif"
        _write_cog(
            lc_path, self.landcover, crs=f"EPSG:{self.spec.epsg}", transform=self.transform10, nodata=0
        )
        arrays: dict[str, np.ndarray] = {
            "dates": np.array(self.s2_days, dtype="datetime64[D]"),
            "veg_state": self.s2_veg,
            "clear": self.s2_clear,
            "landcover": self.landcover,
            "parcel_id": self.parcel_id,
            "soil_days": self.soil_days,
            "soil_moisture": self.soil_moisture,
            "soil_wetness": self.soil_wetness,
            "bands": np.array(S2.bands),
        }
        if self.s2_refl is not None:
            arrays["reflectance"] = self.s2_refl
        truth_path = folder / "truth.npz"
        _save_npz(truth_path, arrays)
        return SceneInfo(
            name=self.spec.name,
            epsg=self.spec.epsg,
            size_px=self.n,
            transform=tuple(self.transform10)[:6],
            bounds_utm=self.bounds,
            bbox_lonlat=self.bbox_lonlat,
            mgrs_tile=self.mgrs,
            landcover_path=lc_path,
            truth_path=truth_path,
            n_s2=n_s2,
            n_s1=n_s1,
        )


# ------------------------------------------------------------------------------------------ file output


def _scl_to_20m(scl: np.ndarray) -> np.ndarray:
    """SCL [H, W] -> [H/2, W/2]: each 20 m pixel takes its most severe 10 m class (no data > cloud > ...)."""
    rank = np.zeros(256, np.int16)
    for r, cls in enumerate((5, 4, 6, 7, 11, 2, 3, 10, 8, 9, 1, 0)):  # low -> high precedence
        rank[cls] = r + 1
    h, w = scl.shape
    blocks = scl.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(h // 2, w // 2, 4)
    pick = np.take_along_axis(blocks, rank[blocks].argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return pick.astype(np.uint8)


def _write_cog(path: Path, data: np.ndarray, *, crs: str, transform: Affine, nodata: float) -> None:
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


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
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
            "type": _COG_TYPE,
            "roles": ["data"],
            "title": f"Band {band}",
            "raster:bands": [{"nodata": S2.nodata, "data_type": S2.dtype}],
            "eo:bands": [{"name": band}],
        }
    if S2.mask_asset:
        out[S2.mask_asset] = {
            "gsd": 20,
            "type": _COG_TYPE,
            "roles": ["data"],
            "title": "Scene classfication map (SCL)",
            "raster:bands": [{"nodata": 0, "data_type": "uint8"}],
        }
    return out


def _item_assets_s1() -> dict[str, Any]:
    return {
        key: {
            "type": _COG_TYPE,
            "roles": ["data"],
            "title": f"{band}",
            "raster:bands": [{"nodata": S1.nodata, "data_type": S1.dtype, "spatial_resolution": 10.0}],
        }
        for band, key in zip(S1.bands, S1.assets, strict=True)
    }


def _write_catalog(
    root: Path, cfg: SampleRegionConfig, s2_items: list[pystac.Item], s1_items: list[pystac.Item]
) -> Path:
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
            stac_extensions=[_ITEM_ASSETS_EXT, _RASTER_EXT, _EO_EXT],
        )
        coll.extra_fields["item_assets"] = item_assets
        coll.add_items(items)
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(root.resolve()))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def _write_manifest(region: SampleRegion, *, drivers: list[str]) -> None:
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


class _progress:
    """A tqdm bar (when ``enabled``) exposed as a ``tick()`` callable."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="item", desc="sample region", file=sys.stderr)
            return lambda: self.bar.update(1)
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------- CLI


def _parse_date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder sample-region OUT [--size-px N] [--start D] [--end D] [--seed S] [--scenes N] ...``."""
    parser = argparse.ArgumentParser(
        prog="embedder sample-region",
        description="Write the synthetic sample region (COGs + static STAC catalog + truth) into OUT. "
        "Options override the preset (--tiny, --config YAML, else the small default).",
    )
    parser.add_argument("out", type=Path, help="output folder (new or empty)")
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--tiny", action="store_true", help="start from the tiny test preset")
    preset.add_argument("--config", type=Path, help="YAML file of SampleRegionConfig keys to start from")
    parser.add_argument("--size-px", type=int, help="scene side in 10 m pixels (even; default 64)")
    parser.add_argument("--start", type=_parse_date, help="first day YYYY-MM-DD (default 2021-07-01)")
    parser.add_argument("--end", type=_parse_date, help="last day YYYY-MM-DD (default 2022-06-30)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--scenes", type=int, help="number of scenes (default 2: EPSG 32632 and 32633)")
    parser.add_argument("--s2-cadence-days", type=int, help="days between S2 dates (default 5)")
    parser.add_argument("--s1-cadence-days", type=int, help="S1A repeat per orbit direction (default 12)")
    parser.add_argument(
        "--truth-reflectance", action="store_true", help="also store clear-sky reflectance in the truth"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            base = load_config(SampleRegionConfig, args.config)
        else:
            base = SampleRegionConfig.tiny() if args.tiny else SampleRegionConfig.small()
        overrides: dict[str, Any] = {
            "size_px": args.size_px,
            "start": args.start,
            "end": args.end,
            "seed": args.seed,
            "s2_cadence_days": args.s2_cadence_days,
            "s1_cadence_days": args.s1_cadence_days,
            "scenes": None if args.scenes is None else default_scenes(args.scenes),
            "truth_reflectance": True if args.truth_reflectance else None,
        }
        cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
        region = write_sample_region(args.out, cfg=cfg, progress=not args.no_progress)
    except (ConfigError, SampleRegionError, FileNotFoundError) as err:
        print(f"embedder sample-region: {err}", file=sys.stderr)
        return 2
    n_s2 = sum(s.n_s2 for s in region.scenes)
    n_s1 = sum(s.n_s1 for s in region.scenes)
    print(
        f"wrote {len(region.scenes)} scenes ({', '.join(f'{s.name} {s.crs}' for s in region.scenes)}), "
        f"{n_s2} S2 + {n_s1} S1 items, {cfg.start}..{cfg.end}: {region.catalog_path}"
    )
    return 0
