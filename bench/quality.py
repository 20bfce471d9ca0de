"""Benchmark: are the embeddings better than the bands? The probe table and the window-length table.

Embeds the evaluation region (the convergence run's six 64 px scenes over a year, drawn with another
seed: no training cube came from them) with a fusion checkpoint, then runs the probe protocol of
``embedder.evaluation.quality``: blocked splits that share no 15 x 15 window, 5 seeds, linear and
gradient-boosting probes, the per-date embedding beside single-date bands, bands + S1, the 11-date stack
and its PCA-7, and the year-mean embedding; then the window-length table (1 date, month, season, year);
then the real CropHarvest Togo cube (``embedder.evaluation.realdata.togo_figures``: S2 centre error beside its
frame-mean floor, composite rule and SPEC 7's gap rule); then GPP at six flux towers (``embedder.evaluation.towers``:
footprints of the site's class driven by its fAPAR, real GPP, 2017-2019 train / 2020 test and
leave-one-site-out, the paper's regressor and 90-day windows, every model also given the towers' daily
light, temperature and VPD (``TOWER_DRIVERS``); ``gpp_r2_*`` and the NDVI gate; skip with ``--no-gpp``).

    .venv/bin/python bench/quality.py                       # weights/fusion.pt
    .venv/bin/python bench/quality.py --checkpoint RUN/best.pt --seeds 0,1,2,3,4

Writes ``bench/results/quality.json`` (flat keys, ``_ci95`` half-widths) and ``quality.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"


def _plot(flat: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from embedder.evaluation.quality import FEATURES, WINDOWS

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    names = [n for n in FEATURES if f"probe_{n}_linear" in flat]
    x = range(len(names))
    for off, kind in ((-0.2, "linear"), (0.2, "nonlinear")):
        keys = [f"probe_{n}_{kind}" for n in names]
        if all(k in flat for k in keys):
            a.bar([i + off for i in x], [flat[k] for k in keys], width=0.4, label=kind,
                  yerr=[flat[f"{k}_ci95"] for k in keys], capsize=3)  # fmt: skip
    a.axhline(flat["probe_majority"], color="grey", ls=":", label="majority class")
    a.set_xticks(list(x), names, rotation=20)
    a.set_ylabel("test accuracy (blocked split)")
    a.set_title(f"land-cover probe, mean and 95 % interval over {flat['seeds']} seeds")
    a.legend(fontsize=8)
    rows = [r for r, _ in WINDOWS if f"window_{r}_emb" in flat]
    for what in ("emb", "bands"):
        ys = [flat[f"window_{r}_{what}"] for r in rows]
        es = [flat[f"window_{r}_{what}_ci95"] for r in rows]
        b.errorbar(range(len(rows)), ys, yerr=es, marker="o", capsize=3, label=what)
    b.set_xticks(range(len(rows)), rows)
    b.set_ylabel("test accuracy (linear probe)")
    b.set_title("features averaged over a window around each date")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    from embedder.checkpoints import load_fusion
    from embedder.config import GppConfig
    from embedder.evaluation.quality import QualityConfig, run_quality
    from embedder.evaluation.realdata import togo_figures
    from embedder.evaluation.towers import TOWER_DRIVERS, gpp_figures, run_gpp_towers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("weights/fusion.pt"), help="fusion checkpoint")
    p.add_argument("--work", type=Path, default=Path("bench/work/quality"), help="work folder (region)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated split seeds")
    p.add_argument("--linear-only", action="store_true", help="skip the gradient-boosting probe")
    p.add_argument(
        "--no-gpp",
        action="store_true",
        help="skip the tower GPP run (six towers, 2017-2020: ~20 min on 2 cores)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    a = p.parse_args(argv)
    if not a.checkpoint.is_file():
        print(f"bench/quality.py: no checkpoint at {a.checkpoint}; run `make weights` or pass --checkpoint")
        return 2
    cfg = dataclasses.replace(
        QualityConfig(), seeds=tuple(int(s) for s in a.seeds.split(",")), nonlinear=not a.linear_only
    )
    flat = run_quality(a.work, a.checkpoint, cfg, log=lambda m: print(m, flush=True))
    flat.update(togo_figures(load_fusion(a.checkpoint)))  # the real CropHarvest cube (seconds)
    if not a.no_gpp:  # towers whose footprint is the site's class, driven by its fAPAR; real GPP
        t0 = time.perf_counter()
        # the paper's regressor (not the companion study's LSTM) beside the linear baselines; every model
        # also gets the towers' light, temperature and dryness (GppConfig.drivers)
        gcfg = GppConfig(drivers=TOWER_DRIVERS, models=("transformer", "linear", "ndvi", "evi", "lue"))
        table = run_gpp_towers(a.work / "gpp", checkpoint=a.checkpoint, gpp_cfg=gcfg, progress=True)
        flat.update(gpp_figures(table))
        flat["gpp_minutes"] = (time.perf_counter() - t0) / 60
        flat["minutes"] += flat["gpp_minutes"]
        print(flat["gpp_verdict"], flush=True)
    targets = {
        "probe_emb_linear >= probe_bands_linear": flat["probe_emb_linear"] >= flat["probe_bands_linear"],
        "probe_emb_linear >= 0.9 x probe_stack_pca7_linear": flat["probe_emb_linear"]
        >= 0.9 * flat["probe_stack_pca7_linear"],
        "minutes <= 60": flat["minutes"] <= 60,
    }
    if "gpp_discriminates" in flat:
        targets["gpp_r2_ndvi >= 0.5 (the GPP test discriminates)"] = flat["gpp_discriminates"]
        targets["gpp_r2_emb >= gpp_r2_bands and >= gpp_r2_ndvi"] = flat["gpp_discriminates"] and flat[
            "gpp_r2_emb"
        ] >= max(flat["gpp_r2_bands"], flat["gpp_r2_ndvi"])
    flat.update({f"target_met: {k}": v for k, v in targets.items()})
    per_seed = flat.pop("per_seed")
    settings = flat.pop("settings")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(flat, indent=1) + "\n")
    a.out.with_name(a.out.stem + "_seeds.json").write_text(
        json.dumps({"per_seed": per_seed, "settings": settings}, indent=1, default=str) + "\n"
    )
    _plot(flat, a.out.with_suffix(".png"))
    for k, v in flat.items():
        if (
            k.startswith(("probe_", "window_", "realdata_", "gpp_r2"))
            and not k.endswith("_ci95")
            and isinstance(v, float)
        ):
            ci = flat.get(f"{k}_ci95")
            print(f"{k:36s} {v:.3f}" + (f" +- {ci:.3f}" if ci is not None else ""))
    for k, v in targets.items():
        print(f"{'MET    ' if v else 'NOT MET'}  {k}")
    print(f"wrote {a.out} and {a.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
