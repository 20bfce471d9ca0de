"""Tests of embedder/evaluation/report.py on a tiny fabricated run folder (no demo run).

One 32 px sample-region scene (S2 every 10 days, 2021-10..2022-05), an untrained small fusion model,
embeddings written with Predictor into a 32 px-tile store, a fake metrics.jsonl and a fake GPP folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from embedder.config import FusionConfig, ModelConfig, SampleRegionConfig, StoreConfig
from embedder.data.cubes import load_cube
from embedder.data.stac import open_catalog
from embedder.evaluation.report import ReportError, land_cover_probe, pca_rgb, write_run_report
from embedder.grid import work_units
from embedder.inference import Predictor, masked_embeddings, prepare_tile
from embedder.models.fusion import FusionModel
from embedder.models.modality import ModalityAutoencoder
from embedder.sample import write_sample_region
from embedder.sensors import S1, S2
from embedder.store import create_store, write_unit

pytestmark = pytest.mark.usefixtures("torch_one_thread")

START, END = dt.date(2022, 1, 10), dt.date(2022, 3, 31)
LAYOUT = StoreConfig(tile_px=32, chunk_px=32, period_days=366, chunk_days=61)


def _fake_metrics(run: Path) -> None:
    run.mkdir(parents=True)
    lines = []
    for epoch in range(3):
        vals = {
            f"{s}/{m}": 0.3 / (epoch + 1)
            for s in ("s1", "s2")
            for m in ("centre_mae", "surroundings_mae", "sam", "ssim")
        }
        lines.append({"epoch": epoch, "lr": 1e-3, "train": {"loss": 1.0, "centre_mae": 0.2, **vals},
                      "val": {"loss": 1.1, "centre_mae": 0.25 / (epoch + 1), **vals}})  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "best.json").write_text(json.dumps({"epoch": 2, "test": {"centre_mae": 0.09}}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    base = SampleRegionConfig.tiny()
    cfg = dataclasses.replace(
        base, scenes=base.scenes[:1], start=dt.date(2021, 10, 1), end=dt.date(2022, 5, 31)
    )
    region = write_sample_region(out / "region", cfg=cfg)
    torch.manual_seed(0)
    aes = {s.name: ModalityAutoencoder(s, cfg=ModelConfig.small()) for s in (S1, S2)}
    predictor = Predictor(FusionModel(aes, cfg=FusionConfig.small()), pixel_batch=1024)
    lon0, lat0, lon1, lat1 = region.scenes[0].bbox_lonlat
    lon, lat = (lon0 + lon1) / 2, (lat0 + lat1) / 2
    units = work_units(
        (lon - 1e-4, lat - 1e-4, lon + 1e-4, lat + 1e-4), START, END, tile_px=32, period_days=366
    )
    store = create_store(str(out / "store.zarr"), units=units, model_version="test", cfg=LAYOUT)
    catalog = open_catalog(region.catalog_path)
    for unit in units:
        cube = load_cube(catalog, unit.tile.geobox(halo_px=7), region.start, region.end)
        tile = prepare_tile(cube, start=np.datetime64(START), end=np.datetime64(END), halo_px=7)
        emb, flags = masked_embeddings(predictor.embed_tile(tile), tile.flags)
        write_unit(store, unit, emb, flags, tile.dates)
    _fake_metrics(out / "runs" / "stage2-fusion")
    gpp = out / "gpp-towers" / "gpp-embedding-temporal"
    gpp.mkdir(parents=True)
    days = pd.date_range("2020-01-01", periods=30)
    rows = [{"split": "temporal", "fold": "temporal", "model": m, "site": "CH-Aws", "date": d,
             "observed": float(i), "predicted": float(i) + 0.5, "y_std": 1.0}
            for m in ("transformer", "linear") for i, d in enumerate(days)]  # fmt: skip
    pd.DataFrame(rows).to_csv(gpp / "predictions.csv", index=False)
    (gpp / "metrics.md").write_text(
        "# GPP evaluation (temporal split)\n\n| model | r2 |\n|---|---|\n| linear | 0.5 |\n"
    )
    # the top of an `embedder gpp-towers` folder: its features and the table with the gate's verdict
    (gpp.parent / "features_embedding.csv").write_text("site,date\n")
    (gpp.parent / "metrics.md").write_text(
        "# GPP at tower scenes\n\n**cannot discriminate: the NDVI baseline reaches R² 0.10**\n\n"
        "| features | split | model | r2 |\n|---|---|---|---|\n| embedding | temporal | linear | 0.25 |\n"
    )
    return out


def test_report_has_every_part(run_dir: Path) -> None:
    path = write_run_report(run_dir, block_px=4)
    text = path.read_text()
    figs = path.parent / "figures"
    assert (figs / "curves-stage2-fusion.png").stat().st_size > 1000
    maps = list(figs.glob("maps-*.png"))
    assert len(maps) == 1 and maps[0].stat().st_size > 1000
    assert (figs / "gpp-gpp-towers_gpp-embedding-temporal-CH-Aws.png").is_file()
    assert "stage2-fusion" in text
    # a tower run: its overall table with the NDVI gate's verdict once, not each run's own table
    assert "GPP at flux towers: `gpp-towers`" in text and "cannot discriminate" in text
    assert "| embedding | temporal | linear | 0.25 |" in text and "| linear | 0.5 |" not in text
    probe = pd.read_csv(path.parent / "probe.csv")
    assert len(probe) == 1 and probe["n_test"].iloc[0] > 0 and probe["n_classes"].iloc[0] >= 2
    for col in ("accuracy_embedding", "accuracy_bands", "accuracy_majority"):
        assert 0.0 <= probe[col].iloc[0] <= 1.0
    assert "Probe protocol" in text and "| window | embedding | bands |" in text
    quality = json.loads((path.parent / "quality.json").read_text())
    assert "| features | linear | nonlinear |" in text
    for key in (
        "probe_emb_linear",
        "probe_emb_nonlinear",
        "probe_bands_nonlinear",
        "window_1date_emb",
        "window_year_bands",
    ):
        assert 0.0 <= quality[key] <= 1.0 and quality[f"{key}_ci95"] >= 0.0
    assert "Nothing: every part was made." in text


def test_report_names_missing_parts(tmp_path: Path) -> None:
    text = write_run_report(tmp_path).read_text()
    assert "no runs/<name>/metrics.jsonl" in text
    assert "no region/region.json" in text
    assert "no folder with predictions.csv" in text
    with pytest.raises(ReportError, match="does not exist"):
        write_run_report(tmp_path / "nope")


def test_probe_separates_informative_from_noise_features() -> None:
    rng = np.random.default_rng(0)
    labels = (np.arange(64)[None, :] // 4 % 4) * np.ones((16, 1), int)
    good = labels[None, None].astype(np.float32) + 0.1 * rng.standard_normal((2, 7, 16, 64)).astype(
        np.float32
    )
    noise = rng.standard_normal((2, 10, 16, 64)).astype(np.float32)
    res = land_cover_probe(good, noise, labels, block_px=4, seed=1)
    assert res.accuracy_embedding > 0.95 and res.accuracy_bands < 0.5
    noise[0, 0, 0, 0] = np.nan  # a pixel-date missing in one feature set is dropped from both
    assert land_cover_probe(good, noise, labels, block_px=4, seed=1).n_train + 1 >= res.n_train
    with pytest.raises(ReportError, match="disagree"):
        land_cover_probe(good, noise[:1], labels)


def test_pca_rgb_stretch_and_nan() -> None:
    rng = np.random.default_rng(2)
    maps = rng.standard_normal((3, 7, 8, 8)).astype(np.float32)
    maps[1, :, 0, 0] = np.nan
    rgb = pca_rgb(maps, fit_index=0)
    assert rgb.shape == (3, 8, 8, 3) and np.isnan(rgb[1, 0, 0]).all()
    ok = rgb[np.isfinite(rgb)]
    assert ok.min() == 0.0 and ok.max() == 1.0
