"""Benchmark of continental inference: predictor paths, pipeline overlap, driver memory.

Writes ``bench/results/inference.json`` (flat JSON). Targets: ``ratio`` (fast / naive pixel-dates per s,
paper model, CPU) >= 8 with ``max_abs_diff`` <= 1e-5; ``pipeline_share`` (end-to-end Ray pipeline rate
over the bare predictor rate on the same units) >= 0.8; ``driver_growth_100_mb`` about
``driver_growth_10_mb`` (the driver keeps one small summary row per unit, whatever the region size).

1. The same synthetic tile (``embedder.data.testing.make_test_cube``) through ``Predictor`` with
   ``method="naive"`` and ``"fast"``: the paper model (``ModelConfig()`` / ``FusionConfig()``) and the
   small preset; the paper fast path also compiled (``--compile inductor``, ``compiled_*`` keys, as
   ``EmbedJobConfig.torch_compile`` runs it; ``compile_s`` is paid once per actor). The fast path runs
   as the CPU default does, the paper model's multi-scale convolutions through a 2-D DFT
   (``embedder.models.spectral``); ``direct_*`` is the same path with the direct convolutions,
   ``spectral_speedup`` and ``spectral_max_abs_diff`` compare the two. ``efficiency`` is over the model's
   FLOPs (above 1 when the DFT does less work than the model), ``executed_efficiency`` over the FLOPs the
   path executes (the hardware's utilisation).
2. A sample region (two 128 px scenes: 8 units of 64 px by default, ``--pipeline-scene-px`` /
   ``--pipeline-tile-px``) embedded by ``ray_jobs.embed.run`` on a local Ray instance (small model) vs the
   bare predictor on the same prepared tiles (timed before and after the pipelines, ``bare_before_s`` and
   ``bare_after_s``, and averaged: ``bare_s``); actor peak RSS from the actor. Where the difference goes,
   from the job's summary: ``pipeline_startup_s`` (run start to the first unit's embedding: paid once
   per job), ``pipeline_embed_slowdown`` (the actor's embedding time over the bare predictor's: reads
   and writes sharing the cores) and ``pipeline_steady_share`` (the share after the start-up, which a
   job of production units, hours each on a CPU, approaches). Then the same units with one 1-thread
   actor per core and with one actor on every core (``pipeline_per_core_*``, ``pipeline_wide_*``: their
   rates, and the first against the one-actor job, the wide one and the bare predictor).
3. The driver's peak RSS and its growth during ``run`` for regions of 10 and 100 units without data
   (fresh process each).
4. The paper frame encoder alone at 93 (the CPU default) and 2,048 windows per call (``frame_encoder_*``
   keys: direct convolutions; ``frame_encoder_spectral_*``: through the DFT; ``frame_encoder_bf16_*``) and
   the paper fast path on a 32 x 32 px tile with ``frame_batch`` 93 and 2,048 (``tile32_*``): what
   ``Predictor(frame_batch=...)`` is for; ``tile32_direct_*`` with the direct convolutions.

Parts 1, 2 and 4 run with freed memory kept, as the embedding actors do
(``embedder.hostmem.keep_freed_memory``, ``EmbedJobConfig.keep_freed_memory``); ``fast_minor_faults`` counts
the page faults of the timed fast path. The driver children of part 3 keep glibc's default, as a job's
driver does.

    .venv/bin/python bench/inference.py [--paper-px 6 --paper-dates 50] [--out bench/results/inference.json]

The paper model's tile is small so the naive path finishes on 2 cores (6 x 6 px, 50 dates; a production tile
is 512 x 512). Below 6 px the convolutions get a batch of a handful of windows and per-target overheads
dominate: on the idle machine, with the direct convolutions, 3 px gave 151 pixel-dates/s and a ratio of
7.6, 6 px 181 and 9.8, 12 px 172 and 13.1, the efficiency levelling at ~0.77. On a GPU or a free many-core
CPU raise ``--paper-px``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import typing
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import (  # noqa: E402
    cpu,
    efficiency,
    machine,
    matmul_peak_gflops,
    mixed_efficiency,
    model_flops,
    quant_diff,
    status_mb,
)

from embedder.config import FusionConfig, ModelConfig, SampleRegionConfig, StoreConfig  # noqa: E402
from embedder.data.testing import make_test_cube  # noqa: E402
from embedder.hostmem import keep_freed_memory  # noqa: E402
from embedder.inference import FLAG_VALID, Predictor, prepare_tile  # noqa: E402
from embedder.models.fusion import FusionModel  # noqa: E402
from embedder.models.modality import ModalityAutoencoder  # noqa: E402
from embedder.sensors import S1, S2  # noqa: E402
from ray_jobs.config import EmbedJobConfig  # noqa: E402

_STORE = {"tile_px": 32, "chunk_px": 32, "period_days": 366, "chunk_days": 61}


def _model(preset: str, seed: int = 0) -> FusionModel:
    torch.manual_seed(seed)
    mcfg, fcfg = (
        (ModelConfig(), FusionConfig()) if preset == "paper" else (ModelConfig.small(), FusionConfig.small())
    )
    aes = {s.name: ModalityAutoencoder(s, cfg=mcfg) for s in (S1, S2)}
    return FusionModel(aes, cfg=fcfg).eval()


def spectral_flops_ratio(model: FusionModel) -> float:
    """FLOPs ``model``'s S2 frame encoder executes with its multi-scale convolutions through the DFT, over its
    model FLOPs (the direct convolutions), counted on 93 windows (``_common.flops_of``)."""
    from _common import flops_of

    from embedder.models.blocks import spectral_convolutions

    enc = typing.cast(ModalityAutoencoder, model.autoencoders[S2.name])
    x = torch.randn(93, S2.n_channels, 15, 15)
    with torch.inference_mode():
        direct = flops_of(functools.partial(enc.encode_frames, x))
        with spectral_convolutions(enc.frame_encoder):
            executed = flops_of(functools.partial(enc.encode_frames, x))
    return executed / direct


def bench_paths(
    preset: Literal["paper", "small"],
    *,
    interior_px: int,
    n_dates: int,
    naive_targets: int,
    pixel_batch: int,
    peak_gflops: float,
    compile_backend: str | None = None,
    peak_bf16_gflops: float | None = None,
) -> dict[str, float]:
    """Naive vs fast on one synthetic tile: pixel-dates/s of each, their ratio and max abs difference.

    The fast path embeds every target date of the tile (its cost per pixel-date falls as the 10 context
    dates are shared by more targets, as in a year-long unit); the naive path costs the same for every
    target, so it is timed on the first ``naive_targets`` dates (0 = all) and compared with the fast
    result on those dates. ``achieved_gflops`` and ``efficiency`` (over ``peak_gflops``) are the fast
    path's, over its model FLOPs per pixel-date on the same tile (``_common.model_flops``).

    With ``peak_bf16_gflops`` the fast path also runs with ``frame_bf16`` (``frame_bf16_*`` keys: its
    rate, speed-up over fp32, difference from the fp32 result in the store's quantisation steps, and its
    efficiency over the bf16 and fp32 peaks, ``_common.mixed_efficiency``).
    """
    cube = make_test_cube(3, size_px=interior_px + 14, n_dates=n_dates, n_s1=2 * n_dates, cloud_frac=0.1)
    tile = prepare_tile(cube, start="2021-01-01", end="2030-12-31", halo_px=7)
    k = len(tile.plan.targets)
    sub = tile.crop(n_targets=naive_targets or k)
    n_fast = int(np.count_nonzero(tile.flags & FLAG_VALID))
    n_naive = int(np.count_nonzero(sub.flags & FLAG_VALID))
    pred = Predictor(_model(preset), pixel_batch=pixel_batch)
    pred.embed_tile(tile.crop(n_targets=1), method="fast")  # warm-up (allocator, kernels)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    fast = pred.embed_tile(tile, method="fast")  # [K, 7, h, w]
    t_fast = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    t0 = time.perf_counter()
    naive = pred.embed_tile(sub, method="naive")  # [k, 7, h, w]
    t_naive = time.perf_counter() - t0
    out = {
        "targets": float(k),
        "fast_pixel_dates": float(n_fast),
        "naive_pixel_dates": float(n_naive),
        "fast_px_dates_s": n_fast / t_fast,
        "naive_px_dates_s": n_naive / t_naive,
        "max_abs_diff": float(np.abs(fast[: len(sub.plan.targets)] - naive).max()),
        "fast_minor_faults": float(faults),
    }
    out["ratio"] = out["fast_px_dates_s"] / out["naive_px_dates_s"]
    flops = model_flops(tile, preset=preset)
    out["flops_per_px_date"] = flops["cached"]
    out.update(efficiency(out["fast_px_dates_s"], out["flops_per_px_date"], peak_gflops))
    # The same fast path with the multi-scale convolutions computed directly (the baseline of the DFT path).
    dpred = Predictor(_model(preset), pixel_batch=pixel_batch, spectral=False)
    dpred.embed_tile(tile.crop(n_targets=1), method="fast")  # warm-up
    t0 = time.perf_counter()
    direct = dpred.embed_tile(tile, method="fast")
    out["direct_fast_px_dates_s"] = n_fast / (time.perf_counter() - t0)
    out.update(efficiency(out["direct_fast_px_dates_s"], flops["cached"], peak_gflops, prefix="direct_"))
    out["spectral_speedup"] = out["fast_px_dates_s"] / out["direct_fast_px_dates_s"]
    out["spectral_max_abs_diff"] = float(np.abs(fast - direct).max())
    out["spectral_encoders"] = float(len(pred.spectral_encoders))  # 2 on CPU for the paper model, 0 small
    # FLOPs the frame encoders execute / their model FLOPs (the small preset keeps the direct convolutions)
    ratio = spectral_flops_ratio(pred.model) if pred.spectral_encoders else 1.0
    out["executed_flops_per_px_date"] = flops["cached"] - flops["cached_frames"] * (1.0 - ratio)
    out.update(
        efficiency(out["fast_px_dates_s"], out["executed_flops_per_px_date"], peak_gflops, prefix="executed_")
    )
    if peak_bf16_gflops is not None:  # the same fast path with bf16 frame encoders
        bpred = Predictor(_model(preset), pixel_batch=pixel_batch, frame_bf16=True)
        bpred.embed_tile(tile.crop(n_targets=1), method="fast")  # warm-up
        t0 = time.perf_counter()
        bf16 = bpred.embed_tile(tile, method="fast")
        rate = n_fast / (time.perf_counter() - t0)
        out.update(quant_diff(bf16, fast, tile.flags, prefix="frame_bf16_"))
        out["frame_bf16_fast_px_dates_s"] = rate
        out["frame_bf16_speedup"] = rate / out["fast_px_dates_s"]
        out["frame_bf16_efficiency"] = mixed_efficiency(rate, flops, peak_bf16_gflops, peak_gflops)
    if compile_backend:  # the same fast path with torch.compile (EmbedJobConfig.torch_compile)
        cpred = Predictor(_model(preset), pixel_batch=pixel_batch, compile=compile_backend)
        t0 = time.perf_counter()
        cpred.embed_tile(tile.crop(n_targets=2), method="fast")  # compiles (once per actor in the job)
        out["compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiled = cpred.embed_tile(tile, method="fast")
        out["compiled_fast_px_dates_s"] = n_fast / (time.perf_counter() - t0)
        out["compiled_max_abs_diff"] = float(np.abs(compiled[: len(sub.plan.targets)] - naive).max())
        out["compiled_ratio"] = out["compiled_fast_px_dates_s"] / out["naive_px_dates_s"]
        out.update(
            efficiency(
                out["compiled_fast_px_dates_s"], out["flops_per_px_date"], peak_gflops, prefix="compiled_"
            )
        )
    print(f"[bench] {preset}: {k} targets, fast {out['fast_px_dates_s']:.1f}/s on {n_fast} (direct "
          f"convolutions {out['direct_fast_px_dates_s']:.1f}/s), naive {out['naive_px_dates_s']:.2f}/s on "
          f"{n_naive} pixel-dates, ratio {out['ratio']:.2f}, max diff {out['max_abs_diff']:.2e}", flush=True)  # fmt: skip
    return out


def bench_realdata_bf16() -> dict[str, float]:
    """The committed weights (``weights/fusion.pt``) on the real CropHarvest cube: bf16 against fp32.

    ``realdata_frame_bf16_*``: bf16 frame encoders (``frame_bf16``); ``realdata_bf16_*``: the whole model
    in bf16 (``bf16``). Empty when the weights or the realdata file are missing.
    """
    from embedder.checkpoints import load_fusion
    from embedder.data.cubes import cube_from_cropharvest
    from embedder.evaluation.realdata import CROPHARVEST_TIF
    from embedder.inference import HALO_PX

    weights = REPO / "weights" / "fusion.pt"
    if not weights.is_file() or not CROPHARVEST_TIF.is_file():
        print("[bench] no committed weights or CropHarvest file: real-data bf16 figures skipped", flush=True)
        return {}
    cube = cube_from_cropharvest(CROPHARVEST_TIF)
    times = cube["time"].values
    tile = prepare_tile(cube, start=times[0], end=times[-1], halo_px=HALO_PX)
    model = load_fusion(weights).eval()
    ref = Predictor(model).embed_tile(tile)
    out = {"realdata_pixel_dates": float(np.count_nonzero(tile.flags & FLAG_VALID))}
    for prefix, frame_bf16, bf16 in (("realdata_frame_bf16_", True, False), ("realdata_bf16_", False, True)):
        emb = Predictor(model, frame_bf16=frame_bf16, bf16=bf16).embed_tile(tile)
        out.update(quant_diff(emb, ref, tile.flags, prefix=prefix))
    print(f"[bench] real cube, committed weights: frame_bf16 moves the embeddings "
          f"{out['realdata_frame_bf16_rms_quant_steps']:.3f} quantisation steps RMS "
          f"(max {out['realdata_frame_bf16_max_quant_steps']:.2f}); the whole model in bf16 "
          f"{out['realdata_bf16_rms_quant_steps']:.3f} (max {out['realdata_bf16_max_quant_steps']:.2f})",
          flush=True)  # fmt: skip
    return out


def bench_frames(
    *, peak_gflops: float, peak_bf16_gflops: float, tile_px: int = 32, n_dates: int = 14
) -> dict[str, float]:
    """The paper frame encoder per call size, and a ``tile_px`` tile's fast path with frame batches 93 and 2,048.

    The encoder alone runs on random channels-last windows (S2, 10 bands) at 93 and 2,048 windows per
    call; the tile (``n_dates`` dates, about ``n_dates - 10`` targets) through ``Predictor`` with
    ``frame_batch`` 93 (the CPU default) and 2,048 (the old behaviour: whole ``pixel_batch`` strips), and
    with bf16 frame encoders (``tile32_frame_bf16_*``; ``frame_encoder_bf16_*``: the encoder alone).
    """
    from _common import flops_of

    from embedder.models.blocks import spectral_convolutions

    model = _model("paper").to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    enc = typing.cast(ModalityAutoencoder, model.autoencoders[S2.name])
    out: dict[str, float] = {}
    with torch.inference_mode():
        # (windows, mode, key prefix, timing repeats per 1,024 windows: as long a timing at each mode's speed)
        for n, mode, name, speed in (
            (93, "direct", "frame_encoder", 1),
            (2048, "direct", "frame_encoder", 1),
            (93, "spectral", "frame_encoder_spectral", 2),
            (2048, "spectral", "frame_encoder_spectral", 2),
            (93, "bf16", "frame_encoder_bf16", 4),
        ):
            x = torch.randn(n, S2.n_channels, 15, 15).contiguous(memory_format=torch.channels_last)
            encode = functools.partial(enc.encode_frames, x)
            scope = spectral_convolutions(enc.frame_encoder, on=mode == "spectral")
            with scope, torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                flops = flops_of(encode)  # the FLOPs executed
                encode()  # warm-up
                reps = max(2, 1024 // n) * speed
                t0 = time.perf_counter()
                for _ in range(reps):
                    encode()
                seconds = time.perf_counter() - t0
            rate = flops * reps / seconds / 1e9
            out[f"{name}_gflops_{n}"] = rate
            out[f"{name}_efficiency_{n}"] = rate / (peak_bf16_gflops if mode == "bf16" else peak_gflops)
            out[f"{name}_frames_s_{n}"] = n * reps / seconds
            if mode == "spectral":  # over the model FLOPs: above 1 when the DFT does less work than the model
                out[f"{name}_model_gflops_{n}"] = flops_of(encode) * reps / seconds / 1e9
    out["frame_encoder_spectral_speedup_93"] = (
        out["frame_encoder_spectral_frames_s_93"] / out["frame_encoder_frames_s_93"]
    )
    cube = make_test_cube(3, size_px=tile_px + 14, n_dates=n_dates, n_s1=2 * n_dates, cloud_frac=0.0)
    tile = prepare_tile(cube, start="2021-01-01", end="2030-12-31", halo_px=7)
    n_px = int(np.count_nonzero(tile.flags & FLAG_VALID))
    tile_flops = model_flops(tile, preset="paper")
    flops_px = tile_flops["cached"]
    embs = {}
    for key, fb, bf16, spectral in (
        ("tile32", 93, False, None),
        ("tile32_direct", 93, False, False),
        ("tile32_fb2048", 2048, False, None),
        ("tile32_frame_bf16", 93, True, None),
    ):
        pred = Predictor(
            _model("paper"), pixel_batch=2048, frame_batch=fb, frame_bf16=bf16, spectral=spectral
        )
        pred.embed_tile(tile.crop(interior_px=6, n_targets=1))  # warm-up
        t0 = time.perf_counter()
        embs[key] = pred.embed_tile(tile)
        rate = n_px / (time.perf_counter() - t0)
        out[f"{key}_px_dates_s"] = rate
        if bf16:
            out[f"{key}_efficiency"] = mixed_efficiency(rate, tile_flops, peak_bf16_gflops, peak_gflops)
        else:
            out.update(efficiency(rate, flops_px, peak_gflops, prefix=f"{key}_"))
    out["tile32_fb_ratio"] = out["tile32_px_dates_s"] / out["tile32_fb2048_px_dates_s"]
    out["tile32_spectral_speedup"] = out["tile32_px_dates_s"] / out["tile32_direct_px_dates_s"]
    out["tile32_frame_bf16_speedup"] = out["tile32_frame_bf16_px_dates_s"] / out["tile32_px_dates_s"]
    out.update(quant_diff(embs["tile32_frame_bf16"], embs["tile32"], tile.flags, prefix="tile32_frame_bf16_"))
    print(f"[bench] frame encoder {out['frame_encoder_efficiency_93']:.3f} of peak at 93 windows per call, "
          f"{out['frame_encoder_efficiency_2048']:.3f} at 2,048; {tile_px} px tile {out['tile32_px_dates_s']:.1f} "
          f"vs {out['tile32_fb2048_px_dates_s']:.1f} pixel-dates/s; with bf16 frame encoders "
          f"{out['tile32_frame_bf16_px_dates_s']:.1f} (x{out['tile32_frame_bf16_speedup']:.2f})", flush=True)  # fmt: skip
    return out


def _job_config(
    tmp: Path,
    region_dir: Path,
    checkpoint: Path,
    *,
    region: str,
    store: str,
    tile_px: int = _STORE["tile_px"],
) -> EmbedJobConfig:
    from embedder.config import load_config

    layout = {**_STORE, "tile_px": tile_px, "chunk_px": min(tile_px, 64)}

    return load_config(
        EmbedJobConfig,
        {
            "catalog": str(region_dir / "catalog.json"), "store": store, "region": region,
            "start": "2022-01-10", "end": "2022-03-31", "checkpoint": str(checkpoint), "store_layout": layout,
            "pixel_batch": 1024, "actor_num_cpus": 1.0, "read_num_cpus": 0.5, "write_num_cpus": 0.25,
            "max_attempts": 1, "progress": False,
        },
    )  # fmt: skip


def _region(tmp: Path, size_px: int = 64) -> tuple[Path, Path]:
    from embedder.checkpoints import save_checkpoint
    from embedder.sample import write_sample_region

    region_dir = tmp / f"region{size_px}"
    if not (region_dir / "catalog.json").is_file():
        cfg = dataclasses.replace(
            SampleRegionConfig.tiny(), size_px=size_px, start=dt.date(2021, 10, 1), end=dt.date(2022, 5, 31)
        )
        write_sample_region(region_dir, cfg=cfg)
    ckpt = tmp / "fusion.pt"
    if not ckpt.is_file():
        save_checkpoint(ckpt, _model("small"))
    return region_dir, ckpt


def bench_pipeline(tmp: Path, *, scene_px: int, tile_px: int) -> dict[str, float]:
    """Ray pipeline pixel-dates/s over the bare predictor's on the same units (small model).

    The sample region's two scenes are ``scene_px`` wide and cut into ``tile_px`` units: the job's fixed
    start (actor start, model load, Ray Data planning) weighs less as units grow towards production's.
    """
    import ray

    from embedder.grid import region_from_text, work_units
    from ray_jobs.embed import EmbedActor, read_unit, run

    region_dir, ckpt = _region(tmp, scene_px)
    cfg = _job_config(
        tmp, region_dir, ckpt, region=str(region_dir / "region.json"), store=str(tmp / "pipe.zarr"),
        tile_px=tile_px,
    )  # fmt: skip
    layout = cfg.store_layout or StoreConfig()
    units = work_units(
        region_from_text(cfg.region),
        cfg.start,
        cfg.end,
        tile_px=layout.tile_px,
        period_days=layout.period_days,
    )
    # bare predictor: the prepared tiles in memory, only the model's time; timed before and after the
    # pipelines and averaged, since this machine's speed drifts by 10-20 % over minutes
    rows = [read_unit(u.to_row(), cfg=cfg) for u in units]
    actor = EmbedActor(cfg)

    def bare() -> tuple[int, float]:
        t0, n = time.perf_counter(), 0
        for row in rows:
            out = actor(row)
            if out["status"] == "ok":
                n += int(np.count_nonzero(np.asarray(out["flags"]) & FLAG_VALID))
        return n, time.perf_counter() - t0

    n_bare, bare_before = bare()
    # the pipeline: read + embed + write, Ray already up (cluster start-up is not the pipeline's cost)
    # the same units with one 1-thread actor per core (docs/operations.md, "Sizing the embedding actors"):
    # actors of 0.9 CPU leave a little for the read and write tasks, which need ~0.1 core each here
    cores = 2
    per_core = dataclasses.replace(
        cfg, store=str(tmp / "pipe_per_core.zarr"), actor_num_cpus=0.9, actor_threads=1,
        min_actors=cores, max_actors=cores, read_num_cpus=0.1, write_num_cpus=0.1,
    )  # fmt: skip
    # and with one actor on every core (its threads = the cores), reads and writes as small
    wide = dataclasses.replace(
        per_core, store=str(tmp / "pipe_wide.zarr"), actor_num_cpus=0.9 * cores, actor_threads=cores,
        min_actors=1, max_actors=1,
    )  # fmt: skip
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    try:
        summary = run(cfg)
        actor_rss = ray.get(ray.remote(_actor_rss).remote())
        summary_pc = run(per_core)
        summary_wide = run(wide)
    finally:
        ray.shutdown()
    bare_after = bare()[1]
    bare_s = (bare_before + bare_after) / 2
    bare_rate = n_bare / bare_s
    pipe_rate, steady = _rates(summary)
    startup = float(summary["startup_seconds"])
    print(f"[bench] pipeline: {len(units)} units, {summary['pixel_dates']} pixel-dates in {summary['seconds']:.1f} s "
          f"= {pipe_rate:.1f}/s; bare predictor {bare_rate:.1f}/s", flush=True)  # fmt: skip
    return {
        "pipeline_px_dates_s": pipe_rate,
        "bare_px_dates_s": bare_rate,
        "pipeline_share": pipe_rate / bare_rate,
        "pipeline_units": float(len(units)),
        "pipeline_tile_px": float(tile_px),
        "pipeline_s": float(summary["seconds"]),
        "pipeline_startup_s": startup,
        "pipeline_embed_s": float(summary["embed_seconds"]),
        "bare_s": bare_s,
        "bare_before_s": bare_before,
        "bare_after_s": bare_after,
        "pipeline_embed_slowdown": float(summary["embed_seconds"]) / bare_s,
        "pipeline_steady_share": steady / bare_rate,
        "worker_rss_mb": actor_rss,
        **_per_core_figures(summary_pc, summary_wide, pipe_rate, bare_rate, actors=cores),
    }


def _rates(summary: dict[str, Any]) -> tuple[float, float]:
    """A job summary's pixel-dates/s over its wall time, and after its start-up (``startup_seconds``)."""
    n, seconds = summary["pixel_dates"], summary["seconds"]
    return n / seconds, n / (seconds - float(summary["startup_seconds"]))


