import numpy as np
import pytest

from embedder.data.testing import make_test_cube
from embedder.inference import (
    FLAG_CENTRE_FILLED,
    FLAG_GAP_RULE,
    FLAG_S1_MISSING,
    FLAG_VALID,
    HALO_DATES,
    fill_in_time,
    plan_windows,
    prepare_tile,
)
from embedder.sensors import PRIMARY_SENSOR


def test_fill_in_time_interpolates_and_extends_ends() -> None:
    v = np.full((6, 1, 1, 2), np.nan, np.float32)
    v[1, 0, 0, 0], v[4, 0, 0, 0] = 1.0, 4.0  # pixel 0: two observations
    out = fill_in_time(v)
    np.testing.assert_allclose(out[:, 0, 0, 0], [1, 1, 2, 3, 4, 4])
    assert np.isnan(out[:, 0, 0, 1]).all()  # never observed stays NaN for the next fallback


def test_fill_is_independent_of_other_pixels_and_keeps_valid_values() -> None:
    rng = np.random.default_rng(0)
    v = rng.random((8, 3, 4, 4)).astype(np.float32)
    v[rng.random(v.shape) < 0.3] = np.nan
    out = fill_in_time(v)
    ok = np.isfinite(v)
    np.testing.assert_array_equal(out[ok], v[ok])
    v2 = v.copy()
    v2[:, :, 0, 0] = 0.5  # changing one pixel must not change the others
    np.testing.assert_array_equal(fill_in_time(v2)[:, :, 1:, :], out[:, :, 1:, :])


def test_plan_targets_have_five_usable_dates_each_side() -> None:
    cube = make_test_cube(1, size_px=21, n_dates=30, unusable_dates=(3, 12))
    plan = plan_windows(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert 3 not in plan.usable and 12 not in plan.usable
    assert len(plan.targets) == len(plan.usable) - 2 * HALO_DATES
    assert plan.skipped_context == 2 * HALO_DATES
    np.testing.assert_array_equal(plan.windows[:, HALO_DATES], plan.targets)
    assert (np.diff(plan.windows, axis=1) == 1).all()  # consecutive usable dates
    days = cube["time"].values.astype("datetime64[D]").astype(np.int64)[plan.usable[plan.windows]]
    np.testing.assert_array_equal(plan.s2_gaps, np.diff(days, axis=1))


def test_period_limits_targets_but_context_comes_from_outside() -> None:
    cube = make_test_cube(2, size_px=21, n_dates=30)
    times = cube["time"].values.astype("datetime64[D]")
    plan = plan_windows(cube, start=times[12], end=times[14], halo_px=7)
    got = times[plan.usable[plan.targets]]
    np.testing.assert_array_equal(got, times[12:15])


def test_200_day_rule_gives_one_day_steps_and_flags() -> None:
    cube = make_test_cube(3, size_px=21, n_dates=24, revisit_days=25)
    tile = prepare_tile(cube, start="2021-01-01", end="2023-12-31", halo_px=7)
    assert tile.plan.gap_rule.all()  # 10 gaps x 25 days = 250 >= 200
    assert (tile.plan.s2_gaps == 1).all()
    assert (tile.flags & FLAG_GAP_RULE).all()


def test_flags_mark_filled_centres_and_valid() -> None:
    cube = make_test_cube(4, size_px=25, n_dates=20, cloud_frac=0.4)
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert (tile.flags & FLAG_VALID).all()
    s2 = cube["s2"].values[tile.plan.usable[tile.plan.targets]][:, :, 7:-7, 7:-7]
    missing = ~np.isfinite(s2).all(axis=1)
    np.testing.assert_array_equal((tile.flags & FLAG_CENTRE_FILLED) > 0, missing)
    for frames in tile.frames.values():
        assert np.isfinite(frames).all()


def test_usability_counts_interior_pixels_only() -> None:
    cube = make_test_cube(5, size_px=25, n_dates=14, cloud_frac=0.0)
    s2 = cube["s2"].values.copy()
    s2[6, :, 7:-7, 7:-7] = np.nan  # interior fully clouded, halo clear
    cube["s2"].values[:] = s2
    plan = plan_windows(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert 6 not in plan.usable
    share_needed = PRIMARY_SENSOR.min_valid_infer
    assert share_needed == pytest.approx(0.035)


def test_s1_missing_is_flagged_and_filled() -> None:
    cube = make_test_cube(6, size_px=21, n_dates=16, s1_max_gap_days=-1.0)  # nothing matches
    tile = prepare_tile(cube, start="2021-01-01", end="2021-12-31", halo_px=7)
    assert (tile.flags & FLAG_S1_MISSING).all()
    assert np.isfinite(tile.frames["s1"]).all()
