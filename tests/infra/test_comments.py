"""Every key in cluster.yaml and infra/k8s/*.yaml carries a comment (issue 7: "every key commented").

A key counts as commented when its line has a trailing ``# ...`` or the line just above it is a comment
line. Lines inside block scalars (``key: >-`` ...) and plain list items are not keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "cluster.yaml", *sorted((REPO / "infra" / "k8s").glob("*.yaml"))]

KEY = re.compile(r"""^(?P<indent>\s*)(?:-\s+)?(?P<key>"[^"]+"|'[^']+'|[A-Za-z0-9_./~$-]+)\s*:(?:\s|$)""")
BLOCK_SCALAR = re.compile(r":\s*[|>][-+]?\s*(#.*)?$")


def uncommented_keys(text: str) -> list[str]:
    """Return ``"<line>: <key>"`` for every mapping key without a comment on or just above its line."""
    missing: list[str] = []
    prev = ""
    block_indent: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if stripped and indent <= block_indent:
                block_indent = None
            else:
                continue
        if not stripped or stripped == "---":
            if stripped == "---":
                prev = ""
            continue
        m = KEY.match(line)
        if m and not stripped.startswith("#"):
            has_trailing = " #" in line.split(":", 1)[1]
            if not (has_trailing or prev.startswith("#")):
                missing.append(f"{lineno}: {m.group('key')}")
            if BLOCK_SCALAR.search(line):
                block_indent = indent
        prev = stripped
    return missing


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_key_is_commented(path: Path) -> None:
    assert uncommented_keys(path.read_text()) == []


def test_checker_finds_an_uncommented_key() -> None:
    text = "# ok\na: 1\nb: 2  # ok\nc:\n  # ok\n  d: >-\n    e: not a key\n  f: 3\n- g: 4\n"
    assert uncommented_keys(text) == ["4: c", "8: f", "9: g"]
