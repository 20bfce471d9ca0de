"""The context-aware loss (../shared/SPEC.md section 4) and the validation metrics.

Tensors are ``[B, T=11, C, 15, 15]``; ``mask`` is True where a target value is real. The weight map puts
most of the weight on the centre pixel of the centre date and decays with Chebyshev distance and with
distance in frames; the loss terms are a masked weighted MAE, a weighted spectral angle (SAM, only where
every channel is valid) and ``1 - mean SSIM`` (Gaussian window 7, sigma 1.5, zero padding, unmasked,
unweighted). Per-sensor weights come from :class:`embedder.sensors.LossWeights`.

SSIM: no maintained library computes exactly this SSIM (kornia and torchmetrics pad by reflection,
kornia adds an epsilon to the denominator, pytorch-msssim uses valid convolution without padding), so
:func:`ssim_index` implements it and its test checks it against an independent NumPy/SciPy computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from embedder.sensors import STAGE2_SENSOR_WEIGHT, WINDOW_DATES, WINDOW_PX, LossWeights, SensorSpec

__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_SIGMA",
    "SSIM_WINDOW_PX",
    "ContextAwareLoss",
    "FusionLoss",
    "LossTerms",
    "centre_mae",
    "context_weights",
    "gaussian_window",
    "masked_weighted_mae",
    "spectral_angle",
    "ssim_index",
    "surroundings_mae",
]

SSIM_WINDOW_PX = 7
"""Side of the Gaussian SSIM window; padded with zeros by ``SSIM_WINDOW_PX // 2`` = 3."""
SSIM_SIGMA = 1.5
"""Standard deviation of the Gaussian SSIM window, in pixels."""
SSIM_C1 = 0.01**2
"""SSIM stabiliser ``(k1 L)^2`` with data range L = 1."""
SSIM_C2 = 0.03**2
"""SSIM stabiliser ``(k2 L)^2`` with data range L = 1."""
SAM_EPS = 1e-8
"""Added to ``|y| |y_hat|`` in the spectral angle."""

CENTRE_DATE = WINDOW_DATES // 2
CENTRE_PX = WINDOW_PX // 2


def _unnormalised_weights(
    n_channels: int, *, centre_weight: float, temporal_decay: float = 0.1
) -> torch.Tensor:
    """``w_s * w_t`` with the centre entry set to ``c``: ``[T, C, H, W]``."""
    idx = torch.arange(WINDOW_PX, dtype=torch.float64)
    cheb = torch.maximum((idx[:, None] - CENTRE_PX).abs(), (idx[None, :] - CENTRE_PX).abs())  # [H, W]
    w_s = torch.where(cheb == 0, torch.ones_like(cheb), 0.01 * 0.1 ** (cheb - 1))  # [H, W]
    tau = (torch.arange(WINDOW_DATES, dtype=torch.float64) - CENTRE_DATE).abs()  # [T]
    w_t = temporal_decay**tau  # [T]
    w = w_t[:, None, None, None] * w_s[None, None] * torch.ones(1, n_channels, 1, 1, dtype=torch.float64)
    w[CENTRE_DATE, :, CENTRE_PX, CENTRE_PX] = centre_weight
    return w  # [T, C, H, W]


def context_weights(n_channels: int, *, centre_weight: float, temporal_decay: float = 0.1) -> torch.Tensor:
    """The context weight map ``W`` ``[T, C, H, W]`` (float32), normalised to sum to 1 per sample.

    Spatial weight 1 at the centre and ``0.01 * 0.1^(d-1)`` at Chebyshev distance ``d >= 1``; temporal
    weight ``temporal_decay^|t - 5|`` (SPEC: 0.1); the single centre entry (per channel) is set to
    ``centre_weight``.
    """
    if centre_weight <= 0:
        raise ValueError(f"centre_weight = {centre_weight} must be positive (SPEC: 1, 1.5 or 1.75)")
    if not 0 < temporal_decay <= 1:
        raise ValueError(f"temporal_decay = {temporal_decay} must be in (0, 1] (SPEC: 0.1)")
    w = _unnormalised_weights(n_channels, centre_weight=centre_weight, temporal_decay=temporal_decay)
    return (w / w.sum()).float()


