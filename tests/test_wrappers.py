"""The keypoint observation wrappers: gymnasium's checker, no privileged state, vector envs."""

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from dsae import PretrainedEncoder, load_encoder
from dsae.checkpoint import save_checkpoint
from dsae.config import to_dict
from dsae.model import DeepSpatialAutoencoder
from dsae.rl.wrappers import KeypointObservation, KeypointObservationVector, PixelObservation
from envs import make_env
from tests.conftest import tiny_config

K = 8  # keypoints of the tiny model


@pytest.fixture(scope="module")
def tiny_encoder_path(tmp_path_factory):
    """An untrained tiny DSAE saved as a checkpoint (the wrappers do not care how good it is)."""
    tmp = tmp_path_factory.mktemp("enc")
    cfg = tiny_config(tmp)
    torch.manual_seed(0)
    model = DeepSpatialAutoencoder(cfg.model, cfg.env.image_size)
    return save_checkpoint(tmp / "last.pt", {"model": model.state_dict(), "config": to_dict(cfg),
                                             "image_size": cfg.env.image_size})


def tiny_env(**kw) -> gym.Env:
    """The tiny encoder's scene (tiny_config's), as the wrappers require."""
    return make_env("reacher", **{"image_size": 32, "object_radius": 0.02, "max_episode_steps": 12, **kw})


def test_keypoint_wrapper_passes_the_gymnasium_checker(tiny_encoder_path):
    enc = load_encoder(tiny_encoder_path, "cpu")
    for options in ({}, {"kalman": True, "top_k": 3}, {"keypoints": [1, 5]}):
        env = KeypointObservation(tiny_env(), enc, **options)
        check_env(env)  # its close check re-creates the env from its spec, wrappers included
        n = 2 * len(options.get("keypoints", range(K)))
        obs, _ = env.reset(seed=1)
        assert obs.shape == (n + 6,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
        for _ in range(15):
            obs, *_ = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs)
        env.close()
        env.close()  # closing twice is allowed


def test_observation_is_keypoints_then_proprioception(tiny_encoder_path):
    enc = load_encoder(tiny_encoder_path, "cpu")
    env = KeypointObservation(tiny_env(), enc)
    obs, _ = env.reset(seed=3)
    with torch.no_grad():
        expected = enc(torch.from_numpy(env.render()[None].copy()))[0].flatten().numpy()
    np.testing.assert_allclose(obs[: 2 * K], expected, atol=1e-6)
    q = env.unwrapped.data.qpos[:2]
    dq = env.unwrapped.data.qvel[:2]
    np.testing.assert_allclose(obs[2 * K:], np.concatenate([np.cos(q), np.sin(q), dq]), atol=1e-6)


def test_no_privileged_state_leaks(tiny_encoder_path):
    """With the target drawn invisible, two states that differ only in where the target is give
    identical frames, so the wrapper's observations must be identical too, although the env's
    own observation (which holds the target position) differs."""
    trained = load_encoder(tiny_encoder_path, "cpu")
    enc = PretrainedEncoder(trained.encoder, trained.image_size)  # no recorded scene: any rendering is allowed
    env = KeypointObservation(tiny_env(geom_rgba={"target": [0.0, 0.0, 0.0, 0.0]}), enc)
    env.reset(seed=0)
    base = env.unwrapped.sim
    observations, raw, frames = [], [], []
    for target in ([0.15, 0.1], [-0.1, -0.12]):
        qpos = base.data.qpos.copy()
        qpos[2:4] = target
        base.set_state(qpos, np.zeros_like(base.data.qvel))
        raw.append(base._get_obs())
        frames.append(env.render())
        observations.append(env.observation(raw[-1]))
    assert np.array_equal(frames[0], frames[1]), "the invisible target does not change the frame"
    assert not np.allclose(raw[0], raw[1]), "the env's own observation holds the target"
    np.testing.assert_array_equal(observations[0], observations[1])


def test_pixel_observation(tiny_encoder_path):
    env = PixelObservation(tiny_env())
    check_env(env)
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
    assert obs["joint_features"].shape == (6,)


