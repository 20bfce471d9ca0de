"""bench/feed.py: per-core read and write rates over real units, and the CPU tasks a GPU actor needs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


def test_feed_measures_both_stages_and_sizes_a_gpu_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_bench: Callable[[str], ModuleType]
) -> None:
    feed = load_bench("feed")
    monkeypatch.setattr(feed, "GPU_RESULTS", tmp_path / "missing.json")
    out = tmp_path / "feed.json"
    assert feed.main(["--size-px", "64", "--tile-px", "32", "--units", "1", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["units"] == 1 and got["tile_px"] == 32 and got["px_dates"] > 0
    assert got["read_px_dates_per_core_s"] > 0 and got["write_px_dates_per_core_s"] > 0
    assert got["gpu_rates_source"].startswith("reference")
    for path in ("dense", "cached"):
        rate = got[f"gpu_{path}_px_dates_s"]
        assert got[f"read_tasks_per_gpu_{path}"] == pytest.approx(
            rate / got["read_px_dates_per_core_s"], rel=0.05
        )
        assert got[f"cpus_per_gpu_{path}"] >= got[f"read_tasks_per_gpu_{path}"]
    # a measured GPU replaces the reference rates
    (tmp_path / "gpu.json").write_text(
        json.dumps({"dense_px_dates_s": 1e6, "cached_px_dates_s": 1e5, "device": "H200"})
    )
    monkeypatch.setattr(feed, "GPU_RESULTS", tmp_path / "gpu.json")
    assert feed.gpu_rates() == ({"dense": 1e6, "cached": 1e5}, "bench/results/gpu.json (H200)")
