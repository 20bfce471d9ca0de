"""Floors: the centre errors of trivial reconstructions that a trained autoencoder must beat.

An autoencoder whose centre MAE (``embedder.losses.centre_mae``: the centre pixel of the centre date,
mean over valid channels) is above what a constant gives has not learned anything about the pixel. Three
floors, each computed on the same windows the model is scored on:

* ``frame_mean``: every value of the centre frame replaced by that frame's mean over its valid pixels,
  per band (the model sees the frame; this is what it gets for free).
* ``temporal_mean``: the centre pixel replaced by its own mean over the window's valid dates, per band.
* ``pca_k``: the centre pixel's ``T x C`` series projected on its first ``k`` principal components
  (``k`` = the sensor's bottleneck size), fitted on the scored windows themselves. An optimistic floor:
  the best a *linear* code of the bottleneck's size does when it has seen the test set. A model below it
  uses its context (space, non-linearity); one between ``frame_mean`` and ``pca_k`` has learned, but less
  than a linear code could.

All errors are in SPEC's [0, 1] units. Under ``torch.distributed`` the sums are all-reduced over ranks
(each rank fits its own PCA on its part of the windows).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from embedder.sensors import WINDOW_DATES, WINDOW_PX, SensorSpec

__all__ = ["FLOOR_NAMES", "FloorAccumulator", "centre_floors", "pca_reconstruction", "sum_over_ranks"]

FLOOR_NAMES = ("frame_mean", "temporal_mean", "pca_k")
"""The floors, in the order they are reported."""

_T, _P = WINDOW_DATES // 2, WINDOW_PX // 2


def pca_reconstruction(series: np.ndarray, k: int) -> np.ndarray:
    """``[N, F]`` rows projected on their first ``k`` principal components (centred, fitted on ``series``)."""
    if series.ndim != 2:
        raise ValueError(f"series must be [N, F], got shape {series.shape}")
    mean = series.mean(axis=0, keepdims=True)  # [1, F]
    centred = series - mean
    k = max(0, min(k, *centred.shape))
    if k == 0:
        return np.broadcast_to(mean, series.shape).copy()
    # A plain SVD, not scikit-learn's PCA: this runs in the training workers, which import no scikit-learn
    # otherwise; a reconstruction needs no sign rule; and PCA warns (0/0 explained variance) on one
    # window or a constant series, which a floor must take quietly.
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt [min(N, F), F]
    basis = vt[:k]  # [k, F]
    return mean + (centred @ basis.T) @ basis  # [N, F]


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks of ``torch.distributed`` (unchanged without it), on the CPU."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    # NCCL reduces only device tensors; gloo takes either
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    moved = values.to(device) if device is not None else values.clone()
    torch.distributed.all_reduce(moved)
    return moved.cpu()


class FloorAccumulator:
    """Collects windows of one sensor batch by batch; :meth:`result` gives the floors.

    Args:
        sensor: the sensor; its batch keys are ``name`` and ``name_mask`` (``[B, T, C, 15, 15]``).
        k: components of the ``pca_k`` floor (default: the sensor's bottleneck size).

    """

    def __init__(self, sensor: SensorSpec, *, k: int | None = None) -> None:
        self.sensor = sensor
        self.k = sensor.bottleneck_dim if k is None else int(k)
        self.err = dict.fromkeys(("frame_mean", "temporal_mean"), 0.0)
        self.count = 0.0
        self.series: list[np.ndarray] = []  # [B, T * C] centre-pixel series
        self.targets: list[np.ndarray] = []  # [B, C] centre values
        self.masks: list[np.ndarray] = []  # [B, C] centre validity

    def add(self, batch: Mapping[str, Any]) -> None:
        """Add a batch (tensors or arrays)."""
        name = self.sensor.name
        x = torch.as_tensor(batch[name]).detach().cpu().double()  # [B, T, C, H, W]
        mask = torch.as_tensor(batch[f"{name}_mask"]).detach().cpu().bool()  # [B, T, C, H, W]
        m = mask.double()
        target = x[:, _T, :, _P, _P]  # [B, C]
        m_centre = m[:, _T, :, _P, _P]  # [B, C]
        frame = x[:, _T]  # [B, C, H, W]
        m_frame = m[:, _T]
        frame_mean = (frame * m_frame).sum((-2, -1)) / m_frame.sum((-2, -1)).clamp_min(1.0)  # [B, C]
        pixel = x[:, :, :, _P, _P]  # [B, T, C]
        m_pixel = m[:, :, :, _P, _P]
        temporal_mean = (pixel * m_pixel).sum(1) / m_pixel.sum(1).clamp_min(1.0)  # [B, C]
        self.err["frame_mean"] += float(((frame_mean - target).abs() * m_centre).sum())
        self.err["temporal_mean"] += float(((temporal_mean - target).abs() * m_centre).sum())
        self.count += float(m_centre.sum())
        self.series.append(pixel.reshape(len(pixel), -1).numpy())
        self.targets.append(target.numpy())
        self.masks.append(m_centre.numpy())

    def result(self) -> dict[str, float]:
        """``{frame_mean, temporal_mean, pca_k}`` centre MAE (all-reduced over ranks when distributed)."""
        pca_err = 0.0
        if self.series:
            series = np.concatenate(self.series)  # [N, T * C]
            recon = pca_reconstruction(series, self.k).reshape(len(series), WINDOW_DATES, -1)[:, _T]  # [N, C]
            pca_err = float((np.abs(recon - np.concatenate(self.targets)) * np.concatenate(self.masks)).sum())
        sums = torch.tensor(
            [self.err["frame_mean"], self.err["temporal_mean"], pca_err, self.count], dtype=torch.float64
        )
        sums = sum_over_ranks(sums)
        n = float(sums[3])
        if n == 0:
            raise ValueError(f"no valid {self.sensor.name} centre values were seen; the batches are empty")
        return {name: float(sums[i]) / n for i, name in enumerate(FLOOR_NAMES)}


def centre_floors(
    batches: Iterable[Mapping[str, Any]], sensors: Iterable[SensorSpec], *, max_batches: int | None = None
) -> dict[str, dict[str, float]]:
    """Floors of each sensor over ``batches``: ``{sensor: {frame_mean, temporal_mean, pca_k}}``.

    ``max_batches`` caps how many batches are read (None: all). A sensor without any valid centre value
    (no batches) is left out, so the caller's own check of empty data speaks first.
    """
    accs = {s.name: FloorAccumulator(s) for s in sensors}
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        for acc in accs.values():
            acc.add(batch)
    out = {}
    for name, acc in accs.items():
        try:
            out[name] = acc.result()
        except ValueError:
            continue
    return out
