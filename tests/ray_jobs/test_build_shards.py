import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from embedder.data.loader import ShardDataset
from embedder.data.shards import SPLITS, is_complete, list_cube_ids, read_shard_attrs, split_cube_ids
from ray_jobs.build_shards import _smoke_region, main, shard_dataset

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke sample region (two 32 px scenes, four months, S2 every 5 days)."""
    manifest = tmp_path_factory.mktemp("region") / "region.json"
    _smoke_region(str(manifest))
    return manifest


@pytest.fixture(scope="module")
def ray_session() -> object:
    import ray

    ray.init(
        num_cpus=2,
        runtime_env={
            "env_vars": {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "RAY_USAGE_STATS_ENABLED": "0"}
        },
        include_dashboard=False,
    )
    yield ray
    ray.shutdown()


def _config(path: Path, region: Path, root: Path, *, with_bad_cube: bool) -> str:
    doc = {
        "catalog": str(region.parent / "catalog.json"),
        "region_manifest": str(region),
        "shard_root": str(root),
        "start": "2021-12-16",
        "end": "2022-04-15",
        "cube_size_px": 32,
        "chunk_samples": 16,
        "patches": {"window_dates": 11, "temporal_stride": 1, "spatial_stride_px": 3,
                    "s1only_window_acquisitions": 11, "s1only_temporal_stride": 5},
        # outside the catalog's coverage: fails with EmptySearchError while the scenes complete
        "cubes": [{"name": "nowhere", "epsg": 32631, "bounds": [300000, 5000000, 300320, 5000320]}]
        if with_bad_cube else [],
    }  # fmt: skip
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_build_resume_and_failures(
    region: Path, ray_session: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "shards"
    cfg = _config(tmp_path / "cfg.yaml", region, root, with_bad_cube=True)
    assert main(["--config", cfg]) == 1
    out = capsys.readouterr().out
    assert "3 cube(s) planned, 0 already complete, 3 to build" in out
    assert "[3/3]" in out and "failed EmptySearchError" in out

    failures = json.loads((root / "failures.json").read_text())["failures"]
    assert [f["cube_id"] for f in failures] == ["nowhere_y00_x00_20211216_20220415"]
    assert failures[0]["error"] == "EmptySearchError" and "no sentinel-2-l2a items" in failures[0]["reason"]
    good = ["alps_north_y00_x00_20211216_20220415", "ljubljana_basin_y00_x00_20211216_20220415"]
    assert list_cube_ids(str(root)) == good
    for cube_id in good:
        for kind in ("fused", "s1only"):
            assert is_complete(str(root), cube_id, kind=kind)
    attrs = read_shard_attrs(str(root), good[0])
    assert attrs is not None
    assert attrs["scene"] == "alps_north" and attrs["start"] == "2021-12-16" and attrs["end"] == "2022-04-15"
    assert attrs["crs"] == "EPSG:32632" and attrs["n_samples"] > 0
    created = {c: read_shard_attrs(str(root), c)["created"] for c in good}  # type: ignore[index]

    # every sample is readable through the torch Dataset, and the splits partition the cubes
    deal = split_cube_ids(good)
    total = 0
    for split in SPLITS:
        ds = ShardDataset(str(root), split=split)
        assert sorted(ds.cube_ids) == sorted(c for c, s in deal.items() if s == split)
        total += len(ds)
        for i in range(len(ds)):
            item = ds[i]
            assert item["s2"].shape == (11, 10, 15, 15) and bool(item["s2"].isfinite().all())
            assert bool(item["s2_mask"][5, :, 7, 7].any()), "centre pixel of the centre date must be valid"
            assert float(item["s2_gaps"].sum()) < 200
    assert total == sum(read_shard_attrs(str(root), c)["n_samples"] for c in good)  # type: ignore[index]

    # Ray Data reads the same samples
    rows = shard_dataset(str(root), split="train", kind="s1only").take_all()
    assert len(rows) == len(ShardDataset(str(root), split="train", kind="s1only"))
    assert np.asarray(rows[0]["s1"]).shape == (11, 2, 15, 15)

    # re-run: complete cubes are skipped (not rewritten), the failed one is retried
    assert main(["--config", cfg]) == 1
    out = capsys.readouterr().out
    assert "3 cube(s) planned, 2 already complete, 1 to build" in out
    assert {c: read_shard_attrs(str(root), c)["created"] for c in good} == created  # type: ignore[index]

    # without the bad cube the run is clean and failures.json is emptied
    cfg_ok = _config(tmp_path / "cfg_ok.yaml", region, root, with_bad_cube=False)
    assert main(["--config", cfg_ok]) == 0
    assert "2 cube(s) planned, 2 already complete, 0 to build" in capsys.readouterr().out
    assert json.loads((root / "failures.json").read_text())["failures"] == []
    assert json.loads((root / "build_shards.json").read_text())["patches"]["spatial_stride_px"] == 3


def test_incomplete_cube_is_rebuilt_and_smoke_dry_run(
    region: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedder.data.patches import empty_samples
    from embedder.data.shards import shard_url, write_shard

    root = tmp_path / "shards"
    write_shard(empty_samples("fused"), str(root), "alps_north_y00_x00_20211216_20220415")
    args = ["--smoke", "--dry-run", "--catalog", str(region.parent / "catalog.json"),
            "--region-manifest", str(region), "--shard-root", str(root)]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    # the smoke config builds both kinds: a cube with only its fused shard is still to build
    assert "alps_north_y00_x00_20211216_20220415  EPSG:32632" in out and "complete" not in out
    assert out.count("to build") == 2
    write_shard(empty_samples("s1only"), str(root), "alps_north_y00_x00_20211216_20220415", kind="s1only")
    assert main(args) == 0
    out = capsys.readouterr().out
    from embedder.sample import read_region_manifest

    bounds = tuple(float(v) for v in read_region_manifest(region.parent).scene("alps_north").bounds_utm)
    assert f"alps_north_y00_x00_20211216_20220415  EPSG:32632  {bounds}  complete" in out
    assert os.path.isdir(shard_url(str(root), "alps_north_y00_x00_20211216_20220415"))
