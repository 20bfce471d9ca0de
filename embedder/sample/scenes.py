"""One synthetic scene: its land cover, vegetation, soil moisture, S2 and S1 acquisitions and truth.

:class:`Scene` generates everything random about a scene once, then renders each S2/S1 date from it and
writes its COGs, STAC Items and truth (the physics is described in :mod:`embedder.sample`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pystac
from affine import Affine
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping
from shapely.ops import transform as shapely_transform

from embedder.config import SampleRegionConfig, SceneSpec
from embedder.geo import UtmZone
from embedder.sample.files import (
    COG_TYPE,
    EO_EXT,
    PROJ_EXT,
    RASTER_EXT,
    SAR_EXT,
    SAT_EXT,
    save_npz,
    scl_to_20m,
    write_cog,
)
from embedder.sample.manifest import SampleRegionError, SceneInfo
from embedder.sample.physics import (
    CLASS_CODE,
    band_vector,
    baseline_offset_dn,
    double_logistic,
    mgrs_tile,
    parcels,
    processing_baseline,
    s1_acquisitions,
    s2_days,
    scene_rng,
    sigmoid,
    smooth_noise,
    solar_geometry,
)
from embedder.sensors import S1, S2

__all__ = ["Scene", "VegDriver"]

VegDriver = Callable[[np.ndarray], np.ndarray]
"""An external vegetation driver: S2 days (``datetime64[D]``, shape [T]) -> state in [0, 1], shape [T]."""


_UTC = dt.UTC


# ------------------------------------------------------------------------------------------ one scene


@dataclass
class _S2Date:
    day: dt.date
    reflectance: np.ndarray  # [10, H, W] float32, clear-sky L2A as written
    veg: np.ndarray  # [H, W] float32


class Scene:
    """Everything random about one scene, generated once; then S2/S1 dates are rendered from it."""

    def __init__(
        self, cfg: SampleRegionConfig, spec: SceneSpec, index: int, *, driver: VegDriver | None
    ) -> None:
        self.cfg, self.spec, self.index, self.driver = cfg, spec, index, driver
        n = self.n = cfg.size_px
        # 1. Grid: centre -> UTM, snap the corner to 20 m so the 10 m and 20 m grids share edges (as PC's).
        expected = UtmZone.containing(spec.lon, spec.lat).epsg
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
        self.mgrs = mgrs_tile(spec.lon, spec.lat, spec.epsg, cx, cy)
        footprint = shapely_transform(self.to_lonlat.transform, box(*self.bounds).segmentize(n * 10 / 4))
        self.bbox_lonlat = tuple(round(v, 7) for v in footprint.bounds)

        # 2. Landscape.
        rng = scene_rng(cfg, index, 1)
        self.parcel_id = parcels(rng, n, cfg.field_size_px)
        n_parcels = int(self.parcel_id.max()) + 1
        farm_classes = np.array(
            [CLASS_CODE["grassland"], CLASS_CODE["winter_crop"], CLASS_CODE["summer_crop"]]
        )
        order = np.concatenate([rng.permutation(farm_classes) for _ in range(n_parcels // 3 + 1)])[:n_parcels]
        lc = order[self.parcel_id].astype(np.uint8)
        relief = smooth_noise(rng, (n, n), max(2.0, n / 8))
        forest = relief > np.quantile(relief, 0.72)
        kind = smooth_noise(rng, (n, n), max(2.0, n / 6))
        kind_thr = np.median(kind[forest]) if forest.any() else 0.0
        lc[forest & (kind >= kind_thr)] = CLASS_CODE["needleleaf_forest"]
        lc[forest & (kind < kind_thr)] = CLASS_CODE["broadleaf_forest"]
        rr, cc = np.mgrid[0:n, 0:n]
        centre = rng.uniform(0.2, 0.8, size=2) * n
        town = np.hypot(rr - centre[0], cc - centre[1]) + 1.5 * smooth_noise(rng, (n, n), 1.5)
        lc[town <= np.quantile(town, 0.07)] = CLASS_CODE["urban"]
        phase, wiggle = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.12) * n
        river_col = rng.uniform(0.25, 0.75) * n + wiggle * np.sin(2 * np.pi * rr / (0.8 * n) + phase)
        lc[np.abs(cc - river_col) < max(1.0, n / 40)] = CLASS_CODE["water"]
        if spec.footprint_class is not None:  # e.g. a flux tower's vegetation around the scene centre
            if spec.footprint_class not in CLASS_CODE:
                raise SampleRegionError(
                    f"scene {spec.name!r}: footprint_class {spec.footprint_class!r} is not one of {sorted(CLASS_CODE)}"
                )
            disc = np.hypot(rr - (n - 1) / 2, cc - (n - 1) / 2) <= spec.footprint_radius_px
            lc[disc] = CLASS_CODE[spec.footprint_class]
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
            rng.uniform(0.78, 0.95, n_parcels)[pid] * (1 + 0.04 * smooth_noise(rng, (n, n), 1.0))
        ).astype(np.float32)
        self.pheno_jitter = 4.0 * smooth_noise(rng, (n, n), max(1.0, n / 16))  # days
        self.soil_wetness = np.clip(
            1.0 + 0.15 * smooth_noise(rng, (n, n), max(1.0, n / 10)), 0.6, 1.4
        ).astype(np.float32)
        self.urban_bright = rng.gamma(2.0, 0.5, (n, n)).astype(np.float32)  # strong scatterers, mean 1

        # 4. Weather: daily soil moisture over the period (plus 30 spin-up days).
        wrng = scene_rng(cfg, index, 2)
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
        """Scene soil moisture on ``day``."""
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
            broad = double_logistic(doy, 115.0, 290.0, 0.12, 0.09)
            needle = double_logistic(doy, 100.0, 285.0, 0.05, 0.05)
            grass = double_logistic(doy, 85.0, 300.0, 0.08, 0.06)
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
        v = np.where(lc == CLASS_CODE["needleleaf_forest"], 0.62 + 0.2 * needle, v)
        v = np.where(lc == CLASS_CODE["broadleaf_forest"], 0.12 + 0.8 * broad, v)
        v = np.where(lc == CLASS_CODE["grassland"], (0.25 + 0.6 * grass) * mow, v)
        v = np.where(np.isin(lc, (CLASS_CODE["winter_crop"], CLASS_CODE["summer_crop"])), crops, v)
        v = np.where(lc == CLASS_CODE["urban"], 0.06 + 0.08 * broad, v)
        v = v * np.where(lc == CLASS_CODE["water"], 0.0, self.vmax[None] / 0.9)
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
                0.25 * (1 - np.exp(-np.maximum(t - sow - 10, 0) / 25.0)) + 0.65 * sigmoid(0.08 * (t - spring))
            ) * (1 - 0.85 * sigmoid(0.12 * (t - senesce)))
            w = np.where((t >= sow + 10) & (t < harvest), w, 0.0)
            # Summer crop: sown ~25 April, canopy closes in July, dries in September, harvest ~25 Sept.
            sow_s = (dt.date(year, 4, 25) - epoch).days + base
            harvest_s = (dt.date(year, 9, 25) - epoch).days + shift + self.harvest_jitter[None]
            s = sigmoid(0.09 * (t - sow_s - 50.0)) * (1 - 0.9 * sigmoid(0.1 * (t - harvest_s + 25.0)))
            s = np.where((t >= sow_s + 10) & (t < harvest_s), s, 0.0)
            v = (
                v
                + np.where(lc == CLASS_CODE["winter_crop"], w, 0.0)
                + np.where(lc == CLASS_CODE["summer_crop"], s, 0.0)
            )
        return v

    def surface_reflectance(self, day: dt.date, veg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Clear-sky L2A reflectance [10, H, W] float32 for one day from the vegetation state [H, W]."""
        lc = self.landcover
        sm = np.clip(self.sm_on(day) * self.soil_wetness, 0.0, 1.0)  # [H, W]
        soil = band_vector("soil")[:, None, None] * (
            1 - band_vector("wet_darkening")[:, None, None] * sm[None]
        )
        litter = band_vector("litter")[:, None, None]
        green = band_vector("green")[:, None, None]
        needle = band_vector("needle")[:, None, None]
        background = np.where(
            np.isin(lc, (CLASS_CODE["winter_crop"], CLASS_CODE["summer_crop"]))[None],
            0.8 * soil + 0.2 * litter,
            np.where(
                (lc == CLASS_CODE["grassland"])[None],
                0.4 * soil + 0.6 * litter,
                0.5 * (0.3 * soil + 0.7 * litter),
            ),
        )  # [10, H, W]
        background = np.where(
            (lc == CLASS_CODE["urban"])[None],
            band_vector("urban")[:, None, None] * self.urban_bright[None] ** 0.3,
            background,
        )
        canopy = np.where((lc == CLASS_CODE["needleleaf_forest"])[None], needle, green)
        refl = veg[None] * canopy + (1 - veg[None]) * background  # [10, H, W]
        turbidity = 0.08 * max(0.0, self.sm_on(day) - 0.55)  # rain-fed sediment brightens red/red-edge
        water = band_vector("water")[:, None, None] + turbidity * band_vector("sediment")[:, None, None]
        refl = np.where((lc == CLASS_CODE["water"])[None], water, refl)
        gain = rng.normal(1.0, 0.015)  # residual atmosphere, per date
        haze = abs(rng.normal(0.0, 0.006)) * band_vector("haze")[:, None, None]
        noise = rng.normal(0.0, self.cfg.reflectance_noise, refl.shape) * (1 + 2 * refl)
        return np.clip(refl * gain + haze + noise, 0.0005, 1.2).astype(np.float32)

    # ------------------------------------------------------------------------------------------- S2

    def write_s2(self, root: Path, tick: Callable[[], None]) -> list[pystac.Item]:
        """Render and write every S2 date of the scene (COGs under ``root``); its STAC Items."""
        cfg, spec, n = self.cfg, self.spec, self.n
        days = s2_days(cfg)
        self.s2_days = days
        self.s2_veg = self._veg_in_batches(days)  # [T, H, W]
        self.s2_clear = np.zeros((len(days), n, n), bool)
        self.s2_refl = (
            np.zeros((len(days), len(S2.bands), n, n), np.float32) if cfg.truth_reflectance else None
        )
        edge_side = 1 if self.index % 2 == 0 else -1  # which side of the swath the scene lies on
        # Which dates are fully cloudy, cut by the swath edge or streaked by cirrus: fixed shares of the dates.
        sched = scene_rng(cfg, self.index, 5)
        full, edge, cirrus = (
            set(sched.permutation(len(days))[: round(frac * len(days))].tolist())
            for frac in (cfg.full_cloud_frac, spec.swath_edge_frac, cfg.cirrus_frac)
        )
        items = []
        for ti, day in enumerate(days):
            rng = scene_rng(cfg, self.index, 3, ti)
            refl = self.surface_reflectance(day, self.s2_veg[ti], rng)
            if self.s2_refl is not None:
                self.s2_refl[ti] = refl
            hour_local = 10.5 + rng.normal(0.0, 0.05)
            zen, az = solar_geometry(day, spec.lat, hour_local)
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
        field = smooth_noise(rng, big, max(2.0, n / 10)) + 0.35 * smooth_noise(rng, big, max(0.7, n / 40))
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
            streak = smooth_noise(rng, (n, n), (max(1.0, n / 32), max(3.0, n / 6)))
            cirrus = np.clip((streak - 0.3) * 0.15, 0.0, 0.2)
        # Compose: shadow darkens (diffuse skylight keeps some blue), cirrus and cloud add their spectra.
        diffuse = 0.3 + 0.15 * band_vector("haze")[:, None, None]
        obs = refl * (1 - shadow[None] * (1 - diffuse))
        obs = obs * (1 - cirrus[None]) + cirrus[None] * 0.6 * band_vector("cloud")[:, None, None]
        obs = obs * (1 - alpha[None]) + alpha[None] * band_vector("cloud")[:, None, None] * (
            0.9 + 0.2 * alpha[None]
        )
        # SCL as the L2A classifier would see it (faint edges and weak shadows go unflagged).
        lc = self.landcover
        scl = np.where(veg > 0.3, 4, 5).astype(np.uint8)
        scl[lc == CLASS_CODE["water"]] = 6
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
        scl = scl_to_20m(scl)  # [H/2, W/2]
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
        baseline = processing_baseline(day)
        offset = baseline_offset_dn(baseline)
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
            # proj: fields as Planetary Computer's raw JSON has them (proj:epsg beside proj:code), not
            # through pystac's ProjectionExtension, whose setters write proj:code only.
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
            stac_extensions=[EO_EXT, SAT_EXT, PROJ_EXT],
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
        write_cog(path, data, crs=f"EPSG:{self.spec.epsg}", transform=transform, nodata=nodata)
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
            media_type=COG_TYPE,
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
        """Render and write every S1 acquisition of the scene (COGs under ``root``); its STAC Items."""
        cfg, spec, n = self.cfg, self.spec, self.n
        acq = s1_acquisitions(cfg, spec)
        if not acq:
            return []
        veg = self._veg_in_batches([a[0] for a in acq])  # [T1, H, W]
        lc = self.landcover
        items = []
        for k, (day, platform, direction) in enumerate(acq):
            rng = scene_rng(cfg, self.index, 4, k)
            theta = math.radians(34.0 if direction == "ascending" else 41.0) + rng.normal(0, 0.003)
            cos_t = math.cos(theta)
            sm = np.clip(self.sm_on(day) * self.soil_wetness, 0.0, 1.0)  # [H, W]
            soil_vv_db = -21.0 + 14.0 * sm  # [H, W] rougher, wetter soil -> brighter
            ploughed = np.isin(lc, (CLASS_CODE["winter_crop"], CLASS_CODE["summer_crop"])) & (veg[k] < 0.05)
            soil_vv_db = soil_vv_db + 2.0 * ploughed
            soil_vv = 10 ** (soil_vv_db / 10) * cos_t**2 / math.cos(math.radians(37.5)) ** 2
            soil_vh = soil_vv * 10 ** (-9.0 / 10)
            # Water-cloud model: volume term A * cos(theta) * (1 - tau2) plus the attenuated soil term.
            woody = np.where(
                np.isin(lc, (CLASS_CODE["needleleaf_forest"], CLASS_CODE["broadleaf_forest"])), 0.45, 0.0
            )
            biomass = np.select(
                [
                    lc == CLASS_CODE["grassland"],
                    np.isin(lc, (CLASS_CODE["winter_crop"], CLASS_CODE["summer_crop"])),
                    woody > 0,
                ],
                [1.0, 2.5, 4.0],
                0.0,
            ) * (veg[k] + woody)
            tau2 = np.exp(-2 * 0.35 * biomass / cos_t)
            a_vv = np.where(woody > 0, 0.20, np.where(lc == CLASS_CODE["grassland"], 0.08, 0.12))
            a_vh = np.where(woody > 0, 0.055, np.where(lc == CLASS_CODE["grassland"], 0.02, 0.04))
            vv = a_vv * cos_t * (1 - tau2) + tau2 * soil_vv
            vh = a_vh * cos_t * (1 - tau2) + tau2 * soil_vh
            wind = rng.gamma(2.0, 2.5)  # m/s
            water_vv = 10 ** ((-23.0 + 1.0 * min(wind, 8.0)) / 10)  # calm -23 dB, rough up to -15 dB
            vv = np.where(lc == CLASS_CODE["water"], water_vv, vv)
            vh = np.where(lc == CLASS_CODE["water"], water_vv * 10 ** (-7.0 / 10), vh)
            vv = np.where(lc == CLASS_CODE["urban"], 10 ** (-2.5 / 10) * self.urban_bright, vv)
            vh = np.where(lc == CLASS_CODE["urban"], 10 ** (-10.0 / 10) * self.urban_bright, vh)
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
            stac_extensions=[SAR_EXT, SAT_EXT, PROJ_EXT, RASTER_EXT],
            collection=S1.collection,
        )
        for key, asset in assets.items():
            item.add_asset(key, asset)
        return item

    # ----------------------------------------------------------------------------------------- truth

    def write_truth(self, root: Path, *, n_s2: int, n_s1: int) -> SceneInfo:
        """Write ``truth/<scene>/`` (``landcover.tif``, ``truth.npz``); the scene's :class:`SceneInfo`."""
        folder = root / "truth" / self.spec.name
        folder.mkdir(parents=True)
        lc_path = folder / "landcover.tif"
        write_cog(lc_path, self.landcover, crs=f"EPSG:{self.spec.epsg}", transform=self.transform10, nodata=0)
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
        save_npz(truth_path, arrays)
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
