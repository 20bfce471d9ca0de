"""Floors on tiny known data (embedder.floors)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from embedder.floors import FloorAccumulator, centre_floors, pca_reconstruction
from embedder.sensors import S1, S2, WINDOW_DATES, WINDOW_PX

T, P = WINDOW_DATES // 2, WINDOW_PX // 2


def _batch(x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {"s1": x, "s1_mask": torch.ones_like(x, dtype=torch.bool) if mask is None else mask}


def test_frame_and_temporal_mean_on_known_values() -> None:
    x = torch.zeros(2, WINDOW_DATES, 2, WINDOW_PX, WINDOW_PX)
    x[0, T, :, P, P] = 0.9  # the centre frame's mean is 0.9 / 225: error 0.9 * 224 / 225
    x[1, :, 0] = 0.5  # a constant sample: both means are exact
    x[1, T, 1, P, P] = 0.2  # band 1: one bright centre value
    acc = FloorAccumulator(S1)
    acc.add(_batch(x))
    got = acc.result()
    frame = (0.9 * 224 / 225 * 2 + 0 + 0.2 * 224 / 225) / 4
    temporal = (0.9 * 10 / 11 * 2 + 0 + 0.2 * 10 / 11) / 4
    assert got["frame_mean"] == pytest.approx(frame)
    assert got["temporal_mean"] == pytest.approx(temporal)


def test_masked_values_are_left_out() -> None:
    x = torch.full((1, WINDOW_DATES, 2, WINDOW_PX, WINDOW_PX), 0.3)
    x[0, T, :, 0, 0] = 1.0  # an outlier in the centre frame, masked
    x[0, T, 1, P, P] = 0.7  # an invalid centre value: not scored
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, T, :, 0, 0] = False
    mask[0, T, 1, P, P] = False
    got = centre_floors([_batch(x, mask)], [S1])["s1"]
    assert got["frame_mean"] == pytest.approx(0.0, abs=1e-12)
    assert got["temporal_mean"] == pytest.approx(0.0, abs=1e-12)


def test_pca_floor_is_exact_for_a_rank_k_series_and_not_below() -> None:
    rng = np.random.default_rng(0)
    n, f = 200, WINDOW_DATES * 2
    low_rank = rng.normal(size=(n, 2)) @ rng.normal(size=(2, f)) + 0.5
    np.testing.assert_allclose(pca_reconstruction(low_rank, 2), low_rank, atol=1e-9)
    noisy = low_rank + rng.normal(scale=0.1, size=(n, f))
    err = [np.abs(pca_reconstruction(noisy, k) - noisy).mean() for k in (0, 1, 2, 5, f)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(err))  # more components, less error
    assert err[-1] == pytest.approx(0.0, abs=1e-9)
    # through the accumulator: k = S1's bottleneck (2) reconstructs a rank-2 centre series exactly
    x = torch.zeros(n, WINDOW_DATES, 2, WINDOW_PX, WINDOW_PX, dtype=torch.float64)
    x[:, :, :, P, P] = torch.from_numpy(low_rank.reshape(n, WINDOW_DATES, 2))
    acc = FloorAccumulator(S1)
    for lo in range(0, n, 64):
        acc.add(_batch(x[lo : lo + 64]))
    assert acc.result()["pca_k"] == pytest.approx(0.0, abs=1e-9)
    assert FloorAccumulator(S2).k == S2.bottleneck_dim


def test_empty_batches_raise() -> None:
    with pytest.raises(ValueError, match="no valid s1 centre values"):
        FloorAccumulator(S1).result()


def test_centre_floors_leave_out_a_sensor_without_values() -> None:
    assert centre_floors([], [S1, S2]) == {}
