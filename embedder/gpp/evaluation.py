"""GPP evaluation: metrics, figures, the evaluation over folds and baselines, its report and the CLI.

Steps 5-6 of the pipeline in :mod:`embedder.gpp`; ``embedder gpp`` is :func:`cli_main`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from embedder.config import GppConfig, load_config, to_dict
from embedder.gpp.data import (
    VI_BANDS,
    GppInputError,
    Windows,
    add_vegetation_indices,
    as_feature_frame,
    clean_gpp,
    daily_features,
    feature_columns,
    make_windows,
    read_flux,
    read_forcing,
    split_windows,
    years_of,
)
from embedder.gpp.model import (
    LstmRegressor,
    Standardiser,
    TransformerRegressor,
    apply_linear,
    fit_linear,
    fit_regressor,
    index_driver_design,
    predict_regressor,
)

__all__ = [
    "GppResult",
    "cli_main",
    "evaluate",
    "markdown_table",
    "metrics_table",
    "plot_gpp",
    "regression_metrics",
    "run_evaluation",
    "write_report",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# 5. Metrics and figures
# ---------------------------------------------------------------------------------------------------


def regression_metrics(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, range-normalised RMSE, MAE, R² and bias of ``predicted`` against ``observed``.

    ``nrmse`` = RMSE / (max - min of observed); ``r2`` = 1 - SS_res / SS_tot (NaN with fewer than two
    observations or constant observations). Pairs with a NaN are ignored; ``n`` counts the rest.
    """
    o = np.asarray(observed, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    ok = np.isfinite(o) & np.isfinite(p)
    o, p = o[ok], p[ok]
    n = len(o)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "rmse": nan, "nrmse": nan, "mae": nan, "r2": nan, "bias": nan}
    err = p - o
    rmse = float(np.sqrt(np.mean(err**2)))
    span = float(o.max() - o.min())
    ss_tot = float(np.sum((o - o.mean()) ** 2))
    return {
        "n": n,
        "rmse": rmse,
        "nrmse": rmse / span if span > 0 else float("nan"),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / ss_tot if n > 1 and ss_tot > 0 else float("nan"),
        "bias": float(np.mean(err)),
    }


def metrics_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Metrics per (split, model, site) and overall (``site == "ALL"``, all sites' days pooled).

    ``predictions`` needs ``model, site, observed, predicted`` (gC m-2 d-1) and optionally ``split``
    and ``y_std`` (the target standard deviation used in training; adds ``mae_std``, the MAE on the
    standardised target comparable to the reference's 0.41).
    """
    preds = predictions if "split" in predictions.columns else predictions.assign(split="")
    rows = []
    for (split, model), grp in preds.groupby(["split", "model"], sort=False):
        groups = [*grp.groupby("site", sort=True), ("ALL", grp)]
        for site, sub in groups:
            row: dict[str, Any] = {"split": split, "model": model, "site": site}
            row.update(regression_metrics(sub["observed"].to_numpy(), sub["predicted"].to_numpy()))
            if "y_std" in sub.columns:
                err = (sub["predicted"] - sub["observed"]).abs() / sub["y_std"]
                row["mae_std"] = float(err.mean()) if len(err.dropna()) else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def plot_gpp(
    site: str,
    observed: pd.Series,
    predicted: pd.Series | Mapping[str, pd.Series],
    out_png: str | Path,
) -> Path:
    """Write a figure of observed daily GPP (dots) and predicted GPP (one line per model).

    ``observed`` and each predicted series are indexed by date, in gC m-2 d-1; ``predicted`` is a series
    or a mapping ``label -> series``. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {"predicted": predicted} if isinstance(predicted, pd.Series) else dict(predicted)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 3.5), dpi=100)
    try:
        ax.plot(
            pd.to_datetime(observed.index), observed.to_numpy(), "o", ms=2.5, color="0.35", label="observed"
        )
        for label, series in lines.items():
            s = series.sort_index()
            # break the line where days are missing instead of drawing across gaps
            s = s.reindex(pd.date_range(s.index.min(), s.index.max(), freq="D")) if len(s) else s
            ax.plot(pd.to_datetime(s.index), s.to_numpy(), "-", lw=1.2, label=str(label))
        ax.set_title(f"{site}: daily GPP")
        ax.set_ylabel("GPP [gC m$^{-2}$ d$^{-1}$]")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=min(4, 1 + len(lines)))
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------
# 6. The evaluation
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GppResult:
    """What :func:`run_evaluation` produces."""

    metrics: pd.DataFrame
    """:func:`metrics_table` of the evaluation windows."""
    predictions: pd.DataFrame
    """``split, fold, model, site, date, observed, predicted, y_std`` for every evaluation window."""
    skipped: dict[str, str]
    """Models that could not run, with the reason."""
    losses: dict[str, list[float]]
    """Training loss per epoch of each neural model, by ``"<fold>/<model>"``."""


