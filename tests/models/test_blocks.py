import pytest
import torch

from embedder.models.blocks import CBAM, ConvAttentionBlock, MultiScaleAttentionBlock, PoolResidual

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _check_grads(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"
    return y


def test_cbam_shape_grads_and_internal_residual():
    torch.manual_seed(0)
    cbam = CBAM(16, reduction=8, kernel_px=7)
    assert cbam.mlp[0].out_channels == 2 and cbam.mlp[0].bias is None and cbam.mlp[2].bias is None
    x = torch.randn(3, 16, 7, 7)
    y = _check_grads(cbam, x)
    assert y.shape == x.shape
    # Recompute the attention by hand: y = x * ca * sa + x.
    with torch.no_grad():
        mlp = cbam.mlp
        ca = torch.sigmoid(mlp(x.amax(dim=(2, 3), keepdim=True)) + mlp(x.mean(dim=(2, 3), keepdim=True)))
        xc = x * ca
        sa = torch.sigmoid(cbam.spatial(torch.cat([xc.amax(1, keepdim=True), xc.mean(1, keepdim=True)], 1)))
        torch.testing.assert_close(cbam(x), xc * sa + x)


def test_cbam_is_per_sample():
    torch.manual_seed(1)
    cbam = CBAM(8, reduction=2, kernel_px=3).eval()
    x = torch.randn(4, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(cbam(x)[1:2], cbam(x[1:2]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernels", [(3, 7), (3,)])
def test_multiscale_block(kernels):
    torch.manual_seed(2)
    block = MultiScaleAttentionBlock(6, 10, kernels=kernels, reduction=2)
    assert len(block.branches) == len(kernels)
    assert block.merge[0].in_channels == 10 * len(kernels) and block.merge[0].kernel_size == (1, 1)
    y = _check_grads(block, torch.randn(2, 6, 15, 15))
    assert y.shape == (2, 10, 15, 15)


def test_conv_attention_block():
    torch.manual_seed(3)
    block = ConvAttentionBlock(8, 4, kernel_px=3, reduction=2, attention_kernel_px=3)
    assert block.attention.spatial.kernel_size == (3, 3)
    y = _check_grads(block, torch.randn(2, 8, 4, 4))
    assert y.shape == (2, 4, 4, 4)


def test_pool_residual():
    torch.manual_seed(4)
    inner = ConvAttentionBlock(8, 8, kernel_px=3, reduction=2)
    block = PoolResidual(inner)
    x = torch.randn(2, 8, 7, 7)
    y = _check_grads(block, x)
    assert y.shape == x.shape
    with torch.no_grad():
        expected = torch.nn.functional.max_pool2d(inner(x), 3, stride=1, padding=1) + x
        torch.testing.assert_close(block(x), expected)


def test_max_pool3_same_equals_max_pool2d() -> None:
    from embedder.models.blocks import max_pool3_same

    x = torch.randn(4, 5, 15, 15)
    ref = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    assert torch.equal(max_pool3_same(x), ref)
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    (max_pool3_same(x) ** 2).sum().backward()
    g = x.grad.clone()
    x.grad = None
    (torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1) ** 2).sum().backward()
    torch.testing.assert_close(g, x.grad)
