"""The evaluations' shared data: region and shards reused or rebuilt, the held-out split, batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.data.loader import ShardDataset
from embedder.evaluation.fidelity import FidelityConfig
from embedder.evaluation.region import (
    EvaluationDataError,
    batch_loader,
    heldout_split,
    prepare_region,
    prepare_shards,
    spread_indices,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_spread_indices_are_even_and_all_when_unlimited() -> None:
    assert spread_indices(5, None) == [0, 1, 2, 3, 4] == spread_indices(5, 9)
    assert spread_indices(101, 5) == [0, 25, 50, 75, 100]


def test_heldout_split_is_test_only_when_both_kinds_have_test_samples() -> None:
    assert heldout_split({"samples_test_fused": 4, "samples_test_s1only": 2}) == "test"
    assert heldout_split({"samples_test_fused": 4, "samples_test_s1only": 0}) == "val"


def test_region_and_shards_are_reused_rebuilt_and_batched(tmp_path: Path) -> None:
    cfg = FidelityConfig.tiny()
    region = prepare_region(tmp_path / "region", cfg)
    counts = prepare_shards(region, tmp_path / "shards", cfg)
    assert counts["cubes_train"] + counts["cubes_val"] + counts["cubes_test"] == cfg.cubes
    stamp = (tmp_path / "shards" / "fidelity-shards.json").stat().st_mtime_ns
    assert prepare_shards(region, tmp_path / "shards", cfg) == counts  # complete cubes are reused
    assert (tmp_path / "shards" / "fidelity-shards.json").stat().st_mtime_ns >= stamp
    with pytest.raises(EvaluationDataError, match="not 99"):
        prepare_shards(region, tmp_path / "more", FidelityConfig.tiny(cubes=99))
    train = ShardDataset(str(tmp_path / "shards"), split="train", kind="fused")
    shuffled = batch_loader(train, batch_size=1, seed=1, shuffle=True)
    ordered = [float(b["s2"].sum()) for b in batch_loader(train, batch_size=1, seed=1, shuffle=False)(0)]
    epoch0 = [float(b["s2"].sum()) for b in shuffled(0)]
    assert epoch0 == [float(b["s2"].sum()) for b in shuffled(0)]  # seeded by the epoch
    assert sorted(epoch0) == sorted(ordered) and len(ordered) == len(train)  # every sample once
