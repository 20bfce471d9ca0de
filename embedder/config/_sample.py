"""Config of the sample region (embedder/sample/): the synthetic S1 + S2 catalog that is the embedded default."""

from __future__ import annotations

import dataclasses
import datetime as dt

from embedder.config._base import ConfigError
from embedder.geo import check_order

__all__ = ["SampleRegionConfig", "SceneSpec"]


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """One square scene of the sample region, on the 10 m grid of its UTM zone."""

    name: str
    """Short id used in file names, truth folders and ``region.json`` (letters, digits, ``_``, ``-``)."""
    epsg: int
    """UTM EPSG code of the scene grid (326xx north, 327xx south); must be the zone of the centre."""
    lon: float
    """Longitude of the scene centre, degrees east."""
    lat: float
    """Latitude of the scene centre, degrees north."""
    s2_relative_orbit: int = 22
    """Sentinel-2 relative orbit of the scene's acquisitions (``sat:relative_orbit``)."""
    s1_relative_orbits: tuple[int, int] = (15, 66)
    """Sentinel-1 relative orbits (ascending, descending)."""
    phenology_shift_days: float = 0.0
    """Shift of every class's seasonal calendar, days (positive = later, e.g. higher or further north)."""
    swath_edge_frac: float = 0.15
    """Share of S2 dates whose swath edge cuts through the scene (a slanted strip of DN 0 / SCL 0)."""
    footprint_class: str | None = None
    """Land-cover class name (``embedder.sample.CLASSES``) painted on a disc at the scene centre, e.g. a
    flux tower's vegetation; None: the centre is whatever the landscape draws there."""
    footprint_radius_px: int = 0
    """Radius of that disc in 10 m pixels (0 with ``footprint_class`` None)."""

    def __post_init__(self) -> None:
        if not self.name or not all(ch.isalnum() or ch in "_-" for ch in self.name):
            raise ConfigError(f"SceneSpec.name {self.name!r} must be non-empty letters, digits, '_' or '-'")
        if not 0.0 <= self.swath_edge_frac <= 1.0:
            raise ConfigError(f"SceneSpec.swath_edge_frac={self.swath_edge_frac} must be in [0, 1]")
        if self.footprint_radius_px < 0 or (self.footprint_class is None) != (self.footprint_radius_px == 0):
            raise ConfigError(
                f"SceneSpec {self.name!r}: footprint_class={self.footprint_class!r} and footprint_radius_px="
                f"{self.footprint_radius_px} must be given together (a class name and a positive radius)"
            )


def _default_scenes() -> tuple[SceneSpec, ...]:
    return (
        SceneSpec(name="alps_north", epsg=32632, lon=8.5, lat=47.1, s2_relative_orbit=108,
                  s1_relative_orbits=(15, 66), phenology_shift_days=6.0),
        SceneSpec(name="ljubljana_basin", epsg=32633, lon=14.5, lat=45.9, s2_relative_orbit=122,
                  s1_relative_orbits=(73, 22), phenology_shift_days=-4.0),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SampleRegionConfig:
    """The synthetic sample region: scenes, period, cadences, sizes and the weather of the year."""

    scenes: tuple[SceneSpec, ...] = dataclasses.field(default_factory=_default_scenes)
    """The scenes; at least one. The default has two scenes in two UTM zones (32632, 32633)."""
    size_px: int = 64
    """Scene width and height in 10 m pixels (even: the 20 m bands and SCL are ``size_px // 2``)."""
    start: dt.date = dt.date(2021, 7, 1)
    """First day of the period (inclusive). The default crosses baseline 04.00 (2022-01-25)."""
    end: dt.date = dt.date(2022, 6, 30)
    """Last day of the period (inclusive)."""
    s2_cadence_days: int = 5
    """Days between S2 acquisitions of a scene (S2A and S2B alternate)."""
    s1_cadence_days: int = 12
    """Days between S1A acquisitions of one orbit direction (S1B adds one in between until it failed)."""
    s1b_until: dt.date | None = dt.date(2021, 12, 23)
    """Last day of Sentinel-1B acquisitions (it failed on 2021-12-23); None for no S1B."""
    seed: int = 0
    """Seed of everything random; the same config writes byte-identical files."""
    mean_cloud_cover: float = 0.45
    """Mean cloud cover share of an S2 date (winter cloudier, summer clearer)."""
    full_cloud_frac: float = 0.12
    """Share of S2 dates that are entirely cloudy."""
    cirrus_frac: float = 0.2
    """Share of S2 dates (not fully cloudy) with streaks of thin cirrus (SCL 10)."""
    field_size_px: int = 12
    """Typical side of an agricultural parcel, 10 m pixels."""
    reflectance_noise: float = 0.004
    """Standard deviation of per-pixel reflectance noise (sensor and residual atmosphere)."""
    s1_looks: float = 4.4
    """Equivalent number of looks of the S1 RTC speckle (PC's items say 4.4)."""
    truth_reflectance: bool = False
    """Also store the clear-sky surface reflectance of every S2 date in the truth (large)."""

    def __post_init__(self) -> None:
        if not self.scenes:
            raise ConfigError("SampleRegionConfig.scenes is empty; give at least one SceneSpec")
        names = [s.name for s in self.scenes]
        if len(set(names)) != len(names):
            raise ConfigError(f"SampleRegionConfig.scenes has duplicate names {names}; make them unique")
        if self.size_px < 8 or self.size_px % 2:
            raise ConfigError(
                f"SampleRegionConfig.size_px={self.size_px} must be even and at least 8 (20 m bands halve it)"
            )
        check_order(self.start, self.end, name="SampleRegionConfig: period", error=ConfigError)
        for key in ("s2_cadence_days", "s1_cadence_days", "field_size_px"):
            if getattr(self, key) < 1:
                raise ConfigError(f"SampleRegionConfig.{key}={getattr(self, key)} must be at least 1")
        for key in ("mean_cloud_cover", "full_cloud_frac", "cirrus_frac"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"SampleRegionConfig.{key}={getattr(self, key)} must be in [0, 1]")

    @classmethod
    def tiny(cls) -> SampleRegionConfig:
        """Tests: two 32 px scenes over three months across the baseline 04.00 change, 10-day S2 cadence."""
        return cls(size_px=32, start=dt.date(2021, 12, 16), end=dt.date(2022, 3, 15), s2_cadence_days=10,
                   truth_reflectance=True)  # fmt: skip

    @classmethod
    def small(cls) -> SampleRegionConfig:
        """The demo default: two 64 px scenes, one year of S2 every 5 days and S1 both directions."""
        return cls()
