"""A scene is configuration: one YAML file under ``configs/env/`` describes a MuJoCo scene.

A scene file names a gymnasium MuJoCo env (``gym_id: Reacher-v5``) or an MJCF file
(``xml: envs/assets/push_block.xml``), the bodies keypoints should find (``objects``), the
robot's joints, the camera framing, the episode length and visual-only changes. Python
(``make_env("reacher")``), Hydra (``env=reacher``) and gymnasium (``gym.make("dsae/reacher-v0")``)
read the same file, so they give the same frames.

:class:`SceneEnv` is the gymnasium env of a scene. ``render()`` gives uint8 frames (H, W, 3)
from a fixed free camera; every ``info`` (reset and step) holds:
  - ``positions``: {object name: world position (3,)} of the bodies in ``objects``;
  - ``pixels``: {object name: (u, v) pixel position (2,)} of the same, through the camera;
  - ``camera_matrix``: (3, 4) world->pixel matrix (see :mod:`envs.camera`);
  - ``joint_state``: the robot's joint positions then joint velocities (2J,);
  - with a task (``task_object``, ``task_goal``): ``goal_distance``, the (x, y) distance in metres
    from the object's centre to the goal's, and ``success``, that distance within ``goal_radius``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv

from envs.camera import camera_matrix, project_points

REPO = Path(__file__).resolve().parents[1]
SCENES_DIR = REPO / "configs" / "env"  # one YAML file per scene


@dataclass
class EnvConfig:
    """One scene. Each scene's values live in its file ``configs/env/<name>.yaml``; a file may leave
    out the fields whose default suits it."""

    name: str = ""  # the scene's name (its file's name)
    gym_id: Optional[str] = None  # a registered gymnasium MuJoCo env, e.g. Reacher-v5 ...
    xml: Optional[str] = None  # ... or an MJCF file (relative paths: from the repository root)
    objects: dict[str, str] = field(default_factory=dict)  # what keypoints should find: name -> MuJoCo body
    joints: list[str] = field(default_factory=list)  # the robot's joints (proprioception, exploration)
    max_episode_steps: int = 50  # steps per episode (then truncated)
    frame_skip: int = 5  # xml scenes: physics steps per env step
    image_size: int = 64  # square frames, pixels
    camera_distance: float = 1.0  # metres from camera_lookat
    camera_azimuth: float = 90.0  # degrees; 90 puts world +x to the right, +y up
    camera_elevation: float = -90.0  # degrees; -90 looks straight down
    camera_lookat: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # world point at the image centre
    camera_id: Optional[int] = None  # only null/-1: the free camera, whose world->pixel matrix is known
    shadows: bool = True  # off renders several times faster on a CPU when the model has a large shadow map
    marker_geoms: list[str] = field(default_factory=list)  # visual-only spheres that object_radius redraws
    object_radius: Optional[float] = None  # draw marker_geoms this big (m); null: as the model has them
    geom_rgba: dict[str, list[float]] = field(default_factory=dict)  # recolour geoms by name (visual only)
    randomize_arm: bool = False  # start each episode from a uniform draw over the robot's joint ranges
    task_object: Optional[str] = None  # a pushing task's object (a name in objects); null: no success metric
    task_goal: Optional[str] = None  # where task_object should end: the centre of this object (a name in objects)
    goal_radius: float = 0.05  # success: task_object's centre within this many metres of task_goal's (x, y)
    reward_weights: dict[str, float] = field(default_factory=dict)  # gym_id scenes: keyword -> weight of the env's reward terms, e.g. Pusher-v5's reward_control_weight

    def __post_init__(self) -> None:
        check(self)


class SceneError(ValueError):
    """A scene's settings cannot work (a bad value, a body or joint the model lacks, no such file)."""


VISUAL_FIELDS = ("image_size", "camera_distance", "camera_azimuth", "camera_elevation", "camera_lookat",
                 "camera_id", "shadows", "marker_geoms", "object_radius", "geom_rgba")
