"""bench/load.py's request count: work units read through a local STAC API, as the embedding job reads them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType

import pytest

from embedder.config import SampleRegionConfig
from embedder.inference import temporal_halo_days
from embedder.sample import SampleRegion, write_sample_region


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> SampleRegion:
    tiny = SampleRegionConfig.tiny()
    cfg = dataclasses.replace(tiny, scenes=tiny.scenes[:1])
    return write_sample_region(tmp_path_factory.mktemp("load") / "region", cfg=cfg)


def test_stac_requests_per_unit_sorted_api_is_a_landing_page_plus_two_searches(
    region: SampleRegion, load_bench: Callable[[str], ModuleType]
) -> None:
    fig = load_bench("load").stac_requests_per_unit(region, tile_px=16, max_units=3)
    n = fig["units"]
    assert n == 3 and sum(fig["statuses"].values()) == n
    assert fig["unit_read_days"] == 366 + 2 * temporal_halo_days()
    # one landing page for the process (cached catalog), one S2 and one S1 search per unit
    assert fig["requests"] == {"landing": 1, "search": 2 * n}
    assert fig["stac_requests_per_unit"] == round((1 + 2 * n) / n, 2) <= 4


def test_stac_requests_per_unit_without_sort_is_one_search_per_month(
    region: SampleRegion, load_bench: Callable[[str], ModuleType]
) -> None:
    fig = load_bench("load").stac_requests_per_unit(region, sort=False, tile_px=32, max_units=1)
    # S2 over ~430 days and S1 over that +- 36 days: one search per calendar month each
    assert fig["requests"]["landing"] == 1
    assert fig["requests"]["search"] >= 2 * 14
    assert fig["stac_requests_per_unit"] > 20
