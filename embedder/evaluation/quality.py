"""Are the embeddings better than the bands? The land-cover probe protocol and the window-length table.

Issue 16, parts 1 and 2 (``bench/quality.py`` runs it; ``docs/quality.md`` has the figures):

* **Blocked split** (:func:`blocked_split`): each scene's interior is cut into ``block_px`` squares, a
  seeded share of them is held out for testing, and every training pixel lies at least ``guard_px + 1``
  = 15 px (Chebyshev) from every test pixel, so no 15 x 15 input window is shared between the two.
* **Features side by side**, on the same pixel-dates (those with both an embedding and valid bands):
  the per-date 7-d embedding; the single-date 10 S2 bands; those plus the date's S1 (VV, VH in dB); the
  pixel's 11-date band stack (the dates the model's window would use, 110-d) and its PCA-7 (fitted on
  the training rows only); and the year-mean embedding (any-window aggregation of the per-date output).
* **Probes**: a linear one (standardised logistic regression) and a small nonlinear one (histogram
  gradient boosting), each on ``seeds`` splits; the mean and the 95 % interval of the mean (Student t)
  over seeds.
* **Window-length table** (:func:`window_mean`): embeddings and bands averaged over the pixel's valid
  dates within one date, +-15 days (a month), +-45 days (a season) and the whole period (a year), the
  linear probe on each.

Everything here runs on any checkpoint (a random-init model too: then the embedding loses, as it should).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "WINDOWS",
    "ProbeScore",
    "QualityConfig",
    "SceneFeatures",
    "blocked_split",
    "feature_stack",
    "interval95",
    "probe_features",
    "probe_inputs",
    "probe_pooled",
    "run_probes",
    "scene_features",
    "stack_series",
    "window_mean",
]

WINDOW_PX = 15
"""Side of the model's input window; windows of pixels closer than this (Chebyshev) share pixels."""

STACK_DATES = 11
"""Dates of the stack features: the 11 usable dates the model's window would take around a date."""

FEATURES: tuple[str, ...] = ("emb", "bands", "bands_s1", "stack_pca7", "stack", "emb_year")
"""Feature sets of the probe table (see the module docstring)."""

WINDOWS: tuple[tuple[str, float | None], ...] = (
    ("1date", 0.0),
    ("month", 15.0),
    ("season", 45.0),
    ("year", None),
)
"""Window-length rows: name and half-width in days (None: the whole period)."""


@dataclass(frozen=True)
class QualityConfig:
    """Settings of the probe protocol."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds of the split (and of the row subsample and the nonlinear probe)."""
    block_px: int = 25
    """Side of a split block, px (25: quadrants of a 64 px scene's 50 px interior)."""
    guard_px: int = WINDOW_PX - 1
    """Training pixels within this Chebyshev distance of a test pixel are dropped (14: no shared window)."""
    test_share: float = 0.25
    """Share of blocks held out per scene (at least one block, never all)."""
    max_train_rows: int = 20_000
    """Training pixel-dates per seed (a seeded subsample; all when fewer)."""
    max_test_rows: int = 20_000
    """Test pixel-dates per seed."""
    nonlinear: bool = True
    """Also fit the gradient-boosting probe."""
    windows: tuple[tuple[str, float | None], ...] = WINDOWS
    """Rows of the window-length table."""
    features: tuple[str, ...] = FEATURES
    """Feature sets of the probe table."""

    def __post_init__(self) -> None:
        if self.block_px < 1 or self.guard_px < 0:
            raise ValueError(f"block_px = {self.block_px} must be >= 1 and guard_px = {self.guard_px} >= 0")
        if not 0.0 < self.test_share < 1.0:
            raise ValueError(f"test_share = {self.test_share} must be in (0, 1)")
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise ValueError(f"unknown feature sets {unknown}; choose from {list(FEATURES)}")
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one (5 for the intervals)")


@dataclass
class SceneFeatures:
    """One scene's inputs of the probe, on its interior grid (NaN = no value)."""

    name: str
    dates: np.ndarray
    """``[T]`` embedded dates, ``datetime64[D]``."""
    emb: np.ndarray
    """``[T, 7, h, w]`` per-date embeddings."""
    bands: np.ndarray
    """``[T, 10, h, w]`` S2 reflectance of the same dates."""
    s1: np.ndarray
    """``[T, 2, h, w]`` the S1 the cube matched to each date (dB)."""
    labels: np.ndarray
    """``[h, w]`` land-cover codes (0 = nodata)."""
    extra: dict[str, Any] = field(default_factory=dict)