def _folds(windows_sites: Sequence[str], years: set[int], cfg: GppConfig) -> list[tuple[str, dict[str, Any]]]:
    if cfg.split == "temporal":
        return [("temporal", {"train_years": cfg.train_years, "eval_years": cfg.val_years})]
    loso_years = set(cfg.loso_years) or years
    return [
        (
            f"loso-{site}",
            {
                "train_years": loso_years,
                "eval_years": loso_years,
                "train_sites": [s for s in windows_sites if s != site],
                "eval_sites": [site],
            },
        )
        for site in windows_sites
    ]


def _lue_inputs(windows: Windows, forcing: pd.DataFrame) -> np.ndarray:
    """``[N, 1]`` fAPAR x PPFD on each window's last day (NaN where no forcing)."""
    f = forcing.assign(lue=forcing["fapar"] * forcing["ppfd"]).groupby(["site", "date"])["lue"].mean()
    keys = pd.MultiIndex.from_arrays([windows.site.astype(str), pd.to_datetime(windows.end)])
    return f.reindex(keys).to_numpy(dtype=np.float64)[:, None]


DRIVER_GAP_DAYS = 3
"""Days a driver may be missing in a row and still be filled, linearly between its neighbours: forcing
tables on a 365-day calendar (FluxDataKit/rsofun) have no 29 February, which would otherwise drop every
90-day window over it."""


def _with_drivers(daily: pd.DataFrame, forcing: pd.DataFrame | None, drivers: list[str]) -> pd.DataFrame:
    """``daily`` with the forcing columns ``drivers`` of the same site and day.

    Gaps of at most :data:`DRIVER_GAP_DAYS` days inside a site's record are filled linearly; longer gaps
    and days outside the record stay NaN (their windows are dropped).
    """
    if forcing is None:
        raise GppInputError(
            f"gpp.drivers {drivers} need the daily forcing table (read_forcing; --forcing on the command line)"
        )
    missing = [d for d in drivers if d not in forcing.columns]
    if missing:
        have = sorted(c for c in forcing.columns if c not in ("site", "date"))
        raise GppInputError(f"gpp.drivers {missing} are not forcing columns; choose from {have}")
    clash = [d for d in drivers if d in daily.columns]
    if clash:
        raise GppInputError(f"gpp.drivers {clash} are also feature columns; rename the features or drop them")
    day = forcing.groupby(["site", "date"], as_index=False)[drivers].mean()
    parts = []
    for site, grp in day.groupby("site"):
        series = grp.set_index("date")[drivers].asfreq("D")  # the missing days as rows of NaN
        filled = series.interpolate(method="time", limit_area="inside")
        # a gap longer than the limit stays missing as a whole
        run = series.isna().any(axis=1)
        run_id = (run != run.shift()).cumsum()
        too_long = run & (run.groupby(run_id).transform("size") > DRIVER_GAP_DAYS)
        filled[too_long] = np.nan
        parts.append(filled.reset_index().assign(site=site))
    return daily.merge(pd.concat(parts, ignore_index=True), on=["site", "date"], how="left")


def _vi_inputs(last_day: np.ndarray, k: int, driver_idx: list[int]) -> np.ndarray:
    """A vegetation-index baseline's inputs (:func:`~embedder.gpp.model.index_driver_design`)."""
    return index_driver_design(last_day[:, [k]], last_day[:, driver_idx])


