"""infra/k8s manifests: valid against our KubeRay/core schema subset, and wired consistently.

Offline: the schema is tests/infra/kuberay_models.py (pydantic, written from KubeRay's ray.io/v1 Go
types); no API server or CRD download. Cross-checks: Ray version and images match the project,
worker groups autoscale from zero, the GPU group asks for a GPU, every pod uses the workload-identity
service account, every job entry point is one of the project's Ray jobs and targets the cluster.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from kuberay_models import RayCluster, RayJob, ServiceAccount, validate_manifest

from embedder.secrets_scan import scan_text

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
RAY_VERSION = next(d.split("==")[1] for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
REGISTRY = "europe-west4-docker.pkg.dev/your-gcp-project/embedder/embedder"

EXPECTED_ENTRYPOINTS = {
    "python -m ray_jobs.build_shards --config ray_jobs/configs/build_shards.yaml",
    "python -m ray_jobs.train_modality --sensor s1 --config ray_jobs/configs/train_modality_s1.yaml",
    "python -m ray_jobs.train_modality --sensor s2 --config ray_jobs/configs/train_modality_s2.yaml",
    "python -m ray_jobs.train_fusion --config ray_jobs/configs/train_fusion.yaml",
    "python -m ray_jobs.embed --config ray_jobs/configs/embed.yaml",
}


def load_all() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, doc) for p in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text()) if doc]


def by_kind(kind: str) -> list[Any]:
    return [validate_manifest(doc) for _, doc in load_all() if doc["kind"] == kind]


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_validates(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate_manifest(doc)
    assert scan_text(path.read_text(), source=str(path)) == []


def test_raycluster_autoscales_cpu_and_gpu_from_zero() -> None:
    (cluster,) = by_kind("RayCluster")
    assert isinstance(cluster, RayCluster)
    spec = cluster.spec
    assert spec.rayVersion == RAY_VERSION
    assert spec.enableInTreeAutoscaling is True
    assert spec.autoscalerOptions is not None and spec.autoscalerOptions.idleTimeoutSeconds
    assert spec.headGroupSpec.rayStartParams["num-cpus"] == "0"
    groups = {g.groupName: g for g in spec.workerGroupSpecs or []}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert g.minReplicas == 0 and g.maxReplicas > 0
    gpu = groups["gpu-workers"].template.spec.containers[0]
    assert gpu.resources is not None and gpu.resources.limits is not None
    assert gpu.resources.limits["nvidia.com/gpu"] == 1
    assert gpu.image == f"{REGISTRY}:{VERSION}-gpu"
    cpu = groups["cpu-workers"].template.spec.containers[0]
    assert cpu.resources is not None and "nvidia.com/gpu" not in (cpu.resources.limits or {})
    assert cpu.image == f"{REGISTRY}:{VERSION}-cpu"
    assert spec.headGroupSpec.template.spec.containers[0].image == f"{REGISTRY}:{VERSION}-cpu"
    pools = {name: g.template.spec.nodeSelector for name, g in groups.items()}
    assert pools == {"cpu-workers": {"embedder/pool": "cpu"}, "gpu-workers": {"embedder/pool": "gpu"}}
    assert spec.headGroupSpec.template.spec.nodeSelector == {"embedder/pool": "system"}


def test_rayjobs_cover_training_stages_and_embedding_on_the_cluster() -> None:
    (cluster,) = by_kind("RayCluster")
    jobs = by_kind("RayJob")
    assert all(isinstance(j, RayJob) for j in jobs)
    entrypoints = {j.spec.entrypoint.split(" && ", 1)[1] for j in jobs}
    assert entrypoints == EXPECTED_ENTRYPOINTS
    for job in jobs:
        assert job.spec.clusterSelector == {"ray.io/cluster": cluster.metadata.name}
        assert job.metadata.namespace == cluster.metadata.namespace
        assert job.spec.entrypoint.startswith("cd /home/ray/embedder && ")


def test_every_pod_uses_workload_identity_and_no_inline_credentials() -> None:
    (sa,) = by_kind("ServiceAccount")
    assert isinstance(sa, ServiceAccount)
    annotations = sa.metadata.annotations or {}
    assert annotations["iam.gke.io/gcp-service-account"] == (
        "embedder-runtime@your-gcp-project.iam.gserviceaccount.com"
    )
    (cluster,) = by_kind("RayCluster")
    # Ray token auth is the operator's: it generates the token Secret and injects it everywhere.
    assert cluster.spec.authOptions is not None and cluster.spec.authOptions.mode == "token"
    templates = [cluster.spec.headGroupSpec.template] + [
        g.template for g in cluster.spec.workerGroupSpecs or []
    ]
    templates += [j.spec.submitterPodTemplate for j in by_kind("RayJob") if j.spec.submitterPodTemplate]
    for t in templates:
        assert t.spec.serviceAccountName == sa.metadata.name
        for c in t.spec.containers:
            for e in c.env or []:
                if re.search(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", e.name):
                    assert e.value is None, f"{c.name}: {e.name} is inline; use valueFrom a Secret"


CPU_WORKER_CONTAINER = ["spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0]


def _mutate(doc: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["spec", "workerGroupSpecs", 1, "rayStartParams"], {"num-gpus": 1}),  # must be strings
        (["spec", "workerGroupSpecs", 0, "minReplicas"], 99),  # min > max
        (["spec", "headGroupSpec", "template", "spec", "containers"], []),
        (["spec", "headGroupSpec", "serviceType"], "Public"),
        (["spec", "autoscalerOptions", "upscalingMod"], "Default"),  # typo'd key
        (["apiVersion"], "ray.io/v1alpha1"),
        ([*CPU_WORKER_CONTAINER, "resources", "limits", "cpu"], "lots"),  # not a quantity
    ],
)
def test_schema_rejects_broken_raycluster(path: list[Any], value: Any) -> None:
    doc = yaml.safe_load((K8S / "raycluster.yaml").read_text())
    validate_manifest(doc)
    with pytest.raises(pydantic.ValidationError):
        validate_manifest(_mutate(doc, path, value))


def test_schema_rejects_broken_rayjob() -> None:
    doc = yaml.safe_load((K8S / "rayjob-embed.yaml").read_text())
    validate_manifest(doc)
    cluster_spec = yaml.safe_load((K8S / "raycluster.yaml").read_text())["spec"]
    both = _mutate(doc, ["spec", "rayClusterSpec"], cluster_spec)  # selector and spec at once
    without_selector = copy.deepcopy(both)
    del without_selector["spec"]["clusterSelector"]
    validate_manifest(without_selector)  # a job with its own cluster is valid
    for broken in (
        both,
        _mutate(doc, ["spec", "entrypoint"], ""),
        _mutate(doc, ["spec", "submissionMode"], "SSHMode"),
        _mutate(
            doc, ["spec", "submitterPodTemplate"], {**cluster_spec["headGroupSpec"]["template"]}
        ),  # restarts
    ):
        with pytest.raises(pydantic.ValidationError):
            validate_manifest(broken)
    with pytest.raises(ValueError, match="no schema"):
        validate_manifest({"kind": "Deployment"})
