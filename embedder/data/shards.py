"""Training shards: one Zarr v3 group per cube under a shard root URL (the torch side: :mod:`embedder.data.loader`).

Layout (docs/design.md "Training shards")::

    <root>/<cube_id>.zarr            fused samples   (s2, s2_mask, s1, s1_mask, s2_gaps, s1_gaps, ...)
    <root>/s1only/<cube_id>.zarr     S1-only samples (s1, s1_mask, s1_gaps, centre_day, row, col)
    <root>/failures.json             written by ray_jobs/build_shards.py: cubes that failed, with reasons

Each group holds the sample keys of :mod:`embedder.data.patches` as arrays with a leading sample dim N,
chunked by ``chunk_samples`` along N and Blosc/zstd compressed. Group attributes: ``cube_id``,
``scene``, ``start``, ``end`` (ISO dates), ``crs``, ``transform``, ``kind``, ``n_samples``, the sampling
statistics, the patch config and seed, and ``complete: true``, written last. A group without
``complete`` is a half-written shard: :func:`write_shard` removes any existing group before writing, so
a crash never leaves a shard that looks complete, and builders rebuild cubes without it.

The root can be any fsspec URL: a local path, ``file://``, ``memory://``, ``gs://`` or ``s3://``
(``storage_options`` are passed to fsspec).

Splits are by cube: the sorted ids of all complete cubes in the root (both kinds) are permuted with seed
42 and cut in SPEC proportions 375/83/42 (largest-remainder rounding), so every cube is in exactly one
split and the same set of cubes always gives the same split. Adding cubes to a root re-deals the split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np
import xarray as xr
import zarr
import zarr.codecs
import zarr.storage

from embedder.config import BuildShardsConfig, CubeSpec, PatchConfig, to_dict
from embedder.data.patches import (
    FUSED_KEYS,
    S1ONLY_KEYS,
    SamplingStats,
    cube_seed,
    empty_samples,
    sample_fused_patches,
    sample_s1only_patches,
)

__all__ = [
    "CUBE_RES_M",
    "SHARD_KEYS",
    "SHARD_KINDS",
    "SPLITS",
    "SPLIT_PROPORTIONS",
    "SPLIT_SEED",
    "CubeTask",
    "ShardError",
    "ShardKind",
    "build_cube_shards",
    "build_cube_task",
    "cli_main",
    "cube_is_built",
    "cube_seed",
    "is_complete",
    "iter_shard_batches",
    "list_cube_ids",
    "open_shard_group",
    "plan_cubes",
    "read_shard",
    "read_shard_attrs",
    "shard_array",
    "shard_keys",
    "shard_kind",
    "shard_n_samples",
    "shard_url",
    "split_cube_ids",
    "split_shard_urls",
    "summarize_shards",
    "write_shard",
]

ShardKind = Literal["fused", "s1only"]
SHARD_KINDS: tuple[ShardKind, ...] = ("fused", "s1only")
"""Shard kinds: fused S2 + S1 samples, and S1-only samples on S1's own time axis."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names, in the order of :data:`SPLIT_PROPORTIONS`."""
SPLIT_PROPORTIONS: tuple[int, ...] = (375, 83, 42)
"""Cubes per split in the reference training set of 500 cubes (SPEC.md section 2)."""
SPLIT_SEED: int = 42
"""Seed of the cube permutation that deals the splits (SPEC.md section 2)."""
FORMAT_VERSION: int = 1
"""Shard layout version, stored in the group attributes."""

SHARD_KEYS: dict[str, tuple[str, ...]] = {"fused": FUSED_KEYS, "s1only": S1ONLY_KEYS}
"""Sample keys of each shard kind (:mod:`embedder.data.patches`)."""
CUBE_RES_M = 10.0
"""Pixel size of the cubes shards are cut from, metres (docs/design.md "Cube")."""


class ShardError(ValueError):
    """A shard root, kind, split or shard is not what was asked for."""


# --- locations -------------------------------------------------------------------------------------


