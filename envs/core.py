"""Env construction, the top-down camera, its world->pixel matrix, and ground truth.

Conventions (DESIGN.md): frames are uint8 (H, W, 3), row 0 at the top. Pixel coordinates
are (u, v) = (column, row) with integers at pixel centres, so a point projected to (u, v)
lies inside pixel (round(v), round(u)). ``camera_matrix`` is the 3x4 matrix P with
``[u*w, v*w, w]^T = P @ [X, Y, Z, 1]^T`` for world points (X, Y, Z).

Every ``info`` (reset and step) holds:
  - ``positions``: {object name: world position (3,)} for the things a keypoint should find;
  - ``pixels``: {object name: (u, v) pixel position (2,)} of the same, through the camera;
  - ``camera_matrix``: (3, 4) world->pixel matrix of the rendering camera;
  - ``proprio``: the arm's joint angles then joint velocities (2 * n_joints,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import gymnasium as gym
import numpy as np


@dataclass
class EnvSpec:
    """What the package knows about one supported env."""

    gym_id: str
    objects: dict[str, str]  # object name -> MuJoCo body name
    arm_joints: int  # the first n joints of qpos/qvel are the robot's
    lookat: tuple[float, float, float]
    distance: float
    marker_geoms: tuple[str, ...] = ()  # visual-only spheres that object_radius may enlarge
    shadows: bool = True


ENV_SPECS: dict[str, EnvSpec] = {
    "reacher": EnvSpec(
        gym_id="Reacher-v5",
        objects={"fingertip": "fingertip", "target": "target"},
        arm_joints=2,
        lookat=(0.0, 0.0, 0.0),
        distance=0.58,
        marker_geoms=("fingertip", "target"),
    ),
    "pusher": EnvSpec(
        gym_id="Pusher-v5",
        objects={"fingertip": "tips_arm", "object": "object", "goal": "goal"},
        arm_joints=7,
        lookat=(0.45, -0.25, -0.3),
        distance=1.6,
        shadows=False,
    ),
}


@dataclass
class EnvConfig:
    """Settings of one env. ``None`` means: the env's own default (see ENV_SPECS)."""

    name: str = "reacher"
    image_size: int = 64  # square frames, pixels
    camera_distance: Optional[float] = None  # metres from lookat; None: the spec's framing
    camera_azimuth: float = 90.0  # degrees; 90 puts world +x to the right, +y up
    camera_elevation: float = -90.0  # degrees; -90 looks straight down
    camera_lookat: Optional[list[float]] = None  # world point at the image centre
    camera_id: Optional[int] = None  # only null/-1 (the free camera, which has a known matrix)
    shadows: Optional[bool] = None  # None: the spec's choice (pusher: off, for speed)
    object_radius: Optional[float] = None  # draw the marker spheres this big (m); None: stock
    geom_rgba: dict[str, list[float]] = field(default_factory=dict)  # recolour geoms by name (visual only)
    randomize_arm: bool = False  # reset the arm's joints uniformly over their range
    max_episode_steps: Optional[int] = None  # None: the gymnasium default (50 for reacher)


def camera_matrix(
    lookat: np.ndarray,
    distance: float,
    azimuth: float,
    elevation: float,
    fovy: float,
    width: int,
    height: int,
) -> np.ndarray:
    """World->pixel matrix (3, 4) of MuJoCo's free camera (mjvCamera) with these settings.

    Follows MuJoCo's free-camera geometry: forward = (cos e cos a, cos e sin a, sin e),
    up = (-sin e cos a, -sin e sin a, cos e), position = lookat - distance * forward, and a
    vertical field of view ``fovy`` (degrees) with square pixels.
    """
    a, e = math.radians(azimuth), math.radians(elevation)
    forward = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    up = np.array([-math.sin(e) * math.cos(a), -math.sin(e) * math.sin(a), math.cos(e)])
    right = np.cross(forward, up)
    position = np.asarray(lookat, dtype=np.float64) - distance * forward
    rotation = np.stack([right, -up, forward])  # camera frame: x right, y down, z forward
    extrinsic = np.concatenate([rotation, -rotation @ position[:, None]], axis=1)
    focal = (height / 2.0) / math.tan(math.radians(fovy) / 2.0)
    intrinsic = np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]]
    )
    return intrinsic @ extrinsic