def blocked_split(
    shape: tuple[int, int], *, block_px: int, guard_px: int, test_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` boolean masks ``[h, w]``: blocks dealt to test, train kept ``guard_px`` away.

    The grid is cut into ``block_px`` squares (the last row and column of blocks may be narrower);
    ``round(test_share * n_blocks)`` of them (at least 1, at most ``n_blocks - 1``) are test. A pixel is
    train when it is not test and its Chebyshev distance to every test pixel exceeds ``guard_px``.
    """
    h, w = shape
    by, bx = -(-h // block_px), -(-w // block_px)
    n = by * bx
    if n < 2:
        raise ValueError(
            f"a {h} x {w} px grid holds one {block_px} px block; a blocked split needs two (use smaller blocks)"
        )
    # Dealt by hand: scikit-learn's GroupKFold is an unseeded k-fold partition without a guard band, and
    # GroupShuffleSplit draws other blocks from the same seed (every recorded probe result would move).
    rng = np.random.default_rng(seed)
    k = min(n - 1, max(1, round(test_share * n)))
    chosen = np.zeros(n, dtype=bool)
    chosen[rng.choice(n, size=k, replace=False)] = True
    rows, cols = np.meshgrid(np.arange(h) // block_px, np.arange(w) // block_px, indexing="ij")
    test = chosen[rows * bx + cols]  # [h, w]
    near = _dilate(test, guard_px)
    return ~near, test


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Chebyshev dilation of a boolean ``[h, w]`` mask by ``r`` px (separable running max)."""
    if r <= 0:
        return mask.copy()
    out = mask.copy()
    for axis in (0, 1):
        acc = out.copy()
        n = out.shape[axis]
        for s in range(1, min(r, n - 1) + 1):
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(s, None), slice(None, n - s)
            acc[tuple(lo)] |= out[tuple(hi)]
            acc[tuple(hi)] |= out[tuple(lo)]
        out = acc
    return out


def window_mean(x: np.ndarray, days: np.ndarray, half_days: float | None) -> np.ndarray:
    """Mean over each pixel's valid dates within ``half_days`` of each date: ``[T, F, h, w]`` -> same.

    ``days`` ``[T]`` (any number type or ``datetime64[D]``); ``None`` averages the whole period (the same
    value on every date). NaN where a pixel has no valid value in the window.
    """
    d = days.astype("datetime64[D]").astype(np.int64) if np.issubdtype(days.dtype, np.datetime64) else days
    d = np.asarray(d, dtype=np.float64)
    valid = np.isfinite(x)
    filled = np.where(valid, x, 0.0)
    if half_days is None:
        near = np.ones((len(d), len(d)), dtype=bool)
    else:
        near = np.abs(d[:, None] - d[None, :]) <= half_days  # [T, T]
    weights = near.astype(np.float64)
    total = np.einsum("ts,sfhw->tfhw", weights, filled)
    count = np.einsum("ts,sfhw->tfhw", weights, valid.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return np.where(count > 0, out, np.nan).astype(np.float32)


def _fill_time(x: np.ndarray) -> np.ndarray:
    """Fill each pixel's gaps with its nearest valid date (earlier wins a tie): ``[T, F, h, w]``."""
    t = x.shape[0]
    valid = np.isfinite(x)
    idx = np.arange(t)[:, None, None, None] * np.ones_like(valid, dtype=np.int64)
    prev = np.where(valid, idx, -1)
    prev = np.maximum.accumulate(prev, axis=0)  # last valid index at or before t
    nxt = np.where(valid, idx, t)
    nxt = np.flip(np.minimum.accumulate(np.flip(nxt, axis=0), axis=0), axis=0)  # first valid at or after
    use_prev = (prev >= 0) & ((nxt >= t) | (idx - prev <= nxt - idx))
    src = np.where(use_prev, prev, np.where(nxt < t, nxt, 0))
    out = np.take_along_axis(x, src, axis=0)
    return np.where(valid.any(axis=0, keepdims=True), out, np.nan)


def stack_series(x: np.ndarray, n: int = STACK_DATES) -> np.ndarray:
    """The ``n``-date stack around every date: ``[T, F, h, w] -> [T, n * F, h, w]``.

    Date ``t`` takes dates ``t - n//2 .. t + n//2``, the window shifted to stay inside the series at its
    ends (the series must have ``n`` dates or more), each pixel's gaps filled with its nearest valid date.
    """
    t = x.shape[0]
    if t < n:
        raise ValueError(f"a {n}-date stack needs at least {n} dates, the scene has {t}")
    filled = _fill_time(x)
    starts = np.clip(np.arange(t) - n // 2, 0, t - n)  # [T]
    return np.stack([filled[s : s + n].reshape(-1, *x.shape[2:]) for s in starts])  # [T, n*F, h, w]


def feature_stack(scene: SceneFeatures, name: str) -> np.ndarray:
    """Feature set ``name`` (one of :data:`FEATURES`) of a scene: ``[T, F, h, w]``."""
    if name == "emb":
        return scene.emb
    if name == "bands":
        return scene.bands
    if name == "bands_s1":
        return np.concatenate([scene.bands, scene.s1], axis=1)
    if name in ("stack", "stack_pca7"):  # PCA-7 is fitted inside the probe, on training rows only
        if "stack" not in scene.extra:
            scene.extra["stack"] = stack_series(scene.bands)
        return np.asarray(scene.extra["stack"])
    if name == "emb_year":
        return window_mean(scene.emb, scene.dates, None)
    raise ValueError(f"unknown feature set {name!r}; choose from {list(FEATURES)}")


def _rows(
    scenes: Sequence[SceneFeatures], masks: Sequence[np.ndarray], sets: Mapping[str, Sequence[np.ndarray]]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Stack the pixel-dates of every scene where ``masks`` [T, h, w] holds: ``{name: [N, F]}``, labels."""
    feats: dict[str, list[np.ndarray]] = {k: [] for k in sets}
    labels = []
    for i, scene in enumerate(scenes):
        m = masks[i]
        for k, arrays in sets.items():
            a = arrays[i]  # [T, F, h, w]
            feats[k].append(a.transpose(0, 2, 3, 1)[m])  # [n, F]
        labels.append(np.broadcast_to(scene.labels, m.shape)[m])
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels)


def _classifier(kind: str, name: str, seed: int) -> Any:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[Any] = [StandardScaler()]
    if name == "stack_pca7":
        steps += [PCA(n_components=7, random_state=seed), StandardScaler()]
    if kind == "linear":
        steps.append(LogisticRegression(max_iter=2000))
    else:
        steps.append(HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed))
    return make_pipeline(*steps)


def probe_features(
    scenes: Sequence[SceneFeatures],
    sets: Mapping[str, Sequence[np.ndarray]],
    *,
    seed: int,
    cfg: QualityConfig,
    kinds: Iterable[str] = ("linear",),
) -> dict[str, Any]:
    """One split (``seed``): test accuracy of each probe ``kind`` on each feature set, same pixel-dates.

    ``sets`` maps a feature name to its ``[T, F, h, w]`` array per scene. A pixel-date is used when every
    set is finite there and its label is not 0; training rows come from :func:`blocked_split`'s train
    mask, test rows from its test mask (classes unseen in training are dropped from the test).
    Returns ``{f"{name}_{kind}": accuracy, "majority": ..., "n_train": ..., "n_test": ...}``.
    """
    train_masks, test_masks = [], []
    for i, scene in enumerate(scenes):
        ok = np.ones(scene.emb.shape[:1] + scene.emb.shape[2:], dtype=bool)  # [T, h, w]
        for arrays in sets.values():
            ok &= np.isfinite(arrays[i]).all(axis=1)
        ok &= scene.labels[None] != 0
        tr, te = blocked_split(
            scene.labels.shape, block_px=cfg.block_px, guard_px=cfg.guard_px, test_share=cfg.test_share,
            seed=seed * 7919 + i,
        )  # fmt: skip
        train_masks.append(ok & tr[None])
        test_masks.append(ok & te[None])
    x_tr, y_tr = _rows(scenes, train_masks, sets)
    x_te, y_te = _rows(scenes, test_masks, sets)
    rng = np.random.default_rng(seed)
    if len(y_tr) > cfg.max_train_rows:
        pick = rng.choice(len(y_tr), size=cfg.max_train_rows, replace=False)
        x_tr, y_tr = {k: v[pick] for k, v in x_tr.items()}, y_tr[pick]
    known = np.isin(y_te, np.unique(y_tr))
    x_te, y_te = {k: v[known] for k, v in x_te.items()}, y_te[known]
    if len(y_te) > cfg.max_test_rows:
        pick = rng.choice(len(y_te), size=cfg.max_test_rows, replace=False)
        x_te, y_te = {k: v[pick] for k, v in x_te.items()}, y_te[pick]
    if len(y_tr) < 10 or len(y_te) < 1 or len(np.unique(y_tr)) < 2:
        raise ValueError(
            f"too few pixel-dates for the probe ({len(y_tr)} train, {len(y_te)} test, "
            f"{len(np.unique(y_tr))} classes); use larger scenes or more dates"
        )
    from sklearn.dummy import DummyClassifier

    out: dict[str, Any] = {"n_train": len(y_tr), "n_test": len(y_te)}
    majority = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_tr), 1)), y_tr)  # X unused
    out["majority"] = float(majority.score(np.zeros((len(y_te), 1)), y_te))  # ties: the smallest class
    for kind in kinds:
        for name in sets:
            clf = _classifier(kind, name, seed)
            clf.fit(x_tr[name], y_tr)
            out[f"{name}_{kind}"] = float((clf.predict(x_te[name]) == y_te).mean())
    return out


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % interval (Student t over the values; 0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return float(v.mean()), half


def run_probes(
    scenes: Sequence[SceneFeatures], cfg: QualityConfig, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The probe table and the window-length table over ``cfg.seeds``: flat keys with ``_ci95``.

    Keys: ``probe_<feature>_<linear|nonlinear>`` (``probe_emb_linear``, ``probe_bands_linear``,
    ``probe_stack_pca7_linear``, ...), ``window_<row>_<emb|bands>`` and ``probe_majority``, each the
    mean over seeds with ``<key>_ci95`` (half-width), plus per-seed values under ``seeds``.
    """
    t0 = time.perf_counter()
    kinds = ("linear", "nonlinear") if cfg.nonlinear else ("linear",)
    probe_sets = {name: [feature_stack(s, name) for s in scenes] for name in cfg.features}
    window_sets: dict[str, list[np.ndarray]] = {}
    for row, half in cfg.windows:
        window_sets[f"{row}_emb"] = [window_mean(s.emb, s.dates, half) for s in scenes]
        window_sets[f"{row}_bands"] = [window_mean(s.bands, s.dates, half) for s in scenes]
    per_seed: dict[str, list[float]] = {}
    for seed in cfg.seeds:
        res = probe_features(scenes, probe_sets, seed=seed, cfg=cfg, kinds=kinds)
        win = probe_features(scenes, window_sets, seed=seed, cfg=cfg, kinds=("linear",))
        for k, v in res.items():
            per_seed.setdefault(f"probe_{k}", []).append(v)
        for k, v in win.items():
            if k.endswith("_linear"):
                per_seed.setdefault(f"window_{k.removesuffix('_linear')}", []).append(v)
        log(
            f"seed {seed}: emb {res['emb_linear']:.3f}, bands {res['bands_linear']:.3f}, stack PCA-7 "
            f"{res.get('stack_pca7_linear', float('nan')):.3f} (linear; {res['n_train']} train, "
            f"{res['n_test']} test pixel-dates)"
        )
    out: dict[str, Any] = {"seeds": len(cfg.seeds)}
    for k, vs in per_seed.items():
        mean, half = interval95(vs)
        out[k] = mean
        if not k.startswith("probe_n_"):
            out[f"{k}_ci95"] = half
    out["probe_minutes"] = (time.perf_counter() - t0) / 60
    out["per_seed"] = per_seed
    out["settings"] = dataclasses.asdict(cfg)
    return out


def scene_features(predictor: Any, region: Any, cubes: Mapping[str, Any]) -> list[SceneFeatures]:
    """Embed every scene of a sample region once: per-date embeddings, bands, matched S1 and labels."""
    import rasterio

    from embedder.evaluation.towers import band_dataset, embed_scene

    halo = WINDOW_PX // 2
    out = []
    for scene in region.scenes:
        cube = cubes[scene.name]
        emb = embed_scene(cube, predictor, start=region.start, end=region.end)  # (time, y, x, feature)
        bands = band_dataset(cube, halo_px=halo)["bands"]  # (time, y, x, feature), every cube date
        cube_days = bands["time"].values.astype("datetime64[D]")
        days = emb["time"].values.astype("datetime64[D]")
        pick = [int(np.flatnonzero(cube_days == d)[0]) for d in days]
        s1 = cube["s1"].isel(y=slice(halo, cube.sizes["y"] - halo), x=slice(halo, cube.sizes["x"] - halo))
        s1_band_dim = next(d for d in s1.dims if d not in ("time", "y", "x"))
        with rasterio.open(scene.landcover_path) as src:
            labels = src.read(1)[halo:-halo, halo:-halo]  # [h, w]
        out.append(
            SceneFeatures(
                name=scene.name,
                dates=days,
                emb=emb["embedding"].transpose("time", "feature", "y", "x").values.astype(np.float32),
                bands=bands.isel(time=pick).transpose("time", "feature", "y", "x").values.astype(np.float32),
                s1=s1.isel(time=pick).transpose("time", s1_band_dim, "y", "x").values.astype(np.float32),
                labels=labels,
            )
        )
    return out


def quality_region_config(seed_offset: int = 1) -> Any:
    """The evaluation region's settings: the convergence run's scenes, drawn with another seed.

    Same places, size and year, so no training cube came from its pixels.
    """
    from embedder.evaluation.convergence import ConvergenceConfig

    data = ConvergenceConfig().data
    return dataclasses.replace(data, region_seed=data.region_seed + seed_offset)


def run_quality(
    work: Any, checkpoint: Any, cfg: QualityConfig, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Embed the evaluation region with a fusion ``checkpoint`` and run :func:`run_probes` on it.

    The region (``quality_region_config``) is written to ``work/region`` once and reused. Returns the
    flat figures with the checkpoint's path and hash and the minutes spent.
    """
    from pathlib import Path

    from embedder.checkpoints import checkpoint_digest, load_fusion
    from embedder.evaluation.region import prepare_region
    from embedder.evaluation.towers import load_scene_cube
    from embedder.inference import Predictor

    t0 = time.perf_counter()
    fcfg = quality_region_config()
    region = prepare_region(Path(work).resolve() / "region", fcfg)
    model = load_fusion(checkpoint).eval()
    predictor = Predictor(model, pixel_batch=fcfg.pixel_batch)
    cubes = {s.name: load_scene_cube(region, s) for s in region.scenes}
    scenes = scene_features(predictor, region, cubes)
    minutes_embed = (time.perf_counter() - t0) / 60
    log(
        f"embedded {len(scenes)} scenes ({sum(s.emb.shape[0] for s in scenes)} scene-dates) "
        f"in {minutes_embed:.1f} min"
    )
    out = run_probes(scenes, cfg, log=log)
    out.update(
        checkpoint=str(checkpoint),
        checkpoint_sha256=checkpoint_digest(checkpoint),
        region_scenes=len(scenes),
        region_px=fcfg.scene_px,
        region_seed=fcfg.region_seed,
        minutes_embed=minutes_embed,
        minutes=(time.perf_counter() - t0) / 60,
    )
    return out


@dataclass(frozen=True)
class ProbeScore:
    """The land-cover probe of one model, pooled over the region's scenes."""

    accuracy: float
    """Test accuracy of the logistic regression on the 7-d embedding (weighted by test pixel-dates)."""
    accuracy_bands: float
    """The same on the raw 10 S2 bands of the same pixel-dates (the baseline)."""
    accuracy_majority: float
    """Always predicting the most frequent training class."""
    n_test: int
    """Test pixel-dates over all scenes."""
    scenes: int
    """Scenes that could be probed."""


# --- the land-cover probe of one model, pooled over scenes (fidelity, convergence) -------------------------------------------------------------------------------


def probe_inputs(
    predictor: Any, region: Any, cubes: Mapping[str, Any]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scene of a ``SampleRegion``: embeddings ``[T, 7, h, w]``, raw bands ``[T, 10, h, w]`` of the same dates, labels ``[h, w]``.

    The probe's view of :func:`embedder.evaluation.quality.scene_features` (one embedding per scene).
    """
    return [(f.emb, f.bands, f.labels) for f in scene_features(predictor, region, cubes)]


def probe_pooled(
    inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *, block_px: int, seed: int
) -> ProbeScore | None:
    """:func:`embedder.evaluation.report.land_cover_probe` of every scene of :func:`probe_inputs`, pooled."""
    from embedder.evaluation.report import ReportError, land_cover_probe

    results = []
    for e, b, labels in inputs:
        try:
            results.append(land_cover_probe(e, b, labels, block_px=block_px, seed=seed))
        except ReportError:
            continue  # too few pixel-dates in this scene; the others still count
    if not results:
        return None
    n = sum(r.n_test for r in results)

    def pooled(attr: str) -> float:
        return float(sum(getattr(r, attr) * r.n_test for r in results) / max(n, 1))

    return ProbeScore(
        accuracy=pooled("accuracy_embedding"),
        accuracy_bands=pooled("accuracy_bands"),
        accuracy_majority=pooled("accuracy_majority"),
        n_test=int(n),
        scenes=len(results),
    )
