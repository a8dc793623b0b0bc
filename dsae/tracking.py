"""Keypoint tracking at inference: presence pruning and a constant-velocity Kalman filter.

Paper §V: a keypoint is used only when its feature is present (its softmax is peaked), and
keypoint tracks are smoothed over a rollout by a Kalman filter. Both work on batches of
independent tracks (e.g. the envs of a vector env): keypoints (B, K, 2).
"""

from __future__ import annotations

from typing import Optional

import torch

from dsae.errors import ConfigError


def prune(presence: torch.Tensor, top_k: Optional[int] = None, threshold: Optional[float] = None) -> torch.Tensor:
    """Which keypoints to keep: presence (B, K) -> bool (B, K).

    ``top_k`` keeps the k most present keypoints of each sample; ``threshold`` keeps those
    whose presence is at least the threshold; both together keep the top k among those
    above the threshold; neither keeps all.
    """
    keep = torch.ones_like(presence, dtype=torch.bool)
    if threshold is not None:
        keep &= presence >= threshold
    if top_k is not None:
        if not 1 <= top_k <= presence.shape[-1]:
            raise ConfigError(f"top_k must be in [1, {presence.shape[-1]}], got {top_k}")
        idx = presence.masked_fill(~keep, float("-inf")).topk(top_k, dim=-1).indices
        top = torch.zeros_like(keep).scatter_(-1, idx, True)
        keep &= top
    return keep


class KeypointKalmanFilter:
    """Constant-velocity Kalman filter, one per keypoint and coordinate, over (B, K, D) tracks.

    State per coordinate: (position, velocity); x_{t+1} = x_t + v_t, v_{t+1} = v_t + w with
    white acceleration noise of std ``process_std`` per step; observation = position + noise
    of std ``measurement_std``. Units are those of the keypoints (normalised by default).
    ``update(z, observed)`` takes a bool mask (B, K): unobserved (pruned) keypoints are only
    predicted. ``reset(mask)`` restarts the chosen tracks (episode start).
    """

    def __init__(self, process_std: float = 0.05, measurement_std: float = 0.05, initial_velocity_std: float = 0.1):
        if process_std <= 0 or measurement_std <= 0:
            raise ConfigError("process_std and measurement_std must be > 0")
        self.q, self.r, self.v0 = process_std**2, measurement_std**2, initial_velocity_std**2
        self.x: Optional[torch.Tensor] = None  # (B, K, D, 2): position, velocity
        self.p: Optional[torch.Tensor] = None  # (B, K, D, 2, 2)
        self.started: Optional[torch.Tensor] = None  # (B, K) bool

    def reset(self, mask: Optional[torch.Tensor] = None) -> None:
        """Forget all tracks, or only those of the batch entries where ``mask`` (B,) is True."""
        if mask is None or self.started is None:
            self.x = self.p = self.started = None
        else:
            mask = mask.to(self.started.device)
            self.started[mask] = False
            self.x[mask] = 0.0  # as if new: a track that never started reports the origin
            self.p[mask] = 0.0

    def update(self, z: torch.Tensor, observed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One step: predict, then correct with the measurement z (B, K, D). Returns the filtered positions."""
        z = z.detach().to(torch.float64)
        b, k, d = z.shape
        if observed is None:
            observed = torch.ones(b, k, dtype=torch.bool, device=z.device)
        if self.x is None or self.x.shape[:3] != (b, k, d):
            self.x = torch.zeros(b, k, d, 2, dtype=torch.float64, device=z.device)
            self.p = torch.zeros(b, k, d, 2, 2, dtype=torch.float64, device=z.device)
            self.started = torch.zeros(b, k, dtype=torch.bool, device=z.device)
        # Start new tracks at their first observation.
        fresh = observed & ~self.started
        if fresh.any():
            self.x[fresh] = torch.stack([z[fresh], torch.zeros_like(z[fresh])], dim=-1)
            init = torch.diag(torch.tensor([self.r, self.v0], dtype=torch.float64, device=z.device))
            self.p[fresh] = init
            self.started |= fresh
        running = self.started & ~fresh
        # Predict.
        f = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64, device=z.device)
        q = self.q * torch.tensor([[0.25, 0.5], [0.5, 1.0]], dtype=torch.float64, device=z.device)
        x_pred = self.x @ f.T
        p_pred = f @ self.p @ f.T + q
        x_pred = torch.where(running[..., None, None], x_pred, self.x)
        p_pred = torch.where(running[..., None, None, None], p_pred, self.p)
        # Correct where observed (and not just started).
        correct = running & observed
        s = p_pred[..., 0, 0] + self.r  # (B, K, D)
        gain = p_pred[..., :, 0] / s[..., None]  # (B, K, D, 2)
        innovation = z - x_pred[..., 0]
        x_new = x_pred + gain * innovation[..., None]
        p_new = p_pred - gain[..., :, None] * p_pred[..., 0:1, :]
        self.x = torch.where(correct[..., None, None], x_new, x_pred)
        self.p = torch.where(correct[..., None, None, None], p_new, p_pred)
        return self.x[..., 0].to(torch.float32)
