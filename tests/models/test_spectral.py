import copy
import dataclasses

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from embedder.models.blocks import MultiScaleAttentionBlock, spectral_convolutions
from embedder.models.spectral import (
    MAX_SIDE_PX,
    plan_convs,
    plan_valid,
    spectral_convs,
    supports,
    valid_convs,
    valid_plan_size,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _convs(c_in: int, c_out: int, kernels: tuple[int, ...], seed: int = 0) -> list[nn.Conv2d]:
    torch.manual_seed(seed)
    return [nn.Conv2d(c_in, c_out, k, padding=k // 2) for k in kernels]


@pytest.mark.parametrize(("kernels", "size"), [((3, 7), (15, 15)), ((5,), (9, 12)), ((1, 3), (4, 6))])
def test_spectral_convolutions_are_as_accurate_as_the_direct_ones(
    kernels: tuple[int, ...], size: tuple[int, int]
) -> None:
    convs = _convs(6, 5, kernels)
    x = torch.randn(4, 6, *size) * 3 + 1
    with torch.no_grad():
        exact = torch.cat(
            [F.conv2d(x.double(), c.weight.double(), c.bias.double(), padding=c.padding) for c in convs], 1
        )
        direct = torch.cat([c(x) for c in convs], dim=1)
        out = spectral_convs(x, plan_convs(convs, size))
    assert out.shape == direct.shape == (4, 5 * len(kernels), *size)
    assert out.is_contiguous(memory_format=torch.channels_last)
    err_direct = float((direct.double() - exact).abs().max())
    err = float((out.double() - exact).abs().max())
    assert err <= max(4 * err_direct, 1e-5), (err, err_direct)  # rounding only: no wrapped-around input


def test_spectral_convolutions_of_the_paper_block_equal_the_direct_ones() -> None:
    convs = _convs(149, 149, (3, 7))
    x = torch.randn(5, 149, 15, 15).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        direct = torch.cat([c(x) for c in convs], dim=1)
        out = spectral_convs(x, plan_convs(convs, (15, 15)))
    torch.testing.assert_close(out, direct, atol=2e-5 * float(direct.abs().max()), rtol=0)


def test_unsupported_convolutions_and_sizes_are_refused_by_name() -> None:
    assert supports(nn.Conv2d(3, 3, 3, padding=1))
    for conv in (
        nn.Conv2d(3, 3, 3, padding=1, stride=2),
        nn.Conv2d(3, 3, 2, padding=1),
        nn.Conv2d(3, 3, 3, padding=2, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(3, 3, 3, padding=0),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),
    ):
        assert not supports(conv)
        with pytest.raises(ValueError, match="stride-1"):
            plan_convs([conv], (8, 8))
    with pytest.raises(ValueError, match="share their input channels"):
        plan_convs([nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)], (8, 8))
    with pytest.raises(ValueError, match=r"outside 1\.\.32"):
        plan_convs([nn.Conv2d(3, 3, 3, padding=1)], (MAX_SIDE_PX + 1, 8))
    plan = plan_convs([nn.Conv2d(3, 3, 3, padding=1)], (8, 8))
    with pytest.raises(ValueError, match=r"plan is for \(8, 8\) px maps, got \(9, 8\)"):
        spectral_convs(torch.randn(1, 3, 9, 8), plan)


def test_the_block_takes_the_dft_path_only_for_float32_inference_and_follows_weight_changes() -> None:
    torch.manual_seed(1)
    block = MultiScaleAttentionBlock(8, 8, kernels=(3, 7), reduction=4).eval()
    x = torch.randn(3, 8, 15, 15)
    with torch.no_grad():
        direct = block(x)
        assert not block._plans and not block.spectral
        with spectral_convolutions(block):
            assert block.spectral
            torch.testing.assert_close(block(x), direct, atol=1e-5, rtol=0)
            assert list(block._plans) == [(15, 15)]
            first = block._plans[(15, 15)]
            block.branches[1][0].weight.mul_(-2.0)  # an in-place change bumps the weight's version
            changed = block(x)
            assert block._plans[(15, 15)] is not first
        assert not block.spectral  # restored on exit
        torch.testing.assert_close(changed, block(x), atol=1e-5, rtol=0)
        assert not torch.allclose(changed, direct, atol=1e-3)
    with spectral_convolutions(block):  # with gradients: the direct convolutions, so training is untouched
        block._plans.clear()
        block(x).sum().backward()
        assert not block._plans and block.branches[1][0].weight.grad is not None
        with torch.no_grad():
            block.train()
            block(x)
            assert not block._plans  # training mode
            block.eval()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert block(x).dtype == torch.bfloat16 and not block._plans  # autocast: direct, in bf16
            block(torch.randn(1, 8, MAX_SIDE_PX + 1, 8))
            assert not block._plans  # too large for the DFT matrices
            block(x)
            assert list(block._plans) == [(15, 15)]


@pytest.mark.parametrize(
    ("kernels", "size"), [((3, 7), (15, 15)), ((3, 7), (46, 30)), ((5,), (20, 33)), ((1, 3), (13, 9))]
)
def test_valid_convolutions_in_blocks_are_as_accurate_as_the_direct_ones(
    kernels: tuple[int, ...], size: tuple[int, int]
) -> None:
    """Unpadded convolutions, centre-cropped to the largest kernel's map, on maps of one or many blocks."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(6, 5, k) for k in kernels]
    x = torch.randn(2, 6, *size)
    k_max = max(kernels)
    out = (size[0] - k_max + 1, size[1] - k_max + 1)

    def direct(t: torch.Tensor, cs: list[nn.Module]) -> torch.Tensor:
        crop = [(k_max - k) // 2 for k in kernels]
        ys = [c(t)[:, :, m : m + out[0], m : m + out[1]] for c, m in zip(cs, crop, strict=True)]
        return torch.cat(ys, dim=1)

    plan = valid_plan_size(convs, out)
    assert (plan == size) == (max(out) <= 12)  # one transform, or output blocks of 8-16 px
    with torch.no_grad():
        y = valid_convs(x, plan_valid(convs, plan))
        ref = direct(x.double(), [copy.deepcopy(c).double() for c in convs])
        fp32 = direct(x, list(convs))
    assert y.shape == (2, 5 * len(kernels), *out)
    err, err_direct = float((y - ref).abs().max()), float((fp32 - ref).abs().max())
    assert err <= max(4 * err_direct, 1e-6), (err, err_direct)


def test_valid_plans_refuse_padded_convolutions_and_maps_without_output() -> None:
    with pytest.raises(ValueError, match="padding 0"):
        plan_valid([nn.Conv2d(3, 3, 3, padding=1)], (8, 8))
    with pytest.raises(ValueError, match="leaves no output for a 7 px kernel"):
        plan_valid([nn.Conv2d(3, 3, 7)], (6, 9))
    plan = plan_valid([nn.Conv2d(3, 3, 3)], (8, 8))
    with pytest.raises(ValueError, match="leaves no output for a 3 px kernel"):
        valid_convs(torch.randn(1, 3, 2, 9), plan)


def test_the_dense_block_and_encoder_give_the_direct_numbers_through_the_dft() -> None:
    """The dense encoder's local multi-scale block at the paper widths, per window and over a frame."""
    from embedder.config import ModelConfig
    from embedder.models.dense import DenseFrameEncoder

    torch.manual_seed(2)
    enc = DenseFrameEncoder(10, ModelConfig(encoder="dense")).eval()
    frame = torch.randn(10, 46, 46)  # 40 x 40 branch outputs: 4 x 4 blocks of 10
    windows = torch.randn(16, 10, 15, 15)  # one transform each (at least 16 per call)
    with torch.no_grad():
        direct_tile, direct_win = enc.encode_dense(frame), enc(windows)
        with spectral_convolutions(enc):
            tile, win = enc.encode_dense(frame), enc(windows)
    assert sorted(enc.multiscale._plans) == [(15, 15), (16, 16)]  # windows; the frame in 10 px blocks
    scale = float(direct_tile.abs().max())
    torch.testing.assert_close(tile, direct_tile, atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(win, direct_win, atol=1e-5 * float(direct_win.abs().max()), rtol=0)
    direct_flops, dft_flops = enc.multiscale.spectral_flops((78, 78))
    assert 0.3 < dft_flops / direct_flops < 0.4  # the paper widths on a 64-row strip
    narrow = DenseFrameEncoder(10, dataclasses.replace(ModelConfig.cpu(), encoder="dense")).eval()
    with torch.no_grad(), spectral_convolutions(narrow):
        narrow.encode_dense(frame)  # 24 channels: more FLOPs than directly
        enc.encode_dense(frame[:, :22, :22])  # 4 blocks: too few transforms per call
    assert not narrow.multiscale._plans  # so it ran the direct convolutions
    assert sorted(enc.multiscale._plans) == [(15, 15), (16, 16)]  # no new plan: direct
