"""SAC pieces: the squashed-Gaussian log-probability, random shift, the replay buffer, an update."""

import math

import numpy as np
import pytest
import torch

from dsae.rl.config import SACConfig
from dsae.rl.sac import Actor, ConvFeatures, ObservationFeatures, ReplayBuffer, SACAgent, random_shift


def test_actor_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    actor = Actor(5, 3, [16])
    feats = torch.randn(64, 5)
    torch.manual_seed(1)
    action, log_prob = actor(feats)
    mean, log_std = actor.net(feats).chunk(2, dim=-1)
    log_std = -5.0 + 0.5 * 7.0 * (torch.tanh(log_std) + 1)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform(cache_size=1)])
    action = action.clamp(-1 + 1e-6, 1 - 1e-6)
    expected = dist.log_prob(action).sum(-1)
    torch.testing.assert_close(log_prob, expected, rtol=1e-3, atol=1e-3)
    det, none = actor(feats, deterministic=True)
    assert none is None and torch.equal(det, torch.tanh(mean))


def test_random_shift_moves_images_by_at_most_pad():
    torch.manual_seed(0)
    images = torch.zeros(200, 16, 16, 3, dtype=torch.uint8)
    images[:, 8, 5] = 255
    out = random_shift(images, pad=2)
    assert out.shape == (200, 3, 16, 16)
    rows, cols = [], []
    for img in out[:, 0]:
        r, c = (img == 1.0).nonzero()[0].tolist()
        rows.append(r - 8)
        cols.append(c - 5)
    assert set(rows) == set(cols) == {-2, -1, 0, 1, 2}, "every shift in [-pad, pad] occurs"
    assert all(float(img.sum()) == 1.0 for img in out[:, 0]), "the bright pixel is moved, not duplicated"


def test_replay_buffer_round_trip_and_terminal_flags():
    obs = {"image": np.zeros((4, 4, 3), np.uint8), "joint_features": np.zeros(6, np.float32)}
    buf = ReplayBuffer(10, obs, 2)
    for i in range(13):  # wraps around
        o = {"image": np.full((4, 4, 3), i, np.uint8), "joint_features": np.full(6, i, np.float32)}
        buf.add(o, np.full(2, i, np.float32), float(i), o, terminated=(i == 12))
    assert buf.size == 10 and buf.pos == 3
    copy = ReplayBuffer(10, obs, 2)
    copy.load_state_dict(buf.state_dict())
    rng = np.random.default_rng(0)
    batch = copy.sample(32, rng, torch.device("cpu"))
    assert batch["obs"]["image"].dtype == torch.uint8 and batch["obs"]["image"].shape == (32, 4, 4, 3)
    rewards = batch["reward"].numpy()
    assert set(rewards.astype(int)) <= set(range(3, 13))
    np.testing.assert_array_equal(batch["not_done"].numpy(), (rewards != 12).astype(np.float32))
    np.testing.assert_array_equal(batch["obs"]["joint_features"][:, 0].numpy(), rewards)


def test_a_wrapped_buffer_loads_into_a_larger_one_oldest_first():
    buf = ReplayBuffer(4, np.zeros(1, np.float32), 1)
    for i in range(6):  # holds 4, 5, 2, 3; the next write would replace 2
        buf.add(np.full(1, i, np.float32), np.zeros(1, np.float32), float(i), np.zeros(1, np.float32), False)
    bigger = ReplayBuffer(8, np.zeros(1, np.float32), 1)
    bigger.load_state_dict(buf.state_dict())
    assert bigger.size == 4 and bigger.pos == 4
    np.testing.assert_array_equal(bigger.fields["reward"][:4], [2, 3, 4, 5])
    bigger.add(np.full(1, 6, np.float32), np.zeros(1, np.float32), 6.0, np.zeros(1, np.float32), False)
    np.testing.assert_array_equal(bigger.fields["reward"][:5], [2, 3, 4, 5, 6])


def _toy_agent(images: bool) -> SACAgent:
    cfg = SACConfig(hidden=[32, 32], lr=3e-3, batch_size=32)
    enc = ObservationFeatures(ConvFeatures(16, 8, 10), 6) if images else ObservationFeatures(None, 4)
    return SACAgent(cfg, enc, action_dim=2)


@pytest.mark.parametrize("images", [False, True])
def test_updates_fit_a_one_step_bandit(images):
    """Reward = -|a - a*|^2 on terminal transitions: Q learns it and the policy moves to a*."""
    torch.manual_seed(0)
    agent = _toy_agent(images)
    target = torch.tensor([0.5, -0.3])
    n = 32
    obs = ({"image": torch.zeros(n, 16, 16, 3, dtype=torch.uint8), "joint_features": torch.zeros(n, 6)}
           if images else torch.zeros(n, 4))
    errors = []
    for _ in range(300):
        action = torch.rand(n, 2) * 2 - 1
        batch = {"obs": obs, "next_obs": obs, "action": action,
                 "reward": -(action - target).pow(2).sum(-1), "not_done": torch.zeros(n)}
        parts = agent.update(batch)
        single = {k: v[0].numpy() for k, v in obs.items()} if images else obs[0].numpy()
        errors.append(float(np.abs(agent.act(single, deterministic=True) - target.numpy()).max()))
    assert math.isfinite(float(parts["critic_loss"]))
    assert errors[-1] < 0.15 < errors[0], (errors[0], errors[-1])


def test_an_agent_checkpoint_of_another_layout_is_named_not_a_traceback():
    from dsae.checkpoint import CheckpointError
    from dsae.rl.policy import load_agent_weights

    agent = SACAgent(SACConfig(hidden=[8]), ObservationFeatures(None, 4), 2)
    old = {k.replace("critic.", "critic.encoder."): v for k, v in agent.state_dict().items()}
    with pytest.raises(CheckpointError, match="train it again"):
        load_agent_weights(agent, {"agent": old})
    load_agent_weights(agent, {"agent": agent.state_dict()})
