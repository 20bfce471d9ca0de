import numpy as np
import pytest
import xarray as xr

from embedder.config import ConfigError, PatchConfig
from embedder.data.patches import (
    FUSED_KEYS,
    S1ONLY_KEYS,
    CubeLayoutError,
    day_numbers,
    fill_missing,
    sample_fused_patches,
    sample_s1only_patches,
    window_starts,
)
from embedder.data.testing import make_test_cube


def _sample_days(s: dict[str, np.ndarray], gaps_key: str = "s2_gaps") -> np.ndarray:
    """The 11 day numbers of each sample, rebuilt from its centre day and gaps."""
    rel = np.concatenate([np.zeros((len(s[gaps_key]), 1)), np.cumsum(s[gaps_key], axis=1)], axis=1)
    return (s["centre_day"][:, None] + rel - rel[:, 5:6]).astype(np.int64)  # [N, 11]


def _frames(cube: xr.Dataset, s: dict[str, np.ndarray]) -> np.ndarray:
    days = day_numbers(cube["time"].values)
    frames = np.searchsorted(days, _sample_days(s))
    assert (days[frames] == _sample_days(s)).all()
    return frames  # [N, 11] cube time index


def test_window_starts() -> None:
    assert window_starts(55, window=20, stride=17).tolist() == [0, 17, 34]
    assert window_starts(19, window=20, stride=17).tolist() == []
    assert window_starts(20, window=20, stride=17).tolist() == [0]


def test_fused_windows_strides_and_sorted_draws() -> None:
    unusable = (4, 30)
    cube = make_test_cube(1, size_px=33, n_dates=57, revisit_days=3, unusable_dates=unusable)
    assert int(cube.s2_usable.sum()) == 55
    s, stats = sample_fused_patches(cube, seed=3)
    assert set(s) == set(FUSED_KEYS)
    n = len(s["s2"])
    assert n == stats.kept > 0 and stats.candidates == 3 * 9  # 3 windows x (3 x 3 positions)
    # spatial stride 9: window centres 7, 16, 25 in a 33 px cube
    assert set(s["row"].tolist()) == {7, 16, 25} and set(s["col"].tolist()) == {7, 16, 25}
    frames = _frames(cube, s)
    assert not np.isin(frames, unusable).any()
    usable_rank = np.cumsum(cube.s2_usable.values) - 1  # cube index -> rank among usable dates
    ranks = usable_rank[frames]  # [N, 11]
    assert (np.diff(ranks, axis=1) > 0).all(), "draws must be sorted and distinct"
    # each sample lies inside one window of 20 usable dates starting at 0, 17 or 34
    start = np.array([0, 17, 34])[np.searchsorted([0, 17, 34], ranks[:, 0], side="right") - 1]
    start = np.where(ranks[:, -1] >= start + 20, start + 17, start)  # overlap zone: the later window
    assert ((ranks >= start[:, None]) & (ranks < start[:, None] + 20)).all()
    assert set(start.tolist()) == {0, 17, 34}
    # draws are random (not always the first 11) and differ between samples
    assert len({tuple(r) for r in ranks.tolist()}) > n // 2
    assert (ranks[:, -1] - ranks[:, 0] > 10).any()
    assert s["s2"].shape == (n, 11, 10, 15, 15) and s["s2"].dtype == np.float32
    assert s["s1"].shape == (n, 11, 2, 15, 15) and s["s2_mask"].dtype == bool
    assert s["s2_gaps"].shape == (n, 10) and s["centre_day"].dtype == np.int64 and s["row"].dtype == np.int32


def test_fused_is_deterministic_per_seed() -> None:
    cube = make_test_cube(2, n_dates=25)
    a, _ = sample_fused_patches(cube, seed=7)
    b, _ = sample_fused_patches(cube, seed=7)
    c, _ = sample_fused_patches(cube, seed=8)
    for k in FUSED_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["s2_gaps"], c["s2_gaps"])


def _cube_with_gaps(gaps_days: list[int], **kw: object) -> xr.Dataset:
    cube = make_test_cube(3, size_px=15, n_dates=len(gaps_days) + 1, cloud_frac=0.0, **kw)  # type: ignore[arg-type]
    t0 = cube.time.values[0]
    times = t0 + np.concatenate([[0], np.cumsum(gaps_days)]).astype("timedelta64[D]")
    return cube.assign_coords(time=times)


@pytest.mark.parametrize(("gaps", "kept"), [([20] * 9 + [19], 1), ([20] * 10, 0), ([5] * 10, 1)])
def test_gap_sum_rule_drops_at_200_days(gaps: list[int], kept: int) -> None:
    cube = _cube_with_gaps(gaps)
    cfg = PatchConfig(window_dates=11)  # all 11 dates drawn: the gaps are the cube's
    s, stats = sample_fused_patches(cube, cfg=cfg, seed=0)
    assert stats.kept == kept and stats.dropped_gap == 1 - kept
    if kept:
        np.testing.assert_array_equal(s["s2_gaps"][0], gaps)


