"""``embedder report RUN_DIR``: one Markdown report with PNG figures of a demo run folder (issue 6.4).

RUN_DIR is a demo output folder (``ray_jobs/demo.py``): ``region/`` (sample region with ``truth/``),
``runs/<name>/`` (``metrics.jsonl``, ``best.json``), ``store.zarr`` (local copy of the store) and
optionally GPP result folders (any folder below RUN_DIR holding ``predictions.csv``, as written by
``embedder gpp`` or ``embedder gpp-towers``). The report (``RUN_DIR/report/report.md``) has:

* training curves of every run (:func:`embedder.curves.plot_training_curves`) and their best metrics;
* S2 true colour beside PCA-RGB embedding maps for a few dates of the first scene (SPEC 9:
  standardise the 7 features, 3 principal components fitted on the date with most valid pixels,
  each component stretched to its 1-99 % range on each date);
* a land-cover linear probe per scene: logistic regression on the 7-d embedding vs on the raw 10 S2
  bands, on the same pixel-dates, train/test split by spatial blocks (:func:`land_cover_probe`);
* GPP observed vs predicted per site and the GPP metrics tables, when GPP results exist.

Every part that cannot be made (missing folder, empty store, ...) is listed under "Missing" with the
reason; the report is still written. The probe runs on synthetic imagery: the classes there differ by
construction in their reflectance and phenology, so the accuracies compare the two feature sets, they
do not measure real-world mapping skill.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from embedder.sensors import PRIMARY_SENSOR

__all__ = ["ProbeResult", "ReportError", "cli_main", "land_cover_probe", "pca_rgb", "write_run_report"]


class ReportError(ValueError):
    """The run folder cannot be reported on (not a folder)."""


@dataclass(frozen=True)
class ProbeResult:
    """Accuracy of the land-cover probe on one feature set pair."""

    n_train: int
    """Training pixel-dates (blocks not held out)."""
    n_test: int
    """Test pixel-dates (held-out spatial blocks)."""
    n_classes: int
    """Classes present in the training set."""
    accuracy_embedding: float
    """Test accuracy of logistic regression on the 7-d embedding."""
    accuracy_bands: float
    """Test accuracy of logistic regression on the raw 10 S2 bands."""
    accuracy_majority: float
    """Test accuracy of always predicting the most frequent training class."""


def pca_rgb(maps: np.ndarray, *, fit_index: int, low_pct: float = 1.0, high_pct: float = 99.0) -> np.ndarray:
    """SPEC 9 PCA-RGB: ``[T, F, H, W]`` features -> ``[T, H, W, 3]`` in [0, 1] (NaN where a pixel has no value).

    Features are standardised and the 3 principal components fitted on date ``fit_index`` (the date
    with most valid pixels); every date is projected on them and each component is stretched to that
    date's ``low_pct``..``high_pct`` percentiles (so each map shows its spatial contrast).
    """
    t, f, h, w = maps.shape
    flat = maps.transpose(0, 2, 3, 1).reshape(t, h * w, f)  # [T, P, F]
    fit = flat[fit_index]
    fit = fit[np.isfinite(fit).all(axis=1)]
    if len(fit) < 3:
        raise ReportError(f"date {fit_index} has {len(fit)} valid pixels; PCA needs at least 3")
    from sklearn.decomposition import PCA

    mean, std = fit.mean(axis=0), fit.std(axis=0) + 1e-9
    # exact SVD; scikit-learn makes each component's largest loading positive (deterministic colours)
    with np.errstate(invalid="ignore", divide="ignore"):  # constant maps: a 0/0 explained-variance ratio
        comps = PCA(n_components=3, svd_solver="full").fit((fit - mean) / std).components_  # [3, F]
    proj = ((flat - mean) / std) @ comps.T  # [T, P, 3] (NaN rows stay NaN, so not pca.transform)
    valid = np.isfinite(proj).all(axis=2)  # [T, P]
    rgb = np.full(proj.shape, np.nan)
    for i in range(t):  # per-date stretch: a map shows spatial contrast even when dates differ a lot
        if valid[i].any():
            lo = np.percentile(proj[i][valid[i]], low_pct, axis=0)  # [3]
            hi = np.percentile(proj[i][valid[i]], high_pct, axis=0)
            rgb[i][valid[i]] = np.clip((proj[i][valid[i]] - lo) / np.maximum(hi - lo, 1e-9), 0.0, 1.0)
    return rgb.reshape(t, h, w, 3)


def land_cover_probe(
    embedding: np.ndarray,
    bands: np.ndarray,
    labels: np.ndarray,
    *,
    block_px: int = 8,
    test_share: float = 0.3,
    seed: int = 0,
) -> ProbeResult:
    """Logistic-regression land-cover probe, embedding vs raw bands, on the same pixel-dates.

    ``embedding`` ``[T, 7, H, W]`` and ``bands`` ``[T, 10, H, W]`` (NaN = no value) on one grid,
    ``labels`` ``[H, W]`` class codes. A pixel-date is used when both feature sets are finite. The
    ``block_px`` x ``block_px`` blocks of the grid are dealt at random (``seed``) to test (about
    ``test_share``) or train, so test pixels are never neighbours of training pixels inside a block.
    """
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t, _, h, w = embedding.shape
    if bands.shape[0] != t or bands.shape[2:] != (h, w) or labels.shape != (h, w):
        raise ReportError(
            f"probe inputs disagree: embedding {embedding.shape}, bands {bands.shape}, labels {labels.shape}"
        )
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (rows // block_px) * (w // block_px + 1) + cols // block_px  # [H, W]
    ids = np.unique(block)
    # Seeded blocks dealt by hand: scikit-learn's GroupKFold is an unseeded k-fold partition, and
    # GroupShuffleSplit draws other blocks from the same seed (every recorded probe result would move).
    rng = np.random.default_rng(seed)
    n_test = max(1, round(test_share * len(ids)))
    test_blocks = rng.choice(ids, size=min(n_test, len(ids) - 1), replace=False)
    is_test = np.isin(block, test_blocks)  # [H, W]
    e = embedding.transpose(0, 2, 3, 1).reshape(-1, embedding.shape[1])  # [T*H*W, 7]
    b = bands.transpose(0, 2, 3, 1).reshape(-1, bands.shape[1])  # [T*H*W, 10]
    y = np.broadcast_to(labels, (t, h, w)).reshape(-1)
    test = np.broadcast_to(is_test, (t, h, w)).reshape(-1)
    ok = np.isfinite(e).all(axis=1) & np.isfinite(b).all(axis=1)
    tr, te = ok & ~test, ok & test
    if tr.sum() < 10 or te.sum() < 1 or len(np.unique(y[tr])) < 2:
        raise ReportError(
            f"too few pixel-dates for the probe ({int(tr.sum())} train, {int(te.sum())} test, "
            f"{len(np.unique(y[tr]))} classes); embed more dates or a larger scene"
        )
    known = np.isin(y, np.unique(y[tr]))
    te = te & known

    def accuracy(x: np.ndarray) -> float:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(x[tr], y[tr])
        return float((clf.predict(x[te]) == y[te]).mean())

    majority = DummyClassifier(strategy="most_frequent").fit(e[tr], y[tr])  # ties: the smallest class
    return ProbeResult(
        n_train=int(tr.sum()),
        n_test=int(te.sum()),
        n_classes=len(majority.classes_),
        accuracy_embedding=accuracy(e),
        accuracy_bands=accuracy(b),
        accuracy_majority=float(majority.score(e[te], y[te])),
    )


# --------------------------------------------------------------------------------------------------
# pieces of the report
# --------------------------------------------------------------------------------------------------


def _scene_embeddings(zones: dict[str, Any], cube: xr.Dataset, epsg: int) -> xr.DataArray | None:
    """The store's embeddings ``(time, feature, y, x)`` on the cube's grid (NaN outside the store)."""
    for ds in zones.values():
        if int(ds.attrs.get("proj:epsg", -1)) != epsg:
            continue
        x, y = cube["x"].values, cube["y"].values
        if x.max() < float(ds["x"].min()) or x.min() > float(ds["x"].max()):
            continue
        if y.max() < float(ds["y"].min()) or y.min() > float(ds["y"].max()):
            continue
        sub = ds["embedding"].reindex(x=x, y=y, method="nearest", tolerance=1.0)
        return sub.transpose("time", "feature", "y", "x")
    return None


def _aligned(emb: xr.DataArray, cube: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding ``[T, 7, H, W]`` and S2 ``[T, 10, H, W]`` on the dates both have, and those dates."""
    emb_days = emb["time"].values.astype("datetime64[D]")
    cube_days = cube["time"].values.astype("datetime64[D]")
    common = np.intersect1d(emb_days, cube_days)
    valid = emb.notnull().all("feature").sum(("y", "x")).values  # [T_store]
    common = np.array(
        [d for d in common if valid[np.flatnonzero(emb_days == d)[0]] > 0], dtype="datetime64[D]"
    )
    ie = [int(np.flatnonzero(emb_days == d)[0]) for d in common]
    ic = [int(np.flatnonzero(cube_days == d)[0]) for d in common]
    e = np.asarray(emb.isel(time=ie).values, dtype=np.float32)  # [T, 7, H, W]
    s2 = cube[PRIMARY_SENSOR.name].transpose("time", PRIMARY_SENSOR.band_dim, "y", "x")
    b = np.asarray(s2.isel(time=ic).values, dtype=np.float32)  # [T, 10, H, W]
    return e, b, common


