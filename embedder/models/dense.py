"""The dense-consistent frame encoder (issue 9; selected by ``ModelConfig(encoder="dense")``).

The paper encoder re-encodes every pixel's own 15 x 15 window; neighbouring windows share almost all
their pixels, so a tile repeats nearly all of that work. This variant's per-pixel token is a function
of the fixed 15 x 15 window computed only with *local, translation-equivariant* operations, so running
it fully convolutionally over a tile gives, at every interior pixel, exactly the per-window token:

* every convolution is **valid** (no zero padding inside the window): the window shrinks layer by layer
  until one position is left, whose channels are the ``d_model`` token;
* CBAM's channel attention pools over a **fixed sliding window** (``pool_px``) instead of the whole
  patch; spatial attention is a valid ``kernel_px`` convolution; the residual adds the centre crop;
* the strided convolution is trained with ``stride=2`` on windows and run densely as its **dilated**
  equivalent (stride 1, later layers dilated by 2: shift-and-stitch), which is exact.

Window mode (training, :meth:`DenseFrameEncoder.forward`) and dense mode (:meth:`encode_dense`) run the
same code with a ``dilation`` argument: 1 in window mode, the accumulated stride in dense mode.

Layers at the paper's widths (window sizes in px; dense cost per pixel-frame ~1.6 M multiply-adds):

1. Conv 1x1 C -> 149, SiLU (15).
2. Local MSAB: valid Conv 3x3 and 7x7 + LeakyReLU(0.1), branches centre-cropped to the smaller map,
   Conv 1x1 + LeakyReLU(0.01) (9); local CBAM(pool 3, kernel 3) with residual (5).
3. Conv 3x3 stride 2, 149 -> 128, SiLU, Dropout2d (2).
4. Conv 2x2 (dilated by 2 in dense mode), 128 -> 64, LeakyReLU(0.01) (1).
5. Conv 1x1 64 -> d_model: the token.

The decoder, losses and targets are the paper's (the autoencoder still reconstructs 15 x 15 x 11).
"""

from __future__ import annotations

import typing

import torch
from torch import nn
from torch.nn import functional as F

from embedder.config import ConfigError, ModelConfig
from embedder.models import spectral
from embedder.models.blocks import BandScaler, SpectralBranches
from embedder.sensors import WINDOW_PX

__all__ = ["DenseFrameEncoder", "LocalCBAM", "LocalMultiScaleBlock", "dense_macs_per_pixel"]

_STRIDE = 2
"""Stride of the one strided convolution (run dilated in dense mode)."""
_DOWN_KERNEL_PX = 3
"""Kernel of the strided convolution."""


def _crop(x: torch.Tensor, margin: int) -> torch.Tensor:
    """Drop ``margin`` px on every side of ``[N, C, H, W]`` (already multiplied by the dilation)."""
    if margin == 0:
        return x
    return x[..., margin:-margin, margin:-margin]


def _pool(x: torch.Tensor, size_px: int, dilation: int, *, mode: str) -> torch.Tensor:
    """Valid ``size_px`` x ``size_px`` max or mean pooling at stride 1 with ``dilation`` (separable).

    ``[N, C, H, W] -> [N, C, H - d(size-1), W - d(size-1)]``.
    """
    reach = dilation * (size_px - 1)
    if reach == 0:
        return x
    h, w = x.shape[-2:]
    cols = [x[..., :, i * dilation : w - reach + i * dilation] for i in range(size_px)]  # [N, C, H, W']
    if mode == "max":
        r = cols[0]
        for c in cols[1:]:
            r = torch.maximum(r, c)
        rows = [r[..., i * dilation : h - reach + i * dilation, :] for i in range(size_px)]
        out = rows[0]
        for c in rows[1:]:
            out = torch.maximum(out, c)
        return out  # [N, C, H', W']
    r = torch.stack(cols).sum(0)  # [N, C, H, W']
    out = torch.stack([r[..., i * dilation : h - reach + i * dilation, :] for i in range(size_px)]).sum(0)
    return out / float(size_px * size_px)  # [N, C, H', W']


