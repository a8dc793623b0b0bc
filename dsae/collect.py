"""Data collection: an exploratory policy run in parallel envs, written as a dataset folder.

``collect(env_cfg, data_cfg)`` runs ``data_cfg.episodes`` episodes over
``data_cfg.workers`` processes (gymnasium's AsyncVectorEnv), a batch of one episode per
worker at a time, and writes each episode plus an updated manifest after every batch. Run
again with the same settings, it keeps the episodes already written and goes on from there.
Episode i is reset with seed ``data_cfg.seed + i``, so a dataset does not depend on the
number of workers or on where it was interrupted.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dsae.config import EXPLORATION_POLICIES, DataConfig
from dsae.data import (
    FORMAT_VERSION,
    DatasetError,
    episode_name,
    existing_episodes,
    read_manifest,
    save_episode,
    settings_digest,
    write_manifest,
)
from dsae.errors import ConfigError
from envs import TASK_FIELDS, EnvConfig


class Collector:
    """What every collecting policy shares: the env's action bounds, one random stream per env
    slot seeded per episode by ``reset(seeds)``, and Gaussian noise of ``noise`` half-ranges."""

    def __init__(self, env, noise: float = 0.2):
        self.low = np.asarray(env.action_space.low, dtype=np.float64)
        self.high = np.asarray(env.action_space.high, dtype=np.float64)
        self.half = (self.high - self.low) / 2
        self.noise = noise
        self.rngs: list[np.random.Generator] = []

    def reset(self, seeds: list[int]) -> None:
        self.rngs = [np.random.default_rng([s, 0xD5AE]) for s in seeds]

    def _noise(self) -> np.ndarray:
        """(N, A): one noise draw per env slot, in action units."""
        return self.noise * self.half * np.stack([r.standard_normal(len(self.low)) for r in self.rngs])


class ExplorationPolicy(Collector):
    """Covers the workspace of any actuated MuJoCo model, from what the model declares.

    Each actuator that drives one of the robot's joints steers it towards a random target
    within the joint's range, redrawn after a random hold of ``hold`` steps: a motor by PD
    control (torque ``gain * error - damping * velocity`` in units of half its ctrlrange), a
    position servo by commanding the target; Gaussian noise (``noise`` half-ranges) is added.
    Other actuators, and every actuator with ``kind="random"``, act uniformly over their
    ctrlrange. Each env slot has its own random stream, seeded per episode by ``reset(seeds)``.
    Batched: joint_state (N, 2J) -> actions (N, A).
    """

    def __init__(self, env, kind: str = "pd", gain: float = 3.0, damping: float = 0.15,
                 noise: float = 0.2, hold: tuple[int, int] = (4, 12)):
        import mujoco

        if kind not in EXPLORATION_POLICIES:
            raise ConfigError(f"data.policy must be one of {EXPLORATION_POLICIES}, got {kind!r}")
        scene = env.unwrapped
        model = scene.model
        super().__init__(env, noise)
        self.kind, self.ranges = kind, np.asarray(scene.joint_ranges, dtype=np.float64)  # (J, 2)
        robot = {int(j): i for i, j in enumerate(scene.joint_ids)}
        on_joint = model.actuator_trntype == int(mujoco.mjtTrn.mjTRN_JOINT)
        self.joint = np.array([robot.get(int(model.actuator_trnid[a, 0]), -1) if on_joint[a] else -1
                               for a in range(model.nu)])  # (A,): robot joint index, or -1
        self.servo = (model.actuator_biastype == int(mujoco.mjtBias.mjBIAS_AFFINE)) & (model.actuator_biasprm[:, 1] < 0)
        self.gain, self.damping, self.hold = gain, damping, hold

    def reset(self, seeds: list[int]) -> None:
        super().reset(seeds)
        self.targets = np.stack([self._target(r) for r in self.rngs])
        self.timers = np.array([self._hold(r) for r in self.rngs])

    def _target(self, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.ranges[:, 0], self.ranges[:, 1])

    def _hold(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.hold[0], self.hold[1], endpoint=True))

    def __call__(self, joint_state: np.ndarray, obs: Optional[np.ndarray] = None) -> np.ndarray:
        if len(self.rngs) != joint_state.shape[0]:
            raise RuntimeError(f"policy reset for {len(self.rngs)} envs, called with {joint_state.shape[0]}")
        uniform = np.stack([r.uniform(self.low, self.high) for r in self.rngs])
        if self.kind == "random":
            return uniform
        self.timers -= 1
        for k in np.flatnonzero(self.timers <= 0):
            self.targets[k] = self._target(self.rngs[k])
            self.timers[k] = self._hold(self.rngs[k])
        j = len(self.ranges)
        driven = self.joint >= 0
        index = np.where(driven, self.joint, 0)
        angle, velocity, target = joint_state[:, index], joint_state[:, j + index], self.targets[:, index]
        error = np.angle(np.exp(1j * (target - angle)))  # wrapped to (-pi, pi]
        pd = (self.high + self.low) / 2 + self.half * (self.gain * error - self.damping * velocity)
        action = np.where(self.servo, target, pd) + self._noise()
        return np.clip(np.where(driven, action, uniform), self.low, self.high)


class RunPolicy(Collector):
    """A trained state agent (a ``scripts/train_rl.py obs=state`` run of the same scene) as the
    collector: its deterministic action plus Gaussian noise of ``noise`` half-ranges, so the frames
    show the task being done (the arm reaching and moving the objects), as the paper's autoencoder
    was trained on its controllers' rollouts. Batched: observations (N, D) -> actions (N, A)."""

    def __init__(self, path: str, env, noise: float = 0.2):
        from dsae.rl.policy import Policy

        self.policy = Policy(path, device="cpu")
        if self.policy.kind != "sac" or self.policy.cfg.obs != "state":
            raise ConfigError(f"data.policy={path}: collecting needs a scripts/train_rl.py obs=state run "
                              "(an agent that acts on the scene's state), not this one")
        if self.policy.env_config.name != env.unwrapped.config.name:
            raise ConfigError(f"data.policy={path} was trained on env '{self.policy.env_config.name}', "
                              f"not '{env.unwrapped.config.name}'")
        super().__init__(env, noise)

    def __call__(self, joint_state: np.ndarray, obs: np.ndarray) -> np.ndarray:
        action = np.stack([self.policy.act(o) for o in obs]) + self._noise()
        return np.clip(action, self.low, self.high)


