from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import odc.stac
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from embedder.config import ConfigError, SampleRegionConfig, SceneSpec, from_dict, to_dict
from embedder.sample import (
    CLASSES,
    SampleRegion,
    SampleRegionError,
    cli_main,
    default_scenes,
    read_region_manifest,
    series_driver,
    write_sample_region,
)
from embedder.sensors import S1, S2

CODE = {c.name: c.code for c in CLASSES}
# odc-stac reads dtype/nodata from asset raster:bands, which PC's S2 items (and ours) do not carry.
S2_STAC_CFG = {
    S2.collection: {
        "assets": {"*": {"data_type": S2.dtype, "nodata": S2.nodata}, "SCL": {"data_type": "uint8"}}
    }
}


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    return write_sample_region(tmp_path_factory.mktemp("tiny") / "region", cfg=SampleRegionConfig.tiny())


@pytest.fixture(scope="module")
def items(region: SampleRegion) -> list[pystac.Item]:
    return list(pystac.Catalog.from_file(str(region.catalog_path)).get_items(recursive=True))


def _s2(items: list[pystac.Item], epsg: int | None = None) -> list[pystac.Item]:
    out = [i for i in items if i.collection_id == S2.collection]
    if epsg is not None:
        out = [i for i in out if i.properties["proj:code"] == f"EPSG:{epsg}"]
    return sorted(out, key=lambda i: i.datetime or dt.datetime.min)


def _offset(item: pystac.Item) -> float:
    assert S2.s2_scaling is not None
    baseline = float(item.properties["s2:processing_baseline"])
    return S2.s2_scaling.offset_dn if baseline >= S2.s2_scaling.offset_from_baseline else 0.0


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _read(item: pystac.Item, key: str) -> np.ndarray:
    with rasterio.open(item.assets[key].get_absolute_href()) as src:
        return src.read(1)


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), size_px=16, start=dt.date(2022, 1, 15), end=dt.date(2022, 2, 5)
    )
    first = _hashes(write_sample_region(tmp_path / "first", cfg=cfg).root)
    second = _hashes(write_sample_region(tmp_path / "second", cfg=cfg).root)
    assert len(first) > 80 and {Path(p).suffix for p in first} == {".json", ".tif", ".npz"}
    assert first == second


def test_a_region_written_to_a_relative_folder_reads_back(tmp_path: Path, monkeypatch) -> None:
    """Asset hrefs were resolved against the item folder twice when the output folder was relative."""
    from embedder.data.stac import open_catalog

    monkeypatch.chdir(tmp_path)
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), scenes=default_scenes(1), end=dt.date(2021, 12, 20), size_px=16
    )
    region = write_sample_region(Path("work") / "region", cfg=cfg)
    monkeypatch.chdir(tmp_path.parent)  # read from elsewhere: hrefs must not depend on the cwd
    items = list(open_catalog(str(tmp_path / region.catalog_path)).search(
        "sentinel-2-l2a", bbox=region.scenes[0].bbox_lonlat, start=cfg.start, end=cfg.end
    ))  # fmt: skip
    assert items and all(Path(a.href).is_file() for it in items for a in it.assets.values())


def test_other_seed_changes_the_landscape(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), scenes=default_scenes(1), end=dt.date(2021, 12, 20), size_px=16
    )
    a = write_sample_region(tmp_path / "a", cfg=cfg)
    b = write_sample_region(tmp_path / "b", cfg=dataclasses.replace(cfg, seed=7))
    lc_a = np.load(a.scenes[0].truth_path)["landcover"]
    lc_b = np.load(b.scenes[0].truth_path)["landcover"]
    assert (lc_a != lc_b).mean() > 0.2


