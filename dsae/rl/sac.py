"""Soft actor-critic (Haarnoja et al., 2018) with a pluggable observation encoder.

Observations are either flat float vectors (``obs=state``, or keypoints from
:class:`dsae.rl.wrappers.KeypointObservation`) or ``{"image", "joint_features"}`` dicts from
:class:`dsae.rl.wrappers.PixelObservation`. Image observations go through an encoder owned by the
critic and trained by the critic's loss only (the actor sees its features detached), with
random-shift augmentation as in DrQ (Kostrikov et al., 2020): a conv net learned from scratch
(``obs=pixels``) or the pretrained DSAE encoder (``obs=keypoints`` with
``rl.finetune_encoder=true``). The target critic holds an exponential moving average of the
critic, encoder included; next-state features for the TD target come from it.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsae.errors import ConfigError
from dsae.model import to_float_images
from dsae.rl.config import SACConfig


class ConvFeatures(nn.Module):
    """A small DrQ-style conv net: uint8 (B, H, W, 3) -> features (B, F), LayerNorm + tanh.

    Three 3x3 convs (strides 2, 2, 1) then a linear layer; smaller than DrQ's four stride-(2,1,1,1)
    convs on 84 px so that ``obs=pixels`` trains on a laptop CPU.
    """

    def __init__(self, image_size: int, channels: int = 32, features: int = 50):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=1), nn.ReLU(inplace=True),
        )
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 3, image_size, image_size)).numel()
        self.head = nn.Sequential(nn.Linear(n, features), nn.LayerNorm(features), nn.Tanh())
        self.out_dim = features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(to_float_images(images) - 0.5).flatten(1))


class KeypointFeatures(nn.Module):
    """The DSAE encoder as an RL feature extractor: uint8 images -> flattened keypoints (B, 2K).

    Batch norm keeps the statistics it learned on the dataset (eval mode) while fine-tuning.
    """

    def __init__(self, encoder: nn.Module, keypoints: Optional[list[int]] = None):
        super().__init__()
        self.encoder = encoder
        k = int(encoder.num_keypoints)
        self.indices = list(range(k)) if keypoints is None else list(keypoints)
        self.out_dim = 2 * len(self.indices)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen BN statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)[:, self.indices].flatten(1)


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ augmentation: uint8 (B, H, W, 3) -> each image shifted by up to ``pad`` pixels
    (replicate padding), as float (B, 3, H, W) in [0, 1]."""
    x = to_float_images(images)
    b, _, h, w = x.shape
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (b, 2)).tolist()  # integer shifts: plain crops
    return torch.stack([x[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offsets)])


class ObservationFeatures(nn.Module):
    """Observation -> features: identity for vectors; image encoder + proprioception for dicts."""

    def __init__(self, image_features: Optional[nn.Module], vector_dim: int):
        super().__init__()
        self.image_features = image_features
        self.out_dim = vector_dim + (image_features.out_dim if image_features is not None else 0)

    def forward(self, obs: Any, augment_pad: int = 0) -> torch.Tensor:
        if self.image_features is None:
            return obs
        images = obs["image"]
        if augment_pad > 0:
            images = random_shift(images, augment_pad)
        return torch.cat([self.image_features(images), obs["joint_features"]], dim=-1)


