"""Gymnasium wrappers that turn a rendered env into what a policy sees.

``KeypointObservation(env, encoder)`` is the one-line way to reuse a trained encoder in any
gymnasium RL code: each step it renders the env's camera, runs the frozen encoder (no grad, on
the encoder's device), optionally prunes keypoints by presence and smooths them with a Kalman
filter, and returns a flat float32 ``Box``::

    [x_1, y_1, ..., x_K, y_K,  cos q_1..q_J,  sin q_1..q_J,  dq_1..dq_J]

keypoints in the docs/architecture.md normalised convention ([-1, 1], x right, y down), then the robot's
proprioception (its J joint angles as cos/sin and joint velocities). The env's own observation
is dropped: for the MuJoCo tasks it holds privileged state (Reacher's target position and
fingertip-to-target vector) that a robot with a camera does not have.

``KeypointObservationVector(vector_env, encoder)`` does the same for a whole gymnasium vector
env with one encoder call per step for all its sub-envs. ``PixelObservation(env)`` returns the
camera frame and the same proprioception as a ``Dict`` space, for agents that learn their own
vision.

Pruned keypoints (``top_k`` / ``presence_threshold``) keep their slot in the observation so the
layout never changes: with ``kalman=True`` the filter's prediction fills it, otherwise the
keypoint's last kept position is held (the image centre before it was ever kept).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
import torch

from dsae.errors import ConfigError
from dsae.tracking import KeypointKalmanFilter, prune


def _scene(env: gym.Env):
    """The scene under an env's wrappers (it gives proprioception and the camera settings)."""
    from envs import SceneEnv

    scene = env.unwrapped
    if not isinstance(scene, SceneEnv):
        raise ValueError(f"{type(scene).__name__} is not a scene env: wrap an env made by envs.make_env "
                         "(or gym.make('dsae/<scene>-v0')), which reports the robot's proprioception")
    return scene


def check_same_camera(scene_config, encoder: torch.nn.Module) -> None:
    """Raise ValueError when an env renders differently from the frames the encoder was trained on."""
    from envs import VISUAL_FIELDS

    trained = getattr(encoder, "env_config", None)
    if trained is None:
        return  # an encoder without a recorded scene (built by hand): nothing to compare
    if trained.name != scene_config.name:
        raise ConfigError(f"the encoder was trained on scene {trained.name!r}, the env is {scene_config.name!r}")
    differ = [f"{k}: env {getattr(scene_config, k)!r}, encoder {getattr(trained, k)!r}"
              for k in VISUAL_FIELDS if getattr(scene_config, k) != getattr(trained, k)]
    if differ:
        raise ConfigError("the env renders differently from the encoder's training frames (" + "; ".join(differ)
                         + "): make the env with envs.make_env(encoder.env_config)")


class _KeypointPipeline:
    """Frames (B, H, W, 3) uint8 -> keypoint features (B, 2 * K'), with pruning and filtering."""

    def __init__(self, encoder: torch.nn.Module, keypoints: Optional[Sequence[int]], top_k: Optional[int],
                 presence_threshold: Optional[float], kalman: bool, process_std: float, measurement_std: float):
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        k = int(getattr(encoder, "num_keypoints"))
        self.indices = list(range(k)) if keypoints is None else [int(i) for i in keypoints]
        if not self.indices or any(not 0 <= i < k for i in self.indices) or len(set(self.indices)) != len(self.indices):
            raise ValueError(f"keypoints must be distinct indices in [0, {k}), got {list(keypoints or [])}")
        if top_k is not None and not 1 <= top_k <= len(self.indices):
            raise ValueError(f"top_k must be in [1, {len(self.indices)}], got {top_k}")
        self.top_k, self.threshold = top_k, presence_threshold
        self.pruning = top_k is not None or presence_threshold is not None
        self.filter = KeypointKalmanFilter(process_std, measurement_std) if kalman else None
        self.held: Optional[torch.Tensor] = None  # last kept positions (B, K', 2), without a filter
        self.size = 2 * len(self.indices)

    def reset(self, mask: Optional[np.ndarray] = None) -> None:
        """Forget the tracks of all envs, or of those where ``mask`` (B,) is True."""
        if self.filter is not None:
            self.filter.reset(None if mask is None else torch.as_tensor(mask))
        if self.held is not None:
            if mask is None:
                self.held = None
            else:
                self.held[torch.as_tensor(mask)] = 0.0

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        images = torch.as_tensor(np.ascontiguousarray(frames))
        if self.pruning:
            out = self.encoder(images, return_presence=True)
            keypoints, presence = out.keypoints, out.presence
        else:
            keypoints, presence = self.encoder(images), None
        keypoints = keypoints[:, self.indices].float().cpu()
        keep = torch.ones(keypoints.shape[:2], dtype=torch.bool)
        if presence is not None:
            keep = prune(presence[:, self.indices].float().cpu(), self.top_k, self.threshold)
        if self.filter is not None:
            keypoints = self.filter.update(keypoints, keep).clamp(-1.0, 1.0)
        elif self.pruning:
            if self.held is None or self.held.shape != keypoints.shape:
                self.held = torch.zeros_like(keypoints)
            self.held = torch.where(keep[..., None], keypoints, self.held)
            keypoints = self.held.clone()
        return keypoints.flatten(1).numpy().astype(np.float32)


