"""The training loader's torch side of the shards: :class:`ShardDataset` and :class:`ChunkShuffleSampler`.

:class:`ShardDataset` reads samples from the Zarr shard groups of :mod:`embedder.data.shards` (one group
per cube, any fsspec URL), keeping a few decoded chunks per group in an LRU cache;
:class:`ChunkShuffleSampler` shuffles chunk by chunk so each decoded chunk serves a whole run of samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset, Sampler

from embedder._cache import LRUCache
from embedder.data.shards import (
    SHARD_KEYS,
    ShardError,
    open_shard_group,
    shard_array,
    shard_keys,
    shard_kind,
    shard_n_samples,
    split_shard_urls,
)

__all__ = ["ChunkShuffleSampler", "ShardDataset"]


class ShardDataset(Dataset[dict[str, torch.Tensor]]):
    """A map-style torch Dataset over the complete shards of one split.

    ``ds[i]`` is a dict of tensors without the leading N (``s2`` ``[11, 10, 15, 15]`` float32, masks
    bool, gaps ``[10]`` float32, scalars 0-d). Decoded Zarr chunks are kept in a small LRU cache
    (``cache_chunks`` per process), so sequential or chunk-local access reads each chunk once; shuffle
    with :class:`ChunkShuffleSampler` (fully random access decodes a whole chunk per sample). The
    dataset pickles without open handles, for DataLoader workers.
    """

    def __init__(
        self,
        root: str,
        *,
        split: str,
        kind: str = "fused",
        storage_options: Mapping[str, Any] | None = None,
        cache_chunks: int = 8,
    ) -> None:
        self.root = str(root)
        self.split = split
        self.kind = shard_kind(kind)
        self.storage_options = dict(storage_options or {})
        self.urls = split_shard_urls(self.root, split=split, kind=kind, storage_options=self.storage_options)
        self.cube_ids = [u.rstrip("/").rsplit("/", 1)[-1][: -len(".zarr")] for u in self.urls]
        counts, chunks = [], []
        for url in self.urls:
            group = open_shard_group(url, self.storage_options)
            if group is None:
                raise ShardError(f"shard {url!r} disappeared while opening the dataset; is a build running?")
            counts.append(shard_n_samples(group))
            chunks.append(int(shard_array(group, shard_keys(group)[0]).chunks[0]))
        self.counts = np.asarray(counts, dtype=np.int64)  # [n_cubes]
        self.chunk_samples = np.asarray(chunks, dtype=np.int64)  # [n_cubes]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)])  # [n_cubes + 1]
        self.keys = SHARD_KEYS[self.kind]
        self.cache_chunks = max(1, int(cache_chunks))
        self._groups: dict[int, zarr.Group] = {}
        self._cache: LRUCache[tuple[int, int], dict[str, np.ndarray]] = LRUCache(self.cache_chunks)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_groups"] = {}  # open zarr groups stay behind; the cache pickles empty (LRUCache)
        return state

    def _chunk(self, shard: int, chunk: int) -> dict[str, np.ndarray]:
        key = (shard, chunk)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if shard not in self._groups:
            group = open_shard_group(self.urls[shard], self.storage_options)
            if group is None:
                raise ShardError(f"shard {self.urls[shard]!r} disappeared while reading; rebuild the dataset")
            self._groups[shard] = group
        group = self._groups[shard]
        size = int(self.chunk_samples[shard])
        block = {k: np.asarray(shard_array(group, k)[chunk * size : (chunk + 1) * size]) for k in self.keys}
        self._cache.put(key, block)
        return block

    def chunk_ranges(self) -> list[tuple[int, int]]:
        """Global ``[start, stop)`` index range of every stored Zarr chunk, shard by shard."""
        out = []
        for lo, n, size in zip(self.offsets[:-1], self.counts, self.chunk_samples, strict=True):
            out += [(int(lo + a), int(lo + min(a + size, n))) for a in range(0, int(n), int(size))]
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        i = int(index) + n if int(index) < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for a {self.split!r} dataset of {n} samples")
        shard = int(np.searchsorted(self.offsets, i, side="right") - 1)
        local = i - int(self.offsets[shard])
        size = int(self.chunk_samples[shard])
        block = self._chunk(shard, local // size)
        return {k: torch.from_numpy(np.array(v[local % size])) for k, v in block.items()}


class ChunkShuffleSampler(Sampler[int]):
    """Shuffle for :class:`ShardDataset` that decodes each Zarr chunk once per epoch (and per replica).

    Fully random access decodes a whole chunk (``chunk_samples`` samples) per sample. This sampler
    permutes the chunks (seeded by ``seed + epoch``), deals them round-robin to ``num_replicas`` ranks
    (data-parallel training), and yields the samples of ``interleave_chunks`` chunks at a time in
    shuffled order, so a batch mixes several cubes while the dataset's chunk cache (keep
    ``cache_chunks >= interleave_chunks``) serves every read. Every rank yields the same number of
    indices (``ceil(len / num_replicas)``; short ranks repeat their first indices), as DDP requires.
    Call :meth:`set_epoch` each epoch, like ``DistributedSampler``.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        *,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        interleave_chunks: int = 4,
    ) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ShardError(f"rank {rank} / num_replicas {num_replicas}: need 0 <= rank < num_replicas")
        if interleave_chunks < 1:
            raise ShardError(f"interleave_chunks = {interleave_chunks} must be at least 1")
        self.chunks = dataset.chunk_ranges()
        self.total = len(dataset)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        self.num_replicas, self.rank, self.interleave = num_replicas, rank, interleave_chunks

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.total // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.chunks)) if self.shuffle else np.arange(len(self.chunks))
        mine = [self.chunks[int(i)] for i in order[self.rank :: self.num_replicas]]
        parts = []
        for g in range(0, len(mine), self.interleave):
            idx = np.concatenate([np.arange(a, b) for a, b in mine[g : g + self.interleave]])
            if self.shuffle:
                rng.shuffle(idx)
            parts.append(idx)
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        n = len(self)
        if len(flat) == 0 and self.total > 0:
            # more ranks than chunks: this rank got none, so it takes its share of all samples (decoding
            # chunks other ranks read too); every rank must still yield n indices for DDP's collectives
            every = np.concatenate([np.arange(a, b) for a, b in (self.chunks[int(i)] for i in order)])
            flat = every[self.rank :: self.num_replicas] if len(every) > self.rank else every
        if 0 < len(flat) < n:
            flat = np.concatenate([flat, np.resize(flat, n - len(flat))])
        return iter(int(i) for i in flat[:n])