"""The settings that change what the camera sees: an encoder only fits frames rendered with its own."""

TASK_FIELDS = ("task_object", "task_goal", "goal_radius", "reward_weights")
"""The settings that only score the task (reward, success): frames and motions do not depend on them."""


def scene_names() -> list[str]:
    """The scenes that ship as files in ``configs/env/``."""
    return sorted(p.stem for p in SCENES_DIR.glob("*.yaml"))


def load_scene(scene: str | Path = "reacher", **overrides: Any) -> EnvConfig:
    """A scene's settings: its YAML file (a name in ``configs/env/`` or a path), then ``overrides``."""
    from omegaconf import OmegaConf

    path = Path(scene)
    if path.suffix not in (".yaml", ".yml"):
        path = SCENES_DIR / f"{scene}.yaml"
    if not path.exists():
        raise SceneError(f"unknown scene {str(scene)!r}: no file {path}; the scenes are {scene_names()} "
                         "(or pass the path of a scene YAML file)")
    merged = OmegaConf.merge(OmegaConf.structured(EnvConfig), OmegaConf.load(path))
    return resolve_scene(OmegaConf.to_object(merged), **overrides)


def resolve_scene(scene: str | Path | EnvConfig, **overrides: Any) -> EnvConfig:
    """A scene's checked settings: a name or YAML path (read by :func:`load_scene`) or an
    ``EnvConfig``, with ``overrides`` applied."""
    if not isinstance(scene, EnvConfig):
        return load_scene(scene, **overrides)
    known = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown env setting(s) {unknown}; valid: {sorted(known)}")
    return check(replace(scene, **overrides))


def check(config: EnvConfig) -> EnvConfig:
    """Raise SceneError naming the setting when a scene's settings cannot work; else return them."""
    if not config.name:
        raise SceneError("env.name is empty: give the scene a name (its file's name)")
    if (config.gym_id is None) == (config.xml is None):
        raise SceneError(f"scene {config.name!r}: give exactly one of env.gym_id (a gymnasium MuJoCo env) "
                         "and env.xml (an MJCF file)")
    if not config.objects:
        raise SceneError(f"scene {config.name!r}: env.objects is empty: name the bodies keypoints should find")
    if not config.joints:
        raise SceneError(f"scene {config.name!r}: env.joints is empty: name the robot's joints")
    if not isinstance(config.image_size, int) or config.image_size < 8:
        raise SceneError(f"env.image_size must be an integer >= 8 pixels, got {config.image_size!r}")
    if config.max_episode_steps < 2 or config.frame_skip < 1:
        raise SceneError(f"env.max_episode_steps must be >= 2 and env.frame_skip >= 1, got "
                         f"{config.max_episode_steps} and {config.frame_skip}")
    if not config.camera_distance > 0:
        raise SceneError(f"env.camera_distance must be > 0 metres, got {config.camera_distance}")
    if len(config.camera_lookat) != 3:
        raise SceneError(f"env.camera_lookat must be 3 numbers (x, y, z), got {config.camera_lookat}")
    if config.object_radius is not None and not config.object_radius > 0:
        raise SceneError(f"env.object_radius must be > 0 metres or null, got {config.object_radius}")
    for geom, rgba in config.geom_rgba.items():
        if len(rgba) != 4 or not all(0.0 <= float(c) <= 1.0 for c in rgba):
            raise SceneError(f"env.geom_rgba.{geom} must be 4 numbers in [0, 1] (r, g, b, a), got {list(rgba)}")
    if (config.task_object is None) != (config.task_goal is None):
        raise SceneError(f"scene {config.name!r}: give both env.task_object and env.task_goal (or neither)")
    for key in ("task_object", "task_goal"):
        if getattr(config, key) is not None and getattr(config, key) not in config.objects:
            raise SceneError(f"env.{key}={getattr(config, key)!r} is not one of env.objects {sorted(config.objects)}")
    if not config.goal_radius > 0:
        raise SceneError(f"env.goal_radius must be > 0 metres, got {config.goal_radius}")
    if config.reward_weights and config.gym_id is None:
        raise SceneError(f"scene {config.name!r}: env.reward_weights only applies to env.gym_id scenes (an MJCF "
                         "scene's reward is 0)")
    for key, weight in config.reward_weights.items():
        if not key.endswith("_weight") or not math.isfinite(float(weight)):
            raise SceneError(f"env.reward_weights.{key}={weight!r}: give a finite number for a keyword of "
                             f"{config.gym_id} that ends in _weight (e.g. reward_control_weight)")
    # MuJoCo aborts the whole process on a bad camera id, so no id ever reaches it.
    if config.camera_id not in (None, -1):
        raise SceneError(
            f"env.camera_id={config.camera_id} is not supported: only the free camera (null or -1) reports a "
            "camera matrix. Use env.camera_id=null and frame the view with env.camera_distance, "
            "env.camera_lookat, env.camera_azimuth and env.camera_elevation.")
    return config


