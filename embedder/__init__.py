"""embedder: per-date Sentinel-1 + Sentinel-2 embeddings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from embedder.store import open_store

__all__ = ["open_store"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `embedder --help` (embedder.cli) stays instant.
    if name == "open_store":
        from embedder.store import open_store

        return open_store
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")
