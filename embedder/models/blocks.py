"""Convolutional building blocks of the modality autoencoders (../shared/SPEC.md section 3).

All blocks work on single frames ``[N, ch, H, W]``; the 11 frames of a sample are folded into ``N`` by
the caller, so nothing here mixes samples of a batch.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from embedder.models import spectral

__all__ = [
    "CBAM",
    "BandScaler",
    "ConvAttentionBlock",
    "MultiScaleAttentionBlock",
    "PoolResidual",
    "SpectralBranches",
    "multiscale_blocks",
    "spectral_convolutions",
]


_BRANCH_SLOPE = 0.1
"""Negative slope of the LeakyReLU after each multi-scale branch."""


class CBAM(nn.Module):
    """Channel then spatial attention with an internal residual: ``x * attentions + x``.

    Channel attention: global max- and average-pool, a shared 1 x 1 conv MLP ``ch -> ch/r -> ch``
    (ReLU, no bias), summed, sigmoid. Spatial attention: concatenated channel-max and channel-mean
    maps, a ``kernel_px`` conv (no bias), sigmoid.
    """

    def __init__(self, channels: int, *, reduction: int, kernel_px: int = 7) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_px, padding=kernel_px // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, ch, H, W] -> [N, ch, H, W]``."""
        pooled_max = torch.amax(x, dim=(2, 3), keepdim=True)  # [N, ch, 1, 1]
        pooled_mean = torch.mean(x, dim=(2, 3), keepdim=True)  # [N, ch, 1, 1]
        channel_att = torch.sigmoid(self.mlp(pooled_max) + self.mlp(pooled_mean))  # [N, ch, 1, 1]
        y = x * channel_att  # [N, ch, H, W]
        maps = torch.cat([torch.amax(y, dim=1, keepdim=True), torch.mean(y, dim=1, keepdim=True)], dim=1)
        spatial_att = torch.sigmoid(self.spatial(maps))  # [N, 1, H, W]
        return y * spatial_att + x  # [N, ch, H, W]


