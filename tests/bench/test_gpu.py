"""bench/gpu.py: its logic on the CPU, its refusal without CUDA, and its light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu.py"

# Everything a bare GPU image may lack: the benchmark must not import any of it.
_HEAVY = ("zarr", "fsspec", "gcsfs", "s3fs", "ray", "odc", "pystac", "pystac_client", "rasterio",
          "planetary_computer", "sklearn", "matplotlib", "fastapi", "uvicorn", "tqdm", "scipy")  # fmt: skip

_DRIVER = """
import runpy, sys
for name in {heavy!r}:
    sys.modules[name] = None  # import of any of these fails
sys.argv = ["bench/gpu.py", *{argv!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as stop:
    raise SystemExit(stop.code)
"""


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = _DRIVER.format(heavy=_HEAVY, argv=argv, script=str(SCRIPT))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def test_without_cuda_it_says_so_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    proc = _run(["--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    assert not out.exists()


@pytest.mark.slow
def test_cpu_logic_run_writes_every_figure_with_light_imports_only(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--cpu", "--small", "--px", "20", "--cached-px", "6", "--naive-px", "2", "--naive-targets", "1",
            "--dates", "12", "--pixel-batch", "64", "--encoder-frames", "64", "--out", str(out)]  # fmt: skip
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    assert fig["device"] == "cpu"
    for path in ("naive", "cached", "dense"):
        assert fig[f"{path}_px_dates_s"] > 0
        assert fig[f"{path}_gpu_busy"] is None  # no profiler kernel time off CUDA
        assert fig[f"{path}_h2d_bytes_per_px_date"] == 0  # CPU tensors are views of the host arrays
        expect = fig[f"{path}_px_dates_s"] * 3600 / 73 * 1e-4
        assert fig[f"{path}_km2_yr_per_gpu_hour"] == pytest.approx(expect)
        assert fig[f"{path}_gpu_hours_europe_year"] == pytest.approx(10.18e6 / expect)
    assert fig["dense_targets"] == 2 and fig["naive_targets"] == 1 and fig["cached_tile_px"] == 6
    for path in ("cached", "dense"):  # bf16 fidelity against fp32, on the same tile
        assert 0 < fig[f"{path}_bf16_max_abs_diff"] < fig[f"{path}_fp32_mean_abs"]
        assert 0 < fig[f"{path}_frame_bf16_max_abs_diff"] < fig[f"{path}_fp32_mean_abs"]
        assert fig[f"{path}_precision"] in ("fp32", "bf16", "frame_bf16")
    assert fig["frame_encoder_tflops"] > 0 and fig["peak_fp32_tflops"] > 0
    assert "target_met: dense_px_dates_s >= 1,500,000" in fig
    assert "MET" in proc.stdout
    assert fig["complete"] is True and not [k for k in fig if k.endswith("_error")]


_SMALL = ["--cpu", "--small", "--px", "12", "--cached-px", "4", "--dates", "12", "--pixel-batch", "64",
          "--encoder-frames", "16"]  # fmt: skip


@pytest.mark.filterwarnings("ignore:.*without bfloat16 instructions:RuntimeWarning")  # --cpu on an AVX2 CPU
def test_a_failed_measurement_is_recorded_and_the_others_go_on(
    tmp_path: Path, load_bench: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedder.inference import Predictor

    out = tmp_path / "gpu.json"
    seen_partial: list[dict[str, Any]] = []
    embed_tile = Predictor.embed_tile

    def failing(self: Predictor, tile: Any, **kw: Any) -> Any:
        if self.bf16:  # the whole-model bf16 predictor "runs out of device memory"
            seen_partial.append(json.loads(out.read_text()))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nsecond line")
        return embed_tile(self, tile, **kw)

    monkeypatch.setattr(Predictor, "embed_tile", failing)
    code = load_bench("gpu").main([*_SMALL, "--paths", "cached,dense", "--out", str(out)])
    assert code == 1  # something failed: the exit code says so, the figures are written all the same
    fig = json.loads(out.read_text())
    for path in ("cached", "dense"):
        assert fig[f"{path}_bf16_error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
        assert fig[f"{path}_fp32_px_dates_s"] > 0 and fig[f"{path}_frame_bf16_px_dates_s"] > 0
        assert fig[f"{path}_precision"] in ("fp32", "frame_bf16") and fig[f"{path}_km2_yr_per_gpu_hour"] > 0
        assert f"{path}_frame_bf16_max_abs_diff" in fig and f"{path}_bf16_max_abs_diff" not in fig
    assert not [k for k in fig if k.startswith("naive")] and "dense_vs_naive" not in fig  # not chosen
    assert fig["frame_encoder_tflops"] > 0 and fig["complete"] is True
    assert fig["target_met: dense_px_dates_s >= 1,500,000"] is False
    # the JSON was on disk, marked incomplete, before the failures: a run cut short keeps what it measured
    assert seen_partial and all(p["complete"] is False for p in seen_partial)
    assert "cached_fp32_px_dates_s" in seen_partial[0] and "dense_fp32_px_dates_s" in seen_partial[-1]


def test_paths_and_precisions_are_checked(tmp_path: Path, load_bench: Callable[[str], ModuleType]) -> None:
    gpu = load_bench("gpu")
    for bad in (["--paths", "dense,fast"], ["--precisions", "fp16"], ["--paths", ""]):
        with pytest.raises(SystemExit) as stop:
            gpu.main([*_SMALL, *bad, "--out", str(tmp_path / "gpu.json")])
        assert stop.value.code == 2
    assert not (tmp_path / "gpu.json").exists()
