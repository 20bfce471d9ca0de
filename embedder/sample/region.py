"""Writing a sample region: :func:`write_sample_region`, its scenes and drivers, and the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pystac

from embedder.config import ConfigError, SampleRegionConfig, SceneSpec, load_config
from embedder.geo import UtmZone, parse_date
from embedder.sample.files import write_catalog
from embedder.sample.manifest import (
    MANIFEST_NAME,
    SampleRegion,
    SampleRegionError,
    SceneInfo,
    write_region_manifest,
)
from embedder.sample.physics import CLASSES, s1_acquisitions, s2_days
from embedder.sample.scenes import Scene, VegDriver

__all__ = [
    "cli_main",
    "default_scenes",
    "series_driver",
    "write_sample_region",
]

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


def default_scenes(n: int) -> tuple[SceneSpec, ...]:
    """The default two scenes (EPSG 32632 and 32633), plus ``n - 2`` more European scenes in other zones."""
    if n < 1:
        raise SampleRegionError(f"number of scenes {n} must be at least 1")
    base = SampleRegionConfig().scenes
    extra: list[SceneSpec] = []
    for i, (name, lon, lat) in enumerate(_EXTRA_SITES * (1 + n // len(_EXTRA_SITES))):
        if len(base) + len(extra) >= n:
            break
        suffix = "" if i < len(_EXTRA_SITES) else f"_{i // len(_EXTRA_SITES)}"
        lat_i = lat + 0.2 * (i // len(_EXTRA_SITES))
        extra.append(
            SceneSpec(
                name=f"{name}{suffix}",
                epsg=UtmZone.containing(lon, lat_i).epsg,
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
    total = sum(len(s2_days(cfg)) + len(s1_acquisitions(cfg, s)) for s in cfg.scenes)
    with _progress(total, progress) as tick:
        for index, spec in enumerate(cfg.scenes):
            scene = Scene(cfg, spec, index, driver=drivers.get(spec.name))
            items2 = scene.write_s2(root, tick)
            items1 = scene.write_s1(root, tick)
            info = scene.write_truth(root, n_s2=len(items2), n_s1=len(items1))
            s2_items += items2
            s1_items += items1
            scenes_info.append(info)

    catalog_path = write_catalog(root, cfg, s2_items, s1_items)
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
    write_region_manifest(region, drivers=sorted(drivers))
    return region


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
    day = functools.partial(parse_date, error=argparse.ArgumentTypeError)
    parser.add_argument("--start", type=day, help="first day YYYY-MM-DD (default 2021-07-01)")
    parser.add_argument("--end", type=day, help="last day YYYY-MM-DD (default 2022-06-30)")
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
