"""The embedding store: a Zarr v3 hierarchy of per-date 7-d embeddings on UTM 10 m grids.

Layout (docs/store.md has the reasoning and the measured numbers)::

    <url>/zarr.json                       root group: store attrs (emb:, geoemb:, model, fingerprint)
    <url>/utm32N/zarr.json                one group per UTM zone (proj:/spatial: attrs)
    <url>/utm32N/embedding                (time, feature, y, x) uint16, value = code * quant_step, 65535 = none
    <url>/utm32N/flags                    (time, y, x) uint8 bit flags (:class:`Flag`), 0 = no embedding
    <url>/utm32N/valid_px                 (time, tile_y, tile_x) uint32 per-date valid-observation count
    <url>/utm32N/time, y, x, spatial_ref  daily time axis from 2015-01-01, pixel centres, CF grid mapping
    <url>/_plan.json                      the planned tiles and periods (what "complete" means)
    <url>/_units/<zone>/<unit id>.json    done markers, written last (dates, counts, object checksums)
    <url>/_failures/<zone>/<unit id>.json failed units with their reasons

The time axis is daily: index = days since 2015-01-01. A work unit (tile x period block,
:mod:`embedder.grid`) is exactly one shard of each array, so it is written as one object per array:
the shard is encoded in memory and put whole, then the done-marker is put. Writers of different units
never touch the same object; a unit without a marker is rewritten (its objects replaced whole).

Import everything from here (``from embedder.store import ...``); the modules of the package are:

- :mod:`embedder.store.writer`: :func:`create_store` (the template), :func:`write_unit`, done-markers
  and failures;
- :mod:`embedder.store.reader`: :class:`SeriesReader` (pixel series by byte range), :func:`open_store`;
- :mod:`embedder.store.verify`: :func:`verify` (``embedder verify``), :func:`units_of`;
- ``_layout`` (format, :class:`StoreError`, :class:`Flag`, :class:`Store`, zone extents,
  georeferencing), ``_codec`` (quantisation, the shard codec) and ``_fs`` (URL -> filesystem, object IO).
"""

from __future__ import annotations

from embedder.config import StoreConfig
from embedder.store._codec import (
    FILL_CODE,
    MISSING_CHUNK,
    ChunkRef,
    ShardIndex,
    decode_chunk,
    dequantise,
    encode_shard,
    quantise,
)
from embedder.store._fs import get_json, put_object, url_to_fs, zarr_store
from embedder.store._layout import (
    CHUNK_CHECKSUM,
    STORE_FORMAT,
    CorruptChunkError,
    Flag,
    Store,
    StoreError,
    StoreMetadataError,
    ZoneExtent,
    as_store,
    unit_marker,
    zone_attrs,
)
from embedder.store.reader import PixelSeries, SeriesReader, open_store
from embedder.store.verify import VerifyReport, cli_verify, units_of, verify
from embedder.store.writer import (
    UnitWrite,
    code_fingerprint,
    create_store,
    is_done,
    list_done,
    list_failures,
    record_failure,
    write_unit,
)

__all__ = [
    "CHUNK_CHECKSUM",
    "FILL_CODE",
    "MISSING_CHUNK",
    "STORE_FORMAT",
    "ChunkRef",
    "CorruptChunkError",
    "Flag",
    "PixelSeries",
    "SeriesReader",
    "ShardIndex",
    "Store",
    "StoreConfig",
    "StoreError",
    "StoreMetadataError",
    "UnitWrite",
    "VerifyReport",
    "ZoneExtent",
    "as_store",
    "cli_verify",
    "code_fingerprint",
    "create_store",
    "decode_chunk",
    "dequantise",
    "encode_shard",
    "get_json",
    "is_done",
    "list_done",
    "list_failures",
    "open_store",
    "put_object",
    "quantise",
    "record_failure",
    "unit_marker",
    "units_of",
    "url_to_fs",
    "verify",
    "write_unit",
    "zarr_store",
    "zone_attrs",
]
