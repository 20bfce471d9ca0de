"""A local STAC API on 127.0.0.1: item search with paging and sorting, and a SAS token endpoint.

:class:`LocalStacApi` serves a list of items (dicts or :class:`pystac.Item`) or a static catalog on disk
(e.g. a sample region's ``catalog.json``) with :mod:`http.server` in a background thread, so the
production path (:func:`embedder.data.stac.open_catalog` on an ``http://`` URL: pystac-client, paging,
sorting, Planetary Computer signing) runs offline and its requests can be counted::

    with LocalStacApi.from_catalog(region.catalog_path, sort=True) as api:
        catalog = open_catalog(api.url, cached=False)
        items = list(catalog.search("sentinel-2-l2a", bbox=bbox, start="2022-01-01", end="2022-12-31"))
        api.counts        # Counter({'landing': 1, 'search': 1})

Endpoints, laid out like Planetary Computer's:

* ``GET /api/stac/v1``: the landing page. ``conformsTo`` lists STAC API core and item search, and the
  sort extension (``.../item-search#sort``) only when the server was made with ``sort=True``, so a
  client's fallback for APIs without sorting can be tested.
* ``GET /api/stac/v1/conformance``: the same ``conformsTo`` list.
* ``GET|POST /api/stac/v1/search``: ``collections``, ``bbox`` (intersects the item bbox),
  ``datetime`` (an instant, or an interval ``a/b`` with ``..`` for an open end; matched against
  ``properties.datetime``, else ``start_datetime``), ``limit`` (default 10, capped at ``max_limit``,
  1000 like Planetary Computer) and paging through ``next`` links (a ``token`` offset; POST links carry
  the whole body). With ``sort=True``, ``sortby`` orders the hits: GET ``+properties.datetime,+id``
  (``-`` for descending), POST ``[{"field": "properties.datetime", "direction": "asc"}, ...]``;
  without it a ``sortby`` is refused (HTTP 400) and hits come in the order the items were given.
* ``GET /sas/<account>/<container>``: a fake SAS token, what ``planetary_computer.sign`` asks for
  when ``PC_SDK_SAS_URL`` is set to :attr:`LocalStacApi.sas_url`.

Every request is counted by kind in :attr:`LocalStacApi.counts` (``landing``, ``conformance``,
``search``, ``sas``, ``other``); search parameters are logged in :attr:`LocalStacApi.search_requests`.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import pystac
import pystac.utils

__all__ = ["CONFORMANCE", "SORT_CONFORMANCE", "LocalStacApi", "StacApiServerError"]

API_PATH = "/api/stac/v1"
"""Path of the landing page (as on Planetary Computer)."""

CONFORMANCE = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
)
"""Conformance classes every :class:`LocalStacApi` advertises."""

SORT_CONFORMANCE = "https://api.stacspec.org/v1.0.0/item-search#sort"
"""The sort extension's conformance class, advertised only by ``LocalStacApi(..., sort=True)``."""

_REQUEST_KINDS = ("landing", "conformance", "search", "sas", "other")


class StacApiServerError(RuntimeError):
    """The local STAC API cannot be built or used as asked (bad items, not started)."""


class _BadRequest(ValueError):
    """A search request the server refuses with HTTP 400 (the message goes to the client)."""


