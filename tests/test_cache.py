import pickle

from embedder._cache import LRUCache


def test_lru_cache_evicts_least_recently_used_and_pickles_empty() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3 and len(cache) == 2
    assert cache.get("missing") is None
    copy = pickle.loads(pickle.dumps(cache))
    assert len(copy) == 0 and copy.maxsize == 2
    copy.put("x", 0)
    assert copy.get("x") == 0
    nothing: LRUCache[str, int] = LRUCache(0)
    nothing.put("a", 1)
    assert len(nothing) == 0
    cache.clear()
    assert len(cache) == 0