class MJCFEnv(MujocoEnv):
    """A MuJoCo model from an MJCF file, as a gymnasium env with no task.

    Actions drive the model's actuators (their ``ctrlrange``); the observation is qpos then qvel;
    the reward is 0. Each reset puts every limited joint outside the robot (an object's slide
    joints, a target's) at a uniform draw over its range: the model declares where things may be.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, xml: str, frame_skip: int, robot_joints: list[str], **kwargs: Any):
        path = Path(xml) if Path(xml).is_absolute() else REPO / xml
        if not path.exists():
            raise SceneError(f"env.xml={xml}: no MJCF file at {path}")
        super().__init__(str(path), frame_skip, observation_space=None, **kwargs)
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / self.dt))}
        size = self.model.nq + self.model.nv
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), dtype=np.float64)
        import mujoco

        one_dof = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
        self._placed = [j for j in range(self.model.njnt)
                        if self.model.jnt_limited[j] and int(self.model.jnt_type[j]) in one_dof
                        and self.model.joint(j).name not in robot_joints]

    def _get_obs(self) -> np.ndarray:
        return np.concatenate([self.data.qpos, self.data.qvel])

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        return self._get_obs(), 0.0, False, False, {}

    def reset_model(self) -> np.ndarray:
        qpos = self.init_qpos.copy()
        for j in self._placed:
            low, high = self.model.jnt_range[j]
            qpos[self.model.jnt_qposadr[j]] = self.np_random.uniform(low, high)
        self.set_state(qpos, self.init_qvel)
        return self._get_obs()


def _mujoco_env(config: EnvConfig, render_mode: str) -> gym.Env:
    """The scene's MuJoCo env itself (no gymnasium wrappers)."""
    kwargs = dict(render_mode=render_mode, width=config.image_size, height=config.image_size,
                  default_camera_config={"distance": config.camera_distance, "azimuth": config.camera_azimuth,
                                         "elevation": config.camera_elevation,
                                         "lookat": np.array(config.camera_lookat, dtype=np.float64)})
    if config.xml is not None:
        return MJCFEnv(config.xml, config.frame_skip, list(config.joints), **kwargs)
    try:
        spec = gym.spec(config.gym_id)
    except gym.error.Error as err:
        raise SceneError(f"env.gym_id={config.gym_id!r} is not a registered gymnasium env ({err})") from err
    try:
        env = gym.envs.registration.load_env_creator(spec.entry_point)(**{**spec.kwargs, **config.reward_weights,
                                                                          **kwargs})
    except TypeError as err:
        if not config.reward_weights:
            raise
        raise SceneError(f"env.reward_weights {sorted(config.reward_weights)}: {config.gym_id} does not take "
                         f"one of these keywords ({err})") from err
    if not isinstance(env, MujocoEnv):
        env.close()
        raise SceneError(f"env.gym_id={config.gym_id!r} is not a MuJoCo env")
    return env