class SpectralBranches(nn.Module):
    """Parallel branch convolutions that inference can compute together through a 2-D DFT.

    The base of :class:`MultiScaleAttentionBlock` ("same" convolutions on each window) and of the dense
    encoder's :class:`~embedder.models.dense.LocalMultiScaleBlock` (valid convolutions on windows or whole
    frames). :attr:`spectral` is set per call by :func:`spectral_convolutions`; the DFT path is taken only
    in eval mode without gradients, on float32 inputs outside autocast (:meth:`_spectral_ok`). The plan
    (:mod:`embedder.models.spectral`) is cached and rebuilt when the map size, the device or a weight
    changes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spectral = False
        """Compute the branches through a 2-D DFT at inference (:mod:`embedder.models.spectral`)."""
        self._plans: dict[tuple[int, int], spectral.SpectralPlan] = {}

    _MAX_PLANS = 4
    """Plans kept per block (one per map size: windows, a tile's strips and its last, shorter strip)."""

    def _branch_convs(self) -> list[nn.Conv2d]:
        raise NotImplementedError

    def spectral_flops(self, size_px: tuple[int, int]) -> tuple[int, int]:
        """FLOPs of the branches on an input map of ``size_px``: ``(direct, through the DFT)``."""
        raise NotImplementedError

    def _spectral_ok(self, x: torch.Tensor) -> bool:
        """Whether this call may take the DFT path (set, inference, float32 outside autocast)."""
        return (
            self.spectral
            and not self.training
            and not torch.is_grad_enabled()
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled(x.device.type)
        )

    def _cached_plan(
        self,
        size_px: tuple[int, int],
        device: torch.device,
        build: typing.Callable[..., spectral.SpectralPlan],
    ) -> spectral.SpectralPlan:
        """The cached plan for ``size_px`` on ``device``, (re)built by ``build(convs, size_px)`` when stale.

        Up to :attr:`_MAX_PLANS` sizes are kept (a plan of the paper block takes ~0.75 s to build); a stale
        weight version or device drops them all.
        """
        convs = self._branch_convs()
        key = spectral.plan_key(convs, size_px, device)
        plan = self._plans.get(size_px)
        if plan is None or plan.key != key:
            if plan is not None or len(self._plans) >= self._MAX_PLANS:
                self._plans.clear()
            plan = self._plans[size_px] = build(convs, size_px)
        return plan


class MultiScaleAttentionBlock(SpectralBranches):
    """MSAB: multi-scale convolutions with attention.

    Parallel ``Conv k x k (same) + LeakyReLU(0.1)`` per kernel, concatenated, ``Conv 1x1 + LeakyReLU(0.01)``,
    then CBAM(out, r, 7).

    With :attr:`spectral` set (:func:`spectral_convolutions`), inference (eval mode, no gradients,
    float32 outside autocast, maps of at most :data:`~embedder.models.spectral.MAX_SIDE_PX` per side)
    computes the parallel convolutions together through a 2-D DFT (:mod:`embedder.models.spectral`): the
    same values up to float rounding, ~2.3x faster on CPU for the paper block. Training and every other
    case run the direct convolutions.
    """

    def __init__(self, in_ch: int, out_ch: int, *, kernels: tuple[int, ...], reduction: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_ch, out_ch, k, padding=k // 2), nn.LeakyReLU(_BRANCH_SLOPE))
            for k in kernels
        )
        self.merge = nn.Sequential(nn.Conv2d(out_ch * len(kernels), out_ch, 1), nn.LeakyReLU(0.01))
        self.attention = CBAM(out_ch, reduction=reduction, kernel_px=7)

    def spectral_flops(self, size_px: tuple[int, int]) -> tuple[int, int]:
        """FLOPs per map of the branches computed directly and through the DFT (:func:`spectral.flops`)."""
        return spectral.flops(self._branch_convs(), size_px)

    def _branch_convs(self) -> list[nn.Conv2d]:
        return [typing.cast(nn.Conv2d, typing.cast(nn.Sequential, branch)[0]) for branch in self.branches]

    def _spectral_plan(self, x: torch.Tensor) -> spectral.SpectralPlan | None:
        """The DFT matrices for ``x``, (re)built when the size or a weight changed; None: run directly."""
        h, w = x.shape[-2:]
        if not self._spectral_ok(x) or max(h, w) > spectral.MAX_SIDE_PX:
            return None
        return self._cached_plan((h, w), x.device, spectral.plan_convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_ch, H, W] -> [N, out_ch, H, W]``."""
        plan = self._spectral_plan(x)
        if plan is not None:  # [N, out_ch * n_kernels, H, W], as below
            y = F.leaky_relu_(spectral.spectral_convs(x, plan), _BRANCH_SLOPE)
        else:
            y = torch.cat([branch(x) for branch in self.branches], dim=1)  # [N, out_ch * n_kernels, H, W]
        return self.attention(self.merge(y))  # [N, out_ch, H, W]


@contextlib.contextmanager
def spectral_convolutions(module: nn.Module | Sequence[SpectralBranches], on: bool = True) -> Iterator[None]:
    """Within the ``with`` block, ``module``'s multi-scale blocks run their branches through a 2-D DFT.

    Sets :attr:`MultiScaleAttentionBlock.spectral` to ``on`` on every such block in ``module`` (or on the
    blocks given, found once by :func:`multiscale_blocks`, for callers on a hot path) and restores the
    previous values on exit, so two users of one model (two predictors, say) never see each other's
    setting. Only inference takes the DFT path (see :class:`MultiScaleAttentionBlock`).
    """
    blocks = multiscale_blocks(module) if isinstance(module, nn.Module) else list(module)
    before = [b.spectral for b in blocks]
    for b in blocks:
        b.spectral = on
    try:
        yield
    finally:
        for b, was in zip(blocks, before, strict=True):
            b.spectral = was


def multiscale_blocks(module: nn.Module) -> list[SpectralBranches]:
    """Every multi-scale block (:class:`SpectralBranches`) in ``module`` (itself included), in module order."""
    return [m for m in module.modules() if isinstance(m, SpectralBranches)]


class ConvAttentionBlock(nn.Module):
    """CAB: ``Conv k x k (same) + LeakyReLU(0.01)``, then CBAM(out, r, attention kernel)."""

    def __init__(
        self, in_ch: int, out_ch: int, *, kernel_px: int = 3, reduction: int, attention_kernel_px: int = 7
    ) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_px, padding=kernel_px // 2), nn.LeakyReLU(0.01)
        )
        self.attention = CBAM(out_ch, reduction=reduction, kernel_px=attention_kernel_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_ch, H, W] -> [N, out_ch, H, W]``."""
        return self.attention(self.conv(x))


def max_pool3_same(x: torch.Tensor) -> torch.Tensor:
    """``MaxPool2d(3, stride=1, padding=1)`` computed separably (rows, then columns): the same values.

    On CPU this is about twice as fast as ``max_pool2d_with_indices`` for stride 1, and it has no index
    tensor. Padding acts as -inf, as in max pooling.
    """
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))  # [N, C, H + 2, W + 2]
    r = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])  # [N, C, H + 2, W]
    return torch.maximum(torch.maximum(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])  # [N, C, H, W]


class PoolResidual(nn.Module):
    """The "pool-res" wrapper: ``MaxPool(3, stride 1, pad 1)(block(x)) + x`` (block keeps the channels)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, ch, H, W] -> [N, ch, H, W]``."""
        return max_pool3_same(self.block(x)) + x


class BandScaler(nn.Module):
    """Per-band standardisation ``(x - mean) / std`` of ``[N, C, H, W]`` maps, or its inverse.

    ``mean`` and ``std`` are buffers (saved in checkpoints), identity until
    :meth:`set_stats` is called. ``inverse=True`` maps standardised values back: ``x * std + mean``.
    The ``ModelConfig.standardize`` option of the modality autoencoders.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, n_channels: int, *, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.register_buffer("mean", torch.zeros(n_channels))
        self.register_buffer("std", torch.ones(n_channels))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Use these per-band statistics (``std`` is floored at 1e-6)."""
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(
                f"band statistics must have shape {tuple(self.mean.shape)}, got {tuple(mean.shape)} and "
                f"{tuple(std.shape)}"
            )
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W] -> [N, C, H, W]``."""
        mean = self.mean.to(x.dtype)[None, :, None, None]  # [1, C, 1, 1]
        std = self.std.to(x.dtype)[None, :, None, None]  # [1, C, 1, 1]
        return x * std + mean if self.inverse else (x - mean) / std
