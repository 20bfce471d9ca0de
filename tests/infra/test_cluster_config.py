"""cluster.yaml passes Ray's own cluster-config preparation and validation, offline.

``prepare_config`` merges the GCP defaults shipped in the ray package and ``validate_config`` checks
the result against ray/autoscaler/ray-schema.json; neither contacts Google Cloud (the cloud calls are
in ``bootstrap_gcp``, which ``ray up`` runs later and which is not called here). Sockets are blocked
during the test to prove it.
"""

from __future__ import annotations

import copy
import socket
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from embedder.secrets_scan import scan_text

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def raw() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def prepared(cfg: dict[str, Any]) -> dict[str, Any]:
    out = prepare_config(copy.deepcopy(cfg))
    validate_config(out)
    return out


def test_ray_validates_the_cluster_config_offline(no_network: None, raw: dict[str, Any]) -> None:
    cfg = prepared(raw)
    assert cfg["provider"]["type"] == "gcp"
    assert cfg["head_node_type"] == "head"
    assert set(cfg["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["docker"].update(unknown_option=True),
        lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"),
        lambda c: c["available_node_types"]["cpu_worker"]["resources"].update(CPU=-1),
        lambda c: c.update(max_workers="many"),
        lambda c: c.update(head_node_type="nope"),
    ],
)
def test_ray_validation_rejects_broken_variants(no_network: None, raw: dict[str, Any], breakage: Any) -> None:
    broken = copy.deepcopy(raw)
    breakage(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError, KeyError)):
        prepared(broken)


def test_workers_autoscale_from_zero_on_spot(raw: dict[str, Any]) -> None:
    types = prepared(raw)["available_node_types"]
    for name in ("cpu_worker", "gpu_worker"):
        node = types[name]
        assert node["min_workers"] == 0 and node["max_workers"] > 0, name
        assert "machineType" in node["node_config"], name  # a Compute Engine VM, not a TPU
        sched = node["node_config"]["scheduling"]
        assert sched["provisioningModel"] == "SPOT" and sched["onHostMaintenance"] == "TERMINATE", name
    # One anchored scheduling block: switching spot <-> on-demand is a single edit.
    assert (
        types["cpu_worker"]["node_config"]["scheduling"] == types["gpu_worker"]["node_config"]["scheduling"]
    )
    head = types["head"]
    assert head["node_config"]["scheduling"]["provisioningModel"] == "STANDARD"
    assert head["resources"] == {"CPU": 0}  # no tasks on the head
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "GPU" not in types["cpu_worker"]["resources"]
    assert 0 < raw["idle_timeout_minutes"] <= 30
    assert sum(t["max_workers"] for n, t in types.items() if n != "head") <= raw["max_workers"]


def test_images_are_the_built_ones_of_this_version(raw: dict[str, Any]) -> None:
    registry = "europe-west4-docker.pkg.dev/your-gcp-project/embedder/embedder"
    assert raw["docker"]["image"] == f"{registry}:{VERSION}-cpu"
    gpu_docker = raw["available_node_types"]["gpu_worker"]["docker"]
    assert gpu_docker["worker_image"] == f"{registry}:{VERSION}-gpu"
    assert raw["provider"]["region"] in raw["provider"]["availability_zone"]
    assert raw["provider"]["region"] in registry


def test_project_is_mounted_and_installed_without_touching_pins(raw: dict[str, Any]) -> None:
    cfg = prepared(raw)
    mounts = cfg["file_mounts"]
    assert mounts["/home/ray/embedder"] == "."
    assert any(".venv" in e for e in cfg["rsync_exclude"])
    for cmds in (cfg["head_setup_commands"], cfg["worker_setup_commands"]):
        assert "pip install --no-deps --no-build-isolation -e /home/ray/embedder" in cmds
        assert "pip check" in cmds
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        if "ray start" in cmd:
            assert "RAY_AUTH_MODE=token" in cmd


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(k) for k in node] + [k for v in node.values() for k in _keys(v)]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def test_no_credentials_in_the_cluster_config(raw: dict[str, Any]) -> None:
    # The Ray auth token is mounted from the operator's home, never from the repository.
    mounts = raw["file_mounts"]
    assert mounts["/home/ray/.ray/auth_token"].startswith("~/")
    rest = {k: v for k, v in raw.items() if k != "file_mounts"}
    suspicious = [
        k
        for k in _keys(rest)
        if any(w in k.lower() for w in ("credential", "password", "secret", "private_key", "token"))
    ]
    assert suspicious == [], "credentials come from the VM's service account, not from cluster.yaml"
    assert scan_text((REPO / "cluster.yaml").read_text(), source="cluster.yaml") == []
