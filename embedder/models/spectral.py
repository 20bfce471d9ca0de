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

__all__ = [
    "MAX_FLOP_SHARE",
    "MAX_SIDE_PX",
    "VALID_BLOCK_PX",
    "SpectralPlan",
    "flops",
    "plan_convs",
    "plan_valid",
    "spectral_convs",
    "supports",
    "valid_convs",
    "valid_flops",
    "valid_plan_size",
]

MAX_SIDE_PX = 32
"""Largest map side the DFT matrices are built for (their size grows with the square of the map area)."""
MAX_FLOP_SHARE = 0.5
"""The DFT is used where it needs at most this share of the direct convolutions' FLOPs (the executed
products run at ~0.5 of the matmul peak against ~0.8 for the direct convolutions on 2 CPU cores)."""
VALID_BLOCK_PX = 12
"""Largest output map :func:`valid_convs` computes in one transform; larger maps go in blocks of 8-16
outputs a side (12, an 18 x 18 transform for 7 x 7 kernels, is the cheapest per output at the paper
widths: ~0.35 of the direct FLOPs)."""


@dataclass(frozen=True)
class SpectralPlan:
    """The three matrices and the bias of :func:`spectral_convs` for one map size and set of kernels."""

    forward: torch.Tensor
    """``[2F, H*W]``: the half spectrum of an input map, rows (frequency, real/imaginary)."""
    mix_real: torch.Tensor
    """``[F, 2C, O]``: the outputs' real parts from the inputs' (real, imaginary) parts, per frequency."""
    mix_imag: torch.Tensor
    """``[F, 2C, O]``: the outputs' imaginary parts."""
    inverse: torch.Tensor
    """``[H*W, 2F]``: the output positions from the outputs' spectra, columns (real/imaginary, frequency)."""
    bias: torch.Tensor
    """``[O]``: the convolutions' biases, concatenated."""
    size_px: tuple[int, int]
    """``(H, W)`` of the input map."""
    key: tuple[object, ...]
    """What it was built from (:func:`plan_key`: size, device, the weights' versions)."""
    out_px: tuple[int, int] = (0, 0)
    """``(H, W)`` of the output map: ``size_px`` for "same" convolutions, smaller for valid ones."""


