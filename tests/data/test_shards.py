import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from embedder.data.loader import ShardDataset
from embedder.data.patches import FUSED_KEYS, S1ONLY_KEYS
from embedder.data.shards import (
    SPLITS,
    ShardError,
    build_cube_shards,
    cli_main,
    is_complete,
    iter_shard_batches,
    list_cube_ids,
    read_shard,
    read_shard_attrs,
    shard_url,
    split_cube_ids,
    split_shard_urls,
    write_shard,
)
from embedder.data.testing import make_test_cube


def _samples(n: int, *, kind: str = "fused", seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key in FUSED_KEYS if kind == "fused" else S1ONLY_KEYS:
        if key in ("s2", "s1"):
            out[key] = rng.random((n, 11, 10 if key == "s2" else 2, 15, 15), dtype=np.float32)
        elif key.endswith("_mask"):
            out[key] = rng.random((n, 11, 10 if key == "s2_mask" else 2, 15, 15)) > 0.2
        elif key.endswith("_gaps"):
            out[key] = rng.integers(1, 20, (n, 10)).astype(np.float32)
        elif key == "centre_day":
            out[key] = rng.integers(17000, 20000, n).astype(np.int64)
        elif key in ("row", "col"):
            out[key] = rng.integers(7, 80, n).astype(np.int32)
        else:
            out[key] = rng.random(n, dtype=np.float32)
    return out


def _assert_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("scheme", ["path", "file", "memory"])
@pytest.mark.parametrize("kind", ["fused", "s1only"])
def test_round_trip_is_exact(tmp_path: Path, scheme: str, kind: str) -> None:
    root = {
        "path": str(tmp_path / "shards"),
        "file": f"file://{tmp_path}/shards",
        "memory": f"memory://{tmp_path.name}",
    }
    samples = _samples(7, kind=kind, seed=1)
    url = write_shard(
        samples, root[scheme], "c1", kind=kind, attrs={"scene": "sc", "start": "2021-01-01"}, chunk_samples=3
    )
    assert url == shard_url(root[scheme], "c1", kind=kind)
    assert url.endswith(
        "/s1only/c1.zarr" if kind == "s1only" else "/shards/c1.zarr" if scheme != "memory" else "/c1.zarr"
    )
    _assert_equal(read_shard(url), samples)
    attrs = read_shard_attrs(root[scheme], "c1", kind=kind)
    assert attrs is not None
    assert (
        attrs["complete"] is True
        and attrs["cube_id"] == "c1"
        and attrs["scene"] == "sc"
        and attrs["n_samples"] == 7
    )
    group = zarr.open_group(url.removeprefix("file://"), mode="r") if scheme != "memory" else None
    if group is not None:
        arr = group["s2" if kind == "fused" else "s1"]
        assert isinstance(arr, zarr.Array) and arr.chunks[0] == 3
        assert arr.compressors  # compressed


def test_round_trip_on_s3_emulator() -> None:
    from embedder.testing.objstore import moto_s3

    with moto_s3() as s3:
        samples = _samples(4, seed=2)
        url = write_shard(samples, s3.url, "cs3", storage_options=s3.storage_options)
        assert url.startswith("s3://")
        _assert_equal(read_shard(url, storage_options=s3.storage_options), samples)
        assert list_cube_ids(s3.url, storage_options=s3.storage_options) == ["cs3"]


def test_empty_shard_round_trips(tmp_path: Path) -> None:
    samples = {k: v[:0] for k, v in _samples(1).items()}
    write_shard(samples, str(tmp_path), "empty", attrs={"empty_reason": "no usable date"})
    assert is_complete(str(tmp_path), "empty")
    _assert_equal(read_shard(shard_url(str(tmp_path), "empty")), samples)


def test_half_written_shard_is_not_complete_and_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    write_shard(_samples(5, seed=1), root, "c1")
    assert is_complete(root, "c1") and list_cube_ids(root) == ["c1"]

    real = zarr.Group.create_array

    def crash_on_s1(self: zarr.Group, name: str, **kw: object) -> zarr.Array:
        if name == "s1":
            raise OSError("disk full (simulated)")
        return real(self, name, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(zarr.Group, "create_array", crash_on_s1)
    with pytest.raises(OSError, match="simulated"):
        write_shard(_samples(6, seed=2), root, "c1")
    monkeypatch.undo()
    # the old complete shard is gone and the half-written one does not look complete
    assert not is_complete(root, "c1")
    assert list_cube_ids(root) == [] and list_cube_ids(root, complete_only=False) == ["c1"]
    with pytest.raises(ShardError, match="incomplete"):
        read_shard(shard_url(root, "c1"))
    new = _samples(6, seed=3)
    write_shard(new, root, "c1")
    _assert_equal(read_shard(shard_url(root, "c1")), new)


def test_split_proportions_and_determinism() -> None:
    ids = [f"cube{i:03d}" for i in range(500)]
    deal = split_cube_ids(ids)
    counts = {s: sum(v == s for v in deal.values()) for s in SPLITS}
    assert counts == {"train": 375, "val": 83, "test": 42}
    assert set(deal) == set(ids)  # every cube in exactly one split
    assert split_cube_ids(list(reversed(ids))) == deal  # input order does not matter
    other = split_cube_ids(ids, seed=1)
    assert other != deal and sorted(other.values()) == sorted(deal.values())
    small = split_cube_ids([f"c{i}" for i in range(12)])
    assert [sum(v == s for v in small.values()) for s in SPLITS] == [9, 2, 1]
    assert split_cube_ids([]) == {}
    with pytest.raises(ShardError, match="proportions"):
        split_cube_ids(ids, proportions=(1, 2))


def test_dataset_splits_cover_all_samples(tmp_path: Path) -> None:
    root = str(tmp_path)
    written = {}
    for i in range(12):
        written[f"c{i:02d}"] = _samples(2 + i % 3, seed=i)
        write_shard(written[f"c{i:02d}"], root, f"c{i:02d}", chunk_samples=2)
    write_shard(_samples(3, kind="s1only"), root, "c00", kind="s1only")
    deal = split_cube_ids(list(written))
    seen: set[str] = set()
    for split in SPLITS:
        ds = ShardDataset(root, split=split)
        assert set(ds.cube_ids) == {c for c, s in deal.items() if s == split}
        assert not seen & set(ds.cube_ids)
        seen |= set(ds.cube_ids)
        assert len(ds) == sum(len(written[c]["s2"]) for c in ds.cube_ids)
        expect = {k: np.concatenate([written[c][k] for c in ds.cube_ids]) for k in FUSED_KEYS}
        for i in [*range(len(ds)), -1]:
            item = ds[i]
            for k in FUSED_KEYS:
                assert isinstance(item[k], torch.Tensor)
                np.testing.assert_array_equal(item[k].numpy(), expect[k][i], err_msg=k)
        with pytest.raises(IndexError):
            ds[len(ds)]
    assert seen == set(written)
    train = ShardDataset(root, split="train")
    clone = pickle.loads(pickle.dumps(train))
    batch = next(iter(torch.utils.data.DataLoader(clone, batch_size=4)))
    assert batch["s2"].shape == (4, 11, 10, 15, 15) and batch["s2_mask"].dtype == torch.bool
    s1 = ShardDataset(root, split=deal["c00"], kind="s1only")
    assert s1.cube_ids == ["c00"] and len(s1) == 3 and set(s1[0]) == set(S1ONLY_KEYS)
    with pytest.raises(ShardError, match="unknown split 'validation'"):
        ShardDataset(root, split="validation")
    with pytest.raises(ShardError, match="unknown shard kind 's2only'"):
        ShardDataset(root, split="train", kind="s2only")
    with pytest.raises(ShardError, match=r"no shard root at .*nope"):
        ShardDataset(f"{root}/nope", split="train")


def test_iter_shard_batches(tmp_path: Path) -> None:
    samples = _samples(10, seed=4)
    url = write_shard(samples, str(tmp_path), "c1", chunk_samples=4)
    chunks = list(iter_shard_batches(url))
    assert [len(c["s2"]) for c in chunks] == [4, 4, 2]
    batches = list(iter_shard_batches(url, batch_size=3))
    assert [len(b["row"]) for b in batches] == [3, 1, 3, 1, 2]
    _assert_equal({k: np.concatenate([b[k] for b in batches]) for k in samples}, samples)
    with pytest.raises(ShardError, match="no complete shard"):
        list(iter_shard_batches(shard_url(str(tmp_path), "nope")))


def test_build_cube_shards_from_cube_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "root")
    cube = make_test_cube(0, size_px=24, n_dates=24, n_s1=45)
    stats = build_cube_shards(
        cube, root, "cubeA", attrs={"scene": "s", "start": "2021-01-01", "end": "2021-12-31"}
    )
    stats_b = build_cube_shards(cube, root, "cubeB")
    assert stats["fused"].kept > 0 and stats["s1only"].kept > 0
    a = read_shard(shard_url(root, "cubeA"))
    b = read_shard(shard_url(root, "cubeB"))
    assert not np.array_equal(a["s2_gaps"], b["s2_gaps"]), "each cube id seeds its own draws"
    attrs = read_shard_attrs(root, "cubeA")
    assert (
        attrs is not None and attrs["crs"] == "EPSG:32632" and attrs["stats"]["kept"] == stats["fused"].kept
    )
    assert attrs["patch_config"]["window_dates"] == 20 and attrs["end"] == "2021-12-31"
    assert split_shard_urls(root, split="train") == [shard_url(root, "cubeA"), shard_url(root, "cubeB")]

    assert cli_main(["inspect", root, "--per-cube"]) == 0
    out = capsys.readouterr().out
    assert (
        "2 complete cube(s)" in out
        and f"train 2 cubes / {stats['fused'].kept + stats_b['fused'].kept} samples" in out
    )
    assert "cubeA  train" in out
    assert cli_main(["inspect", root, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["kinds"]["s1only"]["splits"]["train"]["samples"]
        == stats["s1only"].kept + stats_b["s1only"].kept
    )


def test_plan_cubes_tiles_scenes() -> None:
    from embedder.config import BuildShardsConfig, ConfigError, load_config
    from embedder.data.shards import CubeTask, plan_cubes

    base = {
        "catalog": "c.json",
        "shard_root": "r",
        "start": "2021-01-01",
        "end": "2021-12-31",
        "cube_size_px": 90,
    }
    cfg = load_config(
        BuildShardsConfig,
        {**base, "cubes": [
            {"name": "big", "epsg": 32632, "bounds": [0, 0, 1900, 950]},  # 2 x 1 cubes of 900 m, remainder dropped
            {"name": "small", "epsg": 32633, "bounds": [100, 100, 420, 420]},  # smaller than a cube: whole
        ]},
    )  # fmt: skip
    tasks = plan_cubes(cfg)
    assert tasks == [
        CubeTask("big_y00_x00_20210101_20211231", "big", 32632, (0.0, 50.0, 900.0, 950.0)),
        CubeTask("big_y00_x01_20210101_20211231", "big", 32632, (900.0, 50.0, 1800.0, 950.0)),
        CubeTask("small_y00_x00_20210101_20211231", "small", 32633, (100.0, 100.0, 420.0, 420.0)),
    ]
    assert len(plan_cubes(load_config(BuildShardsConfig, {**base, "cubes": cfg.cubes, "max_cubes": 1}))) == 1
    with pytest.raises(ConfigError, match="region_manifest"):
        load_config(BuildShardsConfig, base)
    with pytest.raises(ShardError, match="empty bounds"):
        plan_cubes(
            load_config(
                BuildShardsConfig, {**base, "cubes": [{"name": "x", "epsg": 1, "bounds": [5, 0, 5, 9]}]}
            )
        )


def test_chunk_shuffle_sampler_decodes_each_chunk_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedder.data.loader import ChunkShuffleSampler

    root = str(tmp_path)
    sizes = {"c0": 7, "c1": 5, "c2": 9, "c3": 2}
    for i, (cube, n) in enumerate(sizes.items()):
        write_shard(_samples(n, seed=i), root, cube, chunk_samples=3)
    ds = ShardDataset(root, split="train", cache_chunks=2)
    n_total, n_chunks = len(ds), sum(-(-sizes[c] // 3) for c in ds.cube_ids)
    assert len(ds.cube_ids) == 3 and n_total == sum(sizes[c] for c in ds.cube_ids)
    assert len(ds.chunk_ranges()) == n_chunks
    sampler = ChunkShuffleSampler(ds, seed=5, interleave_chunks=2)
    order = list(sampler)
    assert sorted(order) == list(range(n_total)) and order != list(range(n_total))
    assert list(sampler) == order  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != order

    reads = []
    real = ShardDataset._chunk

    def counting(self: ShardDataset, shard: int, chunk: int) -> dict[str, np.ndarray]:
        if (shard, chunk) not in self._cache:
            reads.append((shard, chunk))
        return real(self, shard, chunk)

    monkeypatch.setattr(ShardDataset, "_chunk", counting)
    batch = [ds[i] for i in sampler]
    assert len(batch) == n_total and len(reads) == n_chunks == len(set(reads))  # each chunk decoded once

    # data parallel: equal lengths, together every index
    ranks = [list(ChunkShuffleSampler(ds, seed=5, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(r) for r in ranks] == [-(-n_total // 3)] * 3
    assert set().union(*map(set, ranks)) == set(range(n_total))
    assert list(ChunkShuffleSampler(ds, shuffle=False)) == list(range(n_total))
    # more ranks than chunks (a small validation split under DDP): no rank is left empty, or the
    # ranks' metric all-reduces would not line up
    many = n_chunks + 2
    ranks = [list(ChunkShuffleSampler(ds, shuffle=False, num_replicas=many, rank=r)) for r in range(many)]
    assert [len(r) for r in ranks] == [-(-n_total // many)] * many  # the empty ranks too
    with pytest.raises(ShardError, match="rank 3"):
        ChunkShuffleSampler(ds, num_replicas=3, rank=3)