def _lookup(model, kind, name: str, what: str, scene: str) -> int:
    import mujoco

    index = mujoco.mj_name2id(model, kind, name)
    if index < 0:
        count = {mujoco.mjtObj.mjOBJ_BODY: model.nbody, mujoco.mjtObj.mjOBJ_JOINT: model.njnt,
                 mujoco.mjtObj.mjOBJ_GEOM: model.ngeom}[kind]
        names = sorted(n for n in (mujoco.mj_id2name(model, kind, i) for i in range(count)) if n)
        raise SceneError(f"scene {scene!r}: {what} {name!r} is not in the model; its names: {names}")
    return index


class SceneEnv(gym.Env):
    """The gymnasium env of a scene: its MuJoCo env, a fixed camera, and ground truth in ``info``.

    ``SceneEnv("reacher", image_size=96)`` or ``SceneEnv(EnvConfig(...))``; ``gym.make("dsae/<scene>-v0")``
    builds the same. Invalid settings raise SceneError before MuJoCo sees them.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scene: str | EnvConfig = "reacher", render_mode: Optional[str] = "rgb_array", **overrides: Any):
        import mujoco

        if render_mode != "rgb_array":
            raise SceneError(f"render_mode={render_mode!r}: scenes render camera frames, 'rgb_array' only")
        self.config = config = resolve_scene(scene, **overrides)
        self.render_mode = render_mode
        self.sim = sim = _mujoco_env(config, render_mode)
        model = sim.model
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1.0 / sim.dt))}
        self.action_space, self.observation_space = sim.action_space, sim.observation_space
        body, joint, geom = mujoco.mjtObj.mjOBJ_BODY, mujoco.mjtObj.mjOBJ_JOINT, mujoco.mjtObj.mjOBJ_GEOM
        try:
            self.object_bodies = {o: _lookup(model, body, b, "body", config.name) for o, b in config.objects.items()}
            self.joint_ids = np.array([_lookup(model, joint, j, "joint", config.name) for j in config.joints])
            for name in config.joints:
                j = model.joint(name).id
                if int(model.jnt_type[j]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                    raise SceneError(f"scene {config.name!r}: robot joint {name!r} must be a hinge or a slide")
                if int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE) and not model.jnt_limited[j]:
                    raise SceneError(f"scene {config.name!r}: slide joint {name!r} needs a range in the model")
            if not config.shadows:
                model.light_castshadow[:] = 0
                model.vis.quality.shadowsize = 0
            for name, rgba in config.geom_rgba.items():
                model.geom_rgba[_lookup(model, geom, name, "env.geom_rgba: geom", config.name)] = rgba
            for name in config.marker_geoms if config.object_radius is not None else ():
                g = _lookup(model, geom, name, "env.marker_geoms: geom", config.name)
                # Visual only: marker geoms never collide, and masses were fixed at compile time.
                model.geom_size[g, 0] = model.geom_rbound[g] = config.object_radius
        except ValueError:
            sim.close()
            raise
        limited = model.jnt_limited[self.joint_ids].astype(bool)
        self.joint_ranges = np.where(limited[:, None], model.jnt_range[self.joint_ids], [-math.pi, math.pi])  # (J, 2)
        # Where the robot's joints (J,) sit in MuJoCo's qpos and qvel; object_bodies: {object: body id}.
        self.joint_qpos, self.joint_qvel = model.jnt_qposadr[self.joint_ids], model.jnt_dofadr[self.joint_ids]
        self.camera_matrix = camera_matrix(
            np.array(config.camera_lookat, dtype=np.float64), config.camera_distance, config.camera_azimuth,
            config.camera_elevation, float(model.vis.global_.fovy), config.image_size, config.image_size)
        self._steps = 0
        self._checked_render = False

    @property
    def model(self):
        return self.sim.model

    @property
    def data(self):
        return self.sim.data

    @property
    def object_names(self) -> list[str]:
        return list(self.config.objects)

    def joint_state(self) -> np.ndarray:
        """The robot's joint positions then velocities, float64 (2J,) (datasets store this)."""
        return np.concatenate([self.data.qpos[self.joint_qpos], self.data.qvel[self.joint_qvel]])

    def joint_features(self) -> np.ndarray:
        """What a policy knows of the robot: cos and sin of its joint positions, then its joint
        velocities, float32 (3J,); nothing about the task (no object or target state)."""
        q, dq = self.data.qpos[self.joint_qpos], self.data.qvel[self.joint_qvel]
        return np.concatenate([np.cos(q), np.sin(q), dq]).astype(np.float32)

    def state_observation(self) -> np.ndarray:
        """The MuJoCo env's own observation vector now (the one ``step`` returns): privileged state
        (Pusher's holds the puck and goal positions) that ``obs=state`` agents see."""
        return self.sim._get_obs()

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        positions = {o: self.data.xpos[b].copy() for o, b in self.object_bodies.items()}
        task, c = {}, self.config
        if c.task_object is not None:
            distance = float(np.linalg.norm(positions[c.task_object][:2] - positions[c.task_goal][:2]))
            task = {"goal_distance": distance, "success": distance <= c.goal_radius}
        return {**info, **task, "positions": positions,
                "pixels": {o: project_points(self.camera_matrix, p) for o, p in positions.items()},
                "camera_matrix": self.camera_matrix.copy(), "joint_state": self.joint_state()}

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        obs, info = self.sim.reset(seed=seed, options=options)
        if self.config.randomize_arm:
            qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
            qpos[self.joint_qpos] = self.sim.np_random.uniform(self.joint_ranges[:, 0], self.joint_ranges[:, 1])
            self.sim.set_state(qpos, qvel)
            obs = self.sim._get_obs()
        self._steps = 0
        return obs, self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.sim.step(action)
        self._steps += 1
        truncated = bool(truncated or self._steps >= self.config.max_episode_steps)
        return obs, reward, terminated, truncated, self._info(info)

    def render(self):
        if self._checked_render:
            return self.sim.render()
        try:
            frame = self.sim.render()
        except Exception as err:  # the GL backend failed to start
            raise RuntimeError(
                f"MuJoCo could not render with MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r} ({err}). "
                "Headless machines: MUJOCO_GL=egl (default here) or MUJOCO_GL=osmesa "
                "(install libosmesa6); with a display: MUJOCO_GL=glfw.") from err
        self._checked_render = True
        return frame

    def close(self):
        self.sim.close()


def env_id(name: str) -> str:
    """The gymnasium id of a scene: ``dsae/<name>-v0``."""
    return f"dsae/{name}-v0"


def register_scene(name: str) -> str:
    """Register ``dsae/<name>-v0`` with gymnasium (idempotent); returns the id."""
    if env_id(name) not in gym.registry:
        gym.register(env_id(name), entry_point="envs.scene:SceneEnv", kwargs={"scene": name},
                     disable_env_checker=True)
    return env_id(name)


def register_scenes() -> None:
    """Register every scene of ``configs/env/`` with gymnasium (idempotent)."""
    for name in scene_names():
        register_scene(name)


def make_env(scene: str | Path | EnvConfig = "reacher", **overrides: Any) -> SceneEnv:
    """A scene's env: ``make_env("reacher", image_size=96)``, ``make_env("my_scene.yaml")`` or
    ``make_env(EnvConfig(...))``. It carries a gymnasium spec, so it can be re-created from it."""
    config = resolve_scene(scene, **overrides)
    return gym.make(register_scene(config.name), scene=config).unwrapped