def _observation_space(n_keypoint_values: int, n_joints: int) -> gym.spaces.Box:
    low = np.concatenate([-np.ones(n_keypoint_values + 2 * n_joints), np.full(n_joints, -np.inf)])
    return gym.spaces.Box(low=low.astype(np.float32), high=-low.astype(np.float32), dtype=np.float32)


def _check_renders(env: gym.Env) -> None:
    if env.render_mode != "rgb_array":
        raise ValueError(
            f"the wrapped env renders with render_mode={env.render_mode!r}; the encoder needs camera "
            "frames: make it with render_mode='rgb_array' (envs.make_env does)")


class KeypointObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observation = the frozen encoder's keypoints on the env's rendered frame + proprioception.

    Args:
        env: a scene env rendering as the encoder's training frames were rendered:
            ``envs.make_env(encoder.env_config)`` (anything else is refused, naming the difference).
        encoder: a :class:`dsae.PretrainedEncoder` (``dsae.load_encoder(path)``); it is frozen.
        keypoints: the keypoint indices to keep (default all), in this order.
        top_k, presence_threshold: per-frame presence pruning (see :func:`dsae.tracking.prune`).
        kalman: smooth each keypoint with a constant-velocity Kalman filter, reset every episode.
    """

    def __init__(self, env: gym.Env, encoder: torch.nn.Module, *, keypoints: Optional[Sequence[int]] = None,
                 top_k: Optional[int] = None, presence_threshold: Optional[float] = None, kalman: bool = False,
                 process_std: float = 0.05, measurement_std: float = 0.03):
        gym.utils.RecordConstructorArgs.__init__(
            self, encoder=encoder, keypoints=keypoints, top_k=top_k, presence_threshold=presence_threshold,
            kalman=kalman, process_std=process_std, measurement_std=measurement_std)
        gym.ObservationWrapper.__init__(self, env)
        _check_renders(env)
        self.scene = _scene(env)
        check_same_camera(self.scene.config, encoder)
        self.pipeline = _KeypointPipeline(encoder, keypoints, top_k, presence_threshold, kalman,
                                          process_std, measurement_std)
        self.observation_space = _observation_space(self.pipeline.size, len(self.scene.config.joints))

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        self.pipeline.reset()
        return super().reset(seed=seed, options=options)

    def observation(self, observation: Any) -> np.ndarray:
        frame = self.env.render()
        keypoints = self.pipeline(frame[None])[0]
        return np.concatenate([keypoints, self.scene.joint_features()])


class KeypointObservationVector(gym.vector.VectorObservationWrapper):
    """:class:`KeypointObservation` for a gymnasium vector env, batched: one encoder call per step.

    The sub-envs must be scene envs (``envs.make_env``, ``gym.make_vec("dsae/<scene>-v0", ...)``);
    works with SyncVectorEnv and AsyncVectorEnv in the next-step and disabled autoreset modes
    (those VectorObservationWrapper supports).
    """

    def __init__(self, env: gym.vector.VectorEnv, encoder: torch.nn.Module, *,
                 keypoints: Optional[Sequence[int]] = None, top_k: Optional[int] = None,
                 presence_threshold: Optional[float] = None, kalman: bool = False,
                 process_std: float = 0.05, measurement_std: float = 0.03):
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError(f"the vector env renders with render_mode={env.render_mode!r}; it must be 'rgb_array'")
        self.pipeline = _KeypointPipeline(encoder, keypoints, top_k, presence_threshold, kalman,
                                          process_std, measurement_std)
        configs = env.get_attr("config")
        check_same_camera(configs[0], encoder)
        self.single_observation_space = _observation_space(self.pipeline.size, len(configs[0].joints))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self._next_step_reset = env.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.NEXT_STEP
        self._done = np.zeros(env.num_envs, dtype=bool)

    def reset(self, *, seed=None, options=None):
        self.pipeline.reset()
        self._done[:] = False
        return super().reset(seed=seed, options=options)

    def step(self, actions):
        if self._next_step_reset and self._done.any():
            self.pipeline.reset(self._done.copy())  # these sub-envs reset during this step
        obs, rewards, terminated, truncated, infos = super().step(actions)
        self._done = np.logical_or(terminated, truncated)
        return obs, rewards, terminated, truncated, infos

    def observations(self, observations: Any) -> np.ndarray:
        frames = np.stack(self.env.call("render"))
        joint_features = np.stack(self.env.call("joint_features")).astype(np.float32)
        return np.concatenate([self.pipeline(frames), joint_features], axis=1)


class PixelObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Observation = ``{"image": uint8 (H, W, 3) camera frame, "joint_features": cos/sin/velocities}``.

    For agents that learn their vision from scratch (``obs=pixels``) or fine-tune the DSAE encoder:
    the same camera and proprioception as :class:`KeypointObservation`, no privileged state.
    """

    def __init__(self, env: gym.Env):
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        _check_renders(env)
        self.scene = _scene(env)
        size = self.scene.config.image_size
        self.observation_space = gym.spaces.Dict({
            "image": gym.spaces.Box(0, 255, (size, size, 3), dtype=np.uint8),
            "joint_features": _observation_space(0, len(self.scene.config.joints)),
        })

    def observation(self, observation: Any) -> dict[str, np.ndarray]:
        return {"image": np.ascontiguousarray(self.env.render()),
                "joint_features": self.scene.joint_features()}
