"""A small NumPy reference of the classic spatial-softmax helpers, used as a test oracle.

Written for clarity, not speed: full coordinate grids, float64 throughout. Coordinates
follow docs/architecture.md: (x, y) with x along columns, y along rows, in [-1, 1], align_corners.
"""

from __future__ import annotations

import numpy as np


def _softmax(logits: np.ndarray, axis) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def spatial_softmax_2d(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """One map (H, W) -> its softmax over all H*W positions."""
    return _softmax(np.asarray(x) / temperature, axis=(0, 1))


def spatial_softmax_3d(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Maps (H, W, C) -> a softmax over H, W for each channel."""
    return _softmax(np.asarray(x) / temperature, axis=(0, 1))


def spatial_softmax_4d(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """A batch of NHWC maps (B, H, W, C) -> a softmax over H, W for each image and channel."""
    return _softmax(np.asarray(x) / temperature, axis=(1, 2))


def create_image_coordinates(height: int, width: int) -> np.ndarray:
    """(H, W, 2) grid whose [i, j] is (x_j, y_i) = (-1 + 2j/(W-1), -1 + 2i/(H-1))."""
    xs = np.linspace(-1.0, 1.0, width) if width > 1 else np.zeros(1)
    ys = np.linspace(-1.0, 1.0, height) if height > 1 else np.zeros(1)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([grid_x, grid_y], axis=-1)


def spatial_soft_argmax(softmax: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Expected coordinates: softmax (B, H, W, C) and a grid (H, W, D) -> (B, C, D)."""
    return np.einsum("bhwc,hwd->bcd", np.asarray(softmax, dtype=np.float64), np.asarray(coordinates, dtype=np.float64))