def test_centre_pixel_of_centre_date_must_have_a_valid_value() -> None:
    cube = make_test_cube(4, size_px=24, n_dates=11, cloud_frac=0.0)  # positions: centres (7|16, 7|16)
    s2 = cube.s2.values.copy()
    s2[5, :, 7, 7] = np.nan  # centre date, centre of sample (7, 7): dropped
    s2[5, 1:, 16, 16] = np.nan  # one band still valid at (16, 16): kept
    s2[4, :, 7, 16] = np.nan  # not the centre date: kept
    cube["s2"] = (cube.s2.dims, s2)
    s, stats = sample_fused_patches(cube, cfg=PatchConfig(window_dates=11), seed=0)
    assert stats.candidates == 4 and stats.dropped_centre == 1 and stats.kept == 3
    assert sorted(zip(s["row"].tolist(), s["col"].tolist(), strict=True)) == [(7, 16), (16, 7), (16, 16)]


def test_missing_values_filled_with_patch_band_mean_and_masked() -> None:
    cube = make_test_cube(5, size_px=24, n_dates=24, cloud_frac=0.5)
    s, _ = sample_fused_patches(cube, seed=1)
    frames = _frames(cube, s)
    raw_s2 = cube.s2.values
    assert (~s["s2_mask"]).any(), "test cube should have clouds inside patches"
    for i in range(len(s["s2"])):
        r, c = int(s["row"][i]), int(s["col"][i])
        orig = raw_s2[frames[i]][:, :, r - 7 : r + 8, c - 7 : c + 8]  # [11, C, 15, 15]
        mask = np.isfinite(orig)
        np.testing.assert_array_equal(s["s2_mask"][i], mask)
        np.testing.assert_array_equal(s["s2"][i][mask], orig[mask])
        band_mean = np.nanmean(orig, axis=(0, 2, 3))  # [C]
        filled = np.broadcast_to(band_mean[None, :, None, None], orig.shape)
        np.testing.assert_allclose(s["s2"][i][~mask], filled[~mask], rtol=1e-6)
        assert np.isfinite(s["s2"][i]).all()


def test_s1_matched_to_the_drawn_dates() -> None:
    cube = make_test_cube(6, size_px=24, n_dates=40, s1_max_gap_days=1.0)  # some S2 dates have no S1 match
    assert np.isnat(cube.s1_time.values).any()
    s, _ = sample_fused_patches(cube, seed=2)
    frames = _frames(cube, s)
    s2_day = day_numbers(cube.time.values)
    s1_day = np.where(np.isnat(cube.s1_time.values), s2_day, day_numbers(cube.s1_time.values))
    for i in range(len(s["s1"])):
        r, c = int(s["row"][i]), int(s["col"][i])
        orig = cube.s1.values[frames[i]][:, :, r - 7 : r + 8, c - 7 : c + 8]  # [11, 2, 15, 15]
        mask = np.isfinite(orig)
        np.testing.assert_array_equal(s["s1_mask"][i], mask)
        np.testing.assert_array_equal(s["s1"][i][mask], orig[mask])
        np.testing.assert_array_equal(s["s1_gaps"][i], np.diff(s1_day[frames[i]]))
        t = frames[i, 5]
        assert s["s1_delta_days"][i] == abs(s1_day[t] - s2_day[t])
    assert (s["s1_gaps"] != s["s2_gaps"]).any()
    assert (s["s1_delta_days"] > 0).any()


def test_too_few_usable_dates_gives_no_samples() -> None:
    cube = make_test_cube(7, n_dates=19)
    s, stats = sample_fused_patches(cube, seed=0)
    assert stats.kept == 0 and s["s2"].shape == (0, 11, 10, 15, 15) and s["s2_gaps"].shape == (0, 10)


def test_s1only_windows() -> None:
    cube = make_test_cube(8, size_px=45, n_dates=5, n_s1=85, s1_revisit_days=2)
    s, stats = sample_s1only_patches(cube, seed=4)
    assert set(s) == set(S1ONLY_KEYS)
    assert stats.candidates == 2 * 9  # windows start at 0 and 40 of 85; 3 x 3 positions 15 px apart
    assert set(s["row"].tolist()) == {7, 22, 37}
    days = day_numbers(cube.time_s1.values)
    frames = np.searchsorted(days, _sample_days(s, "s1_gaps"))
    assert (np.diff(frames, axis=1) > 0).all()
    assert ((frames // 40) == (frames[:, :1] // 40)).all(), "a sample stays inside its 40-acquisition window"
    assert frames.max() < 80
    i = 0
    r, c = int(s["row"][i]), int(s["col"][i])
    orig = cube.s1_own.values[frames[i]][:, :, r - 7 : r + 8, c - 7 : c + 8]
    np.testing.assert_array_equal(s["s1_mask"][i], np.isfinite(orig))
    np.testing.assert_array_equal(s["s1"][i][np.isfinite(orig)], orig[np.isfinite(orig)])


def test_fill_missing_band_without_values_is_zero() -> None:
    x = np.full((1, 11, 2, 15, 15), np.nan, np.float32)
    x[0, 3, 0, 4, 4] = 0.25
    filled, mask = fill_missing(x)
    assert mask.sum() == 1
    assert (filled[0, :, 0] == 0.25).all() and (filled[0, :, 1] == 0).all()


def test_bad_inputs_raise_named_errors() -> None:
    cube = make_test_cube(9, n_dates=20).drop_vars("s1_time")
    with pytest.raises(CubeLayoutError, match="s1_time"):
        sample_fused_patches(cube)
    with pytest.raises(ConfigError, match="window_dates = 10"):
        PatchConfig(window_dates=10)
    with pytest.raises(ConfigError, match="spatial_stride_px = 0"):
        PatchConfig(spatial_stride_px=0)
