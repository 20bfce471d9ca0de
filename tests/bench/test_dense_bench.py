"""bench/dense.py (named apart from tests/models/test_dense.py): the per-core layout, processes of one torch
thread embedding the tile together."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest


def test_per_core_pool_embeds_the_tile_in_each_process_like_the_one_process_predictor(
    load_bench: Callable[[str], ModuleType],
) -> None:
    dense = load_bench("dense")
    px, dates = 4, 12
    tile = dense._tile(px, dates)
    ref = dense.Predictor(dense._model("dense")).embed_tile(tile, method="fast")
    with dense.PerCorePool(2, px, dates) as pool:
        procs = list(pool.procs)
        for _ in range(2):  # the workers serve round after round
            seconds, out = pool.run()
            assert seconds > 0
            assert out.shape == ref.shape == (len(tile.plan.targets), 7, px, px)
            np.testing.assert_allclose(out, ref, atol=1e-5)  # one thread vs this process's: rounding only
        workdir = pool.dir
    assert [p.returncode for p in procs] == [0, 0]  # closing stdin ended each worker
    assert not workdir.exists()


def test_per_core_pool_reports_a_worker_that_dies(load_bench: Callable[[str], ModuleType]) -> None:
    dense = load_bench("dense")
    with pytest.raises(RuntimeError, match="per-core worker exited"):
        dense.PerCorePool(2, -20, 12)  # a tile of negative size: each worker fails before "ready"