def supports(conv: nn.Conv2d, *, valid: bool = False) -> bool:
    """Whether ``conv`` is a plain "same" (or with ``valid``, unpadded) convolution this module computes.

    Stride 1, no dilation, one group, zero padding, an odd square kernel with padding ``k // 2`` (0).
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
        and conv.padding == ((0, 0) if valid else (k[0] // 2, k[1] // 2))
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


def valid_flops(convs: Sequence[nn.Conv2d], out_px: tuple[int, int]) -> tuple[int, int]:
    """FLOPs of the direct valid convolutions and of :func:`valid_convs` for an ``out_px`` output map.

    The dense encoder's block (149 channels, 3 x 3 and 7 x 7) needs ~0.35-0.44 of the direct FLOPs on
    frames of 30 px and more; narrow maps need more than directly, as with :func:`flops`.
    """
    direct = (
        2
        * out_px[0]
        * out_px[1]
        * convs[0].in_channels
        * sum(conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] for conv in convs)
    )
    return direct, _valid_block(convs, out_px)[2]


def _block_flops(convs: Sequence[nn.Conv2d], block_px: tuple[int, int], k1: int) -> int:
    """FLOPs of one ``block_px`` output block: forward transform, channel mix and inverse."""
    c = convs[0].in_channels
    o = sum(conv.out_channels for conv in convs)
    s_h, s_w = block_px[0] + k1, block_px[1] + k1
    n_freq = s_h * (s_w // 2 + 1)
    return 4 * n_freq * s_h * s_w * c + 8 * n_freq * c * o + 4 * block_px[0] * block_px[1] * n_freq * o


def _valid_block(
    convs: Sequence[nn.Conv2d], out_px: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], int]:
    """``(input block, output block, FLOPs)`` of :func:`valid_convs` for an ``out_px`` output map.

    One block when the output is no larger than :data:`VALID_BLOCK_PX` (a 15 x 15 window); else the
    square block of 8-16 outputs a side with the fewest FLOPs over the map, counting the overhang of the
    last row and column of blocks (40 px of outputs: 4 blocks of 10, ~0.35 of the direct FLOPs, against
    ~0.50 in blocks of 12).
    """
    k1 = max(conv.kernel_size[0] for conv in convs) - 1
    if max(out_px) <= VALID_BLOCK_PX:
        return (out_px[0] + k1, out_px[1] + k1), out_px, _block_flops(convs, out_px, k1)
    costs = {
        b: -(-out_px[0] // b) * -(-out_px[1] // b) * _block_flops(convs, (b, b), k1) for b in range(8, 17)
    }
    best = min(costs, key=lambda b: (costs[b], abs(b - VALID_BLOCK_PX)))
    return (best + k1, best + k1), (best, best), costs[best]


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
    _check(convs, size_px, valid=False)
    s_h, s_w, _ = _transform_size(convs, size_px)
    # "same": output (y, x) reads input (y + d - k // 2, x + d - k // 2) for kernel offsets d
    return _build(convs, size_px, size_px, (s_h, s_w), [-(c.kernel_size[0] // 2) for c in convs])


def plan_valid(convs: Sequence[nn.Conv2d], size_px: tuple[int, int]) -> SpectralPlan:
    """The DFT matrices of unpadded convolutions on ``[N, C, H, W]`` maps, concatenated.

    Each output is centre-cropped to the largest kernel's ``H - k_max + 1`` map (the dense encoder's
    multi-scale block). The transform is the input map itself (``S = H``): no output reads past the input, so nothing wraps.
    Checks and storage as :func:`plan_convs`.
    """
    _check(convs, size_px, valid=True)
    k1 = max(c.kernel_size[0] for c in convs) - 1
    h, w = size_px
    if min(h, w) <= k1:
        raise ValueError(f"map size {size_px} leaves no output for a {k1 + 1} px kernel")
    # output (y, x) of a smaller kernel reads input (y + off + d, x + off + d), off = (k_max - k) // 2
    offsets = [(k1 + 1 - c.kernel_size[0]) // 2 for c in convs]
    return _build(convs, size_px, (h - k1, w - k1), size_px, offsets)


def _check(convs: Sequence[nn.Conv2d], size_px: tuple[int, int], *, valid: bool) -> None:
    """Raise ``ValueError`` naming what :func:`plan_convs` / :func:`plan_valid` cannot compute."""
    if not convs:
        raise ValueError("plan_convs needs at least one convolution")
    bad = [repr(c) for c in convs if not supports(c, valid=valid)]
    if bad:
        raise ValueError(
            f"spectral convolutions need stride-1, undilated, single-group, zero-padded odd kernels with "
            f"padding {'0' if valid else 'k // 2'}; got {', '.join(bad)}"
        )
    c_in = {c.in_channels for c in convs}
    if len(c_in) != 1:
        raise ValueError(f"the convolutions must share their input channels, got {sorted(c_in)}")
    h, w = size_px
    if not (1 <= h <= MAX_SIDE_PX and 1 <= w <= MAX_SIDE_PX):
        raise ValueError(
            f"map size {size_px} is outside 1..{MAX_SIDE_PX} px per side; use the direct convolution"
        )


def _build(
    convs: Sequence[nn.Conv2d],
    size_px: tuple[int, int],
    out_px: tuple[int, int],
    transform_px: tuple[int, int],
    offsets: Sequence[int],
) -> SpectralPlan:
    """The plan for outputs ``y[o, i, j] = sum_d w[o, :, d] x[:, i + off + d]`` (``off`` per conv).

    All in an ``S_h x S_w`` circular transform that the caller chose large enough not to wrap.
    """
    device = convs[0].weight.device
    f64 = torch.float64
    h, w = size_px
    s_h, s_w = transform_px
    n_freq = s_h * (s_w // 2 + 1)

    # Forward transform: the half spectrum of every basis image (one 1 at (y, x), zero-padded to S).
    basis = torch.eye(h * w, dtype=f64).reshape(h * w, h, w)  # [HW, H, W]
    spec = torch.fft.rfft2(basis, s=(s_h, s_w))  # [HW, S_h, S_w/2+1]
    fwd = torch.view_as_real(spec).reshape(h * w, 2 * n_freq).T  # [2F, HW], rows (f, re/im)

    # Inverse transform: irfft2 of every real and imaginary unit spectrum, cropped to the output positions.
    units = torch.eye(2 * n_freq, dtype=f64).reshape(2 * n_freq, s_h, s_w // 2 + 1, 2)
    images = torch.fft.irfft2(torch.view_as_complex(units), s=(s_h, s_w))  # [2F, S_h, S_w]
    inv = images[:, : out_px[0], : out_px[1]].reshape(n_freq, 2, -1)  # [F, re/im, outputs]

    # Kernel spectra: y[i] = sum_d w[d] x[i + off + d] is the circular convolution of x with
    # g[m] = w[-off - m], i.e. g[(-off - d) mod S] = w[d]. Laid out [S_h, S_w, C, O] so that the spectra
    # come out as [F, C, O], the mix's layout, without a transposing copy.
    c_in, o_total = convs[0].in_channels, sum(conv.out_channels for conv in convs)
    g = torch.zeros(s_h, s_w, c_in, o_total, dtype=f64)
    o0 = 0
    for conv, off in zip(convs, offsets, strict=True):
        k, o = conv.kernel_size[0], conv.out_channels
        weight = conv.weight.detach().to(device="cpu", dtype=f64).permute(2, 3, 1, 0)  # [k, k, C, O]
        rows = torch.tensor([(-off - d) % s_h for d in range(k)])
        cols = torch.tensor([(-off - d) % s_w for d in range(k)])
        g[rows[:, None], cols[None, :], :, o0 : o0 + o] = weight
        o0 += o
    # [F, C, O], computed in float64 and rounded to the float32 the plan keeps (half the bytes to copy below)
    gk = torch.fft.rfft2(g, dim=(0, 1)).reshape(n_freq, c_in, o_total).to(torch.complex64)
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
        inverse=out(inv.transpose(0, 1).reshape(2 * n_freq, -1).T),
        bias=out(bias),
        size_px=(h, w),
        key=plan_key(convs, (h, w), device),
        out_px=out_px,
    )


def spectral_convs(x: torch.Tensor, plan: SpectralPlan) -> torch.Tensor:
    """``[N, C, H, W] -> [N, O, H, W]`` (channels-last): the planned convolutions' concatenated outputs."""
    n, c, h, w = x.shape
    if (h, w) != plan.size_px:
        raise ValueError(f"the plan is for {plan.size_px} px maps, got {(h, w)}")
    y = _apply(x.permute(0, 2, 3, 1).reshape(n, h * w, c), plan)  # a view when x is channels-last
    return y.reshape(n, *plan.out_px, -1).permute(0, 3, 1, 2)  # [N, O, H', W'], channels-last


