"""The bytes of the store's arrays: quantisation of embeddings to uint16 codes, and the shard codec."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from embedder.config import StoreConfig
from embedder.store._layout import CorruptChunkError, StoreError

FILL_CODE = 65535
"""uint16 code of "no embedding" (CF ``_FillValue``); codes 0..65534 are values ``code * quant_step``."""


# ---------------------------------------------------------------------------------------------------
# quantisation
# ---------------------------------------------------------------------------------------------------


def quantise(values: np.ndarray, *, step: float) -> tuple[np.ndarray, int]:
    """Float embeddings -> uint16 codes ``round(v / step)``; NaN -> :data:`FILL_CODE`.

    Values below 0 (Softplus outputs are >= 0; tiny negatives are float noise) and above
    ``65534 * step`` are clipped. Returns the codes and the number of clipped values beyond half a step.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    q = np.rint(np.where(finite, v, 0.0) / step)
    clipped = int(np.count_nonzero(finite & ((q < -0.5) | (q > FILL_CODE - 1))))
    codes = np.clip(q, 0, FILL_CODE - 1).astype(np.uint16)
    codes[~finite] = FILL_CODE
    return codes, clipped


def dequantise(codes: np.ndarray, *, step: float) -> np.ndarray:
    """uint16 codes -> float32 values; :data:`FILL_CODE` -> NaN."""
    out = codes.astype(np.float32) * np.float32(step)
    out[codes == FILL_CODE] = np.nan
    return out


# ---------------------------------------------------------------------------------------------------
# zarr codecs: the arrays' compressors, and a shard encoded by zarr itself
# ---------------------------------------------------------------------------------------------------


def compressors(cfg: StoreConfig, *, checksum: bool = True) -> Any:
    """The zarr compressors of every store array: Blosc (the same bytes as :func:`_blosc`), then crc32c.

    The crc32c of the compressed bytes is appended when ``checksum`` (zarr verifies it on every read).
    """
    from zarr.codecs import BloscCodec, Crc32cCodec

    blosc = BloscCodec(cname="zstd", clevel=cfg.compression_level, shuffle="bitshuffle")
    return [blosc, Crc32cCodec()] if checksum else [blosc]


def crc32c(data: bytes) -> bytes:
    """The 4-byte little-endian crc32c that zarr's ``crc32c`` codec appends to a chunk."""
    import google_crc32c

    return int(google_crc32c.value(data)).to_bytes(4, "little")


def encode_with_zarr(
    *, shape: tuple[int, ...], chunks: tuple[int, ...], shards: tuple[int, ...] | None, dtype: str,
    fill_value: int, cfg: StoreConfig, blocks: Iterable[tuple[tuple[slice, ...], np.ndarray]],
    checksum: bool = True,
) -> bytes | None:  # fmt: skip
    """Encode one shard (or chunk) exactly as the store array would, in memory; None if all fill."""
    import zarr
    import zarr.storage
    from zarr.core.buffer import Buffer

    mem: dict[str, Buffer] = {}
    arr = zarr.create_array(
        zarr.storage.MemoryStore(mem),
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        fill_value=fill_value,
        compressors=compressors(cfg, checksum=checksum),
        config={"write_empty_chunks": False},
    )
    for sel, block in blocks:
        arr[sel] = block
    key = arr.metadata.encode_chunk_key((0,) * len(shape))
    buf = mem.get(key)
    return None if buf is None else buf.to_bytes()


# ---------------------------------------------------------------------------------------------------
# shards: encoded here, chunk by chunk, in the order that makes a pixel's year one byte range
# ---------------------------------------------------------------------------------------------------

MISSING_CHUNK = 2**64 - 1
"""Offset and length of an absent (all-fill) inner chunk in a shard index (zarr v3 sharding)."""