def _conv(conv: nn.Conv2d, x: torch.Tensor, dilation: int, *, dense: bool) -> torch.Tensor:
    """Apply a valid conv; in dense mode a strided conv runs at stride 1 with ``dilation`` (shift-and-stitch)."""
    stride = 1 if dense else conv.stride
    return F.conv2d(x, conv.weight, conv.bias, stride=stride, dilation=dilation)


class LocalCBAM(nn.Module):
    """CBAM with a fixed pooling window: channel then spatial attention on valid neighbourhoods.

    Channel attention: sliding ``pool_px`` max- and mean-pool, a shared 1 x 1 MLP ``ch -> ch/r -> ch``
    (ReLU, no bias), summed, sigmoid. Spatial attention: channel-max and channel-mean maps, a valid
    ``kernel_px`` conv, sigmoid. Output ``y * spatial + crop(x)``; the map shrinks by
    ``pool_px - 1 + kernel_px - 1``.
    """

    def __init__(self, channels: int, *, reduction: int, pool_px: int = 3, kernel_px: int = 3) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool_px = pool_px
        self.kernel_px = kernel_px
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, channels, 1, bias=False)
        )
        self.spatial = nn.Conv2d(2, 1, kernel_px, bias=False)

    @property
    def shrink_px(self) -> int:
        """Pixels lost over both sides at dilation 1."""
        return self.pool_px - 1 + self.kernel_px - 1

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        """``[N, ch, H, W] -> [N, ch, H - d*shrink, W - d*shrink]``."""
        pooled_max = _pool(x, self.pool_px, dilation, mode="max")  # [N, ch, H1, W1]
        pooled_mean = _pool(x, self.pool_px, dilation, mode="mean")  # [N, ch, H1, W1]
        channel_att = torch.sigmoid(self.mlp(pooled_max) + self.mlp(pooled_mean))  # [N, ch, H1, W1]
        m1 = dilation * (self.pool_px - 1) // 2
        y = _crop(x, m1) * channel_att  # [N, ch, H1, W1]
        maps = torch.cat([torch.amax(y, dim=1, keepdim=True), torch.mean(y, dim=1, keepdim=True)], dim=1)
        spatial_att = torch.sigmoid(_conv(self.spatial, maps, dilation, dense=True))  # [N, 1, H2, W2]
        m2 = dilation * (self.kernel_px - 1) // 2
        return _crop(y, m2) * spatial_att + _crop(x, m1 + m2)  # [N, ch, H2, W2]


