"""What RL runs, imitation runs and films of their policies share: building the envs and the
agent from an :class:`~dsae.rl.config.RLRunConfig`, playing evaluation episodes (with a task's
success and the random and do-nothing baselines), the agent checkpoint's format, and
:class:`Policy`, a trained policy loaded from its run folder.

The agent checkpoint (``checkpoints/agent.pt``, :data:`dsae.checkpoint.AGENT_CHECKPOINT`) is a
dict: ``model`` ("sac"; an imitation run's is "imitation", see :mod:`dsae.rl.imitation`),
``config`` (the run's settings), ``env_resolved`` (the scene as the agent saw it, camera settings
taken from its encoder), ``agent`` and the three optimisers' states, and the run's progress
(``buffer``, ``rng``, ``step``, ``episode``, ``elapsed_s``, ``evals``, ``baselines``,
``wandb_id``) that resuming needs. :func:`agent_checkpoint` writes that dict,
:func:`restore_agent` and :func:`load_agent_checkpoint` read it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch

from dsae.checkpoint import (
    AGENT_CHECKPOINT,
    CheckpointError,
    checkpoint_file,
    find_resume_checkpoint,
    load_checkpoint,
    resumed_config,
)
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
            self.env_cfg = encoder_scene(cfg.env, self.encoder.env_config, cfg.encoder,
                                         f"pass env={self.encoder.env_config.name} or an encoder trained on {cfg.env.name}")

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


def encoder_scene(env_cfg: EnvConfig, trained: EnvConfig, path: str, remedy: str) -> EnvConfig:
    """The scene ``env_cfg`` rendered as an encoder's training frames were (its VISUAL_FIELDS);
    ``trained``: the encoder's scene; a scene of another name is refused, saying ``remedy``."""
    if trained.name != env_cfg.name:
        raise ConfigError(f"encoder={path} was trained on env {trained.name!r}, not {env_cfg.name!r}: {remedy}")
    return replace(env_cfg, **{k: copy.deepcopy(getattr(trained, k)) for k in VISUAL_FIELDS})


def train_seed(seed: int, episode: int) -> int:
    """The reset seed of training episode ``episode`` of a run with ``seed`` (never an evaluation seed)."""
    return (seed * 1_000_003 + episode) % 2**30


def scale_action(space: gym.spaces.Box, action: np.ndarray) -> np.ndarray:
    """[-1, 1] -> the action box ``space``."""
    return (space.low + (action + 1.0) * 0.5 * (space.high - space.low)).astype(space.dtype)


def evaluate_policy(env: gym.Env, act: Callable[[Any], np.ndarray], episodes: int, first: int = 0) -> dict[str, list]:
    """Play ``episodes`` fixed evaluation episodes (seeds EVAL_SEED + first + i); ``act`` gives actions in
    [-1, 1]. Returns ``{"returns": [...]}``, and in a scene with a task (``env.task_object``) each
    episode's ``success`` and final ``goal_distance`` (metres) too."""
    out: dict[str, list] = {"returns": []}
    for i in range(episodes):
        obs, info = env.reset(seed=EVAL_SEED + first + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(scale_action(env.action_space, act(obs)))
            total += float(reward)
            done = terminated or truncated
        out["returns"].append(total)
        for key in ("success", "goal_distance") if "success" in info else ():
            out.setdefault(key, []).append(info[key])
    return out


def summarise(evaluation: dict[str, list]) -> dict[str, Any]:
    """An :func:`evaluate_policy` result in figures: ``return_mean``, ``return_std``, ``returns``
    and, with a task, ``success_rate`` and ``goal_distance_mean`` (metres)."""
    returns = evaluation["returns"]
    out = {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)), "returns": returns}
    if "success" in evaluation:
        out["success_rate"] = float(np.mean(evaluation["success"]))
        out["goal_distance_mean"] = float(np.mean(evaluation["goal_distance"]))
    return out


