"""The spatial soft-argmax bottleneck and its coordinate converters.

Convention (docs/architecture.md): keypoints are (x, y), x along columns (left -> right), y along rows
(top -> bottom), normalised to [-1, 1] where -1 and +1 are the centres of the first and
last pixel (align_corners=True). Output shape (B, C, 2). For 1-D inputs a keypoint is (x,)
and for 3-D inputs (x, y, z), z along depth: always the last spatial axis first.

Per channel c: s_c = softmax over all positions of a_c / T, computed in float32 (float64
stays float64) with the maximum subtracted, and f_c = sum_p s_cp * coord(p). The
expectation is taken over the marginals (sum over the other axes, then a dot product with
one axis' coordinates), so no full coordinate grid is built. Without extra outputs the
backward pass is one fused expression, d f / d a_p = s_p (coord(p) - f) / T (and one more pass
for a learned T's gradient), so the backward keeps the softmax (and, for a learned T, the logits)
and nothing of the float32 copy or the division.

Equivalences, tested against the installed packages and a transliteration:
  - kornia ``spatial_soft_argmax2d(x, T)`` (0.9: divides by T; (x, y); align_corners)
    equals ``spatial_soft_argmax(x, T)``: the same layout, no converter needed.
  - ``tf.contrib.layers.spatial_softmax`` returns (B, 2C) with the *row* coordinate first
    in each pair (its pos_x comes from ``meshgrid(lin_space(H), lin_space(W), 'ij')``),
    although its docstring says [x1, y1, ...]: ``to_tf_contrib``/``from_tf_contrib``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import torch
from torch import nn

# data_format -> (channel axis position: "first"/"last", number of spatial dims)
DATA_FORMATS = {
    "NCW": ("first", 1), "NWC": ("last", 1),
    "NCHW": ("first", 2), "NHWC": ("last", 2),
    "NCDHW": ("first", 3), "NDHWC": ("last", 3),
}


class SoftArgmaxResult(NamedTuple):
    """Everything :func:`spatial_soft_argmax_full` can return; unrequested fields are None."""

    keypoints: torch.Tensor  # (B, C, D)
    attention: Optional[torch.Tensor] = None  # (B, C, *spatial), probabilities or log-probabilities
    presence: Optional[torch.Tensor] = None  # (B, C) in [0, 1]
    covariance: Optional[torch.Tensor] = None  # (B, C, D, D)


def normalized_grid(size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Coordinates of ``size`` pixel centres in [-1, 1] (align_corners=True); 0 for size 1."""
    if size == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)


def _component_axis(d: int, ndim: int) -> int:
    """The axis of a channels-first (B, C, *spatial) tensor along which keypoint component d
    runs: x (d = 0) along the last axis, y along the one before it, z before that."""
    return 1 + ndim - d


def _channels_first(features: torch.Tensor, data_format: str) -> tuple[torch.Tensor, int]:
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data_format {data_format!r}; use one of {sorted(DATA_FORMATS)}")
    where, ndim = DATA_FORMATS[data_format]
    if features.dim() != ndim + 2:
        raise ValueError(f"data_format {data_format} needs a {ndim + 2}-D tensor, got shape {tuple(features.shape)}")
    if where == "last":
        features = features.movedim(-1, 1)
    return features, ndim


def _valid_positions(features: torch.Tensor, mask: Optional[torch.Tensor], ndim: int) -> Optional[torch.Tensor]:
    """The bool mask of valid positions (1|B, 1|C, N) for channels-first ``features``, or None."""
    if mask is None:
        return None
    spatial = features.shape[2:]
    mask = torch.as_tensor(mask, device=features.device)
    if mask.dim() < ndim or tuple(mask.shape[mask.dim() - ndim:]) != tuple(spatial):
        raise ValueError(f"mask must have the spatial shape {tuple(spatial)} (optionally with batch and channel "
                         f"axes), got {tuple(mask.shape)}")
    if mask.dim() == ndim:  # spatial only
        mask = mask.reshape(1, 1, *spatial)
    elif mask.dim() == ndim + 1:  # (B, *spatial)
        mask = mask.unsqueeze(1)
    if mask.dim() != ndim + 2:
        raise ValueError(f"mask must have the spatial shape {tuple(spatial)} (optionally with batch and channel "
                         f"axes), got {tuple(mask.shape)}")
    return mask.to(torch.bool).reshape(mask.shape[0], mask.shape[1], -1)


