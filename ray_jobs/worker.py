"""What a Ray worker process keeps between the rows it handles: the parsed job config, the opened store.

The embed job's stages receive the job's config as a plain dict with every row; parsing it and opening
the store (filesystem, root metadata) once per worker process instead of once per row is what these
caches do. They live in an importable module, not in the job's ``__main__``: Ray pickles the stage
functions of a job run with ``python -m`` by value, and a cache must be found by reference.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from embedder.config import load_config
from ray_jobs.config import EmbedJobConfig

__all__ = ["embed_config", "embed_store"]


def _key(cfg_dict: dict[str, Any]) -> str:
    return json.dumps(cfg_dict, sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _config(key: str) -> EmbedJobConfig:
    return load_config(EmbedJobConfig, json.loads(key))


@functools.lru_cache(maxsize=4)
def _store(key: str) -> Any:
    from embedder.store import as_store

    cfg = _config(key)
    return as_store(cfg.store, dict(cfg.storage_options) or None)


def embed_config(cfg_dict: dict[str, Any]) -> EmbedJobConfig:
    """The embed job's parsed config, once per worker process."""
    return _config(_key(cfg_dict))


def embed_store(cfg_dict: dict[str, Any]) -> Any:
    """The embed job's opened :class:`embedder.store.Store`, once per worker process."""
    return _store(_key(cfg_dict))
