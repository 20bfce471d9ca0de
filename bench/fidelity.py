"""Fidelity of the dense-consistent encoder (issue 9): paper-exact vs dense, same data and budget.

Writes ``bench/results/fidelity.json`` (flat JSON) with, per encoder, the held-out centre MAE
(``paper_centre_mae_s1``, ``dense_centre_mae_s1``, ``..._s2``, ``..._fusion``), the land-cover probe
accuracy (``paper_landcover_acc``, ``dense_landcover_acc``), the GPP skill (``paper_gpp_r2``,
``dense_gpp_r2``; transformer regressor, temporal split), the ratios ``dense_vs_paper_mae_{s1,s2,fusion}``
(issue target: dense centre MAE within 10 % of paper, i.e. a ratio <= 1.10) and the settings (epochs,
steps, cubes, seconds). The work itself is :func:`embedder.evaluation.fidelity.compare_encoders`: a sample region
and its shards, both encoders trained in process with the small preset on identical shards, seeds,
epochs, steps and batch sizes, then the held-out centre MAE, the land-cover probe and the GPP check.

The work folder (``--work``, default ``$TMPDIR/embedder-fidelity``) keeps the region, shards and tower
scenes, so a second run with the same data settings only retrains and re-scores. The default run takes
about 10-15 minutes on 2 shared CPU cores with ``--sampling smoke``; scale up with ``--epochs``,
``--steps-per-epoch``, ``--cubes`` and ``--scene-px``. Samples are cut as SPEC 2 says
(``FidelityConfig.spec``: 20-date windows, stride 17, 11 drawn, spatial stride 9, on 128 px cubes) unless
``--sampling smoke`` (the demo's dense 11-date windows on 32 px cubes) or ``--tiny`` (the test budget).

    .venv/bin/python bench/fidelity.py [--sampling spec --epochs 3 --steps-per-epoch 30 --cubes 8]
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

from embedder.evaluation.fidelity import RESULT_FILE, FidelityConfig, compare_encoders  # noqa: E402
from embedder.evaluation.sweep import RESULT_FILE as SWEEP_RESULT  # noqa: E402
from embedder.evaluation.sweep import best_checkpoints, best_lrs  # noqa: E402

WORK_DEFAULT = Path(tempfile.gettempdir()) / "embedder-fidelity"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison, print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sampling", choices=["spec", "smoke"], default="spec",
        help="spec: SPEC 2's windows on 128 px cubes (FidelityConfig.spec, the default); smoke: the demo's "
        "dense 11-date windows on 32 px cubes (FidelityConfig())",
    )  # fmt: skip
    pre, _ = ap.parse_known_args(argv)
    d = FidelityConfig() if pre.sampling == "smoke" else FidelityConfig.spec()
    ap.add_argument("--epochs", type=int, help=f"epochs per training stage ({d.epochs})")
    ap.add_argument(
        "--steps-per-epoch", type=int, help=f"optimiser steps per epoch and stage ({d.steps_per_epoch})"
    )
    ap.add_argument("--fusion-steps-per-epoch", type=int, help="optimiser steps per fusion epoch (= stage 1)")
    ap.add_argument("--batch-size", type=int, help=f"samples per step ({d.batch_size})")
    ap.add_argument("--cubes", type=int, help=f"training cubes, dealt to splits 375/83/42 ({d.cubes})")
    ap.add_argument("--scene-px", type=int, help=f"sample-region scene side, px ({d.scene_px})")
    ap.add_argument("--cube-px", type=int, help=f"training cube side, px ({d.cube_px})")
    ap.add_argument(
        "--eval-samples", type=int, help=f"samples scored per eval split ({d.eval_samples}; 0 = all)"
    )
    ap.add_argument("--seed", type=int, help=f"seed of weights, batch order and GPP regressors ({d.seed})")
    ap.add_argument("--lr", type=float, help="peak learning rate of every stage, both encoders (1e-3)")
    ap.add_argument(
        "--stage-lr", action="append", default=[], metavar="ENCODER.STAGE=LR",
        help="peak learning rate of one stage (s1, s2, fusion) of one encoder, e.g. dense.s1=3e-4; repeatable",
    )  # fmt: skip
    ap.add_argument(
        "--lrs-from-sweep", type=Path, metavar="JSON",
        help="take each encoder's stage-1 learning rates (best on validation) from bench/fidelity_sweep.py's "
        "JSON; --stage-lr entries still win",
    )  # fmt: skip
    ap.add_argument(
        "--stage1-from-sweep", type=Path, metavar="WORK",
        help="build the fusion over a bench/fidelity_sweep.py work folder's stage-1 autoencoders (each "
        "encoder's best lr, --seed) instead of training them; implies --lrs-from-sweep and --work WORK",
    )  # fmt: skip
    ap.add_argument(
        "--gpp-sites", nargs="+", help="FluxDataKit tower sites (default: the six Sentinel-era ones)"
    )
    ap.add_argument(
        "--gpp-years", type=int, nargs=2, metavar=("FIRST", "LAST"), help=f"GPP years {d.gpp_years}"
    )
    ap.add_argument("--no-gpp", action="store_true", help="skip the GPP check")
    ap.add_argument("--tiny", action="store_true", help="start from the test budget (FidelityConfig.tiny)")
    ap.add_argument(
        "--work", type=Path, default=WORK_DEFAULT,
        help="work folder (region, shards, tower scenes, runs; reused when the settings match)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=REPO / "bench/results" / RESULT_FILE, help="result JSON")
    args = ap.parse_args(argv)

    given = {
        "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch, "batch_size": args.batch_size,
        "fusion_steps_per_epoch": args.fusion_steps_per_epoch,
        "cubes": args.cubes, "scene_px": args.scene_px, "cube_px": args.cube_px, "seed": args.seed,
        "lr": args.lr,
        "gpp_sites": tuple(args.gpp_sites) if args.gpp_sites else None,
        "gpp_years": tuple(args.gpp_years) if args.gpp_years else None,
    }  # fmt: skip
    changes = {k: v for k, v in given.items() if v is not None}
    if args.eval_samples is not None:
        changes["eval_samples"] = args.eval_samples or None
    if args.no_gpp:
        changes["gpp"] = False
    if args.stage1_from_sweep:
        args.lrs_from_sweep = args.lrs_from_sweep or args.stage1_from_sweep / SWEEP_RESULT
        args.work = args.stage1_from_sweep if args.work == WORK_DEFAULT else args.work
    stage_lrs = best_lrs(args.lrs_from_sweep) if args.lrs_from_sweep else {}
    for item in args.stage_lr:
        key, sep, value = item.partition("=")
        try:
            stage_lrs[key] = float(value)
        except ValueError:
            ap.error(f"--stage-lr {item!r}: use ENCODER.STAGE=LR, e.g. dense.s1=3e-4")
        if not sep:
            ap.error(f"--stage-lr {item!r}: use ENCODER.STAGE=LR, e.g. dense.s1=3e-4")
    if stage_lrs:
        changes["stage_lrs"] = tuple(sorted(stage_lrs.items()))
    cfg = dataclasses.replace(FidelityConfig.tiny() if args.tiny else d, **changes)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[fidelity {time.perf_counter() - t0:5.0f} s] {msg}", flush=True)

    stage1 = best_checkpoints(args.stage1_from_sweep, seed=cfg.seed) if args.stage1_from_sweep else None
    result = compare_encoders(args.work, cfg, log=log, stage1_checkpoints=stage1)
    flat = result.flat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(flat, indent=1) + "\n")
    print(result.table())
    print(json.dumps(flat, indent=1))
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