def run_evaluation(
    features_by_site: pd.DataFrame | Mapping[str, pd.DataFrame],
    gpp: pd.DataFrame,
    *,
    cfg: GppConfig | None = None,
    forcing: pd.DataFrame | None = None,
) -> GppResult:
    """Train and evaluate every model of ``cfg.models`` on the split of ``cfg.split``.

    ``features_by_site``: a table ``site, date, <features>`` or a mapping ``site -> (date, <features>)``;
    ``gpp``: the tidy table of :func:`read_flux` (QC filtering and clipping happen here); ``forcing``:
    :func:`read_forcing` output for the LUE baseline. Features are standardised with the training
    windows' statistics; the regressors' standardised target uses the training mean/std too.
    """
    cfg = cfg or GppConfig()
    clean = clean_gpp(gpp, min_qc=cfg.min_qc, clip_quantiles=cfg.clip_quantiles)
    frame = as_feature_frame(features_by_site)
    common = sorted(set(frame["site"]) & set(clean["site"]))
    if not common:
        raise GppInputError(
            f"no site is in both the features ({sorted(set(frame['site']))}) and the flux data "
            f"({sorted(set(clean['site']))}); site ids must match (e.g. 'CH-Aws')"
        )
    frame = frame[frame["site"].isin(common)]
    feat_cols = feature_columns(frame)
    has_bands = all(b in feat_cols for b in VI_BANDS.values())
    if has_bands:
        frame = add_vegetation_indices(frame)
    daily = daily_features(frame)
    drivers = list(cfg.drivers)
    if drivers:
        daily = _with_drivers(daily, forcing, drivers)
    windows_by_stride = {
        stride: make_windows(daily, clean, window_days=cfg.window_days, stride_days=stride, columns=None)
        for stride in {cfg.train_stride_days, cfg.eval_stride_days}
    }
    all_train, all_eval = windows_by_stride[cfg.train_stride_days], windows_by_stride[cfg.eval_stride_days]
    vi_idx: dict[str, int] = {
        name: all_eval.columns.index(name) for name in ("NDVI", "EVI") if name in all_eval.columns
    }
    feat_cols = [*feat_cols, *drivers]  # the regressors and the linear baseline see the drivers too
    main_idx = [all_eval.columns.index(c) for c in feat_cols]
    driver_idx = [all_eval.columns.index(c) for c in drivers]
    skipped: dict[str, str] = {}
    if not has_bands:
        for name in ("ndvi", "evi"):
            if name in cfg.models:
                skipped[name] = f"no S2 band columns {sorted(VI_BANDS.values())} among the features"
    if forcing is None and "lue" in cfg.models:
        skipped["lue"] = "no forcing (fapar, ppfd) given"
    models = [m for m in cfg.models if m not in skipped]
    years = {int(y) for y in years_of(all_eval.end)}
    present_sites = sorted(set(all_eval.site.astype(str)) & set(all_train.site.astype(str)))
    preds: list[pd.DataFrame] = []
    losses: dict[str, list[float]] = {}
    for fold, kw in _folds(present_sites, years, cfg):
        train, _ = split_windows(all_train, **kw)
        _, test = split_windows(all_eval, **kw)
        if not len(train) or not len(test):
            log.warning("fold %s has %d train and %d eval windows; skipped", fold, len(train), len(test))
            continue
        std = Standardiser.fit(
            Windows(train.x[..., main_idx], train.y, train.site, train.end, tuple(feat_cols))
        )
        y_train = std.y(train.y)
        x_train = std.x(train.x[..., main_idx])  # [N, W, F]
        x_test = std.x(test.x[..., main_idx])  # [M, W, F]
        for name in models:
            if name in ("transformer", "lstm"):
                torch.manual_seed(cfg.seed)
                net: nn.Module = (
                    TransformerRegressor(len(feat_cols), cfg=cfg.model, max_days=cfg.window_days)
                    if name == "transformer"
                    else LstmRegressor(len(feat_cols), cfg=cfg.model)
                )
                losses[f"{fold}/{name}"] = fit_regressor(net, x_train, y=y_train, cfg=cfg)
                pred = std.y_inverse(predict_regressor(net, x_test))
            else:
                if name == "linear":
                    a_train, a_test = train.x[:, -1, main_idx], test.x[:, -1, main_idx]
                elif name in ("ndvi", "evi"):
                    k = vi_idx[name.upper()]
                    a_train, a_test = (_vi_inputs(w.x[:, -1], k, driver_idx) for w in (train, test))
                else:  # lue
                    assert forcing is not None
                    a_train, a_test = _lue_inputs(train, forcing), _lue_inputs(test, forcing)
                ok = np.isfinite(a_train).all(axis=1)
                if ok.sum() < a_train.shape[1] + 1:
                    skipped[name] = f"fold {fold}: only {int(ok.sum())} training windows with its inputs"
                    continue
                pred = apply_linear(fit_linear(a_train[ok], train.y[ok]), a_test)
            preds.append(
                pd.DataFrame(
                    {
                        "split": cfg.split,
                        "fold": fold,
                        "model": name,
                        "site": test.site.astype(str),
                        "date": pd.to_datetime(test.end),
                        "observed": test.y.astype(np.float64),
                        "predicted": np.asarray(pred, dtype=np.float64),
                        "y_std": std.y_std,
                    }
                )
            )
    if not preds:
        raise GppInputError(
            f"no fold had both training and evaluation windows for split {cfg.split!r} (train years "
            f"{cfg.train_years}, val years {cfg.val_years}; window years found {sorted(years)}): check the years"
        )
    predictions = pd.concat(preds, ignore_index=True)
    return GppResult(metrics_table(predictions), predictions, skipped, losses)


