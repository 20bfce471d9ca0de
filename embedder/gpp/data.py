"""GPP data: flux-tower readers, per-date features at the towers, daily interpolation, windows and splits.

Steps 1-3 of the pipeline in :mod:`embedder.gpp` (its docstring also states the no-leakage rule).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from embedder.sensors import S2

__all__ = [
    "FLUXNET_MISSING",
    "TIDY_COLUMNS",
    "UMOL_S_TO_GC_DAY",
    "VI_BANDS",
    "GppInputError",
    "Windows",
    "add_vegetation_indices",
    "as_feature_frame",
    "clean_gpp",
    "daily_features",
    "feature_columns",
    "make_windows",
    "mean_within_radius",
    "read_flux",
    "read_fluxdatakit",
    "read_fluxnet_daily",
    "read_forcing",
    "split_windows",
    "tower_features",
    "years_of",
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


def feature_columns(features: pd.DataFrame) -> list[str]:
    """The feature columns of a feature table (all but ``site``, ``date``); they must be numeric."""
    cols = [c for c in features.columns if c not in _RESERVED]
    bad = [c for c in cols if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise GppInputError(
            f"feature column(s) {bad} are not numeric; keep only site, date and numeric features"
        )
    if not cols:
        raise GppInputError("the feature table has no feature columns besides site and date")
    return cols


def as_feature_frame(features: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One feature table ``site, date, ...`` from a table or a mapping site -> table."""
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
    frame = as_feature_frame(features)
    cols = feature_columns(frame)
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
    cols = list(columns) if columns is not None else feature_columns(daily)
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


def years_of(days: np.ndarray) -> np.ndarray:
    """Calendar year (int) of each ``datetime64`` day."""
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
    end_year = years_of(windows.end)
    start_year = years_of(windows.start)
    train = np.isin(end_year, list(train_y))
    if not both:
        train &= ~np.isin(start_year, list(eval_y))
    evaluate_ = np.isin(end_year, list(eval_y))
    if train_sites is not None:
        train &= np.isin(windows.site, list(train_sites))
    if eval_sites is not None:
        evaluate_ &= np.isin(windows.site, list(eval_sites))
    return windows.take(train), windows.take(evaluate_)
