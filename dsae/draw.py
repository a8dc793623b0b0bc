"""Images for people: keypoints drawn on frames, and reconstruction panels.

Keypoints arrive in the DESIGN.md convention (normalised (x, y) in [-1, 1]) and are drawn
at pixel (column, row) = :func:`dsae.spatial_softmax.to_pixels`. Colours are fixed per
keypoint index, so keypoint k has the same colour in every image and video.
"""

from __future__ import annotations

import colorsys

import numpy as np
import torch
import torch.nn.functional as F

from dsae._torchvision import draw_keypoints, make_grid
from dsae.spatial_softmax import to_pixels


def keypoint_colors(k: int) -> list[tuple[int, int, int]]:
    """K distinct, fixed RGB colours (evenly spaced hues)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(k, 1), 0.9, 1.0)) for i in range(k)]


def overlay_keypoints(frames: np.ndarray | torch.Tensor, keypoints: torch.Tensor, scale: int = 4,
                      radius: int = 2) -> torch.Tensor:
    """Draw each frame's keypoints. frames uint8 (B, H, W, 3), keypoints (B, K, 2) normalised.

    Frames are enlarged ``scale`` times (nearest) first. Returns uint8 (B, 3, H*scale, W*scale).
    """
    frames = torch.as_tensor(frames)
    b, h, w, _ = frames.shape
    images = frames.permute(0, 3, 1, 2)
    if scale != 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    # A point at pixel centre (c, r) of the small image lies at centre (c*s + (s-1)/2) of the big one.
    pixels = to_pixels(keypoints.detach().float().cpu(), h, w) * scale + (scale - 1) / 2.0
    colors = keypoint_colors(keypoints.shape[1])
    out = []
    for img, points in zip(images, pixels):
        for k, color in enumerate(colors):  # draw_keypoints takes one colour per call
            img = draw_keypoints(img, points[None, k:k + 1], colors=color, radius=radius)
        out.append(img)
    return torch.stack(out)


def reconstruction_panel(target: torch.Tensor, recon: torch.Tensor, size: int) -> np.ndarray:
    """Grayscale targets and reconstructions (B, h, w) in [0, 1] -> a uint8 (2*size, B*size, 3)
    panel: targets on the top row, reconstructions below, each enlarged to ``size``."""
    both = torch.cat([target, recon]).detach().float().cpu().clamp(0, 1)[:, None]
    both = F.interpolate(both, size=(size, size), mode="nearest").repeat(1, 3, 1, 1)
    grid = make_grid(both, nrow=target.shape[0], padding=0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid_image(images: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 (B, 3, H, W) -> one uint8 (H', W', 3) grid with 2-pixel gaps."""
    return make_grid(images, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
