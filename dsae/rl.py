"""Reinforcement learning on top of the keypoints: ``scripts/train_rl.py`` without Hydra.

``run_rl(cfg, run_dir)`` trains a soft actor-critic agent (:mod:`dsae.sac`) on one env with
one of three observations, for an honest comparison:

- ``obs=state``: the env's own observation vector (for Reacher it holds the target position and
  the fingertip-to-target vector): the upper reference;
- ``obs=pixels``: the camera frame and proprioception, vision learned from scratch with the
  agent (random-shift augmentation, DrQ);
- ``obs=keypoints``: the camera frame through the pretrained DSAE encoder (``encoder=PATH``),
  frozen (:class:`dsae.wrappers.KeypointObservation`) or, with ``rl.finetune_encoder=true``,
  trained end to end by the critic; plus proprioception.

Every ``rl.eval_every`` env steps the deterministic policy plays ``rl.eval_episodes`` fixed
evaluation episodes (the same seeds in every run and mode). The run folder gets
``returns.csv`` (every training episode and every evaluation), ``scalars.jsonl`` and the wandb
run, ``checkpoints/agent.pt`` (agent, optimisers, replay buffer and RNG states: ``resume=true``
or ``resume=PATH`` continues exactly) and, last, ``metrics.json``: the final evaluation's mean
and std return, env steps, wall time, and the normalised score
(R - R_random) / (R_state - R_random) when ``rl.state_return`` is given (R_random is
``rl.random_return``, or measured with uniform random actions on the evaluation episodes).
"""

from __future__ import annotations

import copy
import csv
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch

