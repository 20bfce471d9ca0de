"""The modality autoencoder: one per sensor, trained alone in stage 1 (../shared/SPEC.md section 3).

The encoder runs a convolutional stack on every frame (the ``T`` frames are folded into the batch),
turning each ``[C, 15, 15]`` frame into one ``d_model`` token, then a transformer that attends across
TIME (the reference attends across the minibatch; SPEC 3.8 deviation), then a token reduction to the
non-negative bottleneck ``z`` of size ``D``. The decoder mirrors it. Channel count ``C``, ``D`` and the
number of reduced tokens ``R`` come from the sensor's :class:`~embedder.sensors.SensorSpec`.

Because no layer mixes samples, an embedding never depends on what else is in the batch, and
:meth:`ModalityAutoencoder.encode_frames` gives per-frame tokens that inference may cache per pixel-date.
"""

from __future__ import annotations

import math
import typing

import torch
from torch import nn
from torch.nn import functional as F

from embedder.config import ModelConfig
from embedder.models.blocks import BandScaler, ConvAttentionBlock, MultiScaleAttentionBlock, PoolResidual
from embedder.models.dense import DenseFrameEncoder
from embedder.sensors import WINDOW_DATES, WINDOW_PX, SensorSpec

__all__ = ["GapRangeError", "ModalityAutoencoder", "day_positions"]

CENTRE_PX = WINDOW_PX // 2
"""Row and column of a window's centre pixel (the pixel an embedding belongs to)."""

TOKEN_SIDE_PX = 4
"""Side of the per-frame feature map after the two strided convolutions (15 -> 7 -> 4)."""


class GapRangeError(ValueError):
    """Day gaps or offsets fall outside a positional table (negative, not finite or too large)."""


def day_positions(gaps_days: torch.Tensor, *, max_position_days: int, what: str = "gaps") -> torch.Tensor:
    """Day offsets of every frame from the first: ``[B, n] -> [B, n + 1]`` integers ``[0, cumsum(gaps)]``.

    Gaps are rounded to whole days. Raises :class:`GapRangeError` naming the offending value when a gap
    is negative or not finite, or an offset exceeds ``max_position_days`` (the table has that + 1 rows).
    """
    if gaps_days.ndim != 2:
        raise GapRangeError(f"{what} must have shape [B, n], got {tuple(gaps_days.shape)}")
    if not torch.isfinite(gaps_days).all():
        raise GapRangeError(
            f"{what} contain non-finite values ({gaps_days}); fill or drop those samples first"
        )
    gaps = torch.round(gaps_days).long()  # [B, n] whole days
    if (gaps < 0).any():
        raise GapRangeError(f"{what} must be >= 0 days, got minimum {int(gaps.min())}; sort frames by time")
    positions = torch.cat([torch.zeros_like(gaps[:, :1]), torch.cumsum(gaps, dim=1)], dim=1)  # [B, n + 1]
    if positions.numel() and int(positions.max()) > max_position_days:
        raise GapRangeError(
            f"{what} sum to {int(positions.max())} days, beyond the positional table of "
            f"{max_position_days + 1} entries; drop such windows (training) or use 1-day steps (inference, SPEC 7)"
        )
    return positions


