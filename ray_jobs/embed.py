"""Continental inference with Ray Data: work units -> read cubes (CPU) -> embed (actors) -> write store.

Submit it the way a cluster user does::

    ray job submit --address http://HEAD:8265 --working-dir . -- python -m ray_jobs.embed --config CFG.yaml

Four parts, as every job here: the dataset of work units, the per-stage functions (a CPU read task, an
accelerator actor that loads the model once, a CPU write task), the pipeline builder, and argument
parsing. The pipeline streams: Ray Data's backpressure bounds memory whatever the region size, and the
driver only keeps one small summary row per unit. Units already marked done in the store are skipped;
a unit whose inputs fail (corrupt COG, unreadable item) is recorded in the store with its reason and
retried in a later pass (``max_attempts``) while the others go on; a unit without any usable S2 date is
written empty and marked done with that reason (nothing to embed is not a failure).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedder.config import ConfigError, load_config, to_dict
from embedder.grid import WorkUnit
from ray_jobs.config import EmbedJobConfig

if TYPE_CHECKING:
    from embedder.store import Store

__all__ = [
    "EmbedActor",
    "ModelVersionError",
    "check_model_version",
    "local_checkpoint",
    "main",
    "model_version",
    "read_unit",
    "run",
    "write_result",
]


# --------------------------------------------------------------------------------------------------
# 1. the dataset: work units not yet done
# --------------------------------------------------------------------------------------------------


class ModelVersionError(RuntimeError):
    """The store was written by another model than the job's checkpoint."""


def local_checkpoint(checkpoint: str, *, storage_options: dict[str, Any] | None = None) -> Path:
    """The checkpoint as a local ``.pt`` path.

    A local file is used as is; a remote file, a Ray checkpoint folder or a training run folder (its
    ``best.json``) is downloaded once per node into the temp dir.
    """
    local_path = Path(checkpoint.removeprefix("file://"))
    if ("://" not in checkpoint or checkpoint.startswith("file://")) and not local_path.is_dir():
        return local_path
    import tempfile

    from ray_jobs.train_common import resolve_stage1_checkpoint

    local_dir = Path(tempfile.gettempdir()) / "embedder-checkpoints"
    local = local_dir / f"{hashlib.sha1(checkpoint.encode()).hexdigest()[:12]}.pt"
    if local.is_file():
        return local
    return resolve_stage1_checkpoint(checkpoint, storage_options=storage_options or {}, local_dir=local_dir)


def model_version(checkpoint: str | Path) -> str:
    """``sha256:<16 hex>`` of a local checkpoint file: the store refuses a different model."""
    from embedder.checkpoints import checkpoint_digest

    return checkpoint_digest(checkpoint)


def check_model_version(cfg: EmbedJobConfig, version: str) -> None:
    """Refuse a checkpoint whose version differs from the one an existing store was written with."""
    import fsspec

    opts = dict(cfg.storage_options)
    fs, root = fsspec.core.url_to_fs(cfg.store, **opts)
    try:
        doc = json.loads(fs.cat_file(f"{str(root).rstrip('/')}/zarr.json"))
    except FileNotFoundError:
        return
    have = doc.get("attributes", {}).get("embedder:model_version")
    if have is not None and have != version:
        raise ModelVersionError(
            f"store {cfg.store!r} holds embeddings of model {have}, but checkpoint {cfg.checkpoint!r} is "
            f"{version}: embeddings of two models must not mix. Use the store's original checkpoint, or "
            "write this model's embeddings to a new store URL"
        )


# --------------------------------------------------------------------------------------------------
# 2. the stages
# --------------------------------------------------------------------------------------------------