def figures(summary: dict[str, Any]) -> str:
    """A :func:`summarise`d evaluation in a few words: return, and success with a task."""
    text = f"return {summary['return_mean']:.2f}"
    if "success_rate" in summary:
        text += f", success {summary['success_rate']:.0%}, goal distance {summary['goal_distance_mean']:.3f} m"
    return text


def baselines(env: gym.Env, episodes: int, seed: int, first: int = 0) -> dict[str, dict[str, Any]]:
    """What a policy must beat, on the evaluation episodes (those of :func:`evaluate_policy`):
    ``random`` (uniform actions) and ``do_nothing`` (the action box's centre: zero torque for the
    MuJoCo tasks), each :func:`summarise`d."""
    rng, shape = np.random.default_rng(seed), env.action_space.shape
    return {"random": summarise(evaluate_policy(env, lambda o: rng.uniform(-1.0, 1.0, shape), episodes, first)),
            "do_nothing": summarise(evaluate_policy(env, lambda o: np.zeros(shape), episodes, first))}


def agent_checkpoint(agent: SACAgent, cfg: RLRunConfig, env_cfg: EnvConfig, **progress: Any) -> dict[str, Any]:
    """The agent checkpoint dict (see the module docstring); ``progress``: the run's counters,
    buffer and RNG states."""
    return {"model": "sac", "config": to_dict(cfg), "env_resolved": to_dict(env_cfg), "agent": agent.state_dict(),
            **{name: getattr(agent, name).state_dict() for name in OPTIMIZERS}, **progress}


def load_agent_weights(agent: torch.nn.Module, state: dict[str, Any]) -> None:
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
    if state.get("model") not in ("sac", "imitation"):
        raise CheckpointError(f"{path} is not a policy's checkpoint (scripts/train_rl.py and scripts/imitate.py "
                              "write those)")
    return state


def resume_run(cfg: Any, run_dir: Path | str, overrides: Optional[Sequence[str]], schema: type,
               model: str) -> tuple[Any, Path, Optional[dict[str, Any]]]:
    """What a run of ``model`` ("sac" or "imitation") goes on with: ``(cfg, run_dir, None)`` for a
    fresh run, or the settings, folder and checkpoint state of the run that ``cfg.resume`` names.
    A checkpoint of the other kind is refused; so are ``overrides`` that change the run's settings."""
    run_dir, given = Path(run_dir), to_dict(cfg)
    resume_from = find_resume_checkpoint(cfg.resume, run_dir, given, checkpoint=AGENT_CHECKPOINT, key="resume")
    if resume_from is None:
        return cfg, run_dir, None
    state = load_agent_checkpoint(resume_from)
    if state["model"] != model:
        raise CheckpointError(f"resume={cfg.resume}: {resume_from} is the checkpoint of a {state['model']!r} run, "
                              f"not of a {model!r} run")
    return from_dict(resumed_config(state["config"], given, overrides, key="resume"), schema), \
        resume_from.parent.parent, state


class Policy:
    """A trained policy loaded from its run folder: a SAC agent of ``scripts/train_rl.py`` or a
    keypoint student of ``scripts/imitate.py`` (``kind``: "sac" or "imitation").
    ``policy.act(obs)`` acts on observations of ``policy.make_env()``; ``policy.agent.act`` gives
    the same action in [-1, 1]."""

    def __init__(self, path: Path | str, device: Optional[str | torch.device] = None):
        state = load_agent_checkpoint(path)
        self.kind = state["model"]
        if self.kind == "sac":
            self.cfg = from_dict(state["config"], RLRunConfig)
            self.factory = AgentFactory(self.cfg, resolve_device(device))
        else:
            from dsae.rl.config import ImitationRunConfig
            from dsae.rl.imitation import StudentFactory

            self.cfg = from_dict(state["config"], ImitationRunConfig)
            self.factory = StudentFactory(self.cfg, resolve_device(device), from_dict(state["env_resolved"], EnvConfig))
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
