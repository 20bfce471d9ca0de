"""infra/build_push.sh: dry-run builds both images with the tags cluster.yaml and infra/k8s use."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "build_push.sh"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("PROJECT_ID", "REGION", "REPOSITORY")}
    full_env.update(env)
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=30
    )


def test_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_builds_and_pushes_the_configured_images() -> None:
    proc = run("--dry-run", PROJECT_ID="your-gcp-project")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    builds = [ln for ln in lines if ln.startswith("docker build")]
    pushes = {ln.split()[-1] for ln in lines if ln.startswith("docker push")}
    assert len(builds) == 2
    assert any("-f " + str(REPO / "infra" / "Dockerfile") + " " in b for b in builds)
    assert any("-f " + str(REPO / "infra" / "Dockerfile.cpu") + " " in b for b in builds)
    registry = "europe-west4-docker.pkg.dev/your-gcp-project/embedder/embedder"
    # The images cluster.yaml and the KubeRay manifests run are exactly the ones pushed.
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    used = {
        cluster["docker"]["image"],
        cluster["available_node_types"]["gpu_worker"]["docker"]["worker_image"],
    }
    for path in (REPO / "infra" / "k8s").glob("*.yaml"):
        used |= {ln.split("image:", 1)[1].strip() for ln in path.read_text().splitlines() if " image: " in ln}
    assert used == {f"{registry}:{VERSION}-gpu", f"{registry}:{VERSION}-cpu"}
    assert used <= pushes
    assert lines[0].startswith("gcloud auth configure-docker europe-west4-docker.pkg.dev")


def test_no_push_and_region_override() -> None:
    proc = run("--dry-run", "--no-push", PROJECT_ID="p1", REGION="us-central1")
    assert proc.returncode == 0, proc.stderr
    assert "docker push" not in proc.stdout and "gcloud" not in proc.stdout
    assert f"us-central1-docker.pkg.dev/p1/embedder/embedder:{VERSION}-gpu" in proc.stdout


def test_missing_project_and_bad_option_are_explained() -> None:
    proc = run("--dry-run")
    assert proc.returncode == 2 and "set PROJECT_ID" in proc.stderr
    proc = run("--bogus", PROJECT_ID="p")
    assert proc.returncode == 2 and "'--bogus'" in proc.stderr
