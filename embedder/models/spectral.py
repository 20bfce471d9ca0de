"""Parallel "same" convolutions on small maps as three matrix products through a 2-D DFT.

The paper frame encoder's multi-scale block convolves each 15 x 15 window with a 7 x 7 and a 3 x 3
kernel, 149 -> 149 channels each. Computed directly, the 7 x 7 convolution alone is ~64 % of the CPU
frame encoder's time, already at the matmul peak (``bench/inference.py``). In the frequency domain a
convolution is a per-frequency product, so the same outputs need far fewer FLOPs:

1. a real 2-D DFT of every input channel, as one matrix ``[2F, H*W]`` applied to the ``[H*W, C]`` map
   (``F`` = the half spectrum of an ``S_h x S_w`` transform, real and imaginary parts stacked);
2. a per-frequency channel mix ``[2C, 2 * sum(O)]`` (the complex product with every kernel's spectrum,
   written as a real block matrix), batched over the frequencies;
3. the inverse transform back to the ``H x W`` output positions, ``[H*W, 2F]``, giving the branches'
   outputs already concatenated along the channels (channels-last), the way the block consumes them.

The transform size is ``H + k_max // 2`` per side (18 for 15 px and a 7 x 7 kernel): large enough that the
circular convolution never wraps a real input into a "same" output position, so the result equals the
zero-padded convolution up to float rounding (measured as accurate as the direct fp32 convolution
against a float64 reference). For the paper block this is ~13 GFLOP per 93 windows instead of ~54, all
in large matrix products: on 2 CPU cores ~64 ms instead of ~150 for the two convolutions and their
concatenation, and the whole fp32 frame encoder ~2x faster (``bench/inference.py``).

Only for inference: :class:`~embedder.models.blocks.MultiScaleAttentionBlock` takes this path when asked
(``spectral = True``, set by :class:`~embedder.inference.Predictor`), in eval mode without gradients, on
float32 inputs outside autocast and on maps of at most :data:`MAX_SIDE_PX` per side; everything else runs
the direct convolutions. The matrices are rebuilt whenever a weight changes (its version counter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MAX_SIDE_PX", "SpectralPlan", "flops", "plan_convs", "spectral_convs", "supports"]

MAX_SIDE_PX = 32
"""Largest map side the DFT matrices are built for (their size grows with the square of the map area)."""


@dataclass(frozen=True)
class SpectralPlan:
    """The three matrices and the bias of :func:`spectral_convs` for one map size and set of kernels."""

    forward: torch.Tensor
    """``[2F, H*W]``: the half spectrum of a map, rows (frequency, real/imaginary)."""
    mix_real: torch.Tensor
    """``[F, 2C, O]``: the outputs' real parts from the inputs' (real, imaginary) parts, per frequency."""
    mix_imag: torch.Tensor
    """``[F, 2C, O]``: the outputs' imaginary parts."""
    inverse: torch.Tensor
    """``[H*W, 2F]``: the output positions from the outputs' spectra, columns (real/imaginary, frequency)."""
    bias: torch.Tensor
    """``[O]``: the convolutions' biases, concatenated."""
    size_px: tuple[int, int]
    """``(H, W)``."""
    key: tuple[object, ...]
    """What it was built from (:func:`plan_key`: size, device, the weights' versions)."""


