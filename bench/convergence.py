"""Benchmark: does the CPU recipe converge? Train from scratch, score against floors and raw bands.

Runs :func:`embedder.evaluation.convergence.run_convergence`: the S1 and S2 autoencoders and the fusion
of the CPU preset (``ModelConfig.cpu``, ``TrainConfig.cpu``, ``FusionConfig.cpu``) for each seed on the
sample region's shards, each best checkpoint scored on the spatially disjoint test cubes beside its floors,
then the land-cover probe of the 7-d embedding against the raw bands. Prints the figures and the targets
of issue 15, writes ``bench/results/convergence.json`` (flat keys) and ``convergence.png`` (validation
curves against the floors). The work folder resumes per seed.

    .venv/bin/python bench/convergence.py [--work bench/work/convergence] [--seeds 0,1,2]
    make weights      # = bench/convergence.py --seeds 0 --weights-out weights (the demo's weights)

Run it on an otherwise idle machine: ``train_minutes_cpu_preset`` is wall time on its 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import report

RESULTS = Path(__file__).resolve().parent / "results"


def _plot(result: object, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = result.seeds  # type: ignore[attr-defined]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, stage in zip(axes, ("s1", "s2", "fusion"), strict=True):
        for seed, r in sorted(seeds.items()):
            ax.plot(r[stage]["val_curve"], label=f"val, seed {seed}")
            ax.plot(r[stage]["train_curve"], ":", color=ax.lines[-1].get_color(), label=f"train, seed {seed}")
        first = next(iter(seeds.values()))[stage]
        floor = first["floors"]["frame_mean"] if "floors" in first else first["floor_frame_mean"]
        ax.axhline(floor, color="k", ls="--", label="test frame-mean floor")
        ax.axhline(floor / 2, color="grey", ls=":", label="target: 0.5 x floor")
        ax.set_title(f"{stage}: centre MAE per epoch")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    from embedder.evaluation.convergence import ConvergenceConfig, run_convergence

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("bench/work/convergence"), help="work folder (resumes)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument(
        "--steps", action="append", default=[], metavar="STAGE=N", help="steps of s1, s2 or fusion"
    )
    p.add_argument(
        "--lr", action="append", default=[], metavar="STAGE=LR", help="peak lr of s1, s2 or fusion"
    )
    p.add_argument("--out", type=Path, default=RESULTS / "convergence.json")
    p.add_argument(
        "--weights-out", type=Path, help="also write the first seed's weights here (make weights: weights/)"
    )
    a = p.parse_args(argv)
    cfg = ConvergenceConfig()
    steps = dict(cfg.steps) | {k: int(v) for k, v in (s.split("=", 1) for s in a.steps)}
    lrs = dict(cfg.lr) | {k: float(v) for k, v in (s.split("=", 1) for s in a.lr)}
    cfg = dataclasses.replace(
        cfg,
        seeds=tuple(int(s) for s in a.seeds.split(",")),
        steps=tuple(steps.items()),
        lr=tuple(lrs.items()),
    )
    t0 = time.perf_counter()
    result = run_convergence(a.work, cfg, log=lambda m: print(m, flush=True))
    flat = result.flat()
    flat["minutes_total"] = (time.perf_counter() - t0) / 60
    targets = {
        "s2_centre_mae <= 0.5 x s2_floor_frame_mean": flat["s2_centre_mae"]
        <= 0.5 * flat["s2_floor_frame_mean"],
        "s1_centre_mae <= 0.5 x s1_floor_frame_mean": flat["s1_centre_mae"]
        <= 0.5 * flat["s1_floor_frame_mean"],
        "probe_emb_linear >= probe_bands_linear": flat["probe_emb_linear"] >= flat["probe_bands_linear"],
        # None when no seed trained on an otherwise idle machine: then it is not measured
        "train_minutes_cpu_preset <= 60": (flat["train_minutes_cpu_preset"] or float("inf")) <= 60,
        "seeds >= 3": flat["seeds"] >= 3,
    }
    report(flat, a.out, targets=targets)
    _plot(result, a.out.with_suffix(".png"))
    print(f"wrote {a.out.with_suffix('.png')}")
    if a.weights_out is not None:
        from embedder.evaluation.convergence import export_weights

        manifest = export_weights(result, cfg.seeds[0], a.weights_out)
        print(f"weights of seed {cfg.seeds[0]} -> {a.weights_out}: {json.dumps(manifest['files'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
