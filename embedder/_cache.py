"""A small least-recently-used cache shared by the readers (tiles, shard chunks, done-markers).

``functools.lru_cache`` memoises a function; these caches are per instance, filled from code paths that
fetch several keys at once (prefetch) and asked for membership without a fetch, so they need a mapping.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["LRUCache"]


class LRUCache(Generic[K, V]):
    """Up to ``maxsize`` entries; a put beyond that evicts the least recently used (got or put) ones.

    Not locked: callers that share one between threads hold their own lock around each call. A pickled
    copy (a dataset sent to a worker process) starts empty with the same ``maxsize``; the entries stay
    behind, as they are often large arrays or hold open handles.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = int(maxsize)
        """Most entries kept (0 or less: nothing is kept)."""
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value of ``key``, marked most recently used; None when it is not cached."""
        if key not in self._data:
            return None
        self._data.move_to_end(key)
        return self._data[key]

    def put(self, key: K, value: V) -> None:
        """Cache ``value`` as the most recently used, then evict the oldest entries over ``maxsize``."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > max(self.maxsize, 0):
            self._data.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._data.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._data  # a membership test does not count as a use

    def __len__(self) -> int:
        return len(self._data)

    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.maxsize = int(state["maxsize"])
        self._data = OrderedDict()