def masked_weighted_mae(
    y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, weights: torch.Tensor
) -> torch.Tensor:
    """``sum(W * |y_hat - y|)`` over valid positions, averaged over the batch (W not renormalised)."""
    err = (y_hat - y).abs() * weights * mask  # [B, T, C, H, W]
    return err.sum() / y.shape[0]


def spectral_angle(
    y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, *, weights: torch.Tensor
) -> torch.Tensor:
    """Weighted mean spectral angle (radians) over the positions where all channels are valid.

    Angle per ``(t, y, x)``: ``acos(clamp(<y, y_hat> / (|y| |y_hat| + 1e-8), -1, 1))``; weighted by the
    context weights of one channel and divided by the sum of those weights over valid positions of the
    whole batch (as the reference). Zero when no position is valid.
    """
    dot = (y * y_hat).sum(dim=2)  # [B, T, H, W]
    cos = dot / (y.norm(dim=2) * y_hat.norm(dim=2) + SAM_EPS)  # [B, T, H, W]
    valid = mask.all(dim=2)  # [B, T, H, W]
    cos = torch.where(valid, cos, torch.zeros_like(cos))  # invalid positions: finite acos gradient
    # Value of acos(clamp(cos, -1, 1)); gradient through a slightly narrower clamp so that |cos| = 1
    # (perfect reconstruction) gives a finite gradient instead of inf * 0 = NaN.
    exact = torch.acos(cos.clamp(-1.0, 1.0))
    safe = torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
    angle = exact.detach() + (safe - safe.detach())  # [B, T, H, W]
    w = weights[:, 0].to(angle.dtype) * valid  # [B, T, H, W] (broadcast [T, H, W])
    total = w.sum()
    return torch.where(total > 0, (angle * w).sum() / total.clamp_min(1e-30), torch.zeros_like(total))


def gaussian_window(size_px: int = SSIM_WINDOW_PX, *, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian window ``[size_px, size_px]`` (outer product of the 1-D window)."""
    x = torch.arange(size_px, dtype=torch.float64) - size_px // 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g)


def ssim_index(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over every frame, channel and pixel of ``[B, T, C, H, W]`` tensors (data range 1).

    Gaussian window 7 (sigma 1.5), zero padding 3, ``C1 = 0.01^2``, ``C2 = 0.03^2``; unmasked, unweighted.
    """
    b, t, c, h, w = y.shape
    a = y_hat.reshape(b * t, c, h, w)
    r = y.reshape(b * t, c, h, w)
    win = gaussian_window().to(dtype=y.dtype, device=y.device).expand(c, 1, -1, -1)  # [C, 1, 7, 7]
    pad = SSIM_WINDOW_PX // 2

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, win, padding=pad, groups=c)  # [B*T, C, H, W], zero padding

    mu_a, mu_r = blur(a), blur(r)
    var_a = blur(a * a) - mu_a**2
    var_r = blur(r * r) - mu_r**2
    cov = blur(a * r) - mu_a * mu_r
    num = (2 * mu_a * mu_r + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_a**2 + mu_r**2 + SSIM_C1) * (var_a + var_r + SSIM_C2)
    return (num / den).mean()


