"""Presence pruning and the keypoint Kalman filter, on synthetic tracks with known noise."""

import numpy as np
import pytest
import torch

from dsae.tracking import KeypointKalmanFilter, prune


def test_prune_top_k_and_threshold():
    presence = torch.tensor([[0.9, 0.1, 0.5, 0.7], [0.2, 0.3, 0.95, 0.05]])
    assert prune(presence, top_k=2).tolist() == [[True, False, False, True], [False, True, True, False]]
    assert prune(presence, threshold=0.6).tolist() == [[True, False, False, True], [False, False, True, False]]
    assert prune(presence, top_k=2, threshold=0.6).tolist() == [[True, False, False, True], [False, False, True, False]]
    assert prune(presence).all()
    with pytest.raises(ValueError, match="top_k"):
        prune(presence, top_k=5)


def synthetic_tracks(steps=200, batch=4, k=3, noise=0.05, seed=0):
    """Smooth random-acceleration tracks (B, K, 2) over time and noisy observations of them."""
    rng = np.random.default_rng(seed)
    acc = rng.normal(0, 0.004, size=(steps, batch, k, 2))
    vel = np.cumsum(acc, axis=0)
    pos = np.cumsum(vel, axis=0)
    obs = pos + rng.normal(0, noise, size=pos.shape)
    return torch.from_numpy(pos).float(), torch.from_numpy(obs).float()


def test_filter_beats_raw_observations():
    truth, observed = synthetic_tracks()
    kf = KeypointKalmanFilter(process_std=0.005, measurement_std=0.05)
    filtered = torch.stack([kf.update(z) for z in observed])
    raw_err = (observed - truth).norm(dim=-1)[20:].mean()
    filt_err = (filtered - truth).norm(dim=-1)[20:].mean()
    assert filt_err < 0.6 * raw_err, (float(filt_err), float(raw_err))


def test_unobserved_keypoints_are_predicted_and_reset_restarts():
    kf = KeypointKalmanFilter(process_std=1e-3, measurement_std=1e-3)
    for t in range(10):  # constant velocity 0.1 per step
        out = kf.update(torch.full((1, 1, 2), 0.1 * t))
    predicted = kf.update(torch.zeros(1, 1, 2), observed=torch.zeros(1, 1, dtype=torch.bool))
    torch.testing.assert_close(predicted, torch.full((1, 1, 2), 1.0), atol=1e-2, rtol=0)
    kf.reset(torch.tensor([True]))
    torch.testing.assert_close(kf.update(torch.full((1, 1, 2), -0.5)), torch.full((1, 1, 2), -0.5))
    assert out.shape == (1, 1, 2)