def shard_kind(kind: str) -> ShardKind:
    """``kind`` checked against :data:`SHARD_KINDS` (a :class:`ShardError` naming the choices otherwise)."""
    if kind not in SHARD_KINDS:
        raise ShardError(f"unknown shard kind {kind!r}; use one of {list(SHARD_KINDS)}")
    return kind


def _join(root: str, *parts: str) -> str:
    return "/".join([str(root).rstrip("/"), *parts])


def _kind_dir(root: str, kind: str) -> str:
    return str(root).rstrip("/") if shard_kind(kind) == "fused" else _join(root, "s1only")


def shard_url(root: str, cube_id: str, *, kind: str = "fused") -> str:
    """URL of the shard of ``cube_id``: ``<root>/<cube_id>.zarr`` or ``<root>/s1only/<cube_id>.zarr``."""
    if not cube_id or "/" in cube_id:
        raise ShardError(f"cube id {cube_id!r} must be a non-empty name without '/'")
    return _join(_kind_dir(root, kind), f"{cube_id}.zarr")


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(str(url), **dict(storage_options or {}))
    return fs, path


def _is_local(url: str) -> bool:
    return "://" not in str(url) or str(url).startswith("file://")


def _store(url: str, storage_options: Mapping[str, Any] | None, *, read_only: bool) -> Any:
    if _is_local(url):
        path = str(url)[len("file://") :] if str(url).startswith("file://") else str(url)
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(
        str(url), storage_options=dict(storage_options or {}), read_only=read_only
    )


