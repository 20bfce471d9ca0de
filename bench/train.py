"""Benchmark: the Ray Train job against the plain torch loop on the same shards (Ray overhead per worker).

Both sides run ``embedder.training.fit`` on the same train/val splits with the same small S2 model and
batch size, checkpointing every epoch to local disk:

* plain: ``fit`` in this process, one torch thread, chunk-shuffled DataLoaders over the shard datasets;
* Ray: ``ray_jobs.train_modality`` with ONE Ray Train worker of one CPU (a per-worker comparison), i.e.
  the real job: chunk-aware shuffled loader, DDP wrapper, per-epoch ``ray.train.report`` with a checkpoint
  persisted to the run folder, metrics.jsonl rewritten every epoch.

Rates are train samples per epoch over the time between consecutive epoch ends (the first epoch is
left out: warm-up), which includes validation and checkpointing on both sides. Two clocks:

* CPU time of the training process (``time.process_time``): samples per CPU-second of one dedicated
  core; robust when other work shares the machine. ``plain_samples_s`` / ``ray_samples_s`` use it.
* wall time (shortest epoch): ``plain_wall_samples_s`` / ``ray_wall_samples_s``, for reference.

Before both, the loader alone (one epoch, fully random order vs chunk-aware ``ChunkShuffleSampler``) and
the model step alone (batches in memory): ``loader_samples_s_random``, ``loader_samples_s_chunked``,
``step_samples_s``, ``loader_chunked_vs_step`` (> 1: the loader keeps up with the step).

``ray_overhead = 1 - ray_samples_s / plain_samples_s`` (target < 0.10). ``peak_rss_mb`` is the peak
resident memory of the Ray Train worker (rank 0), ``plain_peak_rss_mb`` that of this process after the
plain run. The plain loop runs before and after the Ray job; its rate is the mean of the two, which
damps drift on a shared machine.

    .venv/bin/python bench/train.py [--epochs 5] [--cubes 6] [--size-px 60] [--out bench/results/train.json]
    .venv/bin/python bench/train.py --preset paper --epochs 3 --batch 4   # paper_* keys, merged

Each run also records ``peak_gflops`` (one-thread fp32 matmul peak, same run), ``flops_per_sample`` of a
training step and ``efficiency`` (Ray side) / ``plain_efficiency`` over that peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ["OMP_NUM_THREADS"] = "1"  # one thread per worker on both sides (before torch is imported)

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu, efficiency, flops_of, machine, matmul_peak_gflops

from embedder.config import ModelConfig, PatchConfig, TrainConfig, load_config
from embedder.data.loader import ChunkShuffleSampler
from embedder.data.shards import build_cube_shards
from embedder.data.testing import make_test_cube
from embedder.hostmem import keep_freed_memory
from embedder.models import ModalityAutoencoder
from embedder.sensors import S2
from embedder.training import ModalityObjective, Objective, fit, seed_everything
from ray_jobs import train_modality
from ray_jobs.config import TrainModalityJobConfig
from ray_jobs.train_common import RunFolder, peak_rss_mb


def build_shards(root: Path, *, cubes: int, size_px: int, n_dates: int) -> None:
    for i in range(cubes):
        cube = make_test_cube(i, size_px=size_px, n_dates=n_dates, n_s1=2 * n_dates)
        build_cube_shards(cube, str(root), f"bench{i}", kinds=("fused",), cfg=PatchConfig())


def rate(end_times: list[float], n_samples: int) -> float:
    """Samples/s from the (wall or CPU) clock readings at epoch ends (first epoch excluded as warm-up)."""
    intervals = [b - a for a, b in itertools.pairwise(end_times)]
    if not intervals:
        raise SystemExit("need at least 2 epochs to time; pass --epochs 3 or more")
    return n_samples / min(intervals)


def plain_run(cfg: TrainModalityJobConfig, run_dir: Path) -> tuple[float, float]:
    """``(samples per CPU-second, samples per wall-second)`` of ``fit`` in this process.

    The process keeps freed memory as a CPU Ray Train worker does (``WorkersConfig.keep_freed_memory``).
    """
    torch.set_num_threads(1)
    keep_freed_memory()
    datasets = train_modality.build_datasets(cfg)
    seed_everything(cfg.train.seed)
    model = ModalityAutoencoder(S2, cfg=cfg.model)
    sampler = ChunkShuffleSampler(datasets["train"], shuffle=True, seed=cfg.train.seed)  # as the Ray job
    train = DataLoader(datasets["train"], batch_size=cfg.train.batch_size, sampler=sampler)
    val = DataLoader(datasets["val"], batch_size=cfg.train.batch_size)
    ends: list[tuple[float, float]] = []
    fit(
        model, train, val, objective=cast(Objective, ModalityObjective(S2)), cfg=cfg.train, run_dir=run_dir,
        report=lambda _: ends.append((time.process_time(), time.time())),
    )  # fmt: skip
    n = len(datasets["train"])
    return rate([c for c, _ in ends], n), rate([w for _, w in ends], n)


def train_flops_per_sample(cfg: TrainModalityJobConfig) -> float:
    """FLOPs of one optimiser step per sample (forward, loss, backward), counted on a batch of two."""
    from embedder.training import build_optimizer, train_step

    ds = train_modality.build_datasets(cfg)["train"]
    batch = next(iter(DataLoader(ds, batch_size=2)))
    model = ModalityAutoencoder(S2, cfg=cfg.model)
    opt = build_optimizer(model, cfg.train)
    objective = ModalityObjective(S2)
    return (
        flops_of(
            lambda: train_step(model, batch, objective=objective, optimizer=opt, warmup=None, cfg=cfg.train)
        )
        / 2
    )


def loader_and_step(cfg: TrainModalityJobConfig) -> dict[str, float]:
    """Samples/s of the training loader alone (fully random vs chunk-aware order) and of the model step alone.

    The loader passes read and decode one epoch of the training split (batch size of the job, no model);
    the step pass runs optimiser steps of the job's model on batches already in memory. A loader that
    keeps up delivers well above the step rate.
    """
    from torch.utils.data import RandomSampler

    from embedder.training import build_optimizer, train_step

    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for name, make in (
        ("random", lambda ds: RandomSampler(ds, generator=torch.Generator().manual_seed(0))),
        ("chunked", lambda ds: ChunkShuffleSampler(ds, shuffle=True, seed=0)),
    ):
        ds = train_modality.build_datasets(cfg)["train"]  # a fresh chunk cache
        loader = DataLoader(ds, batch_size=cfg.train.batch_size, sampler=make(ds))
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch["s2"])
        out[f"loader_samples_s_{name}"] = round(n / (time.perf_counter() - t0), 1)
    seed_everything(0)
    model = ModalityAutoencoder(S2, cfg=cfg.model)
    ds = train_modality.build_datasets(cfg)["train"]
    batches = list(itertools.islice(DataLoader(ds, batch_size=cfg.train.batch_size), 12))
    objective, opt = ModalityObjective(S2), build_optimizer(model, cfg.train)
    for b in batches[:2]:  # warm-up
        train_step(model, b, objective=objective, optimizer=opt, warmup=None, cfg=cfg.train)
    t0 = time.perf_counter()
    for b in batches[2:]:
        train_step(model, b, objective=objective, optimizer=opt, warmup=None, cfg=cfg.train)
    out["step_samples_s"] = round(sum(len(b["s2"]) for b in batches[2:]) / (time.perf_counter() - t0), 1)
    out["loader_speedup_chunked_vs_random"] = round(
        out["loader_samples_s_chunked"] / out["loader_samples_s_random"], 1
    )
    out["loader_chunked_vs_step"] = round(out["loader_samples_s_chunked"] / out["step_samples_s"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5, help="epochs per side (the first is warm-up)")
    p.add_argument("--cubes", type=int, default=6, help="cubes (6 -> 4 train, 1 val, 1 test)")
    p.add_argument("--size-px", type=int, default=60, help="cube side in pixels")
    p.add_argument(
        "--preset",
        choices=("small", "paper"),
        default="small",
        help="model size: small (keys as they are) or the paper's (keys prefixed paper_, merged)",
    )
    p.add_argument("--batch", type=int, default=8, help="batch size of both sides")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    a = p.parse_args(argv)

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_shards(root / "shards", cubes=a.cubes, size_px=a.size_px, n_dates=40)
        train_cfg = TrainConfig.small()
        cfg = load_config(
            TrainModalityJobConfig,
            {
                "sensor": "s2",
                "shard_root": str(root / "shards"),
                "run": {"storage_path": str(root / "runs"), "name": "bench"},
                "train": {"lr": train_cfg.lr, "warmup_steps": train_cfg.warmup_steps, "max_epochs": a.epochs,
                          "early_stopping_patience": a.epochs, "batch_size": a.batch},
                "workers": {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
            },
        )  # fmt: skip
        cfg = dataclasses.replace(cfg, model=ModelConfig() if a.preset == "paper" else ModelConfig.small())
        peak = matmul_peak_gflops(threads=1)  # one thread: what each side uses
        print(f"matmul peak {peak:.1f} GFLOP/s on one thread", flush=True)
        n_train = len(train_modality.build_datasets(cfg)["train"])
        print(
            f"shards: {a.cubes} cubes, {n_train} train samples ({time.perf_counter() - t0:.1f} s)", flush=True
        )

        loader = loader_and_step(cfg)
        print(f"loader alone and model step alone (samples/s): {loader}", flush=True)
        plain_1, plain_wall_1 = plain_run(cfg, root / "plain1")
        plain_rss = peak_rss_mb()  # before Ray starts in this process
        print(f"plain torch loop: {plain_1:.1f} samples/CPU-s ({plain_wall_1:.1f}/wall-s)", flush=True)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            train_modality.train(cfg)
        finally:
            ray.shutdown()
        lines = RunFolder.of(cfg.run).read_metrics()
        ray_rate = rate([float(line["cpu_s"]) for line in lines], n_train)
        ray_wall = rate([float(line["reported_at"]) for line in lines], n_train)
        print(f"Ray Train job (1 worker): {ray_rate:.1f} samples/CPU-s ({ray_wall:.1f}/wall-s)", flush=True)
        plain_2, plain_wall_2 = plain_run(cfg, root / "plain2")
        print(f"plain torch loop again: {plain_2:.1f} samples/CPU-s ({plain_wall_2:.1f}/wall-s)", flush=True)
        flops = train_flops_per_sample(cfg)  # reads the shards: inside the temporary folder

    plain = (plain_1 + plain_2) / 2
    plain_wall = (plain_wall_1 + plain_wall_2) / 2
    result = {
        "plain_samples_s": round(plain, 2),
        "ray_samples_s": round(ray_rate, 2),
        "ray_overhead": round(1.0 - ray_rate / plain, 4),
        "peak_rss_mb": round(max(float(line["peak_rss_mb"]) for line in lines), 1),
        "plain_peak_rss_mb": round(plain_rss, 1),
        "clock": "process CPU time (samples per CPU-second)",
        "plain_samples_s_runs": [round(plain_1, 2), round(plain_2, 2)],
        "plain_wall_samples_s": round(plain_wall, 2),
        "ray_wall_samples_s": round(ray_wall, 2),
        "ray_wall_overhead": round(1.0 - ray_wall / plain_wall, 4),
        "train_samples": n_train,
        "epochs": a.epochs,
        "batch_size": cfg.train.batch_size,
        "model": "ModelConfig()" if a.preset == "paper" else "ModelConfig.small()",
        **loader,
    }
    result.update(flops_per_sample=flops, peak_gflops=round(peak, 1), **machine(), **cpu())
    result.update({k: round(v, 3) for k, v in efficiency(plain, flops, peak, prefix="plain_").items()})
    result.update({k: round(v, 3) for k, v in efficiency(ray_rate, flops, peak).items()})
    if a.preset == "paper":
        result = {f"paper_{k}": v for k, v in result.items()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(out.read_text()) if out.is_file() else {}
    if a.preset == "small":  # the small run rewrites its own keys, keeps the paper run's
        merged = {k: v for k, v in merged.items() if k.startswith("paper_")}
    merged.update(result)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
