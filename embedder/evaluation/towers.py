"""Tower-site scenes: the sample region placed at real flux towers, driven by their real fAPAR (issue 6.3).

Each scene is centred on a flux tower of ``realdata/gpp`` (FluxDataKit ``fdk_rsofun_11sites``) whose
record overlaps the Sentinel era (:data:`TOWER_SITES`). The natural classes' vegetation state follows
that tower's daily MODIS fAPAR from the forcing file (through :func:`embedder.sample.series_driver`), so
the synthetic imagery carries the real seasonal signal of the site. The pipeline
(:func:`run_gpp_towers`, ``embedder gpp-towers OUT``) then:

1. writes the scenes (:func:`write_tower_scenes`);
2. loads each scene's cube and embeds it with a fusion checkpoint, or with a small model trained here on
   patches of the same cubes when no checkpoint is given (:func:`quick_train_fusion`);
3. averages the embeddings (``F01..F07``) and the raw S2 bands (``B02..B12``, the baseline) within
   ``radius_m`` of the tower on every date (:func:`embedder.gpp.tower_features`);
4. runs :func:`embedder.gpp.run_evaluation` on both feature sets against the towers' real observed GPP
   (temporal and leave-one-site-out splits), with the NDVI/EVI and LUE baselines, and writes one table.

What the numbers mean: the imagery is synthetic. Only the timing and shape of the vegetation state come
from the tower (its fAPAR, which the LUE baseline also uses directly); the land cover around the tower,
the reflectance physics, clouds and S1 are simulated. A good score therefore says the embedding keeps
the seasonal vegetation signal through clouds, gaps and the model, not that it would predict GPP from
real Sentinel imagery.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from embedder.config import (
    FusionConfig,
    GppConfig,
    ModelConfig,
    PatchConfig,
    SampleRegionConfig,
    SceneSpec,
    TrainConfig,
)
from embedder.geo import UtmZone
from embedder.models.fusion import FusionModel
from embedder.sample import (
    MANIFEST_NAME,
    SampleRegion,
    SceneInfo,
    read_region_manifest,
    series_driver,
    write_sample_region,
)
from embedder.sensors import EMBEDDING_DIM, PRIMARY_SENSOR, WINDOW_DATES

__all__ = [
    "DEFAULT_GPP_DIR",
    "FOOTPRINT_RADIUS_PX",
    "IGBP_CLASS",
    "NDVI_GATE_R2",
    "TOWER_DRIVERS",
    "TOWER_SITES",
    "TowerError",
    "band_dataset",
    "cli_main",
    "embed_scene",
    "fapar_ceiling",
    "gpp_figures",
    "load_scene_cube",
    "quick_train_fusion",
    "run_gpp_towers",
    "tower_gpp_config",
    "tower_scene_features",
    "tower_scene_specs",
    "write_tower_scenes",
]

DEFAULT_GPP_DIR = Path("/work/shared/realdata/gpp")
"""Folder with ``fdk_rsofun_11sites_*`` (site info, daily forcing, daily GPP)."""
TOWER_SITES: tuple[str, ...] = ("CA-Cbo", "CH-Aws", "CH-Fru", "ES-LM2", "FI-Let", "IT-Lav")
"""FluxDataKit sites whose records overlap the Sentinel era (2015-2020)."""
TOWER_DRIVERS: tuple[str, ...] = ("ppfd", "temp", "vpd")
"""Forcing every GPP model of the tower evaluation gets beside its image features (``GppConfig.drivers``):
light, temperature and dryness, which greenness cannot stand in for at evergreen sites."""
SITE_INFO = "fdk_rsofun_11sites_site_info.csv"
FORCING = "fdk_rsofun_11sites_daily_forcing.csv.gz"
FLUX = "fdk_rsofun_11sites_daily_gpp_nee_le.csv"
CONTEXT_DAYS = 120
"""Days of imagery written before the first evaluated year, so the first dates have 5 usable dates before."""


class TowerError(ValueError):
    """Bad tower-scene input (unknown site, missing file, forcing that does not cover the period)."""


def _site_info(gpp_dir: Path) -> pd.DataFrame:
    path = gpp_dir / SITE_INFO
    if not path.is_file():
        raise TowerError(f"no {SITE_INFO} in {str(gpp_dir)!r}; pass --gpp-dir with the FluxDataKit files")
    return pd.read_csv(path).set_index("sitename")


IGBP_CLASS: dict[str, str] = {
    "GRA": "grassland",
    "SAV": "grassland",
    "WSA": "grassland",
    "CSH": "grassland",
    "OSH": "grassland",
    "DBF": "broadleaf_forest",
    "MF": "broadleaf_forest",
    "ENF": "needleleaf_forest",
    "EBF": "needleleaf_forest",
}
"""The sample region's class for a site's IGBP land use (``igbp_land_use`` of the site table): grasses,
savannas and shrubs -> grassland; deciduous and mixed forest -> broadleaf; evergreen -> needleleaf (the
region's evergreen class, small seasonal cycle)."""

FOOTPRINT_RADIUS_PX = 10
"""Radius of the disc of the site's class around each tower (100 m: the 50 m feature radius lies inside)."""


def tower_scene_specs(
    sites: Sequence[str],
    *,
    gpp_dir: str | Path = DEFAULT_GPP_DIR,
    footprint_radius_px: int = FOOTPRINT_RADIUS_PX,
) -> tuple[SceneSpec, ...]:
    """One :class:`SceneSpec` per site, centred on the tower, on the UTM zone of the tower (named like the site).

    The tower's footprint (a disc of ``footprint_radius_px``; 0: none) is the site's vegetation class
    (:data:`IGBP_CLASS`), so the pixels the GPP features average are the vegetation the tower measures and
    their greenness follows the site's fAPAR.
    """
    info = _site_info(Path(gpp_dir))
    unknown = [s for s in sites if s not in info.index]
    if unknown:
        raise TowerError(f"unknown site(s) {unknown}; sites in {SITE_INFO} are {sorted(info.index)}")
    specs = []
    for i, site in enumerate(sites):
        lon, lat = float(info.loc[site, "lon"]), float(info.loc[site, "lat"])
        specs.append(
            SceneSpec(
                name=site,
                epsg=UtmZone.containing(lon, lat).epsg,
                lon=lon,
                lat=lat,
                s2_relative_orbit=1 + (37 * (i + 5)) % 143,
                s1_relative_orbits=(1 + (29 * i + 7) % 175, 1 + (53 * i + 19) % 175),
                footprint_class=_site_class(info, site) if footprint_radius_px > 0 else None,
                footprint_radius_px=footprint_radius_px,
            )
        )
    return tuple(specs)


def _site_class(info: pd.DataFrame, site: str) -> str:
    igbp = str(info.loc[site, "igbp_land_use"]) if "igbp_land_use" in info.columns else "?"
    if igbp not in IGBP_CLASS:
        raise TowerError(
            f"site {site!r} has IGBP land use {igbp!r}, which has no class in the sample region; known: "
            f"{sorted(IGBP_CLASS)} (add it to embedder.evaluation.towers.IGBP_CLASS)"
        )
    return IGBP_CLASS[igbp]


def _fapar_drivers(sites: Sequence[str], gpp_dir: Path, start: dt.date, end: dt.date) -> dict[str, Any]:
    path = gpp_dir / FORCING
    if not path.is_file():
        raise TowerError(f"no {FORCING} in {str(gpp_dir)!r}; pass --gpp-dir with the FluxDataKit files")
    forcing = pd.read_csv(path, usecols=["sitename", "date", "fapar"], parse_dates=["date"])
    drivers = {}
    for site in sites:
        f = forcing[forcing["sitename"] == site].sort_values("date")
        if f.empty or f["date"].min().date() > start or f["date"].max().date() < end:
            span = f"{f['date'].min().date()}..{f['date'].max().date()}" if len(f) else "nothing"
            raise TowerError(
                f"fAPAR of {site} covers {span}, not {start}..{end}; choose other years or sites"
            )
        drivers[site] = series_driver(f["date"].values.astype("datetime64[D]"), f["fapar"].to_numpy())
    return drivers


def write_tower_scenes(
    out_dir: str | Path,
    *,
    sites: Sequence[str] = TOWER_SITES,
    start: dt.date,
    end: dt.date,
    size_px: int = 32,
    cadence_days: int = 10,
    s1_cadence_days: int = 12,
    seed: int = 0,
    gpp_dir: str | Path = DEFAULT_GPP_DIR,
    progress: bool = False,
) -> SampleRegion:
    """Write a sample region with one ``size_px`` scene per tower over [start, end], driven by real fAPAR.

    The region is :func:`embedder.sample.write_sample_region` with the scenes of :func:`tower_scene_specs`
    and ``veg_drivers`` from each site's daily ``fapar`` (FluxDataKit forcing); S2 every ``cadence_days``.
    """
    gpp_dir = Path(gpp_dir)
    if end <= start:
        raise TowerError(f"end {end} is not after start {start}; swap them")
    cfg = dataclasses.replace(
        SampleRegionConfig(),
        scenes=tower_scene_specs(sites, gpp_dir=gpp_dir),
        size_px=size_px,
        start=start,
        end=end,
        s2_cadence_days=cadence_days,
        s1_cadence_days=s1_cadence_days,
        seed=seed,
    )
    drivers = _fapar_drivers(sites, gpp_dir, start, end)
    return write_sample_region(out_dir, cfg=cfg, veg_drivers=drivers, progress=progress)


def _geobox(scene: SceneInfo) -> Any:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    return GeoBox((scene.size_px, scene.size_px), Affine(*scene.transform), scene.crs)


def load_scene_cube(region: SampleRegion, scene: SceneInfo) -> xr.Dataset:
    """The whole period's S1+S2 cube of one scene of ``region`` (the scene's own grid)."""
    from embedder.data.cubes import load_cube
    from embedder.data.stac import open_catalog

    return load_cube(open_catalog(region.catalog_path), _geobox(scene), region.start, region.end)


def embed_scene(
    cube: xr.Dataset, predictor: Any, *, start: dt.date, end: dt.date, halo_px: int = 7
) -> xr.Dataset:
    """Embed a scene cube's interior on its targets in [start, end]: ``embedding`` (time, y, x, feature).

    Pixel-dates without ``FLAG_VALID`` are NaN. Coordinates are the interior pixel centres of the cube;
    ``attrs['crs']`` is the cube's, so :func:`embedder.gpp.tower_features` can read it.
    """
    from embedder.inference import masked_embeddings, prepare_tile

    tile = prepare_tile(cube, start=np.datetime64(start), end=np.datetime64(end), halo_px=halo_px)
    emb, _ = masked_embeddings(predictor.embed_tile(tile), tile.flags)  # [K, 7, h, w]
    h = slice(halo_px, cube.sizes["y"] - halo_px)
    w = slice(halo_px, cube.sizes["x"] - halo_px)
    return xr.Dataset(
        {"embedding": (("time", "y", "x", "feature"), emb.transpose(0, 2, 3, 1))},
        coords={
            "time": tile.dates.astype("datetime64[ns]"),
            "y": cube["y"].values[h],
            "x": cube["x"].values[w],
            "feature": [f"F{i + 1:02d}" for i in range(EMBEDDING_DIM)],
        },
        attrs={"crs": cube.attrs["crs"]},
    )


def band_dataset(cube: xr.Dataset, *, halo_px: int = 7) -> xr.Dataset:
    """The cube's S2 reflectance on the same interior pixels as :func:`embed_scene`, as (time, y, x, feature)."""
    s2 = cube[PRIMARY_SENSOR.name].isel(
        y=slice(halo_px, cube.sizes["y"] - halo_px), x=slice(halo_px, cube.sizes["x"] - halo_px)
    )
    arr = s2.transpose("time", "y", "x", PRIMARY_SENSOR.band_dim).rename({PRIMARY_SENSOR.band_dim: "feature"})
    return xr.Dataset({"bands": arr}, attrs={"crs": cube.attrs["crs"]})


def _inside(ds: xr.Dataset, lon: float, lat: float) -> tuple[float, float]:
    """The tower, moved to the nearest interior pixel centre when the scene grid put it in the halo.

    Scenes snap to a tile grid of their own size (embedder.sample), so a tower may sit up to half a
    scene off-centre; the imagery is synthetic and driven uniformly by the tower's fAPAR, so the
    footprint disc is taken at the nearest embedded pixel instead.
    """
    from pyproj import Transformer

    crs = str(ds.attrs["crs"])
    cx, cy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    x, y = ds["x"].values, ds["y"].values
    nx, ny = float(np.clip(cx, x.min(), x.max())), float(np.clip(cy, y.min(), y.max()))
    if (nx, ny) == (cx, cy):
        return lon, lat
    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(nx, ny)
    return float(back[0]), float(back[1])


def tower_scene_features(
    cubes: Mapping[str, xr.Dataset],
    predictor: Any | None = None,
    *,
    start: dt.date,
    end: dt.date,
    radius_m: float = 50.0,
    gpp_dir: str | Path = DEFAULT_GPP_DIR,
) -> pd.DataFrame:
    """Per-date features within ``radius_m`` of each tower: ``site, date, <features>`` for all scenes.

    ``cubes`` maps a site id to its scene cube (:func:`load_scene_cube` of a :func:`write_tower_scenes`
    region). With a ``predictor`` (:class:`embedder.inference.Predictor`) the features are the embedding
    ``F01..F07`` of the targets in [start, end] (:func:`embed_scene`); without one, the raw S2 bands
    ``B02..B12`` of the same interior pixels on every date in [start, end] (the baseline). A tower that
    the scene grid put in the halo is taken at the nearest embedded pixel (both feature sets alike).
    """
    from embedder.gpp import tower_features

    info = _site_info(Path(gpp_dir))
    parts = []
    for name, cube in cubes.items():
        lon, lat = float(info.loc[name, "lon"]), float(info.loc[name, "lat"])
        if predictor is not None:
            ds = embed_scene(cube, predictor, start=start, end=end)
        else:
            ds = band_dataset(cube).sel(
                time=slice(np.datetime64(start), np.datetime64(end) + np.timedelta64(1, "D"))
            )
        lon, lat = _inside(ds, lon, lat)
        parts.append(tower_features(ds, lon, lat, radius_m, site=name))
    return pd.concat(parts, ignore_index=True)


def tower_gpp_config(
    base: GppConfig, *, split: Literal["temporal", "loso"], years: tuple[int, int]
) -> GppConfig:
    """``base`` set up for tower scenes over ``years`` (first, last) and ``split``.

    The temporal split trains on all years but the last and evaluates the last; leave-one-site-out
    uses every year.
    """
    y0, y1 = years
    return dataclasses.replace(
        base, split=split, train_years=tuple(range(y0, y1)), val_years=(y1,),
        loso_years=tuple(range(y0, y1 + 1)),
    )  # fmt: skip


def quick_train_fusion(
    cubes: Sequence[xr.Dataset],
    *,
    run_dir: str | Path,
    epochs: int = 2,
    max_samples: int = 256,
    seed: int = 0,
) -> Path:
    """Train a small fusion model (``ModelConfig.small``) from scratch on patches of ``cubes``; returns ``best.pt``.

    A stand-in when no trained checkpoint is at hand: a few epochs on CPU, so the embedding is weak.
    """
    from embedder.checkpoints import save_checkpoint
    from embedder.data.patches import sample_fused_patches
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2
    from embedder.training import FusionObjective, fit, seed_everything

    # short windows: 11 consecutive usable dates, so sparse (10-day, cloudy) series stay under 200 days
    patch_cfg = PatchConfig(window_dates=WINDOW_DATES, temporal_stride=2)
    parts = [sample_fused_patches(c, cfg=patch_cfg, seed=seed + i)[0] for i, c in enumerate(cubes)]
    parts = [p for p in parts if len(p["centre_day"])]
    if not parts:
        raise TowerError("no training patches in the tower cubes; use a longer period or a checkpoint")
    samples = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(samples["centre_day"])
    order = np.random.default_rng(seed).permutation(n)[:max_samples]
    n_val = max(1, len(order) // 8)
    cfg = dataclasses.replace(TrainConfig.small(), max_epochs=epochs, batch_size=16, seed=seed)

    def batches(idx: np.ndarray) -> list[dict[str, torch.Tensor]]:
        keys = [k for k in samples if k not in ("row", "col", "centre_day")]
        return [
            {
                k: torch.from_numpy(np.ascontiguousarray(samples[k][idx[lo : lo + cfg.batch_size]]))
                for k in keys
            }
            for lo in range(0, len(idx), cfg.batch_size)
        ]

    seed_everything(seed)
    small = ModelConfig.small()
    model = FusionModel(
        {"s1": ModalityAutoencoder(S1, cfg=small), "s2": ModalityAutoencoder(S2, cfg=small)},
        cfg=FusionConfig.small(),
    )
    run = Path(run_dir)
    result = fit(
        model,
        batches(order[n_val:]),
        batches(order[:n_val]),
        objective=FusionObjective([S1, S2]),
        cfg=cfg,
        run_dir=run,
    )
    best = run / "best.pt"
    log_best = result.best_epoch
    return best if best.is_file() else save_checkpoint(run / f"final-{log_best}.pt", model)


def run_gpp_towers(
    out_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    years: tuple[int, int] = (2017, 2020),
    sites: Sequence[str] = TOWER_SITES,
    size_px: int = 32,
    cadence_days: int = 10,
    radius_m: float = 50.0,
    splits: Sequence[Literal["temporal", "loso"]] = ("temporal", "loso"),
    gpp_cfg: GppConfig | None = None,
    train_epochs: int = 2,
    train_samples: int = 256,
    s1_cadence_days: int = 12,
    gpp_dir: str | Path = DEFAULT_GPP_DIR,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """The whole tower pipeline (module docstring) into ``out_dir``; returns the overall metrics table.

    Writes ``out_dir/region`` (scenes), ``features_embedding.csv``, ``features_bands.csv``,
    ``gpp-<features>-<split>/`` (:func:`embedder.gpp.write_report` output), ``metrics.csv``/``metrics.md``
    (the ``ALL`` rows of every run) and ``timings.json``. The temporal split trains on all years but
    the last and evaluates the last; ``gpp_cfg`` defaults to :meth:`GppConfig.small`.
    """
    from embedder.checkpoints import load_fusion
    from embedder.gpp import read_flux, read_forcing, run_evaluation, write_report
    from embedder.gpp.evaluation import markdown_table
    from embedder.inference import Predictor

    y0, y1 = years
    if y1 <= y0:
        raise TowerError(
            f"years {years}: need at least two years (train on all but the last, evaluate the last)"
        )
    gpp_dir = Path(gpp_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    start, end = dt.date(y0, 1, 1), dt.date(y1, 12, 31)
    if (out / "region" / MANIFEST_NAME).is_file():  # resume: scenes of an earlier run with these settings
        region = read_region_manifest(out / "region")
        want = ([*sites], start - dt.timedelta(days=CONTEXT_DAYS), end, size_px, cadence_days,
                FOOTPRINT_RADIUS_PX)  # fmt: skip
        have = ([s.name for s in region.scenes], region.start, region.end, region.cfg.size_px,
                region.cfg.s2_cadence_days, max(s.footprint_radius_px for s in region.cfg.scenes))  # fmt: skip
        if have != want:
            raise TowerError(f"{out / 'region'} holds scenes {have}, not {want}; use a new output folder")
    else:
        region = write_tower_scenes(
            out / "region", sites=sites, start=start - dt.timedelta(days=CONTEXT_DAYS), end=end,
            size_px=size_px, cadence_days=cadence_days, s1_cadence_days=s1_cadence_days, seed=seed,
            gpp_dir=gpp_dir, progress=progress,
        )  # fmt: skip
    timings["scenes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cubes = {s.name: load_scene_cube(region, s) for s in region.scenes}
    timings["cubes_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if checkpoint is None:
        checkpoint = quick_train_fusion(
            list(cubes.values()),
            run_dir=out / "model",
            epochs=train_epochs,
            max_samples=train_samples,
            seed=seed,
        )
    timings["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor = Predictor(load_fusion(checkpoint), pixel_batch=1024)
    features = {
        "embedding": tower_scene_features(
            cubes, predictor, start=start, end=end, radius_m=radius_m, gpp_dir=gpp_dir
        ),
        "bands": tower_scene_features(cubes, start=start, end=end, radius_m=radius_m, gpp_dir=gpp_dir),
    }
    timings["embed_s"] = time.perf_counter() - t0
    for kind, table in features.items():
        table.to_csv(out / f"features_{kind}.csv", index=False)

    gpp = read_flux(gpp_dir / FLUX)
    gpp = gpp[gpp["site"].isin(list(sites))]
    forcing = read_forcing(gpp_dir / FORCING)
    base = gpp_cfg or GppConfig.small()
    rows = []
    t0 = time.perf_counter()
    for split in splits:
        cfg = tower_gpp_config(base, split=split, years=(y0, y1))
        for kind, table in features.items():
            models = base.models if kind == "embedding" else tuple(m for m in base.models if m != "lue")
            result = run_evaluation(table, gpp, cfg=dataclasses.replace(cfg, models=models), forcing=forcing)
            write_report(result, gpp, out / f"gpp-{kind}-{split}", cfg=cfg)
            overall = result.metrics[result.metrics["site"] == "ALL"].copy()
            overall.insert(0, "features", kind)
            rows.append(overall)
    timings["gpp_s"] = time.perf_counter() - t0
    table = pd.concat(rows, ignore_index=True)
    keep = [
        c for c in ("features", "split", "model", "n", "rmse", "nrmse", "mae", "r2") if c in table.columns
    ]
    table = table[keep]
    table.to_csv(out / "metrics.csv", index=False)
    ceiling = fapar_ceiling(gpp, forcing, sites=sites, years=(y0, y1), drivers=base.drivers)
    (out / "fapar_ceiling.json").write_text(
        json.dumps({"gpp_r2_fapar_ceiling": ceiling, "drivers": list(base.drivers)}) + "\n"
    )
    table.attrs["gpp_r2_fapar_ceiling"] = ceiling  # read by gpp_figures
    table.attrs["gpp_drivers"] = list(base.drivers)
    (out / "metrics.md").write_text(
        f"# GPP at tower scenes ({', '.join(sites)}; {y0}-{y1}, {size_px} px, S2 every {cadence_days} d)\n\n"
        "Synthetic imagery driven by each tower's real fAPAR (the tower footprint is the site's vegetation "
        "class); GPP is the towers' real observation. "
        + (
            f"Every model also gets the towers' daily {', '.join(base.drivers)}.\n\n"
            if base.drivers
            else "\n\n"
        )
        + f"**{gpp_figures(table)['gpp_verdict']}.**\n\n"
        + markdown_table(table)
    )
    (out / "timings.json").write_text(
        json.dumps({k: round(v, 1) for k, v in timings.items()}, indent=1) + "\n"
    )
    return table


NDVI_GATE_R2 = 0.5
"""The test discriminates only when the NDVI baseline explains this much of the towers' GPP (R²)."""


def fapar_ceiling(
    gpp: pd.DataFrame,
    forcing: pd.DataFrame,
    *,
    sites: Sequence[str],
    years: tuple[int, int],
    drivers: Sequence[str] = (),
) -> float:
    """R² on the last year of a pooled linear GPP ~ fAPAR model fitted on the other years.

    The scenes' vegetation *is* the towers' fAPAR, so no greenness feature of them (NDVI, bands, an
    embedding) can carry more of the GPP signal than fAPAR itself: this is the ceiling the NDVI gate is
    measured against. With ``drivers`` (``GppConfig.drivers``) the model is the NDVI baseline's with fAPAR
    in NDVI's place: fAPAR, ``fAPAR x driver`` and each driver. ``gpp`` has ``site, date, gpp``
    (:func:`embedder.gpp.read_flux`), ``forcing`` ``site, date, fapar`` and the drivers
    (:func:`embedder.gpp.read_forcing`).
    """
    from embedder.gpp.model import apply_linear, fit_linear, index_driver_design

    y0, y1 = years
    cols = ["fapar", *drivers]
    m = gpp.merge(forcing[["site", "date", *cols]], on=["site", "date"]).dropna(subset=["gpp", *cols])
    m = m[m["site"].isin(list(sites)) & m["date"].dt.year.between(y0, y1)]
    train, test = m[m["date"].dt.year < y1], m[m["date"].dt.year == y1]
    if len(train) < 10 or len(test) < 10:
        return float("nan")

    def design(t: pd.DataFrame) -> np.ndarray:
        return index_driver_design(t[["fapar"]].to_numpy(), t[list(drivers)].to_numpy())

    pred = apply_linear(fit_linear(design(train), train["gpp"].to_numpy()), design(test))
    obs = test["gpp"].to_numpy()
    return float(1.0 - ((obs - pred) ** 2).sum() / ((obs - obs.mean()) ** 2).sum())


def gpp_figures(table: pd.DataFrame, *, fapar_r2: float | None = None) -> dict[str, Any]:
    """Flat keys of a :func:`run_gpp_towers` table and the gate's verdict.

    ``gpp_r2_emb`` / ``gpp_r2_bands``: the transformer regressor (the paper's) on the embedding / on the raw
    bands; ``gpp_r2_emb_linear`` / ``gpp_r2_bands_linear`` the linear one; ``gpp_r2_ndvi`` the NDVI
    baseline, ``gpp_r2_lue`` light-use efficiency (fAPAR x PPFD). Temporal split unsuffixed, leave-one-site-
    out with ``_loso``. ``gpp_discriminates`` is whether NDVI reaches :data:`NDVI_GATE_R2` on the temporal
    split; ``gpp_verdict`` says what the run can claim. ``fapar_r2`` (:func:`fapar_ceiling`) defaults to the
    one :func:`run_gpp_towers` records in ``table.attrs``.
    """
    pick = {
        "emb": ("embedding", "transformer"),
        "emb_linear": ("embedding", "linear"),
        "bands": ("bands", "transformer"),
        "bands_linear": ("bands", "linear"),
        "ndvi": ("bands", "ndvi"),
        "lue": ("embedding", "lue"),
    }
    out: dict[str, Any] = {}
    for split, suffix in (("temporal", ""), ("loso", "_loso")):
        for key, (features, model) in pick.items():
            row = table[
                (table["split"] == split) & (table["features"] == features) & (table["model"] == model)
            ]
            if len(row):
                out[f"gpp_r2_{key}{suffix}"] = float(row["r2"].iloc[0])
    ndvi = out.get("gpp_r2_ndvi")
    if fapar_r2 is None:
        fapar_r2 = table.attrs.get("gpp_r2_fapar_ceiling")  # set by run_gpp_towers
    if fapar_r2 is not None:
        out["gpp_r2_fapar_ceiling"] = fapar_r2
    out["gpp_discriminates"] = bool(ndvi is not None and ndvi >= NDVI_GATE_R2)
    if ndvi is None:
        out["gpp_verdict"] = "no NDVI baseline on the temporal split: the test cannot say anything"
    elif not out["gpp_discriminates"]:
        out["gpp_verdict"] = (
            f"cannot discriminate: the NDVI baseline reaches R² {ndvi:.2f} < {NDVI_GATE_R2} on the held-out "
            "year, so the features of the tower pixels do not carry the towers' GPP signal; no comparison "
            "of embeddings and bands is claimed"
        )
        drivers = table.attrs.get("gpp_drivers") or []
        if fapar_r2 is not None and fapar_r2 < NDVI_GATE_R2:
            out["gpp_verdict"] += (
                f". Even the towers' true fAPAR, which drives the scenes' vegetation, reaches only R² "
                f"{fapar_r2:.2f} in a pooled linear model"
                + (f" with {', '.join(drivers)}" if drivers else "")
                + ": greenness does not explain these sites' GPP"
                + (
                    ""
                    if drivers
                    else " (light and temperature drive the evergreen ones; see GppConfig.drivers)"
                )
                + ", so no image feature can pass the gate here"
            )
    else:
        emb, bands = out.get("gpp_r2_emb", float("nan")), out.get("gpp_r2_bands", float("nan"))
        better = "above" if emb >= max(bands, ndvi) else "not above"
        drivers = table.attrs.get("gpp_drivers") or []
        given = f" (every model also given {', '.join(drivers)})" if drivers else ""
        out["gpp_verdict"] = (
            f"discriminates (NDVI R² {ndvi:.2f} >= {NDVI_GATE_R2}){given}: embedding R² {emb:.2f}, bands "
            f"{bands:.2f}, NDVI {ndvi:.2f}: the embedding is {better} both baselines"
        )
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder gpp-towers OUT``: tower scenes -> embeddings -> GPP vs real towers (and baselines)."""
    p = argparse.ArgumentParser(prog="embedder gpp-towers", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (scenes, features, metrics, figures)")
    p.add_argument("--checkpoint", type=Path, help="fusion checkpoint; default: train a small model briefly")
    p.add_argument("--years", type=int, nargs=2, default=[2017, 2020], metavar=("FIRST", "LAST"))
    p.add_argument("--sites", nargs="+", default=list(TOWER_SITES), help="FluxDataKit site ids")
    p.add_argument("--size-px", type=int, default=32, help="scene side in pixels (default 32)")
    p.add_argument("--cadence-days", type=int, default=10, help="S2 revisit of the scenes (default 10)")
    p.add_argument("--radius-m", type=float, default=50.0, help="tower footprint radius (default 50 m)")
    p.add_argument("--split", choices=["temporal", "loso"], nargs="+", default=["temporal", "loso"])
    p.add_argument("--epochs", type=int, help="GPP regressor epochs (default: GppConfig.small)")
    p.add_argument(
        "--train-epochs", type=int, default=2, help="epochs of the quick model without --checkpoint"
    )
    p.add_argument("--gpp-dir", type=Path, default=DEFAULT_GPP_DIR, help="FluxDataKit folder")
    p.add_argument(
        "--drivers",
        default=",".join(TOWER_DRIVERS),
        help=f"forcing given to every GPP model (default {','.join(TOWER_DRIVERS)}; 'none': SPEC's image only)",
    )
    args = p.parse_args(argv)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        p.error(f"--checkpoint {str(args.checkpoint)!r} does not exist; pass a fusion .pt or omit it")
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "region" / MANIFEST_NAME).is_file():
        p.error(
            f"output folder {str(args.out)!r} is not empty; pass a new folder (or one with region/ to resume)"
        )
    drivers = (
        () if args.drivers.strip().lower() == "none" else tuple(d.strip() for d in args.drivers.split(","))
    )
    gcfg = GppConfig.small(drivers=drivers)
    if args.epochs is not None:
        gcfg = dataclasses.replace(gcfg, epochs=args.epochs)
    t0 = time.perf_counter()
    table = run_gpp_towers(
        args.out, checkpoint=args.checkpoint, years=tuple(args.years), sites=args.sites, size_px=args.size_px,
        cadence_days=args.cadence_days, radius_m=args.radius_m, splits=args.split, gpp_cfg=gcfg,
        train_epochs=args.train_epochs, gpp_dir=args.gpp_dir, progress=True,
    )  # fmt: skip
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(gpp_figures(table)["gpp_verdict"])
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0
