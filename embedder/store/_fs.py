"""Where a store lives: URL -> fsspec filesystem and root path, zarr store objects, whole-object IO."""

from __future__ import annotations

import json
from typing import Any


def url_to_fs(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem and root path (no trailing slash) of ``url``."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/")


def _is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def zarr_store(url: str, storage_options: dict[str, Any] | None, *, read_only: bool) -> Any:
    """A zarr store object for ``url``: ``LocalStore`` for local paths, ``FsspecStore`` otherwise."""
    import zarr.storage

    fs, path = url_to_fs(url, storage_options)
    if _is_local(fs):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {}, read_only=read_only)


def put_object(fs: Any, path: str, data: bytes) -> None:
    """Put one whole object (the single place objects are written; tests patch ``embedder.store.writer.put_object`` to interrupt a write)."""
    if _is_local(fs):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def get_json(fs: Any, path: str) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None when it does not exist."""
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