def read_unit(row: dict[str, Any], *, cfg: EmbedJobConfig) -> dict[str, Any]:
    """CPU stage: search + load the unit's cube with its halos and prepare it for the model.

    ``row`` holds the unit's fields (:meth:`WorkUnit.to_row`); ``cfg`` is the job's parsed config, as the
    driver made it.
    """
    from embedder.data.cubes import CubeError, load_cube
    from embedder.data.stac import EmptySearchError, open_catalog
    from embedder.inference import prepare_tile, temporal_halo_days

    unit = WorkUnit.from_row(row)
    halo_days = cfg.temporal_halo_days or temporal_halo_days()
    start, end = unit.period.start, unit.period.end
    out: dict[str, Any] = {**unit.to_row(), "status": "ok", "reason": ""}
    try:
        cube = load_cube(
            open_catalog(cfg.catalog),
            unit.tile.geobox(halo_px=cfg.halo_px),
            start - dt.timedelta(days=halo_days),
            end + dt.timedelta(days=halo_days),
        )
        tile = prepare_tile(cube, start=np.datetime64(start), end=np.datetime64(end), halo_px=cfg.halo_px)
    except (EmptySearchError, CubeError) as err:
        empty = type(err).__name__ in ("EmptySearchError", "EmptyCubeError")
        out.update(status="empty" if empty else "failed", reason=f"{type(err).__name__}: {err}")
        return out
    except Exception as err:  # any other input failure: record it, the run goes on
        out.update(status="failed", reason=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
        return out
    if len(tile.plan.targets) == 0:
        out.update(
            status="empty",
            reason=f"no date in {start}..{end} with >= 3.5 % of the tile's pixels valid and 5 usable dates "
            f"on each side ({len(tile.plan.usable)} usable dates read, {tile.plan.skipped_context} without context)",
        )
        return out
    out.update(tile.to_row())
    return out


_KILL_AT_ENV = "EMBEDDER_TEST_KILL_ACTOR_AT"
_KILL_MARKER_ENV = "EMBEDDER_TEST_KILL_MARKER"


def _test_kill_hook(calls: int) -> None:
    """Tests only: kill the actor process on its N-th call, once.

    With ``EMBEDDER_TEST_KILL_ACTOR_AT=N`` and ``EMBEDDER_TEST_KILL_MARKER=path`` set, the actor dies
    (``os._exit(1)``) on its N-th call if it can create the marker file (exclusively), so only once.
    """
    at, marker = os.environ.get(_KILL_AT_ENV), os.environ.get(_KILL_MARKER_ENV)
    if not at or not marker or calls < int(at):
        return
    try:
        with open(marker, "x") as fh:
            fh.write(f"actor pid {os.getpid()} killed itself at call {calls}\n")
    except FileExistsError:
        return
    os._exit(1)


def actor_threads(cfg: EmbedJobConfig) -> int:
    """Torch threads of an embedding actor.

    ``EMBEDDER_TORCH_THREADS``, else ``cfg.actor_threads``, else the actor's CPUs rounded up (an actor
    given 2 CPUs computes on 2 threads).
    """
    env = os.environ.get("EMBEDDER_TORCH_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ConfigError(
                f"EMBEDDER_TORCH_THREADS = {env!r} is not a whole number; unset it or give one"
            ) from None
        if n < 1:
            raise ConfigError(f"EMBEDDER_TORCH_THREADS = {n} must be >= 1; unset it to use the actor's CPUs")
        return n
    return cfg.actor_threads or max(1, math.ceil(cfg.actor_num_cpus))


ACTOR_BASE_BYTES = 1536 * 2**20
"""Host memory of a CPU embedding actor beside its frame-token cache: the process, the model, DFT plans,
a unit's frames and outputs (docs/operations.md, "Memory per actor")."""


def actor_cache_bytes(cfg: EmbedJobConfig) -> int:
    """An embedding actor's frame-token cache bound in bytes.

    ``cache_mb``, or with 0 the predictor's ``CACHE_BYTES``.
    """
    from embedder.inference import CACHE_BYTES

    return cfg.cache_mb * 2**20 or CACHE_BYTES


def actor_memory_bytes(cfg: EmbedJobConfig) -> int:
    """The most host memory one CPU embedding actor takes.

    :func:`actor_cache_bytes` plus :data:`ACTOR_BASE_BYTES`.
    """
    return actor_cache_bytes(cfg) + ACTOR_BASE_BYTES


def actor_pool(cfg: EmbedJobConfig, resources: dict[str, float]) -> tuple[int, int]:
    """``(min, max)`` embedding actors.

    The configured bounds, or with ``max_actors: 0`` what ``resources`` (``ray.cluster_resources()``)
    hold: GPUs / ``actor_num_gpus`` on GPU actors, else the CPUs left after one read and one write task /
    ``actor_num_cpus``, but no more actors than keep their torch threads (:func:`actor_threads`) within
    the CPUs (actors of a fraction of a CPU would otherwise oversubscribe the cores) and than Ray's
    ``memory`` holds at :func:`actor_memory_bytes` each; at least one.
    """
    if cfg.max_actors:
        return cfg.min_actors, cfg.max_actors
    if cfg.actor_num_gpus > 0:
        n = int(resources.get("GPU", 0.0) // cfg.actor_num_gpus)
    else:
        cpus = resources.get("CPU", 0.0)
        spare = cpus - cfg.read_num_cpus - cfg.write_num_cpus
        # + 1e-9: 1.8 / 0.9 is 1.999... in floats
        n = min(math.floor(spare / cfg.actor_num_cpus + 1e-9), int(cpus // actor_threads(cfg)))
        if "memory" in resources:
            n = min(n, int(resources["memory"] // actor_memory_bytes(cfg)))
    n = max(1, n)
    return min(cfg.min_actors, n), n


def inference_params(cfg: EmbedJobConfig) -> dict[str, Any]:
    """The inference settings a store records (``embedder:params``) and is fingerprinted by.

    A re-run with other values is refused rather than mixed into the store. ``frame_bf16`` appears only
    when on, so stores written before it existed keep their fingerprint and resume.
    """
    return {"halo_px": cfg.halo_px, "bf16": cfg.bf16, **({"frame_bf16": True} if cfg.frame_bf16 else {})}


class EmbedActor:
    """Accelerator stage: loads the checkpoint once, embeds one prepared unit per call."""

    def __init__(self, cfg: EmbedJobConfig) -> None:
        import torch

        from embedder.checkpoints import load_fusion
        from embedder.hostmem import keep_freed_memory
        from embedder.inference import Predictor

        if cfg.keep_freed_memory:
            keep_freed_memory()
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.threads = actor_threads(cfg)
        torch.set_num_threads(self.threads)
        self.calls = 0
        ckpt = local_checkpoint(cfg.checkpoint, storage_options=dict(cfg.storage_options))
        self.predictor = Predictor(
            load_fusion(ckpt, map_location=device),
            device=device,
            pixel_batch=cfg.pixel_batch,
            frame_batch=cfg.frame_batch or None,
            token_batch=cfg.token_batch or None,
            cache_bytes=actor_cache_bytes(cfg),
            bf16=cfg.bf16,
            frame_bf16=cfg.frame_bf16,
            channels_last=cfg.channels_last,
            spectral=cfg.spectral,
            tf32=cfg.tf32,
            compile=cfg.torch_compile,
        )

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        """Embed one unit row (rows that failed to read pass through unchanged)."""
        from embedder.inference import TileInputs

        self.calls += 1
        _test_kill_hook(self.calls)
        if row["status"] != "ok":
            return row  # write_result records it (no embedding time)
        tile = TileInputs.from_row(row)
        started, t0 = time.time(), time.perf_counter()
        emb = self.predictor.embed_tile(tile)  # [K, 7, h, w]
        return {
            **WorkUnit.from_row(row).to_row(),
            "status": "ok",
            "reason": "",
            "embeddings": emb,
            "flags": tile.flags,
            "dates": tile.dates.astype(np.int64),
            "skipped_context": np.int64(tile.plan.skipped_context),
            "embed_started": started,  # wall clock: the run's start-up ends at its first unit's
            "embed_s": time.perf_counter() - t0,  # the actor's compute, for the run's busy share
        }


def write_result(row: dict[str, Any], *, store: Store) -> dict[str, Any]:
    """CPU stage: write a unit whole (or record its failure); returns a small summary row.

    ``store`` is the handle :func:`create_store` gave the driver (the zones' extents travel with it); the
    summary row holds the unit's fields.
    """
    from embedder.inference import masked_embeddings
    from embedder.store import record_failure, write_unit

    unit = WorkUnit.from_row(row)
    tp = unit.tile.size_px
    summary = {
        **unit.to_row(),
        "status": row["status"],
        "reason": row["reason"],
        "px_dates": 0,
        "embed_started": float(row.get("embed_started", 0.0)),
        "embed_s": float(row.get("embed_s", 0.0)),
    }
    try:
        if row["status"] == "failed":
            record_failure(store, unit, row["reason"])
            return summary
        if row["status"] == "empty":
            write_unit(
                store, unit, np.zeros((0, 7, tp, tp), np.float32), np.zeros((0, tp, tp), np.uint8), [],
                info={"empty": row["reason"]},
            )  # fmt: skip
            return summary
        dates = np.asarray(row["dates"]).astype("datetime64[D]")
        emb, flags = masked_embeddings(np.asarray(row["embeddings"]), np.asarray(row["flags"]))
        write_unit(store, unit, emb, flags, dates, info={"skipped_context": int(row["skipped_context"])})
        summary["px_dates"] = int(np.count_nonzero(flags & 1))
    except Exception as err:
        summary.update(status="failed", reason=f"write: {type(err).__name__}: {err}")
        try:
            record_failure(store, unit, summary["reason"])
        except Exception:  # the store itself is unreachable: the summary still says why
            pass
    return summary


# --------------------------------------------------------------------------------------------------
# 3. the pipeline
# --------------------------------------------------------------------------------------------------


_UNITS_PER_PIPELINE = 4096
"""Units per Ray Data pipeline: a continent's ~10^6 units run as consecutive pipelines, so the driver
never builds one dataset (and its block metadata) of the whole region."""


def _pipelines(units: list[WorkUnit], cfg: EmbedJobConfig, st: Store) -> Any:
    """The stages on Ray Data, ``_UNITS_PER_PIPELINE`` units at a time; yields the summary rows.

    Rows carry the units' fields; every stage gets the parsed ``cfg`` or the opened store ``st`` as it
    is (pickled once per stage by Ray), so no stage parses a config, a unit id or a store URL. An
    actor that dies is rebuilt from the same ``cfg``.
    """
    import ray

    for i in range(0, len(units), _UNITS_PER_PIPELINE):
        chunk = units[i : i + _UNITS_PER_PIPELINE]
        lo, hi = actor_pool(cfg, ray.cluster_resources())
        ds: Any = ray.data.from_items([u.to_row() for u in chunk], override_num_blocks=max(1, len(chunk)))
        ds = ds.map(read_unit, fn_kwargs={"cfg": cfg}, num_cpus=cfg.read_num_cpus)
        ds = ds.map(
            EmbedActor,
            fn_constructor_kwargs={"cfg": cfg},
            compute=ray.data.ActorPoolStrategy(min_size=lo, max_size=hi),
            num_cpus=cfg.actor_num_cpus,
            num_gpus=cfg.actor_num_gpus,
        )
        ds = ds.map(write_result, fn_kwargs={"store": st}, num_cpus=cfg.write_num_cpus)
        yield from ds.iter_rows()


def _serial(units: list[WorkUnit], cfg: EmbedJobConfig, st: Store) -> Any:
    """The same stages in this process, one unit after the other (no Ray): reference runs and debugging."""
    actor = EmbedActor(cfg)
    for unit in units:
        yield write_result(actor(read_unit(unit.to_row(), cfg=cfg)), store=st)


def run(cfg: EmbedJobConfig, *, serial: bool = False) -> dict[str, Any]:
    """Embed every not-yet-done unit of the region into the store; returns the run summary.

    ``serial=True`` runs the same stages in this process without Ray (reference runs, debugging).
    Besides the counts, the summary times the run: ``seconds`` (wall), ``embed_seconds`` (the actors'
    embedding calls summed over units: with one actor, the time it computed; far below ``seconds`` times
    the actors, the accelerators were starved) and ``startup_seconds`` (from the start of the run to the
    first unit's embedding: checkpoint checks, store creation, Ray Data planning, actor start-up and the
    first read; paid once per job, None when nothing was embedded).
    """
    import ray
    from tqdm import tqdm

    from embedder.grid import region_from_text, work_units
    from embedder.store import StoreConfig, create_store, list_done, put_object
    from embedder.store.verify import JOB_CONFIG

    t0, wall0 = time.perf_counter(), time.time()
    layout = cfg.store_layout or StoreConfig()
    units = work_units(
        region_from_text(cfg.region),
        cfg.start,
        cfg.end,
        tile_px=layout.tile_px,
        period_days=layout.period_days,
    )
    opts = dict(cfg.storage_options) or None
    from embedder.checkpoints import checkpoint_encoders, checkpoint_init_from, load_checkpoint

    local = local_checkpoint(cfg.checkpoint, storage_options=opts)
    ckpt = load_checkpoint(local, kind="fusion")  # first: a missing, unreadable or stage-1 file is refused
    encoders = checkpoint_encoders(ckpt)
    pretrained = checkpoint_init_from(ckpt)  # the committed weights a fine-tuned model started from
    del ckpt  # the actors load the model themselves
    version = model_version(local)
    check_model_version(cfg, version)
    st = create_store(
        cfg.store,
        units=units,
        model_version=version,
        inputs={"catalog": cfg.catalog, "region": cfg.region, "start": str(cfg.start), "end": str(cfg.end)},
        params={**inference_params(cfg), **({"pretrained": pretrained} if pretrained else {})},
        cfg=layout,
        storage_options=opts,
        encoders=encoders,
    )
    # the job's config, for `embedder verify --repair` to run it again; storage options are left out (they
    # may hold credentials; the repair takes them from its caller)
    job_doc = {k: v for k, v in to_dict(cfg).items() if k != "storage_options"}
    put_object(st.fs, f"{st.root}/{JOB_CONFIG}", json.dumps(job_doc, indent=1, default=str).encode())
    done = set(list_done(st))
    todo = [u for u in units if u.id not in done]
    print(f"[embed] {len(units)} units, {len(done)} already done, {len(todo)} to do", flush=True)
    if not serial:
        if not ray.is_initialized():
            ray.init()
        ray.data.DataContext.get_current().enable_progress_bars = cfg.progress
    counts = {"ok": 0, "empty": 0, "failed": 0}
    px_dates = 0
    embed_s, first_embed = 0.0, math.inf
    failures: dict[str, str] = {}
    for attempt in range(1, cfg.max_attempts + 1):
        if not todo:
            break
        failed_now: list[WorkUnit] = []
        bar = tqdm(total=len(todo), desc=f"units (pass {attempt})", unit="unit", disable=not cfg.progress)
        rows = _serial(todo, cfg, st) if serial else _pipelines(todo, cfg, st)
        for row in rows:
            bar.update(1)
            unit = WorkUnit.from_row(row)
            embed_s += float(row["embed_s"])
            if row["embed_started"] > 0:
                first_embed = min(first_embed, float(row["embed_started"]))
            if row["status"] == "failed":
                failed_now.append(unit)
                failures[unit.id] = row["reason"]
                continue
            counts[row["status"]] += 1
            px_dates += int(row["px_dates"])
            failures.pop(unit.id, None)
        bar.close()
        todo = failed_now
    counts["failed"] = len(todo)
    from embedder.stac_store import write_store_stac

    stac_url = write_store_stac(cfg.store, storage_options=opts)
    elapsed = time.perf_counter() - t0
    summary = {
        "units_total": len(units),
        "units_skipped_done": len(done),
        "units_written": counts["ok"],
        "units_empty": counts["empty"],
        "units_failed": counts["failed"],
        "failed": {u.id: failures[u.id].splitlines()[0] for u in todo},
        "pixel_dates": px_dates,
        "seconds": round(elapsed, 2),
        "pixel_dates_per_s": round(px_dates / elapsed, 1) if elapsed > 0 else 0.0,
        "embed_seconds": round(embed_s, 2),
        "startup_seconds": round(first_embed - wall0, 2) if math.isfinite(first_embed) else None,
        "model_version": version,
        "encoders": encoders,
        "store": cfg.store,
        "stac": stac_url,
    }
    return summary


# --------------------------------------------------------------------------------------------------
# 4. arguments
# --------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ray_jobs.embed", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", required=True, type=Path, help="YAML of EmbedJobConfig (ray_jobs/configs/embed.yaml)"
    )
    p.add_argument("--store", help="override the store URL")
    p.add_argument(
        "--catalog", help="override the catalog ('planetary-computer', a STAC API URL or catalog.json)"
    )
    p.add_argument("--checkpoint", help="override the fusion checkpoint")
    p.add_argument("--region", help="override the region (name, bbox 'lon0,lat0,lon1,lat1', GeoJSON path)")
    p.add_argument("--summary-json", type=Path, help="also write the run summary to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the embedding job; returns the exit code.

    0 when every unit is written or empty, 1 when some failed, 2 when the job is refused before anything
    is written (a bad config, a missing, unreadable or stage-1 checkpoint, a checkpoint that does not
    match the store, a bad region or store).
    """
    args = _parser().parse_args(argv)
    from embedder.checkpoints import CheckpointMismatchError
    from embedder.config import ConfigError
    from embedder.grid import GridError
    from embedder.store import StoreError

    try:
        cfg = load_config(
            EmbedJobConfig, args.config, store=args.store, catalog=args.catalog, checkpoint=args.checkpoint,
            region=args.region,
        )  # fmt: skip
        summary = run(cfg)
    except (
        ConfigError,
        CheckpointMismatchError,
        FileNotFoundError,
        ModelVersionError,
        StoreError,
        GridError,
    ) as err:
        print(f"[embed] refused: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        return 2
    text = json.dumps(summary, indent=2)
    print("[embed] summary:\n" + text, flush=True)
    if args.summary_json:
        args.summary_json.write_text(text)
    return 1 if summary["units_failed"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