def _apply(xs: torch.Tensor, plan: SpectralPlan) -> torch.Tensor:
    """``[N, H*W, C]`` input maps -> ``[N, H'*W', O]`` outputs (bias added)."""
    n, _, c = xs.shape
    n_freq = plan.mix_real.shape[0]
    o = plan.bias.shape[0]
    spec = torch.matmul(plan.forward, xs).reshape(n, n_freq, 2 * c).transpose(0, 1)  # [F, N, (re/im, C)]
    mixed = torch.empty(2, n_freq, n, o, dtype=xs.dtype, device=xs.device)  # [re/im, F, N, O]
    torch.bmm(spec, plan.mix_real, out=mixed[0])
    torch.bmm(spec, plan.mix_imag, out=mixed[1])
    y = torch.mm(plan.inverse, mixed.reshape(2 * n_freq, n * o))  # [H'W', N*O]: one product over (re/im, F)
    y = y.reshape(-1, n, o).transpose(0, 1).contiguous()  # [N, H'W', O]
    return y.add_(plan.bias)


def valid_plan_size(convs: Sequence[nn.Conv2d], out_px: tuple[int, int]) -> tuple[int, int]:
    """The input block :func:`plan_valid` is built for when :func:`valid_convs` makes ``out_px`` outputs."""
    return _valid_block(convs, out_px)[0]


def valid_convs(x: torch.Tensor, plan: SpectralPlan) -> torch.Tensor:
    """``[N, C, H, W] -> [N, O, H - k_max + 1, W - k_max + 1]`` (channels-last) on a map of any size.

    :func:`plan_valid`'s convolutions in blocks of ``plan.out_px`` outputs (overlap-save: input blocks of
    ``plan.size_px`` at a stride of ``plan.out_px``, the last ones zero-padded and their outputs dropped).
    """
    n, c, h, w = x.shape
    (s_h, s_w), (b_h, b_w) = plan.size_px, plan.out_px
    k1 = s_h - b_h
    h_out, w_out = h - k1, w - k1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"a {(h, w)} px map leaves no output for a {k1 + 1} px kernel")
    n_y, n_x = -(-h_out // b_h), -(-w_out // b_w)
    pad_h, pad_w = n_y * b_h + k1 - h, n_x * b_w + k1 - w
    if pad_h or pad_w:
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h))
    blocks = x.unfold(2, s_h, b_h).unfold(3, s_w, b_w)  # [N, C, nY, nX, S_h, S_w]
    xs = blocks.permute(0, 2, 3, 4, 5, 1).reshape(n * n_y * n_x, s_h * s_w, c)  # [N*nY*nX, S*S, C]
    y = _apply(xs, plan)  # [N*nY*nX, B*B, O]
    o = y.shape[-1]
    y = y.reshape(n, n_y, n_x, b_h, b_w, o).permute(0, 1, 3, 2, 4, 5).reshape(n, n_y * b_h, n_x * b_w, o)
    if pad_h or pad_w:
        y = y[:, :h_out, :w_out].contiguous()
    return y.permute(0, 3, 1, 2)  # [N, O, H', W'], channels-last
