"""Benchmark: training on one GPU -- samples/s of the paper autoencoder, and the converging recipe.

Two parts, both on cubes of the synthetic sample region cut into windows exactly as the training shards
are (``embedder.data.patches`` with each cube's shard seed), held in GPU memory:

1. **throughput**: optimiser steps of the paper S2 autoencoder (``ModelConfig()``, SPEC loss) at several
   batch sizes, fp32 and bf16 autocast; ``paper_s2_samples_s_bf16_b<B>`` etc.
2. **convergence**: ``embedder.training.fit`` runs, each in its own process sharing the GPU: the paper
   model with the converging recipe (standardised bands, warm-up + cosine, MAE-only or MAE-warm loss) and
   the CPU preset (``ModelConfig.cpu`` + ``TrainConfig.cpu``) over several seeds. Each reports the test
   centre MAE of its best checkpoint beside the floors on the same test windows (``embedder.floors``).

The machine with the GPU cannot read the sample region's COGs (no rasterio/zarr there), so the cubes are
exported here first:

    .venv/bin/python bench/gpu_train.py --export-cubes .gpu/cubes.pkl.gz --work WORK   # CPU machine
    python3 bench/gpu_train.py --cubes .gpu/cubes.pkl.gz --out DIR                       # GPU machine

``--work`` is a ``bench/convergence.py`` work folder (its region and shards are made when missing).
Writes ``DIR/gpu_train.json`` (flat keys) and one ``DIR/run-<name>.json`` per convergence run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SPLITS = ("train", "val", "test")


def export_cubes(out: Path, work: Path) -> None:
    """Load the convergence work folder's cubes (as the shard build does) and pickle them with their split."""
    from odc.geo.geobox import GeoBox

    from embedder.data.cubes import load_cube
    from embedder.data.shards import CUBE_RES_M, list_cube_ids, plan_cubes, split_cube_ids
    from embedder.data.stac import open_catalog
    from embedder.evaluation.convergence import ConvergenceConfig, prepare
    from embedder.evaluation.region import shards_config

    cfg = ConvergenceConfig()
    prepared = prepare(work, cfg, log=print)  # the region and its shards, as the convergence run builds them
    scfg = shards_config(prepared["region"], Path(prepared["shards"]), cfg.data)
    deal = split_cube_ids(list_cube_ids(str(scfg.shard_root)))
    cubes = {}
    for task in plan_cubes(scfg):
        geobox = GeoBox.from_bbox(task.bounds, crs=f"EPSG:{task.epsg}", resolution=CUBE_RES_M)
        cube = load_cube(open_catalog(scfg.catalog), geobox, scfg.start, scfg.end, cfg=scfg.cube).load()
        # plain arrays, not an xarray object: the GPU machine's xarray may be another version
        plain = cube.to_dict(data="array")
        cubes[task.cube_id] = {"cube": plain, "split": deal[task.cube_id]}
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wb", compresslevel=6) as fh:
        pickle.dump({"cubes": cubes, "seed": scfg.seed, "patches": scfg.patches}, fh)
    print(f"{len(cubes)} cubes -> {out} ({out.stat().st_size / 1e6:.1f} MB)")


