"""bench/gpu.py: its logic on the CPU, its refusal without CUDA, and its light imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
