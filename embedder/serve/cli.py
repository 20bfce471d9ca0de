"""The query commands: ``embedder probe``, ``embedder region`` and ``embedder export``."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from embedder.geo import add_bbox_option, bbox_argv
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.export import (
    export_region,
)
from embedder.serve.parse import (
    NoDataError,
    RegionTooLargeError,
    ServeError,
    parse_bbox,
    parse_period,
)
from embedder.serve.query import (
    REDUCERS,
    PartialResultWarning,
    probe,
    read_region,
    series_csv,
)
from embedder.store import (
    StoreError,
)

__all__ = [
    "EXIT_PARTIAL",
    "cli_export",
    "cli_probe",
    "cli_region",
]

# ---------------------------------------------------------------------------------------------------
# command line: embedder probe / region / export
# ---------------------------------------------------------------------------------------------------


def _cli_common(prog: str, doc: str | None) -> Any:
    import argparse

    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("url", help="store URL (path, file://, gs://, s3://)")
    p.add_argument("--storage-options", default=None, help="fsspec storage options as JSON")
    return p


def _region_query(a: Any) -> dict[str, Any]:
    """``--bbox``, ``--start`` and ``--end`` parsed once (:class:`ServeError`, exit 2, if bad), with the window."""
    period = parse_period(a.start, a.end)
    return {"bbox": parse_bbox(a.bbox), "start": period.start, "end": period.end, "window": a.window}


def _region_args(p: Any) -> None:
    add_bbox_option(p, required=True)
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--window", default=None, help="aggregate over windows: 10D, W, MS, season, YS (default: per date)"
    )
    p.add_argument("--reduce", default="mean", choices=REDUCERS, help="how to aggregate a window")


EXIT_PARTIAL = 4
"""Exit status of ``embedder probe/region/export`` when the result is partial: it was printed or written,
but damaged chunks of the store could not be read (NaN or left out; ``PARTIAL: ...`` on stderr)."""


class _PendingTaskNoise:
    """Drops asyncio's "Task was destroyed but it is pending!" lines.

    zarr leaves them at exit after a damaged chunk aborted a read (nothing is lost: it was reported).
    """

    def filter(self, record: Any) -> bool:
        return "Task was destroyed but it is pending" not in str(record.msg)


def _run_cli(fn: Any) -> int:
    """Run ``fn`` and map its outcome to one stderr line and an exit status.

    0: done; 1: the request is over a size limit (``too large: ...``); 2: bad input or a store error,
    a damaged chunk the request cannot do without included (``error: ...``); 3: no data there
    (``no data: ...``); :data:`EXIT_PARTIAL` (4): the result was printed or written but parts of it
    could not be read (``PARTIAL: ...`` lines name the damaged chunks and the repair command).
    """
    import logging
    import sys
    import warnings

    logging.getLogger("asyncio").addFilter(_PendingTaskNoise())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PartialResultWarning)
        try:
            status = int(fn())
        except NoDataError as exc:
            print(f"no data: {exc}", file=sys.stderr)
            return 3
        except RegionTooLargeError as exc:
            print(f"too large: {exc}", file=sys.stderr)
            return 1
        except (ServeError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    partial = [w for w in caught if issubclass(w.category, PartialResultWarning)]
    for w in partial:
        print(str(w.message), file=sys.stderr)  # "PARTIAL ...: n damaged chunk(s) ..."
    for w in caught:
        if not issubclass(w.category, PartialResultWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return EXIT_PARTIAL if partial and status == 0 else status


def cli_probe(argv: list[str]) -> int:
    """``embedder probe STORE LON LAT``: one pixel's embedding time series as CSV or JSON (exit 3: no data)."""
    p = _cli_common("embedder probe", cli_probe.__doc__)
    p.add_argument("lon", type=float, help="longitude, degrees east")
    p.add_argument("lat", type=float, help="latitude, degrees north")
    p.add_argument("--start", default=None, help="first date, YYYY-MM-DD")
    p.add_argument("--end", default=None, help="last date, YYYY-MM-DD (inclusive)")
    p.add_argument("--format", default="csv", choices=("csv", "json"), help="output format")
    a = p.parse_args(argv)

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        s = probe(a.url, a.lon, a.lat, start=a.start, end=a.end, storage_options=so)
        print(
            json.dumps(s.to_json(), indent=1) if a.format == "json" else series_csv([s]),
            end="\n" if a.format == "json" else "",
        )
        if s.status not in ("ok", "partial"):  # partial: PARTIAL on stderr, exit 4 (_run_cli)
            raise NoDataError(s.reason)
        return 0

    return _run_cli(run)


def _max_mib_arg(p: Any) -> None:
    from embedder.config import ServeConfig

    p.add_argument(
        "--max-mib", type=float, default=ServeConfig.max_request_mib,
        help="refuse, before reading, a request needing more memory than this many MiB "
        f"(default {ServeConfig.max_request_mib:g})",
    )  # fmt: skip


def cli_region(argv: list[str]) -> int:
    """``embedder region STORE --bbox ... --start ... --end ...``: summarise a region per date or window."""
    p = _cli_common("embedder region", cli_region.__doc__)
    _region_args(p)
    _max_mib_arg(p)
    a = p.parse_args(bbox_argv(argv, p))

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        ds = read_region(a.url, **_region_query(a), reduce=a.reduce, max_mib=a.max_mib, storage_options=so)
        emb = ds["embedding"].values  # [T, 7, h, w]
        print(
            f"zone {ds.attrs['zone']} {ds.rio.crs}  {ds.sizes['y']} x {ds.sizes['x']} px  window: {ds.attrs['window']}"
        )
        print("time        valid%  " + "  ".join(f"f{i}_mean" for i in range(EMBEDDING_DIM)))
        for t in range(emb.shape[0]):
            ok = np.isfinite(emb[t]).all(axis=0)  # [h, w]
            means = [float(emb[t, f][ok].mean()) if ok.any() else float("nan") for f in range(EMBEDDING_DIM)]
            print(
                f"{str(ds['time'].values[t])[:10]}  {100 * ok.mean():6.1f}  "
                + "  ".join(f"{m:7.3f}" for m in means)
            )
        return 0

    return _run_cli(run)


def cli_export(argv: list[str]) -> int:
    """``embedder export STORE OUT --bbox ... --start ... --end ...``: write a region to .tif, .nc or .zarr."""
    p = _cli_common("embedder export", cli_export.__doc__)
    p.add_argument("out", help="output file: .tif (GeoTIFF), .nc (NetCDF) or .zarr")
    _region_args(p)
    _max_mib_arg(p)
    from embedder.config import ServeConfig

    p.add_argument(
        "--max-gib", type=float, default=ServeConfig.max_export_gib,
        help=f"refuse, before reading, an export of more float32 values than this many GiB "
        f"(default {ServeConfig.max_export_gib:g})",
    )  # fmt: skip
    a = p.parse_args(bbox_argv(argv, p))

    def run() -> int:
        so = json.loads(a.storage_options) if a.storage_options else None
        out = export_region(a.url, dest=a.out, **_region_query(a), reduce=a.reduce, max_gib=a.max_gib,
                            max_mib=a.max_mib, storage_options=so)  # fmt: skip
        print(f"wrote {out}")
        return 0

    return _run_cli(run)