def _item_time(d: dict[str, Any]) -> dt.datetime:
    props = d.get("properties") or {}
    raw = props.get("datetime") or props.get("start_datetime")
    if raw is None:
        raise StacApiServerError(f"item {d.get('id')!r} has neither datetime nor start_datetime")
    t = pystac.utils.str_to_datetime(raw)
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def _parse_time(text: str, *, what: str) -> dt.datetime:
    try:
        t = pystac.utils.str_to_datetime(text)
    except ValueError:
        raise _BadRequest(f"{what} {text!r} is not an RFC 3339 datetime") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def _parse_interval(value: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``datetime`` parameter -> (start, end), None for an open end (an instant gives start == end)."""
    if value is None:
        return None, None
    text = str(value)
    if "/" not in text:
        t = _parse_time(text, what="datetime")
        return t, t
    a, b = text.split("/", 1)
    start = None if a in ("", "..") else _parse_time(a, what="datetime start")
    end = None if b in ("", "..") else _parse_time(b, what="datetime end")
    return start, end


def _parse_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


def _parse_bbox(value: Any) -> list[float] | None:
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        box = [float(v) for v in parts]
    except (TypeError, ValueError):
        raise _BadRequest(f"bbox {value!r} is not four numbers") from None
    if len(box) != 4:
        raise _BadRequest(f"bbox {value!r} has {len(box)} values; only 2D bboxes (4 values) are supported")
    return box


def _parse_sortby(value: Any) -> list[tuple[str, bool]]:
    """``sortby`` (GET text or POST list of dicts) -> [(field, descending)]."""
    if value is None:
        return []
    out: list[tuple[str, bool]] = []
    if isinstance(value, str):
        for part in value.split(","):
            # an unencoded '+' in a query string arrives as a space
            part = part.strip()
            if not part:
                continue
            descending = part.startswith("-")
            out.append((part.lstrip("+-").strip(), descending))
        return out
    if isinstance(value, list):
        for spec in value:
            if not isinstance(spec, dict) or "field" not in spec:
                raise _BadRequest(f"sortby entry {spec!r} is not {{'field': ..., 'direction': 'asc'|'desc'}}")
            direction = str(spec.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise _BadRequest(f"sortby direction {spec.get('direction')!r} is not 'asc' or 'desc'")
            out.append((str(spec["field"]), direction == "desc"))
        return out
    raise _BadRequest(f"sortby {value!r} is neither a string nor a list of {{field, direction}}")


def _sort_value(entry: tuple[dt.datetime, dict[str, Any]], field: str) -> tuple[bool, Any]:
    t, d = entry
    if field in ("properties.datetime", "datetime"):
        return False, t
    if field.startswith("properties."):
        v = (d.get("properties") or {}).get(field.removeprefix("properties."))
    else:
        v = d.get(field)
    return v is None, "" if v is None else v


class LocalStacApi:
    """A STAC API over items held in memory, served on 127.0.0.1 while the context is open.

    ``items``: item dicts (served as they are) or :class:`pystac.Item` (served as ``to_dict()``); each
    needs an ``id``, a ``collection``, a ``bbox`` and ``datetime`` (or ``start_datetime``).
    ``sort``: advertise and implement the STAC API sort extension. ``max_limit``: the largest page
    the server returns, whatever ``limit`` asks for. See the module docstring for the endpoints.
    """

    def __init__(
        self,
        items: Iterable[dict[str, Any] | pystac.Item],
        *,
        sort: bool = False,
        max_limit: int = 1000,
        default_limit: int = 10,
    ) -> None:
        if max_limit < 1 or default_limit < 1:
            raise StacApiServerError(
                f"max_limit={max_limit} and default_limit={default_limit} must be at least 1"
            )
        self.items: list[dict[str, Any]] = [
            it.to_dict(include_self_link=False, transform_hrefs=False) if isinstance(it, pystac.Item) else it
            for it in items
        ]
        self._entries: list[tuple[dt.datetime, dict[str, Any]]] = []
        for d in self.items:
            if not isinstance(d, dict) or "id" not in d or not isinstance(d.get("bbox"), list):
                raise StacApiServerError(
                    f"item {str(d)[:80]!r} is not a STAC item dict with an id and a bbox; "
                    "pass pystac Items or their to_dict()"
                )
            self._entries.append((_item_time(d), d))
        self.sort = sort
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.counts: collections.Counter[str] = collections.Counter()
        """Requests answered, by kind: ``landing``, ``conformance``, ``search``, ``sas``, ``other``."""
        self.search_requests: list[dict[str, Any]] = []
        """Parameters of every search request (GET query or POST body), in arrival order."""
        self.token_requests: list[str] = []
        """Paths of the SAS token requests (``/sas/<account>/<container>``)."""
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_catalog(cls, path: str | Path, **kwargs: Any) -> LocalStacApi:
        """Serve every item of a static catalog on disk (``catalog.json`` or its folder).

        Asset hrefs are made absolute (local paths, readable by the cube loader); the items' own links
        (to the files of the static catalog) are dropped. ``kwargs`` go to the constructor.
        """
        from embedder.data.stac import catalog_file

        root = pystac.Catalog.from_file(str(catalog_file(path)))
        items = []
        for item in root.get_items(recursive=True):
            item.make_asset_hrefs_absolute()
            d = item.to_dict(include_self_link=False, transform_hrefs=False)
            d["links"] = []
            items.append(d)
        return cls(items, **kwargs)

    # ----------------------------------------------------------------------------------------------
    # Running

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._server is None:
            raise StacApiServerError("the local STAC API is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The landing page URL, what :func:`~embedder.data.stac.open_catalog` takes."""
        return f"{self.base}{API_PATH}"

    @property
    def sas_url(self) -> str:
        """The SAS token endpoint, for ``PC_SDK_SAS_URL`` (planetary_computer asks ``{sas_url}/<account>/<container>``)."""
        return f"{self.base}/sas"

    @property
    def total_requests(self) -> int:
        """All requests answered so far (every kind)."""
        with self._lock:
            return sum(self.counts.values())

    def reset_counts(self) -> None:
        """Forget the counts and the request logs (the items stay)."""
        with self._lock:
            self.counts.clear()
            self.search_requests.clear()
            self.token_requests.clear()

    def start(self) -> LocalStacApi:
        """Start serving in a daemon thread (idempotent); :meth:`close` stops."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="local-stac-api", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the server and free its port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server, self._thread = None, None

    def __enter__(self) -> LocalStacApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not running"
        return f"LocalStacApi({len(self.items)} items, sort={self.sort}, {where})"

    # ----------------------------------------------------------------------------------------------
    # What the handler calls

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _conforms_to(self) -> list[str]:
        return [*CONFORMANCE, *([SORT_CONFORMANCE] if self.sort else [])]

    def _landing(self) -> dict[str, Any]:
        url = self.url
        links = [
            {"rel": "self", "href": url, "type": "application/json"},
            {"rel": "root", "href": url, "type": "application/json"},
            {"rel": "conformance", "href": f"{url}/conformance", "type": "application/json"},
        ]
        links += [
            {"rel": "search", "type": "application/geo+json", "href": f"{url}/search", "method": m}
            for m in ("GET", "POST")
        ]
        return {
            "type": "Catalog",
            "id": "local-stac-api",
            "description": "local STAC API (embedder.testing.stac_api)",
            "stac_version": "1.0.0",
            "conformsTo": self._conforms_to(),
            "links": links,
        }

    def _search(self, params: dict[str, Any], method: str) -> dict[str, Any]:
        with self._lock:
            self.search_requests.append(dict(params))
        colls = _parse_list(params.get("collections"))
        bbox = _parse_bbox(params.get("bbox"))
        t0, t1 = _parse_interval(params.get("datetime"))
        sortby = _parse_sortby(params.get("sortby"))
        if sortby and not self.sort:
            raise _BadRequest(
                "sortby is not supported by this API (it does not conform to the sort extension)"
            )
        try:
            limit = int(params.get("limit", self.default_limit))
            offset = int(params.get("token", 0))
        except (TypeError, ValueError):
            raise _BadRequest(
                f"limit {params.get('limit')!r} or token {params.get('token')!r} is not an integer"
            ) from None
        if limit < 1 or offset < 0:
            raise _BadRequest(f"limit {limit} must be >= 1 and token {offset} >= 0")
        limit = min(limit, self.max_limit)
        hits = []
        for t, d in self._entries:
            ib, half = d["bbox"], len(d["bbox"]) // 2  # 2D or 3D item bbox
            if colls is not None and d.get("collection") not in colls:
                continue
            if (t0 is not None and t < t0) or (t1 is not None and t > t1):
                continue
            if bbox is not None and not (
                ib[0] <= bbox[2] and bbox[0] <= ib[half] and ib[1] <= bbox[3] and bbox[1] <= ib[half + 1]
            ):
                continue
            hits.append((t, d))
        for field, descending in reversed(sortby):  # stable sorts, last key first
            hits.sort(key=functools.partial(_sort_value, field=field), reverse=descending)
        page = [d for _, d in hits[offset : offset + limit]]
        links: list[dict[str, Any]] = []
        if offset + limit < len(hits):
            nxt = {**params, "token": offset + limit}
            if method == "POST":
                links.append({"rel": "next", "href": f"{self.url}/search", "method": "POST", "body": nxt})
            else:
                links.append({"rel": "next", "href": f"{self.url}/search?{urlencode(nxt)}", "method": "GET"})
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(hits),
            "numberReturned": len(page),
        }


def _handler(api: LocalStacApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, body: dict[str, Any], status: int = 200) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _answer_search(self, params: dict[str, Any], method: str) -> None:
            api._count("search")
            try:
                self._send(api._search(params, method))
            except _BadRequest as err:
                self._send({"code": "BadRequest", "description": str(err)}, status=400)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            path = url.path.rstrip("/")
            if path.startswith("/sas/"):
                api._count("sas")
                with api._lock:
                    api.token_requests.append(url.path)
                expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
                self._send(
                    {
                        "token": "st=x&se=y&sp=rl&sig=fake",
                        "msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    }
                )
            elif path == API_PATH:
                api._count("landing")
                self._send(api._landing())
            elif path == f"{API_PATH}/conformance":
                api._count("conformance")
                self._send({"conformsTo": api._conforms_to()})
            elif path == f"{API_PATH}/search":
                self._answer_search({k: v[0] for k, v in parse_qs(url.query).items()}, "GET")
            else:
                api._count("other")
                self.send_error(404)

        def do_POST(self) -> None:
            if urlparse(self.path).path.rstrip("/") != f"{API_PATH}/search":
                api._count("other")
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length", 0))
            try:
                params = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as err:
                api._count("search")
                self._send({"code": "BadRequest", "description": f"body is not JSON: {err}"}, status=400)
                return
            self._answer_search(params if isinstance(params, dict) else {}, "POST")

    return Handler