class _FrameEncoder(nn.Module):
    """Per-frame convolutional encoder: ``[N, C, 15, 15] -> [N, d_model]`` (SPEC 3, encoder steps 1-6)."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        c_stem, c_mid, c_low = cfg.conv_channels
        token_channels = cfg.d_model // TOKEN_SIDE_PX**2
        self.scale_in: nn.Module = BandScaler(n_channels) if cfg.standardize else nn.Identity()
        self.stem = nn.Sequential(nn.Conv2d(n_channels, c_stem, 1), nn.SiLU())
        self.multiscale = PoolResidual(
            MultiScaleAttentionBlock(
                c_stem, c_stem, kernels=cfg.multiscale_kernels, reduction=cfg.cbam_reduction
            )
        )
        self.down1 = nn.Sequential(
            nn.Conv2d(c_stem, c_mid, 2, stride=2), nn.SiLU(), nn.Dropout2d(cfg.encoder_conv_dropout)
        )
        self.mid = PoolResidual(ConvAttentionBlock(c_mid, c_mid, kernel_px=3, reduction=cfg.cbam_reduction))
        self.down2 = nn.Sequential(
            nn.Conv2d(c_mid, c_low, 2, stride=2, padding=1), nn.SiLU(), nn.Dropout2d(cfg.encoder_conv_dropout)
        )
        self.to_token = ConvAttentionBlock(
            c_low, token_channels, kernel_px=3, reduction=cfg.token_cbam_reduction, attention_kernel_px=3
        )
        self.centre: nn.Linear | None = nn.Linear(n_channels, cfg.d_model) if cfg.centre_skip else None

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        scaled = self.scale_in(frames)  # [N, C, 15, 15]
        x = self.stem(scaled)  # [N, 149, 15, 15]
        x = self.multiscale(x)  # [N, 149, 15, 15]
        x = self.down1(x)  # [N, 128, 7, 7]
        x = self.mid(x)  # [N, 128, 7, 7]
        x = self.down2(x)  # [N, 64, 4, 4]
        x = self.to_token(x)  # [N, 16, 4, 4]
        token = x.flatten(1)  # [N, d_model]
        if self.centre is not None:  # ModelConfig.centre_skip
            token = token + self.centre(scaled[:, :, CENTRE_PX, CENTRE_PX])  # [N, d_model]
        return token


class _FrameDecoder(nn.Module):
    """Per-frame convolutional decoder: ``[N, d_model] -> [N, C, 15, 15]`` (SPEC 3, decoder)."""

    def __init__(self, n_channels: int, cfg: ModelConfig) -> None:
        super().__init__()
        c_stem, c_mid, c_low = cfg.conv_channels
        self.token_channels = cfg.d_model // TOKEN_SIDE_PX**2
        tc = self.token_channels
        self.token = PoolResidual(ConvAttentionBlock(tc, tc, kernel_px=3, reduction=cfg.cbam_reduction))
        self.up1 = nn.Sequential(
            nn.ConvTranspose2d(tc, c_low, 2, stride=2), nn.SiLU(), nn.Dropout2d(cfg.decoder_conv_dropout)
        )
        self.low = PoolResidual(ConvAttentionBlock(c_low, c_low, kernel_px=3, reduction=cfg.cbam_reduction))
        self.up2 = nn.Sequential(
            nn.ConvTranspose2d(c_low, c_mid, 2, stride=2, padding=1, output_padding=1),
            nn.Dropout2d(cfg.decoder_conv_dropout),
        )
        self.multiscale = MultiScaleAttentionBlock(
            c_mid, c_stem, kernels=cfg.multiscale_kernels, reduction=cfg.cbam_reduction
        )
        self.head = nn.Sequential(
            nn.Conv2d(c_stem, n_channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(n_channels, n_channels, 3, padding=1),
        )
        self.scale_out: nn.Module = BandScaler(n_channels, inverse=True) if cfg.standardize else nn.Identity()
        self.centre: nn.Linear | None = nn.Linear(cfg.d_model, n_channels) if cfg.centre_skip else None
        centre_mask = torch.zeros(WINDOW_PX, WINDOW_PX)
        centre_mask[CENTRE_PX, CENTRE_PX] = 1.0
        self.register_buffer("centre_mask", centre_mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.reshape(-1, self.token_channels, TOKEN_SIDE_PX, TOKEN_SIDE_PX)  # [N, 16, 4, 4]
        x = self.token(x)  # [N, 16, 4, 4]
        x = self.up1(x)  # [N, 64, 8, 8]
        x = self.low(x)  # [N, 64, 8, 8]
        x = self.up2(x)  # [N, 128, 15, 15]
        x = self.multiscale(x)  # [N, 149, 15, 15]
        out = self.head(x)  # [N, C, 15, 15], linear output
        if self.centre is not None:  # ModelConfig.centre_skip: the centre pixel gets a linear path
            mask = typing.cast(torch.Tensor, self.centre_mask).to(out.dtype)  # [15, 15]
            out = out + self.centre(tokens)[:, :, None, None] * mask  # [N, C, 15, 15]
        return self.scale_out(out)


class ModalityAutoencoder(nn.Module):
    """Context-aware autoencoder of one sensor: ``[B, 11, C, 15, 15]`` + gaps ``[B, 10]`` -> ``z [B, D]``.

    Args:
        sensor: the sensor's spec; gives ``C`` (``n_channels``), ``D`` (``bottleneck_dim``) and
            ``R`` (``reduced_tokens``).
        cfg: model size; ``ModelConfig()`` is the paper's, ``ModelConfig.small()`` a CPU preset.

    """

    def __init__(self, sensor: SensorSpec, *, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else ModelConfig()
        self.sensor = sensor
        self.cfg = cfg
        self.n_channels = sensor.n_channels
        self.n_frames = WINDOW_DATES
        self.bottleneck_dim = sensor.bottleneck_dim
        self.reduced_tokens = sensor.reduced_tokens
        d, k = cfg.d_model, cfg.latent_token_dim

        self.frame_encoder: _FrameEncoder | DenseFrameEncoder = (
            DenseFrameEncoder(self.n_channels, cfg)
            if cfg.encoder == "dense"
            else _FrameEncoder(self.n_channels, cfg)
        )
        self.frame_decoder = _FrameDecoder(self.n_channels, cfg)
        # One positional table and one transformer, shared by encoder and decoder (SPEC 3.7-3.8).
        self.positions = nn.Embedding(cfg.max_position_days + 1, d)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_heads, dim_feedforward=cfg.ff_dim, dropout=cfg.dropout, batch_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        # Encoder head (SPEC 3.9) and its mirror.
        self.token_proj = nn.Sequential(nn.Linear(d, k), nn.SELU())
        self.token_reduce = nn.Sequential(nn.Linear(self.n_frames, self.reduced_tokens), nn.SELU())
        self.to_bottleneck = nn.Sequential(
            nn.Linear(k * self.reduced_tokens, self.bottleneck_dim), nn.Softplus()
        )
        self.from_bottleneck = nn.Sequential(
            nn.Linear(self.bottleneck_dim, k * self.reduced_tokens), nn.Softplus()
        )
        self.token_expand = nn.Sequential(nn.Linear(self.reduced_tokens, self.n_frames), nn.SELU())
        self.token_unproj = nn.Sequential(nn.Linear(k, d), nn.SELU())

    def set_band_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-band input statistics ``[C]`` of the ``ModelConfig.standardize`` option (encoder and decoder).

        Raises ``ValueError`` when the model was built without ``standardize``.
        """
        scalers = [
            m
            for m in (self.frame_encoder.scale_in, self.frame_decoder.scale_out)
            if isinstance(m, BandScaler)
        ]
        if not scalers:
            raise ValueError(
                f"the {self.sensor.name} autoencoder was built without ModelConfig.standardize; "
                "band statistics have nowhere to go"
            )
        for m in scalers:
            m.set_stats(mean, std)

    def band_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(mean, std)`` of the standardisation option, or None without it."""
        m = self.frame_encoder.scale_in
        return (m.mean.clone(), m.std.clone()) if isinstance(m, BandScaler) else None

    def positional(self, gaps_days: torch.Tensor) -> torch.Tensor:
        """Learned positional embedding of each frame's day offset, divided by sqrt(d_model): ``[B, T, d_model]``.

        Validates the gaps (:class:`GapRangeError`), which reads them on the host: inference computes it
        once per tile and passes it to :meth:`encode_tokens` (no device sync in the batch loop).
        """
        if gaps_days.shape[-1] != self.n_frames - 1:
            raise GapRangeError(
                f"{self.sensor.name} gaps must have shape [B, {self.n_frames - 1}], got {tuple(gaps_days.shape)}"
            )
        pos = day_positions(
            gaps_days, max_position_days=self.cfg.max_position_days, what=f"{self.sensor.name} gaps"
        )  # [B, T]
        return self.positions(pos) / math.sqrt(self.cfg.d_model)  # [B, T, d_model]

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens ``[N, C, 15, 15] -> [N, d_model]`` (no mixing across frames: cacheable)."""
        if frames.ndim != 4 or frames.shape[1:] != (self.n_channels, WINDOW_PX, WINDOW_PX):
            raise ValueError(
                f"{self.sensor.name} frames must be [N, {self.n_channels}, {WINDOW_PX}, {WINDOW_PX}], "
                f"got {tuple(frames.shape)}"
            )
        return self.frame_encoder(frames)  # [N, d_model]

    def encode_tokens(
        self,
        tokens: torch.Tensor,
        gaps_days: torch.Tensor | None = None,
        *,
        positional: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Bottleneck from frame tokens: ``[B, 11, d_model]``, gaps ``[B, 10]`` -> ``z [B, D]`` (>= 0).

        Give either ``gaps_days`` or their precomputed :meth:`positional` embedding ``[B or 1, 11,
        d_model]`` (broadcast over the batch: one window's gaps shared by all its pixels).
        """
        if (gaps_days is None) == (positional is None):
            raise ValueError("encode_tokens takes exactly one of gaps_days and positional")
        pos = self.positional(gaps_days) if positional is None else positional  # type: ignore[arg-type]
        x = tokens + pos  # [B, T, d_model]
        x = self.transformer(x)  # [B, T, d_model], attention across time
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder head (SPEC 3.9): transformer output ``[B, T, d_model]`` -> ``z [B, D]``."""
        x = self.token_proj(x)  # [B, T, k]
        x = self.token_reduce(x.transpose(1, 2))  # [B, k, R]
        return self.to_bottleneck(x.flatten(1))  # [B, D]

    @property
    def first_layer_shareable(self) -> bool:
        """Whether the first attention's input projection is linear in the frame token (a post-norm layer).

        Then ``W (token + pos) = W token + W pos``: inference projects each frame's token once
        (:meth:`project_first_layer`) and reuses it in the 11 windows the frame belongs to.
        """
        layer = typing.cast(nn.TransformerEncoderLayer, self.transformer.layers[0])
        return not layer.norm_first and layer.self_attn.in_proj_weight is not None

    def project_first_layer(self, tokens: torch.Tensor) -> torch.Tensor:
        """The first attention's input projection of frame tokens, without bias: ``[..., d] -> [..., 3d]``."""
        attn = typing.cast(nn.TransformerEncoderLayer, self.transformer.layers[0]).self_attn
        return F.linear(tokens, attn.in_proj_weight)

    def encode_tokens_shared(
        self, tokens: torch.Tensor, projected: torch.Tensor, positional: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`encode_tokens` with the frame tokens' first-layer projection computed beforehand.

        ``tokens [B, 11, d]``, ``projected = project_first_layer(tokens)`` ``[B, 11, 3d]``, ``positional
        [B or 1, 11, d]`` -> ``z [B, D]``: the same numbers (to float rounding) for a third less of the
        transformer's matmul work when each frame's projection is shared by its 11 windows. Only for
        :attr:`first_layer_shareable` models in eval mode.
        """
        if self.training:
            raise RuntimeError(
                "encode_tokens_shared is an inference path; call .eval() first (it applies no dropout)"
            )
        layer = typing.cast(nn.TransformerEncoderLayer, self.transformer.layers[0])
        attn = layer.self_attn
        b, t, d = tokens.shape
        heads = attn.num_heads
        qkv = projected + F.linear(positional, attn.in_proj_weight, attn.in_proj_bias)  # [B, T, 3d]
        q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # each [B, H, T, d/H]
        a = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, d/H]
        a = attn.out_proj(a.transpose(1, 2).reshape(b, t, d))  # [B, T, d]
        x = layer.norm1(tokens + positional + a)  # post-norm residual (dropout is off in eval)
        x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))  # [B, T, d]
        for later in self.transformer.layers[1:]:
            x = later(x)
        if self.transformer.norm is not None:
            x = self.transformer.norm(x)
        return self._head(x)

    def encode(self, x: torch.Tensor, gaps_days: torch.Tensor) -> torch.Tensor:
        """``x [B, 11, C, 15, 15]``, gaps ``[B, 10]`` -> ``z [B, D]``."""
        if x.ndim != 5 or x.shape[1] != self.n_frames:
            raise ValueError(
                f"{self.sensor.name} input must be [B, {self.n_frames}, {self.n_channels}, "
                f"{WINDOW_PX}, {WINDOW_PX}], got {tuple(x.shape)}"
            )
        b = x.shape[0]
        tokens = self.encode_frames(x.reshape(b * self.n_frames, *x.shape[2:]))  # [B*T, d_model]
        return self.encode_tokens(tokens.reshape(b, self.n_frames, -1), gaps_days)  # [B, D]

    def decode(self, z: torch.Tensor, gaps_days: torch.Tensor) -> torch.Tensor:
        """``z [B, D]``, gaps ``[B, 10]`` -> reconstruction ``[B, 11, C, 15, 15]`` (linear output)."""
        b = z.shape[0]
        x = self.from_bottleneck(z).reshape(b, -1, self.reduced_tokens)  # [B, k, R]
        x = self.token_expand(x).transpose(1, 2)  # [B, T, k]
        x = self.token_unproj(x)  # [B, T, d_model]
        x = x + self.positional(gaps_days)  # [B, T, d_model]
        x = self.transformer(x)  # [B, T, d_model]
        frames = self.frame_decoder(x.reshape(b * self.n_frames, -1))  # [B*T, C, 15, 15]
        return frames.reshape(b, self.n_frames, self.n_channels, WINDOW_PX, WINDOW_PX)

    def forward(self, x: torch.Tensor, gaps_days: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_hat [B, 11, C, 15, 15], z [B, D])``."""
        z = self.encode(x, gaps_days)
        return self.decode(z, gaps_days), z
