"""The secrets scanner: each pattern fires on a fabricated secret, the repo and logs scan clean.

Fake secrets are assembled at run time from pieces, so no secret-looking literal sits in this file
(the repository scan below reads this file too).
"""

from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from embedder.secrets_scan import (
    PATTERNS,
    SecretsScanError,
    cli_main,
    format_findings,
    repo_files,
    scan_file,
    scan_mapping,
    scan_paths,
    scan_repo,
    scan_store_attrs,
    scan_text,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RNG = random.Random(7)


def _rand(alphabet: str, n: int) -> str:
    return "".join(RNG.choice(alphabet) for _ in range(n))


UPPER_DIGITS = string.ascii_uppercase + string.digits
B64 = string.ascii_letters + string.digits + "+/"
HEX = "0123456789abcdef"

# One fabricated example per pattern name; the test below checks every pattern has one.
FAKES: dict[str, str] = {
    "private_key": "-----BEGIN " + "RSA PRIVATE" + " KEY-----\nMIIEow...",
    "gcp_service_account_json": '{"type": ' + '"service' + '_account", "project_id": "p"}',
    "gcp_private_key_id": '"private_key' + '_id": "' + _rand(HEX, 40) + '"',
    "gcp_oauth_access_token": "token=ya" + "29." + _rand(string.ascii_letters, 60),
    "gcp_api_key": "key=AI" + "za" + _rand(string.ascii_letters + string.digits, 35),
    "aws_access_key_id": "id AK" + "IA" + _rand(UPPER_DIGITS, 16) + " end",
    "aws_secret_access_key": "aws_secret" + "_access_key = " + _rand(B64, 40),
    "sas_token": "https://x.blob.core.windows.net/c/a.tif?st=2025&se=2026&sp=rl&s" + "ig=" + _rand(B64, 44),
    "gcs_signed_url": "https://storage.googleapis.com/b/o?X-Goog-" + "Signature=" + _rand(HEX, 256),
    "s3_presigned_url": "https://b.s3.amazonaws.com/o?X-Amz-" + "Signature=" + _rand(HEX, 64),
    "bearer_token": "Authorization: Bea" + "rer " + _rand(string.ascii_letters + string.digits, 48),
    "github_token": "gh" + "p_" + _rand(string.ascii_letters + string.digits, 36),
}


def test_every_pattern_has_a_fake() -> None:
    assert {p.name for p in PATTERNS} == set(FAKES)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_each_pattern_finds_its_secret_and_redacts_it(name: str) -> None:
    text = "harmless first line\n" + FAKES[name] + "\n"
    findings = scan_text(text, source="t.txt")
    assert name in {f.pattern for f in findings}
    hit = next(f for f in findings if f.pattern == name)
    assert hit.line == 2 and hit.source == "t.txt"
    assert hit.excerpt.endswith("…")
    # The redacted excerpt and the report never carry the secret's tail.
    assert FAKES[name][-12:] not in str(hit)
    assert FAKES[name][-12:] not in format_findings(findings)


@pytest.mark.parametrize(
    "text",
    [
        "sig=fake",  # the STAC signing stub's token in tests: too short to be a signature
        "Authorization: Bearer $TOKEN",
        "clients send bearer authentication/authorization headers",
        "key: private_key_path",
        "aws_secret_access_key = os.environ['AWS_SECRET_ACCESS_KEY']",
        "gcloud auth print-access-token",
        "type = service_account",
    ],
)
def test_look_alikes_are_not_findings(text: str) -> None:
    assert scan_text(text) == []


def test_allow_marker_suppresses_a_line() -> None:
    fake = FAKES["aws_access_key_id"]
    assert scan_text(fake) != []
    assert scan_text(fake + "  # secrets-scan" + ": allow") == []


def test_scan_paths_walks_log_folders_and_skips_binaries(tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "job-1"
    logs.mkdir(parents=True)
    (logs / "driver.log").write_text("epoch 1 loss 0.1\nsigned " + FAKES["sas_token"] + "\n")
    (logs / "ok.log").write_text("nothing to see\n")
    (logs / "blob.bin").write_bytes(b"\0\1\2" + FAKES["sas_token"].encode())
    findings = scan_paths([tmp_path / "logs"])
    assert [(Path(f.source).name, f.line, f.pattern) for f in findings] == [("driver.log", 2, "sas_token")]
    assert scan_file(tmp_path / "missing.log") == []


def test_scan_mapping_finds_nested_signed_hrefs() -> None:
    attrs = {"provenance": {"items": [{"href": FAKES["sas_token"]}]}, "emb:dims": 7}
    assert [f.pattern for f in scan_mapping(attrs, source="store")] == ["sas_token"]
    assert scan_mapping({"href": "https://x.blob.core.windows.net/c/a.tif"}, source="s") == []


def test_scan_store_attrs_reads_groups_and_arrays(tmp_path: Path) -> None:
    import zarr

    url = str(tmp_path / "store.zarr")
    root = zarr.open_group(url, mode="w")
    root.attrs["model_version"] = "0.1.0"
    zone = root.create_group("utm32N")
    arr = zone.create_array("embedding", shape=(2, 2), dtype="uint8")
    assert scan_store_attrs(url) == []
    arr.attrs["source_href"] = FAKES["gcs_signed_url"]
    zone.attrs["token"] = FAKES["bearer_token"]
    found = {(f.source.removeprefix(url), f.pattern) for f in scan_store_attrs(url)}
    assert found == {("/utm32N/embedding@attrs", "gcs_signed_url"), ("/utm32N@attrs", "bearer_token")}


def test_scan_store_attrs_names_a_missing_store(tmp_path: Path) -> None:
    with pytest.raises(SecretsScanError, match=r"missing\.zarr"):
        scan_store_attrs(str(tmp_path / "missing.zarr"))


def test_repo_files_requires_a_git_tree(tmp_path: Path) -> None:
    with pytest.raises(SecretsScanError, match=str(tmp_path)):
        repo_files(tmp_path)


def test_repository_tracked_and_new_files_are_clean() -> None:
    files = repo_files(REPO_ROOT)
    assert REPO_ROOT / "pyproject.toml" in files
    assert not any(".venv" in f.parts for f in files)  # .gitignore is honoured
    findings = scan_repo(REPO_ROOT)
    assert findings == [], format_findings(findings)


def test_local_run_logs_and_outputs_are_clean() -> None:
    # Outputs that are git-ignored but produced by runs on this machine (bench results, demo, runs).
    folders = [REPO_ROOT / d for d in ("bench/results", "demo-out", "runs") if (REPO_ROOT / d).exists()]
    findings = scan_paths(folders)
    assert findings == [], format_findings(findings)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = tmp_path / "clean.log"
    clean.write_text("ok\n")
    dirty = tmp_path / "dirty.log"
    dirty.write_text(FAKES["private_key"] + "\n")
    assert cli_main([str(clean)]) == 0
    assert cli_main([str(clean), str(dirty)]) == 1
    err = capsys.readouterr().err
    assert "private_key" in err and "1 finding" in err
    with pytest.raises(SystemExit):
        cli_main([])