def _per_core_figures(
    summary: dict[str, Any], wide: dict[str, Any], pipe_rate: float, bare_rate: float, *, actors: int
) -> dict[str, float]:
    """``pipeline_per_core_*``: the job with one 1-thread actor per core, against the one-actor job
    (``_vs_one_actor``), the job with one actor on ``actors`` threads (``pipeline_wide_px_dates_s``,
    ``_vs_wide``) and the bare one-thread predictor (``_vs_bare``; at most ``actors``)."""
    for name, s in (("per-core", summary), ("wide", wide)):
        if s["units_failed"] or not s["units_written"]:
            raise RuntimeError(f"the {name} pipeline run did not embed its units: {s}")
    rate, steady = _rates(summary)
    wide_rate = wide["pixel_dates"] / wide["seconds"]
    print(f"[bench] pipeline, {actors} one-thread actors: {summary['pixel_dates']} pixel-dates in "
          f"{summary['seconds']:.1f} s = {rate:.1f}/s (x{rate / pipe_rate:.2f} one actor)", flush=True)  # fmt: skip
    print(f"[bench] pipeline, one actor on {actors} threads: {wide['pixel_dates']} pixel-dates in "
          f"{wide['seconds']:.1f} s = {wide_rate:.1f}/s", flush=True)  # fmt: skip
    return {
        "pipeline_per_core_actors": float(actors),
        "pipeline_per_core_px_dates_s": rate,
        "pipeline_per_core_vs_one_actor": rate / pipe_rate,
        "pipeline_wide_px_dates_s": wide_rate,
        "pipeline_wide_s": float(wide["seconds"]),
        "pipeline_per_core_vs_wide": rate / wide_rate,
        "pipeline_per_core_vs_bare": rate / bare_rate,
        "pipeline_per_core_s": float(summary["seconds"]),
        "pipeline_per_core_startup_s": float(summary["startup_seconds"]),
        "pipeline_per_core_steady_vs_bare": steady / bare_rate,
    }


