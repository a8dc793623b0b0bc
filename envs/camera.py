"""The fixed camera: MuJoCo's free camera as a world->pixel matrix.

Conventions (docs/architecture.md): pixel coordinates are (u, v) = (column, row) with integers at
pixel centres, so a point projected to (u, v) lies inside pixel (round(v), round(u)).
``camera_matrix`` is the 3x4 matrix P with ``[u*w, v*w, w]^T = P @ [X, Y, Z, 1]^T`` for world
points (X, Y, Z).
"""

from __future__ import annotations

import math

import numpy as np


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