def load_windows(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{kind: {split: {key: array}}}`` for kinds ``fused`` and ``s1only``, as the shards hold them."""
    import numpy as np
    import xarray as xr

    from embedder.data.patches import cube_seed, sample_fused_patches, sample_s1only_patches

    with gzip.open(path, "rb") as fh:
        data = pickle.load(fh)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, sampler in (("fused", sample_fused_patches), ("s1only", sample_s1only_patches)):
        parts: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        for cube_id, item in sorted(data["cubes"].items()):
            cube = xr.Dataset.from_dict(item["cube"])
            samples, _ = sampler(cube, cfg=data["patches"], seed=cube_seed(data["seed"], cube_id, kind))
            parts[item["split"]].append(samples)
        out[kind] = {
            s: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for s, ps in parts.items() if ps
        }
    return out


def _tensors(split: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in split.items() if v.dtype != object}


def _batches(data: dict[str, Any], batch: int, *, seed: int, shuffle: bool) -> Any:
    import torch

    n = len(next(iter(data.values())))

    def per_epoch(epoch: int) -> Iterator[dict[str, Any]]:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
        for lo in range(0, n, batch):
            idx = order[lo : lo + batch].to(next(iter(data.values())).device)
            yield {k: v[idx] for k, v in data.items()}

    return per_epoch


def throughput(windows: dict[str, Any], *, seconds: float) -> dict[str, float]:
    """Samples/s of paper S2 autoencoder optimiser steps (SPEC loss) per batch size and precision."""
    import torch

    from embedder.config import ModelConfig, TrainConfig
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S2
    from embedder.training import ModalityObjective, build_optimizer, train_step

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    train = _tensors(windows["fused"]["train"], dev)
    out: dict[str, float] = {}
    for bf16 in (True, False):
        for batch in (256, 1024):
            cfg = dataclasses.replace(TrainConfig(), bf16=bf16, batch_size=batch)
            model = ModalityAutoencoder(S2, cfg=ModelConfig()).to(dev)
            opt = build_optimizer(model, cfg)
            obj = ModalityObjective(S2)
            it = _batches(train, batch, seed=0, shuffle=True)
            steps, t0, n = 0, 0.0, 0
            epoch = 0
            while True:
                for b in it(epoch):
                    if len(b["s2"]) < batch:
                        continue
                    train_step(model, b, objective=obj, optimizer=opt, warmup=None, cfg=cfg)
                    steps += 1
                    if steps == 5:  # warm-up steps (cudnn autotuning) are not timed
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                    elif steps > 5:
                        n += batch
                    if steps > 5 and time.perf_counter() - t0 > seconds:
                        break
                else:
                    epoch += 1
                    continue
                break
            torch.cuda.synchronize()
            rate = n / (time.perf_counter() - t0)
            key = f"paper_s2_samples_s_{'bf16' if bf16 else 'fp32'}_b{batch}"
            out[key] = round(rate, 1)
            print(f"{key}: {rate:.0f}", flush=True)
    out["paper_s2_params"] = sum(p.numel() for p in ModalityAutoencoder(S2, cfg=ModelConfig()).parameters())
    return out


_WIDE = {"d_model": 128, "conv_channels": (32, 32, 32), "latent_token_dim": 16, "ff_dim": 128}
"""A wider CPU-preset variant: an 8-channel frame token."""

_SKIP = {"centre_skip": True}
"""The centre-pixel path of ``ModelConfig.centre_skip``."""

RUNS: dict[str, dict[str, Any]] = {
    # the paper model with the converging recipe (standardised bands, cosine, bf16, batch 64)
    "paper-s2-mae-lr1e-3": {"sensor": "s2", "preset": "paper", "batch": 64, "lr": 1e-3, "steps": 1500, "bf16": True},
    "paper-s2-mae-lr3e-4": {"sensor": "s2", "preset": "paper", "batch": 64, "lr": 3e-4, "steps": 1500, "bf16": True},
    "paper-s2-maewarm": {
        "sensor": "s2", "preset": "paper", "batch": 64, "lr": 3e-4, "steps": 1500, "loss": "mae_warm",
        "mae_warm_steps": 750, "bf16": True,
    },
    "paper-s1-mae": {"sensor": "s1", "preset": "paper", "batch": 64, "lr": 3e-4, "steps": 1500, "bf16": True},
    # recipe search on the small models (same steps as on CPU, so the result carries over)
    "small-s2-lr2e-3": {"sensor": "s2", "preset": "small", "lr": 2e-3, "steps": 3000},
    "cpu-s2-lr2e-3": {"sensor": "s2", "preset": "cpu", "lr": 2e-3, "steps": 3000},
    "cpu-s2-lr5e-4": {"sensor": "s2", "preset": "cpu", "lr": 5e-4, "steps": 3000},
    "cpu-s2-lr1e-3-6k": {"sensor": "s2", "preset": "cpu", "lr": 1e-3, "steps": 6000},
    "cpu-s2-raw-lr1e-3": {"sensor": "s2", "preset": "cpu", "lr": 1e-3, "steps": 3000, "model": {"standardize": False}},
    "cpu-s2-paperloss-lr1e-3": {"sensor": "s2", "preset": "cpu", "lr": 1e-3, "steps": 3000, "loss": "paper"},
    "wide-s2-lr1e-3": {"sensor": "s2", "preset": "cpu", "lr": 1e-3, "steps": 3000, "model": _WIDE},
    "wide-s2-lr5e-4-b32": {"sensor": "s2", "preset": "cpu", "lr": 5e-4, "steps": 3000, "batch": 32, "model": _WIDE},
    # seeds of the CPU recipe
    **{
        f"cpu-{s}-seed{seed}": {"sensor": s, "preset": "cpu", "lr": 1e-3, "steps": 3000, "seed": seed}
        for s in ("s2", "s1")
        for seed in (0, 1, 2)
    },
    "cpu-s1-lr3e-3": {"sensor": "s1", "preset": "cpu", "lr": 3e-3, "steps": 3000},
    # S1 collapses to a constant at lr 1e-3 for 2 of 3 seeds: lower rates, with and without standardisation
    "cpu-s1-lr3e-4": {"sensor": "s1", "preset": "cpu", "lr": 3e-4, "steps": 2000},
    "cpu-s1-lr3e-4-seed1": {"sensor": "s1", "preset": "cpu", "lr": 3e-4, "steps": 2000, "seed": 1},
    "cpu-s1-lr1e-4": {"sensor": "s1", "preset": "cpu", "lr": 1e-4, "steps": 2000},
    "cpu-s1-raw-lr3e-4": {"sensor": "s1", "preset": "cpu", "lr": 3e-4, "steps": 2000, "model": {"standardize": False}},
    "cpu-s1-raw-lr1e-3": {"sensor": "s1", "preset": "cpu", "lr": 1e-3, "steps": 2000, "model": {"standardize": False}},
    "small-s1-lr1e-3": {"sensor": "s1", "preset": "small", "lr": 1e-3, "steps": 2000},
    # the centre-pixel skip (ModelConfig.centre_skip): seeds, a higher rate, a same-budget baseline, the paper model
    **{
        f"skip-{s}-seed{seed}": {"sensor": s, "preset": "cpu", "lr": 3e-4, "steps": n, "seed": seed, "model": _SKIP}
        for s, n in (("s2", 3000), ("s1", 2000))
        for seed in (0, 1, 2)
    },
    **{
        f"skip-{s}-lr1e-3{'' if seed == 0 else f'-seed{seed}'}": {
            "sensor": s, "preset": "cpu", "lr": 1e-3, "steps": n, "seed": seed, "model": _SKIP
        }
        for s, n in (("s2", 3000), ("s1", 2000))
        for seed in (0, 1, 2)
    },
    "noskip-s2-seed0": {"sensor": "s2", "preset": "cpu", "lr": 3e-4, "steps": 3000, "seed": 0},
    "paper-skip-s2-fp32": {"sensor": "s2", "preset": "paper", "batch": 64, "lr": 3e-4, "steps": 2000, "model": _SKIP},
    "paper-skip-s2-fp32-lr1e-3": {"sensor": "s2", "preset": "paper", "batch": 64, "lr": 1e-3, "steps": 2000, "model": _SKIP},
}  # fmt: skip
"""The convergence runs: sensor, model preset, batch, peak lr, steps, loss, seed."""


def run_one(
    name: str,
    cubes: Path,
    out: Path,
    deadline_s: float,
    *,
    scratch: Path,
    device: str = "cuda",
    max_steps: int | None = None,
) -> dict[str, Any]:
    """One convergence run (in its own process): fit, then the best checkpoint on the test windows."""
    import torch

    from embedder.checkpoints import load_checkpoint
    from embedder.config import ModelConfig, TrainConfig
    from embedder.floors import centre_floors
    from embedder.models.modality import ModalityAutoencoder
    from embedder.sensors import S1, S2
    from embedder.training import ModalityObjective, evaluate, fit, seed_everything

    spec = dict(RUNS[name])
    if max_steps is not None:
        spec["steps"] = min(spec["steps"], max_steps)
    torch.set_num_threads(1)
    dev = torch.device(device)
    sensor = S2 if spec["sensor"] == "s2" else S1
    kind = "fused" if sensor is S2 else "s1only"
    windows = load_windows(cubes)[kind]
    data = {s: _tensors(windows[s], dev) for s in SPLITS}
    base = {
        "paper": dataclasses.replace(ModelConfig(), standardize=True),
        "small": dataclasses.replace(ModelConfig.small(), standardize=True),
        "cpu": ModelConfig.cpu(),
    }[spec["preset"]]
    mcfg = dataclasses.replace(base, **spec.get("model", {}))
    spe = min(250, spec["steps"] // 2)
    tcfg = dataclasses.replace(
        TrainConfig.cpu(total_steps=spec["steps"]),
        lr=spec["lr"], batch_size=spec.get("batch", 16), seed=spec.get("seed", 42), bf16=spec.get("bf16", False) and dev.type == "cuda",
        loss=spec.get("loss", "mae"), mae_warm_steps=spec.get("mae_warm_steps", 0),
    )  # fmt: skip
    seed_everything(tcfg.seed)
    model = ModalityAutoencoder(sensor, cfg=mcfg)
    t_end = time.monotonic() + deadline_s
    train_it = _batches(data["train"], tcfg.batch_size, seed=tcfg.seed, shuffle=True)

    def train(epoch: int) -> Iterator[dict[str, Any]]:
        for b in train_it(epoch):
            if time.monotonic() > t_end:
                return
            yield b

    run_dir = scratch / f"run-{name}"  # checkpoints stay out of the results folder
    t0 = time.perf_counter()
    cut = False
    try:
        res = fit(
            model, train, _batches(data["val"], 256, seed=0, shuffle=False), objective=ModalityObjective(sensor),
            cfg=tcfg, run_dir=run_dir, device=dev, max_steps_per_epoch=spe,
        )  # fmt: skip
        history = res.history
    except ValueError:  # the deadline left an epoch without batches
        cut = True
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    minutes = (time.perf_counter() - t0) / 60
    ckpt = load_checkpoint(run_dir / "best.pt", map_location=dev)
    model.load_state_dict(ckpt["model_state"])
    test = list(_batches(data["test"], 256, seed=0, shuffle=False)(0))
    tm = evaluate(model, test, objective=ModalityObjective(sensor), cfg=tcfg, device=dev)
    floors = centre_floors(test, [sensor])[sensor.name]
    steps = history[-1]["step"] if history else 0
    result = {
        "name": name, **{k: v for k, v in spec.items() if k != "model"}, "model": repr(mcfg), "minutes": round(minutes, 2), "steps_done": steps, "cut_at_deadline": cut,
        "test_centre_mae": tm["centre_mae"], "floors": floors, "ratio": tm["centre_mae"] / floors["frame_mean"],
        "best_epoch": int(ckpt["best_epoch"]), "val_curve": [h["val"]["centre_mae"] for h in history],
        "samples_s": steps * tcfg.batch_size / max(1e-9, minutes * 60),
    }  # fmt: skip
    (out / f"run-{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "val_curve"}), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export-cubes", type=Path, help="CPU machine: write the cubes pickle here and stop")
    p.add_argument(
        "--work", type=Path, default=Path("bench/work/convergence"), help="convergence work folder"
    )
    p.add_argument("--cubes", type=Path, default=Path(".gpu/cubes.pkl.gz"))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    p.add_argument("--throughput-s", type=float, default=8.0, help="timed seconds per throughput setting")
    p.add_argument("--deadline-s", type=float, default=300.0, help="wall-clock cap of each convergence run")
    p.add_argument("--runs", default=",".join(RUNS), help="comma-separated convergence runs")
    p.add_argument(
        "--device", default="cuda", help="torch device of the convergence runs (cpu: a smoke test)"
    )
    p.add_argument("--max-steps", type=int, help="cap every run's steps (smoke test)")
    p.add_argument("--scratch", type=Path, default=Path("/tmp/gpu_train"), help="run folders (checkpoints)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one convergence run in this process
    a = p.parse_args(argv)
    if a.export_cubes:
        export_cubes(a.export_cubes, a.work)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    if a.one:
        run_one(
            a.one, a.cubes, a.out, a.deadline_s, scratch=a.scratch, device=a.device, max_steps=a.max_steps
        )
        return 0
    import torch

    on_gpu = a.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        print("bench/gpu_train.py: no CUDA GPU here; skipped (run it on a GPU machine, see its docstring)")
        return 0
    if not a.cubes.is_file():
        print(f"bench/gpu_train.py: {a.cubes} is missing; export it first with --export-cubes {a.cubes}")
        return 2
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if on_gpu else a.device,
        "torch": torch.__version__,
    }
    if a.throughput_s > 0 and on_gpu:
        figures.update(throughput(load_windows(a.cubes), seconds=a.throughput_s))
    names = [n for n in a.runs.split(",") if n]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--one",
                n,
                "--cubes",
                str(a.cubes),
                "--out",
                str(a.out),
                "--deadline-s",
                str(a.deadline_s),
                "--device",
                a.device,
                "--scratch",
                str(a.scratch),
                *(["--max-steps", str(a.max_steps)] if a.max_steps else []),
            ],
        )
        for n in names
    ]
    for proc in procs:
        proc.wait()
    for n in names:
        path = a.out / f"run-{n}.json"
        if not path.is_file():
            figures[f"{n}_failed"] = True
            continue
        r = json.loads(path.read_text())
        for key in ("test_centre_mae", "ratio", "minutes", "steps_done", "samples_s"):
            figures[f"{n}_{key}"] = r[key]
        figures[f"{n}_floor_frame_mean"] = r["floors"]["frame_mean"]
    (a.out / "gpu_train.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
