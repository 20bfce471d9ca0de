"""Build training shards for many cubes in parallel: one Ray CPU task per cube.

    python -m ray_jobs.build_shards --config ray_jobs/configs/build_shards.yaml
    python -m ray_jobs.build_shards --smoke            # tiny run; writes its sample region if missing

Four parts, as in Ray's examples:

1. the plan: :func:`embedder.data.shards.plan_cubes` tiles the scenes of the config (a sample region's
   ``region.json`` and/or explicit ``(name, epsg, bounds)``) into cubes; cubes whose shards are all
   complete are skipped (resumable per cube);
2. the per-cube task: :func:`embedder.data.shards.build_cube_task` (load the cube from the catalog, cut
   the patches, write the shards with ``complete: true`` last), wrapped so an error becomes a record
   instead of stopping the run;
3. the driver loop: submit, ``ray.wait`` one at a time, print progress, collect failures;
4. arguments (``--config``, ``--smoke``, overrides) and the outputs in the shard root:
   ``failures.json`` (this run's failed cubes with reasons; empty list when none) and
   ``build_shards.json`` (the resolved config).

Exit code 0 when every cube is built (or empty: no usable S2 date, recorded in its shard), 1 when any
cube failed; re-running retries only the failed and missing cubes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import fsspec

from embedder.config import BuildShardsConfig, load_config, to_dict
from embedder.data.shards import CubeTask, build_cube_task, cube_is_built, plan_cubes

__all__ = ["FAILURES_FILE", "main", "run_build", "shard_dataset"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FAILURES_FILE = "failures.json"
"""Written in the shard root after every run: the cubes that failed, with error type and reason."""
CONFIG_FILE = "build_shards.json"
"""Written in the shard root: the resolved config of the last run."""
_WORKER_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "RAY_USAGE_STATS_ENABLED": "0"}


# 1 + 2: the per-cube task ---------------------------------------------------------------------------


def _build_or_record(task: CubeTask, cfg: BuildShardsConfig) -> dict[str, Any]:
    """Run one cube; any exception becomes a ``failed`` record with its type, message and traceback tail."""
    t0 = time.perf_counter()
    try:
        return build_cube_task(task, cfg)
    except Exception as err:
        return {
            "cube_id": task.cube_id,
            "status": "failed",
            "error": type(err).__name__,
            "reason": str(err),
            "traceback": traceback.format_exc(limit=6)[-2000:],
            "seconds": time.perf_counter() - t0,
        }


def _write_json(root: str, name: str, doc: Any, storage_options: dict[str, str]) -> None:
    fs, path = fsspec.core.url_to_fs(f"{root.rstrip('/')}/{name}", **storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)


# 3: the driver loop --------------------------------------------------------------------------------


def run_build(cfg: BuildShardsConfig, *, log: bool = True) -> dict[str, Any]:
    """Build every planned cube that is not complete yet, with Ray tasks; returns the run summary.

    Ray must be initialised (``main`` does it). Summary keys: ``planned``, ``skipped`` (already
    complete), ``built``, ``empty``, ``failed`` (cube ids), ``samples`` (per kind, this run) and
    ``seconds``.
    """
    import ray

    def say(msg: str) -> None:
        if log:
            print(msg, flush=True)

    t0 = time.perf_counter()
    tasks = plan_cubes(cfg)
    todo = [t for t in tasks if not cube_is_built(t, cfg)]
    say(
        f"build_shards: {len(tasks)} cube(s) planned, {len(tasks) - len(todo)} already complete, {len(todo)} to build"
    )
    _write_json(cfg.shard_root, CONFIG_FILE, to_dict(cfg), cfg.storage_options)

    remote = ray.remote(num_cpus=cfg.cpus_per_task, max_retries=1)(_build_or_record)
    cfg_ref = ray.put(cfg)
    pending = {remote.remote(t, cfg_ref): t for t in todo}
    records: list[dict[str, Any]] = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(done[0])
        try:
            rec = ray.get(done[0])
        except Exception as err:  # the worker died (OOM, node loss): record and go on
            rec = {
                "cube_id": task.cube_id,
                "status": "failed",
                "error": type(err).__name__,
                "reason": str(err),
            }
        rec["scene"] = task.scene
        records.append(rec)
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(records) * len(pending)
        detail = " ".join(f"{k}={v}" for k, v in rec.get("samples", {}).items())
        if rec["status"] == "failed":
            detail = f"{rec['error']}: {rec['reason'][:300]}"
        elif rec["status"] == "empty":
            detail = f"no usable S2 date ({rec['reason'][:120]})"
        say(
            f"[{len(records)}/{len(todo)}] {rec['cube_id']}: {rec['status']} {detail} "
            f"({rec.get('seconds', 0.0):.1f} s; elapsed {elapsed:.0f} s, eta {eta:.0f} s)"
        )

    failures = [
        {k: r.get(k) for k in ("cube_id", "scene", "error", "reason", "traceback")}
        for r in records
        if r["status"] == "failed"
    ]
    _write_json(
        cfg.shard_root,
        FAILURES_FILE,
        {"updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "failures": failures},
        cfg.storage_options,
    )
    samples: dict[str, int] = {}
    for r in records:
        for kind, n in r.get("samples", {}).items():
            samples[kind] = samples.get(kind, 0) + int(n)
    built = sorted(str(r["cube_id"]) for r in records if r["status"] == "ok")
    empty = sorted(str(r["cube_id"]) for r in records if r["status"] == "empty")
    summary: dict[str, Any] = {
        "planned": len(tasks),
        "skipped": len(tasks) - len(todo),
        "built": built,
        "empty": empty,
        "failed": sorted(str(f["cube_id"]) for f in failures),
        "samples": samples,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    say(
        f"build_shards: built {len(built)}, empty {len(empty)}, skipped {summary['skipped']}, "
        f"failed {len(failures)}; new samples {samples}; {summary['seconds']} s"
    )
    if failures:
        say(
            f"build_shards: failures recorded in {cfg.shard_root.rstrip('/')}/{FAILURES_FILE}; re-run to retry them"
        )
    return summary


# Reading shards back with Ray Data ------------------------------------------------------------------


def _shard_rows(item: dict[str, Any], *, storage_options: dict[str, str]) -> Any:
    """Ray Data ``flat_map`` function: one shard URL -> its samples as rows (dicts of numpy arrays)."""
    from embedder.data.shards import iter_shard_batches

    for block in iter_shard_batches(item["url"], storage_options=storage_options):
        keys = list(block)
        for i in range(len(block[keys[0]])):
            yield {k: block[k][i] for k in keys}


def shard_dataset(
    root: str, *, split: str, kind: str = "fused", storage_options: dict[str, str] | None = None
) -> Any:
    """A Ray Data ``Dataset`` of the samples of one split: ``from_items(shard urls).flat_map(rows)``."""
    import ray.data

    from embedder.data.shards import split_shard_urls

    urls = split_shard_urls(root, split=split, kind=kind, storage_options=storage_options)
    rows = functools.partial(_shard_rows, storage_options=dict(storage_options or {}))
    return ray.data.from_items([{"url": u} for u in urls]).flat_map(rows)


# 4: arguments -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.build_shards", description=__doc__.split("\n")[0])
    p.add_argument("--config", help="job YAML (see ray_jobs/configs/build_shards.yaml)")
    p.add_argument(
        "--smoke", action="store_true",
        help="tiny run from ray_jobs/configs/smoke/build_shards.yaml; writes its sample region if missing",
    )  # fmt: skip
    p.add_argument("--catalog", help="override catalog (STAC API URL, planetary-computer or catalog.json)")
    p.add_argument("--region-manifest", help="override region_manifest (a sample region's region.json)")
    p.add_argument("--shard-root", help="override shard_root (URL)")
    p.add_argument("--max-cubes", type=int, help="override max_cubes")
    p.add_argument(
        "--dry-run", action="store_true", help="print the planned cubes and their state; build nothing"
    )
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or a new local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of a new local Ray instance (default: all)")
    return p


def _smoke_region(manifest: str) -> None:
    """Write the smoke sample region (tiny scenes, four months of S2 every 5 days) at ``manifest``'s folder."""
    from embedder.config import SampleRegionConfig
    from embedder.sample import write_sample_region

    out = Path(manifest).parent
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), s2_cadence_days=5, end=dt.date(2022, 4, 15), truth_reflectance=False
    )
    print(f"build_shards --smoke: writing the smoke sample region to {out} ...", flush=True)
    write_sample_region(out, cfg=cfg)