def _logits(features: torch.Tensor, temperature, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Channels-first features (B, C, *spatial) -> float32+ logits (B, C, N): features / T, the
    invalid positions at the dtype's lowest value; a new tensor, never the features themselves."""
    if not isinstance(temperature, torch.Tensor) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, c = features.shape[:2]
    dtype = torch.promote_types(features.dtype, torch.float32)
    flat = features.reshape(b, c, -1)
    logits = flat / temperature if flat.dtype == dtype else flat.to(dtype).div_(temperature)
    if valid is not None:
        logits = logits.masked_fill_(~valid, torch.finfo(dtype).min)
    return logits


class _SoftArgmaxFn(torch.autograd.Function):
    """Keypoints from features (B, C, *spatial) and a temperature, with a fused backward.

    Forward: s = softmax(a / T); f_d = <marginal_d(s), coords_d>. Backward: with
    w = sum_d g_d (coords_d - f_d), the features' gradient is s * w / T and the temperature's
    -sum_p (s * w / T) * (a_p / T): one pass over s for the first, one more for the second when
    T is learned, in float32 whatever the features' dtype (the gradient comes back in it).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, temperature, valid: Optional[torch.Tensor]):
        b, c, *spatial = features.shape
        logits = _logits(features, temperature, valid)
        attention = torch.softmax(logits, dim=-1)
        if valid is not None:
            attention = attention * valid
        attention = attention.reshape(b, c, *spatial)
        keypoints = _expectation(attention, spatial)
        learned = isinstance(temperature, torch.Tensor) and ctx.needs_input_grad[1]
        ctx.dtypes = features.dtype, getattr(temperature, "dtype", None)
        temperature = torch.as_tensor(temperature, dtype=logits.dtype, device=logits.device)
        ctx.save_for_backward(attention, keypoints, temperature, logits if learned else None)
        return keypoints

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        attention, keypoints, temperature, logits = ctx.saved_tensors
        nd = attention.dim() - 2
        b, c = attention.shape[:2]
        grad = grad / temperature
        # weight(p) = sum_d g_d * (coord_d(p) - f_d) / T, built by broadcasting one axis at a time.
        weight = None
        for d in range(nd):
            axis = _component_axis(d, nd)
            coords = normalized_grid(attention.shape[axis], attention.device, attention.dtype)
            shape = [1] * (2 + nd)
            shape[axis] = -1
            term = (coords.view(shape) - keypoints[..., d].view(b, c, *([1] * nd))) * grad[..., d].view(b, c, *([1] * nd))
            weight = term if weight is None else weight + term
        features_grad = attention * weight
        temperature_grad = None
        if logits is not None:
            temperature_grad = -torch.dot(features_grad.flatten(), logits.flatten())
            temperature_grad = temperature_grad.reshape(temperature.shape).to(ctx.dtypes[1])
        return features_grad.to(ctx.dtypes[0]), temperature_grad, None


def _float32_under_autocast(fn):
    """Run ``fn(features, ...)`` with autocast off for the features' device: the soft-argmax
    computes in float32 whatever autocast surrounds it (autocast would run its matmuls in bf16)."""

    @functools.wraps(fn)
    def wrapper(features: torch.Tensor, *args, **kwargs):
        with torch.autocast(features.device.type, enabled=False):
            return fn(features, *args, **kwargs)

    return wrapper


def _expectation(attention: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """(B, C, *spatial) distributions -> expected coordinates (B, C, D), last axis first."""
    nd = len(spatial)
    out = []
    for d in range(nd):
        axis = _component_axis(d, nd)
        others = [a for a in range(2, 2 + nd) if a != axis]
        marginal = attention.sum(dim=others) if others else attention
        out.append(marginal @ normalized_grid(attention.shape[axis], attention.device, attention.dtype))
    return torch.stack(out, dim=-1)


@_float32_under_autocast
def spatial_soft_argmax(
    features: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    data_format: str = "NCHW",
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Expected position of each channel's spatial softmax.

    features: (B, C, *spatial) for NCW/NCHW/NCDHW or (B, *spatial, C) for NWC/NHWC/NDHWC.
    temperature: positive float or 0-d tensor; the softmax is of features / T.
    mask: bool, True where a position is valid; shape ``spatial``, (B, *spatial) or
        (B|1, C|1, *spatial) in channels-first order. Masked positions get exactly zero
        weight. A channel with no valid position returns the centre (all zeros).
    Returns keypoints (B, C, D), D = number of spatial dims, in float32 (float64 for
    float64 input), in the module docstring's convention.
    """
    features, ndim = _channels_first(features, data_format)
    return _SoftArgmaxFn.apply(features, temperature, _valid_positions(features, mask, ndim))


@_float32_under_autocast
def spatial_soft_argmax_full(
    features: torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    data_format: str = "NCHW",
    mask: Optional[torch.Tensor] = None,
    return_attention: bool = False,
    log_space: bool = False,
    return_presence: bool = False,
    presence_radius: int = 1,
    return_covariance: bool = False,
) -> SoftArgmaxResult:
    """:func:`spatial_soft_argmax` plus, on request, the attention maps, presence and covariance.

    attention: (B, C, *spatial) channels-first; probabilities, or log-probabilities with
        ``log_space`` (masked positions: -inf).
    presence: the softmax mass within ``presence_radius`` pixels (a (2r+1)^D window) of each
        keypoint's nearest pixel: near 1 when the feature is a sharp, present peak, near
        0 when its mass is spread (the paper's feature presence). 0 for a fully masked channel.
    covariance: (B, C, D, D), sum_p s_p (coord(p) - f)(coord(p) - f)^T, in normalised units.
    Gradients flow through every output (plain autograd; the fused backward is only used
    by :func:`spatial_soft_argmax`).
    """
    features, ndim = _channels_first(features, data_format)
    spatial = tuple(features.shape[2:])
    b, c = features.shape[:2]
    valid = _valid_positions(features, mask, ndim)
    logits = _logits(features, temperature, valid)
    valid = None if valid is None else valid.to(logits.dtype)
    log_attention = torch.log_softmax(logits, dim=-1)
    attention = log_attention.exp()
    if valid is not None:
        attention = attention * valid
        log_attention = log_attention.masked_fill(valid == 0, float("-inf"))
    attention = attention.reshape(b, c, *spatial)
    keypoints = _expectation(attention, spatial)
    result = {"keypoints": keypoints}
    if return_attention:
        result["attention"] = log_attention.reshape(b, c, *spatial) if log_space else attention
    if return_presence:
        window = None
        for d in range(ndim):
            axis = _component_axis(d, ndim)
            size = attention.shape[axis]
            index = (keypoints[..., d].detach() + 1) * (size - 1) / 2  # pixel index, continuous
            near = (torch.arange(size, device=features.device).view(1, 1, -1) - index.round().unsqueeze(-1)).abs()
            near = (near <= presence_radius).to(attention.dtype)
            shape = [b, c] + [1] * ndim
            shape[axis] = size
            near = near.view(shape)
            window = near if window is None else window * near
        result["presence"] = (attention * window).flatten(2).sum(-1)
    if return_covariance:
        grids = torch.meshgrid(*[normalized_grid(s, features.device, attention.dtype) for s in spatial], indexing="ij")
        coords = torch.stack([grids[_component_axis(d, ndim) - 2].reshape(-1) for d in range(ndim)], dim=-1)  # (N, D)
        flat = attention.reshape(b, c, -1)
        second = torch.einsum("bcn,nd,ne->bcde", flat, coords, coords)
        result["covariance"] = second - keypoints.unsqueeze(-1) * keypoints.unsqueeze(-2)
    return SoftArgmaxResult(**result)


class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax layer: features -> keypoints (B, K, D).

    temperature / learn_temperature: the softmax is of features / T; T is learned (the
        paper's default, stored as log T so it stays positive) or fixed.
    in_channels + num_keypoints: an optional 1x1 (x1, x1x1) convolution from in_channels to
        num_keypoints before the softmax (robomimic's projection).
    noise_std: Gaussian noise added to the keypoints in training mode only.
    data_format: as :func:`spatial_soft_argmax`.
    ``forward(x)`` returns keypoints; ``forward(x, return_attention=..., return_presence=...,
    return_covariance=..., log_space=..., mask=...)`` with any extra output returns a
    :class:`SoftArgmaxResult`.
    """

    def __init__(self, temperature: float = 1.0, learn_temperature: bool = True,
                 in_channels: Optional[int] = None, num_keypoints: Optional[int] = None,
                 noise_std: float = 0.0, data_format: str = "NCHW"):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if data_format not in DATA_FORMATS:
            raise ValueError(f"unknown data_format {data_format!r}; use one of {sorted(DATA_FORMATS)}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.data_format = data_format
        self.noise_std = noise_std
        log_t = torch.tensor(math.log(temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.projection = None
        if num_keypoints is not None:
            if in_channels is None:
                raise ValueError("a projection to num_keypoints needs in_channels")
            conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[DATA_FORMATS[data_format][1]]
            self.projection = conv(in_channels, num_keypoints, kernel_size=1)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, features: torch.Tensor, mask: Optional[torch.Tensor] = None,
                return_attention: bool = False, log_space: bool = False,
                return_presence: bool = False, return_covariance: bool = False):
        fmt = self.data_format
        if self.projection is not None:
            features, _ = _channels_first(features, fmt)
            features = self.projection(features)
            fmt = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[DATA_FORMATS[fmt][1]]  # now channels-first
        if return_attention or return_presence or return_covariance:
            out = spatial_soft_argmax_full(features, self.temperature, fmt, mask, return_attention, log_space,
                                           return_presence, 1, return_covariance)
            return out._replace(keypoints=self._noisy(out.keypoints))
        return self._noisy(spatial_soft_argmax(features, self.temperature, fmt, mask))

    def _noisy(self, keypoints: torch.Tensor) -> torch.Tensor:
        if self.training and self.noise_std > 0:
            keypoints = keypoints + self.noise_std * torch.randn_like(keypoints)
        return keypoints


def to_pixels(keypoints: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised (x, y) in [-1, 1] -> pixel (column, row) with integers at pixel centres."""
    scale = keypoints.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return (keypoints + 1.0) * scale


def from_pixels(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel (column, row) -> normalised (x, y) in [-1, 1]; the inverse of :func:`to_pixels`."""
    scale = pixels.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return pixels / scale - 1.0


def to_tf_contrib(keypoints: torch.Tensor) -> torch.Tensor:
    """Ours (B, C, 2) -> ``tf.contrib.layers.spatial_softmax`` output (B, 2C): [row1, col1, ...]."""
    return keypoints.flip(-1).flatten(-2)


def from_tf_contrib(flat: torch.Tensor) -> torch.Tensor:
    """``tf.contrib.layers.spatial_softmax`` output (B, 2C) -> ours (B, C, 2) as (x, y)."""
    return flat.unflatten(-1, (-1, 2)).flip(-1)

