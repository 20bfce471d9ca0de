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
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from embedder.config import GppConfig, GppModelConfig, load_config, to_dict
from embedder.sensors import S2

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

log = logging.getLogger(__name__)

FLUXNET_MISSING = -9999
"""Missing-value marker of FLUXNET2015 / ICOS / ONEFlux files."""

UMOL_S_TO_GC_DAY = 12.011e-6 * 86400.0
"""µmol CO2 m-2 s-1 (daily mean) -> gC m-2 d-1: 12.011 g C per mol x 86400 s per day (= 1.0378)."""

TIDY_COLUMNS = ("site", "date", "gpp", "qc")
"""Columns every flux reader returns first (then ``lon, lat, igbp`` when site info is known)."""

VI_BANDS = {"blue": "B02", "red": "B04", "nir": "B08"}
"""S2 bands (names from :data:`embedder.sensors.S2`) that NDVI and EVI are computed from."""

_FLUXNET_NAME = re.compile(r"^(?:FLX|ICOSETC|AMF)_(?P<site>[A-Z]{2}-[A-Za-z0-9]{3})_")
_RESERVED = ("site", "date")


class GppInputError(ValueError):
    """A flux file, feature table or option given to the GPP evaluation cannot be used as it is."""


# ---------------------------------------------------------------------------------------------------
# 1. Flux readers
# ---------------------------------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    """Column names of a CSV (gzip allowed) without reading the body."""
    return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def read_fluxnet_daily(path: str | Path, *, site: str | None = None) -> pd.DataFrame:
    """Read a FLUXNET2015 / ICOS / ONEFlux FULLSET **daily** CSV into the tidy daily table.

    ``-9999`` is missing, ``TIMESTAMP`` is YYYYMMDD, ``GPP_NT_VUT_REF`` is already gC m-2 d-1 and
    ``qc`` is ``NEE_VUT_REF_QC``. ``site`` defaults to the id in the file name (``FLX_US-Wi7_...``).
    Days without GPP are dropped; QC filtering is :func:`clean_gpp`'s job.
    """
    path = Path(path)
    if site is None:
        match = _FLUXNET_NAME.match(path.name)
        if match is None:
            raise GppInputError(
                f"cannot tell the site of {str(path)!r} from its name (expected FLX_<site>_... or "
                "ICOSETC_<site>_...); pass site='XX-Xxx'"
            )
        site = match.group("site")
    columns = _header(path)
    needed = ["TIMESTAMP", "GPP_NT_VUT_REF", "NEE_VUT_REF_QC"]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise GppInputError(f"{str(path)!r} lacks column(s) {missing}; is it a FLUXNET FULLSET daily file?")
    raw = pd.read_csv(path, usecols=needed, na_values=[FLUXNET_MISSING], dtype={"TIMESTAMP": str})
    stamps = raw["TIMESTAMP"].astype(str).str.strip()
    bad = stamps[stamps.str.len() != 8]
    if len(bad):
        raise GppInputError(
            f"{str(path)!r}: TIMESTAMP {bad.iloc[0]!r} is not YYYYMMDD; only daily (DD) files are supported, "
            "not monthly (MM) or half-hourly (HH) ones"
        )
    out = pd.DataFrame(
        {
            "site": site,
            "date": pd.to_datetime(stamps, format="%Y%m%d"),
            "gpp": raw["GPP_NT_VUT_REF"].astype(float),
            "qc": raw["NEE_VUT_REF_QC"].astype(float),
        }
    )
    return out.dropna(subset=["gpp"]).reset_index(drop=True)


def _read_site_info(path: Path) -> pd.DataFrame:
    info = pd.read_csv(path)
    if not {"sitename", "lon", "lat"} <= set(info.columns):
        raise GppInputError(
            f"site info {str(path)!r} needs columns sitename, lon, lat; has {list(info.columns)}"
        )
    out = info.rename(columns={"sitename": "site", "igbp_land_use": "igbp"})
    keep = [c for c in ("site", "lon", "lat", "igbp") if c in out.columns]
    return out[keep].drop_duplicates("site")


