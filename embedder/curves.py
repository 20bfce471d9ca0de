"""Training curves (../shared/SPEC.md section 9) from the ``metrics.jsonl`` files written by ``fit``.

One column per sensor found in the runs (in ``FUSION_ORDER``): centre MAE and surroundings MAE, plus
SAM and SSIM for sensors that log them (S2); train solid, validation dashed. Stage 1 trains S1 and S2
in separate runs: pass both run directories to get the paper's figure; a fusion run has both sensors.

``embedder curves RUN_DIR [RUN_DIR ...] --out curves.png``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedder.sensors import FUSION_ORDER

__all__ = ["CurvesError", "cli_main", "plot_training_curves", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
PANELS: tuple[tuple[str, str], ...] = (
    ("centre_mae", "MAE (centre)"),
    ("surroundings_mae", "MAE (surroundings)"),
    ("sam", "SAM (rad)"),
    ("ssim", "SSIM loss (1 - SSIM)"),
)
"""Metric suffix and panel title, in row order."""


class CurvesError(ValueError):
    """A run directory has no usable metrics."""


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epoch lines of ``run_dir/metrics.jsonl`` (a resumed run's repeated epochs: the last wins)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise CurvesError(
            f"{str(path)!r} does not exist; pass a run directory written by embedder.training.fit"
        )
    # json line by line, not pd.read_json(lines=True): the rows are nested records with optional keys
    # ("floors"), which pandas fills with NaN; a NaN loss would come back as None, and a broken line's
    # number would be lost.
    by_epoch: dict[int, dict[str, Any]] = {}
    with path.open() as fh:
        for i, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as err:
                raise CurvesError(
                    f"{str(path)!r} line {i} is not JSON ({err}); remove the broken line"
                ) from None
            by_epoch[int(line["epoch"])] = line
    if not by_epoch:
        raise CurvesError(f"{str(path)!r} has no epochs yet; train at least one epoch first")
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(
    runs: Sequence[list[dict[str, Any]]],
) -> dict[tuple[str, str, str], tuple[list[int], list[float]]]:
    """``{(sensor, metric, split): (epochs, values)}`` over all runs (a later run wins on clashes)."""
    out: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}
    for lines in runs:
        found: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}
        for line in lines:
            for split in ("train", "val"):
                for key, value in line.get(split, {}).items():
                    if "/" not in key:
                        continue
                    sensor, metric = key.split("/", 1)
                    epochs, values = found.setdefault((sensor, metric, split), ([], []))
                    epochs.append(int(line["epoch"]))
                    values.append(float(value))
        out.update(found)
    return out


def plot_training_curves(run_dirs: Sequence[str | Path], *, out_png: str | Path) -> Path:
    """Render the training curves of one or more runs to ``out_png``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise CurvesError("no run directories given; pass at least one RUN_DIR")
    histories = [read_metrics(d) for d in run_dirs]
    series = _series(histories)
    floors: dict[str, dict[str, float]] = {}  # sensor -> floors of the last run that logged them
    for lines in histories:
        for line in lines:
            floors.update(line.get("floors") or {})
    sensors = [s for s in FUSION_ORDER if any(k[0] == s for k in series)]
    sensors += sorted({k[0] for k in series} - set(sensors))
    rows = [(m, title) for m, title in PANELS if any(k[0] in sensors and k[1] == m for k in series)]
    if not sensors or not rows:
        raise CurvesError(
            f"no per-sensor centre/surroundings/SAM/SSIM metrics in {[str(d) for d in run_dirs]}"
        )

    fig, axes = plt.subplots(
        len(rows), len(sensors), figsize=(4.5 * len(sensors), 3.0 * len(rows)), squeeze=False, dpi=110
    )
    for col, sensor in enumerate(sensors):
        for row, (metric, title) in enumerate(rows):
            ax = axes[row][col]
            ax.set_title(f"{sensor.upper()} · {title}", fontsize=10)
            drawn = False
            for split, style in (("train", "-"), ("val", "--")):
                if (sensor, metric, split) in series:
                    epochs, values = series[(sensor, metric, split)]
                    ax.plot(epochs, values, style, linewidth=1.5, label=split)
                    drawn = True
            if drawn and metric == "centre_mae" and sensor in floors:
                for name, style in (("frame_mean", ":"), ("pca_k", "-.")):
                    if name in floors[sensor]:
                        ax.axhline(floors[sensor][name], color="k", linestyle=style, linewidth=1,
                                   label=f"floor: {name.replace('_', ' ')}")  # fmt: skip
            if drawn:
                ax.legend(fontsize=8)
                ax.grid(True, alpha=0.3)
            else:
                ax.text(
                    0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey"
                )
                ax.set_xticks([])
                ax.set_yticks([])
            if row == len(rows) - 1:
                ax.set_xlabel("epoch")
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder curves RUN_DIR [RUN_DIR ...] --out PNG``."""
    parser = argparse.ArgumentParser(
        prog="embedder curves", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories with metrics.jsonl")
    parser.add_argument("--out", required=True, type=Path, help="PNG file to write")
    args = parser.parse_args(argv)
    try:
        out = plot_training_curves(args.run_dirs, out_png=args.out)
    except CurvesError as err:
        parser.exit(2, f"embedder curves: {err}\n")
    print(out)
    return 0
