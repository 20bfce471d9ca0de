"""infra/terraform: parsed with python-hcl2 and checked for structure; fmt/validate where possible.

``terraform fmt -check`` needs only the binary and runs when one is on PATH. ``terraform validate``
needs the hashicorp/google provider plugin, which ``terraform init`` downloads from the Terraform
registry; this machine reaches only PyPI/Debian/npm, so validate runs only when a local plugin mirror
holds the google provider and is otherwise skipped with that reason. The HCL checks below always run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TF = REPO / "infra" / "terraform"
PLUGIN_MIRRORS = [Path("/opt/tf-plugins"), Path.home() / ".terraform.d" / "plugins"]


def _clean(node: Any) -> Any:
    """python-hcl2 8.x keeps quotes and adds markers; turn its output into plain values."""
    if isinstance(node, dict):
        return {_clean(k): _clean(v) for k, v in node.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    if isinstance(node, str) and len(node) >= 2 and node[0] == node[-1] == '"':
        return node[1:-1]
    return node


def load_tf() -> dict[str, Any]:
    """All .tf files merged: {"resource": {(type, name): body}, "variable": {name: body}, ...}."""
    out: dict[str, Any] = {"resource": {}, "variable": {}, "output": {}, "locals": {}, "terraform": []}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as fh:
            doc = _clean(hcl2.load(fh))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    out["resource"][(rtype, name)] = body
        for kind in ("variable", "output"):
            for block in doc.get(kind, []):
                out[kind].update(block)
        for block in doc.get("locals", []):
            out["locals"].update(block)
        out["terraform"] += doc.get("terraform", [])
    return out


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    return load_tf()


def res(tf: dict[str, Any], rtype: str) -> dict[str, Any]:
    return {name: body for (t, name), body in tf["resource"].items() if t == rtype}


def test_bucket_versioned_uniform_lifecycle_and_public_option(tf: dict[str, Any]) -> None:
    (bucket,) = res(tf, "google_storage_bucket").values()
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["versioning"][0]["enabled"] is True
    actions = {r["action"][0]["type"] for r in bucket["lifecycle_rule"]}
    assert {"Delete", "AbortIncompleteMultipartUpload"} <= actions
    assert any("days_since_noncurrent_time" in r["condition"][0] for r in bucket["lifecycle_rule"])
    assert (
        "var.public_read" in bucket["public_access_prevention"]
        and "enforced" in bucket["public_access_prevention"]
    )
    public = res(tf, "google_storage_bucket_iam_member")["public_read"]
    assert public["member"] == "allUsers" and public["role"] == "roles/storage.objectViewer"
    assert public["count"] == "${var.public_read ? 1 : 0}"
    assert tf["variable"]["public_read"]["default"] is False


def test_runtime_account_is_least_privilege_and_keyless(tf: dict[str, Any]) -> None:
    assert res(tf, "google_service_account_key") == {}, (
        "no key files: metadata server / workload identity only"
    )
    runtime_ref = "google_service_account.runtime.email"
    project_grants = [
        b for b in res(tf, "google_project_iam_member").values() if runtime_ref in str(b["member"])
    ]
    assert project_grants == [], "the runtime account gets no project-wide role"
    bucket_grants = [
        b for b in res(tf, "google_storage_bucket_iam_member").values() if runtime_ref in b["member"]
    ]
    assert [b["role"] for b in bucket_grants] == ["roles/storage.objectUser"]
    assert all("google_storage_bucket.embeddings" in b["bucket"] for b in bucket_grants)
    for body in res(tf, "google_project_iam_member").values():
        assert "storage" not in body["role"] and "admin" not in str(body.get("for_each", "")).lower()


def test_workload_identity_matches_the_k8s_service_account(tf: dict[str, Any]) -> None:
    wi = res(tf, "google_service_account_iam_member")["runtime_workload_identity"]
    assert wi["role"] == "roles/iam.workloadIdentityUser"
    assert (
        wi["member"]
        == "serviceAccount:${var.project_id}.svc.id.goog[${var.k8s_namespace}/${var.k8s_service_account}]"
    )
    docs = list(yaml.safe_load_all((REPO / "infra" / "k8s" / "serviceaccount.yaml").read_text()))
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert tf["variable"]["k8s_namespace"]["default"] == sa["metadata"]["namespace"]
    assert tf["variable"]["k8s_service_account"]["default"] == sa["metadata"]["name"]
    account_id = res(tf, "google_service_account")["runtime"]["account_id"]
    email = f"{account_id}@your-gcp-project.iam.gserviceaccount.com"
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == email
    assert email in (REPO / "cluster.yaml").read_text()
    cluster = res(tf, "google_container_cluster")["main"]
    assert cluster["workload_identity_config"][0]["workload_pool"] == "${var.project_id}.svc.id.goog"


def test_node_pools_gpu_scales_to_zero_and_labels_match_k8s(tf: dict[str, Any]) -> None:
    pools = res(tf, "google_container_node_pool")
    assert set(pools) == {"system", "cpu", "gpu"}
    for name in ("cpu", "gpu"):
        assert pools[name]["autoscaling"][0]["total_min_node_count"] == 0
        assert pools[name]["node_config"][0]["spot"] == "${var.spot}"
        assert pools[name]["node_config"][0]["workload_metadata_config"][0]["mode"] == "GKE_METADATA"
    assert pools["system"]["autoscaling"][0]["total_min_node_count"] >= 1
    assert "spot" not in pools["system"]["node_config"][0]  # the Ray head is never preempted
    accel = pools["gpu"]["node_config"][0]["guest_accelerator"][0]
    assert accel["type"] == "${var.gpu_type}" and accel["count"] == 1
    raycluster = yaml.safe_load((REPO / "infra" / "k8s" / "raycluster.yaml").read_text())["spec"]
    selectors = {raycluster["headGroupSpec"]["template"]["spec"]["nodeSelector"]["embedder/pool"]}
    selectors |= {
        g["template"]["spec"]["nodeSelector"]["embedder/pool"] for g in raycluster["workerGroupSpecs"]
    }
    labels = {p["node_config"][0]["labels"]["embedder/pool"] for p in pools.values()}
    assert selectors == labels == {"system", "cpu", "gpu"}
    max_nodes = {
        "cpu": tf["variable"]["cpu_max_nodes"]["default"],
        "gpu": tf["variable"]["gpu_max_nodes"]["default"],
    }
    groups = {g["groupName"].split("-")[0]: g["maxReplicas"] for g in raycluster["workerGroupSpecs"]}
    assert groups == max_nodes  # one Ray worker pod per node


def test_every_variable_and_output_is_described(tf: dict[str, Any]) -> None:
    for kind in ("variable", "output"):
        for name, body in tf[kind].items():
            assert body.get("description"), f"{kind} {name} has no description"
    for name, body in tf["variable"].items():
        assert "type" in body, f"variable {name} has no type"


def test_every_block_is_commented() -> None:
    for path in sorted(TF.glob("*.tf")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.match(r"^(resource|provider|locals|terraform)\b", line):
                above = lines[i - 1].strip() if i else ""
                assert above.startswith("#"), f"{path.name}:{i + 1}: {line!r} has no comment above it"


def _terraform_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CHECKPOINT_DISABLE"] = "1"  # no version check call to HashiCorp
    env.pop("TF_CLI_CONFIG_FILE", None)
    return env


def test_terraform_fmt_check() -> None:
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip("terraform binary not on PATH (not on PyPI/Debian here); HCL is still parsed above")
    proc = subprocess.run(
        [exe, "fmt", "-check", "-diff", "-recursive", str(TF)],
        capture_output=True,
        text=True,
        env=_terraform_env(),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _google_provider_mirror() -> Path | None:
    for mirror in PLUGIN_MIRRORS:
        if (mirror / "registry.terraform.io" / "hashicorp" / "google").is_dir():
            return mirror
    return None


def test_terraform_validate(tmp_path: Path) -> None:
    exe = shutil.which("terraform")
    mirror = _google_provider_mirror()
    if exe is None or mirror is None:
        pytest.skip(
            "terraform validate needs the hashicorp/google provider, which `terraform init` downloads "
            "from the Terraform registry; this machine reaches only PyPI/Debian/npm and no local plugin "
            f"mirror ({', '.join(map(str, PLUGIN_MIRRORS))}) holds it"
        )
    work = tmp_path / "tf"
    shutil.copytree(TF, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = _terraform_env()
    init = subprocess.run(
        [exe, "init", "-backend=false", "-input=false", f"-plugin-dir={mirror}"],
        cwd=work, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    val = subprocess.run([exe, "validate", "-no-color"], cwd=work, capture_output=True, text=True, env=env)
    assert val.returncode == 0, val.stdout + val.stderr