def evaluate(
    features_by_site: pd.DataFrame | Mapping[str, pd.DataFrame],
    gpp: pd.DataFrame,
    *,
    cfg: GppConfig | None = None,
    forcing: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The metrics table of :func:`run_evaluation` (per split, model and site, plus ``ALL``)."""
    return run_evaluation(features_by_site, gpp, cfg=cfg, forcing=forcing).metrics


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (numbers with 3 decimals)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if not np.isfinite(v) else f"{v:.3f}"
        return str(v)

    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def write_report(result: GppResult, gpp: pd.DataFrame, out_dir: str | Path, *, cfg: GppConfig) -> list[Path]:
    """Write ``metrics.csv``, ``metrics.md``, ``predictions.csv``, ``config.yaml`` and one PNG per site."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.csv", out / "metrics.md", out / "predictions.csv", out / "config.yaml"]
    result.metrics.to_csv(written[0], index=False)
    notes = "".join(f"- `{m}` skipped: {why}\n" for m, why in result.skipped.items())
    written[1].write_text(
        f"# GPP evaluation ({cfg.split} split)\n\n{markdown_table(result.metrics)}\n{notes}"
    )
    result.predictions.to_csv(written[2], index=False)
    written[3].write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    clean = clean_gpp(gpp, min_qc=cfg.min_qc, clip_quantiles=cfg.clip_quantiles)
    for site, grp in result.predictions.groupby("site"):
        span = (grp["date"].min(), grp["date"].max())
        obs = clean[(clean["site"] == site) & clean["date"].between(*span)].set_index("date")["gpp"]
        lines = {str(m): g.set_index("date")["predicted"] for m, g in grp.groupby("model", sort=False)}
        written.append(plot_gpp(str(site), obs, lines, out / f"gpp_{cfg.split}_{site}.png"))
    return written


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder gpp``: evaluate per-date features against flux-tower GPP; write metrics and figures."""
    parser = argparse.ArgumentParser(
        prog="embedder gpp",
        description="Downstream GPP check (SPEC.md 8): 90-day windows of daily-interpolated features -> GPP.",
    )
    parser.add_argument(
        "--features", required=True, type=Path, help="CSV: site, date, F01..F07 (or band means)"
    )
    parser.add_argument(
        "--flux", required=True, type=Path, help="FLUXNET/ICOS DD or FluxDataKit CSV, or a folder"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for metrics and PNGs")
    parser.add_argument(
        "--forcing",
        type=Path,
        help="FluxDataKit forcing CSV (fapar, ppfd) for the LUE baseline and --drivers",
    )
    parser.add_argument(
        "--drivers",
        help="comma-separated forcing columns given to every model beside the features (e.g. ppfd,temp,vpd)",
    )
    parser.add_argument("--config", type=Path, help="YAML with GppConfig keys")
    parser.add_argument("--split", choices=["temporal", "loso"], help="override the config's split")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--small", action="store_true", help="tiny regressors for a quick CPU run")
    args = parser.parse_args(argv)

    drivers = tuple(d.strip() for d in args.drivers.split(",")) if args.drivers else None
    overrides = {"split": args.split, "epochs": args.epochs, "drivers": drivers}
    base: dict[str, Any] = to_dict(GppConfig.small()) if args.small else {}
    if args.config:
        if not args.config.is_file():
            parser.error(
                f"--config {str(args.config)!r} does not exist; pass a YAML file with GppConfig keys"
            )
        base.update(yaml.safe_load(args.config.read_text()) or {})
    cfg = load_config(GppConfig, base, **overrides)
    if not args.features.is_file():
        parser.error(f"--features {str(args.features)!r} does not exist; pass a CSV with site, date, F01..")
    features = pd.read_csv(args.features, parse_dates=["date"])
    gpp = read_flux(args.flux)
    forcing = read_forcing(args.forcing) if args.forcing else None
    result = run_evaluation(features, gpp, cfg=cfg, forcing=forcing)
    written = write_report(result, gpp, args.out, cfg=cfg)
    overall = result.metrics[result.metrics["site"] == "ALL"][["model", "n", "rmse", "nrmse", "mae", "r2"]]
    print(overall.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {len(written)} files to {args.out}")
    return 0