def read_fluxdatakit(path: str | Path, *, site_info: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """Read a FluxDataKit / rsofun daily CSV (``sitename, date, gpp, gpp_qc, ...``) into the tidy table.

    FluxDataKit ``gpp`` (= ``GPP_NT_VUT_REF``) is the daily **mean in µmol m-2 s-1**; it is multiplied by
    :data:`UMOL_S_TO_GC_DAY` to give gC m-2 d-1. ``qc`` is ``gpp_qc`` (= ``NEE_VUT_REF_QC``). ``site_info``
    (a CSV path or a DataFrame with ``sitename`` or ``site``, ``lon``, ``lat`` and optionally
    ``igbp_land_use``) is joined as ``lon, lat, igbp``.
    """
    path = Path(path)
    raw = pd.read_csv(path, parse_dates=["date"])
    missing = [c for c in ("sitename", "date", "gpp", "gpp_qc") if c not in raw.columns]
    if missing:
        raise GppInputError(f"{str(path)!r} lacks column(s) {missing}; is it a FluxDataKit daily GPP file?")
    out = pd.DataFrame(
        {
            "site": raw["sitename"].astype(str),
            "date": pd.to_datetime(raw["date"]).dt.normalize(),
            "gpp": raw["gpp"].astype(float) * UMOL_S_TO_GC_DAY,
            "qc": raw["gpp_qc"].astype(float),
        }
    ).dropna(subset=["gpp"])
    if site_info is not None:
        info = site_info if isinstance(site_info, pd.DataFrame) else _read_site_info(Path(site_info))
        info = info.rename(columns={"sitename": "site", "igbp_land_use": "igbp"})
        out = out.merge(
            info[[c for c in ("site", "lon", "lat", "igbp") if c in info.columns]], on="site", how="left"
        )
    return out.reset_index(drop=True)


def _classify_csv(path: Path) -> str:
    """``fluxnet``, ``fluxdatakit``, ``site_info``, ``forcing`` or ``other`` from a CSV's header."""
    try:
        cols = set(_header(path))
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError):
        return "other"
    if {"TIMESTAMP", "GPP_NT_VUT_REF"} <= cols:
        return "fluxnet"
    if {"sitename", "date", "gpp", "gpp_qc"} <= cols:
        return "fluxdatakit"
    if {"sitename", "date", "fapar", "ppfd"} <= cols:
        return "forcing"
    if {"sitename", "lon", "lat"} <= cols and "date" not in cols:
        return "site_info"
    return "other"


