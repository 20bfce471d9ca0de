"""Downstream check: daily Gross Primary Production from per-date features (SPEC.md section 8).

The pipeline, each step a public function so it can be tested and reused on its own:

1. **Flux readers** (:func:`read_flux`, :func:`read_fluxnet_daily`, :func:`read_fluxdatakit`) return one
   tidy daily table ``site, date, gpp, qc`` (``gpp`` in gC m-2 d-1, ``qc`` = ``NEE_VUT_REF_QC``, the share
   of measured or good-quality half-hours) whatever the source; :func:`clean_gpp` keeps days with
   ``qc >= min_qc`` and clips each site to quantiles.
2. **Features**: a table ``site, date, <feature columns>`` (e.g. ``F01..F07``, produced by
   :func:`tower_features` from an embedding Dataset, or S2 band means for the raw-band baseline),
   linearly interpolated to daily within each calendar year by :func:`daily_features`.
3. **Windows** (:func:`make_windows`): ``window_days`` consecutive daily feature vectors; the target is
   the GPP of the last day. A window belongs to the split of its last day (:func:`split_windows`).
4. **Regressors**: the reference :class:`TransformerRegressor` and an :class:`LstmRegressor`, trained with
   L1 loss and AdamW on standardised inputs and target (train statistics only, :func:`fit_regressor`);
   baselines on the same windows: ordinary least squares on the last day's features (``linear``), on
   NDVI or EVI from S2 band means (``ndvi``, ``evi``), and a light-use-efficiency model
   ``GPP = a * fAPAR * PPFD + b`` where forcing exists (``lue``).
5. **Metrics** (:func:`regression_metrics`, :func:`metrics_table`) per site and overall, and the figure
   :func:`plot_gpp` (observed daily dots, predicted line; SPEC.md section 9).

:func:`evaluate` runs it all; ``embedder gpp`` is the command line (:func:`cli_main`).

No-leakage rule of the splits: every window is assigned to the split of its **last day** (its target);
a **training** window is additionally dropped when any of its days falls in an evaluation year of the
temporal split, so no training input overlaps the evaluated target period. Evaluation windows may reach
back into training years (they only read features there, never training targets). In the
leave-one-site-out split train and evaluation windows come from different sites.

The package, one room each: :mod:`~embedder.gpp.data` (steps 1-3: flux readers, features, windows and
splits), :mod:`~embedder.gpp.model` (step 4: the regressors) and :mod:`~embedder.gpp.evaluation` (steps
5-6: metrics, figures, :func:`run_evaluation`, the report and the CLI).
"""

from __future__ import annotations

from embedder.gpp.data import (
    FLUXNET_MISSING,
    UMOL_S_TO_GC_DAY,
    GppInputError,
    Windows,
    add_vegetation_indices,
    clean_gpp,
    daily_features,
    make_windows,
    mean_within_radius,
    read_flux,
    read_fluxdatakit,
    read_fluxnet_daily,
    read_forcing,
    split_windows,
    tower_features,
)
from embedder.gpp.evaluation import (
    GppResult,
    cli_main,
    evaluate,
    metrics_table,
    plot_gpp,
    regression_metrics,
    run_evaluation,
    write_report,
)
from embedder.gpp.model import (
    LstmRegressor,
    Standardiser,
    TransformerRegressor,
    fit_linear,
    fit_regressor,
    index_driver_design,
    predict_regressor,
)

__all__ = [
    "FLUXNET_MISSING",
    "UMOL_S_TO_GC_DAY",
    "GppInputError",
    "GppResult",
    "LstmRegressor",
    "Standardiser",
    "TransformerRegressor",
    "Windows",
    "add_vegetation_indices",
    "clean_gpp",
    "cli_main",
    "daily_features",
    "evaluate",
    "fit_linear",
    "fit_regressor",
    "index_driver_design",
    "make_windows",
    "mean_within_radius",
    "metrics_table",
    "plot_gpp",
    "predict_regressor",
    "read_flux",
    "read_fluxdatakit",
    "read_fluxnet_daily",
    "read_forcing",
    "regression_metrics",
    "run_evaluation",
    "split_windows",
    "tower_features",
    "write_report",
]
