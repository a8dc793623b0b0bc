"""MuJoCo scenes that render a fixed camera and report ground truth.

A scene is a YAML file in ``configs/env/`` (see :mod:`envs.scene`): ``make_env("reacher")``,
Hydra's ``env=reacher`` and ``gym.make("dsae/reacher-v0")`` all build it from that file.
Importing this package registers every scene with gymnasium.

The headless OpenGL backend defaults to EGL here, before anything imports mujoco:
set ``MUJOCO_GL=osmesa`` (needs ``libosmesa6``) or ``MUJOCO_GL=glfw`` (needs a display)
to override it.
"""

import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")
# PyOpenGL logs an INFO line about an optional accelerator module on every import.
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)

from envs.camera import camera_matrix, project_points  # noqa: E402
from envs.scene import (  # noqa: E402
    TASK_FIELDS,
    VISUAL_FIELDS,
    EnvConfig,
    SceneEnv,
    SceneError,
    env_id,
    load_scene,
    make_env,
    register_scenes,
    scene_names,
)

register_scenes()

__all__ = ["TASK_FIELDS", "VISUAL_FIELDS", "EnvConfig", "SceneEnv", "SceneError", "camera_matrix", "env_id",
           "load_scene", "make_env", "project_points", "register_scenes", "scene_names"]