def read_flux(source: str | Path) -> pd.DataFrame:
    """Read one flux file or every flux file in a folder into one tidy daily table.

    Recognised by header: FLUXNET/ICOS FULLSET daily files (``TIMESTAMP``, ``GPP_NT_VUT_REF``) and
    FluxDataKit daily files (``sitename, date, gpp, gpp_qc``). In a folder, a site-info CSV
    (``sitename, lon, lat``; the one with the most columns matching the sites wins) is joined; monthly
    or half-hourly FLUXNET files in a folder are skipped with a log message. Columns: ``site, date, gpp
    [gC m-2 d-1], qc`` then ``lon, lat, igbp`` (NaN where unknown).
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    elif source.is_file():
        files = [source]
    else:
        raise GppInputError(
            f"flux source {str(source)!r} does not exist; pass a flux CSV file or a folder of them"
        )
    kinds = {p: _classify_csv(p) for p in files}
    infos = [_read_site_info(p) for p, k in kinds.items() if k == "site_info"]
    tables = []
    for path, kind in kinds.items():
        if kind == "fluxnet":
            stamp_len = len(
                str(pd.read_csv(path, usecols=["TIMESTAMP"], nrows=1, dtype=str).iloc[0, 0]).strip()
            )
            if stamp_len != 8 and source.is_dir():
                log.info("skipping %s: not a daily FLUXNET file", path.name)
                continue
            tables.append(read_fluxnet_daily(path))
        elif kind == "fluxdatakit":
            tables.append(read_fluxdatakit(path))
    if not tables:
        raise GppInputError(
            f"no FLUXNET/ICOS daily or FluxDataKit GPP file found in {str(source)!r}; expected a CSV with "
            "TIMESTAMP and GPP_NT_VUT_REF, or with sitename, date, gpp, gpp_qc"
        )
    out = pd.concat(tables, ignore_index=True)
    if infos:
        info = pd.concat(infos, ignore_index=True).drop_duplicates("site", keep="first")
        out = out.merge(info, on="site", how="left")
    for col in ("lon", "lat", "igbp"):
        if col not in out.columns:
            out[col] = np.nan
    dup = out.duplicated(["site", "date"])
    if dup.any():
        log.info("dropping %d duplicate site-days (first file wins)", int(dup.sum()))
        out = out[~dup]
    return out.sort_values(["site", "date"]).reset_index(drop=True)


def read_forcing(path: str | Path) -> pd.DataFrame:
    """Read a FluxDataKit/rsofun daily forcing CSV (``sitename, date, fapar, ppfd, temp, ...``).

    Returns ``site, date`` and the forcing columns unchanged (``ppfd`` in mol m-2 s-1, ``fapar`` 0-1,
    ``temp`` °C, ``vpd`` Pa).
    """
    path = Path(path)
    raw = pd.read_csv(path, parse_dates=["date"])
    missing = [c for c in ("sitename", "date", "fapar", "ppfd") if c not in raw.columns]
    if missing:
        raise GppInputError(
            f"forcing {str(path)!r} lacks column(s) {missing}; need sitename, date, fapar, ppfd"
        )
    raw = raw.rename(columns={"sitename": "site"})
    raw["date"] = pd.to_datetime(raw["date"]).dt.normalize()
    return raw


def clean_gpp(
    gpp: pd.DataFrame, *, min_qc: float = 0.7, clip_quantiles: tuple[float, float] = (0.001, 0.999)
) -> pd.DataFrame:
    """Keep days with ``qc >= min_qc`` and clip each site's GPP to its ``clip_quantiles``.

    Days with missing ``qc`` are dropped (their quality is unknown).
    """
    missing = [c for c in TIDY_COLUMNS if c not in gpp.columns]
    if missing:
        raise GppInputError(f"GPP table lacks column(s) {missing}; read it with read_flux()")
    kept = gpp[gpp["qc"] >= min_qc].copy()
    lo, hi = clip_quantiles
    bounds = kept.groupby("site")["gpp"].quantile([lo, hi]).unstack()
    low = kept["site"].map(bounds[lo])
    high = kept["site"].map(bounds[hi])
    kept["gpp"] = kept["gpp"].clip(lower=low, upper=high)
    return kept.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
# 2. Features
# ---------------------------------------------------------------------------------------------------


def mean_within_radius(
    values: np.ndarray, *, x_m: np.ndarray, y_m: np.ndarray, centre_xy: tuple[float, float], radius_m: float
) -> np.ndarray:
    """Mean over the pixels whose centres lie within ``radius_m`` of ``centre_xy``, NaN-aware.

    ``values`` is ``[T, Y, X, F]``; ``x_m`` ``[X]`` and ``y_m`` ``[Y]`` are pixel-centre coordinates in
    the same metric CRS as ``centre_xy``. Returns ``[T, F]`` (NaN where no selected pixel is valid).
    """
    if values.ndim != 4:
        raise GppInputError(f"values must be [time, y, x, feature], got shape {values.shape}")
    cx, cy = centre_xy
    dist2 = (x_m[None, :] - cx) ** 2 + (y_m[:, None] - cy) ** 2  # [Y, X] m²
    inside = dist2 <= radius_m**2  # [Y, X]
    if not inside.any():
        raise GppInputError(
            f"no pixel centre within {radius_m} m of ({cx:.1f}, {cy:.1f}); the grid spans x "
            f"{x_m.min():.1f}..{x_m.max():.1f}, y {y_m.min():.1f}..{y_m.max():.1f} m: use a larger radius_m "
            "or a Dataset covering the tower"
        )
    sel = values[:, inside, :].astype(np.float64)  # [T, P, F]
    valid = np.isfinite(sel)
    count = valid.sum(axis=1)  # [T, F]
    total = np.where(valid, sel, 0.0).sum(axis=1)  # [T, F]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _dataset_crs(ds: Any, var: str) -> str:
    for attrs in (ds.attrs, ds[var].attrs):
        for key in ("crs", "crs_wkt", "spatial_ref"):
            if key in attrs:
                return str(attrs[key])
    if "spatial_ref" in ds.coords:
        for key in ("crs_wkt", "spatial_ref"):
            if key in ds["spatial_ref"].attrs:
                return str(ds["spatial_ref"].attrs[key])
    raise GppInputError(
        "the Dataset has no CRS: set attrs['crs'] (e.g. 'EPSG:32632') or a spatial_ref coordinate with crs_wkt"
    )


def tower_features(
    ds: Any,
    lon: float,
    lat: float,
    radius_m: float,
    *,
    var: str | None = None,
    site: str | None = None,
) -> pd.DataFrame:
    """Per-date features of a tower: mean of the pixels within ``radius_m`` of (``lon``, ``lat``).

    ``ds`` is an ``xarray.Dataset`` whose variable ``var`` (default: the one variable with a ``feature``
    dim) has dims ``(time, y, x, feature)`` on a metric grid, with the CRS in ``attrs['crs']`` (or a
    ``spatial_ref`` coordinate with ``crs_wkt``, as :mod:`embedder.store` writes; any dim order).
    Feature names come from the ``feature`` coordinate, else ``F01, F02, ...``.
    Dates with no valid pixel are dropped. Returns ``[site,] date, <features>``.
    """
    from pyproj import Transformer

    candidates = [str(n) for n, v in ds.data_vars.items() if "feature" in v.dims]
    if var is None:
        if len(candidates) != 1:
            raise GppInputError(
                f"cannot choose the feature variable among {candidates}; pass var= (one with dims "
                "time, y, x, feature)"
            )
        var = candidates[0]
    if var not in ds.data_vars:
        raise GppInputError(f"variable {var!r} not in the Dataset; it has {list(ds.data_vars)}")
    arr = ds[var].transpose("time", "y", "x", "feature")
    crs = _dataset_crs(ds, var)
    cx, cy = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    x_m = np.asarray(ds["x"].values, dtype=np.float64)
    y_m = np.asarray(ds["y"].values, dtype=np.float64)
    half = radius_m + 1.0
    xs = np.flatnonzero(np.abs(x_m - cx) <= half)
    ys = np.flatnonzero(np.abs(y_m - cy) <= half)
    if not len(xs) or not len(ys):
        raise GppInputError(
            f"tower at lon {lon}, lat {lat} ({cx:.1f}, {cy:.1f} in {crs}) is outside the Dataset's grid "
            f"(x {x_m.min():.1f}..{x_m.max():.1f}, y {y_m.min():.1f}..{y_m.max():.1f}); open the right tile"
        )
    sub = arr.isel(x=slice(xs[0], xs[-1] + 1), y=slice(ys[0], ys[-1] + 1))  # only the neighbourhood
    means = mean_within_radius(
        np.asarray(sub.values, dtype=np.float64),  # [T, y, x, F]
        x_m=x_m[xs[0] : xs[-1] + 1],
        y_m=y_m[ys[0] : ys[-1] + 1],
        centre_xy=(cx, cy),
        radius_m=radius_m,
    )  # [T, F]
    if "feature" in ds.coords:
        names = [str(f) for f in ds["feature"].values]
    else:
        names = [f"F{i + 1:02d}" for i in range(means.shape[1])]
    out = pd.DataFrame(means, columns=names)
    out.insert(0, "date", pd.to_datetime(ds["time"].values).normalize())
    if site is not None:
        out.insert(0, "site", site)
    return out[np.isfinite(means).all(axis=1)].reset_index(drop=True)


def _feature_columns(features: pd.DataFrame) -> list[str]:
    cols = [c for c in features.columns if c not in _RESERVED]
    bad = [c for c in cols if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise GppInputError(
            f"feature column(s) {bad} are not numeric; keep only site, date and numeric features"
        )
    if not cols:
        raise GppInputError("the feature table has no feature columns besides site and date")
    return cols


def _as_feature_frame(features: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    if isinstance(features, Mapping):
        parts = [df.assign(site=site) for site, df in features.items()]
        if not parts:
            raise GppInputError("features_by_site is empty; give at least one site")
        features = pd.concat(parts, ignore_index=True)
    missing = [c for c in _RESERVED if c not in features.columns]
    if missing:
        raise GppInputError(f"feature table lacks column(s) {missing}; expected site, date, F01..F07")
    out = features.copy()
    out["site"] = out["site"].astype(str)
    out["date"] = pd.to_datetime(out["date"]).dt.normalize()
    return out


def daily_features(features: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Linearly interpolate per-date features to every day, separately within each site and year.

    Each calendar year with at least one observation gets every one of its days: linear between
    observations, and held at the first/last observation before/after them (``numpy.interp``); years
    without observations stay absent. Observations on the same day are averaged; NaN entries are ignored
    per column. Returns ``site, date, <features>`` sorted by site and date.
    """
    frame = _as_feature_frame(features)
    cols = _feature_columns(frame)
    frame = frame.groupby(["site", "date"], as_index=False)[cols].mean()
    parts = []
    for (site, year), grp in frame.groupby(["site", frame["date"].dt.year]):
        days = pd.date_range(f"{year}-01-01", f"{year}-12-31", freq="D")
        day_num = days.values.astype("datetime64[D]").astype(np.int64)
        obs_num = grp["date"].values.astype("datetime64[D]").astype(np.int64)
        block = {"site": site, "date": days}
        for col in cols:
            vals = grp[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(vals)
            block[col] = np.interp(day_num, obs_num[ok], vals[ok]) if ok.any() else np.full(len(days), np.nan)
        parts.append(pd.DataFrame(block))
    if not parts:
        raise GppInputError("the feature table has no rows")
    return pd.concat(parts, ignore_index=True)


def add_vegetation_indices(features: pd.DataFrame) -> pd.DataFrame:
    """Add ``NDVI`` and ``EVI`` columns computed from S2 band-mean reflectances (0-1).

    Needs the :data:`VI_BANDS` columns (``B02``, ``B04``, ``B08``). NDVI = (NIR - red) / (NIR + red);
    EVI = 2.5 (NIR - red) / (NIR + 6 red - 7.5 blue + 1).
    """
    missing = [b for b in VI_BANDS.values() if b not in features.columns]
    if missing:
        raise GppInputError(f"NDVI/EVI need S2 band columns {missing}; supply S2 band means as features")
    blue, red, nir = (features[VI_BANDS[k]].astype(float) for k in ("blue", "red", "nir"))
    out = features.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["NDVI"] = (nir - red) / (nir + red)
        out["EVI"] = 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0)
    return out


