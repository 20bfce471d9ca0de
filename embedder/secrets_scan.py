"""Find credentials and signed-URL tokens in files, logs and embedding-store attributes.

The product takes credentials only from the environment or from workload identity (GKE) / the
attached service account (GCE); nothing secret belongs in the repository, in job logs, or in the
attributes of a published store (signed STAC hrefs are the usual leak: a Planetary Computer SAS token
copied into provenance). This module is the one check for that, used by the test suite on the
repository and by the demo on its outputs::

    findings = scan_repo(Path("."))                  # tracked + new, not-ignored files
    findings += scan_paths([Path("runs/logs")])      # log folders
    findings += scan_store_attrs("gs://bucket/store.zarr")
    if findings:
        print(format_findings(findings))

A line that must keep a look-alike (documentation of a pattern, say) can carry the marker
``secrets-scan: allow``. Findings never contain the secret itself, only a redacted excerpt.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PATTERNS",
    "Finding",
    "SecretPattern",
    "SecretsScanError",
    "cli_main",
    "format_findings",
    "repo_files",
    "scan_file",
    "scan_mapping",
    "scan_paths",
    "scan_repo",
    "scan_store_attrs",
    "scan_text",
]

ALLOW_MARKER = "secrets-scan: allow"
"""A line containing this marker is never reported."""

_BINARY_PROBE_BYTES = 8192
"""Bytes read from the start of a file to decide whether it is binary (contains a NUL byte)."""

_DEFAULT_MAX_FILE_BYTES = 20 * 1024 * 1024
"""Files larger than this are not scanned (datasets and checkpoints do not belong in the repo anyway)."""


class SecretsScanError(RuntimeError):
    """The scan itself could not run (not a git work tree, store cannot be opened, ...)."""


@dataclass(frozen=True)
class SecretPattern:
    """One kind of secret and the regular expression that finds it."""

    name: str
    """Short identifier reported with each finding (e.g. ``aws_access_key_id``)."""
    regex: re.Pattern[str]
    """Compiled expression; group 0 is the secret-bearing text (redacted in reports)."""
    description: str
    """What was found and why it matters, for the report."""


def _p(name: str, regex: str, description: str, flags: int = 0) -> SecretPattern:
    return SecretPattern(name=name, regex=re.compile(regex, flags), description=description)


PATTERNS: tuple[SecretPattern, ...] = (
    _p(
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----",
        "PEM private key (SSH, TLS or a service-account key)",
    ),
    _p(
        "gcp_service_account_json",
        r"\"type\"\s*:\s*\"service_account\"",
        "Google service-account key file (JSON); use workload identity or the VM's service account",
    ),
    _p(
        "gcp_private_key_id",
        r"\"private_key_id\"\s*:\s*\"[0-9a-f]{40}\"",
        "Google service-account key id (part of a key file)",
    ),
    _p(
        "gcp_oauth_access_token",
        r"\bya29\.[0-9A-Za-z_\-]{20,}",
        "Google OAuth access token",
    ),
    _p(
        "gcp_api_key",
        r"\bAIza[0-9A-Za-z_\-]{35}\b",
        "Google API key",
    ),
    _p(
        "aws_access_key_id",
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        "AWS access key id",
    ),
    _p(
        "aws_secret_access_key",
        r"aws_secret_access_key\s*[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}\b",
        "AWS secret access key",
        re.IGNORECASE,
    ),
    _p(
        "sas_token",
        r"(?:^|[?&\s\"'])sig=[A-Za-z0-9%/+=]{20,}",
        "Azure SAS token signature (a signed Planetary Computer href); store unsigned hrefs",
    ),
    _p(
        "gcs_signed_url",
        r"X-Goog-Signature=[0-9a-fA-F]{64,}",
        "Google Cloud Storage signed URL",
    ),
    _p(
        "s3_presigned_url",
        r"X-Amz-Signature=[0-9a-fA-F]{64}",
        "S3 pre-signed URL",
    ),
    _p(
        "bearer_token",
        r"\bbearer\s+(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{20,}=*",
        "HTTP bearer token (Authorization header; a token has digits, prose does not)",
        re.IGNORECASE,
    ),
    _p(
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b",
        "GitHub token",
    ),
)
"""Every pattern the scanner looks for. Examples are never spelled out here, so this file scans clean."""


@dataclass(frozen=True)
class Finding:
    """One match of a secret pattern; ``excerpt`` is redacted and safe to print."""

    source: str
    """Where: a file path, a store URL plus the array/group path, or a caller's label."""
    line: int
    """1-based line number within the source text (1 for single-line sources)."""
    pattern: str
    """The :attr:`SecretPattern.name` that matched."""
    excerpt: str
    """The first characters of the match followed by ``…``; never the whole secret."""

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.pattern}: {self.excerpt}"