def supports(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a plain "same" convolution this module can compute.

    Stride 1, no dilation, one group, zero padding, an odd square kernel with padding ``k // 2``.
    """
    k = conv.kernel_size
    return (
        isinstance(conv, nn.Conv2d)
        and k[0] == k[1]
        and k[0] % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.padding == (k[0] // 2, k[1] // 2)
    )


def flops(convs: Sequence[nn.Conv2d], size_px: tuple[int, int]) -> tuple[int, int]:
    """FLOPs per map (a multiply-add = 2) of the convolutions computed directly and by :func:`spectral_convs`.

    Only wide convolutions gain: the paper block (149 channels, 3 x 3 and 7 x 7, 15 px) needs ~0.24 of the
    direct FLOPs, the small preset's (8 channels) ~2.4x more than directly.
    """
    h, w = size_px
    c = convs[0].in_channels
    o = sum(conv.out_channels for conv in convs)
    direct = (
        2 * h * w * c * sum(conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] for conv in convs)
    )
    n_freq = _transform_size(convs, size_px)[2]
    # forward [2F, HW] x [HW, C]; mix [2C] x [2 x O] per frequency; inverse [HW, 2F] x [2F, O]
    return direct, 4 * n_freq * h * w * c + 8 * n_freq * c * o + 4 * h * w * n_freq * o


def _transform_size(convs: Sequence[nn.Conv2d], size_px: tuple[int, int]) -> tuple[int, int, int]:
    """``(S_h, S_w, F)``: the DFT's sides and its number of half-spectrum frequencies.

    A side is ``H + k_max // 2``: no wrap-around into the "same" output (module docstring).
    """
    half = max(conv.kernel_size[0] for conv in convs) // 2
    s_h, s_w = size_px[0] + half, size_px[1] + half
    return s_h, s_w, s_h * (s_w // 2 + 1)


def plan_key(
    convs: Sequence[nn.Conv2d], size_px: tuple[int, int], device: torch.device
) -> tuple[object, ...]:
    """What a plan depends on: the map size, the device and every weight's and bias's identity and version."""
    parts: list[object] = [size_px, device]
    for conv in convs:
        for p in (conv.weight, conv.bias):
            parts.append(None if p is None else (p.data_ptr(), p._version))
    return tuple(parts)


def plan_convs(convs: Sequence[nn.Conv2d], size_px: tuple[int, int]) -> SpectralPlan:
    """The DFT matrices computing ``cat([conv(x) for conv in convs], dim=1)`` on ``[N, C, H, W]`` maps.

    Every conv must pass :func:`supports` and share the input channel count; the matrices are built in
    float64 and stored in float32 on the weights' device. Raises ``ValueError`` naming what does not fit.
    """
    if not convs:
        raise ValueError("plan_convs needs at least one convolution")
    bad = [repr(c) for c in convs if not supports(c)]
    if bad:
        raise ValueError(
            f"spectral convolutions need stride-1, undilated, single-group, zero-padded odd kernels with "
            f"padding k // 2; got {', '.join(bad)}"
        )
    c_in = {c.in_channels for c in convs}
    if len(c_in) != 1:
        raise ValueError(f"the convolutions must share their input channels, got {sorted(c_in)}")
    h, w = size_px
    if not (1 <= h <= MAX_SIDE_PX and 1 <= w <= MAX_SIDE_PX):
        raise ValueError(
            f"map size {size_px} is outside 1..{MAX_SIDE_PX} px per side; use the direct convolution"
        )
    device = convs[0].weight.device
    f64 = torch.float64
    s_h, s_w, n_freq = _transform_size(convs, size_px)

    # Forward transform: the half spectrum of every basis image (one 1 at (y, x), zero-padded to S).
    basis = torch.eye(h * w, dtype=f64).reshape(h * w, h, w)  # [HW, H, W]
    spec = torch.fft.rfft2(basis, s=(s_h, s_w))  # [HW, S_h, S_w/2+1]
    fwd = torch.view_as_real(spec).reshape(h * w, 2 * n_freq).T  # [2F, HW], rows (f, re/im)

    # Inverse transform: irfft2 of every real and imaginary unit spectrum, cropped to the output positions.
    units = torch.eye(2 * n_freq, dtype=f64).reshape(2 * n_freq, s_h, s_w // 2 + 1, 2)
    images = torch.fft.irfft2(torch.view_as_complex(units), s=(s_h, s_w))  # [2F, S_h, S_w]
    inv = images[:, :h, :w].reshape(n_freq, 2, h * w)  # [F, re/im, HW]

    # Kernel spectra: cross-correlation with padding p is circular convolution with g[m] = w[p - m].
    spectra = []
    for conv in convs:
        k = conv.kernel_size[0]
        p = k // 2
        weight = conv.weight.detach().to(device="cpu", dtype=f64)  # [O, C, k, k]
        g = torch.zeros(conv.out_channels, conv.in_channels, s_h, s_w, dtype=f64)
        rows = [(p - d) % s_h for d in range(k)]
        cols = [(p - d) % s_w for d in range(k)]
        g[:, :, torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = weight
        spectra.append(torch.fft.rfft2(g).reshape(conv.out_channels, conv.in_channels, n_freq))
    gk = torch.cat(spectra, dim=0).permute(2, 1, 0)  # [F, C, O] complex
    gr, gi = gk.real, gk.imag
    # [xr, xi] @ [[gr, gi], [-gi, gr]] = [xr gr - xi gi, xr gi + xi gr]: the complex product, in reals.
    mix_real = torch.cat([gr, -gi], dim=1)  # [F, 2C, O]
    mix_imag = torch.cat([gi, gr], dim=1)  # [F, 2C, O]
    bias = torch.cat(
        [
            c.bias.detach().to(f64, copy=True).cpu()
            if c.bias is not None
            else torch.zeros(c.out_channels, dtype=f64)
            for c in convs
        ]
    )

    def out(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=torch.float32).contiguous()

    return SpectralPlan(
        forward=out(fwd),
        mix_real=out(mix_real),
        mix_imag=out(mix_imag),
        inverse=out(inv.transpose(0, 1).reshape(2 * n_freq, h * w).T),
        bias=out(bias),
        size_px=(h, w),
        key=plan_key(convs, (h, w), device),
    )


def spectral_convs(x: torch.Tensor, plan: SpectralPlan) -> torch.Tensor:
    """``[N, C, H, W] -> [N, O, H, W]`` (channels-last): the planned convolutions' concatenated outputs."""
    n, c, h, w = x.shape
    if (h, w) != plan.size_px:
        raise ValueError(f"the plan is for {plan.size_px} px maps, got {(h, w)}")
    n_freq = plan.mix_real.shape[0]
    o = plan.bias.shape[0]
    xs = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # [N, HW, C] (a view when x is channels-last)
    spec = torch.matmul(plan.forward, xs).reshape(n, n_freq, 2 * c).transpose(0, 1)  # [F, N, (re/im, C)]
    mixed = torch.empty(2, n_freq, n, o, dtype=x.dtype, device=x.device)  # [re/im, F, N, O]
    torch.bmm(spec, plan.mix_real, out=mixed[0])
    torch.bmm(spec, plan.mix_imag, out=mixed[1])
    y = torch.mm(plan.inverse, mixed.reshape(2 * n_freq, n * o))  # [HW, N*O]: one product over (re/im, F)
    y = y.reshape(h * w, n, o).transpose(0, 1).contiguous()  # [N, HW, O]
    y.add_(plan.bias)
    return y.reshape(n, h, w, o).permute(0, 3, 1, 2)  # [N, O, H, W], channels-last
