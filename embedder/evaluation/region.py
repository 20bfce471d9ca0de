"""The evaluations' shared data: the sample region, its training shards and batches of them.

Every evaluation that trains on the synthetic sample region (:mod:`~embedder.evaluation.fidelity`,
:mod:`~embedder.evaluation.sweep`, :mod:`~embedder.evaluation.convergence`, :mod:`~embedder.evaluation.quality`)
starts here:

1. **Sample region** (:func:`prepare_region`, :func:`embedder.sample.write_sample_region`): the scenes of a
   :class:`~embedder.evaluation.fidelity.FidelityConfig`, reused when ``region.json`` holds the same config.
2. **Training shards** (:func:`prepare_shards`): the per-cube functions the Ray job
   ``ray_jobs/build_shards.py`` runs (:func:`embedder.data.shards.plan_cubes`,
   :func:`~embedder.data.shards.build_cube_task`), here in process; complete cubes are reused. Splits are
   dealt by cube as always (375/83/42).
3. **Batches** (:func:`batch_loader`), the split models are scored on (:func:`heldout_split`) and the
   frame-mean reconstruction every autoencoder must beat (:func:`frame_mean_baselines`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedder.config import BuildShardsConfig, SampleRegionConfig, to_dict
from embedder.sample import SampleRegion

if TYPE_CHECKING:
    from embedder.evaluation.fidelity import FidelityConfig

__all__ = [
    "STAGE1_KIND",
    "EvaluationDataError",
    "batch_loader",
    "frame_mean_baselines",
    "heldout_split",
    "prepare_data",
    "prepare_region",
    "prepare_shards",
    "region_config",
    "shards_config",
    "spread_indices",
]


class EvaluationDataError(ValueError):
    """The region or its shards cannot give what a run asks for (too few cubes, missing splits)."""


# --- 1. the sample region ---------------------------------------------------------------------------------


def region_config(cfg: FidelityConfig) -> SampleRegionConfig:
    """The sample region of ``cfg``: its scenes, size, period, S2 cadence and seed."""
    from embedder.sample import default_scenes

    return dataclasses.replace(
        SampleRegionConfig(), scenes=default_scenes(cfg.n_scenes), size_px=cfg.scene_px, start=cfg.start,
        end=cfg.end, s2_cadence_days=cfg.s2_cadence_days, seed=cfg.region_seed,
    )  # fmt: skip


def prepare_region(out_dir: str | Path, cfg: FidelityConfig) -> SampleRegion:
    """The comparison's sample region in ``out_dir``: reused when its ``region.json`` has the same config."""
    from embedder.sample import MANIFEST_NAME, read_region_manifest, write_sample_region

    root = Path(out_dir)
    want = region_config(cfg)
    if (root / MANIFEST_NAME).is_file():
        region = read_region_manifest(root)
        if to_dict(region.cfg) == to_dict(want):
            return region
    if root.exists():
        shutil.rmtree(root)
    return write_sample_region(root, cfg=want)


# --- 2. training shards -----------------------------------------------------------------------------------


def shards_config(region: SampleRegion, shard_root: Path, cfg: FidelityConfig) -> BuildShardsConfig:
    """The shard build of ``cfg``'s first ``cfg.cubes`` cubes of ``region`` into ``shard_root``."""
    return BuildShardsConfig(
        catalog=str(region.catalog_path), shard_root=str(shard_root), start=region.start, end=region.end,
        region_manifest=str(region.manifest_path), cube_size_px=cfg.cube_px, seed=cfg.seed,
        patches=cfg.patches, chunk_samples=64, max_cubes=cfg.cubes,
    )  # fmt: skip


def prepare_shards(region: SampleRegion, shard_root: str | Path, cfg: FidelityConfig) -> dict[str, int]:
    """Build the training shards of the region's first ``cfg.cubes`` cubes (complete ones are reused).

    Runs :func:`embedder.data.shards.build_cube_task` for each planned cube, as ``ray_jobs/build_shards.py``
    does on Ray. A root built with other settings (recorded in ``fidelity-shards.json``) is rebuilt.
    Returns cubes per split and training samples per kind.
    """
    from embedder.data.loader import ShardDataset
    from embedder.data.shards import build_cube_task, cube_is_built, plan_cubes

    root = Path(shard_root)
    scfg = shards_config(region, root, cfg)
    stamp = root / "fidelity-shards.json"
    settings = json.dumps(to_dict(scfg), sort_keys=True, default=str)
    if root.exists() and (not stamp.is_file() or stamp.read_text() != settings):
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(settings)
    tasks = plan_cubes(scfg)
    if len(tasks) < cfg.cubes:
        raise EvaluationDataError(f"the region has {len(tasks)} cubes of {cfg.cube_px} px, not {cfg.cubes}")
    for task in tasks:
        if not cube_is_built(task, scfg):
            build_cube_task(task, scfg)
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        fused = ShardDataset(str(root), split=split, kind="fused")
        counts[f"cubes_{split}"] = len(fused.urls)
        counts[f"samples_{split}_fused"] = len(fused)
        counts[f"samples_{split}_s1only"] = len(ShardDataset(str(root), split=split, kind="s1only"))
    return counts


