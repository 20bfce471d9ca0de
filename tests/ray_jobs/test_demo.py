"""The main job end to end: `python -m ray_jobs.demo --smallest` (issue 8), then every printed command."""

import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from embedder.secrets_scan import scan_paths, scan_store_attrs, scan_text

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

REPO = Path(__file__).resolve().parents[2]


def _demo(out: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "ray_jobs.demo", "--smallest", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _printed_commands(stdout: str) -> list[list[str]]:
    lines = stdout.split("Query and serve the store:")[1].strip().splitlines()
    return [shlex.split(line.strip()) for line in lines if line.strip().startswith(sys.executable)]


@pytest.mark.timeout(1800)  # the whole product twice (first run and resume) on 2 cores
def test_demo_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    stdout = _demo(out)
    assert "== summary" in stdout
    for stage in (
        "sample region",
        "training shards",
        "stage 1 s1",
        "stage 1 s2",
        "stage 2 fusion",
        "embed region",
        "GPP at flux towers",
    ):
        assert f"== {stage}" in stdout
    store = out / "store.zarr"
    assert store.is_dir()
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == 3 and all(f.stat().st_size > 1000 for f in figures)
    report = (out / "report" / "report.md").read_text()
    assert "probe" in report.lower() and list((out / "report").rglob("*.png"))
    # the training table holds each stage's floors beside its centre MAE, the summary its verdict
    assert "val floor: frame mean" in report and "val floor: PCA-k" in report and "accuracy_bands" in report
    assert stdout.count("vs frame-mean floor") == 3
    # the GPP section: the tower run's table under the NDVI gate's verdict, and its figures
    assert "GPP at flux towers: `gpp`" in report and "discriminate" in report  # the verdict, either way
    assert list((out / "report" / "figures").glob("gpp-gpp_gpp-embedding-temporal-*.png"))
    # the stages fine-tuned the committed weights, and the store records which
    import json

    attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    weights = json.loads((REPO / "weights" / "weights.json").read_text())
    assert attrs["embedder:params"]["pretrained"] == weights["files"]["fusion"]["sha256"]

    commands = _printed_commands(stdout)
    assert {c[3] for c in commands} == {"probe", "verify", "serve"}
    for cmd in commands:
        if cmd[3] == "serve":
            with subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            ) as server:
                try:
                    port = cmd[cmd.index("--port") + 1]
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                                assert resp.status == 200
                                break
                        except OSError:
                            assert time.monotonic() < deadline, "the printed serve command did not answer"
                            time.sleep(0.5)
                finally:
                    server.terminate()
            continue
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]} {done.stderr[-2000:]}"

    # nothing secret in what the demo wrote or printed (issue 7)
    logs = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".log", ".jsonl")]
    assert not scan_paths(logs)
    assert not scan_text(stdout, source="demo stdout")
    assert not scan_store_attrs(str(store))

    # a second run reuses every stage
    again = _demo(out)
    assert again.count("reused") >= 7, again[-3000:]
