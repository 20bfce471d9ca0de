import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from embedder.losses import (
    ContextAwareLoss,
    FusionLoss,
    centre_mae,
    context_weights,
    gaussian_window,
    masked_weighted_mae,
    spectral_angle,
    ssim_index,
    surroundings_mae,
)
from embedder.sensors import S1, S2, LossWeights

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _pair(b=2, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(b, 11, c, 15, 15, generator=g)
    y_hat = (y + 0.1 * torch.randn(y.shape, generator=g)).clamp(0, 1)
    mask = torch.rand(y.shape, generator=g) > 0.2
    return y_hat, y, mask


@pytest.mark.parametrize(("c", "share"), [(1.0, 0.7446), (1.5, 0.814), (1.75, 0.836)])
def test_centre_share_of_weight(c, share):
    w = context_weights(10, centre_weight=c)
    assert w.shape == (11, 10, 15, 15)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(w[5, :, 7, 7].sum()) == pytest.approx(share, abs=5e-4)


def test_weight_map_structure():
    w = context_weights(2, centre_weight=1.0).double()
    centre = w[5, 0, 7, 7]
    assert float(w[5, 0, 7, 8] / centre) == pytest.approx(0.01)  # Chebyshev d = 1
    assert float(w[5, 0, 6, 6] / centre) == pytest.approx(0.01)  # diagonal is also d = 1
    assert float(w[5, 0, 9, 4] / centre) == pytest.approx(0.0001)  # d = 3
    assert float(w[3, 0, 7, 7] / centre) == pytest.approx(0.01)  # tau = 2
    assert float(w[0, 0, 0, 0] / centre) == pytest.approx(0.1**5 * 0.01 * 0.1**6)
    torch.testing.assert_close(w[:, 0], w[:, 1])  # broadcast over channels
    assert float(context_weights(2, centre_weight=3.0)[5, 0, 7, 7]) > float(w[5, 0, 7, 7])
    with pytest.raises(ValueError, match="centre_weight = 0"):
        context_weights(2, centre_weight=0)
    slow = context_weights(2, centre_weight=1.0, temporal_decay=0.5).double()  # the option, SPEC 0.1
    assert float(slow[3, 0, 7, 7] / slow[5, 0, 7, 7]) == pytest.approx(0.25) and float(
        slow.sum()
    ) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temporal_decay = 0"):
        context_weights(2, centre_weight=1.0, temporal_decay=0)


def test_masked_weighted_mae_by_hand():
    y_hat, y, mask = _pair(b=3)
    w = context_weights(10, centre_weight=1.0)
    expected = (
        sum(float((w.double() * (y_hat[i] - y[i]).double().abs() * mask[i]).sum()) for i in range(3)) / 3
    )
    assert float(masked_weighted_mae(y_hat, y, mask, weights=w)) == pytest.approx(expected, rel=1e-5)


def test_masked_positions_do_not_change_the_loss():
    y_hat, y, mask = _pair()
    y2, y_hat2 = y.clone(), y_hat.clone()
    y2[~mask] = 7.0  # garbage where the mask says "not real"
    y_hat2[~mask] = -3.0
    for sensor in (S1, S2):
        loss = ContextAwareLoss.for_sensor(sensor, stage=2)
        c = sensor.n_channels
        a = loss(y_hat[:, :, :c], y[:, :, :c], mask[:, :, :c])
        b = loss(y_hat2[:, :, :c], y2[:, :, :c], mask[:, :, :c])
        for term in ("mae", "sam", "centre_mae", "surroundings_mae"):
            if getattr(a, term) is not None:
                assert float(getattr(a, term)) == pytest.approx(float(getattr(b, term)), rel=1e-6), term
    # S1's loss has no SSIM term, so its total is fully masked.
    s1 = ContextAwareLoss.for_sensor(S1, stage=1)
    assert float(s1(y_hat[:, :, :2], y[:, :, :2], mask[:, :, :2]).total) == pytest.approx(
        float(s1(y_hat2[:, :, :2], y2[:, :, :2], mask[:, :, :2]).total), rel=1e-6
    )
    # ... and a masked-out error really is ignored while a real one counts.
    err = y.clone()
    err[0, 5, 0, 7, 7] += 0.5
    full = torch.ones_like(mask)
    none_at_centre = full.clone()
    none_at_centre[0, 5, 0, 7, 7] = False
    assert (
        float(masked_weighted_mae(err, y, none_at_centre, weights=context_weights(10, centre_weight=1))) == 0
    )
    assert float(masked_weighted_mae(err, y, full, weights=context_weights(10, centre_weight=1))) > 0


def test_spectral_angle_matches_numpy():
    y_hat, y, mask = _pair(b=2, c=3, seed=3)
    w = context_weights(3, centre_weight=1.5)
    yn, yhn, mn, wn = y.double().numpy(), y_hat.double().numpy(), mask.numpy(), w.double().numpy()
    num = den = 0.0
    for b in range(2):
        for t, i, j in np.ndindex(11, 15, 15):
            if mn[b, t, :, i, j].all():
                a, p = yn[b, t, :, i, j], yhn[b, t, :, i, j]
                cos = np.clip(a @ p / (np.linalg.norm(a) * np.linalg.norm(p) + 1e-8), -1, 1)
                num += math.acos(cos) * wn[t, 0, i, j]
                den += wn[t, 0, i, j]
    assert float(spectral_angle(y_hat, y, mask, weights=w)) == pytest.approx(num / den, rel=1e-4)
    assert float(spectral_angle(y_hat, y, torch.zeros_like(mask), weights=w)) == 0.0


def test_spectral_angle_gradient_finite_at_perfect_reconstruction():
    _, y, mask = _pair(b=1, c=10)
    y_hat = y.clone().requires_grad_(True)
    sam = spectral_angle(y_hat, y, mask, weights=context_weights(10, centre_weight=1.0))
    assert float(sam.detach()) == pytest.approx(0.0, abs=1e-3)
    sam.backward()
    assert torch.isfinite(y_hat.grad).all()


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM: SciPy convolution with zero boundary, float64, per 2-D image."""
    x = np.arange(7) - 3
    g = np.exp(-(x**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for idx in np.ndindex(*a.shape[:-2]):
        p, q = a[idx], b[idx]

        def f(z):
            return ndimage.convolve(z, win, mode="constant", cval=0.0)

        mp, mq = f(p), f(q)
        vp, vq, cov = f(p * p) - mp**2, f(q * q) - mq**2, f(p * q) - mp * mq
        values.append(((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return float(np.mean(values))


def test_ssim_matches_independent_reference():
    y_hat, y, _ = _pair(b=1, c=3, seed=5)
    ref = _ssim_reference(y_hat.double().numpy(), y.double().numpy())
    assert float(ssim_index(y_hat, y)) == pytest.approx(ref, abs=1e-5)
    assert float(ssim_index(y.double(), y.double())) == pytest.approx(1.0, abs=1e-12)
    assert float(gaussian_window().sum()) == pytest.approx(1.0)


def test_centre_and_surroundings_mae():
    y_hat, y, _ = _pair(b=2, c=10, seed=7)
    full = torch.ones_like(y, dtype=torch.bool)
    expected = float((y_hat[:, 5, :, 7, 7] - y[:, 5, :, 7, 7]).abs().mean())
    assert float(centre_mae(y_hat, y, full)) == pytest.approx(expected, rel=1e-6)
    mask = full.clone()
    mask[0, 5, :, 7, 7] = False
    expected_masked = float((y_hat[1, 5, :, 7, 7] - y[1, 5, :, 7, 7]).abs().mean())
    assert float(centre_mae(y_hat, y, mask)) == pytest.approx(expected_masked, rel=1e-6)
    # With c = 1 the MAE term is 0.7446 x centre + 0.2554 x surroundings (the reference's curve identity).
    mae = masked_weighted_mae(y_hat, y, full, weights=context_weights(10, centre_weight=1.0))
    alpha = float(context_weights(10, centre_weight=1.0)[5, :, 7, 7].sum())
    recombined = alpha * centre_mae(y_hat, y, full) + (1 - alpha) * surroundings_mae(y_hat, y, full)
    assert float(mae) == pytest.approx(float(recombined), rel=1e-5)


def test_total_and_stage_weights():
    y_hat, y, mask = _pair()
    loss = ContextAwareLoss.for_sensor(S2, stage=1)
    terms = loss(y_hat, y, mask)
    w = S2.stage1_loss
    assert float(terms.total) == pytest.approx(
        w.mae * float(terms.mae) + w.ssim * float(terms.ssim) + w.sam * float(terms.sam), rel=1e-6
    )
    s1_terms = ContextAwareLoss.for_sensor(S1, stage=1)(y_hat[:, :, :2], y[:, :, :2], mask[:, :, :2])
    assert s1_terms.ssim is None and s1_terms.sam is None
    assert float(s1_terms.total) == pytest.approx(float(s1_terms.mae))
    with pytest.raises(ValueError, match="stage = 3"):
        ContextAwareLoss.for_sensor(S1, stage=3)
    custom = ContextAwareLoss(10, weights=LossWeights(mae=0.0, ssim=1.0, sam=0.0, centre_weight=1.0))
    assert float(custom(y_hat, y, mask).total) == pytest.approx(1 - float(ssim_index(y_hat, y)), rel=1e-6)


def test_fusion_loss_is_half_and_half():
    y_hat, y, mask = _pair()
    recon = {"s1": y_hat[:, :, :2], "s2": y_hat}
    targets = {"s1": y[:, :, :2], "s2": y}
    masks = {"s1": mask[:, :, :2], "s2": mask}
    total, terms = FusionLoss({"s1": S1, "s2": S2})(recon, targets, masks)
    assert float(total) == pytest.approx(0.5 * float(terms["s1"].total) + 0.5 * float(terms["s2"].total))
    stage2 = ContextAwareLoss.for_sensor(S2, stage=2)(y_hat, y, mask)
    assert float(terms["s2"].total) == pytest.approx(float(stage2.total))
