"""docs/operations.md stays in step with the files and commands it tells operators to use."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "operations.md").read_text()


def test_every_repo_path_in_the_runbook_exists() -> None:
    paths = set(re.findall(r"`((?:infra|ray_jobs|embedder|docs)/[A-Za-z0-9_./-]+)`", DOC))
    paths |= set(re.findall(r"-f (infra/k8s/[A-Za-z0-9_.-]+\.yaml)", DOC))
    paths |= {"cluster.yaml"}
    # Job configs are written by the job modules' owners; everything else must exist now.
    missing = [p for p in sorted(paths) if not (REPO / p.rstrip("/")).exists() and "configs/" not in p]
    assert paths and missing == []


def test_runbook_submits_exactly_the_rayjob_entrypoints() -> None:
    doc_cmds = {" ".join(m.split()) for m in re.findall(r"-- \\\n\s+(python -m ray_jobs\.[^\n]+)", DOC)}
    manifest_cmds = set()
    for path in (REPO / "infra" / "k8s").glob("rayjob-*.yaml"):
        entry = yaml.safe_load(path.read_text())["spec"]["entrypoint"]
        manifest_cmds.add(entry.split(" && ", 1)[1])
        assert f"-f {path.relative_to(REPO)}" in DOC, f"{path.name} is not applied in the runbook"
    assert doc_cmds == manifest_cmds


def test_runbook_covers_the_whole_lifecycle() -> None:
    headings = re.findall(r"^## (.+)$", DOC, flags=re.MULTILINE)
    for needle in (
        "cost",
        "infrastructure",
        "images",
        "launcher",
        "KubeRay",
        "jobs",
        "progress",
        "preemption",
        "Publish",
        "Tear down",
    ):
        assert any(needle.lower() in h.lower() for h in headings), needle
    # The cost estimate comes before anything is created.
    assert DOC.index("embedder plan") < DOC.index("terraform apply")
