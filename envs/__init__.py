"""MuJoCo environments that render a fixed top-down camera and report ground truth.

``make_env("reacher")`` returns a gymnasium env whose ``render()`` gives uint8 frames
(H, W, 3) from a fixed top-down camera, and whose ``info`` (at reset and every step)
carries the world positions of the tracked objects, the camera's world->pixel matrix and
the robot's proprioception. See :mod:`envs.core` for the details.

The headless OpenGL backend defaults to EGL here, before anything imports mujoco:
set ``MUJOCO_GL=osmesa`` (needs ``libosmesa6``) or ``MUJOCO_GL=glfw`` (needs a display)
to override it.
"""

import logging
import os

os.environ.setdefault("MUJOCO_GL", "egl")
# PyOpenGL logs an INFO line about an optional accelerator module on every import.
logging.getLogger("OpenGL.acceleratesupport").setLevel(logging.WARNING)

from envs.core import (  # noqa: E402
    ENV_SPECS,
    EnvConfig,
    EnvSpec,
    camera_matrix,
    make_env,
    project_points,
)

__all__ = ["ENV_SPECS", "EnvConfig", "EnvSpec", "camera_matrix", "make_env", "project_points"]
