from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from pyproj import CRS, Transformer

from embedder import gpp as G
from embedder.cli import main as cli
from embedder.config import ConfigError, GppConfig, GppModelConfig, load_config
from embedder.gpp.data import years_of

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "gpp"
US_WI7 = REAL / "FLX_US-Wi7_FLUXNET2015_FULLSET_DD_2005-2005_1-4.csv"
FR_PUE_MM = REAL / "FLX_FR-Pue_FLUXNET2015_FULLSET_MM_2007-2014_2-3.csv"
FDK_GPP = REAL / "fdk_rsofun_11sites_daily_gpp_nee_le.csv"
FDK_INFO = REAL / "fdk_rsofun_11sites_site_info.csv"
FDK_FORCING = REAL / "fdk_rsofun_11sites_daily_forcing.csv.gz"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real GPP data not found at {REAL}")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run several times faster on one thread when the 2 cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic(seed: int = 0, sites=("AA-One", "BB-Two"), years=(2017, 2018, 2019, 2020), every_days: int = 5):
    """Features every ``every_days`` days (a seasonal F01, noise F02) and daily GPP = 2 + 6 * F01."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(f"{years[0]}-01-01", f"{years[-1]}-12-31", freq="D")
    feats, flux = [], []
    for k, site in enumerate(sites):
        phase = 2 * np.pi * (days.day_of_year.to_numpy() - 100 - 10 * k) / 365.25
        f01 = 0.5 + 0.4 * np.sin(phase)
        gpp = 2.0 + 6.0 * f01 + rng.normal(0, 0.05, len(days))
        qc = np.where(rng.random(len(days)) < 0.1, 0.3, 1.0)
        flux.append(pd.DataFrame({"site": site, "date": days, "gpp": gpp, "qc": qc}))
        sel = np.arange(0, len(days), every_days)
        feats.append(
            pd.DataFrame(
                {"site": site, "date": days[sel], "F01": f01[sel], "F02": rng.normal(0, 1, len(sel))}
            )
        )
    return pd.concat(feats, ignore_index=True), pd.concat(flux, ignore_index=True)


# ------------------------------------------------------------------------------------------ readers


@needs_real
def test_read_fluxnet_daily_real_us_wi7():
    df = G.read_fluxnet_daily(US_WI7)
    assert list(df.columns) == ["site", "date", "gpp", "qc"]
    assert len(df) == 365 and (df["site"] == "US-Wi7").all()
    assert df["date"].iloc[0] == pd.Timestamp("2005-01-01") and df["date"].iloc[-1] == pd.Timestamp(
        "2005-12-31"
    )
    assert df["gpp"].mean() == pytest.approx(2.0728, abs=1e-3)
    assert df["gpp"].max() == pytest.approx(9.18309, abs=1e-5)
    kept = G.clean_gpp(df, min_qc=0.7, clip_quantiles=(0.0, 1.0))
    assert len(kept) == 167  # days with NEE_VUT_REF_QC >= 0.7
    assert kept["gpp"].max() == pytest.approx(df.loc[df["qc"] >= 0.7, "gpp"].max())


def test_read_fluxnet_daily_missing_and_bad_input(tmp_path):
    good = tmp_path / "ICOSETC_XX-Abc_FLUXNET_DD_L2.csv"
    pd.DataFrame(
        {
            "TIMESTAMP": [20200101, 20200102, 20200103],
            "GPP_NT_VUT_REF": [1.5, -9999, 3.0],
            "NEE_VUT_REF_QC": [1.0, 0.5, -9999],
        }
    ).to_csv(good, index=False)
    df = G.read_fluxnet_daily(good)
    assert list(df["gpp"]) == [1.5, 3.0] and (df["site"] == "XX-Abc").all()
    assert np.isnan(df["qc"].iloc[1])
    assert len(G.clean_gpp(df)) == 1  # unknown qc is dropped

    monthly = tmp_path / "FLX_XX-Abc_FLUXNET2015_FULLSET_MM_2020-2020.csv"
    pd.DataFrame({"TIMESTAMP": [202001], "GPP_NT_VUT_REF": [1.0], "NEE_VUT_REF_QC": [1.0]}).to_csv(
        monthly, index=False
    )
    with pytest.raises(G.GppInputError, match="202001"):
        G.read_fluxnet_daily(monthly)
    unnamed = tmp_path / "tower.csv"
    unnamed.write_text(good.read_text())
    with pytest.raises(G.GppInputError, match="site="):
        G.read_fluxnet_daily(unnamed)
    assert (G.read_fluxnet_daily(unnamed, site="YY-Def")["site"] == "YY-Def").all()
    with pytest.raises(G.GppInputError, match="nope"):
        G.read_flux(tmp_path / "nope")


@needs_real
def test_read_fluxdatakit_units_against_fluxnet_monthly():
    fdk = G.read_fluxdatakit(FDK_GPP, site_info=FDK_INFO)
    first = fdk[(fdk["site"] == "IT-Noe") & (fdk["date"] == "2007-01-01")].iloc[0]
    assert first["gpp"] == pytest.approx(2.20487303853345 * 1.0377504, rel=1e-9)
    assert fdk.loc[fdk["site"] == "CA-Cbo", "lon"].iloc[0] == pytest.approx(-79.9333)
    assert fdk.loc[fdk["site"] == "FI-Let", "igbp"].iloc[0] == "ENF"
    # The converted FluxDataKit monthly means match the original FLUXNET2015 monthly file (gC m-2 d-1).
    mm = pd.read_csv(FR_PUE_MM, na_values=-9999, dtype={"TIMESTAMP": str})
    mm_gpp = mm.set_index(pd.to_datetime(mm["TIMESTAMP"], format="%Y%m"))["GPP_NT_VUT_REF"]
    pue = fdk[fdk["site"] == "FR-Pue"].set_index("date")["gpp"]
    fdk_monthly = pue.groupby(pue.index.to_period("M")).mean()
    fdk_monthly.index = fdk_monthly.index.to_timestamp()
    both = pd.concat([fdk_monthly, mm_gpp], axis=1, join="inner").dropna()
    assert len(both) > 80
    ratio = both.iloc[:, 0] / both.iloc[:, 1]
    assert ratio[both.iloc[:, 1] > 1].median() == pytest.approx(1.0, abs=0.02)


@needs_real
def test_read_flux_folder_joins_site_info_and_skips_monthly():
    df = G.read_flux(REAL)
    assert list(df.columns[:4]) == ["site", "date", "gpp", "qc"]
    assert set(df["site"]) == {
        *("CA-Cbo", "CH-Aws", "CH-Fru", "ES-LM2", "FI-Let", "FR-Pue"),
        *("IT-Lav", "IT-MBo", "IT-Noe", "IT-Ro2", "US-SRM", "US-Wi7"),
    }
    assert not df.duplicated(["site", "date"]).any()
    assert df.loc[df["site"] == "CH-Aws", "lat"].iloc[0] == pytest.approx(46.583306)
    assert df.loc[df["site"] == "US-Wi7", "lat"].isna().all()  # not in the 11-site info file


def test_clean_gpp_filters_qc_and_clips_per_site():
    df = pd.DataFrame(
        {
            "site": ["A"] * 5 + ["B"] * 3,
            "date": pd.date_range("2020-01-01", periods=8),
            "gpp": [0.0, 1.0, 2.0, 3.0, 100.0, 5.0, 6.0, 7.0],
            "qc": [1.0, 1.0, 0.69, 0.7, 1.0, 1.0, 1.0, 1.0],
        }
    )
    out = G.clean_gpp(df, min_qc=0.7, clip_quantiles=(0.0, 0.5))
    a = out[out["site"] == "A"]["gpp"].tolist()
    assert a == [0.0, 1.0, 2.0, 2.0]  # 2.0 dropped (qc 0.69); A's median of [0, 1, 3, 100] is 2.0
    assert out[out["site"] == "B"]["gpp"].tolist() == [5.0, 6.0, 6.0]


# ------------------------------------------------------------------------------------------ features


def test_daily_features_interpolates_within_each_year_only():
    feats = pd.DataFrame(
        {
            "site": "S",
            "date": pd.to_datetime(["2019-12-01", "2020-01-31", "2020-02-10"]),
            "F01": [0.0, 10.0, 20.0],
        }
    )
    daily = G.daily_features(feats).set_index("date")["F01"]
    assert len(daily) == 365 + 366
    assert daily["2019-01-01"] == 0.0 and daily["2019-12-31"] == 0.0  # held within 2019
    assert daily["2020-01-01"] == 10.0  # not interpolated across the year boundary from 2019-12-01
    assert daily["2020-02-05"] == pytest.approx(15.0)
    assert daily["2020-12-31"] == 20.0


def test_add_vegetation_indices_hand_values():
    df = pd.DataFrame({"B02": [0.05], "B04": [0.1], "B08": [0.5]})
    out = G.add_vegetation_indices(df)
    assert out["NDVI"].iloc[0] == pytest.approx(0.4 / 0.6)
    assert out["EVI"].iloc[0] == pytest.approx(2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1.0))
    with pytest.raises(G.GppInputError, match="B02"):
        G.add_vegetation_indices(pd.DataFrame({"B04": [0.1], "B08": [0.5]}))


def _embedding_dataset(seed: int = 0) -> tuple[xr.Dataset, float, float]:
    rng = np.random.default_rng(seed)
    x = 500_005.0 + 10.0 * np.arange(9)
    y = 5_100_085.0 - 10.0 * np.arange(9)
    values = rng.normal(size=(3, 9, 9, 7)).astype(np.float32)
    values[1, 4, 4, 0] = np.nan  # the centre pixel of date 1 is invalid for F01
    values[2] = np.nan  # date 2 has no valid pixel at all
    ds = xr.Dataset(
        {"embedding": (("time", "y", "x", "feature"), values)},
        coords={
            "time": pd.to_datetime(["2020-05-01", "2020-05-06", "2020-05-11"]),
            "y": y,
            "x": x,
            "feature": [f"F{i:02d}" for i in range(1, 8)],
        },
        attrs={"crs": "EPSG:32632"},
    )
    lon, lat = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(x[4], y[4])
    return ds, lon, lat


def test_tower_features_averages_pixels_within_radius():
    ds, lon, lat = _embedding_dataset()
    out = G.tower_features(ds, lon, lat, 10.5, site="XX-Tow")
    v = ds["embedding"].values
    plus = v[:, [4, 3, 5, 4, 4], [4, 4, 4, 3, 5], :]  # centre + 4 neighbours at 10 m: [T, 5, F]
    assert list(out.columns) == ["site", "date", *[f"F{i:02d}" for i in range(1, 8)]]
    assert len(out) == 2  # date 2 has no valid pixel and is dropped
    np.testing.assert_allclose(out.iloc[0, 2:].to_numpy(float), plus[0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out.iloc[1, 2], np.nanmean(plus[1, :, 0]), rtol=1e-5)  # NaN ignored
    wider = G.tower_features(ds, lon, lat, 15.0)
    np.testing.assert_allclose(wider.iloc[0, 1:].to_numpy(float), v[0, 3:6, 3:6].mean(axis=(0, 1)), rtol=1e-5)
    with pytest.raises(G.GppInputError, match="outside"):
        G.tower_features(ds, lon + 1.0, lat, 15.0)
    # The store's layout: dims (time, feature, y, x), CRS on a spatial_ref coordinate.
    wkt = CRS.from_epsg(32632).to_wkt()
    store_like = ds.transpose("time", "feature", "y", "x").assign_coords(
        spatial_ref=((), 0, {"crs_wkt": wkt})
    )
    store_like.attrs = {}
    pd.testing.assert_frame_equal(G.tower_features(store_like, lon, lat, 15.0), wider)
    bare = ds.copy()
    bare.attrs = {}
    with pytest.raises(G.GppInputError, match="CRS"):
        G.tower_features(bare, lon, lat, 15.0)


# ------------------------------------------------------------------------------------------ windows


def _ramp(days: pd.DatetimeIndex, site: str = "S") -> tuple[pd.DataFrame, pd.DataFrame]:
    n = np.arange(len(days), dtype=float)
    daily = pd.DataFrame({"site": site, "date": days, "F01": n})
    gpp = pd.DataFrame({"site": site, "date": days, "gpp": n * 10, "qc": 1.0})
    return daily, gpp


def test_make_windows_content_stride_and_gaps():
    days = pd.date_range("2020-01-01", periods=200, freq="D")
    daily, gpp = _ramp(days)
    daily.loc[150, "F01"] = np.nan  # a missing feature day kills every window containing it
    gpp = gpp.drop(index=[100])  # a missing target kills the window ending there
    w = G.make_windows(daily, gpp, window_days=90, stride_days=1)
    ends = (w.end - np.datetime64("2020-01-01", "D")).astype(int)
    expected = [e for e in range(89, 200) if e != 100 and not (e >= 150 and e - 89 <= 150)]
    assert ends.tolist() == expected
    assert w.x.shape == (len(expected), 90, 1) and w.x.dtype == np.float32
    np.testing.assert_array_equal(w.x[:, -1, 0], ends)  # last row is the target day
    np.testing.assert_array_equal(w.x[:, 0, 0], ends - 89)
    np.testing.assert_array_equal(w.y, ends * 10.0)
    strided = G.make_windows(daily, gpp, window_days=90, stride_days=10)
    s_ends = (strided.end - np.datetime64("2020-01-01", "D")).astype(int)
    assert s_ends.tolist() == [e for e in range(89, 200, 10) if e in expected]


def test_split_windows_has_no_leakage():
    days = pd.date_range("2017-01-01", "2019-12-31", freq="D")
    daily, gpp = _ramp(days)
    w = G.make_windows(daily, gpp, window_days=90, stride_days=1)
    # Evaluation year before the training years: training windows must not read 2017 days.
    train, test = G.split_windows(w, train_years=[2018, 2019], eval_years=[2017])
    assert years_of(train.start).min() == 2018 and years_of(train.end).min() == 2018
    assert set(years_of(test.end)) == {2017}
    first_train_end = pd.Timestamp(train.end.min())
    assert first_train_end == pd.Timestamp("2018-03-31")  # 2018-01-01 .. 2018-03-31 is 90 days
    assert len(train) + len(test) < len(w)  # the purged windows (ending 2018-01-01..03-30) are gone
    # Reference order (train 2017-2018, validate 2019): validation windows may read 2018 features.
    train, test = G.split_windows(w, train_years=[2017, 2018], eval_years=[2019])
    assert years_of(train.end).max() == 2018 and pd.Timestamp(test.end.min()) == pd.Timestamp("2019-01-01")
    assert not set(years_of(train.start)) & {2019} and not set(years_of(train.end)) & {2019}
    with pytest.raises(G.GppInputError, match="2018"):
        G.split_windows(w, train_years=[2018], eval_years=[2018])
    # Leave one site out: windows never cross sites.
    d2, g2 = _ramp(days, site="T")
    w2 = G.make_windows(pd.concat([daily, d2]), pd.concat([gpp, g2]), window_days=90, stride_days=7)
    train, test = G.split_windows(
        w2, train_years=[2017, 2018, 2019], eval_years=[2017, 2018, 2019], train_sites=["S"], eval_sites=["T"]
    )
    assert set(train.site) == {"S"} and set(test.site) == {"T"} and len(train) + len(test) == len(w2)


def test_standardiser_uses_training_statistics_only():
    rng = np.random.default_rng(1)
    train = G.Windows(
        rng.normal(3.0, 2.0, (50, 10, 2)).astype(np.float32),
        rng.normal(5.0, 1.5, 50).astype(np.float32),
        np.full(50, "S", dtype=object),
        np.full(50, np.datetime64("2020-01-10", "D")),
        ("a", "b"),
    )
    std = G.Standardiser.fit(train)
    np.testing.assert_allclose(std.x_mean, train.x.reshape(-1, 2).mean(axis=0), rtol=1e-5)
    assert std.y_mean == pytest.approx(float(train.y.mean())) and std.y_std == pytest.approx(
        float(train.y.std())
    )
    z = std.x(train.x)
    np.testing.assert_allclose(z.reshape(-1, 2).mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(std.y_inverse(std.y(train.y)), train.y, rtol=1e-5)


# ------------------------------------------------------------------------------------------ models


def test_reference_transformer_shape_and_sizes():
    model = G.TransformerRegressor(7, cfg=GppModelConfig(), max_days=90)
    assert len(model.encoder.layers) == 3
    layer = model.encoder.layers[0]
    assert layer.self_attn.embed_dim == 96 and layer.self_attn.num_heads == 8
    assert layer.linear1.out_features == 1024 and layer.dropout.p == pytest.approx(0.05)
    out = model(torch.zeros(2, 90, 7))
    assert out.shape == (2,)


@pytest.mark.parametrize("kind", ["transformer", "lstm"])
def test_small_regressors_learn_a_windowed_signal(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 20, 2)).astype(np.float32)
    y = (x[:, -1, 0] + 0.5 * x[:, -2, 0]).astype(np.float32)  # read at the last days only
    cfg = GppConfig.small(epochs=15, window_days=20, batch_size=16, lr=1e-2)
    torch.manual_seed(0)
    model = (
        G.TransformerRegressor(2, cfg=cfg.model, max_days=20)
        if kind == "transformer"
        else G.LstmRegressor(2, cfg=cfg.model)
    )
    losses = G.fit_regressor(model, x, y=y, cfg=cfg)
    assert len(losses) == 15 and losses[-1] < 0.6 * losses[0]
    pred = G.predict_regressor(model, x)
    assert pred.shape == (128,) and np.corrcoef(pred, y)[0, 1] > 0.8


def test_fit_linear_recovers_coefficients():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 2))
    y = 1.5 * x[:, 0] - 0.5 * x[:, 1] + 3.0
    np.testing.assert_allclose(G.fit_linear(x, y), [1.5, -0.5, 3.0], atol=1e-10)


# ------------------------------------------------------------------------------------------ metrics, plots


def test_regression_metrics_hand_computed():
    m = G.regression_metrics(np.array([1.0, 2.0, 3.0, 4.0, np.nan]), np.array([1.0, 3.0, 2.0, 6.0, 9.0]))
    # errors 0, 1, -1, 2 -> MSE 6/4; range 3; SS_tot 5
    assert m["n"] == 4
    assert m["rmse"] == pytest.approx(np.sqrt(1.5))
    assert m["nrmse"] == pytest.approx(np.sqrt(1.5) / 3.0)
    assert m["mae"] == pytest.approx(1.0)
    assert m["r2"] == pytest.approx(1.0 - 6.0 / 5.0)
    assert m["bias"] == pytest.approx(0.5)
    assert np.isnan(G.regression_metrics(np.array([2.0]), np.array([1.0]))["r2"])


def test_metrics_table_per_site_and_overall():
    preds = pd.DataFrame(
        {
            "model": "m",
            "site": ["A", "A", "B", "B"],
            "observed": [1.0, 3.0, 2.0, 4.0],
            "predicted": [2.0, 3.0, 2.0, 2.0],
            "y_std": 2.0,
        }
    )
    t = G.metrics_table(preds).set_index("site")
    assert t.loc["A", "rmse"] == pytest.approx(np.sqrt(0.5)) and t.loc["B", "mae"] == pytest.approx(1.0)
    assert t.loc["ALL", "n"] == 4 and t.loc["ALL", "rmse"] == pytest.approx(np.sqrt(5.0 / 4.0))
    assert t.loc["ALL", "nrmse"] == pytest.approx(np.sqrt(5.0 / 4.0) / 3.0)
    assert t.loc["ALL", "mae_std"] == pytest.approx(0.75 / 2.0)


def test_plot_gpp_writes_png(tmp_path):
    import matplotlib.image as mpimg

    days = pd.date_range("2020-01-01", periods=60, freq="D")
    obs = pd.Series(np.sin(np.arange(60) / 9.0) + 3, index=days).iloc[::2]
    pred = pd.Series(np.sin(np.arange(60) / 9.0) + 3.1, index=days)
    out = G.plot_gpp("XX-Tow", obs, {"transformer": pred, "lue": pred - 0.2}, tmp_path / "a" / "p.png")
    img = mpimg.imread(out)
    assert img.shape[0] == 350 and img.shape[1] == 1000 and img[..., :3].std() > 0.05


# ------------------------------------------------------------------------------------------ config


def test_gpp_config_validation():
    cfg = load_config(GppConfig, {"train_years": [2016, 2017], "models": ["lue", "linear"]})
    assert cfg.train_years == (2016, 2017) and cfg.window_days == 90 and cfg.lr == 1e-4
    with pytest.raises(ConfigError, match="2020"):
        GppConfig(train_years=(2019, 2020), val_years=(2020,))
    with pytest.raises(ConfigError, match="rf"):
        load_config(GppConfig, {"models": ["rf"]})
    with pytest.raises(ConfigError, match="windows_days"):
        load_config(GppConfig, {"windows_days": 30})
    with pytest.raises(ConfigError, match="n_heads"):
        GppModelConfig(d_model=10, n_heads=3)


# ------------------------------------------------------------------------------------------ end to end


def test_evaluate_synthetic_temporal_and_loso():
    feats, flux = synthetic()
    cfg = GppConfig.small(epochs=4, models=("transformer", "linear", "ndvi", "lue"))
    res = G.run_evaluation(feats, flux, cfg=cfg)
    assert set(res.skipped) == {"ndvi", "lue"}
    m = res.metrics.set_index(["model", "site"])
    assert set(m.index.get_level_values("site")) == {"AA-One", "BB-Two", "ALL"}
    assert m.loc[("linear", "ALL"), "r2"] > 0.95  # GPP is linear in F01 on the target day
    assert m.loc[("transformer", "ALL"), "r2"] > 0.3
    assert (res.predictions["date"].dt.year == 2020).all()
    assert m.loc[("linear", "ALL"), "n"] == int((G.clean_gpp(flux)["date"].dt.year == 2020).sum())
    loso = G.evaluate(feats, flux, cfg=GppConfig.small(split="loso", models=("linear",)))
    assert set(loso["site"]) == {"AA-One", "BB-Two", "ALL"}
    assert loso.set_index("site").loc["ALL", "r2"] > 0.9
    with pytest.raises(G.GppInputError, match="AA-One"):
        G.evaluate(feats.assign(site="ZZ-Zzz"), flux, cfg=cfg)


def test_evaluate_band_means_runs_vi_baselines():
    feats, flux = synthetic(every_days=10)
    f01 = feats["F01"].to_numpy()
    bands = feats[["site", "date"]].assign(B02=0.03, B04=0.12 - 0.1 * f01, B08=0.2 + 0.3 * f01)
    cfg = GppConfig.small(models=("ndvi", "evi", "linear"))
    t = G.evaluate(bands, flux, cfg=cfg).set_index(["model", "site"])
    assert {"ndvi", "evi", "linear"} <= set(t.index.get_level_values("model"))
    assert t.loc[("ndvi", "ALL"), "r2"] > 0.8 and t.loc[("evi", "ALL"), "r2"] > 0.8


def _light_limited(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Band means whose NDVI is a slow greenness, daily light that is not, and GPP = 1 + 8 NDVI x light."""
    rng = np.random.default_rng(seed)
    feats, flux = synthetic(seed, every_days=10)
    days = pd.date_range("2017-01-01", "2020-12-31", freq="D")
    forcing = pd.concat(
        [
            pd.DataFrame({"site": s, "date": days, "ppfd": rng.uniform(0.2, 1.0, len(days))})
            for s in ("AA-One", "BB-Two")
        ],
        ignore_index=True,
    )
    f01 = feats["F01"].to_numpy()
    bands = feats[["site", "date"]].assign(B02=0.03, B04=0.12 - 0.1 * f01, B08=0.2 + 0.3 * f01)
    ndvi = G.daily_features(G.add_vegetation_indices(bands))[["site", "date", "NDVI"]]
    truth = ndvi.merge(forcing, on=["site", "date"])
    flux = flux.drop(columns="gpp").merge(
        truth.assign(gpp=1.0 + 8.0 * truth["NDVI"] * truth["ppfd"])[["site", "date", "gpp"]],
        on=["site", "date"],
    )
    return bands, flux, forcing


