"""The read-only HTTP service of an embedding store (FastAPI): points, regions, map tiles, STAC, web map.

``embedder serve STORE`` runs :func:`create_app` under uvicorn. Endpoints (OpenAPI docs at ``/docs``):

=====================================  ===============================================================
``GET /``                               the web map (``static/index.html``; no external JS or CSS)
``GET /api/info``                       zones, lon/lat bboxes, dates with data, layout, model
``GET /api/dates``                      dates with data (optionally within ``start``/``end``)
``GET /api/probe``                      one pixel's time series (JSON or CSV)
``POST /api/points``                    many points' time series (JSON or CSV)
``GET /api/region``                     a region extract, per date or windowed (NetCDF, GeoTIFF, JSON)
``GET /tiles/{z}/{x}/{y}.png``          XYZ tile: the embedding as RGB (the store's fixed PCA)
``GET /stac/collection.json``           the store's STAC Collection; ``/stac/items/{id}`` its Items
``GET /health``                         ``ok``/``degraded``, whether chunks are checksummed, damage seen
=====================================  ===============================================================

Bad input answers 422 (what is wrong and what to give), a request over a size limit 413 (its size and the
limit), a place without data 404, a request whose only data is in damaged chunks 409 (``status:
"damaged"``, the chunks and the repair command). A result with some damaged chunks is answered (200) with
what could be read: NaN/null or transparent pixels there, never zeros, ``"partial"``/``"unreadable"`` in
JSON and the header ``X-Embedder-Partial`` (the number of damaged chunks and the first). The service never
writes to the store.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from swagger_ui_bundle import swagger_ui_path

from embedder._cache import LRUCache
from embedder.config import ServeConfig
from embedder.geo import UtmZone, day_index
from embedder.grid import PIXEL_M
from embedder.serve.api import (
    NoDataError,
    RegionTooLargeError,
    ServeError,
    StoreReader,
    apply_pca,
    check_region,
    default_cache_dir,
    export_region,
    parse_bbox,
    parse_date,
    probe,
    read_region,
    rgb_pca,
    sample_points,
    series_csv,
)
from embedder.serve.parse import parse_period
from embedder.serve.query import quiet_partial, unique_errors
from embedder.store import CorruptChunkError, StoreError, dequantise

__all__ = ["STATIC_DIR", "TileRenderer", "cli_serve", "create_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The web map's files (HTML, JS, CSS), all served by this app."""
TILE_PX = 256
"""Side of an XYZ map tile in pixels."""
_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_EARTH_M = 6378137.0
PARTIAL_HEADER = "X-Embedder-Partial"
"""Response header of a partial answer: ``<n> damaged chunk(s); first: <array> <key> ...``."""


def _partial_headers(errors: Sequence[CorruptChunkError]) -> dict[str, str]:
    """The :data:`PARTIAL_HEADER` for ``errors`` (none when empty); ASCII, one line."""
    if not errors:
        return {}
    text = f"{len(errors)} damaged chunk(s); first: {errors[0].short()}"
    return {PARTIAL_HEADER: text.encode("ascii", "replace").decode()[:300]}


Lon = Annotated[float, Query(ge=-180, le=180, description="longitude, degrees east (EPSG:4326)")]
Lat = Annotated[float, Query(ge=-90, le=90, description="latitude, degrees north (EPSG:4326)")]
Date = Annotated[str | None, Query(pattern=_DATE_PATTERN, description="YYYY-MM-DD (inclusive)")]
Fmt = Annotated[Literal["json", "csv"], Query(description="response format")]


class PointsRequest(BaseModel):
    """Body of ``POST /api/points``."""

    points: list[tuple[Annotated[float, Field(ge=-180, le=180)], Annotated[float, Field(ge=-90, le=90)]]] = (
        Field(..., description="[[lon, lat], ...] in degrees", max_length=ServeConfig.max_points)
    )
    start: str | None = Field(None, pattern=_DATE_PATTERN, description="YYYY-MM-DD (inclusive)")
    end: str | None = Field(None, pattern=_DATE_PATTERN, description="YYYY-MM-DD (inclusive)")


