"""A keypoint policy taught by a state expert: ``scripts/imitate.py`` without Hydra.

Finn et al. train their visuomotor policy by supervised learning from controllers that see the
true state. Here the expert is a state SAC agent (``scripts/train_rl.py obs=state``) and the
student a policy head on the DSAE's keypoints and the robot's proprioception (the observation of
:class:`~dsae.rl.wrappers.KeypointObservation`; with ``imitation.finetune_encoder=true`` the
camera frame goes through the encoder, which the policy loss then trains too, as in the paper).
``run_imitation(cfg, run_dir)`` runs DAgger (Ross et al., 2011): each round collects episodes in
which the expert acts at each step with probability ``beta ** round`` and the student otherwise,
the expert labels every step with its deterministic action, and the student is fitted (mean
squared error on actions in [-1, 1]) to every labelled step so far.

The scene is the expert's, rendered as the encoder's training frames were. After each round the
student plays the evaluation episodes of ``scripts/train_rl.py`` (the same fixed seeds); the
expert, a random and a do-nothing policy play them once, at the start. The run folder gets
``scalars.jsonl`` and the wandb run, ``checkpoints/agent.pt`` after each round (``model``:
"imitation"; ``resume=true`` continues exactly; ``scripts/visualize.py policy=RUN`` films the
student) and, last, ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dsae.checkpoint import (
    AGENT_CHECKPOINT,
    RUN_CONFIG,
    checkpoint_file,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from dsae.config import from_dict, to_dict
from dsae.device import resolve_device
from dsae.errors import ConfigError
from dsae.logger import Logger
from dsae.rl.config import ImitationRunConfig
from dsae.rl.policy import (
    Policy,
    baselines,
    encoder_scene,
    evaluate_policy,
    figures,
    resume_run,
    scale_action,
    summarise,
    train_seed,
)
from dsae.rl.sac import ArrayStore, KeypointFeatures, ObservationFeatures, mlp, to_tensors
from dsae.rl.wrappers import KeypointObservation, PixelObservation
from envs import EnvConfig, make_env

IMITATION = "imitation"  # the "model" of a student's checkpoint (a SAC agent's is "sac")


class StudentPolicy(nn.Module):
    """Observation -> action in [-1, 1]: features (B, D) of keypoints and proprioception
    (:class:`~dsae.rl.sac.ObservationFeatures`) -> an MLP -> tanh -> (B, A)."""

    def __init__(self, features: ObservationFeatures, action_dim: int, hidden: list[int]):
        super().__init__()
        self.features = features
        self.head = mlp(features.out_dim, hidden, action_dim)

    def forward(self, obs: Any) -> torch.Tensor:
        return torch.tanh(self.head(self.features(obs)))

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """One observation (unbatched, numpy) -> one action in [-1, 1] (the student is deterministic)."""
        return self(to_tensors(obs, next(self.head.parameters()).device, unsqueeze=True))[0].cpu().numpy()


class StudentFactory:
    """The envs and a fresh student of an imitation run, in the scene ``env_cfg``: keypoint
    observations from the frozen encoder, or the camera frame when the encoder is fine-tuned."""

    def __init__(self, cfg: ImitationRunConfig, device: torch.device, env_cfg: EnvConfig):
        from dsae.api import load_encoder

        self.cfg, self.device, self.env_cfg = cfg, device, env_cfg
        self.encoder = load_encoder(cfg.encoder, device)

    def make_env(self) -> gym.Env:
        env = make_env(self.env_cfg)
        return PixelObservation(env) if self.cfg.imitation.finetune_encoder else KeypointObservation(env, self.encoder)

    def make_agent(self, env: gym.Env) -> StudentPolicy:
        space = env.observation_space
        if isinstance(space, gym.spaces.Dict):
            encoder = KeypointFeatures(copy.deepcopy(self.encoder).requires_grad_(True))
            features = ObservationFeatures(encoder, space["joint_features"].shape[0])
        else:
            features = ObservationFeatures(None, space.shape[0])
        return StudentPolicy(features, env.action_space.shape[0], self.cfg.imitation.hidden).to(self.device)


def load_expert(path: str, device: torch.device) -> Policy:
    """The state expert of ``imitation``: a scripts/train_rl.py obs=state run, or a named error."""
    if not checkpoint_file(path, AGENT_CHECKPOINT).exists():
        raise ConfigError(f"expert={path}: no agent checkpoint at {checkpoint_file(path, AGENT_CHECKPOINT)}; the "
                          "expert is a run of `scripts/train_rl.py obs=state env=<scene>`")
    expert = Policy(path, device)
    if expert.kind != "sac" or expert.cfg.obs != "state":
        seen = "a keypoint student" if expert.kind != "sac" else f"obs={expert.cfg.obs}"
        raise ConfigError(f"expert={path} is {seen}: the expert must see the state, a run of "
                          "`scripts/train_rl.py obs=state env=<scene>`")
    return expert


class ImitationRun:
    """One DAgger run, round by round: :meth:`run` collects, fits, evaluates and checkpoints until
    ``imitation.rounds``, then :meth:`finish` writes ``metrics.json``."""

    def __init__(self, cfg: ImitationRunConfig, run_dir: Path, state: Optional[dict[str, Any]]):
        self.started = time.perf_counter()
        self.cfg, self.d, self.run_dir = cfg, cfg.imitation, run_dir
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        self.expert = load_expert(cfg.expert, self.device)
        if state is not None:
            env_cfg = from_dict(state["env_resolved"], EnvConfig)
        else:
            from dsae.api import load_encoder

            remedy = (f"train an encoder on it (scripts/train.py env={self.expert.env_config.name}) or pass an "
                      "expert of the encoder's scene")
            env_cfg = encoder_scene(self.expert.env_config, load_encoder(cfg.encoder, "cpu").env_config,
                                    cfg.encoder, remedy)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(json.dumps(to_dict(cfg), indent=2))
        seed_everything(cfg.seed)
        self.factory = StudentFactory(cfg, self.device, env_cfg)
        self.env, self.eval_env = self.factory.make_env(), self.factory.make_env()
        self.student = self.factory.make_agent(self.env)
        groups = [{"params": self.student.head.parameters(), "lr": self.d.lr}]
        if self.d.finetune_encoder:
            groups.append({"params": self.student.features.parameters(), "lr": self.d.encoder_lr})
        self.opt = torch.optim.Adam(groups)
        example, _ = self.env.reset(seed=train_seed(cfg.seed, 0))
        capacity = self.d.rounds * self.d.episodes_per_round * env_cfg.max_episode_steps
        self.data = ArrayStore(capacity, {"obs": example, "label": np.zeros(self.env.action_space.shape, np.float32)})
        self.rng = np.random.default_rng(cfg.seed)  # who acts, and the minibatches
        self.round, self.episode, self.elapsed, self.evals, wandb_id = 0, 0, 0.0, [], None
        if state is not None:
            wandb_id = self._restore(state)
        else:  # in the expert's own env: the same episodes, and no frames to render
            expert_env = self.expert.make_env()
            self.expert_eval = summarise(evaluate_policy(
                expert_env, lambda o: self.expert.agent.act(o, deterministic=True), self.d.eval_episodes))
            self.baselines = baselines(expert_env, self.d.eval_episodes, cfg.seed)
            expert_env.close()
            for name, summary in {"expert": self.expert_eval, **self.baselines}.items():
                print(f"[dsae] {name} policy on the {self.d.eval_episodes} evaluation episodes: {figures(summary)}")
        self.logger = Logger(cfg.logger, run_dir, to_dict(cfg), name=run_dir.name, resume_id=wandb_id,
                             resume_step=self.round if state is not None else None)

    def _restore(self, state: dict[str, Any]) -> Optional[str]:
        self.student.load_state_dict(state["agent"])
        self.opt.load_state_dict(state["optimizer"])
        self.data.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["rng"]["numpy_generator"]
        self.round, self.episode, self.elapsed = state["round"], state["episode"], state["elapsed_s"]
        self.evals, self.baselines, self.expert_eval = state["evals"], state["baselines"], state["expert_eval"]
        return state.get("wandb_id")

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def collect_episode(self, expert_probability: float) -> None:
        """One training episode: the expert labels every step; it acts with ``expert_probability``."""
        obs, _ = self.env.reset(seed=train_seed(self.cfg.seed, self.episode))
        done = False
        while not done:
            label = self.expert.agent.act(self.env.unwrapped.state_observation(), deterministic=True)
            self.data.add(obs=obs, label=label)
            action = label if self.rng.random() < expert_probability else self.student.act(obs)
            obs, _, terminated, truncated, _ = self.env.step(scale_action(self.env.action_space, action))
            done = terminated or truncated
        self.episode += 1

    def fit(self) -> float:
        """``imitation.updates_per_round`` gradient steps on the labelled steps; the mean loss."""
        self.student.train()
        total = torch.zeros(())
        for _ in range(self.d.updates_per_round):
            batch = self.data.sample(self.d.batch_size, self.rng, self.device)
            loss = F.mse_loss(self.student(batch["obs"]), batch["label"])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.detach().cpu()
        self.student.eval()
        return float(total) / self.d.updates_per_round

    def evaluate(self, loss: float) -> dict[str, Any]:
        """The student on the evaluation episodes: a row of ``evals`` and the logger."""
        summary = summarise(evaluate_policy(self.eval_env, self.student.act, self.d.eval_episodes))
        row = {"round": self.round, "labelled_steps": self.data.size, "loss": loss, **summary, "wall_s": self.wall()}
        self.evals.append(row)
        self.logger.log({f"eval/{k}": v for k, v in row.items() if k not in ("round", "returns")}, self.round)
        return row

    def checkpoint(self) -> None:
        save_checkpoint(self.run_dir / AGENT_CHECKPOINT, {
            "model": IMITATION, "config": to_dict(self.cfg), "env_resolved": to_dict(self.factory.env_cfg),
            "agent": self.student.state_dict(), "optimizer": self.opt.state_dict(), "data": self.data.state_dict(),
            "rng": {**rng_state(), "numpy_generator": self.rng.bit_generator.state}, "round": self.round,
            "episode": self.episode, "elapsed_s": self.wall(), "evals": self.evals, "baselines": self.baselines,
            "expert_eval": self.expert_eval, "wandb_id": self.logger.run_id})

    def run(self, progress: bool) -> None:
        """DAgger rounds to ``imitation.rounds``; a checkpoint after each."""
        from tqdm import tqdm

        with tqdm(total=self.d.rounds, initial=self.round, desc="dagger", unit="round", disable=not progress,
                  dynamic_ncols=True) as bar:
            while self.round < self.d.rounds:
                for _ in range(self.d.episodes_per_round):
                    self.collect_episode(self.d.beta ** self.round)
                loss = self.fit()
                self.round += 1
                bar.set_postfix_str(f"loss {loss:.4f}, " + figures(self.evaluate(loss)))
                self.checkpoint()
                bar.update(1)

    def finish(self) -> dict[str, Any]:
        """Write ``metrics.json`` (which marks the run finished) and close everything."""
        final, cfg = self.evals[-1], self.cfg
        metrics = {
            "env": self.factory.env_cfg.name, "seed": cfg.seed, "rounds": self.round,
            "labelled_steps": self.data.size, "eval_episodes": self.d.eval_episodes,
            **{f"eval_{k}": v for k, v in final.items() if k not in ("round", "labelled_steps", "loss", "wall_s")},
            "train_loss": final["loss"],
            "expert": self.expert_eval, "baselines": self.baselines,
            "success_of_expert": _ratio(final.get("success_rate"), self.expert_eval.get("success_rate")),
            "curve": [{k: v for k, v in e.items() if k != "returns"} for e in self.evals], "wall_s": self.wall(),
            "expert_run": str(Path(cfg.expert).resolve()), "encoder": str(Path(cfg.encoder).resolve()),
            "finetune_encoder": self.d.finetune_encoder, "device": str(self.device),
            "checkpoint": str(self.run_dir / AGENT_CHECKPOINT),
        }
        self.close_envs()
        self.logger.finish(metrics)
        return metrics

    def close_envs(self) -> None:
        self.env.close()
        self.eval_env.close()


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or not b else a / b


def run_imitation(cfg: ImitationRunConfig, run_dir: Path | str,
                  overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train (or resume) a student; returns the metrics also written to ``<run>/metrics.json``.

    ``overrides``: the command line's ``key=value`` overrides; a resumed run refuses those that
    would change its settings (None: every setting of ``cfg``)."""
    cfg, run_dir, state = resume_run(cfg, run_dir, overrides, ImitationRunConfig, IMITATION)
    if state is not None:
        print(f"[dsae] resuming {run_dir} after round {state['round']} of {cfg.imitation.rounds}")
    run = ImitationRun(cfg, run_dir, state)
    try:
        run.run(cfg.progress)
    except BaseException:
        run.close_envs()
        raise
    return run.finish()
