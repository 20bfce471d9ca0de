"""Tests of embedder/evaluation/towers.py: tower scenes driven by real fAPAR and the embeddings -> GPP pipeline.

Uses the real FluxDataKit files of /work/shared/realdata/gpp with two Swiss towers, 24 px scenes,
S2 every 30 days and S1 every 60 days (the smallest set-up that still has train and evaluation years).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedder.checkpoints import load_fusion, save_checkpoint
from embedder.config import FusionConfig, GppConfig, ModelConfig
from embedder.data.testing import make_test_cube
from embedder.evaluation.towers import (
    DEFAULT_GPP_DIR,
    FOOTPRINT_RADIUS_PX,
    FORCING,
    TOWER_DRIVERS,
    TowerError,
    fapar_ceiling,
    gpp_figures,
    quick_train_fusion,
    run_gpp_towers,
    tower_scene_specs,
    write_tower_scenes,
)
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sensors import S1, S2

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.skipif(not (DEFAULT_GPP_DIR / FORCING).is_file(), reason="realdata/gpp not present"),
]

SITES = ("CH-Aws", "CH-Fru")


def test_scene_specs_sit_on_the_towers() -> None:
    specs = tower_scene_specs(["CA-Cbo", "FI-Let"])
    assert [s.name for s in specs] == ["CA-Cbo", "FI-Let"]
    assert specs[0].epsg == 32617 and specs[1].epsg == 32634  # UTM zones of -79.9 E and 23.96 E
    assert specs[0].lon == pytest.approx(-79.9333)
    with pytest.raises(TowerError, match="unknown site"):
        tower_scene_specs(["XX-Nop"])
    # the footprint is the site's vegetation: DBF -> broadleaf, ENF -> needleleaf, GRA -> grassland
    assert [s.footprint_class for s in specs] == ["broadleaf_forest", "needleleaf_forest"]
    assert tower_scene_specs(["CH-Aws"])[0].footprint_class == "grassland"
    assert tower_scene_specs(["CH-Aws"], footprint_radius_px=0)[0].footprint_class is None


def _table(ndvi: float, emb: float, bands: float) -> pd.DataFrame:
    rows = [("bands", "ndvi", ndvi), ("embedding", "transformer", emb), ("bands", "transformer", bands),
            ("embedding", "lue", 0.6)]  # fmt: skip
    return pd.DataFrame([{"features": f, "split": "temporal", "model": m, "r2": r} for f, m, r in rows])


def test_gpp_gate_claims_a_comparison_only_when_ndvi_discriminates() -> None:
    weak = gpp_figures(_table(ndvi=0.3, emb=0.4, bands=0.2))
    assert not weak["gpp_discriminates"] and weak["gpp_verdict"].startswith("cannot discriminate")
    assert "R² 0.30 < 0.5" in weak["gpp_verdict"] and weak["gpp_r2_emb"] == 0.4
    strong = gpp_figures(_table(ndvi=0.6, emb=0.7, bands=0.5))
    assert strong["gpp_discriminates"] and "is above both" in strong["gpp_verdict"]
    assert strong["gpp_r2_lue"] == 0.6 and "gpp_r2_emb_loso" not in strong
    assert "not above" in gpp_figures(_table(ndvi=0.6, emb=0.55, bands=0.5))["gpp_verdict"]
    capped = gpp_figures(_table(ndvi=0.1, emb=0.2, bands=0.2), fapar_r2=0.43)
    assert capped["gpp_r2_fapar_ceiling"] == 0.43 and "true fAPAR" in capped["gpp_verdict"]
    assert "GppConfig.drivers" in capped["gpp_verdict"]  # points to the way out
    given = _table(ndvi=0.6, emb=0.7, bands=0.5)
    given.attrs["gpp_drivers"] = ["ppfd", "temp"]
    assert "every model also given ppfd, temp" in gpp_figures(given)["gpp_verdict"]


def test_fapar_ceiling_is_the_r2_of_a_linear_fapar_model_on_the_last_year() -> None:
    days = pd.date_range("2019-01-01", "2020-12-31", freq="D")
    rng = np.random.default_rng(0)
    fapar = 0.5 + 0.4 * np.sin(np.arange(len(days)) / 58.0)
    forcing = pd.DataFrame({"site": "A", "date": days, "fapar": fapar})
    exact = pd.DataFrame({"site": "A", "date": days, "gpp": 2.0 + 10.0 * fapar})
    assert fapar_ceiling(exact, forcing, sites=["A"], years=(2019, 2020)) == pytest.approx(1.0)
    light = exact.assign(gpp=exact["gpp"] + rng.normal(0, 5.0, len(days)))  # what fAPAR cannot see
    assert fapar_ceiling(light, forcing, sites=["A"], years=(2019, 2020)) < 0.6
    assert np.isnan(fapar_ceiling(exact, forcing, sites=["B"], years=(2019, 2020)))
    ppfd = rng.uniform(0.1, 1.0, len(days))
    lit = exact.assign(gpp=1.0 + 12.0 * fapar * ppfd)  # light-use efficiency: fAPAR alone misses the light
    with_light = forcing.assign(ppfd=ppfd)
    assert fapar_ceiling(lit, with_light, sites=["A"], years=(2019, 2020)) < 0.6
    assert fapar_ceiling(lit, with_light, sites=["A"], years=(2019, 2020), drivers=["ppfd"]) == pytest.approx(
        1.0
    )


def test_vegetation_follows_the_real_fapar(tmp_path: Path) -> None:
    region = write_tower_scenes(
        tmp_path / "r", sites=["CH-Fru"], start=dt.date(2019, 1, 1), end=dt.date(2019, 12, 31), size_px=16,
        cadence_days=15, s1_cadence_days=60,
    )  # fmt: skip
    truth = np.load(region.scenes[0].truth_path)
    forcing = pd.read_csv(
        DEFAULT_GPP_DIR / FORCING, usecols=["sitename", "date", "fapar"], parse_dates=["date"]
    )
    f = forcing[forcing["sitename"] == "CH-Fru"].set_index("date")["fapar"]
    fapar = f.reindex(pd.to_datetime(truth["dates"])).to_numpy()
    natural = np.isin(truth["landcover"], (1, 2, 3))  # needleleaf, broadleaf, grassland follow the driver
    assert natural.any()
    lc = truth["landcover"]  # the tower's footprint (CH-Fru: GRA) is grassland
    rr, cc = np.mgrid[0:16, 0:16]
    assert (lc[np.hypot(rr - 7.5, cc - 7.5) <= FOOTPRINT_RADIUS_PX] == 3).all()
    veg = truth["veg_state"][:, natural].mean(axis=1)  # [T]
    assert np.corrcoef(veg, fapar)[0, 1] > 0.5
    with pytest.raises(TowerError, match="covers"):
        write_tower_scenes(
            tmp_path / "x", sites=["CH-Aws"], start=dt.date(2013, 1, 1), end=dt.date(2013, 6, 1)
        )


def test_quick_train_fusion_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    cubes = [make_test_cube(i, size_px=24, n_dates=24) for i in range(2)]
    ckpt = quick_train_fusion(cubes, run_dir=tmp_path / "m", epochs=1, max_samples=32)
    model = load_fusion(ckpt)
    assert model.cfg == FusionConfig.small() and (tmp_path / "m" / "metrics.jsonl").is_file()
    with pytest.raises(TowerError, match="no training patches"):
        quick_train_fusion([make_test_cube(0, size_px=24, n_dates=8)], run_dir=tmp_path / "n")


def test_pipeline_end_to_end(tmp_path: Path) -> None:
    torch.manual_seed(0)
    aes = {s.name: ModalityAutoencoder(s, cfg=ModelConfig.small()) for s in (S1, S2)}
    ckpt = save_checkpoint(tmp_path / "fusion.pt", FusionModel(aes, cfg=FusionConfig.small()))
    cfg = GppConfig.small(
        epochs=2, models=("transformer", "linear", "ndvi", "evi", "lue"), drivers=TOWER_DRIVERS
    )
    table = run_gpp_towers(
        tmp_path / "out", checkpoint=ckpt, years=(2019, 2020), sites=SITES, size_px=24, cadence_days=30, s1_cadence_days=60,
        splits=("temporal",), gpp_cfg=cfg,
    )  # fmt: skip
    assert set(table["features"]) == {"embedding", "bands"}
    emb = table[table["features"] == "embedding"]
    assert set(emb["model"]) == {"transformer", "linear", "lue"}  # NDVI/EVI need band columns
    bands = table[table["features"] == "bands"]
    assert {"ndvi", "evi", "linear"} <= set(bands["model"])
    assert np.isfinite(table["rmse"]).all() and (table["n"] > 100).all()
    out = tmp_path / "out"
    feats = pd.read_csv(out / "features_embedding.csv")
    assert set(feats["site"]) == set(SITES) and [f"F0{i}" for i in range(1, 8)] == list(feats.columns[2:])
    assert (out / "metrics.md").read_text().count("| embedding |") == 3
    assert "daily ppfd, temp, vpd" in (out / "metrics.md").read_text()
    assert json.loads((out / "fapar_ceiling.json").read_text())["drivers"] == list(TOWER_DRIVERS)
    assert (out / "gpp-embedding-temporal" / "predictions.csv").is_file()


def test_tower_in_the_halo_moves_to_the_nearest_embedded_pixel() -> None:
    import xarray as xr
    from pyproj import Transformer

    from embedder.evaluation.towers import _inside
    from embedder.gpp import GppInputError, tower_features

    x = 500_005.0 + 10 * np.arange(4)
    y = 5_000_035.0 - 10 * np.arange(4)
    ds = xr.Dataset(
        {"e": (("time", "y", "x", "feature"), np.ones((1, 4, 4, 2)))},
        coords={"time": [np.datetime64("2020-01-01", "ns")], "y": y, "x": x},
        attrs={"crs": "EPSG:32632"},
    )
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(500_200.0, 5_000_020.0)  # 160 m east of the grid
    with pytest.raises(GppInputError, match="outside"):
        tower_features(ds, lon, lat, 20.0)
    lon2, lat2 = _inside(ds, lon, lat)
    assert len(tower_features(ds, lon2, lat2, 20.0)) == 1
    inside = to_ll.transform(500_015.0, 5_000_015.0)
    assert _inside(ds, *inside) == inside