def test_drivers_reach_every_model_and_the_vi_baselines_take_their_products():
    bands, flux, forcing = _light_limited()
    image_only = G.evaluate(bands, flux, cfg=GppConfig.small(models=("ndvi", "linear")), forcing=forcing)
    given = G.evaluate(
        bands, flux, cfg=GppConfig.small(models=("ndvi", "linear"), drivers=("ppfd",)), forcing=forcing
    )
    r2 = {t: d.set_index(["model", "site"])["r2"] for t, d in (("image", image_only), ("drivers", given))}
    # daily light is what greenness cannot see: without it the index explains little of GPP
    assert r2["image"][("ndvi", "ALL")] < 0.5
    assert r2["drivers"][("ndvi", "ALL")] > 0.99  # NDVI x ppfd is the truth
    assert r2["drivers"][("linear", "ALL")] > r2["image"][("linear", "ALL")] + 0.2
    # a 365-day forcing calendar (no 29 February, as FluxDataKit's) loses no window over the leap day;
    # a longer gap in the forcing drops the windows over it
    no_leap = forcing[~((forcing["date"].dt.month == 2) & (forcing["date"].dt.day == 29))]
    leapless = G.evaluate(
        bands, flux, cfg=GppConfig.small(models=("ndvi",), drivers=("ppfd",)), forcing=no_leap
    )
    n = given.set_index(["model", "site"])["n"]
    assert leapless.set_index(["model", "site"]).loc[("ndvi", "ALL"), "n"] == n[("ndvi", "ALL")]
    week = (forcing["date"] >= "2020-06-01") & (forcing["date"] < "2020-06-08")
    holed = G.evaluate(
        bands, flux, cfg=GppConfig.small(models=("ndvi",), drivers=("ppfd",)), forcing=forcing[~week]
    )
    assert holed.set_index(["model", "site"]).loc[("ndvi", "ALL"), "n"] < n[("ndvi", "ALL")]
    with pytest.raises(G.GppInputError, match="forcing"):
        G.evaluate(bands, flux, cfg=GppConfig.small(drivers=("ppfd",)))
    with pytest.raises(G.GppInputError, match=r"\['swc'\].*ppfd"):
        G.evaluate(bands, flux, cfg=GppConfig.small(drivers=("swc",)), forcing=forcing)
    with pytest.raises(ConfigError, match="once"):
        GppConfig(drivers=("ppfd", "ppfd"))


