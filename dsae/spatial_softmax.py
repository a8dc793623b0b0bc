"""The spatial soft-argmax bottleneck and its coordinate converters.

Convention (DESIGN.md): keypoints are (x, y), x along columns (left -> right), y along rows
(top -> bottom), normalised to [-1, 1] where -1 and +1 are the centres of the first and
last pixel (align_corners=True). Output shape (B, C, 2).

Per channel c: s_cij = softmax_(i,j)(a_cij / T) computed in float32 with the maximum
subtracted; f_c = (sum_ij s_cij x_j, sum_ij s_cij y_i). The expectation is taken over the
marginals (sum over rows, then over columns), so no (H, W) coordinate grid is built.
"""

from __future__ import annotations

import math
import torch
from torch import nn


def normalized_grid(size: int, device=None) -> torch.Tensor:
    """Coordinates of ``size`` pixel centres in [-1, 1] (align_corners=True), float32."""
    if size == 1:
        return torch.zeros(1, device=device)
    return torch.linspace(-1.0, 1.0, size, device=device)


def spatial_soft_argmax(
    features: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    return_attention: bool = False,
):
    """Expected (x, y) of each channel's spatial softmax.

    features: (B, C, H, W) logits of any float dtype.
    temperature: a positive scalar (float or 0-d tensor); the softmax is of features / T.
    Returns keypoints (B, C, 2) in float32 (float64 for float64 input), and with
    ``return_attention`` also the softmax (B, C, H, W).
    """
    if features.dim() != 4:
        raise ValueError(f"features must be (B, C, H, W), got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    # float32 at least (float64 stays float64): half-precision logits never reach the softmax
    dtype = torch.promote_types(features.dtype, torch.float32)
    logits = features.to(dtype).reshape(b, c, h * w) / temperature
    attention = torch.softmax(logits, dim=-1).reshape(b, c, h, w)  # max-subtracted inside
    xs = normalized_grid(w, features.device).to(dtype)
    ys = normalized_grid(h, features.device).to(dtype)
    x = attention.sum(dim=2) @ xs  # marginal over rows: (B, C, W) -> (B, C)
    y = attention.sum(dim=3) @ ys  # marginal over columns: (B, C, H) -> (B, C)
    keypoints = torch.stack([x, y], dim=-1)
    return (keypoints, attention) if return_attention else keypoints


class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax with a learned (default) or fixed temperature.

    (B, C, H, W) -> (B, C, 2) in the DESIGN.md convention.
    """

    def __init__(self, temperature: float = 1.0, learn_temperature: bool = True):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, features: torch.Tensor, return_attention: bool = False):
        return spatial_soft_argmax(features, self.temperature, return_attention=return_attention)


def to_pixels(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised (x, y) in [-1, 1] -> pixel (column, row) with integers at pixel centres."""
    scale = keypoints.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return (keypoints + 1.0) * scale


def from_pixels(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel (column, row) -> normalised (x, y) in [-1, 1]; the inverse of :func:`to_pixels`."""
    scale = pixels.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return pixels / scale - 1.0


def presence(attention: torch.Tensor) -> torch.Tensor:
    """How peaked each softmax is: its largest probability, (B, C, H, W) -> (B, C)."""
    return attention.flatten(2).amax(dim=-1)