def test_catalog_items_look_like_planetary_computers(region: SampleRegion, items: list[pystac.Item]) -> None:
    s2, s1 = _s2(items), [i for i in items if i.collection_id == S1.collection]
    assert len(s2) == sum(s.n_s2 for s in region.scenes) and len(s1) == sum(s.n_s1 for s in region.scenes)
    n = region.cfg.size_px
    for item in s2:
        p = item.properties
        for key in ("s2:mgrs_tile", "sat:orbit_state", "sat:relative_orbit", "eo:cloud_cover", "platform"):
            assert key in p, key
        raw_props = json.loads(Path(item.get_self_href() or "").read_text())["properties"]
        assert p["proj:code"] == f"EPSG:{raw_props['proj:epsg']}"  # pystac folds proj:epsg into proj:code
        assert p["platform"] in ("Sentinel-2A", "Sentinel-2B")
        assert set(item.assets) == {*S2.assets, "SCL"}
        for key, res in zip(S2.assets, S2.native_res_m, strict=True):
            asset = item.assets[key]
            assert asset.extra_fields["proj:shape"] == [n * 10 // res] * 2
            assert asset.extra_fields["proj:transform"][0] == res
            assert "raster:bands" not in asset.extra_fields  # as PC: no offset/scale on S2 assets
        assert item.assets["SCL"].extra_fields["proj:shape"] == [n // 2, n // 2]
        assert item.id.startswith(p["platform"][-2:].join(["S", "_MSIL2A_"]))
    # S2A and S2B alternate in time within a scene.
    platforms = [i.properties["platform"] for i in _s2(items, region.scenes[0].epsg)]
    assert platforms[:4] == ["Sentinel-2A", "Sentinel-2B", "Sentinel-2A", "Sentinel-2B"]
    for item in s1:
        p = item.properties
        assert p["sar:instrument_mode"] == "IW" and p["sar:polarizations"] == list(S1.bands)
        assert p["sat:orbit_state"] in ("ascending", "descending") and isinstance(
            p["sat:relative_orbit"], int
        )
        assert set(item.assets) == set(S1.assets)
        assert item.assets["vv"].extra_fields["raster:bands"][0]["nodata"] == S1.nodata
    assert {i.properties["sat:orbit_state"] for i in s1} == {"ascending", "descending"}
    # Hrefs in the files on disk are relative, so the folder can be moved.
    raw = json.loads(Path(s2[0].get_self_href() or "").read_text())
    assert all(not a["href"].startswith(("/", "file:")) for a in raw["assets"].values())
    assert all(not link["href"].startswith("/") for link in raw["links"])
    coll = json.loads((region.root / S2.collection / "collection.json").read_text())
    assert coll["item_assets"]["B04"]["raster:bands"] == [{"nodata": 0, "data_type": "uint16"}]


def test_two_utm_zones_and_both_baselines(region: SampleRegion, items: list[pystac.Item]) -> None:
    s2 = _s2(items)
    assert {i.properties["proj:code"] for i in s2} == {"EPSG:32632", "EPSG:32633"}
    assert {s.mgrs_tile for s in region.scenes} == {"32TMT", "33TVL"}
    baselines = {i.properties["s2:processing_baseline"] for i in s2}
    assert any(float(b) < 4 for b in baselines) and any(float(b) >= 4 for b in baselines)
    for item in s2:
        before = item.datetime is not None and item.datetime.date() < dt.date(2022, 1, 25)
        assert (float(item.properties["s2:processing_baseline"]) < 4) == before


def test_cogs_validate(region: SampleRegion, items: list[pystac.Item]) -> None:
    s2 = _s2(items)
    s1 = [i for i in items if i.collection_id == S1.collection]
    paths = [a.get_absolute_href() for it in (s2[0], s2[-1], s1[0]) for a in it.assets.values()]
    paths += [str(s.landcover_path) for s in region.scenes]
    for path in paths:
        assert path is not None
        valid, errors, _warnings = cog_validate(path, strict=True)
        assert valid, (path, errors)


def test_scl_has_clouds_shadows_cirrus_nodata_and_full_cloud_dates(items: list[pystac.Item]) -> None:
    s2 = _s2(items)
    seen: set[int] = set()
    for item in s2:
        scl = _read(item, "SCL")
        seen |= set(np.unique(scl).tolist())
        cloud_pct = 100 * np.isin(scl, (8, 9, 10))[scl > 0].mean() if (scl > 0).any() else 0.0
        assert cloud_pct == pytest.approx(item.properties["eo:cloud_cover"], abs=1e-5)
        nodata_pct = 100 * (scl == 0).mean()
        assert nodata_pct == pytest.approx(item.properties["s2:nodata_pixel_percentage"], abs=1e-5)
        band = _read(item, "B02")
        scl10 = np.repeat(np.repeat(scl, 2, 0), 2, 1)
        assert np.array_equal(band == 0, scl10 == 0)  # no data is the same in DN and SCL
    assert {0, 3, 4, 5, 6, 8, 9, 10} <= seen
    assert any(i.properties["eo:cloud_cover"] > 99 for i in s2)
    assert any(i.properties["eo:cloud_cover"] < 20 for i in s2)


def test_cloud_shadows_lie_away_from_the_sun(items: list[pystac.Item]) -> None:
    # Morning sun in the south-east: a shadow pixel's cloud lies south-east of it, so clouds are, on
    # average, further south (larger row) and east (larger column) than the shadows they cast.
    drow, dcol = [], []
    for item in _s2(items):
        scl = _read(item, "SCL")
        shadow, cloud = scl == 3, np.isin(scl, (8, 9))
        if shadow.sum() >= 3 and 0.02 < cloud.mean() < 0.6:
            cloud_rc, shadow_rc = np.nonzero(cloud), np.nonzero(shadow)  # (rows, cols) of each
            drow.append(float(cloud_rc[0].mean() - shadow_rc[0].mean()))
            dcol.append(float(cloud_rc[1].mean() - shadow_rc[1].mean()))
    assert len(drow) >= 3
    assert np.median(drow) > 0 and np.median(dcol) > 0


def test_odc_stac_load_reads_back_written_reflectance(region: SampleRegion, items: list[pystac.Item]) -> None:
    scene = region.scenes[0]
    s2 = _s2(items, scene.epsg)
    ds = odc.stac.load(
        s2,
        bands=["B04", "B08", "B05", "SCL"],
        groupby="solar_day",
        crs=scene.crs,
        resolution=10,
        stac_cfg=S2_STAC_CFG,
    )
    assert ds.sizes["time"] == len(s2) == scene.n_s2
    assert (ds.sizes["y"], ds.sizes["x"]) == (scene.size_px, scene.size_px)
    assert float(ds.x[0]) == scene.bounds_utm[0] + 5 and float(ds.y[0]) == scene.bounds_utm[3] - 5
    truth = np.load(scene.truth_path)
    refl, clear = truth["reflectance"], truth["clear"]  # [T, 10, H, W], [T, H, W]
    assert [str(d) for d in truth["dates"]] == [str(t)[:10] for t in ds.time.values]
    bands = list(truth["bands"])
    n_checked = 0
    for ti, item in enumerate(s2):
        off = _offset(item)
        ok = clear[ti]
        if not ok.any():
            continue
        for band in ("B04", "B08"):
            got = (ds[band].values[ti][ok].astype(np.float64) - off) / 1e4
            np.testing.assert_allclose(got, refl[ti, bands.index(band)][ok], atol=0.51e-4)
        # 20 m band loaded at 10 m (nearest): each pixel is the mean of its clear 2 x 2 block.
        block_ok = ok.reshape(scene.size_px // 2, 2, -1, 2).all(axis=(1, 3))
        if block_ok.any():
            want = refl[ti, bands.index("B05")].reshape(scene.size_px // 2, 2, -1, 2).mean(axis=(1, 3))
            got20 = (ds["B05"].values[ti][::2, ::2].astype(np.float64) - off) / 1e4
            np.testing.assert_allclose(got20[block_ok], want[block_ok], atol=0.51e-4)
            # SCL is at 20 m: a block of four clear 10 m pixels is classed as land or water.
            assert np.isin(ds["SCL"].values[ti][::2, ::2][block_ok], (4, 5, 6, 7)).all()
        n_checked += int(ok.sum())
    assert n_checked > 500


def test_s1_backscatter_is_plausible(region: SampleRegion, items: list[pystac.Item]) -> None:
    scene = region.scenes[0]
    lc = np.load(scene.truth_path)["landcover"]
    s1 = [i for i in items if i.collection_id == S1.collection and i.properties["proj:code"] == scene.crs]
    vv = np.stack([_read(i, "vv") for i in s1]).astype(np.float64)  # [T, H, W] linear
    vh = np.stack([_read(i, "vh") for i in s1]).astype(np.float64)
    valid = vv != S1.nodata
    assert np.array_equal(valid, vh != S1.nodata)
    assert (vv[valid] > 0).all() and (vh[valid] > 0).all()

    def db(x: np.ndarray, cls: str) -> float:
        m = valid & (lc == CODE[cls])[None]
        return float(10 * np.log10(x[m].mean()))

    assert db(vv, "urban") > db(vv, "broadleaf_forest") > db(vv, "water")
    assert -12 < db(vv, "needleleaf_forest") < -5 and -18 < db(vh, "needleleaf_forest") < -10
    assert db(vv, "water") < -14
    assert all(db(vv, c.name) > db(vh, c.name) for c in CLASSES)
    # Speckle: a forest pixel's VV varies from date to date by the gamma(L) spread.
    m = valid & (lc == CODE["needleleaf_forest"])[None]
    ratio = vv[m] / vv[m].mean()
    assert 0.3 < ratio.std() < 0.8


def test_crops_show_sowing_and_harvest_in_truth_ndvi(tmp_path: Path) -> None:
    cfg = SampleRegionConfig(
        scenes=default_scenes(1),
        size_px=24,
        field_size_px=5,
        s2_cadence_days=20,
        s1_cadence_days=90,
        s1b_until=None,
        truth_reflectance=True,
    )
    truth = np.load(write_sample_region(tmp_path / "year", cfg=cfg).scenes[0].truth_path)
    refl, lc, bands = truth["reflectance"], truth["landcover"], list(truth["bands"])
    ndvi = (refl[:, bands.index("B08")] - refl[:, bands.index("B04")]) / (
        refl[:, bands.index("B08")] + refl[:, bands.index("B04")]
    )  # [T, H, W]
    months = truth["dates"].astype("datetime64[M]").astype(int) % 12 + 1

    def mean(cls: str, month: int, year: int) -> float:
        t = (months == month) & (truth["dates"].astype("datetime64[Y]").astype(int) + 1970 == year)
        return float(ndvi[t][:, lc == CODE[cls]].mean())

    # Winter crop: green in May, harvested (bare) in August, re-sown and small in November.
    assert mean("winter_crop", 5, 2022) > 0.65 and mean("winter_crop", 8, 2021) < 0.3
    assert mean("winter_crop", 11, 2021) < mean("winter_crop", 5, 2022) - 0.3
    # Summer crop: green in August, bare from October (harvest) until after the late-April sowing.
    assert mean("summer_crop", 8, 2021) > 0.65
    assert mean("summer_crop", 11, 2021) < 0.3 and mean("summer_crop", 4, 2022) < 0.3
    # Forests: needleleaf stays green; broadleaf loses its leaves in winter.
    assert min(mean("needleleaf_forest", m, 2022) for m in (1, 2, 3)) > 0.6
    assert mean("broadleaf_forest", 7, 2021) - mean("broadleaf_forest", 1, 2022) > 0.25
    veg = truth["veg_state"]
    assert veg[:, lc == CODE["water"]].max() == 0.0
    assert veg.min() >= 0 and veg.max() <= 1


def test_external_vegetation_driver(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        SampleRegionConfig.tiny(), scenes=default_scenes(1), size_px=16, end=dt.date(2022, 1, 31)
    )
    name = cfg.scenes[0].name
    ramp = write_sample_region(
        tmp_path / "r", cfg=cfg, veg_drivers={name: lambda d: np.linspace(0, 1, d.size)}
    )
    truth = np.load(ramp.scenes[0].truth_path)
    natural = np.isin(
        truth["landcover"], [CODE[c] for c in ("needleleaf_forest", "broadleaf_forest", "grassland")]
    )
    state = truth["veg_state"][:, natural].mean(axis=1)  # [T]
    assert natural.any() and np.all(np.diff(state) > 0) and state[-1] - state[0] > 0.15
    assert read_region_manifest(ramp.root).cfg == cfg
    assert json.loads(ramp.manifest_path.read_text())["external_veg_drivers"] == [name]
    # A daily series (e.g. tower fAPAR) through series_driver: a dry-down halves the natural state.
    days = np.arange(np.datetime64("2021-12-01"), np.datetime64("2022-02-28"))
    fapar = np.where(days < np.datetime64("2022-01-10"), 0.9, 0.1)
    tower = write_sample_region(tmp_path / "t", cfg=cfg, veg_drivers={name: series_driver(days, fapar)})
    truth = np.load(tower.scenes[0].truth_path)
    state = truth["veg_state"][:, natural].mean(axis=1)
    before, after = (
        state[truth["dates"] < np.datetime64("2022-01-01")],
        state[truth["dates"] > np.datetime64("2022-01-12")],
    )
    assert before.min() > after.max() + 0.15
    short = series_driver(days[:20], fapar[:20])
    with pytest.raises(SampleRegionError, match=r"covers 2021-12-01\.\.2021-12-20"):
        short(np.array(["2022-01-05"], dtype="datetime64[D]"))
    with pytest.raises(SampleRegionError, match="returned shape"):
        write_sample_region(tmp_path / "bad", cfg=cfg, veg_drivers={name: lambda d: np.zeros(3)})
    with pytest.raises(SampleRegionError, match="unknown scene"):
        write_sample_region(tmp_path / "bad2", cfg=cfg, veg_drivers={"nowhere": lambda d: d})


def test_manifest_and_truth(region: SampleRegion) -> None:
    again = read_region_manifest(region.root)
    assert again == region
    assert read_region_manifest(region.manifest_path) == region
    classes = json.loads(region.classes_path.read_text())
    assert [c["code"] for c in classes] == [c.code for c in CLASSES]
    for scene, spec in zip(region.scenes, region.cfg.scenes, strict=True):
        lon0, lat0, lon1, lat1 = scene.bbox_lonlat
        assert lon0 < spec.lon < lon1 and lat0 < spec.lat < lat1
        with rasterio.open(scene.landcover_path) as src:
            assert src.crs.to_epsg() == scene.epsg
            assert tuple(src.transform)[:6] == scene.transform
            lc = src.read(1)
        assert set(np.unique(lc).tolist()) == {c.code for c in CLASSES}
        truth = np.load(scene.truth_path)
        assert np.array_equal(truth["landcover"], lc)
        assert truth["veg_state"].shape == (scene.n_s2, scene.size_px, scene.size_px)
        assert truth["soil_moisture"].shape == ((region.end - region.start).days + 1,)
        assert region.scene(scene.name) == scene
    with pytest.raises(KeyError, match="no scene"):
        region.scene("atlantis")


def test_config_round_trip_and_bad_input(tmp_path: Path) -> None:
    cfg = SampleRegionConfig()
    assert from_dict(SampleRegionConfig, to_dict(cfg)) == cfg
    assert {s.epsg for s in cfg.scenes} == {32632, 32633}
    assert cfg.start < dt.date(2022, 1, 25) < cfg.end
    with pytest.raises(ConfigError, match="size_px=33"):
        SampleRegionConfig(size_px=33)
    with pytest.raises(ConfigError, match="before start"):
        SampleRegionConfig(start=dt.date(2022, 1, 1), end=dt.date(2021, 1, 1))
    with pytest.raises(ConfigError, match="duplicate"):
        SampleRegionConfig(scenes=default_scenes(1) * 2)
    wrong_zone = SceneSpec(name="x", epsg=32633, lon=8.5, lat=47.1)
    with pytest.raises(SampleRegionError, match="use epsg=32632"):
        write_sample_region(
            tmp_path / "z", cfg=dataclasses.replace(SampleRegionConfig.tiny(), scenes=(wrong_zone,))
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SampleRegionError, match="not empty"):
        write_sample_region(tmp_path / "full", cfg=SampleRegionConfig.tiny())
    with pytest.raises(SampleRegionError, match=r"no region\.json"):
        read_region_manifest(tmp_path / "nothing")


def test_default_scenes_spread_over_zones() -> None:
    scenes = default_scenes(6)
    assert len(scenes) == len({s.name for s in scenes}) == 6
    assert len({s.epsg for s in scenes}) >= 4
    assert default_scenes(1) == SampleRegionConfig().scenes[:1]
    with pytest.raises(SampleRegionError, match="at least 1"):
        default_scenes(0)


def test_cli_writes_a_region(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = [str(out), "--size-px", "8", "--start", "2022-01-20", "--end", "2022-01-31", "--scenes", "3"]
    assert cli_main([*args, "--seed", "3", "--no-progress"]) == 0
    assert "3 scenes" in capsys.readouterr().out
    region = read_region_manifest(out)
    assert len(region.scenes) == 3 and region.cfg.seed == 3 and region.cfg.size_px == 8
    assert len({s.epsg for s in region.scenes}) == 3
    assert cli_main([str(out), "--no-progress"]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([str(tmp_path / "x"), "--start", "July"])
    # A YAML config as the starting point; options still override it.
    yaml_path = tmp_path / "region.yaml"
    yaml_path.write_text(
        "size_px: 8\nstart: 2022-01-20\nend: 2022-01-26\ns1b_until: null\n"
        "scenes:\n  - {name: valais, epsg: 32632, lon: 7.4, lat: 46.2}\n"
    )
    assert cli_main([str(tmp_path / "yaml"), "--config", str(yaml_path), "--seed", "5", "--no-progress"]) == 0
    from_yaml = read_region_manifest(tmp_path / "yaml")
    assert [s.name for s in from_yaml.scenes] == ["valais"] and from_yaml.cfg.seed == 5
    yaml_path.write_text("size_px: 8\nsize: 3\n")
    assert cli_main([str(tmp_path / "bad"), "--config", str(yaml_path)]) == 2
    assert "unknown key" in capsys.readouterr().err