def _actor_rss() -> float:
    """Peak RSS (MB, ``VmHWM``) of a fresh worker after loading the predictor: the floor of an actor's memory."""
    from ray_jobs.embed import EmbedActor  # noqa: F401  (imports torch + the model code as an actor does)

    return status_mb("VmHWM")


def driver_rss(tmp: Path, n_units: int) -> dict[str, float]:
    """Peak RSS (MB) of a fresh driver process that runs the job over ``n_units`` units without data.

    ``rss_mb`` is the process's peak resident set (``VmHWM``; not ``ru_maxrss``, which after ``exec``
    still holds the forking parent's peak: 2.6 GB read here when this bench had run the paper model
    first); ``growth_mb`` is how far the resident set rose above its level when ``run`` started (sampled
    every 10 ms): the job's own memory.
    """
    out = subprocess.run(
        [sys.executable, __file__, "--driver-units", str(n_units), "--tmp", str(tmp)],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(
            f"driver run with {n_units} units failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rss_mb": float(got["driver_rss_mb"]), "growth_mb": float(got["driver_growth_mb"])}


def _driver_child(tmp: Path, n_units: int) -> None:
    import ray
    from pyproj import Transformer

    from ray_jobs.embed import run

    region_dir, ckpt = _region(tmp)
    # 10 x (n / 10) tiles of 320 m in UTM 32N, far from the sample scenes: no data anywhere
    nx, ny = 10, n_units // 10
    if nx * ny != n_units:
        raise ValueError(f"--driver-units {n_units} must be a multiple of 10")
    x0, y0 = 938 * 320 + 20, 15625 * 320 + 20  # 20 m inside the tile grid
    x1, y1 = x0 + 320 * nx - 40, y0 + 320 * ny - 40
    to_ll = Transformer.from_crs(32632, 4326, always_xy=True)
    ring = [to_ll.transform(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    geo = tmp / f"nodata_{n_units}.geojson"
    geo.write_text(json.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    store = tempfile.mkdtemp(dir=tmp) + "/store.zarr"
    cfg = _job_config(tmp, region_dir, ckpt, region=str(geo), store=store)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    base, highest, done = status_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            highest[0] = max(highest[0], status_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        summary = run(cfg)
    finally:
        done.set()
        sampler.join()
        ray.shutdown()
    if summary["units_total"] != n_units:
        raise RuntimeError(f"expected {n_units} units, the region gave {summary['units_total']}")
    growth = max(0.0, highest[0] - base)
    print(
        json.dumps(
            {
                "driver_rss_mb": status_mb("VmHWM"),
                "driver_growth_mb": growth,
                "units": summary["units_total"],
            }
        )
    )


def _rounded(figures: dict[str, float], prefix: str = "") -> dict[str, float]:
    """``figures`` as saved: differences to 3 significant digits, the rest to 3 decimals; keys prefixed."""
    return {
        f"{prefix}{k}": (float(f"{v:.3g}") if k.endswith("max_abs_diff") else round(v, 3))
        for k, v in figures.items()
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paper-px", type=int, default=6, help="interior side of the paper-model tile")
    p.add_argument("--paper-dates", type=int, default=50, help="dates of the paper-model tile")
    p.add_argument("--paper-naive-targets", type=int, default=3, help="target dates the naive path embeds")
    p.add_argument("--small-px", type=int, default=16, help="interior side of the small-model tile")
    p.add_argument("--small-dates", type=int, default=50, help="dates of the small-model tile")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--compile", default="inductor", help="also time the paper fast path compiled ('' = skip)")
    p.add_argument("--pixel-batch", type=int, default=2048, help="pixels per forward pass of the paper model")
    p.add_argument(
        "--pipeline-scene-px", type=int, default=128, help="side of the pipeline region's 2 scenes"
    )
    p.add_argument("--pipeline-tile-px", type=int, default=64, help="side of the pipeline's work units")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "inference.json"))
    p.add_argument(
        "--parts", default="paths,frames,pipeline,driver", help="which parts to run (results are merged)"
    )
    p.add_argument("--tmp", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--driver-units", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.set_num_threads(a.threads)
    if a.driver_units:  # a job's driver: the allocator as it is (only the embedding actors keep memory)
        _driver_child(a.tmp, a.driver_units)
        return 0
    keep_freed_memory()  # as the embedding actors do (EmbedJobConfig.keep_freed_memory)
    out = Path(a.out)
    res: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}

    def save(new: dict[str, Any]) -> None:  # after each part, so a later failure keeps the numbers
        res.update(new, threads=a.threads)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")

    parts = set(a.parts.split(","))
    peak = matmul_peak_gflops()
    peak_bf16 = float("nan")  # measured only for the parts whose efficiencies use it
    if parts & {"paths", "frames"}:  # the peaks their efficiencies were computed with
        peak_bf16 = matmul_peak_gflops(n=2048, dtype=torch.bfloat16)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        save(
            {
                "peak_gflops": round(peak, 1),
                "peak_bf16_gflops": round(peak_bf16, 1),
                "cpu_amx": float(amx),
                **{k: round(v, 2) for k, v in machine().items()},
                **cpu(),
            }
        )
    print(
        f"[bench] matmul peak {peak:.1f} GFLOP/s fp32, {peak_bf16:.1f} bf16 on {a.threads} threads",
        flush=True,
    )
    if "paths" in parts:
        paper = bench_paths(
            "paper", interior_px=a.paper_px, n_dates=a.paper_dates, naive_targets=a.paper_naive_targets,
            pixel_batch=a.pixel_batch, peak_gflops=peak, compile_backend=a.compile or None,
            peak_bf16_gflops=peak_bf16,
        )  # fmt: skip
        paper.update(bench_realdata_bf16())
        save(_rounded(paper))
        small = bench_paths(
            "small", interior_px=a.small_px, n_dates=a.small_dates, naive_targets=0, pixel_batch=2048,
            peak_gflops=peak,
        )  # fmt: skip
        save(_rounded(small, "small_"))
    if "frames" in parts:
        save(_rounded(bench_frames(peak_gflops=peak, peak_bf16_gflops=peak_bf16)))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if "pipeline" in parts:
            pipe = bench_pipeline(tmp, scene_px=a.pipeline_scene_px, tile_px=a.pipeline_tile_px)
            save({k: round(v, 3) for k, v in pipe.items()})
        if "driver" in parts:
            for n in (10, 100):
                got = driver_rss(tmp, n)
                save({f"driver_rss_{n}_mb": round(got["rss_mb"], 1)})
                save({f"driver_growth_{n}_mb": round(got["growth_mb"], 1)})
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
