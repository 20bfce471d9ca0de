"""Benchmark: which fusion recipe makes the 7-d embedding worth more than the bands?

Trains the CPU preset's fusion (``FusionConfig.cpu``) over the committed seed-0 autoencoders
(``weights/s1.pt``, ``weights/s2.pt``) with each recipe variant on the convergence run's shards, scores the
best checkpoint's test centre MAE beside its frame-mean floor, and runs the convergence run's land-cover
probe (linear, 3 block splits over the region's six scenes, embedding vs single-date bands). Stages and
probe inputs resume from the work folder. The fusion seed (0) and data are those of ``bench/convergence.py
--seeds 0``, so a variant's fusion is what ``make weights`` trains with that recipe.

    .venv/bin/python bench/fusion_recipe.py [--variants spec,lr1e3_2k,td05] [--work bench/work/fusion_recipe]

Writes ``bench/results/fusion_recipe.json`` (flat keys ``<variant>_probe_emb_linear``, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report

RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS: dict[str, dict[str, Any]] = {
    "spec": {"lr": 3e-4, "steps": 1000},  # the convergence run's fusion recipe (SPEC 4 loss weights)
    "lr1e3_2k": {"lr": 1e-3, "steps": 2000},
    "td05": {"lr": 1e-3, "steps": 2000, "temporal_decay": 0.5},
    "td08": {"lr": 1e-3, "steps": 2000, "temporal_decay": 0.8},
    "td10": {"lr": 1e-3, "steps": 2000, "temporal_decay": 1.0},
}
"""Recipe variants: peak lr, optimiser steps and ``TrainConfig.temporal_decay`` (absent: SPEC's 0.1)."""


def run_variant(name: str, spec: dict[str, Any], work: Path, weights: Path) -> dict[str, float]:
    """Train (or resume) one variant's fusion, score it and probe it; flat figures keyed by ``name``."""
    from embedder.checkpoints import load_autoencoder
    from embedder.data.loader import ShardDataset
    from embedder.evaluation.convergence import ConvergenceConfig, fit_stage, prepare, probe_scores
    from embedder.evaluation.quality import probe_inputs
    from embedder.evaluation.towers import load_scene_cube
    from embedder.inference import Predictor
    from embedder.models.fusion import FusionModel
    from embedder.sensors import S1, S2
    from embedder.training import FusionObjective, seed_everything

    base = ConvergenceConfig()
    cfg = dataclasses.replace(
        base,
        steps=(*(kv for kv in base.steps if kv[0] != "fusion"), ("fusion", spec["steps"])),
        lr=(("fusion", spec["lr"]),),
        temporal_decay=(("fusion", spec["temporal_decay"]),) if "temporal_decay" in spec else (),
    )
    prepared = prepare(work / "data", cfg)
    fused = {s: ShardDataset(prepared["shards"], split=s, kind="fused") for s in ("train", "val", "test")}
    seed_everything(0)
    aes = {n: load_autoencoder(weights / f"{n}.pt", n) for n in ("s1", "s2")}
    model = FusionModel(aes, cfg=cfg.fusion)
    t0 = time.perf_counter()
    stage = fit_stage(
        model, FusionObjective([S1, S2]), fused, work / name, cfg.train_config("fusion", 0),
        steps_per_epoch=cfg.steps_per_epoch,
    )  # fmt: skip
    cache = work / name / "probe_inputs.pkl"
    region = prepared["region"]
    if cache.is_file():
        inputs = pickle.loads(cache.read_bytes())
    else:
        cubes = {s.name: load_scene_cube(region, s) for s in region.scenes}
        inputs = probe_inputs(Predictor(model.eval(), pixel_batch=cfg.data.pixel_batch), region, cubes)
        cache.write_bytes(pickle.dumps(inputs))

    probe = probe_scores(inputs, cfg, seed=0)
    return {
        f"{name}_fusion_centre_mae": stage["test_centre_mae"],
        f"{name}_fusion_floor_frame_mean": stage["floor_frame_mean"],
        f"{name}_fusion_vs_floor": stage["test_centre_mae"] / stage["floor_frame_mean"],
        f"{name}_fusion_minutes": stage["minutes"],
        f"{name}_best_epoch": float(stage["best_epoch"]),
        f"{name}_probe_emb_linear": probe["emb"],
        f"{name}_probe_bands_linear": probe["bands"],
        f"{name}_probe_majority": probe["majority"],
        f"{name}_seconds_here": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {sorted(VARIANTS)}")
    p.add_argument(
        "--work", type=Path, default=Path("bench/work/fusion_recipe"), help="work folder (resumes)"
    )
    p.add_argument("--weights", type=Path, default=Path("weights"), help="folder with s1.pt and s2.pt")
    p.add_argument("--out", type=Path, default=RESULTS / "fusion_recipe.json")
    a = p.parse_args(argv)
    names = [v for v in a.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    flat: dict[str, Any] = {"variants": ",".join(names)}
    for name in names:
        flat.update(run_variant(name, VARIANTS[name], a.work, a.weights))
        flat[f"{name}_recipe"] = json.dumps(VARIANTS[name])
        print(
            f"{name:10s} fusion {flat[f'{name}_fusion_vs_floor']:.2f}x floor, probe embedding "
            f"{flat[f'{name}_probe_emb_linear']:.3f} vs bands {flat[f'{name}_probe_bands_linear']:.3f}",
            flush=True,
        )
    report(flat, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
