"""Fidelity sweep of the dense-consistent encoder (issue 9): paper vs dense over learning rates and seeds.

Trains every stage-1 autoencoder (S1, S2) of both encoders at every peak learning rate and seed on the
same shards and budget, picks each encoder's learning rate on the validation split, and compares the
held-out centre MAE best against best (issue target: dense / paper <= 1.10). Writes
``bench/results/fidelity_sweep.json`` (keys ``dense_vs_paper_mae_s1``, ``dense_vs_paper_mae_s2``,
``paper_best_lr_s1``, ``paper_centre_mae_s1`` (mean over seeds at the best lr), ``..._sd``,
``dense_vs_paper_mae_s1_lr0.001`` (at a common lr), ``dense_vs_paper_mae_s1_seed_min/_max``,
``baseline_centre_mae_s1``, ``meets_target_s1``, settings and seconds) and
``bench/results/fidelity_sweep.png``. The work is :func:`embedder.evaluation.sweep.sweep_encoders`; the
work folder keeps region, shards and finished runs, so an interrupted sweep resumes.

The default (3 learning rates x 3 seeds x 2 sensors x 2 encoders = 36 runs of 1,200 steps, 32 cubes)
took about an hour on 2 cores with 2 workers on the smoke sampling (``--sampling smoke``); the default is
SPEC 2's sampling (``FidelityConfig.spec``), whose region of 128 px cubes takes longer to build. The baseline of the same run is the paper model.

    .venv/bin/python bench/fidelity_sweep.py [--lrs 3e-4 1e-3 3e-3 --seeds 42 43 44 --workers 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from embedder.evaluation.fidelity import FidelityConfig  # noqa: E402
from embedder.evaluation.sweep import RESULT_FILE, SweepConfig, best_lrs, plot_sweep, sweep_encoders  # noqa: E402

DEFAULT_BASE = FidelityConfig.spec(cubes=32, epochs=8, steps_per_epoch=150, gpp=False)
"""The sweep's data and budget: SPEC 2's sampling on 32 cubes of 128 px (8 scenes), 8 x 150 steps per run."""
SMOKE_BASE = dataclasses.replace(FidelityConfig(), cubes=32, epochs=8, steps_per_epoch=150, gpp=False)
"""``--sampling smoke``: the demo's dense 11-date windows on 32 cubes of 32 px (the sweep's earlier data)."""


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, print the table and write the JSON and PNG."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sampling", choices=["spec", "smoke"], default="spec",
        help="spec: SPEC 2's windows on 128 px cubes (the default); smoke: the demo's dense windows, 32 px cubes",
    )  # fmt: skip
    pre, _ = ap.parse_known_args(argv)
    d, s = (DEFAULT_BASE if pre.sampling == "spec" else SMOKE_BASE), SweepConfig()
    ap.add_argument("--lrs", type=float, nargs="+", help=f"peak learning rates ({list(s.lrs)})")
    ap.add_argument(
        "--seeds", type=int, nargs="+", help=f"seeds of weights and batch order ({list(s.seeds)})"
    )
    ap.add_argument("--sensors", nargs="+", choices=("s1", "s2"), help="stage-1 autoencoders (both)")
    ap.add_argument("--workers", type=int, help=f"runs trained at once ({s.workers})")
    ap.add_argument("--epochs", type=int, help=f"epochs per run ({d.epochs})")
    ap.add_argument("--steps-per-epoch", type=int, help=f"optimiser steps per epoch ({d.steps_per_epoch})")
    ap.add_argument("--batch-size", type=int, help=f"samples per step ({d.batch_size})")
    ap.add_argument("--cubes", type=int, help=f"training cubes, dealt to splits 375/83/42 ({d.cubes})")
    ap.add_argument("--eval-samples", type=int, help=f"samples scored per split ({d.eval_samples}; 0 = all)")
    ap.add_argument("--tiny", action="store_true", help="start from the test budget (FidelityConfig.tiny)")
    ap.add_argument(
        "--at-best-lrs", type=Path, metavar="JSON",
        help="train each encoder and sensor only at its best learning rate in an earlier sweep's JSON "
        "(e.g. with a longer --epochs / --steps-per-epoch); replaces --lrs",
    )  # fmt: skip
    ap.add_argument(
        "--report-only", action="store_true", help="train nothing: report the runs already done in --work"
    )
    ap.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "embedder-fidelity-sweep",
        help="work folder (region, shards, runs; reused when the settings match)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "bench/results" / RESULT_FILE, help="result JSON")
    args = ap.parse_args(argv)

    base_given = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "cubes": args.cubes,
    }  # fmt: skip
    base_changes = {k: v for k, v in base_given.items() if v is not None}
    if args.eval_samples is not None:
        base_changes["eval_samples"] = args.eval_samples or None
    base = dataclasses.replace(FidelityConfig.tiny(gpp=False) if args.tiny else d, **base_changes)
    sweep_given = {
        "lrs": tuple(args.lrs) if args.lrs else None,
        "seeds": tuple(args.seeds) if args.seeds else None,
        "sensors": tuple(args.sensors) if args.sensors else None,
        "workers": args.workers,
    }
    if args.at_best_lrs:
        s = SweepConfig.at_best_lrs(best_lrs(args.at_best_lrs))
        sweep_given["lrs"] = sweep_given["sensors"] = None  # fixed by the earlier sweep
    cfg = dataclasses.replace(s, base=base, **{k: v for k, v in sweep_given.items() if v is not None})
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[sweep {time.perf_counter() - t0:5.0f} s] {msg}", flush=True)

    result = sweep_encoders(args.work, cfg, log=log, train=not args.report_only)
    flat = result.flat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(flat, indent=1) + "\n")
    png = plot_sweep(result, args.out.with_suffix(".png"))
    print(result.table())
    print(json.dumps(flat, indent=1))
    print(f"wrote {args.out} and {png} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
