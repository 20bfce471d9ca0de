"""What the synthetic scenes are drawn from: land-cover classes, spectra, calendars, random fields.

Land-cover classes and end-member spectra, acquisition calendars and processing baselines, sun geometry,
MGRS squares and random fields (the physics is described in :mod:`embedder.sample`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from embedder.config import SampleRegionConfig, SceneSpec
from embedder.geo import UtmZone
from embedder.sample.manifest import SampleRegionError
from embedder.sensors import S2

__all__ = [
    "CLASSES",
    "CLASS_CODE",
    "LandCoverClass",
    "band_vector",
    "baseline_offset_dn",
    "double_logistic",
    "mgrs_tile",
    "parcels",
    "processing_baseline",
    "s1_acquisitions",
    "s2_days",
    "scene_rng",
    "sigmoid",
    "smooth_noise",
    "solar_geometry",
]


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

CLASS_CODE = {c.name: c.code for c in CLASSES}

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


# ------------------------------------------------------------------------------------------ date tables


def s2_days(cfg: SampleRegionConfig) -> list[dt.date]:
    """S2 acquisition days of the region: every ``s2_cadence_days`` from ``start`` to ``end``."""
    n = (cfg.end - cfg.start).days // cfg.s2_cadence_days + 1
    return [cfg.start + dt.timedelta(days=i * cfg.s2_cadence_days) for i in range(n)]


def s1_acquisitions(cfg: SampleRegionConfig, spec: SceneSpec) -> list[tuple[dt.date, str, str]]:
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


def processing_baseline(day: dt.date) -> str:
    """The L2A processing baseline in force on ``day`` (e.g. ``04.00``)."""
    current = _BASELINES[0][1]
    for first, name in _BASELINES:
        if day >= first:
            current = name
    return current


def baseline_offset_dn(baseline: str) -> float:
    """The DN offset of ``baseline`` (``sensors.S2.s2_scaling``: +1000 from 04.00 on, else 0)."""
    scaling = S2.s2_scaling
    if scaling is None:  # pragma: no cover - sensors.py always sets it for S2
        raise SampleRegionError("sensors.S2 has no s2_scaling; cannot encode DN")
    return scaling.offset_dn if float(baseline) >= scaling.offset_from_baseline else 0.0


def solar_geometry(day: dt.date, lat_deg: float, local_hour: float) -> tuple[float, float]:
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


def mgrs_tile(lon: float, lat: float, epsg: int, easting: float, northing: float) -> str:
    """MGRS 100 km square id (e.g. ``32TMT``) of a point in its UTM zone."""
    zone = UtmZone.from_epsg(epsg, error=SampleRegionError).number
    bands = "CDEFGHJKLMNPQRSTUVWX"
    band = bands[min(max(int((lat + 80) // 8), 0), len(bands) - 1)]
    col_sets = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
    col = col_sets[(zone - 1) % 3][int(easting // 100_000) - 1]
    rows = "ABCDEFGHJKLMNPQRSTUV"
    row = rows[(int(northing // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return f"{zone:02d}{band}{col}{row}"


# ---------------------------------------------------------------------------------------- random fields


def scene_rng(cfg: SampleRegionConfig, scene_index: int, *stream: int) -> np.random.Generator:
    """The random generator of one scene and stream, seeded from ``cfg.seed``."""
    return np.random.default_rng([cfg.seed, scene_index, *stream])


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma_px: float | tuple[float, float]
) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean and unit variance, shape ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_px, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def parcels(rng: np.random.Generator, n: int, field_px: int) -> np.ndarray:
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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, clipped against overflow."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def double_logistic(doy: np.ndarray, sos: float, eos: float, k_up: float, k_down: float) -> np.ndarray:
    """Season shape in [0, 1]: rises around day-of-year ``sos``, falls around ``eos``."""
    return np.clip(sigmoid(k_up * (doy - sos)) - sigmoid(k_down * (doy - eos)), 0.0, 1.0)


def band_vector(name: str) -> np.ndarray:
    """End-member ``name`` as a [10] float32 vector in ``sensors.S2.bands`` order."""
    spectrum = _SPECTRA[name]
    missing = [b for b in S2.bands if b not in spectrum]
    if missing:  # pragma: no cover - only if sensors.S2 gains a band this module has no spectrum for
        raise SampleRegionError(
            f"no synthetic {name!r} spectrum for S2 band(s) {missing}; add them to _SPECTRA"
        )
    return np.array([spectrum[b] for b in S2.bands], np.float32)
