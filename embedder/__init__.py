"""embedder: per-date Sentinel-1 + Sentinel-2 embeddings."""

from embedder.store import open_store

__all__ = ["open_store"]
