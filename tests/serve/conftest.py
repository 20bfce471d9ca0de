"""Fixtures of the serving tests: a small seeded local store (helpers in serve_stores.py)."""

from __future__ import annotations

from typing import Any

import pytest
from serve_stores import build_store


@pytest.fixture(scope="session")
def local_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """A local test store, built once per session: (path, written data per unit id). Do not modify it."""
    url = str(tmp_path_factory.mktemp("serve") / "emb.zarr")
    return url, build_store(url)