from dsae.checkpoint import (
    AGENT_CHECKPOINT,
    METRICS,
    RUN_CONFIG,
    CheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    resumed_config,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from dsae.config import LoggerConfig, from_dict, to_dict
from dsae.device import resolve_device
from dsae.errors import ConfigError
from dsae.logger import Logger, drop_rows_after
from dsae.sac import DSAEFeatures, ObsEncoder, PixelEncoder, ReplayBuffer, SACAgent, SACConfig
from dsae.wrappers import KeypointObservation, PixelObservation
from envs import VISUAL_FIELDS, EnvConfig, make_env

OBS_MODES = ("state", "pixels", "keypoints")
RETURNS_CSV = "returns.csv"
EVAL_SEED = 2**30  # evaluation episode i uses seed EVAL_SEED + i in every run


@dataclass
class RLRunConfig:
    """Top-level schema of ``configs/train_rl.yaml``."""

    env: EnvConfig = field(default_factory=EnvConfig)
    rl: SACConfig = field(default_factory=SACConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    obs: str = "keypoints"  # "state", "pixels" or "keypoints"
    encoder: Optional[str] = None  # obs=keypoints: a DSAE checkpoint or run folder
    seed: int = 0
    device: str = "auto"
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    resume: Optional[str] = None  # "true"/"latest" or a run folder / agent checkpoint
    progress: bool = True  # tqdm progress bar


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="rl_base_config", node=RLRunConfig)


def _check(cfg: RLRunConfig) -> None:
    if cfg.obs not in OBS_MODES:
        raise ConfigError(f"obs must be one of {OBS_MODES}, got {cfg.obs!r}")
    if cfg.obs == "keypoints" and not cfg.encoder:
        raise ConfigError("obs=keypoints needs a trained DSAE: pass encoder=PATH (a run folder of "
                         "scripts/train.py or its checkpoints/last.pt); `make train` makes one")
    r = cfg.rl
    for key in ("steps", "batch_size", "eval_every", "eval_episodes", "checkpoint_every", "log_every",
                "updates_per_step"):
        if getattr(r, key) < 1:
            raise ConfigError(f"rl.{key} must be >= 1, got {getattr(r, key)}")
    if r.init_steps < 0 or r.init_steps >= r.steps:
        raise ConfigError(f"rl.init_steps must be in [0, rl.steps={r.steps}), got {r.init_steps}")
    if not 0 < r.gamma < 1 or not 0 < r.tau <= 1 or not 0 < r.encoder_tau <= 1:
        raise ConfigError("rl.gamma must be in (0, 1) and rl.tau, rl.encoder_tau in (0, 1]")
    if r.finetune_encoder and cfg.obs != "keypoints":
        raise ConfigError(f"rl.finetune_encoder=true only applies to obs=keypoints (got obs={cfg.obs})")


class Setup:
    """Everything a run (or a film of its policy) needs: envs, the agent, and how they fit."""

    def __init__(self, cfg: RLRunConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        env_cfg = cfg.env
        self.encoder = None
        if cfg.obs == "keypoints":
            from dsae.api import load_encoder

            state = load_checkpoint(cfg.encoder)
            enc_env = from_dict(state["config"]).env
            if enc_env.name != env_cfg.name:
                raise ConfigError(f"encoder={cfg.encoder} was trained on env {enc_env.name!r}, not {env_cfg.name!r}: "
                                 f"pass env={enc_env.name} or an encoder trained on {env_cfg.name}")
            env_cfg = replace(env_cfg, **{k: copy.deepcopy(getattr(enc_env, k)) for k in VISUAL_FIELDS})
            self.encoder = load_encoder(cfg.encoder, device)
        self.env_cfg = env_cfg

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
        cfg = self.cfg
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            if cfg.obs == "pixels":
                image = PixelEncoder(self.env_cfg.image_size, cfg.rl.pixel_channels, cfg.rl.pixel_features)
            else:
                encoder = copy.deepcopy(self.encoder)
                for p in encoder.parameters():
                    p.requires_grad_(True)
                image = DSAEFeatures(encoder, cfg.rl.keypoints)
            obs_encoder = ObsEncoder(image, space["proprio"].shape[0])
        else:
            obs_encoder = ObsEncoder(None, space.shape[0])
        action_dim = env.action_space.shape[0]
        return SACAgent(cfg.rl, obs_encoder, action_dim).to(self.device)


def scale_action(space: gym.spaces.Box, action: np.ndarray) -> np.ndarray:
    """[-1, 1] -> the action box ``space``."""
    return (space.low + (action + 1.0) * 0.5 * (space.high - space.low)).astype(space.dtype)


def evaluate_policy(env: gym.Env, act, episodes: int) -> list[float]:
    """Returns of ``episodes`` fixed evaluation episodes (seeds EVAL_SEED + i)."""
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


def _train_seed(seed: int, episode: int) -> int:
    return (seed * 1_000_003 + episode) % 2**31


def _normalised(ret: float, random_return: Optional[float], state_return: Optional[float]) -> Optional[float]:
    if random_return is None or state_return is None or state_return == random_return:
        return None
    return (ret - random_return) / (state_return - random_return)


def run_rl(cfg: RLRunConfig, run_dir: Path | str, overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train (or resume) an agent; returns the metrics also written to ``<run>/metrics.json``.

    ``overrides``: the command line's ``key=value`` overrides; a resumed run refuses those that
    would change its settings (None: every setting of ``cfg``)."""
    from tqdm import tqdm

    started = time.perf_counter()
    run_dir = Path(run_dir)
    given = to_dict(cfg)
    resume_from = find_resume_checkpoint(cfg.resume, run_dir, given, checkpoint=AGENT_CHECKPOINT, key="resume")
    state = None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        cfg = from_dict(resumed_config(state["config"], given, overrides, key="resume"), RLRunConfig)
        run_dir = resume_from.parent.parent
        print(f"[dsae] resuming {run_dir} from env step {state['step']} of {cfg.rl.steps}")
    _check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_CONFIG).write_text(json.dumps(to_dict(cfg), indent=2))
    seed_everything(cfg.seed)

    setup = Setup(cfg, device)
    env, eval_env = setup.make_env(), setup.make_env()
    agent = setup.make_agent(env)
    r = cfg.rl
    obs, _ = env.reset(seed=_train_seed(cfg.seed, 0))
    buffer = ReplayBuffer(r.buffer_size or r.steps, obs, env.action_space.shape[0])
    rng = np.random.default_rng(cfg.seed)  # buffer sampling and warm-up actions
    step, episode, elapsed, wandb_id = 0, 0, 0.0, None
    evals: list[dict[str, Any]] = []
    random_return = r.random_return
    if state is not None:
        agent.load_state_dict(state["agent"])
        for name in ("critic_opt", "actor_opt", "alpha_opt"):
            getattr(agent, name).load_state_dict(state[name])
        buffer.load_state_dict(state["buffer"])
        set_rng_state(state["rng"])
        rng.bit_generator.state = state["rng"]["numpy_generator"]
        step, episode, elapsed = state["step"], state["episode"], state["elapsed_s"]
        evals, random_return, wandb_id = state["evals"], state["random_return"], state.get("wandb_id")
        drop_rows_after(run_dir / RETURNS_CSV, step)
        obs, _ = env.reset(seed=_train_seed(cfg.seed, episode))
    elif random_return is None:
        random_return = float(np.mean(evaluate_policy(
            eval_env, lambda o: rng.uniform(-1.0, 1.0, env.action_space.shape), r.eval_episodes)))
        print(f"[dsae] random policy on the {r.eval_episodes} evaluation episodes: mean return {random_return:.2f}")

    logger = Logger(cfg.logger, run_dir, to_dict(cfg), name=run_dir.name, resume_id=wandb_id,
                    resume_step=step if state is not None else None)
    new_csv = not (run_dir / RETURNS_CSV).exists()
    csv_file = open(run_dir / RETURNS_CSV, "a", newline="")
    writer = csv.writer(csv_file)
    if new_csv:
        writer.writerow(["env_step", "kind", "episode", "return", "std", "wall_s"])

    def wall() -> float:
        return elapsed + time.perf_counter() - started

    def evaluate() -> dict[str, Any]:
        agent.eval()
        returns = evaluate_policy(eval_env, lambda o: agent.act(o, deterministic=True), r.eval_episodes)
        agent.train()
        mean, std = float(np.mean(returns)), float(np.std(returns))
        row = {"env_step": step, "return_mean": mean, "return_std": std, "returns": returns, "wall_s": wall()}
        evals.append(row)
        writer.writerow([step, "eval", "", f"{mean:.4f}", f"{std:.4f}", f"{row['wall_s']:.1f}"])
        csv_file.flush()
        scalars = {"eval/return_mean": mean, "eval/return_std": std}
        score = _normalised(mean, random_return, r.state_return)
        if score is not None:
            scalars["eval/normalised_score"] = score
        logger.log(scalars, step)
        return row

    def checkpoint() -> None:
        save_checkpoint(run_dir / AGENT_CHECKPOINT, {
            "model": "sac", "agent": agent.state_dict(), "config": to_dict(cfg),
            **{name: getattr(agent, name).state_dict() for name in ("critic_opt", "actor_opt", "alpha_opt")},
            "buffer": buffer.state_dict(), "rng": {**rng_state(), "numpy_generator": rng.bit_generator.state},
            "step": step, "episode": episode, "elapsed_s": wall(), "evals": evals,
            "random_return": random_return, "wandb_id": logger.run_id,
            "env_resolved": to_dict(setup.env_cfg),
        })

    next_eval = (step // r.eval_every + 1) * r.eval_every
    next_ckpt = (step // r.checkpoint_every + 1) * r.checkpoint_every
    next_log = (step // r.log_every + 1) * r.log_every
    losses: dict[str, float] = {}
    n_losses, ep_return, ep_len = 0, 0.0, 0
    agent.train()
    bar = tqdm(total=r.steps, initial=step, desc=f"sac {cfg.obs}", unit="step", disable=not cfg.progress,
               dynamic_ncols=True)
    try:
        while step < r.steps:
            if step < r.init_steps:
                action = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
            else:
                action = agent.act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(scale_action(env.action_space, action))
            buffer.add(obs, action, reward, next_obs, terminated)
            obs = next_obs
            step += 1
            ep_return += float(reward)
            ep_len += 1
            if step >= r.init_steps:
                for _ in range(r.updates_per_step):
                    parts = agent.update(buffer.sample(r.batch_size, rng, device))
                    for k, v in parts.items():
                        losses[k] = losses.get(k, 0.0) + float(v)
                    n_losses += 1
            bar.update(1)
            if step >= next_log and n_losses:
                logger.log({f"train/{k}": v / n_losses for k, v in losses.items()}, step)
                losses, n_losses = {}, 0
                next_log += r.log_every
            if terminated or truncated:
                writer.writerow([step, "train", episode, f"{ep_return:.4f}", "", f"{wall():.1f}"])
                logger.log({"train/episode_return": ep_return, "train/episode_length": ep_len}, step)
                episode += 1
                ep_return, ep_len = 0.0, 0
                obs, _ = env.reset(seed=_train_seed(cfg.seed, episode))
                if step >= next_eval or step >= r.steps:
                    row = evaluate()
                    bar.set_postfix(eval_return=f"{row['return_mean']:.2f}")
                    next_eval = (step // r.eval_every + 1) * r.eval_every
                if step >= next_ckpt or step >= r.steps:
                    checkpoint()
                    next_ckpt = (step // r.checkpoint_every + 1) * r.checkpoint_every
        if not evals or evals[-1]["env_step"] != step:
            evaluate()
            checkpoint()
    finally:
        bar.close()
        csv_file.close()

    final = evals[-1]
    metrics = {
        "obs": cfg.obs,
        "env": cfg.env.name,
        "seed": cfg.seed,
        "env_steps": step,
        "eval_return_mean": final["return_mean"],
        "eval_return_std": final["return_std"],
        "eval_returns": final["returns"],
        "eval_episodes": r.eval_episodes,
        "random_return": random_return,
        "state_return": r.state_return,
        "normalised_score": _normalised(final["return_mean"], random_return, r.state_return),
        "wall_s": wall(),
        "curve": [{k: e[k] for k in ("env_step", "return_mean", "return_std", "wall_s")} for e in evals],
        "encoder": str(Path(cfg.encoder).resolve()) if cfg.encoder else None,
        "finetune_encoder": r.finetune_encoder,
        "device": str(device),
        "checkpoint": str(run_dir / AGENT_CHECKPOINT),
    }
    logger.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    logger.close()
    env.close()
    eval_env.close()
    (run_dir / METRICS).write_text(json.dumps(metrics, indent=2))
    return metrics


class Policy:
    """A trained agent loaded from its run: ``policy.act(obs)`` on observations of ``policy.make_env()``."""

    def __init__(self, path: Path | str, device: Optional[str | torch.device] = None):
        state = load_checkpoint(Path(path) if not Path(path).is_dir() else Path(path) / AGENT_CHECKPOINT)
        if state.get("model") != "sac":
            raise CheckpointError(f"{path} is not an RL agent checkpoint (scripts/train_rl.py writes those)")
        self.cfg = from_dict(state["config"], RLRunConfig)
        self.device = resolve_device(device)
        self.setup = Setup(self.cfg, self.device)
        env = self.setup.make_env()
        self.agent = self.setup.make_agent(env)
        env.close()
        self.agent.load_state_dict(state["agent"])
        self.agent.eval()
        self.action_space = env.action_space

    @property
    def env_config(self) -> EnvConfig:
        return self.setup.env_cfg

    @property
    def encoder_path(self) -> Optional[str]:
        return self.cfg.encoder

    def make_env(self) -> gym.Env:
        return self.setup.make_env()

    def act(self, obs: Any) -> np.ndarray:
        """Deterministic action, already scaled to the env's action box."""
        return scale_action(self.action_space, self.agent.act(obs, deterministic=True))