def project_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points (..., 3) -> pixel coordinates (..., 2) as (u, v) = (column, row)."""
    points = np.asarray(points, dtype=np.float64)
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    projected = homogeneous @ np.asarray(matrix).T
    return projected[..., :2] / projected[..., 2:3]


class GroundTruthEnv(gym.Wrapper):
    """Adds positions, pixels, the camera matrix and proprioception to every ``info``."""

    def __init__(self, env: gym.Env, spec: EnvSpec, config: EnvConfig, matrix: np.ndarray):
        super().__init__(env)
        self.spec_ = spec
        self.config = config
        self.camera_matrix = matrix
        model = env.unwrapped.model
        import mujoco

        self._body_ids = {}
        for obj, body in spec.objects.items():
            body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
            if body_id < 0:
                raise ValueError(f"env {config.name!r}: the model has no body {body!r}")
            self._body_ids[obj] = body_id
        ranges = []
        for j in range(spec.arm_joints):
            if model.jnt_limited[j]:
                ranges.append(tuple(model.jnt_range[j]))
            else:
                ranges.append((-math.pi, math.pi))
        self.joint_ranges = np.array(ranges, dtype=np.float64)  # (n_joints, 2)
        self._checked_render = False

    @property
    def object_names(self) -> list[str]:
        return list(self.spec_.objects)

    def proprio_features(self) -> np.ndarray:
        """The arm's joint angles as cos and sin, then its joint velocities: float32 (3 * n_joints,).

        What a robot knows about itself, and nothing about the task (no target or object state).
        """
        return proprio_features(self.env.unwrapped, self.spec_.arm_joints)

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        data = self.env.unwrapped.data
        positions = {obj: data.xpos[i].copy() for obj, i in self._body_ids.items()}
        info = dict(info)
        info["positions"] = positions
        info["pixels"] = {o: project_points(self.camera_matrix, p) for o, p in positions.items()}
        info["camera_matrix"] = self.camera_matrix.copy()
        n = self.spec_.arm_joints
        info["proprio"] = np.concatenate([data.qpos[:n], data.qvel[:n]]).astype(np.float64)
        return info

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.config.randomize_arm:
            base = self.env.unwrapped
            qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
            low, high = self.joint_ranges[:, 0], self.joint_ranges[:, 1]
            qpos[: len(low)] = base.np_random.uniform(low, high)
            base.set_state(qpos, qvel)
            obs = base._get_obs()
        return obs, self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._info(info)

    def render(self):
        if self._checked_render:
            return self.env.render()
        try:
            frame = self.env.render()
        except Exception as err:  # the GL backend failed to start
            raise RuntimeError(
                f"MuJoCo could not render with MUJOCO_GL={_gl_backend()!r} ({err}). "
                "Headless machines: MUJOCO_GL=egl (default here) or MUJOCO_GL=osmesa "
                "(install libosmesa6); with a display: MUJOCO_GL=glfw."
            ) from err
        if frame is None:
            raise RuntimeError("the env returned no frame: it must use render_mode='rgb_array'")
        self._checked_render = True
        return frame


def proprio_features(mujoco_env: Any, n_joints: int) -> np.ndarray:
    """cos and sin of the first ``n_joints`` joint angles, then their velocities (float32).

    ``mujoco_env`` is a gymnasium MuJoCo env (``env.unwrapped``); the first ``n_joints`` entries
    of its qpos/qvel must be the robot's hinge joints, as for the envs in ENV_SPECS.
    """
    qpos = mujoco_env.data.qpos[:n_joints]
    qvel = mujoco_env.data.qvel[:n_joints]
    return np.concatenate([np.cos(qpos), np.sin(qpos), qvel]).astype(np.float32)


def _gl_backend() -> str:
    import os

    return os.environ.get("MUJOCO_GL", "")


def _resolve(config: EnvConfig) -> tuple[EnvSpec, EnvConfig]:
    if config.name not in ENV_SPECS:
        raise ValueError(f"unknown env {config.name!r}; choose one of {sorted(ENV_SPECS)}")
    if not isinstance(config.image_size, int) or config.image_size < 8:
        raise ValueError(f"env.image_size must be an integer >= 8 pixels, got {config.image_size!r}")
    if config.camera_distance is not None and not config.camera_distance > 0:
        raise ValueError(f"env.camera_distance must be > 0 metres, got {config.camera_distance}")
    if config.camera_lookat is not None and len(config.camera_lookat) != 3:
        raise ValueError(f"env.camera_lookat must be 3 numbers (x, y, z), got {config.camera_lookat}")
    if config.object_radius is not None and not config.object_radius > 0:
        raise ValueError(f"env.object_radius must be > 0 metres or null, got {config.object_radius}")
    for geom, rgba in config.geom_rgba.items():
        if len(rgba) != 4 or not all(0.0 <= float(c) <= 1.0 for c in rgba):
            raise ValueError(f"env.geom_rgba.{geom} must be 4 numbers in [0, 1] (r, g, b, a), got {list(rgba)}")
    if config.max_episode_steps is not None and config.max_episode_steps < 1:
        raise ValueError(f"env.max_episode_steps must be >= 1, got {config.max_episode_steps}")
    # MuJoCo aborts the whole process on a bad camera id, so no id ever reaches it: the
    # free camera (null or -1) is the one whose world->pixel matrix the info reports.
    if config.camera_id not in (None, -1):
        raise ValueError(
            f"env.camera_id={config.camera_id} is not supported: only the free top-down camera "
            "(null or -1) reports a camera matrix, and the stock models have no camera. Use "
            "env.camera_id=null and frame the view with env.camera_distance, "
            "env.camera_lookat, env.camera_azimuth and env.camera_elevation."
        )
    return ENV_SPECS[config.name], config


def make_env(name: str | EnvConfig = "reacher", **overrides: Any) -> GroundTruthEnv:
    """Build a supported env with a fixed camera; see the module docstring for ``info``.

    ``make_env("reacher", image_size=96)`` or ``make_env(EnvConfig(...))``. Invalid settings
    raise ``ValueError`` before MuJoCo sees them.
    """
    if isinstance(name, EnvConfig):
        config = name
        if overrides:
            config = EnvConfig(**{**{f.name: getattr(name, f.name) for f in fields(EnvConfig)}, **overrides})
    else:
        known = {f.name for f in fields(EnvConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown env setting(s) {unknown}; valid: {sorted(known)}")
        config = EnvConfig(name=name, **overrides)
    spec, config = _resolve(config)

    size = config.image_size
    lookat = np.array(config.camera_lookat if config.camera_lookat is not None else spec.lookat, dtype=np.float64)
    distance = config.camera_distance if config.camera_distance is not None else spec.distance
    kwargs: dict[str, Any] = dict(
        render_mode="rgb_array", width=size, height=size,
        default_camera_config={
            "distance": distance, "azimuth": config.camera_azimuth,
            "elevation": config.camera_elevation, "lookat": lookat,
        },
    )
    if config.max_episode_steps is not None:
        kwargs["max_episode_steps"] = config.max_episode_steps
    env = gym.make(spec.gym_id, **kwargs)
    model = env.unwrapped.model

    shadows = spec.shadows if config.shadows is None else config.shadows
    if not shadows:
        model.light_castshadow[:] = 0
        model.vis.quality.shadowsize = 0
    import mujoco

    for geom, rgba in config.geom_rgba.items():
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
        if gid < 0:
            names = sorted(model.geom(i).name for i in range(model.ngeom) if model.geom(i).name)
            env.close()
            raise ValueError(f"env.geom_rgba: the {config.name} model has no geom {geom!r}; its geoms: {names}")
        model.geom_rgba[gid] = rgba
    if config.object_radius is not None:
        for geom in spec.marker_geoms:
            gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom)
            # Visual only: these geoms never collide, and mass was fixed at compile time.
            model.geom_size[gid, 0] = config.object_radius
            model.geom_rbound[gid] = config.object_radius

    matrix = camera_matrix(
        lookat, distance, config.camera_azimuth, config.camera_elevation,
        float(model.vis.global_.fovy), size, size,
    )
    return GroundTruthEnv(env, spec, config, matrix)