@needs_real
def test_evaluate_real_forcing_features_and_cli(tmp_path):
    """Forcing-derived stand-in features (every 5 days) against real tower GPP, through the CLI."""
    forcing = G.read_forcing(FDK_FORCING)
    sites = ["CH-Aws", "FI-Let", "ES-LM2"]
    sub = forcing[forcing["site"].isin(sites) & (forcing["date"].dt.year >= 2017)]
    sub = sub[(sub["date"] - pd.Timestamp("2017-01-01")).dt.days % 5 == 0]
    feats_csv = tmp_path / "features.csv"
    sub[["site", "date", "fapar", "ppfd", "temp"]].to_csv(feats_csv, index=False)
    cfg_yaml = tmp_path / "gpp.yaml"
    cfg_yaml.write_text("models: [lstm, linear, lue]\nepochs: 2\n")
    out = tmp_path / "out"
    code = cli(
        [
            *("gpp", "--features", str(feats_csv), "--flux", str(REAL), "--forcing", str(FDK_FORCING)),
            *("--out", str(out), "--small", "--config", str(cfg_yaml)),
        ]
    )
    assert code == 0
    metrics = pd.read_csv(out / "metrics.csv").set_index(["model", "site"])
    assert set(metrics.index.get_level_values("site")) == {*sites, "ALL"}
    assert metrics.loc[("lue", "ALL"), "r2"] > 0.4
    assert metrics.loc[("lue", "FI-Let"), "n"] > 250  # 2020 days passing QC
    assert "| split | model | site |" in (out / "metrics.md").read_text()
    assert all((out / f"gpp_temporal_{s}.png").stat().st_size > 10_000 for s in sites)
