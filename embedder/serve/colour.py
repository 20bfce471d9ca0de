"""The fixed RGB PCA of the map tiles: fitted once per store, cached, applied to features."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from embedder.geo import day_index, parse_date
from embedder.grid import WorkUnit
from embedder.sensors import EMBEDDING_DIM
from embedder.serve.parse import (
    NoDataError,
)
from embedder.serve.reader import (
    StoreReader,
)
from embedder.store import (
    CorruptChunkError,
    dequantise,
    get_json,
    list_done,
    put_object,
    unit_marker,
)

__all__ = [
    "PCA_SIDECAR",
    "apply_pca",
    "default_cache_dir",
    "pca_cache_path",
    "rgb_pca",
]

log = logging.getLogger(__name__)

PCA_SIDECAR = "_serve/pca.json"
"""Object (relative to the store root) holding the fixed RGB PCA of the map tiles."""

# ---------------------------------------------------------------------------------------------------
# the fixed RGB PCA of the map tiles
# ---------------------------------------------------------------------------------------------------


def _fit_pca(samples: np.ndarray) -> dict[str, Any]:
    """PCA of ``[N, 7]`` samples -> mean, 3 components and the 2..98 % range of each projection."""
    from sklearn.decomposition import PCA

    # The exact SVD ("auto" would take the covariance route for N >> 7); scikit-learn makes each
    # component's largest loading positive, so the colours do not depend on the LAPACK build.
    with np.errstate(invalid="ignore", divide="ignore"):  # constant samples: a 0/0 explained-variance ratio
        pca = PCA(n_components=3, svd_solver="full").fit(samples)
    proj = pca.transform(samples)  # [N, 3]
    lo, hi = np.percentile(proj, 2, axis=0), np.percentile(proj, 98, axis=0)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return {
        "mean": pca.mean_.tolist(),  # [7]
        "components": pca.components_.tolist(),  # [3, 7]
        "lo": lo.tolist(),
        "hi": hi.tolist(),
        "n_samples": int(samples.shape[0]),
    }


def pca_cache_path(store: StoreReader, cache_dir: str | Path) -> Path:
    """Where :func:`rgb_pca` keeps the PCA of ``store`` under ``cache_dir`` (one file per store URL)."""
    key = hashlib.sha256(store.store.url.encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"pca-{key}.json"


def default_cache_dir() -> Path:
    """The server's cache folder: ``$EMBEDDER_CACHE_DIR``, else ``$XDG_CACHE_HOME/embedder`` (``~/.cache``)."""
    if os.environ.get("EMBEDDER_CACHE_DIR"):
        return Path(os.environ["EMBEDDER_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "embedder"


def rgb_pca(
    store: StoreReader,
    *,
    cache_dir: str | Path | None = None,
    write_sidecar: bool = False,
    recompute: bool = False,
) -> dict[str, Any]:
    """The store's fixed RGB PCA (mean, 3 components, display range), computed once from its data.

    Looked up in memory, then in the store's sidecar ``<store>/_serve/pca.json`` (written by the store's
    owner with ``write_sidecar``), then in ``cache_dir`` (:func:`pca_cache_path`); a copy is used only
    when its fingerprint matches the store's. Otherwise fitted on up to ``ServeConfig.pca_samples`` valid
    pixel-dates drawn (seeded) from the done units and saved in ``cache_dir`` (and, with
    ``write_sidecar``, in the store). Reading never writes into the store. Raises :class:`NoDataError`
    for a store without any embedding.
    """
    if store._pca is not None and not recompute:
        return store._pca
    st = store.store
    path = f"{st.root}/{PCA_SIDECAR}"
    fp = st.attrs.get("embedder:fingerprint")
    cached = pca_cache_path(store, cache_dir) if cache_dir is not None else None
    doc = None
    if not recompute:
        for candidate in (get_json(st.fs, path), _read_local_json(cached)):
            if candidate is not None and candidate.get("fingerprint") == fp:
                doc = candidate
                break
    if doc is None:
        rng = np.random.default_rng(0)
        done = list_done(st)
        if not done:
            raise NoDataError(f"store {st.url!r} has no done unit: nothing to fit the map's colours on")
        chosen = sorted(rng.choice(len(done), size=min(8, len(done)), replace=False).tolist())
        per_unit = max(1, store.cfg.pca_samples // len(chosen))
        samples = []
        tp = st.cfg.tile_px
        for i in chosen:
            unit = WorkUnit.from_id(done[i])
            zi = store.zones[unit.tile.zone_name]
            try:
                marker = unit_marker(st, zi.name, unit.id) or {}
            except CorruptChunkError as damaged:  # never fitted on; noted for /health like a damaged chunk
                store.note_damage([damaged])
                continue
            dates = marker.get("dates", [])
            if not dates:
                continue
            ty, tx = zi.zone.tile_index(unit.tile)
            pick = sorted(rng.choice(len(dates), size=min(4, len(dates)), replace=False).tolist())
            days = np.array([day_index(parse_date(dates[k])) for k in pick])
            codes, _, _damaged = store.read_checked(
                zi.name, "embedding", days, slice(ty * tp, (ty + 1) * tp), slice(tx * tp, (tx + 1) * tp)
            )  # damaged chunks: fill (left out below), noted in store.damaged; never fitted on
            vals = dequantise(codes, step=store.quant_step).transpose(0, 2, 3, 1).reshape(-1, EMBEDDING_DIM)
            vals = vals[np.isfinite(vals).all(axis=1)]  # [N, 7]
            if len(vals):
                samples.append(vals[rng.choice(len(vals), size=min(per_unit, len(vals)), replace=False)])
        if not samples:
            raise NoDataError(f"store {st.url!r} has no valid embedding to fit the map's colours on")
        doc = {**_fit_pca(np.concatenate(samples).astype(np.float64)), "fingerprint": fp, "version": 1}
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(doc))
                tmp.replace(cached)  # all or nothing: a reader never sees half a file
            except OSError as exc:  # an unwritable cache: keep it in memory
                log.warning("could not write %s (%s); the PCA is kept in memory only", cached, exc)
        if write_sidecar:
            put_object(st.fs, path, json.dumps(doc).encode())
    store._pca = doc
    return doc


def _read_local_json(path: Path | None) -> dict[str, Any] | None:
    """A local JSON document, or None when absent or unreadable (a cache is never trusted blindly)."""
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def apply_pca(values: np.ndarray, pca: dict[str, Any]) -> np.ndarray:
    """``[..., 7]`` features -> ``[..., 4]`` uint8 RGBA (alpha 0 where any feature is NaN)."""
    mean = np.asarray(pca["mean"], dtype=np.float32)
    comps = np.asarray(pca["components"], dtype=np.float32)  # [3, 7]
    lo, hi = np.asarray(pca["lo"], np.float32), np.asarray(pca["hi"], np.float32)
    valid = np.isfinite(values).all(axis=-1)
    proj = (np.where(valid[..., None], values, mean) - mean) @ comps.T  # [..., 3]
    rgb = np.clip((proj - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
    alpha = np.where(valid, 255, 0).astype(np.uint8)[..., None]
    return np.concatenate([rgb, alpha], axis=-1)