if not set(VI_BANDS.values()) <= set(S2.bands):  # pragma: no cover - guards edits of sensors.py
    raise RuntimeError(f"VI_BANDS {VI_BANDS} must name bands of embedder.sensors.S2 {S2.bands}")


# ---------------------------------------------------------------------------------------------------
# 3. Windows and splits
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """A set of samples: ``window_days`` daily feature vectors and the GPP of the last day."""

    x: np.ndarray
    """``[N, window_days, F]`` float32 daily features, oldest day first."""
    y: np.ndarray
    """``[N]`` float32 GPP of the last day, gC m-2 d-1."""
    site: np.ndarray
    """``[N]`` site id of each window."""
    end: np.ndarray
    """``[N]`` datetime64[D] last day of each window (the target day)."""
    columns: tuple[str, ...]
    """Feature names, the order of the last axis of :attr:`x`."""

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask: np.ndarray) -> Windows:
        """The windows where ``mask`` (bool ``[N]`` or integer indices) selects."""
        return Windows(self.x[mask], self.y[mask], self.site[mask], self.end[mask], self.columns)

    @property
    def start(self) -> np.ndarray:
        """``[N]`` datetime64[D] first day of each window."""
        return self.end - np.timedelta64(self.x.shape[1] - 1, "D")