def _mercator_lonlat(z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of the 256 x 256 pixel centres of XYZ tile ``(z, x, y)`` (Web Mercator)."""
    n = 2**z
    frac = (np.arange(TILE_PX) + 0.5) / TILE_PX
    lon = (x + frac) / n * 360.0 - 180.0  # [256]
    merc_y = math.pi * (1 - 2 * (y + frac) / n)  # [256]
    lat = np.degrees(np.arctan(np.sinh(merc_y)))
    return np.broadcast_to(lon[None, :], (TILE_PX, TILE_PX)), np.broadcast_to(
        lat[:, None], (TILE_PX, TILE_PX)
    )


class TileRenderer:
    """Renders XYZ tiles of a store as PNG: the fixed PCA of the 7 features as RGB, nearest pixel."""

    def __init__(self, reader: StoreReader, *, pca: dict[str, Any], cache_tiles: int = 512) -> None:
        self.reader = reader
        self.pca = pca
        self._cache: LRUCache[tuple[Any, ...], tuple[bytes, list[CorruptChunkError]]] = LRUCache(cache_tiles)
        self._lock = threading.Lock()

    def render(
        self, z: int, x: int, y: int, *, date: Any = None, start: Any = None, end: Any = None
    ) -> bytes:
        """PNG bytes of one tile for ``date``, or the mean over the store dates in ``[start, end]``."""
        return self.render_checked(z, x, y, date=date, start=start, end=end)[0]

    def render_checked(
        self, z: int, x: int, y: int, *, date: Any = None, start: Any = None, end: Any = None
    ) -> tuple[bytes, list[CorruptChunkError]]:
        """As :meth:`render`, with the damaged chunks the tile could not read (transparent there).

        A tile whose native window needs more than ``ServeConfig.max_request_mib`` raises
        :class:`RegionTooLargeError` before reading.
        """
        if not 0 <= z <= 24:
            raise ServeError(f"zoom z={z} must be in 0..24")
        if not (0 <= x < 2**z and 0 <= y < 2**z):
            raise ServeError(f"tile x={x}, y={y} is outside zoom {z} (0..{2**z - 1})")
        if date is not None:
            if start is not None or end is not None:
                raise ServeError("give either date=YYYY-MM-DD or start=/end= (a window), not both")
            d0 = d1 = parse_date(date, name="date")
        elif start is not None and end is not None:
            period = parse_period(start, end)
            d0, d1 = period.start, period.end
        else:
            raise ServeError("a tile needs date=YYYY-MM-DD, or start= and end= for a window mean")
        key = (z, x, y, d0, d1)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        lost: list[CorruptChunkError] = []
        png = _png(self._rgba(z, x, y, d0, d1, lost))
        with self._lock:
            self._cache.put(key, (png, unique_errors(lost)))
        return png, unique_errors(lost)

    def _rgba(
        self, z: int, x: int, y: int, d0: dt.date, d1: dt.date, lost: list[CorruptChunkError]
    ) -> np.ndarray:
        r = self.reader
        lon, lat = _mercator_lonlat(z, x, y)
        rgba = np.zeros((TILE_PX, TILE_PX, 4), dtype=np.uint8)  # transparent where no data
        filled = np.zeros((TILE_PX, TILE_PX), dtype=bool)
        for zi in r.zones.values():
            # standard zones cover 6 degrees (+ a margin for tiles that overlap the zone border)
            central = UtmZone.from_epsg(zi.zone.epsg).central_lon
            near = np.abs(lon - central) < 4.5
            if not near.any():
                continue
            flat_near = np.flatnonzero(near.ravel())  # [M] indices into the tile's pixels
            px, py = r.project(zi, lon[near], lat[near])  # [M] metres in the zone CRS
            bad = ~(np.isfinite(px) & np.isfinite(py))
            px[bad], py[bad] = -1e12, -1e12  # outside every extent
            col = np.floor((px - zi.x0) / PIXEL_M).astype(np.int64)
            row = np.floor((zi.y0 - py) / PIXEL_M).astype(np.int64)
            inside = (col >= 0) & (col < zi.nx) & (row >= 0) & (row < zi.ny) & ~filled.ravel()[flat_near]
            if not inside.any():
                continue
            tgt, col, row = flat_near[inside], col[inside], row[inside]  # [N]
            r0, r1, c0, c1 = int(row.min()), int(row.max()) + 1, int(col.min()), int(col.max()) + 1
            if max(r1 - r0, c1 - c0) > r.cfg.max_tile_native_px:  # zoomed out: show the coverage only
                rgba.reshape(-1, 4)[tgt] = (128, 128, 128, 96)
                filled.ravel()[tgt] = True
                continue
            ys, xs = slice(r0, r1), slice(c0, c1)
            days = r.region_days(zi.name, day_index(d0), day_index(d1) + 1, ys, xs)
            if days.size > r.cfg.max_tile_dates:
                raise ServeError(
                    f"the window {d0}..{d1} holds {days.size} store dates here, over the tile limit of "
                    f"{r.cfg.max_tile_dates}; choose a shorter window"
                )
            if days.size == 0:
                continue
            # only the native pixels the tile samples (each once), read point-wise: [T, 7, U]
            flat_px, inverse = np.unique(row * zi.nx + col, return_inverse=True)  # [U], [N]
            need = days.size * 7 * flat_px.size * (2 + 4 + 4)  # codes, values, the masked copy
            if need > r.cfg.max_request_mib * 2**20:
                raise RegionTooLargeError(
                    f"the tile needs {days.size} dates x 7 x {flat_px.size} px = {need / 2**20:,.1f} MiB, over "
                    f"the limit of {r.cfg.max_request_mib:g} MiB (ServeConfig.max_request_mib); choose a "
                    "shorter window"
                )
            ur, uc = flat_px // zi.nx, flat_px % zi.nx
            codes, bad, errors = r.read_points_checked(zi.name, days, ur, uc)  # [T, 7, U] uint16
            lost += errors
            emb = dequantise(np.asarray(codes), step=r.quant_step)  # [T, 7, U]
            ok = np.isfinite(emb).all(axis=1)  # [T, U]
            n = ok.sum(axis=0)  # [U]
            mean = np.where(ok[:, None], emb, 0).sum(axis=0) / np.maximum(n, 1)  # [7, U]
            mean[:, n == 0] = np.nan
            if (
                bad is not None
            ):  # a pixel missing any date of the window: transparent, never a mean of the rest
                mean[:, bad.any(axis=0)] = np.nan
            pix = mean[:, inverse].T  # [N, 7]
            colours = apply_pca(pix, self.pca)  # [N, 4]
            has = colours[:, 3] > 0
            rgba.reshape(-1, 4)[tgt[has]] = colours[has]
            filled.ravel()[tgt[has]] = True
        return rgba


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def create_app(
    store: str | StoreReader,
    *,
    storage_options: dict[str, Any] | None = None,
    cfg: ServeConfig | None = None,
    cache_dir: str | Path | None = None,
) -> Any:
    """The FastAPI app serving ``store`` read-only (see the module docstring for the endpoints).

    Nothing is written into the store. The map's fixed RGB PCA (:func:`~embedder.serve.api.rgb_pca`) is
    computed on the first tile request, not at start-up, and kept in ``cache_dir`` when given (the CLI
    uses :func:`~embedder.serve.api.default_cache_dir`), so a restart does not refit it. ``/docs`` serves
    Swagger UI from the installed ``swagger-ui-bundle`` package: it works offline.
    """
    from embedder.stac_store import store_collection

    reader = (
        store
        if isinstance(store, StoreReader)
        else StoreReader(store, storage_options=storage_options, cfg=cfg)
    )
    renderers: list[TileRenderer] = []
    renderer_lock = threading.Lock()

    def get_renderer() -> TileRenderer:
        """The tile renderer, built with the PCA on first use (NoDataError for a store without data)."""
        with renderer_lock:
            if not renderers:
                renderers.append(TileRenderer(reader, pca=rgb_pca(reader, cache_dir=cache_dir)))
            return renderers[0]

    collection = store_collection(reader.url, storage_options=reader.store.storage_options).to_dict(
        include_self_link=False, transform_hrefs=False
    )
    items = {
        i.id: i.to_dict(include_self_link=False, transform_hrefs=False)
        for i in store_collection(reader.url, storage_options=reader.store.storage_options).get_items()
    }
    collection["links"] = [link for link in collection.get("links", []) if link.get("rel") != "item"] + [
        {"rel": "item", "href": f"/stac/items/{i}", "type": "application/geo+json"} for i in items
    ]
    info = reader.info()

    app = FastAPI(
        docs_url=None,  # replaced below by a page whose assets are served from here, not from a CDN
        title="embedder store service",
        version="1",
        description=(
            "Read-only access to a store of per-date 7-d Sentinel-1 + Sentinel-2 embeddings (10 m): point "
            "time series, region extracts, XYZ map tiles (a fixed PCA of the 7 features as RGB) and the "
            "store's STAC Collection. Dates are YYYY-MM-DD; coordinates are lon/lat degrees (EPSG:4326)."
        ),
    )

    @app.exception_handler(CorruptChunkError)
    def _damaged(request: Request, exc: CorruptChunkError) -> JSONResponse:
        return JSONResponse(
            status_code=409,
            content={"detail": str(exc), "status": "damaged", "unreadable": [exc.to_json()]},
            headers=_partial_headers([exc]),
        )

    @app.exception_handler(StoreError)
    def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc), "status": "store_error"})

    @app.exception_handler(RegionTooLargeError)
    def _too_large(request: Request, exc: RegionTooLargeError) -> JSONResponse:
        return JSONResponse(status_code=413, content={"detail": str(exc)})

    @app.exception_handler(NoDataError)
    def _no_data(request: Request, exc: NoDataError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc), "status": "no_data"})

    @app.exception_handler(ServeError)
    def _bad_input(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _short_errors(exc.errors())})

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Any:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/info", summary="What the store holds: zones, bboxes, dates with data, layout")
    def api_info() -> dict[str, Any]:
        return {
            **info,
            "limits": {
                k: getattr(reader.cfg, k)
                for k in ("max_region_px", "max_points", "max_tile_dates", "max_request_mib")
            },
        }

    @app.get("/health", summary="Service health: ok or degraded, and the damaged chunks met so far")
    def health() -> dict[str, Any]:
        damaged = reader.damaged
        return {
            "status": "degraded" if damaged else "ok",
            "store": reader.url,
            "checksummed": reader.store.checksummed,
            "n_damaged": len(damaged),
            "damaged": [e.to_json() for e in damaged[:100]],
            "repair": f"embedder verify {reader.url} --repair" if damaged else None,
        }

    @app.get("/api/dates", summary="Dates with at least one valid pixel")
    def api_dates(start: Date = None, end: Date = None) -> dict[str, list[str]]:
        return {"dates": [d.isoformat() for d in reader.dates(start=start, end=end)]}

    @app.get("/api/probe", summary="One pixel's embedding time series", response_model=None)
    def api_probe(lon: Lon, lat: Lat, start: Date = None, end: Date = None, format: Fmt = "json") -> Any:
        with quiet_partial():  # reported in the answer instead
            s = probe(reader, lon, lat, start=start, end=end)
        headers = _partial_headers(s.unreadable)
        if format == "csv":
            return PlainTextResponse(series_csv([s]), media_type="text/csv", headers=headers)
        return JSONResponse(s.to_json(), headers=headers) if headers else s.to_json()

    @app.post(
        "/api/points", summary="Time series at many points (grouped per zone and chunk)", response_model=None
    )
    def api_points(req: PointsRequest, format: Fmt = "json") -> Any:
        with quiet_partial():
            series = sample_points(reader, req.points, start=req.start, end=req.end)
        headers = _partial_headers(unique_errors([e for s in series for e in s.unreadable]))
        if format == "csv":
            return PlainTextResponse(series_csv(series), media_type="text/csv", headers=headers)
        body = {"series": [s.to_json() for s in series]}
        return JSONResponse(body, headers=headers) if headers else body

    @app.get(
        "/api/region",
        summary="A region on its native 10 m grid, per date or aggregated over windows",
        response_model=None,
        responses={413: {"description": "region over the size limit"}, 404: {"description": "no data there"}},
    )
    def api_region(
        bbox: Annotated[str, Query(description="min_lon,min_lat,max_lon,max_lat (degrees)")],
        start: Annotated[str, Query(pattern=_DATE_PATTERN, description="YYYY-MM-DD (inclusive)")],
        end: Annotated[str, Query(pattern=_DATE_PATTERN, description="YYYY-MM-DD (inclusive)")],
        window: Annotated[
            str | None, Query(description="none: per date; '10D', 'W', 'MS', 'season', 'YS'", max_length=16)
        ] = None,
        reduce: Literal["mean", "median", "min", "max"] = "mean",
        format: Literal["netcdf", "geotiff", "json"] = "netcdf",
    ) -> Any:
        period = parse_period(start, end)  # parsed once here, passed on as objects (422 if bad)
        box = parse_bbox(bbox)
        kw: dict[str, Any] = {"start": period.start, "end": period.end, "window": window, "reduce": reduce}
        if format == "json":
            with quiet_partial():
                ds = read_region(reader, box, **kw)
            emb = ds["embedding"].values  # [T, 7, h, w]
            body = {
                "crs": f"EPSG:{ds.rio.crs.to_epsg()}",
                "transform": list(ds.rio.transform())[:6],
                "shape": list(emb.shape),
                "time": [str(t)[:10] for t in ds["time"].values],
                "embedding": np.where(
                    np.isfinite(emb), np.round(emb, 5), np.array(None)
                ).tolist(),  # NaN -> null
            }
            if not ds.attrs.get("partial"):
                return body
            body.update(partial=True, unreadable=list(ds.attrs["unreadable"]))
            return JSONResponse(body, headers={PARTIAL_HEADER: f"{len(body['unreadable'])} damaged chunk(s)"})
        check_region(reader, box, **kw)  # limits, as for json
        with tempfile.TemporaryDirectory() as tmp:
            suffix = ".nc" if format == "netcdf" else ".tif"
            with quiet_partial():
                out = export_region(reader, box, Path(tmp) / f"region{suffix}", **kw)
            data = out.read_bytes()
            unreadable = _file_unreadable(out)
        media = "application/x-netcdf" if format == "netcdf" else "image/tiff"
        headers = {"Content-Disposition": f'attachment; filename="region{suffix}"'}
        if unreadable:
            headers[PARTIAL_HEADER] = (
                f"{len(unreadable)} damaged chunk(s); see the file's 'unreadable' metadata"
            )
        return Response(data, media_type=media, headers=headers)

    @app.get(
        "/tiles/{z}/{x}/{y}.png",
        summary="XYZ map tile: the embedding as RGB (fixed PCA), for a date or the mean over a window",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def tile(
        z: int,
        x: int,
        y: int,
        date: Date = None,
        start: Date = None,
        end: Date = None,
    ) -> Response:
        png, lost = get_renderer().render_checked(z, x, y, date=date, start=start, end=end)
        if lost:  # damaged area transparent; not cached downstream (a repair will fill it)
            return Response(
                png, media_type="image/png", headers={"Cache-Control": "no-store", **_partial_headers(lost)}
            )
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/stac/collection.json", summary="The store's STAC Collection")
    def stac_collection() -> dict[str, Any]:
        return collection

    @app.get("/stac/items", summary="The store's STAC Items (one per UTM zone group)")
    def stac_items() -> dict[str, Any]:
        return {"type": "FeatureCollection", "features": list(items.values())}

    @app.get("/stac/items/{item_id}", summary="One STAC Item")
    def stac_item(item_id: str) -> dict[str, Any]:
        if item_id not in items:
            raise NoDataError(f"no STAC item {item_id!r}; the store's items are {', '.join(sorted(items))}")
        return items[item_id]

    app.state.reader = reader
    app.state.get_renderer = get_renderer
    return app


def _file_unreadable(path: Path) -> list[str]:
    """The ``unreadable`` metadata an export wrote into ``path`` (NetCDF attribute or GeoTIFF tag), if any."""
    if path.suffix == ".tif":
        import rasterio

        with rasterio.open(path) as f:
            text = f.tags().get("unreadable", "")
    else:
        import xarray as xr

        with xr.open_dataset(path, engine="scipy") as ds:
            text = str(ds.attrs.get("unreadable", ""))
    return [t for t in text.split("; ") if t]


_EXCERPT_CHARS = 80
"""Longest excerpt of a rejected input a validation error repeats back."""


def _short_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors without the request body: location, message and a short excerpt of the input."""
    out = []
    for err in list(errors)[:20]:
        item = {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", ""))[:200],
            "type": err.get("type"),
        }
        if "input" in err:
            text = repr(err["input"])
            item["input"] = text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 3] + "..."
        out.append(item)
    return out


