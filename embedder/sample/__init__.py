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

``region.json`` (the manifest, :func:`read_region_manifest`) and the ``truth/<scene>/truth.npz`` layout are
described in :mod:`embedder.sample.manifest`.

The package, one room each: :mod:`~embedder.sample.manifest` (``region.json`` and the truth layout: what
production code reads), :mod:`~embedder.sample.region` (:func:`write_sample_region` and the CLI),
:mod:`~embedder.sample.scenes` (one scene's generator), :mod:`~embedder.sample.physics` (classes, spectra,
calendars, random fields) and :mod:`~embedder.sample.files` (COGs, ``.npz``, the STAC catalog).
"""

from embedder.sample.manifest import (
    MANIFEST_NAME,
    SampleRegion,
    SampleRegionError,
    SceneInfo,
    read_region_manifest,
)
from embedder.sample.physics import CLASSES, LandCoverClass
from embedder.sample.region import cli_main, default_scenes, series_driver, write_sample_region
from embedder.sample.scenes import VegDriver

__all__ = [
    "CLASSES",
    "MANIFEST_NAME",
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