def _redact(match: str) -> str:
    keep = min(6, max(1, len(match) // 4))
    return match.strip()[:keep] + "…"


def scan_text(
    text: str, *, source: str = "<text>", patterns: Iterable[SecretPattern] = PATTERNS
) -> list[Finding]:
    """Return every secret found in ``text``, line by line (lines with the allow marker are skipped)."""
    pats = tuple(patterns)
    findings: list[Finding] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARKER in line:
            continue
        for pat in pats:
            for m in pat.regex.finditer(line):
                findings.append(
                    Finding(source=source, line=lineno, pattern=pat.name, excerpt=_redact(m.group(0)))
                )
    return findings


def scan_file(path: Path, *, max_bytes: int = _DEFAULT_MAX_FILE_BYTES) -> list[Finding]:
    """Scan one text file; binary files (a NUL byte near the start) and huge files are skipped."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return []
        with path.open("rb") as fh:
            data = fh.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return []
    if b"\0" in data[:_BINARY_PROBE_BYTES]:
        return []
    return scan_text(data.decode("utf-8", errors="replace"), source=str(path))


def scan_paths(paths: Iterable[Path], *, max_bytes: int = _DEFAULT_MAX_FILE_BYTES) -> list[Finding]:
    """Scan files and, recursively, every file under the given folders (log folders, outputs)."""
    findings: list[Finding] = []
    for root in paths:
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            findings.extend(scan_file(f, max_bytes=max_bytes))
    return findings


def repo_files(repo_root: Path) -> list[Path]:
    """Files git would commit: tracked files plus new files that ``.gitignore`` does not exclude.

    Reads the index only (``git ls-files``); never changes git state.
    """
    repo_root = Path(repo_root)
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as err:
        raise SecretsScanError(
            f"cannot list the files of {repo_root!s} with git ({err}); pass a git work tree, "
            "or use scan_paths() for a plain folder"
        ) from err
    names = sorted({n for n in out.decode("utf-8", errors="replace").split("\0") if n})
    return [repo_root / n for n in names if (repo_root / n).is_file()]


def scan_repo(repo_root: Path, *, max_bytes: int = _DEFAULT_MAX_FILE_BYTES) -> list[Finding]:
    """Scan every file of the repository that is (or would be) committed."""
    findings: list[Finding] = []
    for f in repo_files(repo_root):
        findings.extend(scan_file(f, max_bytes=max_bytes))
    return findings


def scan_mapping(attrs: Mapping[str, Any], *, source: str) -> list[Finding]:
    """Scan a JSON-able mapping (store or array attributes, a config dict) for secrets."""
    text = json.dumps(attrs, indent=1, sort_keys=True, default=str)
    return scan_text(text, source=source)


def scan_store_attrs(url: str, *, storage_options: dict[str, Any] | None = None) -> list[Finding]:
    """Scan the attributes of a Zarr store's root group and of every group and array inside it.

    ``url`` is any fsspec URL (``gs://``, ``s3://``, ``file://`` or a local path).
    """
    import zarr  # local import: zarr is only needed for store scans

    try:
        root = zarr.open_group(url, mode="r", storage_options=storage_options)
    except Exception as err:  # zarr raises several error types for a missing/unreadable store
        raise SecretsScanError(
            f"cannot open the Zarr store {url!r} ({type(err).__name__}: {err}); check the URL and "
            "that credentials come from the environment"
        ) from err
    findings = scan_mapping(dict(root.attrs), source=f"{url}@attrs")
    with warnings.catch_warnings():
        # An embedding store keeps plain sidecar objects beside its groups (done markers, STAC, the map
        # PCA); zarr warns about each while listing members. They hold no attributes to scan.
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        members = list(root.members(max_depth=None))
    for path, node in members:
        findings.extend(scan_mapping(dict(node.attrs), source=f"{url}/{path}@attrs"))
    return findings


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding plus the pattern's advice; empty string when there is nothing."""
    desc = {p.name: p.description for p in PATTERNS}
    return "\n".join(f"{f}  ({desc.get(f.pattern, '')})" for f in findings)


def cli_main(argv: list[str] | None = None) -> int:
    """``embedder secrets-scan``: exit 1 when anything secret-looking is found, else 0."""
    parser = argparse.ArgumentParser(
        prog="embedder secrets-scan",
        description="Scan the repository, log folders and Zarr store attributes for credentials "
        "and signed-URL tokens.",
    )
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (e.g. logs) to scan")
    parser.add_argument("--repo", type=Path, default=None, help="git work tree: scan its committed files")
    parser.add_argument("--store", action="append", default=[], help="Zarr store URL (repeatable)")
    args = parser.parse_args(argv)
    if not args.paths and args.repo is None and not args.store:
        parser.error("nothing to scan: give PATHS, --repo DIR or --store URL")
    findings: list[Finding] = []
    if args.repo is not None:
        findings += scan_repo(args.repo)
    findings += scan_paths(args.paths)
    for url in args.store:
        findings += scan_store_attrs(url)
    if findings:
        print(format_findings(findings), file=sys.stderr)
        print(f"secrets-scan: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("secrets-scan: clean")
    return 0