def cli_serve(argv: list[str]) -> int:
    """``embedder serve STORE``: the read-only HTTP service and web map of a store (uvicorn)."""
    import argparse
    import json

    import uvicorn

    p = argparse.ArgumentParser(prog="embedder serve", description=cli_serve.__doc__)
    p.add_argument("url", help="store URL (path, file://, gs://, s3://)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--storage-options", default=None, help="fsspec storage options as JSON")
    p.add_argument(
        "--cache-dir", type=Path, default=None,
        help="folder for the server's caches (the map's PCA); default $EMBEDDER_CACHE_DIR or "
        "~/.cache/embedder. Nothing is ever written into the store.",
    )  # fmt: skip
    p.add_argument("--no-cache", action="store_true", help="keep the caches in memory only")
    p.add_argument(
        "--max-region-px", type=int, default=ServeConfig.max_region_px, help="region size limit (pixels)"
    )
    p.add_argument(
        "--max-request-mib", type=float, default=ServeConfig.max_request_mib,
        help="memory one region or tile request may allocate, in MiB; larger ones answer 413 "
        f"(default {ServeConfig.max_request_mib:g})",
    )  # fmt: skip
    a = p.parse_args(argv)
    so = json.loads(a.storage_options) if a.storage_options else None
    # a missing or damaged store (StoreError, StoreMetadataError): one line from `embedder`, exit 1
    cfg = ServeConfig(max_region_px=a.max_region_px, max_request_mib=a.max_request_mib)
    app = create_app(a.url, storage_options=so, cfg=cfg,
                     cache_dir=None if a.no_cache else (a.cache_dir or default_cache_dir()))  # fmt: skip
    print(f"serving {a.url} on http://{a.host}:{a.port}/ (API docs at /docs)")
    uvicorn.run(app, host=a.host, port=a.port, log_level="info")
    return 0