def _protocol_scene(
    name: str, e: np.ndarray, b: np.ndarray, dates: np.ndarray, cube: xr.Dataset, labels: np.ndarray
) -> Any:
    """The probe protocol's inputs of one scene: the aligned embeddings and bands, the S1 of the same dates."""
    from embedder.evaluation.quality import SceneFeatures
    from embedder.sensors import S1

    cube_days = cube["time"].values.astype("datetime64[D]")
    ic = [int(np.flatnonzero(cube_days == d)[0]) for d in dates]
    s1 = cube[S1.name].transpose("time", S1.band_dim, "y", "x").isel(time=ic).values.astype(np.float32)
    return SceneFeatures(name=name, dates=dates, emb=e, bands=b, s1=s1, labels=labels)


def _protocol_section(scenes: list[Any], out: Path) -> tuple[list[str], str | None]:
    """Markdown of the probe protocol (``embedder.evaluation.quality``) over the report's scenes.

    Linear and nonlinear probes, 5 blocked splits that share no 15 x 15 window, mean and 95 % interval; the
    window-length table beside it. Writes ``out/quality.json``. Returns the lines and, when it cannot run, why.
    """
    from embedder.evaluation.quality import FEATURES, WINDOWS, QualityConfig, run_probes

    side = min(min(s.labels.shape) for s in scenes)
    cfg = QualityConfig(
        nonlinear=True, max_train_rows=8000, max_test_rows=8000, block_px=max(8, min(25, side // 2))
    )
    if min(s.emb.shape[0] for s in scenes) < 11:
        cfg = dataclasses.replace(cfg, features=("emb", "bands", "bands_s1", "emb_year"))
    try:
        res = run_probes(scenes, cfg, log=lambda m: None)
    except ValueError as err:
        return [], f"probe protocol: {err}"
    (out / "quality.json").write_text(
        json.dumps({k: v for k, v in res.items() if k not in ("per_seed", "settings")}, indent=1) + "\n"
    )

    def cell(key: str) -> str:
        return f"{res[key]:.3f} +- {res[key + '_ci95']:.3f}" if key in res else "-"

    lines = [
        f"Probe protocol (docs/quality.md): linear probe (logistic regression) and nonlinear probe (gradient "
        f"boosting), {res['seeds']} blocked splits whose train and test pixels are at least 15 px apart (no "
        f"shared input window), mean +- 95 % interval; majority class {cell('probe_majority')}.\n",
        "| features | linear | nonlinear |\n|---|---|---|\n"
        + "".join(
            f"| {n} | {cell(f'probe_{n}_linear')} | {cell(f'probe_{n}_nonlinear')} |\n"
            for n in FEATURES
            if f"probe_{n}_linear" in res
        ),
        "Window length (features averaged over the pixel's valid dates in a window around each date):\n",
        "| window | embedding | bands |\n|---|---|---|\n"
        + "".join(f"| {r} | {cell(f'window_{r}_emb')} | {cell(f'window_{r}_bands')} |\n" for r, _ in WINDOWS),
    ]
    return lines, None


def _true_colour(s2: np.ndarray) -> np.ndarray:
    """``[10, H, W]`` reflectance -> ``[H, W, 3]`` B04/B03/B02 scaled to 0..0.3 reflectance."""
    idx = [PRIMARY_SENSOR.bands.index(b) for b in ("B04", "B03", "B02")]
    return np.clip(s2[idx].transpose(1, 2, 0) / 0.3, 0.0, 1.0)


def _maps_figure(e: np.ndarray, b: np.ndarray, dates: np.ndarray, out_png: Path, *, n_dates: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.isfinite(e).all(axis=1).sum(axis=(1, 2))  # [T]
    fit = int(np.argmax(counts))
    good = np.flatnonzero(counts >= 0.5 * counts.max())
    shown = sorted(
        {int(i) for i in good[np.linspace(0, len(good) - 1, min(n_dates, len(good))).round().astype(int)]}
    )
    rgb = pca_rgb(e[shown], fit_index=shown.index(fit) if fit in shown else 0)
    fig, axes = plt.subplots(2, len(shown), figsize=(3 * len(shown), 6), squeeze=False, dpi=100)
    for j, i in enumerate(shown):
        axes[0][j].imshow(np.nan_to_num(_true_colour(b[i])))
        axes[0][j].set_title(f"S2 {dates[i]}", fontsize=9)
        axes[1][j].imshow(np.nan_to_num(rgb[j]))
        axes[1][j].set_title("embedding PCA-RGB", fontsize=9)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


TOWERS_MARKER = "features_embedding.csv"
"""A file only ``embedder gpp-towers`` writes at the top of its output (beside the overall ``metrics.md``)."""


def _gpp_sections(run_dir: Path, fig_dir: Path, out_dir: Path) -> tuple[list[str], list[str]]:
    from embedder.gpp import plot_gpp

    lines: list[str] = []
    missing: list[str] = []
    found = sorted(p for p in run_dir.rglob("predictions.csv") if out_dir not in p.parents)
    if not found:
        return lines, [
            "GPP: no folder with predictions.csv under the run (run `embedder gpp-towers` or `embedder gpp`)"
        ]
    # a tower run (`embedder gpp-towers`) has one metrics table over its runs with the NDVI gate's verdict on
    # top: shown once, before the per-site figures of its runs
    towers = {
        p.parent
        for p in run_dir.rglob(TOWERS_MARKER)
        if out_dir not in p.parents and (p.parent / "metrics.md").is_file()
    }
    shown: set[Path] = set()
    for pred_path in found:
        folder = pred_path.parent
        rel = folder.relative_to(run_dir)
        root = next((t for t in towers if t in folder.parents), None)
        if root is not None and root not in shown:
            shown.add(root)
            lines.append(f"### GPP at flux towers: `{root.relative_to(run_dir)}`\n")
            lines.append((root / "metrics.md").read_text().split("\n", 1)[-1].strip() + "\n")
        lines.append(f"#### GPP: `{rel}`\n" if root is not None else f"### GPP: `{rel}`\n")
        metrics_md = folder / "metrics.md"
        if root is None and metrics_md.is_file():
            body = metrics_md.read_text().split("\n", 1)[-1]
            lines.append(body.strip() + "\n")
        pred = pd.read_csv(pred_path, parse_dates=["date"])
        for site, grp in pred.groupby("site"):
            observed = grp.drop_duplicates("date").set_index("date")["observed"].sort_index()
            models = {str(m): g.set_index("date")["predicted"] for m, g in grp.groupby("model", sort=False)}
            name = f"gpp-{str(rel).replace('/', '_')}-{site}.png"
            plot_gpp(str(site), observed, models, fig_dir / name)
            lines.append(f"![GPP {site}](figures/{name})\n")
    return lines, missing


def _mean_floor(floors: dict[str, dict[str, float]], name: str) -> float:
    values = [f[name] for f in floors.values() if name in f]
    return float(np.mean(values)) if values else float("nan")


def write_run_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    n_dates: int = 3,
    block_px: int = 8,
    seed: int = 0,
) -> Path:
    """Write ``RUN_DIR/report/report.md`` (and ``figures/*.png``, ``probe.csv``); returns the Markdown path."""
    from embedder.curves import CurvesError, plot_training_curves, read_metrics

    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"run folder {str(run)!r} does not exist; pass a demo output folder (demo-out)")
    out = Path(out_dir) if out_dir is not None else run / "report"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    md: list[str] = [f"# Run report: `{run.resolve()}`\n"]
    missing: list[str] = []

    # 1. training curves and best metrics
    md.append("## Training\n")
    runs = (
        sorted(p for p in (run / "runs").glob("*") if (p / "metrics.jsonl").is_file())
        if (run / "runs").is_dir()
        else []
    )
    if not runs:
        missing.append("training curves: no runs/<name>/metrics.jsonl")
    table = []
    not_learned: list[str] = []
    for r in runs:
        try:
            png = plot_training_curves([r], out_png=fig_dir / f"curves-{r.name}.png")
            md.append(f"![curves {r.name}](figures/{png.name})\n")
        except CurvesError as err:
            missing.append(f"curves of {r.name}: {err}")
        lines = read_metrics(r)
        best = json.loads((r / "best.json").read_text()) if (r / "best.json").is_file() else {}
        vals = [ln.get("val", {}).get("centre_mae") for ln in lines if ln.get("val")]
        best_val = min((v for v in vals if v is not None), default=float("nan"))
        floors: dict[str, dict[str, float]] = next(
            (ln["floors"] for ln in reversed(lines) if ln.get("floors")), {}
        )
        floor = float(np.mean([f["frame_mean"] for f in floors.values()])) if floors else float("nan")
        row = {
            "run": r.name,
            "epochs": len(lines),
            "best epoch": best.get("epoch", ""),
            "best val centre MAE": best_val,
            "val floor: frame mean": floor,
            "val floor: temporal mean": _mean_floor(floors, "temporal_mean"),
            "val floor: PCA-k": _mean_floor(floors, "pca_k"),
            "test centre MAE": (best.get("test") or {}).get("centre_mae", float("nan")),
            "learned": "-" if not floors else ("yes" if best_val < floor else "**NO: above its floor**"),
        }
        table.append(row)
        if floors and not best_val < floor:
            not_learned.append(r.name)
    if table:
        from embedder.gpp.evaluation import markdown_table

        md.append(
            "Centre MAE (centre pixel of the centre date, [0, 1] units) against its floors on the same validation "
            "windows: a constant per frame (frame mean), the pixel's own temporal mean, and PCA with the "
            "bottleneck's number of components (fusion: the mean over S1 and S2; see docs/convergence.md).\n"
        )
        md.append(markdown_table(pd.DataFrame(table)))
    if not_learned:
        md.append(
            f"**Warning: {', '.join(not_learned)} ended above the frame-mean floor: predicting each frame's mean "
            "does as well. These embeddings have not learned the pixel; train longer (TrainConfig.cpu).**\n"
        )

    # 2. maps and 3. probe
    md.append("## Embedding maps and land-cover probe\n")
    probe_rows = []
    protocol_scenes: list[Any] = []
    region_dir, store_dir = run / "region", run / "store.zarr"
    if not (region_dir / "region.json").is_file():
        missing.append("maps and probe: no region/region.json (sample region)")
    elif not store_dir.exists():
        missing.append("maps and probe: no store.zarr (local copy of the store)")
    else:
        from embedder.evaluation.towers import load_scene_cube
        from embedder.sample import read_region_manifest
        from embedder.store import open_store

        region = read_region_manifest(region_dir)
        zones = open_store(str(store_dir))
        for k, scene in enumerate(region.scenes):
            cube = load_scene_cube(region, scene)
            emb = _scene_embeddings(zones, cube, scene.epsg)
            if emb is None:
                missing.append(f"scene {scene.name}: the store has no embeddings on its grid")
                continue
            e, b, dates = _aligned(emb, cube)
            if len(dates) == 0:
                missing.append(f"scene {scene.name}: no date with both embeddings and S2")
                continue
            if k == 0:
                png = _maps_figure(e, b, dates, fig_dir / f"maps-{scene.name}.png", n_dates=n_dates)
                md.append(f"Scene `{scene.name}` (top: S2 true colour; bottom: embedding PCA-RGB)\n")
                md.append(f"![maps {scene.name}](figures/{png.name})\n")
            import rasterio

            with rasterio.open(scene.landcover_path) as src:
                labels = src.read(1)  # [H, W] class codes
            try:
                res = land_cover_probe(e, b, labels, block_px=block_px, seed=seed)
            except ReportError as err:
                missing.append(f"probe of {scene.name}: {err}")
                continue
            probe_rows.append({"scene": scene.name, "dates": len(dates), **res.__dict__})
            protocol_scenes.append(_protocol_scene(scene.name, e, b, dates, cube, labels))
    if probe_rows:
        from embedder.gpp.evaluation import markdown_table

        probe = pd.DataFrame(probe_rows)
        probe.to_csv(out / "probe.csv", index=False)
        md.append(
            "Land-cover probe (logistic regression, same pixel-dates, test = held-out "
            f"{block_px} x {block_px} px blocks; synthetic land cover and imagery):\n"
        )
        md.append(markdown_table(probe))
    if protocol_scenes:
        protocol_lines, protocol_err = _protocol_section(protocol_scenes, out)
        md += protocol_lines
        if protocol_err:
            missing.append(protocol_err)

    # 4. GPP
    md.append("## GPP\n")
    gpp_lines, gpp_missing = _gpp_sections(run, fig_dir, out)
    md += gpp_lines
    missing += gpp_missing

    md.append("## Missing\n")
    md.append("".join(f"- {m}\n" for m in missing) if missing else "Nothing: every part was made.\n")
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder report RUN_DIR [--out DIR]``: write the run's Markdown + PNG report."""
    p = argparse.ArgumentParser(prog="embedder report", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="demo output folder")
    p.add_argument("--out", type=Path, help="report folder (default RUN_DIR/report)")
    p.add_argument("--dates", type=int, default=3, help="dates shown in the maps figure (default 3)")
    p.add_argument("--block-px", type=int, default=8, help="probe's spatial block side (default 8)")
    args = p.parse_args(argv)
    if not args.run_dir.is_dir():
        p.error(f"RUN_DIR {str(args.run_dir)!r} is not a folder; pass a demo output folder")
    path = write_run_report(args.run_dir, out_dir=args.out, n_dates=args.dates, block_px=args.block_px)
    print(f"wrote {path}")
    return 0
