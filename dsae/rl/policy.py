"""What an RL run and a film of its agent share: building the envs and the agent from an
:class:`~dsae.rl.config.RLRunConfig`, playing evaluation episodes, the agent checkpoint's
format, and :class:`Policy`, a trained agent loaded from its run folder.

The agent checkpoint (``checkpoints/agent.pt``, :data:`dsae.checkpoint.AGENT_CHECKPOINT`) is a
dict: ``model`` ("sac"), ``config`` (the run's settings), ``env_resolved`` (the scene as the agent
saw it, camera settings taken from its encoder), ``agent`` and the three optimisers' states, and
the run's progress (``buffer``, ``rng``, ``step``, ``episode``, ``elapsed_s``, ``evals``,
``random_return``, ``wandb_id``) that resuming needs. :func:`agent_checkpoint` writes that dict,
:func:`restore_agent` and :func:`load_agent_checkpoint` read it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch

from dsae.checkpoint import AGENT_CHECKPOINT, CheckpointError, checkpoint_file, load_checkpoint
from dsae.config import from_dict, to_dict
from dsae.device import resolve_device
from dsae.errors import ConfigError
from dsae.rl.config import RLRunConfig
from dsae.rl.sac import ConvFeatures, KeypointFeatures, ObservationFeatures, SACAgent
from dsae.rl.wrappers import KeypointObservation, PixelObservation
from envs import VISUAL_FIELDS, EnvConfig, make_env

EVAL_SEED = 2**30  # evaluation episode i uses seed EVAL_SEED + i in every run
OPTIMIZERS = ("critic_opt", "actor_opt", "alpha_opt")


class AgentFactory:
    """The envs and the agent of a run: its scene (with the encoder's camera settings for
    ``obs=keypoints``), the observation wrapper of its ``obs`` mode, and a fresh SAC agent."""

    def __init__(self, cfg: RLRunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.encoder = None
        self.env_cfg = cfg.env
        if cfg.obs == "keypoints":
            from dsae.api import load_encoder

            self.encoder = load_encoder(cfg.encoder, device)
            self.env_cfg = _encoder_scene(cfg.env, self.encoder.env_config, cfg.encoder)

    def make_env(self) -> gym.Env:
        env = make_env(self.env_cfg)
        if self.cfg.obs == "state":
            return env
        if self.cfg.obs == "pixels" or self.cfg.rl.finetune_encoder:
            return PixelObservation(env)
        r = self.cfg.rl
        return KeypointObservation(env, self.encoder, keypoints=r.keypoints, top_k=r.top_k,
                                   presence_threshold=r.presence_threshold, kalman=r.kalman)

    def make_agent(self, env: gym.Env) -> SACAgent:
        r, space = self.cfg.rl, env.observation_space
        if not isinstance(space, gym.spaces.Dict):
            return SACAgent(r, ObservationFeatures(None, space.shape[0]), env.action_space.shape[0]).to(self.device)
        if self.cfg.obs == "pixels":
            image = ConvFeatures(self.env_cfg.image_size, r.pixel_channels, r.pixel_features)
        else:
            encoder = copy.deepcopy(self.encoder).requires_grad_(True)
            image = KeypointFeatures(encoder, r.keypoints)
        features = ObservationFeatures(image, space["joint_features"].shape[0])
        return SACAgent(r, features, env.action_space.shape[0]).to(self.device)


def _encoder_scene(env_cfg: EnvConfig, trained: EnvConfig, path: str) -> EnvConfig:
    """The run's scene, rendered as the encoder's training frames were (its VISUAL_FIELDS)."""
    if trained.name != env_cfg.name:
        raise ConfigError(f"encoder={path} was trained on env {trained.name!r}, not {env_cfg.name!r}: "
                          f"pass env={trained.name} or an encoder trained on {env_cfg.name}")
    return replace(env_cfg, **{k: copy.deepcopy(getattr(trained, k)) for k in VISUAL_FIELDS})


def scale_action(space: gym.spaces.Box, action: np.ndarray) -> np.ndarray:
    """[-1, 1] -> the action box ``space``."""
    return (space.low + (action + 1.0) * 0.5 * (space.high - space.low)).astype(space.dtype)


def evaluate_policy(env: gym.Env, act: Callable[[Any], np.ndarray], episodes: int) -> list[float]:
    """Returns of ``episodes`` fixed evaluation episodes (seeds EVAL_SEED + i); ``act`` gives
    actions in [-1, 1]."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(scale_action(env.action_space, act(obs)))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def agent_checkpoint(agent: SACAgent, cfg: RLRunConfig, env_cfg: EnvConfig, **progress: Any) -> dict[str, Any]:
    """The agent checkpoint dict (see the module docstring); ``progress``: the run's counters,
    buffer and RNG states."""
    return {"model": "sac", "config": to_dict(cfg), "env_resolved": to_dict(env_cfg), "agent": agent.state_dict(),
            **{name: getattr(agent, name).state_dict() for name in OPTIMIZERS}, **progress}


def load_agent_weights(agent: SACAgent, state: dict[str, Any]) -> None:
    """The agent's weights from its checkpoint; a checkpoint of another layout is named, not a traceback."""
    try:
        agent.load_state_dict(state["agent"])
    except RuntimeError as err:
        raise CheckpointError(f"the agent checkpoint does not fit this version's agent (written before the RL code "
                              f"moved to dsae/rl/, or for other settings): train it again ({str(err)[:200]})") from err


def restore_agent(agent: SACAgent, state: dict[str, Any]) -> None:
    """Load the weights and optimiser states of an agent checkpoint into ``agent``."""
    load_agent_weights(agent, state)
    for name in OPTIMIZERS:
        getattr(agent, name).load_state_dict(state[name])


def load_agent_checkpoint(path: Path | str) -> dict[str, Any]:
    """An agent checkpoint from its file or run folder; refuses a DSAE's checkpoint."""
    state = load_checkpoint(checkpoint_file(path, AGENT_CHECKPOINT))
    if state.get("model") != "sac":
        raise CheckpointError(f"{path} is not an RL agent checkpoint (scripts/train_rl.py writes those)")
    return state


class Policy:
    """A trained agent loaded from its run: ``policy.act(obs)`` on observations of ``policy.make_env()``."""

    def __init__(self, path: Path | str, device: Optional[str | torch.device] = None):
        state = load_agent_checkpoint(path)
        self.cfg = from_dict(state["config"], RLRunConfig)
        self.factory = AgentFactory(self.cfg, resolve_device(device))
        env = self.factory.make_env()
        self.agent = self.factory.make_agent(env)
        self.action_space = env.action_space
        env.close()
        load_agent_weights(self.agent, state)
        self.agent.eval()

    @property
    def env_config(self) -> EnvConfig:
        return self.factory.env_cfg

    @property
    def encoder_path(self) -> Optional[str]:
        return self.cfg.encoder

    def make_env(self) -> gym.Env:
        return self.factory.make_env()

    def act(self, obs: Any) -> np.ndarray:
        """Deterministic action, already scaled to the env's action box."""
        return scale_action(self.action_space, self.agent.act(obs, deterministic=True))