def prepare_data(
    out_dir: Path, cfg: FidelityConfig, *, seconds: dict[str, float], log: Callable[[str], None]
) -> tuple[SampleRegion, dict[str, int]]:
    """:func:`prepare_region` and :func:`prepare_shards` in ``out_dir/region`` and ``out_dir/shards``.

    Records their wall time in ``seconds`` (``region``, ``shards``) and logs a line for each.
    """
    t0 = time.perf_counter()
    region = prepare_region(out_dir / "region", cfg)
    seconds["region"] = time.perf_counter() - t0
    log(f"region: {len(region.scenes)} scene(s) of {cfg.scene_px} px ({seconds['region']:.0f} s)")
    t0 = time.perf_counter()
    counts = prepare_shards(region, out_dir / "shards", cfg)
    seconds["shards"] = time.perf_counter() - t0
    log(f"shards: {counts} ({seconds['shards']:.0f} s)")
    return region, counts


# --- 3. batches, the held-out split and the frame-mean baseline ----------------------------------------------


STAGE1_KIND = {"s1": "s1only", "s2": "fused"}
"""Training windows of each sensor's stage-1 autoencoder: S1 on its own time axis, S2 on fused windows."""


def spread_indices(n: int, limit: int | None) -> list[int]:
    """At most ``limit`` indices evenly spread over ``range(n)`` (all when ``limit`` is None)."""
    if limit is None or n <= limit:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


def batch_loader(ds: Any, *, batch_size: int, seed: int, shuffle: bool) -> Callable[[int], Iterable[Any]]:
    """``epoch -> DataLoader``: chunk-shuffled (seeded by ``seed`` and the epoch) or in order."""
    from torch.utils.data import DataLoader

    from embedder.data.loader import ChunkShuffleSampler

    if shuffle:
        sampler = ChunkShuffleSampler(ds, shuffle=True, seed=seed)
        loader = DataLoader(ds, batch_size=batch_size, sampler=sampler)

        def per_epoch(epoch: int) -> Iterable[Any]:
            sampler.set_epoch(epoch)
            return loader

        return per_epoch
    fixed = DataLoader(ds, batch_size=batch_size, shuffle=False)
    return lambda epoch: fixed


def _frame_mean_baseline(ds: Any, sensor: str, *, batch_size: int) -> float:
    """Centre MAE of reconstructing each frame by its mean over valid pixels (per band), over ``ds``."""
    from torch.utils.data import DataLoader

    from embedder.losses import centre_mae

    total, n = 0.0, 0
    for batch in DataLoader(ds, batch_size=batch_size, shuffle=False):
        x, mask = batch[sensor], batch[f"{sensor}_mask"]  # [B, T, C, 15, 15]
        m = mask.to(x.dtype)
        mean = (x * m).sum((-2, -1), keepdim=True) / m.sum((-2, -1), keepdim=True).clamp_min(
            1.0
        )  # [B, T, C, 1, 1]
        total += float(centre_mae(mean.expand_as(x), x, mask)) * len(x)  # weighted as evaluate() does
        n += len(x)
    return total / max(n, 1)


def heldout_split(counts: Mapping[str, int]) -> str:
    """The split models are scored on: ``test``, or ``val`` when no cube was dealt to test.

    ``counts`` is what :func:`prepare_shards` returns.
    """
    return "test" if counts["samples_test_fused"] and counts["samples_test_s1only"] else "val"


def frame_mean_baselines(shard_root: str | Path, split: str, cfg: FidelityConfig) -> dict[str, float]:
    """Centre MAE (``s1``, ``s2``) of the trivial frame-mean reconstruction on the scored samples of ``split``.

    The same (at most ``cfg.eval_samples``, evenly spread) samples :func:`train_stage1` scores; a model
    below this has learned something about the pixel.
    """
    from torch.utils.data import Subset

    from embedder.data.loader import ShardDataset

    out = {}
    for sensor, kind in STAGE1_KIND.items():
        held = ShardDataset(str(shard_root), split=split, kind=kind)
        subset = Subset(held, spread_indices(len(held), cfg.eval_samples))
        out[sensor] = _frame_mean_baseline(subset, sensor, batch_size=cfg.batch_size)
    return out
