"""bench/memory.py: the fast path's peak memory on a tile larger than its cache bound."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_memory_bench_embeds_in_strips_within_the_bound(
    tmp_path: Path, load_bench: Callable[[str], ModuleType]
) -> None:
    out = tmp_path / "memory.json"
    # the paper model's 88 KiB a pixel: 24 px rows take ~2.1 MiB, so a 17 MiB bound holds 8 of them
    assert load_bench("memory").main(["--px", "24", "--cache-mb", "17", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["cache_bytes_per_px"] == 2 * 11 * 256 * 4 * 4 and res["cache_bound_mb"] == 17
    assert res["tile24_strip_rows"] == 8 and res["tile24_strips"] == 3 and res["tile24_targets"] == 1
    assert res["tile24_strip_cache_mb"] <= 17 < res["tile24_whole_tile_cache_mb"]
    assert res["tile24_peak_growth_mb"] > 0 and res["tile24_px_dates_s"] > 0