def _blosc(cfg: StoreConfig) -> Any:
    import numcodecs.blosc
    from numcodecs import Blosc

    # Blosc's own threads write compressed blocks in the order they finish (same size, other bytes);
    # off, as zarr sets it on import, so shards are bitwise reproducible. encode_shard uses a pool instead.
    numcodecs.blosc.use_threads = False

    # the bytes of zarr's BloscCodec(cname="zstd", shuffle="bitshuffle"), typesize from the dtype
    return Blosc(cname="zstd", clevel=cfg.compression_level, shuffle=Blosc.BITSHUFFLE)


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """Where each inner chunk of one shard object lies: ``offsets`` and ``nbytes`` over the chunk grid.

    The grid is the shard's chunk grid (``(period_days / chunk_days, [1,] tile_px / chunk_px,
    tile_px / chunk_px)``); absent chunks have :data:`MISSING_CHUNK` in both. It is the zarr v3 shard
    index, also saved in the unit's done-marker, so a reader gets every byte range of a unit with one
    small read (the marker) instead of one index read per array.
    """

    offsets: np.ndarray
    """uint64 byte offset of each chunk in the shard object."""
    nbytes: np.ndarray
    """uint64 encoded length of each chunk."""

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for the done-marker: the grid and the zlib-compressed index, base64."""
        import base64
        import zlib

        both = np.stack([self.offsets, self.nbytes], axis=-1).astype("<u8")
        packed = base64.b64encode(zlib.compress(both.tobytes(), 9)).decode()
        return {"grid": list(self.offsets.shape), "zlib_b64": packed}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ShardIndex:
        """Inverse of :meth:`to_json` (StoreError if it is damaged)."""
        import base64
        import zlib

        try:
            grid = tuple(int(g) for g in doc["grid"])
            both = np.frombuffer(zlib.decompress(base64.b64decode(doc["zlib_b64"])), dtype="<u8")
            both = both.reshape(*grid, 2)
        except (KeyError, ValueError, TypeError, zlib.error) as e:
            raise StoreError(f"damaged shard index in a done-marker ({e}); re-run the unit") from e
        return cls(offsets=both[..., 0].astype(np.uint64), nbytes=both[..., 1].astype(np.uint64))

    @classmethod
    def from_shard_bytes(cls, data: bytes, grid: tuple[int, ...]) -> ShardIndex:
        """Parse the index at the end of a shard object (checks its crc32c)."""
        import google_crc32c

        n = int(np.prod(grid)) * 16
        body, crc = data[-n - 4 : -4], data[-4:]
        if len(body) != n or google_crc32c.value(body) != int.from_bytes(crc, "little"):
            raise StoreError("shard index checksum mismatch: the shard object is damaged; re-run the unit")
        both = np.frombuffer(body, dtype="<u8").reshape(*grid, 2)
        return cls(offsets=both[..., 0].astype(np.uint64), nbytes=both[..., 1].astype(np.uint64))

    def present(self, coords: tuple[int, ...]) -> bool:
        """Whether the chunk at ``coords`` is stored (False: all fill)."""
        return int(self.offsets[coords]) != MISSING_CHUNK


def encode_shard(
    chunks: dict[tuple[int, ...], np.ndarray],
    grid: tuple[int, ...],
    *,
    cfg: StoreConfig,
    fill_value: int,
    checksum: bool = True,
) -> tuple[bytes, ShardIndex] | None:
    """Encode inner chunks into one zarr v3 shard object (index at the end, crc32c); None if all fill.

    With ``checksum`` each compressed chunk ends in its own crc32c (:func:`compressors`' chain), which
    :func:`decode_chunk` checks.

    ``chunks`` maps chunk-grid coordinates (time first) to arrays of the inner chunk shape. Chunks equal
    to ``fill_value`` everywhere are left out (as zarr's ``write_empty_chunks=False``). The chunks are
    laid out **spatial-major, time-minor**: all time chunks of one spatial block are adjacent, so one
    pixel's series over the whole period is a single byte range (``docs/store.md``). Zarr reads any
    order through the index.
    """
    from concurrent.futures import ThreadPoolExecutor

    import google_crc32c

    blosc = _blosc(cfg)
    keys = [k for k in sorted(chunks, key=lambda k: (k[1:], k[0])) if not (chunks[k] == fill_value).all()]
    # chunks in parallel, each single-threaded in Blosc (_blosc): bitwise reproducible objects
    with ThreadPoolExecutor(max_workers=min(4, len(keys) or 1)) as pool:
        encoded = list(pool.map(lambda k: bytes(blosc.encode(np.ascontiguousarray(chunks[k]))), keys))
    if checksum:
        encoded = [enc + crc32c(enc) for enc in encoded]
    offsets = np.full(grid, MISSING_CHUNK, dtype=np.uint64)
    nbytes = np.full(grid, MISSING_CHUNK, dtype=np.uint64)
    parts: list[bytes] = []
    pos = 0
    for key, enc in zip(keys, encoded, strict=True):
        offsets[key], nbytes[key] = pos, len(enc)
        parts.append(enc)
        pos += len(enc)
    if not parts:
        return None
    index = np.stack([offsets, nbytes], axis=-1).astype("<u8").tobytes()
    parts += [index, google_crc32c.value(index).to_bytes(4, "little")]
    return b"".join(parts), ShardIndex(offsets=offsets, nbytes=nbytes)


@dataclasses.dataclass(frozen=True)
class ChunkRef:
    """Which chunk a byte string is, for the error that names it: store URL, array, chunk key, unit."""

    store: str
    array: str
    key: str
    unit: str | None = None


def decode_chunk(
    data: bytes, shape: tuple[int, ...], dtype: Any, *, checksum: bool, ref: ChunkRef | None = None
) -> np.ndarray:
    """Decode one inner chunk of the store's arrays (Blosc, then crc32c when ``checksum``) into ``shape``.

    A checksum mismatch, a chunk Blosc cannot decode or one of the wrong size raises
    :class:`CorruptChunkError` naming ``ref``: no value of a chunk that failed is ever returned.
    """
    from numcodecs import Blosc

    def corrupt(reason: str) -> CorruptChunkError:
        r = ref or ChunkRef(store="?", array="?", key="?")
        return CorruptChunkError(r.store, r.array, r.key, reason, unit=r.unit)

    if checksum:
        if len(data) < 4 or crc32c(data[:-4]) != data[-4:]:
            raise corrupt("crc32c checksum mismatch")
        data = data[:-4]
    try:
        raw = Blosc().decode(data)
    except Exception as e:  # numcodecs raises RuntimeError/ValueError/TypeError for damaged input
        raise corrupt(f"cannot be decoded ({type(e).__name__}: {e})") from e
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(raw) != want:
        raise corrupt(f"decodes to {len(raw)} bytes, expected {want}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)