def make_policy(env, policy: str):
    """The collector that ``data.policy`` names: ExplorationPolicy (pd, random) or RunPolicy (a run)."""
    return ExplorationPolicy(env, kind=policy) if policy in EXPLORATION_POLICIES else RunPolicy(policy, env)


def _policy_name(policy: str) -> str:
    """An exploration's name, or a run folder spelt one way (relative to the working directory)
    however it was given, so that one run's dataset has one folder."""
    return policy if policy in EXPLORATION_POLICIES else os.path.relpath(Path(policy).resolve())


def dataset_settings(env_cfg: EnvConfig, data_cfg: DataConfig) -> dict:
    """The settings that determine a dataset's content (not where it lives or how fast)."""
    return {
        "env": {k: v for k, v in asdict(env_cfg).items() if k not in TASK_FIELDS},
        "policy": _policy_name(data_cfg.policy),
        "seed": data_cfg.seed,
        "episodes": data_cfg.episodes,
        "format": FORMAT_VERSION,
    }


def default_dataset_dir(env_cfg: EnvConfig, data_cfg: DataConfig, root: Path | str = "data") -> Path:
    """``data/<env>-<size>px-<12 hex of the settings>``: new settings give a new folder."""
    settings = dataset_settings(env_cfg, data_cfg)
    settings.pop("episodes")  # more episodes extend the same dataset
    return Path(root) / f"{env_cfg.name}-{env_cfg.image_size}px-{settings_digest(settings)}"


def _make_vector_env(env_cfg: EnvConfig, workers: int):
    import gymnasium as gym

    from envs import make_env

    fns: list[Callable] = [lambda: make_env(env_cfg) for _ in range(workers)]
    # Episodes have a fixed length and each batch is reset explicitly: no autoreset.
    mode = gym.vector.AutoresetMode.DISABLED
    if workers == 1:
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    # spawn, not fork: a forked child inherits the parent's OpenGL (EGL) state and hangs.
    return gym.vector.AsyncVectorEnv(fns, shared_memory=False, context="spawn", autoreset_mode=mode)


