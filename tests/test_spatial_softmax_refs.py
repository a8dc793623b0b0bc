"""The soft-argmax layer pinned to independent references, in every layout and option."""

import numpy as np
import pytest
import torch

from tests import numpy_ref
from dsae.spatial_softmax import (
    SpatialSoftmax,
    from_tf_contrib,
    spatial_soft_argmax,
    spatial_soft_argmax_full,
    to_tf_contrib,
)


def tf_contrib_spatial_softmax(features_nhwc: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A NumPy transliteration of tf.contrib.layers.spatial_softmax (TF 1.x, NHWC): its
    pos_x, pos_y = meshgrid(lin_space(-1, 1, H), lin_space(-1, 1, W), indexing='ij'), so its
    'x' runs along rows; output (B, 2C) as [x1, y1, ...] in its own naming."""
    b, h, w, c = features_nhwc.shape
    pos_x, pos_y = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    pos_x, pos_y = pos_x.reshape(h * w), pos_y.reshape(h * w)
    feats = np.transpose(features_nhwc, (0, 3, 1, 2)).reshape(-1, h * w) / temperature
    soft = np.exp(feats - feats.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    expected_x = (pos_x * soft).sum(1, keepdims=True)
    expected_y = (pos_y * soft).sum(1, keepdims=True)
    return np.concatenate([expected_x, expected_y], 1).reshape(-1, c * 2)


@pytest.fixture
def features():
    return torch.from_numpy(np.random.default_rng(0).normal(size=(3, 5, 7, 11)) * 2).float()


def test_matches_numpy_ref_helpers(features):
    nhwc = features.permute(0, 2, 3, 1).numpy()
    soft = numpy_ref.spatial_softmax_4d(nhwc, 0.5)
    grid = numpy_ref.create_image_coordinates(7, 11)
    expected = numpy_ref.spatial_soft_argmax(soft, grid)
    np.testing.assert_allclose(spatial_soft_argmax(features, 0.5).numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(spatial_soft_argmax(torch.from_numpy(nhwc), 0.5, "NHWC").numpy(), expected, atol=1e-5)
    # The smaller helpers agree with the batched one.
    np.testing.assert_allclose(numpy_ref.spatial_softmax_3d(nhwc[0], 0.5), soft[0])
    np.testing.assert_allclose(numpy_ref.spatial_softmax_2d(nhwc[0, ..., 1], 0.5), soft[0, ..., 1])


def test_matches_installed_kornia(features):
    from kornia.geometry.subpix import spatial_soft_argmax2d

    for t in (0.25, 1.0, 3.0):  # a temperature != 1 shows kornia divides by it, as we do
        theirs = spatial_soft_argmax2d(features, t)
        torch.testing.assert_close(spatial_soft_argmax(features, t), theirs, atol=1e-5, rtol=1e-5)


def test_matches_tf_contrib_documented_behaviour(features):
    nhwc = features.permute(0, 2, 3, 1).numpy()
    theirs = tf_contrib_spatial_softmax(nhwc, 0.7)
    ours = spatial_soft_argmax(features, 0.7)
    np.testing.assert_allclose(to_tf_contrib(ours).numpy(), theirs, atol=1e-5)
    torch.testing.assert_close(from_tf_contrib(torch.from_numpy(theirs)).float(), ours, atol=1e-5, rtol=1e-5)
    # Their first number of each pair is the row: a peak in the bottom-left corner.
    peak = np.full((1, 4, 6, 1), -1e4)
    peak[0, 3, 0, 0] = 0
    np.testing.assert_allclose(tf_contrib_spatial_softmax(peak), [[1.0, -1.0]], atol=1e-6)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_peak_in_every_layout(fmt):
    """A peak at row 4, column 1 of a 6x9 map -> (x, y) = (-1 + 2/8, -1 + 8/5)."""
    f = torch.full((2, 3, 6, 9), -1e4)
    f[:, :, 4, 1] = 0
    if fmt == "NHWC":
        f = f.permute(0, 2, 3, 1)
    kp = spatial_soft_argmax(f, data_format=fmt)
    torch.testing.assert_close(kp, torch.tensor([-1 + 2 / 8, -1 + 8 / 5]).expand(2, 3, 2))


def test_1d_and_3d_inputs():
    seq = torch.full((1, 2, 5), -1e4)
    seq[0, 0, 4] = 0
    seq[0, 1, 1] = 0
    torch.testing.assert_close(spatial_soft_argmax(seq, data_format="NCW"), torch.tensor([[[1.0], [-0.5]]]))
    torch.testing.assert_close(spatial_soft_argmax(seq.transpose(1, 2), data_format="NWC"),
                               torch.tensor([[[1.0], [-0.5]]]))
    vol = torch.full((1, 1, 3, 5, 9), -1e4)  # (D, H, W)
    vol[0, 0, 2, 1, 6] = 0
    expected = torch.tensor([[[-1 + 12 / 8, -1 + 2 / 4, 1.0]]])  # (x, y, z)
    torch.testing.assert_close(spatial_soft_argmax(vol, data_format="NCDHW"), expected)
    torch.testing.assert_close(spatial_soft_argmax(vol.permute(0, 2, 3, 4, 1), data_format="NDHWC"), expected)


def test_3d_matches_full_grid_reference():
    f = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64)
    p = torch.softmax(f.reshape(2, 3, -1), -1).reshape(f.shape)
    zs, ys, xs = torch.meshgrid(*[torch.linspace(-1, 1, n, dtype=torch.float64) for n in (4, 5, 6)], indexing="ij")
    expected = torch.stack([(p * xs).sum((-3, -2, -1)), (p * ys).sum((-3, -2, -1)), (p * zs).sum((-3, -2, -1))], -1)
    torch.testing.assert_close(spatial_soft_argmax(f, data_format="NCDHW"), expected)


def test_mask_gives_exact_zero_weight_and_a_finite_empty_channel():
    f = torch.randn(2, 3, 6, 6)
    f[:, :, 0, 0] = 100.0  # a huge peak that the mask removes
    mask = torch.ones(6, 6, dtype=torch.bool)
    mask[0, 0] = False
    out = spatial_soft_argmax_full(f, mask=mask, return_attention=True)
    assert (out.attention[:, :, 0, 0] == 0).all()
    # Same as the softmax over the valid positions only.
    f2 = f.clone()
    f2[:, :, 0, 0] = -float("inf")
    torch.testing.assert_close(out.keypoints, spatial_soft_argmax(f2))
    torch.testing.assert_close(spatial_soft_argmax(f, mask=mask), out.keypoints)
    # A fully masked channel: the centre, zero attention, zero presence, finite gradients.
    per_channel = torch.ones(1, 3, 6, 6, dtype=torch.bool)
    per_channel[0, 1] = False
    g = f.clone().requires_grad_(True)
    res = spatial_soft_argmax_full(g, mask=per_channel, return_presence=True, return_attention=True)
    assert (res.keypoints[:, 1] == 0).all() and (res.attention[:, 1] == 0).all() and (res.presence[:, 1] == 0).all()
    res.keypoints.sum().backward()
    assert torch.isfinite(g.grad).all()
    g.grad = None
    spatial_soft_argmax(g, mask=per_channel).sum().backward()
    assert torch.isfinite(g.grad).all() and (g.grad[:, 1] == 0).all()
    log_attention = spatial_soft_argmax_full(f, mask=mask, return_attention=True, log_space=True).attention
    assert torch.isneginf(log_attention[:, :, 0, 0]).all()
    with pytest.raises(ValueError, match="mask must have the spatial shape"):
        spatial_soft_argmax(f, mask=torch.ones(5, 6, dtype=torch.bool))


def test_log_space_attention_is_log_of_probabilities(features):
    p = spatial_soft_argmax_full(features, return_attention=True).attention
    logp = spatial_soft_argmax_full(features, return_attention=True, log_space=True).attention
    torch.testing.assert_close(logp.exp(), p)
    assert torch.isfinite(spatial_soft_argmax_full(features * 1e4, return_attention=True, log_space=True).attention).all()


def test_covariance_matches_reference(features):
    res = spatial_soft_argmax_full(features.double(), 0.5, return_covariance=True)
    soft = numpy_ref.spatial_softmax_4d(features.permute(0, 2, 3, 1).double().numpy(), 0.5)
    grid = numpy_ref.create_image_coordinates(7, 11)
    mean = numpy_ref.spatial_soft_argmax(soft, grid)
    centred = grid[None, :, :, None, :] - mean[:, None, None, :, :]  # (B, H, W, C, 2)
    expected = np.einsum("bhwc,bhwcd,bhwce->bcde", soft, centred, centred)
    np.testing.assert_allclose(res.covariance.numpy(), expected, atol=1e-10)
    # A single sharp peak has (almost) no spread.
    f = torch.full((1, 1, 5, 5), -1e4)
    f[0, 0, 2, 3] = 0
    assert spatial_soft_argmax_full(f, return_covariance=True).covariance.abs().max() < 1e-6


def test_extreme_and_low_precision_inputs_are_finite():
    for scale in (1e4, -1e4):
        assert torch.isfinite(spatial_soft_argmax(torch.randn(2, 3, 8, 8) * scale)).all()
    for dtype in (torch.float16, torch.bfloat16):
        f = (torch.randn(2, 3, 8, 8) * 1e3).to(dtype).requires_grad_(True)
        kp = spatial_soft_argmax(f)
        assert kp.dtype == torch.float32 and torch.isfinite(kp).all()
        kp.sum().backward()
        assert f.grad.dtype == dtype and torch.isfinite(f.grad).all()


def test_gradcheck_every_path():
    f = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 5) > 0.3
    assert torch.autograd.gradcheck(lambda a, b: spatial_soft_argmax(a, b), (f, t))
    assert torch.autograd.gradcheck(lambda a, b: spatial_soft_argmax(a, b, mask=mask), (f, t))
    assert torch.autograd.gradcheck(lambda a: spatial_soft_argmax(a, data_format="NCW"), (f[:, :, 0],))
    assert torch.autograd.gradcheck(lambda a: spatial_soft_argmax(a.unsqueeze(2), data_format="NCDHW"), (f,))
    full = spatial_soft_argmax_full
    assert torch.autograd.gradcheck(lambda a, b: full(a, b, return_covariance=True).covariance, (f, t))
    assert torch.autograd.gradcheck(lambda a, b: full(a, b, return_attention=True).attention, (f, t))


def test_fused_backward_equals_autograd_of_the_plain_version(features):
    a = features.clone().requires_grad_(True)
    b = features.clone().requires_grad_(True)
    w = torch.randn(3, 5, 2)
    (spatial_soft_argmax(a, 0.6) * w).sum().backward()
    (spatial_soft_argmax_full(b, 0.6).keypoints * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


def test_module_options():
    m = SpatialSoftmax(in_channels=6, num_keypoints=4, noise_std=0.1, data_format="NHWC")
    x = torch.randn(2, 9, 9, 6)
    m.train()
    noisy1, noisy2 = m(x), m(x)
    assert noisy1.shape == (2, 4, 2) and not torch.equal(noisy1, noisy2)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    res = m(x, return_covariance=True, return_presence=True)
    assert res.covariance.shape == (2, 4, 2, 2) and res.presence.shape == (2, 4)
    assert SpatialSoftmax(data_format="NCDHW", in_channels=3, num_keypoints=2)(torch.randn(1, 3, 4, 4, 4)).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="in_channels"):
        SpatialSoftmax(num_keypoints=4)
    with pytest.raises(ValueError, match="data_format"):
        SpatialSoftmax(data_format="HWC")


def test_torch_export():
    m = SpatialSoftmax(in_channels=4, num_keypoints=3).eval()
    x = torch.randn(2, 4, 8, 8)
    exported = torch.export.export(m, (x,))
    torch.testing.assert_close(exported.module()(x), m(x))


@pytest.mark.slow
def test_torch_compile_forward_and_backward():
    m = SpatialSoftmax(in_channels=4, num_keypoints=3)
    compiled = torch.compile(m)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, m(x))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