def centre_mae(y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Validation metric: mean ``|y_hat - y|`` over valid channels at the centre pixel of the centre date."""
    sl = (slice(None), CENTRE_DATE, slice(None), CENTRE_PX, CENTRE_PX)
    m = mask[sl].to(y.dtype)  # [B, C]
    err = (y_hat[sl] - y[sl]).abs() * m  # [B, C]
    return err.sum() / m.sum().clamp_min(1.0)


def surroundings_mae(y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Context-weighted MAE of everything except the centre pixel of the centre date.

    The weights are the context weights with the centre removed and renormalised to 1 (so they do not
    depend on ``c``); masked values count as zero error, as in the loss. With ``c = 1`` the loss's MAE
    term equals ``0.7446 * centre + 0.2554 * surroundings`` on fully valid data (the reference's
    reconstruction of this curve).
    """
    w = _unnormalised_weights(y.shape[2], centre_weight=0.0)  # [T, C, H, W], centre removed
    w = (w / w.sum()).to(dtype=y.dtype, device=y.device)
    return masked_weighted_mae(y_hat, y, mask, weights=w)


@dataclass(frozen=True)
class LossTerms:
    """The loss and its parts for one sensor (tensors; terms with weight 0 are not computed: None)."""

    total: torch.Tensor
    """``l_mae * mae + l_ssim * ssim + l_sam * sam``."""
    mae: torch.Tensor
    """Masked context-weighted MAE."""
    ssim: torch.Tensor | None
    """``1 - mean SSIM`` (None when its weight is 0)."""
    sam: torch.Tensor | None
    """Weighted spectral angle in radians (None when its weight is 0)."""
    centre_mae: torch.Tensor
    """Mean absolute error at the centre pixel of the centre date (the validation metric)."""
    surroundings_mae: torch.Tensor
    """Context-weighted MAE without the centre entry."""

    def metrics(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Detached 0-d tensors keyed ``prefix + name`` (terms that were not computed are left out)."""
        out = {}
        for name in ("total", "mae", "ssim", "sam", "centre_mae", "surroundings_mae"):
            value = getattr(self, name)
            if value is not None:
                out[prefix + name] = value.detach()
        return out


class ContextAwareLoss(nn.Module):
    """The context-aware loss of one sensor with given term weights.

    Args:
        n_channels: ``C`` of the sensor.
        weights: ``l_mae``, ``l_ssim``, ``l_sam`` and the centre weight ``c``.

    """

    weight_map: torch.Tensor

    def __init__(self, n_channels: int, *, weights: LossWeights) -> None:
        super().__init__()
        self.weights = weights
        self.n_channels = n_channels
        self._map_key = (weights.centre_weight, weights.temporal_decay)
        self.register_buffer(
            "weight_map",
            context_weights(
                n_channels, centre_weight=weights.centre_weight, temporal_decay=weights.temporal_decay
            ),
            persistent=False,
        )

    @classmethod
    def for_sensor(cls, sensor: SensorSpec, *, stage: int) -> ContextAwareLoss:
        """The loss of ``sensor`` in stage 1 (alone) or stage 2 (its part of the fusion loss)."""
        if stage not in (1, 2):
            raise ValueError(f"stage = {stage!r} must be 1 (modality autoencoder) or 2 (fusion)")
        return cls(sensor.n_channels, weights=sensor.stage1_loss if stage == 1 else sensor.stage2_loss)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> LossTerms:
        """Loss terms for prediction ``y_hat``, target ``y`` and validity ``mask`` ``[B, T, C, H, W]``."""
        y_hat, y = y_hat.float(), y.float()
        w = self.weights
        if (w.centre_weight, w.temporal_decay) != self._map_key:  # weights replaced (TrainConfig options)
            self._map_key = (w.centre_weight, w.temporal_decay)
            self.weight_map = context_weights(
                self.n_channels, centre_weight=w.centre_weight, temporal_decay=w.temporal_decay
            ).to(self.weight_map.device)
        # The loss always runs in float32, also when the model runs under bf16 autocast.
        with torch.autocast(device_type=y.device.type, enabled=False):
            mae = masked_weighted_mae(y_hat, y, mask, weights=self.weight_map)
            total = w.mae * mae
            ssim = sam = None
            if w.ssim > 0:
                ssim = 1.0 - ssim_index(y_hat, y)
                total = total + w.ssim * ssim
            if w.sam > 0:
                sam = spectral_angle(y_hat, y, mask, weights=self.weight_map)
                total = total + w.sam * sam
            with torch.no_grad():
                c_mae = centre_mae(y_hat, y, mask)
                s_mae = surroundings_mae(y_hat, y, mask)
        return LossTerms(total=total, mae=mae, ssim=ssim, sam=sam, centre_mae=c_mae, surroundings_mae=s_mae)


class FusionLoss(nn.Module):
    """Stage 2 loss: ``sum over sensors of STAGE2_SENSOR_WEIGHT x that sensor's stage-2 part``."""

    def __init__(self, sensors: Mapping[str, SensorSpec]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict({n: ContextAwareLoss.for_sensor(s, stage=2) for n, s in sensors.items()})

    def forward(
        self,
        recon: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        masks: Mapping[str, torch.Tensor],
    ) -> tuple[torch.Tensor, dict[str, LossTerms]]:
        """``(total, {name: LossTerms})`` from reconstructions, targets and masks keyed by sensor name."""
        terms = {n: part(recon[n], targets[n], masks[n]) for n, part in self.parts.items()}
        total = sum((STAGE2_SENSOR_WEIGHT * t.total for t in terms.values()), torch.zeros(()))
        return total, terms
