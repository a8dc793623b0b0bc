"""Reinforcement learning on top of the keypoints: ``scripts/train_rl.py`` without Hydra.

``run_rl(cfg, run_dir)`` trains a soft actor-critic agent (:mod:`dsae.rl.sac`) on one env with
one of three observations, for an honest comparison:

- ``obs=state``: the env's own observation vector (for Reacher it holds the target position and
  the fingertip-to-target vector): the upper reference;
- ``obs=pixels``: the camera frame and the robot's joint features, vision learned from scratch
  with the agent (random-shift augmentation, DrQ);
- ``obs=keypoints``: the camera frame through the pretrained DSAE encoder (``encoder=PATH``),
  frozen (:class:`dsae.rl.wrappers.KeypointObservation`) or, with ``rl.finetune_encoder=true``,
  trained end to end by the critic; plus the joint features.

Every ``rl.eval_every`` env steps the deterministic policy plays ``rl.eval_episodes`` fixed
evaluation episodes (the same seeds in every run and mode); in a scene with a task (Pusher) each
evaluation also gives the success rate and the final object-to-goal distance. Before training, a
random policy and a do-nothing policy play the same episodes (``baselines``). The run folder gets
``returns.csv`` (every training episode and every evaluation), ``scalars.jsonl`` and the wandb
run, ``checkpoints/agent.pt`` (:mod:`dsae.rl.policy`: ``resume=true`` or ``resume=PATH``
continues exactly; ``init=PATH`` starts a fresh run from another run's weights) and, last,
``metrics.json``: the final evaluation's figures, the baselines', the curve, env steps, wall
time, and the normalised score (R - R_random) / (R_state - R_random) when ``rl.state_return`` is
given (R_random is ``rl.random_return``, or the random baseline's).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from dsae.checkpoint import (
    AGENT_CHECKPOINT,
    RUN_CONFIG,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from dsae.config import to_dict
from dsae.device import resolve_device
from dsae.errors import ConfigError
from dsae.logger import Logger, drop_rows_after
from dsae.rl.config import RLRunConfig
from dsae.rl.policy import (
    AgentFactory,
    agent_checkpoint,
    baselines,
    evaluate_policy,
    figures,
    load_agent_checkpoint,
    load_agent_weights,
    restore_agent,
    resume_run,
    scale_action,
    summarise,
    train_seed,
)
from dsae.rl.sac import ReplayBuffer

RETURNS_CSV = "returns.csv"


def _normalised(ret: float, random_return: Optional[float], state_return: Optional[float]) -> Optional[float]:
    if random_return is None or state_return is None or state_return == random_return:
        return None
    return (ret - random_return) / (state_return - random_return)


def _every(step: int, interval: int) -> int:
    """The first multiple of ``interval`` after ``step``."""
    return (step // interval + 1) * interval


class RLTrainer:
    """One SAC run, step by step: :meth:`run` collects, updates, evaluates and checkpoints until
    ``rl.steps`` env steps, then :meth:`finish` writes ``metrics.json``."""

    def __init__(self, cfg: RLRunConfig, run_dir: Path, state: Optional[dict[str, Any]]):
        self.started = time.perf_counter()
        self.cfg, self.r, self.run_dir = cfg, cfg.rl, run_dir
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(json.dumps(to_dict(cfg), indent=2))
        seed_everything(cfg.seed)
        self.factory = AgentFactory(cfg, self.device)
        self.env, self.eval_env = self.factory.make_env(), self.factory.make_env()
        self.agent = self.factory.make_agent(self.env)
        self.obs, _ = self.env.reset(seed=train_seed(cfg.seed, 0))
        self.buffer = ReplayBuffer(self.r.buffer_size or self.r.steps, self.obs, self.env.action_space.shape[0])
        self.rng = np.random.default_rng(cfg.seed)  # buffer sampling and warm-up actions
        self.step, self.episode, self.elapsed, wandb_id = 0, 0, 0.0, None
        self.evals: list[dict[str, Any]] = []
        if state is not None:
            wandb_id = self._restore(state)
        else:
            if cfg.init:
                self._initialise(cfg.init)
            self.baselines = baselines(self.eval_env, self.r.eval_episodes, cfg.seed)
            print(f"[dsae] on the {self.r.eval_episodes} evaluation episodes: " + "; ".join(
                f"{name} policy {figures(b)}" for name, b in self.baselines.items()))
        self.random_return = self.r.random_return
        if self.random_return is None:
            self.random_return = self.baselines["random"]["return_mean"]
        self.logger = Logger(cfg.logger, run_dir, to_dict(cfg), name=run_dir.name, resume_id=wandb_id,
                             resume_step=self.step if state is not None else None)
        new_csv = not (run_dir / RETURNS_CSV).exists()
        self.csv_file = open(run_dir / RETURNS_CSV, "a", newline="")
        self.csv = csv.writer(self.csv_file)
        if new_csv:
            self.csv.writerow(["env_step", "kind", "episode", "return", "std", "wall_s"])

    def _restore(self, state: dict[str, Any]) -> Optional[str]:
        restore_agent(self.agent, state)
        self.buffer.load_state_dict(state["buffer"])
        set_rng_state(state["rng"])
        self.rng.bit_generator.state = state["rng"]["numpy_generator"]
        self.step, self.episode, self.elapsed = state["step"], state["episode"], state["elapsed_s"]
        self.evals, self.baselines = state["evals"], state["baselines"]
        drop_rows_after(self.run_dir / RETURNS_CSV, self.step)
        self.obs, _ = self.env.reset(seed=train_seed(self.cfg.seed, self.episode))
        return state.get("wandb_id")

    def _initialise(self, path: str) -> None:
        """Start from the agent weights of the run at ``path`` (``init=``), refusing another kind of run."""
        saved = load_agent_checkpoint(path)
        run = saved["config"]
        if saved["model"] != "sac" or run["obs"] != self.cfg.obs or run["env"]["name"] != self.cfg.env.name:
            seen = "a keypoint student" if saved["model"] != "sac" else f"obs={run['obs']} env={run['env']['name']}"
            raise ConfigError(f"init={path} is {seen}: init takes a scripts/train_rl.py run of this run's obs and "
                              f"scene (obs={self.cfg.obs} env={self.cfg.env.name})")
        load_agent_weights(self.agent, saved)

    def _random_action(self, obs: Any = None) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, self.env.action_space.shape).astype(np.float32)

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def evaluate(self) -> dict[str, Any]:
        """Deterministic evaluation episodes: a row in returns.csv, the logger and ``evals``."""
        self.agent.eval()
        row = summarise(evaluate_policy(self.eval_env, lambda o: self.agent.act(o, deterministic=True),
                                        self.r.eval_episodes))
        self.agent.train()
        row = {"env_step": self.step, **row, "wall_s": self.wall()}
        self.evals.append(row)
        self.csv.writerow([self.step, "eval", "", f"{row['return_mean']:.4f}", f"{row['return_std']:.4f}",
                           f"{row['wall_s']:.1f}"])
        self.csv_file.flush()
        scalars = {f"eval/{k}": v for k, v in row.items() if k not in ("env_step", "returns", "wall_s")}
        score = _normalised(row["return_mean"], self.random_return, self.r.state_return)
        if score is not None:
            scalars["eval/normalised_score"] = score
        self.logger.log(scalars, self.step)
        return row

    def checkpoint(self) -> None:
        save_checkpoint(self.run_dir / AGENT_CHECKPOINT, agent_checkpoint(
            self.agent, self.cfg, self.factory.env_cfg, buffer=self.buffer.state_dict(),
            rng={**rng_state(), "numpy_generator": self.rng.bit_generator.state}, step=self.step,
            episode=self.episode, elapsed_s=self.wall(), evals=self.evals, baselines=self.baselines,
            wandb_id=self.logger.run_id))

    def env_step(self) -> tuple[float, bool]:
        """Act (randomly during the warm-up), step the env, store the transition: (reward, episode over)."""
        action = self._random_action() if self.step < self.r.init_steps else self.agent.act(self.obs)
        next_obs, reward, terminated, truncated, _ = self.env.step(scale_action(self.env.action_space, action))
        self.buffer.add(self.obs, action, reward, next_obs, terminated)
        self.obs = next_obs
        self.step += 1
        return float(reward), terminated or truncated

    def update(self, losses: dict[str, float]) -> int:
        """``rl.updates_per_step`` SAC updates once the warm-up is over; adds their losses to
        ``losses`` and returns how many were made."""
        if self.step < self.r.init_steps:
            return 0
        for _ in range(self.r.updates_per_step):
            for k, v in self.agent.update(self.buffer.sample(self.r.batch_size, self.rng, self.device)).items():
                losses[k] = losses.get(k, 0.0) + float(v)
        return self.r.updates_per_step

    def end_episode(self, ep_return: float, ep_len: int) -> None:
        self.csv.writerow([self.step, "train", self.episode, f"{ep_return:.4f}", "", f"{self.wall():.1f}"])
        self.logger.log({"train/episode_return": ep_return, "train/episode_length": ep_len}, self.step)
        self.episode += 1
        self.obs, _ = self.env.reset(seed=train_seed(self.cfg.seed, self.episode))

    def run(self, progress: bool) -> None:
        """Train to ``rl.steps`` env steps; evaluations and checkpoints fall at episode ends."""
        from tqdm import tqdm

        r = self.r
        next_eval, next_ckpt, next_log = (_every(self.step, n) for n in (r.eval_every, r.checkpoint_every, r.log_every))
        losses: dict[str, float] = {}
        n_losses, ep_return, ep_len = 0, 0.0, 0
        self.agent.train()
        with tqdm(total=r.steps, initial=self.step, desc=f"sac {self.cfg.obs}", unit="step", disable=not progress,
                  dynamic_ncols=True) as bar:
            while self.step < r.steps:
                reward, done = self.env_step()
                ep_return, ep_len = ep_return + reward, ep_len + 1
                n_losses += self.update(losses)
                bar.update(1)
                if self.step >= next_log and n_losses:
                    self.logger.log({f"train/{k}": v / n_losses for k, v in losses.items()}, self.step)
                    losses, n_losses, next_log = {}, 0, next_log + r.log_every
                if not done:
                    continue
                self.end_episode(ep_return, ep_len)
                ep_return, ep_len = 0.0, 0
                if self.step >= next_eval or self.step >= r.steps:
                    bar.set_postfix_str(figures(self.evaluate()))
                    next_eval = _every(self.step, r.eval_every)
                if self.step >= next_ckpt or self.step >= r.steps:
                    self.checkpoint()
                    next_ckpt = _every(self.step, r.checkpoint_every)
        if not self.evals or self.evals[-1]["env_step"] != self.step:
            self.evaluate()
            self.checkpoint()

    def finish(self) -> dict[str, Any]:
        """Write ``metrics.json`` (which marks the run finished) and close everything."""
        final, cfg = self.evals[-1], self.cfg
        metrics = {
            "obs": cfg.obs, "env": cfg.env.name, "seed": cfg.seed, "env_steps": self.step,
            "eval_return_mean": final["return_mean"], "eval_return_std": final["return_std"],
            "eval_returns": final["returns"], "eval_episodes": self.r.eval_episodes,
            **{f"eval_{k}": final[k] for k in ("success_rate", "goal_distance_mean") if k in final},
            "baselines": self.baselines, "random_return": self.random_return, "state_return": self.r.state_return,
            "normalised_score": _normalised(final["return_mean"], self.random_return, self.r.state_return),
            "wall_s": self.wall(),
            "curve": [{k: v for k, v in e.items() if k != "returns"} for e in self.evals],
            "encoder": str(Path(cfg.encoder).resolve()) if cfg.encoder else None,
            "finetune_encoder": self.r.finetune_encoder, "device": str(self.device),
            "checkpoint": str(self.run_dir / AGENT_CHECKPOINT),
        }
        self.close_files_and_envs()
        self.logger.finish(metrics)
        return metrics

    def close_files_and_envs(self) -> None:
        """Release what the run holds open (the logger stays open when the run fails, so wandb
        records the failure)."""
        self.csv_file.close()
        self.env.close()
        self.eval_env.close()


def run_rl(cfg: RLRunConfig, run_dir: Path | str, overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train (or resume) an agent; returns the metrics also written to ``<run>/metrics.json``.

    ``overrides``: the command line's ``key=value`` overrides; a resumed run refuses those that
    would change its settings (None: every setting of ``cfg``)."""
    cfg, run_dir, state = resume_run(cfg, run_dir, overrides, RLRunConfig, "sac")
    if state is not None:
        print(f"[dsae] resuming {run_dir} from env step {state['step']} of {cfg.rl.steps}")
    trainer = RLTrainer(cfg, run_dir, state)
    try:
        trainer.run(cfg.progress)
    except BaseException:
        trainer.close_files_and_envs()
        raise
    return trainer.finish()
