"""The spatial soft-argmax: convention, numerics, gradients, converters."""

import numpy as np
import pytest
import torch

from dsae.spatial_softmax import SpatialSoftmax, from_pixels, spatial_soft_argmax, spatial_soft_argmax_full, to_pixels


def numpy_soft_argmax(features: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Independent reference: full-grid expectation in float64. (B, C, H, W) -> (B, C, 2)."""
    b, c, h, w = features.shape
    logits = features.reshape(b, c, -1).astype(np.float64) / temperature
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.stack([p @ xs.ravel(), p @ ys.ravel()], -1)


@pytest.mark.parametrize("h, w", [(9, 9), (7, 12), (21, 21)])
def test_peak_lands_at_its_pixel(h, w):
    """A sharp peak at (row r, column c) gives x = -1 + 2c/(W-1), y = -1 + 2r/(H-1)."""
    r, c = 2, w - 3
    features = torch.full((1, 1, h, w), -1e4)
    features[0, 0, r, c] = 0.0
    kp = spatial_soft_argmax(features)
    expected = torch.tensor([-1 + 2 * c / (w - 1), -1 + 2 * r / (h - 1)])
    torch.testing.assert_close(kp[0, 0], expected)
    torch.testing.assert_close(to_pixels(kp, h, w)[0, 0], torch.tensor([float(c), float(r)]))


def test_corners_are_plus_minus_one():
    f = torch.full((1, 2, 5, 8), -1e4)
    f[0, 0, 0, 0] = 0  # top-left
    f[0, 1, 4, 7] = 0  # bottom-right
    torch.testing.assert_close(spatial_soft_argmax(f)[0], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_matches_numpy_reference(temperature):
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 4, 6, 11)).astype(np.float32) * 3
    ours = spatial_soft_argmax(torch.from_numpy(f), temperature).numpy()
    np.testing.assert_allclose(ours, numpy_soft_argmax(f, temperature), atol=1e-5)


def test_large_logits_and_half_precision_are_finite():
    f = torch.randn(2, 3, 8, 8) * 1e4
    assert torch.isfinite(spatial_soft_argmax(f)).all()
    for dtype in (torch.float16, torch.bfloat16):
        kp = spatial_soft_argmax(torch.randn(2, 3, 8, 8).to(dtype) * 100)
        assert kp.dtype == torch.float32 and torch.isfinite(kp).all()


def test_float32_under_bf16_autocast():
    """Autocast would run the expectation's matmuls in bf16 (0.4% steps): the layer opts out."""
    f = torch.randn(2, 3, 9, 9) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kp = spatial_soft_argmax(f)
        full = spatial_soft_argmax_full(f, return_covariance=True)
    assert kp.dtype == full.keypoints.dtype == full.covariance.dtype == torch.float32
    torch.testing.assert_close(kp, spatial_soft_argmax(f))


def test_gradcheck_float64():
    f = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: spatial_soft_argmax(a, b), (f, t))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_backward_matches_plain_autograd(dtype, masked):
    """The fused backward's gradients, of bf16 features (in bf16) and of a learned float32
    temperature, equal those of the plain-autograd path; the features are left as they were."""
    torch.manual_seed(0)
    f = (torch.randn(3, 4, 6, 7) * 3).to(dtype).requires_grad_()
    log_t = torch.tensor(-1.0, requires_grad=True)
    mask = torch.rand(3, 6, 7) > 0.3 if masked else None
    g = torch.randn(3, 4, 2)
    before = f.detach().clone()
    fused = torch.autograd.grad(spatial_soft_argmax(f, log_t.exp(), mask=mask), (f, log_t), g)
    plain = torch.autograd.grad(spatial_soft_argmax_full(f, log_t.exp(), mask=mask).keypoints, (f, log_t), g)
    assert fused[0].dtype == dtype
    torch.testing.assert_close(fused[0], plain[0])
    torch.testing.assert_close(fused[1], plain[1])
    assert torch.equal(f.detach(), before)


def test_module_temperature_learned_or_fixed():
    learned, fixed = SpatialSoftmax(2.0), SpatialSoftmax(2.0, learn_temperature=False)
    assert [n for n, _ in learned.named_parameters()] == ["log_temperature"]
    assert list(fixed.parameters()) == []
    torch.testing.assert_close(learned.temperature, torch.tensor(2.0))
    f = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(learned(f), spatial_soft_argmax(f, 2.0))
    attn = learned(f, return_attention=True).attention
    torch.testing.assert_close(attn.sum((-1, -2)), torch.ones(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftmax(0.0)


def test_pixel_converters_are_inverse():
    kp = torch.rand(4, 5, 2) * 2 - 1
    torch.testing.assert_close(from_pixels(to_pixels(kp, 30, 50), 30, 50), kp)


def test_presence_is_high_for_peaks():
    f = torch.zeros(1, 2, 20, 20)
    f[0, 0, 3, 3] = 50.0  # a sharp peak
    p = spatial_soft_argmax_full(f, return_presence=True).presence
    assert p[0, 0] > 0.99
    # A flat map: the 3x3 window around the centre holds 9 of 400 cells' mass.
    torch.testing.assert_close(p[0, 1], torch.tensor(9 / 400))


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match="NCHW needs a 4-D tensor"):
        spatial_soft_argmax(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="unknown data_format"):
        spatial_soft_argmax(torch.zeros(1, 3, 4, 4), data_format="CHWN")
