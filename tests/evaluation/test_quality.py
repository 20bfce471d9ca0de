"""The probe protocol: a blocked split that leaks no window, window aggregation, stacks, probes, intervals."""

from __future__ import annotations

import numpy as np
import pytest

from embedder.evaluation.quality import (
    QualityConfig,
    SceneFeatures,
    blocked_split,
    feature_stack,
    interval95,
    probe_features,
    run_probes,
    stack_series,
    window_mean,
)


def _chebyshev_gap(train: np.ndarray, test: np.ndarray) -> int:
    """Smallest Chebyshev distance between a train and a test pixel (brute force)."""
    tr = np.argwhere(train)
    te = np.argwhere(test)
    return int(np.abs(tr[:, None, :] - te[None, :, :]).max(axis=2).min())


@pytest.mark.parametrize(("shape", "block"), [((50, 50), 25), ((64, 40), 16), ((30, 90), 10)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_split_shares_no_15px_window(shape: tuple[int, int], block: int, seed: int) -> None:
    train, test = blocked_split(shape, block_px=block, guard_px=14, test_share=0.25, seed=seed)
    assert test.any() and train.any()
    assert not (train & test).any()
    # windows of two pixels share a pixel when their centres are closer than 15 px (Chebyshev)
    assert _chebyshev_gap(train, test) >= 15
    # the guard drops only what it must: a pixel 15 px from every test pixel is train
    gap_ok = np.ones(shape, dtype=bool)
    for r, c in np.argwhere(test):
        gap_ok[max(0, r - 14) : r + 15, max(0, c - 14) : c + 15] = False
    np.testing.assert_array_equal(train, gap_ok)


def test_blocked_split_varies_with_seed_and_refuses_one_block() -> None:
    tests = {
        blocked_split((50, 50), block_px=25, guard_px=14, test_share=0.25, seed=s)[1].tobytes()
        for s in range(8)
    }
    assert len(tests) > 1
    with pytest.raises(ValueError, match="one 64 px block"):
        blocked_split((50, 50), block_px=64, guard_px=14, test_share=0.25, seed=0)


def test_window_mean_on_known_series() -> None:
    days = np.array([0, 10, 20, 100], dtype=np.int64)
    x = np.array([1.0, 3.0, np.nan, 9.0], dtype=np.float32).reshape(4, 1, 1, 1)
    np.testing.assert_allclose(window_mean(x, days, 0.0)[:, 0, 0, 0], [1.0, 3.0, np.nan, 9.0])
    np.testing.assert_allclose(window_mean(x, days, 10.0)[:, 0, 0, 0], [2.0, 2.0, 3.0, 9.0])
    np.testing.assert_allclose(window_mean(x, days, None)[:, 0, 0, 0], [13 / 3] * 4, rtol=1e-6)
    dates = np.array(["2022-01-01", "2022-01-11", "2022-01-21", "2022-04-11"], dtype="datetime64[D]")
    np.testing.assert_allclose(window_mean(x, dates, 10.0), window_mean(x, days, 10.0))


def test_stack_series_shifts_at_the_ends_and_fills_gaps() -> None:
    t = 13
    x = np.arange(t, dtype=np.float32).reshape(t, 1, 1, 1).repeat(2, axis=1)  # [T, 2, 1, 1]
    x[1, :, 0, 0] = np.nan  # a gap: filled from date 0 (nearest, earlier wins the tie with date 2)
    s = stack_series(x, n=11)  # [T, 22, 1, 1]
    assert s.shape == (t, 22, 1, 1)
    first = s[0, ::2, 0, 0]  # band 0 of dates 0..10
    np.testing.assert_array_equal(first, [0, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(s[6, ::2, 0, 0], [0, *range(2, 12)])  # dates 1..10, date 1 filled
    np.testing.assert_array_equal(s[12, ::2, 0, 0], np.arange(2, 13))  # shifted to stay inside
    with pytest.raises(ValueError, match="at least 11 dates"):
        stack_series(x[:5], n=11)


def _scene(
    rng: np.random.Generator, *, h: int = 50, w: int = 50, t: int = 12, name: str = "a"
) -> SceneFeatures:
    """Labels in four vertical stripes; bands carry the label, the 'embedding' is noise."""
    labels = (np.arange(w)[None, :] * 4 // w + 1).repeat(h, axis=0)  # [h, w] codes 1..4
    bands = rng.normal(size=(t, 10, h, w)).astype(np.float32) * 0.3 + labels[None, None] * 1.0
    emb = rng.normal(size=(t, 7, h, w)).astype(np.float32)
    s1 = rng.normal(size=(t, 2, h, w)).astype(np.float32)
    dates = np.datetime64("2022-01-01") + np.arange(t) * 10
    return SceneFeatures(name=name, dates=dates, emb=emb, bands=bands, s1=s1, labels=labels)


def test_probe_separates_informative_from_noise_features() -> None:
    rng = np.random.default_rng(0)
    scenes = [_scene(rng, name="a"), _scene(rng, name="b")]
    cfg = QualityConfig(block_px=10, seeds=(0,), max_train_rows=4000, max_test_rows=4000)
    sets = {n: [feature_stack(s, n) for s in scenes] for n in ("emb", "bands", "stack_pca7")}
    res = probe_features(scenes, sets, seed=0, cfg=cfg, kinds=("linear", "nonlinear"))
    assert res["bands_linear"] > 0.95 and res["bands_nonlinear"] > 0.95
    assert res["stack_pca7_linear"] > 0.95
    assert res["emb_linear"] < 0.6  # noise: near chance (4 classes)
    assert res["n_train"] <= 4000 and res["n_test"] <= 4000


def test_interval95() -> None:
    mean, half = interval95([0.5, 0.6, 0.7, 0.6, 0.6])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(2.776445 * np.std([0.5, 0.6, 0.7, 0.6, 0.6], ddof=1) / np.sqrt(5), rel=1e-5)
    assert interval95([0.3]) == (0.3, 0.0)


def test_run_probes_reports_every_key_with_intervals() -> None:
    rng = np.random.default_rng(1)
    scenes = [_scene(rng, name="a", t=12), _scene(rng, name="b", t=12)]
    cfg = QualityConfig(block_px=10, seeds=(0, 1), max_train_rows=2000, max_test_rows=2000, nonlinear=False)
    out = run_probes(scenes, cfg, log=lambda m: None)
    for key in ("probe_emb_linear", "probe_bands_linear", "probe_bands_s1_linear", "probe_stack_pca7_linear",
                "probe_stack_linear", "probe_emb_year_linear", "probe_majority", "window_1date_emb",
                "window_month_bands", "window_season_emb", "window_year_bands"):  # fmt: skip
        assert key in out and f"{key}_ci95" in out, key
    assert out["seeds"] == 2 and out["probe_bands_linear"] > 0.9
    assert len(out["per_seed"]["probe_emb_linear"]) == 2
    with pytest.raises(ValueError, match="unknown feature sets"):
        QualityConfig(features=("emb", "rgb"))
