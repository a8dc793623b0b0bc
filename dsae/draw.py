"""Images for people: keypoints and their tracks drawn on frames, heatmaps, reconstructions.

Keypoints arrive in the docs/architecture.md convention (normalised (x, y) in [-1, 1]) and are drawn
at pixel (column, row) = :func:`dsae.spatial_softmax.to_pixels`, scaled with the frame.
Colours are fixed per keypoint index, so keypoint k has the same colour everywhere.
Drawing keys: a raw keypoint is a filled dot with a thin trail; a Kalman-filtered one is
a ring with a thicker trail; pruned (not present) keypoints are drawn dimmed; a white
cross marks each ground-truth object position.
"""

from __future__ import annotations

import colorsys
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from dsae._torchvision import make_grid
from dsae.spatial_softmax import to_pixels


def keypoint_colors(k: int) -> list[tuple[int, int, int]]:
    """K distinct, fixed RGB colours (evenly spaced hues)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(k, 1), 0.9, 1.0)) for i in range(k)]


def _dim(color: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(int(0.35 * c + 0.65 * 110) for c in color)


def _scaled_pixels(keypoints: np.ndarray, h: int, w: int, scale: int) -> np.ndarray:
    """Normalised (..., 2) -> (column, row) in a frame enlarged ``scale`` times (nearest):
    pixel centre c of the small frame is at c * scale + (scale - 1) / 2 in the big one."""
    px = to_pixels(torch.as_tensor(np.asarray(keypoints), dtype=torch.float32), h, w).numpy()
    return px * scale + (scale - 1) / 2.0


def enlarge(frame: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (H*scale, W*scale, 3), nearest neighbour."""
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


def draw_tracks(frame: np.ndarray, raw: np.ndarray, filtered: Optional[np.ndarray] = None,
                keep: Optional[np.ndarray] = None, truth: Optional[Sequence[np.ndarray]] = None,
                scale: int = 4, radius: int = 2) -> np.ndarray:
    """Draw keypoint tracks on a frame.

    frame: uint8 (H, W, 3). raw / filtered: normalised keypoint histories (T, K, 2), the
    current position last (T = 1: no trail). keep: bool (K,), False draws a keypoint dimmed.
    truth: ground-truth pixel positions (u, v) in the small frame. Returns uint8 (H*s, W*s, 3).
    """
    h, w = frame.shape[:2]
    image = Image.fromarray(enlarge(frame, scale))
    draw = ImageDraw.Draw(image)
    k = raw.shape[1]
    colors = keypoint_colors(k)
    keep = np.ones(k, dtype=bool) if keep is None else np.asarray(keep)
    raw_px = _scaled_pixels(raw, h, w, scale)
    filt_px = _scaled_pixels(filtered, h, w, scale) if filtered is not None else None
    for i in range(k):
        color = colors[i] if keep[i] else _dim(colors[i])
        if len(raw_px) > 1:
            draw.line([tuple(p) for p in raw_px[:, i]], fill=color, width=1)
        x, y = raw_px[-1, i]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
        if filt_px is not None:
            if len(filt_px) > 1:
                draw.line([tuple(p) for p in filt_px[:, i]], fill=color, width=2)
            x, y = filt_px[-1, i]
            r = radius + 2
            draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=1)
    for u, v in truth if truth is not None else []:
        x, y = u * scale + (scale - 1) / 2.0, v * scale + (scale - 1) / 2.0
        arm = 2 * radius + 1
        draw.line([(x - arm, y), (x + arm, y)], fill=(255, 255, 255), width=1)
        draw.line([(x, y - arm), (x, y + arm)], fill=(255, 255, 255), width=1)
    return np.asarray(image)


def overlay_keypoints(frames: np.ndarray | torch.Tensor, keypoints: torch.Tensor, scale: int = 4,
                      radius: int = 2) -> torch.Tensor:
    """Each frame with its keypoints. frames uint8 (B, H, W, 3), keypoints (B, K, 2) normalised.
    Returns uint8 (B, 3, H*scale, W*scale)."""
    frames = np.asarray(torch.as_tensor(frames).cpu())
    kp = keypoints.detach().float().cpu().numpy()
    drawn = [draw_tracks(f, kp[i][None], scale=scale, radius=radius) for i, f in enumerate(frames)]
    return torch.from_numpy(np.stack(drawn)).permute(0, 3, 1, 2)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> uint8 RGB on a black-red-yellow-white ramp (..., 3)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    rgb = np.concatenate([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def heatmap_grid(attention: np.ndarray | torch.Tensor, ncols: int, cell: int, pad: int = 2) -> np.ndarray:
    """Per-keypoint attention maps (K, h, w), each scaled to [0, 1], in a grid of ``cell``-pixel
    tiles with a thin border in the keypoint's colour. Returns uint8 (rows*(cell+2p), ncols*(cell+2p), 3)."""
    att = torch.as_tensor(attention).detach().float().cpu()
    k = att.shape[0]
    lo = att.flatten(1).amin(1).view(k, 1, 1)
    hi = att.flatten(1).amax(1).view(k, 1, 1)
    scaled = ((att - lo) / (hi - lo).clamp_min(1e-12)).unsqueeze(1)
    tiles = F.interpolate(scaled, size=(cell, cell), mode="nearest").squeeze(1).numpy()
    rows = -(-k // ncols)
    size = cell + 2 * pad
    out = np.zeros((rows * size, ncols * size, 3), dtype=np.uint8)
    for i, (tile, color) in enumerate(zip(tiles, keypoint_colors(k))):
        r, c = divmod(i, ncols)
        out[r * size:(r + 1) * size, c * size:(c + 1) * size] = color
        out[r * size + pad:r * size + pad + cell, c * size + pad:c * size + pad + cell] = heat_colors(tile)
    return out


def _rgb(images: torch.Tensor, size: int) -> torch.Tensor:
    """Grayscale (B, h, w) or colour (B, 3, h, w) images in [0, 1] -> float (B, 3, size, size),
    nearest-neighbour resized."""
    x = torch.as_tensor(images).detach().float().cpu().clamp(0, 1)
    x = x if x.dim() == 4 else x[:, None].expand(-1, 3, -1, -1)
    return F.interpolate(x, size=(size, size), mode="nearest")


def recon_image(image: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """One reconstruction, grayscale (h, w) or colour (3, h, w), in [0, 1] -> uint8 (size, size, 3)."""
    x = _rgb(torch.as_tensor(image)[None], size)[0]
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def reconstruction_panel(target: torch.Tensor, recon: torch.Tensor, size: int) -> np.ndarray:
    """Targets and reconstructions, grayscale (B, h, w) or colour (B, 3, h, w), in [0, 1] -> a uint8
    (2*size, B*size, 3) panel: targets on the top row, reconstructions below, each enlarged to ``size``."""
    both = _rgb(torch.cat([target, recon]), size)
    grid = make_grid(both, nrow=target.shape[0], padding=0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid_image(images: torch.Tensor, nrow: int) -> np.ndarray:
    """uint8 (B, 3, H, W) -> one uint8 (H', W', 3) grid with 2-pixel gaps."""
    return make_grid(images, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