def open_shard_group(url: str, storage_options: Mapping[str, Any] | None) -> zarr.Group | None:
    """The shard group at ``url`` opened read-only, or None when there is none."""
    try:
        return zarr.open_group(_store(url, storage_options, read_only=True), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None


def shard_array(group: zarr.Group, key: str) -> zarr.Array:
    """The array ``key`` of a shard group (a :class:`ShardError` when it is not one)."""
    arr = group[key]
    if not isinstance(arr, zarr.Array):
        raise ShardError(f"{key!r} in shard group {group.store_path} is not an array; rebuild the shard")
    return arr


def shard_keys(group: zarr.Group) -> list[str]:
    """The sample keys a shard group holds (its ``keys`` attribute)."""
    return [str(k) for k in typing.cast(list[Any], group.attrs["keys"])]


def shard_n_samples(group: zarr.Group) -> int:
    """Samples a shard group holds (its ``n_samples`` attribute)."""
    return int(typing.cast(int, group.attrs["n_samples"]))


# --- writing ---------------------------------------------------------------------------------------


def write_shard(
    samples: Mapping[str, np.ndarray],
    root: str,
    cube_id: str,
    *,
    kind: str = "fused",
    attrs: Mapping[str, Any] | None = None,
    chunk_samples: int = 256,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write ``samples`` (the dict of :mod:`embedder.data.patches`) as the shard of ``cube_id``.

    Any existing group at that place (complete or half-written) is removed first; arrays are written,
    then ``complete: true`` is set last. Returns the shard URL.
    """
    kind = shard_kind(kind)
    missing = [k for k in SHARD_KEYS[kind] if k not in samples]
    if missing:
        raise ShardError(
            f"samples for a {kind!r} shard lack key(s) {missing}; cut them with embedder.data.patches"
        )
    n = len(samples[SHARD_KEYS[kind][0]])
    bad = {k: len(samples[k]) for k in SHARD_KEYS[kind] if len(samples[k]) != n}
    if bad:
        raise ShardError(f"sample arrays disagree on N: {n} vs {bad}")
    if chunk_samples < 1:
        raise ShardError(f"chunk_samples = {chunk_samples} must be at least 1")
    url = shard_url(root, cube_id, kind=kind)
    fs, path = _fs(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    group = zarr.open_group(_store(url, storage_options, read_only=False), mode="w", zarr_format=3)
    group.attrs.update(
        {
            **dict(attrs or {}),
            "cube_id": cube_id,
            "kind": kind,
            "n_samples": int(n),
            "keys": list(SHARD_KEYS[kind]),
            "format_version": FORMAT_VERSION,
            "complete": False,
        }
    )
    for key in SHARD_KEYS[kind]:
        arr = np.ascontiguousarray(samples[key])
        shuffle = (
            zarr.codecs.BloscShuffle.bitshuffle if arr.dtype == bool else zarr.codecs.BloscShuffle.shuffle
        )
        z = group.create_array(
            key,
            shape=arr.shape,
            chunks=(max(1, min(chunk_samples, n)), *arr.shape[1:]),
            dtype=arr.dtype,
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle=shuffle),
            fill_value=0,
        )
        if n:
            z[...] = arr
    group.attrs["complete"] = True  # last: only now does the shard count as built
    return url


def build_cube_shards(
    cube: xr.Dataset,
    root: str,
    cube_id: str,
    *,
    kinds: Sequence[str] = SHARD_KINDS,
    cfg: PatchConfig | None = None,
    seed: int = SPLIT_SEED,
    attrs: Mapping[str, Any] | None = None,
    chunk_samples: int = 256,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, SamplingStats]:
    """Cut the samples of ``cube`` and write one shard per kind; returns the sampling stats per kind.

    ``attrs`` (e.g. ``scene``, ``start``, ``end``) are stored in each shard together with the cube's
    ``crs`` and ``transform``, the patch config and the seed.
    """
    cfg = cfg or PatchConfig()
    out: dict[str, SamplingStats] = {}
    for kind in kinds:
        kind = shard_kind(kind)
        sampler = sample_fused_patches if kind == "fused" else sample_s1only_patches
        samples, stats = sampler(cube, cfg=cfg, seed=cube_seed(seed, cube_id, kind))
        meta = {
            "crs": str(cube.attrs.get("crs", "")),
            "transform": [float(v) for v in cube.attrs.get("transform", ())],
            "patch_config": to_dict(cfg),
            "seed": int(seed),
            "stats": {
                "candidates": stats.candidates,
                "dropped_gap": stats.dropped_gap,
                "dropped_centre": stats.dropped_centre,
                "kept": stats.kept,
            },
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **dict(attrs or {}),
        }
        write_shard(
            samples, root, cube_id, kind=kind, attrs=meta, chunk_samples=chunk_samples,
            storage_options=storage_options,
        )  # fmt: skip
        out[kind] = stats
    return out


# --- cubes of a build: planning and building one from a catalog ------------------------------------


@dataclass(frozen=True)
class CubeTask:
    """One cube to build: a square (or whole small scene) on a UTM 10 m grid over the build period."""

    cube_id: str
    """``<scene>_y<row>_x<col>_<start>_<end>`` (dates as YYYYMMDD): the shard name."""
    scene: str
    """Scene the cube was cut from."""
    epsg: int
    """EPSG code of the cube's UTM grid."""
    bounds: tuple[float, float, float, float]
    """``(left, bottom, right, top)`` in metres of ``epsg``."""


def plan_cubes(cfg: BuildShardsConfig) -> list[CubeTask]:
    """The cubes of a build, sorted by id (at most ``cfg.max_cubes``).

    Scenes of ``cfg.region_manifest`` and ``cfg.cubes`` are tiled into squares of ``cfg.cube_size_px``
    from their top-left corner; a scene smaller than that is one cube, edge remainders are dropped.
    """
    scenes: list[CubeSpec] = []
    if cfg.region_manifest is not None:
        from embedder.sample import read_region_manifest

        region = read_region_manifest(cfg.region_manifest)
        scenes += [CubeSpec(name=s.name, epsg=s.epsg, bounds=s.bounds_utm) for s in region.scenes]
    scenes += list(cfg.cubes)
    period = f"{cfg.start:%Y%m%d}_{cfg.end:%Y%m%d}"
    size_m = cfg.cube_size_px * CUBE_RES_M
    tasks: dict[str, CubeTask] = {}
    for spec in scenes:
        left, bottom, right, top = spec.bounds
        if right <= left or top <= bottom:
            raise ShardError(
                f"scene {spec.name!r} has empty bounds {spec.bounds}; give (left, bottom, right, top)"
            )
        ny = max(1, int((top - bottom + 1e-6) // size_m))
        nx = max(1, int((right - left + 1e-6) // size_m))
        for iy in range(ny):
            for ix in range(nx):
                t = top - iy * size_m
                l_ = left + ix * size_m
                bounds = (l_, max(bottom, t - size_m), min(right, l_ + size_m), t)
                cube_id = f"{spec.name}_y{iy:02d}_x{ix:02d}_{period}"
                if cube_id in tasks:
                    raise ShardError(f"two scenes are called {spec.name!r}; scene names must be unique")
                tasks[cube_id] = CubeTask(cube_id=cube_id, scene=spec.name, epsg=spec.epsg, bounds=bounds)
    out = [tasks[k] for k in sorted(tasks)]
    return out if cfg.max_cubes is None else out[: cfg.max_cubes]


def cube_is_built(task: CubeTask, cfg: BuildShardsConfig) -> bool:
    """True when every kind of ``cfg.kinds`` has a complete shard for ``task``."""
    return all(
        is_complete(cfg.shard_root, task.cube_id, kind=k, storage_options=cfg.storage_options)
        for k in cfg.kinds
    )


def build_cube_task(task: CubeTask, cfg: BuildShardsConfig) -> dict[str, Any]:
    """Load ``task``'s cube from ``cfg.catalog`` and write its shards; returns a record for the job log.

    The record has ``cube_id``, ``status`` (``"ok"``, or ``"empty"`` when the cube has no usable S2 date:
    then empty complete shards carry the reason in ``empty_reason`` so re-runs skip it), ``samples`` per
    kind and ``seconds``. Other errors propagate (the job records them as failures).
    """
    from odc.geo.geobox import GeoBox

    from embedder.data.cubes import EmptyCubeError, load_cube
    from embedder.data.stac import open_catalog

    t0 = time.perf_counter()
    attrs = {
        "scene": task.scene,
        "start": cfg.start.isoformat(),
        "end": cfg.end.isoformat(),
        "epsg": task.epsg,
    }
    attrs["bounds"] = list(task.bounds)
    geobox = GeoBox.from_bbox(task.bounds, crs=f"EPSG:{task.epsg}", resolution=CUBE_RES_M)
    try:
        cube = load_cube(open_catalog(cfg.catalog), geobox, cfg.start, cfg.end, cfg=cfg.cube)
    except EmptyCubeError as err:
        for kind in cfg.kinds:
            write_shard(
                empty_samples(kind), cfg.shard_root, task.cube_id, kind=kind, attrs={**attrs, "empty_reason": str(err)},
                storage_options=cfg.storage_options,
            )  # fmt: skip
        return {"cube_id": task.cube_id, "status": "empty", "reason": str(err), "samples": {},
                "seconds": time.perf_counter() - t0}  # fmt: skip
    stats = build_cube_shards(
        cube, cfg.shard_root, task.cube_id, kinds=cfg.kinds, cfg=cfg.patches, seed=cfg.seed, attrs=attrs,
        chunk_samples=cfg.chunk_samples, storage_options=cfg.storage_options,
    )  # fmt: skip
    return {
        "cube_id": task.cube_id,
        "status": "ok",
        "samples": {k: v.kept for k, v in stats.items()},
        "seconds": time.perf_counter() - t0,
    }


# --- reading ---------------------------------------------------------------------------------------


def read_shard_attrs(
    root: str, cube_id: str, *, kind: str = "fused", storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The attributes of a shard, or None when there is no shard (complete or not) at that place."""
    group = open_shard_group(shard_url(root, cube_id, kind=kind), storage_options)
    return None if group is None else dict(group.attrs)


def is_complete(
    root: str, cube_id: str, *, kind: str = "fused", storage_options: Mapping[str, Any] | None = None
) -> bool:
    """True when the shard of ``cube_id`` exists and carries ``complete: true``."""
    attrs = read_shard_attrs(root, cube_id, kind=kind, storage_options=storage_options)
    return bool(attrs and attrs.get("complete") is True)


def read_shard(url: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """All arrays of the complete shard at ``url`` as numpy arrays (raises :class:`ShardError` otherwise)."""
    group = open_shard_group(url, storage_options)
    if group is None:
        raise ShardError(f"no shard at {url!r}; build it with ray_jobs/build_shards.py")
    if group.attrs.get("complete") is not True:
        raise ShardError(f"shard {url!r} is incomplete (no complete: true); rebuild it")
    return {key: np.asarray(shard_array(group, key)[...]) for key in shard_keys(group)}


def iter_shard_batches(
    url: str, *, batch_size: int | None = None, storage_options: Mapping[str, Any] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Yield the samples of one complete shard as dicts of numpy arrays, one Zarr chunk at a time.

    With ``batch_size`` the chunks are re-cut into batches of that size (the last may be smaller).
    Meant for Ray Data: ``ray.data.from_items(urls).flat_map(lambda r: ...)`` or a batch reader.
    """
    group = open_shard_group(url, storage_options)
    if group is None or group.attrs.get("complete") is not True:
        raise ShardError(f"no complete shard at {url!r}; build it with ray_jobs/build_shards.py")
    keys = shard_keys(group)
    n = shard_n_samples(group)
    arrays = {k: shard_array(group, k) for k in keys}
    step = int(arrays[keys[0]].chunks[0]) if batch_size is None else int(batch_size)
    if step < 1:
        raise ShardError(f"batch_size = {batch_size} must be at least 1")
    chunk = int(arrays[keys[0]].chunks[0])
    read = max(step, chunk)
    for lo in range(0, n, read):
        block = {k: np.asarray(a[lo : lo + read]) for k, a in arrays.items()}
        for b in range(0, len(block[keys[0]]), step):
            yield {k: v[b : b + step] for k, v in block.items()}


def list_cube_ids(
    root: str,
    *,
    kind: str | None = None,
    complete_only: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Sorted ids of the cubes with a shard of ``kind`` (None: of any kind) under ``root``."""
    kinds = SHARD_KINDS if kind is None else (shard_kind(kind),)
    fs, path = _fs(str(root), storage_options)
    if not fs.exists(path):
        raise ShardError(
            f"no shard root at {str(root)!r}; check the URL (and storage options) or build shards with "
            "`python -m ray_jobs.build_shards --config YAML`"
        )
    ids: set[str] = set()
    for k in kinds:
        fs, path = _fs(_kind_dir(root, k), storage_options)
        try:
            entries = fs.ls(path, detail=False)
        except FileNotFoundError:
            continue
        for entry in entries:
            name = str(entry).rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(".zarr"):
                continue
            cube_id = name[: -len(".zarr")]
            if not complete_only or is_complete(root, cube_id, kind=k, storage_options=storage_options):
                ids.add(cube_id)
    return sorted(ids)


def split_cube_ids(
    cube_ids: Sequence[str], *, seed: int = SPLIT_SEED, proportions: Sequence[int] = SPLIT_PROPORTIONS
) -> dict[str, str]:
    """Deal cubes to splits: ``{cube_id: "train" | "val" | "test"}``.

    The sorted unique ids are permuted with ``seed``; the first share goes to train, the next to val,
    the rest to test. Shares follow ``proportions`` with largest-remainder rounding (500 cubes ->
    exactly 375/83/42).
    """
    if len(proportions) != len(SPLITS) or min(proportions) < 0 or sum(proportions) <= 0:
        raise ShardError(
            f"proportions {list(proportions)} must be {len(SPLITS)} non-negative numbers, not all 0"
        )
    ids = sorted(set(cube_ids))
    n = len(ids)
    quota = np.asarray(proportions, dtype=np.float64) * n / float(sum(proportions))
    counts = np.floor(quota).astype(int)
    order = np.argsort(-(quota - counts), kind="stable")  # largest remainders first, ties in split order
    counts[order[: n - int(counts.sum())]] += 1
    perm = np.random.default_rng(seed).permutation(n)
    labels = np.repeat(np.arange(len(SPLITS)), counts)  # [n]
    return {ids[p]: SPLITS[int(lab)] for p, lab in zip(perm, labels, strict=True)}


def split_shard_urls(
    root: str, *, split: str, kind: str = "fused", storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """URLs of the complete ``kind`` shards of the cubes dealt to ``split`` (sorted by cube id)."""
    if split not in SPLITS:
        raise ShardError(f"unknown split {split!r}; use one of {list(SPLITS)}")
    kind = shard_kind(kind)
    deal = split_cube_ids(list_cube_ids(root, storage_options=storage_options))
    have = set(list_cube_ids(root, kind=kind, storage_options=storage_options))
    return [shard_url(root, c, kind=kind) for c, s in sorted(deal.items()) if s == split and c in have]


# --- command line ----------------------------------------------------------------------------------


def _parse_options(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ShardError(f"storage option {pair!r} is not KEY=VALUE")
        k, v = pair.split("=", 1)
        out[k] = v
    return out


def summarize_shards(root: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Summary of a shard root: per kind and split the cube and sample counts, and per cube details."""
    deal = split_cube_ids(list_cube_ids(root, storage_options=storage_options))
    summary: dict[str, Any] = {"root": str(root), "cubes": len(deal), "kinds": {}, "incomplete": {}}
    for kind in SHARD_KINDS:
        per_split = {s: {"cubes": 0, "samples": 0} for s in SPLITS}
        per_cube = {}
        for cube_id in list_cube_ids(root, kind=kind, complete_only=False, storage_options=storage_options):
            attrs = read_shard_attrs(root, cube_id, kind=kind, storage_options=storage_options) or {}
            if attrs.get("complete") is not True:
                summary["incomplete"].setdefault(kind, []).append(cube_id)
                continue
            split = deal[cube_id]
            per_split[split]["cubes"] += 1
            per_split[split]["samples"] += int(attrs.get("n_samples", 0))
            per_cube[cube_id] = {
                "split": split,
                "samples": int(attrs.get("n_samples", 0)),
                "scene": attrs.get("scene"),
                "start": attrs.get("start"),
                "end": attrs.get("end"),
            }
        summary["kinds"][kind] = {"splits": per_split, "cubes": per_cube}
    fs, path = _fs(_join(root, "failures.json"), storage_options)
    if fs.exists(path):
        with fs.open(path, "r") as fh:
            summary["failures"] = json.load(fh)
    return summary


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``embedder shards [inspect] ROOT``: counts per split and per cube of a shard root."""
    parser = argparse.ArgumentParser(
        prog="embedder shards [inspect]",
        description="Inspect training shards: counts per split and per cube (build them with "
        "`python -m ray_jobs.build_shards --config YAML`).",
    )
    parser.add_argument("root", help="shard root URL (path, file://, memory://, gs://, s3://)")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--per-cube", action="store_true", help="also list every cube")
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["inspect"]:
        args_list = args_list[1:]
    args = parser.parse_args(args_list)

    try:
        summary = summarize_shards(args.root, storage_options=_parse_options(args.storage_option))
    except ShardError as err:
        print(f"embedder shards: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    print(f"shard root {summary['root']}: {summary['cubes']} complete cube(s)")
    for kind, info in summary["kinds"].items():
        cells = ", ".join(
            f"{s} {v['cubes']} cubes / {v['samples']} samples" for s, v in info["splits"].items()
        )
        print(f"  {kind:7s} {cells}")
        if args.per_cube:
            for cube_id, c in info["cubes"].items():
                print(f"    {cube_id}  {c['split']:5s}  {c['samples']:6d} samples  {c['start']}..{c['end']}")
    for kind, ids in summary["incomplete"].items():
        print(f"  incomplete {kind} shard(s) (will be rebuilt): {', '.join(ids)}")
    failed = (summary.get("failures") or {}).get("failures") or []
    if failed:
        print(f"  failed cubes in the last build: {len(failed)} (see {_join(args.root, 'failures.json')})")
        for f in failed:
            print(f"    {f['cube_id']}: {f['error']}: {str(f['reason'])[:200]}")
    return 0