def mlp(inp: int, hidden: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.ReLU(inplace=True)]
        inp = h
    layers.append(nn.Linear(inp, out))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    def __init__(self, features: ObservationFeatures, action_dim: int, hidden: list[int]):
        super().__init__()
        self.features = features
        self.q1 = mlp(features.out_dim + action_dim, hidden, 1)
        self.q2 = mlp(features.out_dim + action_dim, hidden, 1)

    def q(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([features, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy head on the (detached) observation features."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: list[int]):
        super().__init__()
        self.net = mlp(feature_dim, hidden, 2 * action_dim)

    def forward(self, features: torch.Tensor, deterministic: bool = False):
        mean, log_std = self.net(features).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        if deterministic:
            return torch.tanh(mean), None
        std = log_std.exp()
        noise = torch.randn_like(mean)
        pre = mean + std * noise
        action = torch.tanh(pre)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
        return action, log_prob


class SACAgent(nn.Module):
    """SAC on features from an :class:`ObservationFeatures`; actions in [-1, 1] (scaled to the env's box outside)."""

    def __init__(self, cfg: SACConfig, features: ObservationFeatures, action_dim: int):
        super().__init__()
        self.cfg = cfg
        self.critic = Critic(features, action_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = Actor(features.out_dim, action_dim, cfg.hidden)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.has_images = features.image_features is not None
        self.trains_encoder = self.has_images and any(p.requires_grad for p in features.parameters())
        critic_params = [p for n, p in self.critic.named_parameters() if p.requires_grad]
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = False) -> np.ndarray:
        """One observation (unbatched, numpy) -> one action in [-1, 1]."""
        batch = to_tensors(obs, self.device, unsqueeze=True)
        features = self.critic.features(batch)
        action, _ = self.actor(features, deterministic=deterministic)
        return action[0].cpu().numpy()

    def update(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        pad = cfg.shift_pad if (cfg.augment and self.has_images) else 0
        obs, action, reward, next_obs, not_done = (batch["obs"], batch["action"], batch["reward"],
                                                   batch["next_obs"], batch["not_done"])
        with torch.no_grad():
            next_features = self.critic_target.features(next_obs, pad)
            next_action, next_log_prob = self.actor(next_features)
            tq1, tq2 = self.critic_target.q(next_features, next_action)
            target_v = torch.min(tq1, tq2) - self.alpha * next_log_prob
            target_q = reward + not_done * cfg.gamma * target_v
        features = self.critic.features(obs, pad)
        q1, q2 = self.critic.q(features, action)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        detached = features.detach()
        new_action, log_prob = self.actor(detached)
        aq1, aq2 = self.critic.q(detached, new_action)
        actor_loss = (self.alpha.detach() * log_prob - torch.min(aq1, aq2)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()  # (the Q heads' grads from this loss are cleared before their next step)

        alpha_loss = (self.alpha * (-log_prob.detach() - self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for name, (p, tp) in _pairs(self.critic, self.critic_target):
                rate = cfg.encoder_tau if name.startswith("features.") else cfg.tau
                tp.lerp_(p, rate)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                "alpha": self.alpha.detach(), "q": q1.detach().mean(), "entropy": -log_prob.detach().mean()}


def _pairs(online: nn.Module, target: nn.Module):
    t = dict(target.named_parameters())
    for name, p in online.named_parameters():
        if p.requires_grad:
            yield name, (p, t[name])


def to_tensors(obs: Any, device: torch.device, unsqueeze: bool = False) -> Any:
    """numpy observation(s) -> tensors on ``device`` (dicts recursively); uint8 stays uint8."""
    if isinstance(obs, dict):
        return {k: to_tensors(v, device, unsqueeze) for k, v in obs.items()}
    t = torch.as_tensor(np.asarray(obs), device=device)
    if t.dtype == torch.float64:
        t = t.float()
    return t.unsqueeze(0) if unsqueeze else t


class ArrayStore:
    """Fixed-capacity records in numpy (a ring: the oldest go first when full). Each field is an
    array or a dict of arrays, stored as float32, or uint8 where the example is uint8 (frames)."""

    def __init__(self, capacity: int, example: dict[str, Any]):
        self.capacity, self.size, self.pos = capacity, 0, 0

        def alloc(x):
            if isinstance(x, dict):
                return {k: alloc(v) for k, v in x.items()}
            x = np.asarray(x)
            return np.zeros((capacity, *x.shape), dtype=np.uint8 if x.dtype == np.uint8 else np.float32)

        self.fields = {name: alloc(x) for name, x in example.items()}

    def add(self, **record: Any) -> None:
        """Store one record: a value for each field."""
        for name, store in self.fields.items():
            for key, array in (store.items() if isinstance(store, dict) else [(None, store)]):
                array[self.pos] = record[name] if key is None else record[name][key]
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator, device: torch.device) -> dict[str, Any]:
        """``batch_size`` records drawn uniformly with replacement, as tensors on ``device``."""
        idx = rng.integers(0, self.size, size=batch_size)
        return {name: to_tensors({k: v[idx] for k, v in store.items()} if isinstance(store, dict) else store[idx],
                                 device) for name, store in self.fields.items()}

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        cut = {name: {k: v[:n] for k, v in store.items()} if isinstance(store, dict) else store[:n]
               for name, store in self.fields.items()}
        return {"size": n, "pos": self.pos, **cut}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ConfigError(f"the saved records number {n}, more than this store's capacity {self.capacity}")
        # Into a larger store (a run given a larger budget), oldest first, so new records follow them.
        order = np.roll(np.arange(n), -(state["pos"] % max(n, 1))) if n < self.capacity else slice(None)
        for name, store in self.fields.items():
            for key, array in (store.items() if isinstance(store, dict) else [(None, store)]):
                array[:n] = (state[name] if key is None else state[name][key])[order]
        self.size, self.pos = n, state["pos"] if n == self.capacity else n


class ReplayBuffer(ArrayStore):
    """SAC's transitions: ``obs``, ``action``, ``reward``, ``next_obs`` and ``not_done``;
    observations may be arrays or dicts of arrays."""

    def __init__(self, capacity: int, obs_example: Any, action_dim: int):
        super().__init__(capacity, {"obs": obs_example, "action": np.zeros(action_dim, np.float32),
                                    "reward": np.float32(0), "next_obs": obs_example, "not_done": np.float32(0)})

    def add(self, obs, action, reward, next_obs, terminated: bool) -> None:  # type: ignore[override]
        # time-limit truncation still bootstraps: only termination zeroes not_done
        super().add(obs=obs, action=action, reward=reward, next_obs=next_obs, not_done=0.0 if terminated else 1.0)