def collect(env_cfg: EnvConfig, data_cfg: DataConfig, root: Path | str | None = None,
            progress: bool = True) -> Path:
    """Collect (or finish collecting) a dataset; returns its folder."""
    from tqdm import tqdm

    from envs import make_env

    root = Path(root) if root is not None else (
        Path(data_cfg.dir) if data_cfg.dir else default_dataset_dir(env_cfg, data_cfg))
    settings = dataset_settings(env_cfg, data_cfg)
    manifest = read_manifest(root)
    if manifest is not None:
        old = {k: v for k, v in manifest.get("settings", {}).items() if k != "episodes"}
        new = {k: v for k, v in settings.items() if k != "episodes"}
        if old != new:
            raise DatasetError(
                f"the dataset at {root} was collected with other settings; set data.dir to a new "
                "folder (or leave it unset for an automatic one) rather than mixing them")
        if manifest.get("complete") and manifest["episodes"] >= data_cfg.episodes:
            return root
    probe = make_env(env_cfg)  # validates the settings in this process before any worker starts
    probe.reset(seed=data_cfg.seed)
    frame = probe.render()
    objects = probe.object_names
    policy = make_policy(probe, data_cfg.policy)
    probe.close()
    root.mkdir(parents=True, exist_ok=True)

    files = existing_episodes(root, manifest)
    todo = [i for i in range(data_cfg.episodes) if episode_name(i) not in files]
    base = {"settings": settings, "objects": objects, "image_size": int(frame.shape[0])}

    def save_manifest(complete: bool) -> None:
        write_manifest(root, {**base, "episodes": data_cfg.episodes, "files": dict(sorted(files.items())),
                              "complete": complete})

    if todo:
        workers = min(data_cfg.workers, len(todo))
        envs = _make_vector_env(env_cfg, workers)
        bar = tqdm(total=data_cfg.episodes, initial=data_cfg.episodes - len(todo), unit="ep",
                   desc=f"collect {env_cfg.name}", disable=not progress)
        try:
            for start in range(0, len(todo), workers):
                batch = todo[start:start + workers]
                for index, episode in zip(batch, _run_batch(envs, policy, batch, data_cfg.seed, objects)):
                    files[episode_name(index)] = save_episode(root, index, episode)
                save_manifest(complete=False)
                bar.update(len(batch))
        finally:
            bar.close()
            envs.close()
    save_manifest(complete=True)
    return root


def _run_batch(envs, policy: Collector, indices: list[int], seed: int,
               objects: list[str]) -> list[dict]:
    """Run one episode per index (a vector env may have more slots than indices)."""
    n = envs.num_envs
    seeds = [seed + i for i in indices] + [seed + indices[-1] + 1 + k for k in range(n - len(indices))]
    obs, info = envs.reset(seed=seeds)
    policy.reset(seeds)
    frames, actions, joint_state = [np.stack(envs.call("render"))], [], [info["joint_state"]]
    pos = {o: [info["positions"][o]] for o in objects}
    px = {o: [info["pixels"][o]] for o in objects}
    matrix = info["camera_matrix"][0]
    while True:
        action = policy(info["joint_state"], obs)
        obs, _, terminated, truncated, info = envs.step(action.astype(np.float32))
        if terminated.any():
            raise RuntimeError("an env terminated before its time limit; collection expects fixed-length episodes")
        frames.append(np.stack(envs.call("render")))
        actions.append(action)
        joint_state.append(info["joint_state"])
        for o in objects:
            pos[o].append(info["positions"][o])
            px[o].append(info["pixels"][o])
        if truncated.all():
            break
        if truncated.any():
            raise RuntimeError("envs in one batch reached their time limits at different steps")
    episodes = []
    for k in range(len(indices)):
        episode = {
            "frames": np.stack([f[k] for f in frames]).astype(np.uint8),
            "actions": np.stack([a[k] for a in actions]).astype(np.float32),
            "joint_state": np.stack([p[k] for p in joint_state]).astype(np.float32),
            "camera_matrix": np.asarray(matrix, dtype=np.float64),
        }
        for o in objects:
            episode[f"pos_{o}"] = np.stack([p[k] for p in pos[o]]).astype(np.float64)
            episode[f"px_{o}"] = np.stack([p[k] for p in px[o]]).astype(np.float64)
        episodes.append(episode)
    return episodes