class LocalMultiScaleBlock(SpectralBranches):
    """Local MSAB: valid multi-scale convolutions, a 1 x 1 merge and :class:`LocalCBAM`.

    Parallel valid ``k x k`` convs + LeakyReLU(0.1), centre-cropped to the largest kernel's map,
    concatenated, Conv 1x1 + LeakyReLU(0.01), then the local attention.

    With :attr:`spectral` set, inference at dilation 1 computes the branches through a 2-D DFT
    (:func:`~embedder.models.spectral.valid_convs`: one transform per window, blocks of 8-16 outputs a side
    over a whole frame): the same values up to float rounding, ~0.35 of the direct FLOPs at the paper
    widths. It is skipped where it would not pay (:meth:`_spectral_block`).
    """

    def __init__(self, in_ch: int, out_ch: int, *, kernels: tuple[int, ...], reduction: int) -> None:
        super().__init__()
        self.kernels = tuple(kernels)
        self.branches = nn.ModuleList(nn.Conv2d(in_ch, out_ch, k) for k in self.kernels)
        self.merge = nn.Conv2d(out_ch * len(self.kernels), out_ch, 1)
        self.attention = LocalCBAM(out_ch, reduction=reduction)

    @property
    def shrink_px(self) -> int:
        """Pixels lost over both sides at dilation 1."""
        return max(self.kernels) - 1 + self.attention.shrink_px

    def _branch_convs(self) -> list[nn.Conv2d]:
        return [typing.cast(nn.Conv2d, conv) for conv in self.branches]

    def _out_px(self, size_px: tuple[int, int]) -> tuple[int, int]:
        k1 = max(self.kernels) - 1
        return size_px[0] - k1, size_px[1] - k1

    def spectral_flops(self, size_px: tuple[int, int]) -> tuple[int, int]:
        """FLOPs of the branches on an input map of ``size_px``: ``(direct, through the DFT)``."""
        return spectral.valid_flops(self._branch_convs(), self._out_px(size_px))

    _MIN_BLOCKS = 16
    """Fewest transforms per call for the DFT path: with fewer, its per-frequency products are too short
    to run fast (an 8 px tile's 22 px frames, 4 blocks: x0.7 of the direct speed on 2 cores)."""

    def _spectral_block(self, n_maps: int, size_px: tuple[int, int]) -> tuple[int, int] | None:
        """The DFT plan's input block for ``n_maps`` maps of ``size_px``, or None where it does not pay.

        It must need at most :data:`~embedder.models.spectral.MAX_FLOP_SHARE` of the direct FLOPs (not
        for narrow models) and make at least :attr:`_MIN_BLOCKS` transforms.
        """
        direct, dft = self.spectral_flops(size_px)
        out_px = self._out_px(size_px)
        s_h, s_w = spectral.valid_plan_size(self._branch_convs(), out_px)
        k1 = max(self.kernels) - 1
        blocks = n_maps * -(-out_px[0] // (s_h - k1)) * -(-out_px[1] // (s_w - k1))
        pays = dft <= spectral.MAX_FLOP_SHARE * direct and blocks >= self._MIN_BLOCKS
        return (s_h, s_w) if pays else None

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        """``[N, in_ch, H, W] -> [N, out_ch, H - d*shrink, W - d*shrink]``."""
        size_px = (x.shape[-2], x.shape[-1])
        size = None
        if dilation == 1 and min(self._out_px(size_px)) >= 1 and self._spectral_ok(x):
            size = self._spectral_block(x.shape[0], size_px)  # None: the DFT would not pay
        if size is not None:
            plan = self._cached_plan(size, x.device, spectral.plan_valid)
            y = F.leaky_relu_(spectral.valid_convs(x, plan), 0.1)  # [N, out * n_kernels, H', W']
            return self.attention(F.leaky_relu(self.merge(y), 0.01), dilation)
        k_max = max(self.kernels)
        ys = []
        for k, conv in zip(self.kernels, self.branches, strict=True):
            y = F.leaky_relu(
                _conv(typing.cast(nn.Conv2d, conv), x, dilation, dense=True), 0.1
            )  # [N, out, H - d(k-1), ...]
            ys.append(_crop(y, dilation * (k_max - k) // 2))  # [N, out, H - d(k_max-1), ...]
        y = F.leaky_relu(self.merge(torch.cat(ys, dim=1)), 0.01)  # [N, out, H', W']
        return self.attention(y, dilation)


class DenseFrameEncoder(nn.Module):
    """Dense-consistent per-frame encoder: ``[N, C, 15, 15] -> [N, d_model]`` per window.

    :meth:`encode_dense` maps a whole frame ``[C, H, W] -> [H - 14, W - 14, d_model]`` with exactly the
    per-window tokens of every interior pixel.
    """

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        c_stem, c_mid, c_low = cfg.conv_channels
        self.scale_in: nn.Module = BandScaler(n_channels) if cfg.standardize else nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(n_channels, c_stem, 1), nn.SiLU())
        self.multiscale = LocalMultiScaleBlock(
            c_stem, c_stem, kernels=cfg.multiscale_kernels, reduction=cfg.cbam_reduction
        )
        size1 = WINDOW_PX - self.multiscale.shrink_px  # px after the multi-scale block
        if size1 < _DOWN_KERNEL_PX or (size1 - _DOWN_KERNEL_PX) % _STRIDE != 0:
            raise ConfigError(
                f"ModelConfig.multiscale_kernels = {cfg.multiscale_kernels} leave a {size1} px map for the "
                f"dense encoder's stride-{_STRIDE} {_DOWN_KERNEL_PX} px convolution; use (3, 7) or (3, 5)"
            )
        self.down = nn.Conv2d(c_stem, c_mid, _DOWN_KERNEL_PX, stride=_STRIDE)
        self.drop = nn.Dropout2d(cfg.encoder_conv_dropout)
        size2 = (size1 - _DOWN_KERNEL_PX) // _STRIDE + 1  # px after the strided conv
        self.low = nn.Conv2d(c_mid, c_low, size2)  # valid: collapses to one position
        self.to_token = nn.Conv2d(c_low, cfg.d_model, 1)
        self.d_model = cfg.d_model
        # ModelConfig.centre_skip: the centre pixel's bands, linearly, into its own token (a 1 x 1 conv
        # on the input cropped by the window's half-width: the same in window and dense mode).
        self.centre: nn.Conv2d | None = nn.Conv2d(n_channels, cfg.d_model, 1) if cfg.centre_skip else None

    def _run(self, x: torch.Tensor, *, dense: bool) -> torch.Tensor:
        """Shared window/dense computation: ``[N, C, H, W] -> [N, d_model, H', W']``."""
        scaled = self.scale_in(x)  # [N, C, H, W]
        x = self.stem(scaled)  # [N, 149, H, W]
        x = self.multiscale(x, 1)  # [N, 149, H - 10, W - 10]
        x = self.drop(F.silu(_conv(self.down, x, 1, dense=dense)))  # window [N, 128, 2, 2]; dense H - 12
        dil = _STRIDE if dense else 1
        x = F.leaky_relu(_conv(self.low, x, dil, dense=dense), 0.01)  # window [N, 64, 1, 1]; dense H - 14
        token = self.to_token(x)  # [N, d_model, H', W']
        if self.centre is not None:
            token = token + self.centre(_crop(scaled, WINDOW_PX // 2))  # [N, d_model, H - 14, W - 14]
        return token

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-window tokens ``[N, C, 15, 15] -> [N, d_model]``."""
        return self._run(frames, dense=False).flatten(1)  # [N, d_model]

    def encode_dense(self, tile: torch.Tensor, *, rows_per_chunk: int = 64) -> torch.Tensor:
        """Tokens of every interior pixel of one frame: ``[C, H, W] -> [H - 14, W - 14, d_model]``.

        Equal to :meth:`forward` on each pixel's 15 x 15 window (float rounding aside). Output rows are
        computed in strips of ``rows_per_chunk`` (with a 14-row overlap of input) to bound memory.
        """
        if tile.ndim != 3:
            raise ValueError(f"encode_dense takes one frame [C, H, W], got shape {tuple(tile.shape)}")
        halo = WINDOW_PX - 1
        h_out, w_out = tile.shape[1] - halo, tile.shape[2] - halo
        if h_out < 1 or w_out < 1:
            raise ValueError(
                f"tile {tuple(tile.shape[1:])} px is smaller than one {WINDOW_PX} px window; read a 7 px halo"
            )
        if rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk = {rows_per_chunk} must be >= 1")
        parts = []
        for r0 in range(0, h_out, rows_per_chunk):
            r1 = min(h_out, r0 + rows_per_chunk)
            strip = tile[None, :, r0 : r1 + halo, :]  # [1, C, rows + 14, W]
            parts.append(self._run(strip, dense=True)[0])  # [d_model, rows, w]
        return torch.cat(parts, dim=1).permute(1, 2, 0)  # [h, w, d_model]


def dense_macs_per_pixel(encoder: DenseFrameEncoder) -> int:
    """Multiply-adds per pixel-frame of :meth:`DenseFrameEncoder.encode_dense` (convolutions and MLPs)."""
    total = 0
    for m in encoder.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += m.in_channels * m.out_channels * kh * kw // m.groups
        if isinstance(m, LocalCBAM):  # the shared MLP runs on both pooled maps
            total += sum(c.in_channels * c.out_channels for c in m.mlp if isinstance(c, nn.Conv2d))
    return total