def make_windows(
    daily: pd.DataFrame,
    gpp: pd.DataFrame,
    *,
    window_days: int = 90,
    stride_days: int = 1,
    columns: Sequence[str] | None = None,
    years: Iterable[int] | None = None,
) -> Windows:
    """Cut ``window_days``-long windows of daily features whose last day has a GPP target.

    ``daily`` is :func:`daily_features` output, ``gpp`` the cleaned tidy table. A window is kept when
    all its days have every feature and its last day has GPP. End days lie on a grid of ``stride_days``
    per site, anchored at the first day the site's features could end a window; ``years`` restricts the
    end day's year. ``columns`` picks feature columns (default: all).
    """
    cols = list(columns) if columns is not None else _feature_columns(daily)
    year_set = set(years) if years is not None else None
    target = gpp.groupby(["site", "date"])["gpp"].mean()
    xs, ys, sites, ends = [], [], [], []
    for site, grp in daily.groupby("site", sort=True):
        grp = grp.sort_values("date")
        first, last = grp["date"].iloc[0], grp["date"].iloc[-1]
        days = pd.date_range(first, last, freq="D")
        feats = grp.set_index("date")[cols].reindex(days).to_numpy(dtype=np.float32)  # [D, F]
        if len(days) < window_days:
            continue
        site_gpp = target.loc[site] if site in target.index.get_level_values(0) else pd.Series(dtype=float)
        y_day = site_gpp.reindex(days).to_numpy(dtype=np.float32)  # [D]
        bad_day = ~np.isfinite(feats).all(axis=1)  # [D]
        bad_cum = np.concatenate([[0], np.cumsum(bad_day)])  # [D + 1]
        end_idx = np.arange(window_days - 1, len(days), stride_days)  # window end day indices
        clean = bad_cum[end_idx + 1] - bad_cum[end_idx + 1 - window_days] == 0
        ok = clean & np.isfinite(y_day[end_idx])
        if year_set is not None:
            ok &= np.isin(days[end_idx].year, list(year_set))
        end_idx = end_idx[ok]
        if not len(end_idx):
            continue
        view = np.lib.stride_tricks.sliding_window_view(feats, window_days, axis=0)  # [D-W+1, F, W]
        xs.append(view[end_idx - window_days + 1].transpose(0, 2, 1))  # [n, W, F]
        ys.append(y_day[end_idx])
        sites.append(np.full(len(end_idx), site, dtype=object))
        ends.append(days[end_idx].values.astype("datetime64[D]"))
    if not xs:
        return Windows(
            np.zeros((0, window_days, len(cols)), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, dtype=object),
            np.zeros(0, "datetime64[D]"),
            tuple(cols),
        )
    return Windows(
        np.ascontiguousarray(np.concatenate(xs), dtype=np.float32),
        np.concatenate(ys).astype(np.float32),
        np.concatenate(sites),
        np.concatenate(ends),
        tuple(cols),
    )