def test_vector_wrapper_matches_single_envs_across_resets(tiny_encoder_path):
    """One batched encoder call per step gives what per-env wrappers give, through autoresets
    (episodes of 5 steps; the Kalman filter restarts with each episode)."""
    enc = load_encoder(tiny_encoder_path, "cpu")
    options = {"kalman": True, "top_k": 5}
    fns = [functools.partial(tiny_env, max_episode_steps=5) for _ in range(2)]
    vec = KeypointObservationVector(gym.vector.SyncVectorEnv(fns), enc, **options)
    singles = [KeypointObservation(fn(), enc, **options) for fn in fns]
    vobs, _ = vec.reset(seed=[10, 11])
    sobs = [env.reset(seed=10 + i)[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(vobs, np.stack(sobs), atol=1e-5)
    assert vec.observation_space.contains(vobs)
    rng = np.random.default_rng(0)
    done = [False, False]
    for _ in range(12):
        actions = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
        vobs, _, term, trunc, _ = vec.step(actions)
        for i, env in enumerate(singles):
            if done[i]:  # next-step autoreset: this step resets the sub-env
                sobs[i], _ = env.reset()
                done[i] = False
            else:
                sobs[i], _, t1, t2, _ = env.step(actions[i])
                done[i] = t1 or t2
        np.testing.assert_allclose(vobs, np.stack(sobs), atol=1e-5)
        assert list(np.logical_or(term, trunc)) == done


def test_wrapper_inside_a_vector_env(tiny_encoder_path):
    """Per-env wrappers in a gymnasium SyncVectorEnv, as any vector RL library would build them."""
    enc = load_encoder(tiny_encoder_path, "cpu")
    vec = gym.vector.SyncVectorEnv([lambda: KeypointObservation(tiny_env(max_episode_steps=4), enc)] * 3)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 2 * K + 6)
    for _ in range(6):
        obs, *_ = vec.step(vec.action_space.sample())
        assert vec.observation_space.contains(obs)


@pytest.mark.slow
def test_vector_wrapper_over_async_env(tiny_encoder_path):
    enc = load_encoder(tiny_encoder_path, "cpu")
    fns = [functools.partial(tiny_env, max_episode_steps=4) for _ in range(2)]
    vec = KeypointObservationVector(gym.vector.AsyncVectorEnv(fns, context="spawn"), enc)
    try:
        obs, _ = vec.reset(seed=0)
        single = KeypointObservation(tiny_env(max_episode_steps=4), enc)
        np.testing.assert_allclose(obs[1], single.reset(seed=1)[0], atol=1e-5)
        for _ in range(5):
            obs, *_ = vec.step(vec.action_space.sample())
        assert obs.shape == (2, 2 * K + 6)
    finally:
        vec.close()


def test_bad_settings_are_named(tiny_encoder_path):
    enc = load_encoder(tiny_encoder_path, "cpu")
    with pytest.raises(ValueError, match="keypoints must be distinct"):
        KeypointObservation(tiny_env(), enc, keypoints=[0, 99])
    with pytest.raises(ValueError, match="top_k"):
        KeypointObservation(tiny_env(), enc, top_k=20)
    with pytest.raises(ValueError, match="render_mode"):
        KeypointObservation(gym.make("Reacher-v5"), enc)
    with pytest.raises(ValueError, match="image_size: env 48, encoder 32.*make_env\\(encoder.env_config\\)"):
        KeypointObservation(make_env("reacher", image_size=48), enc)
    with pytest.raises(ValueError, match="object_radius: env None, encoder 0.02"):
        KeypointObservation(make_env("reacher", image_size=32, object_radius=None), enc)
    with pytest.raises(ValueError, match="trained on scene 'reacher', the env is 'pusher'"):
        KeypointObservation(make_env("pusher", image_size=32), enc)
    with pytest.raises(ValueError, match="not a scene env"):
        KeypointObservation(gym.make("Reacher-v5", render_mode="rgb_array", width=32, height=32), enc)


def test_the_encoders_scene_makes_a_matching_env(tiny_encoder_path):
    enc = load_encoder(tiny_encoder_path, "cpu")
    env = KeypointObservation(make_env(enc.env_config), enc)
    assert env.reset(seed=0)[0].shape == (2 * K + 6,)