def _absolute_paths(cfg: BuildShardsConfig) -> BuildShardsConfig:
    """Local paths made absolute, so Ray workers (whatever their working directory) find them."""

    def fix(value: str | None) -> str | None:
        if value is None or "://" in value or value == "planetary-computer":
            return value
        return str(Path(value).expanduser().resolve())

    return dataclasses.replace(
        cfg,
        catalog=fix(cfg.catalog) or cfg.catalog,
        region_manifest=fix(cfg.region_manifest),
        shard_root=fix(cfg.shard_root) or cfg.shard_root,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns 0 when every cube is built (or empty), 1 when some failed, 2 on bad arguments."""
    args = _parser().parse_args(argv)
    config = args.config or (str(CONFIG_DIR / "smoke" / "build_shards.yaml") if args.smoke else None)
    if config is None:
        print(
            "build_shards: give --config YAML (e.g. ray_jobs/configs/build_shards.yaml) or --smoke",
            file=sys.stderr,
        )
        return 2
    overrides = {
        "catalog": args.catalog,
        "region_manifest": args.region_manifest,
        "shard_root": args.shard_root,
        "max_cubes": args.max_cubes,
    }
    cfg = _absolute_paths(load_config(BuildShardsConfig, config, **overrides))
    if args.smoke and cfg.region_manifest and not Path(cfg.region_manifest).exists():
        _smoke_region(cfg.region_manifest)
    if args.dry_run:
        for task in plan_cubes(cfg):
            state = "complete" if cube_is_built(task, cfg) else "to build"
            print(f"{task.cube_id}  EPSG:{task.epsg}  {task.bounds}  {state}")
        return 0

    import ray

    os.environ.update({k: os.environ.get(k, v) for k, v in _WORKER_ENV.items()})
    started = False
    if not ray.is_initialized():
        ray.init(
            address=args.address,
            num_cpus=args.num_cpus if not args.address else None,
            runtime_env={"env_vars": {k: os.environ[k] for k in _WORKER_ENV}},
            log_to_driver=True,
        )
        started = True
    try:
        summary = run_build(cfg)
    finally:
        if started:
            ray.shutdown()
    return 1 if summary["failed"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