def _years(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[Y]").astype(np.int64) + 1970


def split_windows(
    windows: Windows,
    *,
    train_years: Iterable[int],
    eval_years: Iterable[int],
    train_sites: Iterable[str] | None = None,
    eval_sites: Iterable[str] | None = None,
) -> tuple[Windows, Windows]:
    """Split windows into (train, eval) by the year of their last day, without leakage.

    A window belongs to the split of its last day's year (and site, if sites are given). A training
    window is dropped when any of its days falls in an ``eval_years`` year, so training inputs never
    overlap the evaluated target period; evaluation windows may read features from training years.
    """
    train_y, eval_y = set(train_years), set(eval_years)
    both = sorted(train_y & eval_y)
    if both and (train_sites is None or eval_sites is None):
        raise GppInputError(f"years {both} are both train and eval years; a year belongs to one split")
    end_year = _years(windows.end)
    start_year = _years(windows.start)
    train = np.isin(end_year, list(train_y))
    if not both:
        train &= ~np.isin(start_year, list(eval_y))
    evaluate_ = np.isin(end_year, list(eval_y))
    if train_sites is not None:
        train &= np.isin(windows.site, list(train_sites))
    if eval_sites is not None:
        evaluate_ &= np.isin(windows.site, list(eval_sites))
    return windows.take(train), windows.take(evaluate_)


# ---------------------------------------------------------------------------------------------------
# 4. Regressors and baselines
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardiser:
    """Per-feature and target standardisation with training statistics only."""

    x_mean: np.ndarray
    """``[F]`` feature means over all training days."""
    x_std: np.ndarray
    """``[F]`` feature standard deviations (1 where constant)."""
    y_mean: float
    """Target mean, gC m-2 d-1."""
    y_std: float
    """Target standard deviation, gC m-2 d-1 (1 where constant)."""

    @classmethod
    def fit(cls, train: Windows) -> Standardiser:
        """Statistics of the training windows (every day of every window for features)."""
        if not len(train):
            raise GppInputError("no training windows: check the split years/sites and the feature coverage")
        flat = train.x.reshape(-1, train.x.shape[-1]).astype(np.float64)  # [N*W, F]
        x_std = flat.std(axis=0)
        y_std = float(train.y.std())
        return cls(
            flat.mean(axis=0),
            np.where(x_std > 0, x_std, 1.0),
            float(train.y.mean()),
            y_std if y_std > 0 else 1.0,
        )

    def x(self, x: np.ndarray) -> np.ndarray:
        """Standardised features, float32, same shape."""
        return ((x - self.x_mean) / self.x_std).astype(np.float32)

    def y(self, y: np.ndarray) -> np.ndarray:
        """Standardised target."""
        return ((y - self.y_mean) / self.y_std).astype(np.float32)

    def y_inverse(self, z: np.ndarray) -> np.ndarray:
        """Target back in gC m-2 d-1."""
        return z * self.y_std + self.y_mean


class TransformerRegressor(nn.Module):
    """The reference GPP regressor (SPEC.md section 8).

    Linear input projection, sinusoidal positions, a Transformer encoder and last-token pooling to one
    value.
    """

    def __init__(self, n_features: int, *, cfg: GppModelConfig | None = None, max_days: int = 366) -> None:
        super().__init__()
        cfg = cfg or GppModelConfig()
        self.proj = nn.Linear(n_features, cfg.d_model)
        position = torch.arange(max_days, dtype=torch.float32)[:, None]  # [L, 1]
        freq = torch.exp(
            torch.arange(0, cfg.d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / cfg.d_model)
        )
        pe = torch.zeros(max_days, cfg.d_model)  # [L, d]
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq[: cfg.d_model // 2])
        self.register_buffer("pe", pe, persistent=False)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, W, F]`` standardised features -> ``[B]`` standardised GPP of the last day."""
        pe: torch.Tensor = self.pe  # type: ignore[assignment]
        h = self.proj(x) + pe[: x.shape[1]]  # [B, W, d]
        h = self.encoder(h)  # [B, W, d]
        return self.head(h[:, -1]).squeeze(-1)  # [B]


class LstmRegressor(nn.Module):
    """The comparison regressor: a stacked LSTM read out at the last day."""

    def __init__(self, n_features: int, *, cfg: GppModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or GppModelConfig()
        self.lstm = nn.LSTM(
            n_features,
            cfg.lstm_hidden,
            num_layers=cfg.lstm_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0,
        )
        self.head = nn.Linear(cfg.lstm_hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, W, F]`` standardised features -> ``[B]`` standardised GPP of the last day."""
        h, _ = self.lstm(x)  # [B, W, H]
        return self.head(h[:, -1]).squeeze(-1)  # [B]


def fit_regressor(
    model: nn.Module, x: np.ndarray, *, y: np.ndarray, cfg: GppConfig, seed: int | None = None
) -> list[float]:
    """Train ``model`` on standardised ``x [N, W, F]`` and ``y [N]`` with L1 loss and AdamW.

    Returns the mean training loss of each epoch.
    """
    if len(x) == 0:
        raise GppInputError("no training windows to fit on: check the split and the feature coverage")
    gen = torch.Generator().manual_seed(cfg.seed if seed is None else seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.L1Loss()
    history = []
    model.train()
    for _epoch in range(cfg.epochs):
        # 1. shuffle, 2. step over batches, 3. record the epoch's mean loss
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = loss_fn(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        history.append(total / len(xt))
    return history


@torch.no_grad()
def predict_regressor(model: nn.Module, x: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """Predict standardised targets ``[N]`` for standardised ``x [N, W, F]`` in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def fit_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ordinary least squares with intercept: ``x [N, K]``, ``y [N]`` -> coefficients ``[K + 1]``.

    The last coefficient is the intercept; predict with ``x @ c[:-1] + c[-1]``.
    """
    design = np.column_stack([x, np.ones(len(x))])  # [N, K+1]
    coef, *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    return np.asarray(coef)


def _apply_linear(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.asarray(x @ coef[:-1] + coef[-1])


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
    frame = _as_feature_frame(features_by_site)
    common = sorted(set(frame["site"]) & set(clean["site"]))
    if not common:
        raise GppInputError(
            f"no site is in both the features ({sorted(set(frame['site']))}) and the flux data "
            f"({sorted(set(clean['site']))}); site ids must match (e.g. 'CH-Aws')"
        )
    frame = frame[frame["site"].isin(common)]
    feat_cols = _feature_columns(frame)
    has_bands = all(b in feat_cols for b in VI_BANDS.values())
    if has_bands:
        frame = add_vegetation_indices(frame)
    daily = daily_features(frame)
    windows_by_stride = {
        stride: make_windows(daily, clean, window_days=cfg.window_days, stride_days=stride, columns=None)
        for stride in {cfg.train_stride_days, cfg.eval_stride_days}
    }
    all_train, all_eval = windows_by_stride[cfg.train_stride_days], windows_by_stride[cfg.eval_stride_days]
    vi_idx: dict[str, int] = {
        name: all_eval.columns.index(name) for name in ("NDVI", "EVI") if name in all_eval.columns
    }
    main_idx = [all_eval.columns.index(c) for c in feat_cols]
    skipped: dict[str, str] = {}
    if not has_bands:
        for name in ("ndvi", "evi"):
            if name in cfg.models:
                skipped[name] = f"no S2 band columns {sorted(VI_BANDS.values())} among the features"
    if forcing is None and "lue" in cfg.models:
        skipped["lue"] = "no forcing (fapar, ppfd) given"
    models = [m for m in cfg.models if m not in skipped]
    years = {int(y) for y in _years(all_eval.end)}
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
                    a_train, a_test = train.x[:, -1, [k]], test.x[:, -1, [k]]
                else:  # lue
                    assert forcing is not None
                    a_train, a_test = _lue_inputs(train, forcing), _lue_inputs(test, forcing)
                ok = np.isfinite(a_train).all(axis=1)
                if ok.sum() < a_train.shape[1] + 1:
                    skipped[name] = f"fold {fold}: only {int(ok.sum())} training windows with its inputs"
                    continue
                pred = _apply_linear(fit_linear(a_train[ok], train.y[ok]), a_test)
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


def _markdown(table: pd.DataFrame) -> str:
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
    written[1].write_text(f"# GPP evaluation ({cfg.split} split)\n\n{_markdown(result.metrics)}\n{notes}")
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
        "--forcing", type=Path, help="FluxDataKit forcing CSV (fapar, ppfd) for the LUE baseline"
    )
    parser.add_argument("--config", type=Path, help="YAML with GppConfig keys")
    parser.add_argument("--split", choices=["temporal", "loso"], help="override the config's split")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--small", action="store_true", help="tiny regressors for a quick CPU run")
    args = parser.parse_args(argv)

    overrides = {"split": args.split, "epochs": args.epochs}
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
