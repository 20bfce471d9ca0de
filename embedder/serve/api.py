"""Queries on an embedding store: point series, bulk points, regions, time windows, exports, RGB PCA.

Everything reads only the chunks it needs through zarr (any fsspec URL: local, ``gs://``, ``s3://``)::

    reader = StoreReader("gs://bucket/emb.zarr")
    series = probe(reader, 8.01, 45.9, start="2021-01-01", end="2021-12-31")   # PointSeries
    ds = read_region(reader, (8.0, 45.9, 8.02, 45.92), start="2021-01-01", end="2021-12-31", window="MS")
    export_region(reader, bbox, "out.tif", start=..., end=..., window="QS-DEC")

Points and regions are given in lon/lat (EPSG:4326); a point is served from the store group of its own
UTM zone (or, near zone borders, from another zone group whose extent holds it). Regions come back on
the native 10 m grid of one zone group (that of the bbox centre when the store has it).

This module is the public facade; the rooms behind it: :mod:`~embedder.serve.parse` (errors, dates, bboxes,
windows), :mod:`~embedder.serve.reader` (:class:`StoreReader`), :mod:`~embedder.serve.query` (points and
regions), :mod:`~embedder.serve.export`, :mod:`~embedder.serve.colour` (the RGB PCA) and
:mod:`~embedder.serve.cli` (``embedder probe``, ``region``, ``export``).
"""

from __future__ import annotations

from embedder.serve.cli import (
    cli_export,
    cli_probe,
    cli_region,
)
from embedder.serve.colour import (
    PCA_SIDECAR,
    apply_pca,
    default_cache_dir,
    pca_cache_path,
    rgb_pca,
)
from embedder.serve.export import (
    export_region,
)
from embedder.serve.parse import (
    NoDataError,
    RegionTooLargeError,
    ServeError,
    parse_bbox,
    parse_date,
    parse_period,
    window_bins,
)
from embedder.serve.query import (
    CSV_HEADER,
    REDUCERS,
    PartialResultWarning,
    PointSeries,
    check_region,
    iter_region_strips,
    probe,
    read_region,
    sample_points,
    series_csv,
)
from embedder.serve.reader import (
    StoreReader,
)

__all__ = [
    "CSV_HEADER",
    "PCA_SIDECAR",
    "REDUCERS",
    "NoDataError",
    "PartialResultWarning",
    "PointSeries",
    "RegionTooLargeError",
    "ServeError",
    "StoreReader",
    "apply_pca",
    "check_region",
    "cli_export",
    "cli_probe",
    "cli_region",
    "default_cache_dir",
    "export_region",
    "iter_region_strips",
    "parse_bbox",
    "parse_date",
    "parse_period",
    "pca_cache_path",
    "probe",
    "read_region",
    "rgb_pca",
    "sample_points",
    "series_csv",
    "window_bins",
]
