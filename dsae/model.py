"""The Deep Spatial Autoencoder: conv encoder -> spatial soft-argmax -> decoder, and its loss.

Images enter as uint8 (B, H, W, 3) and are converted once, here, to float (B, 3, H, W) in
[0, 1]. The decoder reconstructs a downsampled image from the keypoints, grayscale (B, h, w)
or, with ``model.recon_color``, colour (B, 3, h, w):
``gaussian`` and ``fc`` from them alone, ``transport`` from the frame seen only through a
window at each keypoint. The loss is the reconstruction error plus the smoothness term
g_slow = ||(f_{t+1} - f_t) - (f_t - f_{t-1})||^2 on triples of consecutive frames, and an
equivariance term (``model.equivariance_weight``; 0 turns it off): the keypoints of a frame
turned about its centre should be the frame's keypoints turned with it.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dsae.config import DECODERS, NORMS, ModelConfig
from dsae.errors import ConfigError
from dsae.spatial_softmax import SpatialSoftmax, normalized_grid, spatial_soft_argmax_full

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma
BACKGROUND_TOLERANCE = 0.04  # model.background_jitter: a pixel within this of the scene's median frame in every channel is scene


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1]; float (B, 3, H, W) passes through."""
    if images.dtype == torch.uint8:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (B, H, W, 3), got shape {tuple(images.shape)}")
        return images.permute(0, 3, 1, 2).float().div_(255.0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"float images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    return images


def recon_target(images: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Reconstruction target: images area-downsampled to ``recon_size``, in [0, 1]: grayscale
    (B, h, w), or with ``recon_color`` (B, 3, h, w)."""
    x = to_float_images(images)
    if not cfg.recon_color:  # gray first, then downsample: the order every earlier run used, to the last bit
        x = (x * x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return _as_recon(F.interpolate(x, size=(cfg.recon_size, cfg.recon_size), mode="area"), cfg)


def recon_shape(cfg: ModelConfig) -> tuple[int, ...]:
    """One reconstruction's shape: (h, w), or (3, h, w) in colour."""
    side = (cfg.recon_size, cfg.recon_size)
    return (3, *side) if cfg.recon_color else side


def _recon_channels(cfg: ModelConfig) -> int:
    return 3 if cfg.recon_color else 1


def _as_recon(x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """A decoder's (B, C, h, w) output in recon_target's shape: (B, 3, h, w), or (B, h, w) for grayscale."""
    return x if cfg.recon_color else x.squeeze(1)


def _norm(kind: str, channels: int) -> nn.Module:
    """The normalisation ``model.norm`` names (checked by ModelConfig)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"model.norm must be one of {NORMS}, got {kind!r}")


def conv_padding(padding: str, kernel: int) -> int:
    """The zero (or replicated) border each side that ``model.padding`` gives a conv of this kernel."""
    return 0 if padding == "valid" else kernel // 2


def receptive_field_centres(kernels: list[int], strides: list[int], padding: str) -> tuple[float, float]:
    """(a, b): cell i of the last feature map sees, at the centre of its receptive field, the
    input pixel a * i + b (0 = the first pixel's centre), for a stack of convs of these kernels
    and strides; the same along rows and columns."""
    a, b = 1.0, 0.0
    for k, s in zip(reversed(kernels), reversed(strides)):
        a, b = s * a, s * b + (k - 1) / 2 - conv_padding(padding, k)
    return a, b


_BLOCK = 3  # modules per conv block of _conv_blocks: conv, norm, ReLU
FOREGROUND_CONTRAST = 0.1  # model.wide_input=foreground: a pixel this far from the scene's median frame (in [0, 1], per channel) is wholly foreground


def _conv_blocks(in_ch: int, channels: list[int], kernels: list[int], strides: list[int], cfg: ModelConfig) -> list[nn.Module]:
    """Conv, ``model.norm``, ReLU for each width, kernel and stride, padded as ``model.padding`` says."""
    mode = "replicate" if cfg.padding == "replicate" else "zeros"
    layers: list[nn.Module] = []
    for out_ch, k, s in zip(channels, kernels, strides):
        conv = nn.Conv2d(in_ch, out_ch, k, stride=s, padding=conv_padding(cfg.padding, k), padding_mode=mode)
        layers += [conv, _norm(cfg.norm, out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return layers


class SpatialEncoder(nn.Module):
    """Conv stack ending in spatial soft-argmax: float (B, 3, H, W) -> keypoints (B, K, 2).

    With ``keypoint_frame="image"`` (the default) each keypoint is placed where, in the image, its
    expected feature-map cell looks: the centre of that cell's receptive field
    (``receptive_field_centres``); with valid padding that leaves a border the keypoints cannot
    reach (11 px of 64 on each side for the paper's kernels). With ``"grid"`` (the paper's) the
    feature grid is stretched over the whole image: the paper's 21x21 maps at 64 px see image
    pixels 11 to 51, so a keypoint with a sharp softmax that follows an object moves 1.6 times as
    far as the object does.
    """

    def __init__(self, cfg: ModelConfig, image_size: Optional[int] = None):
        super().__init__()
        deep_keypoints = cfg.num_keypoints - cfg.local_count
        project = cfg.channels[-1] != deep_keypoints if cfg.project is None else cfg.project
        layers = _conv_blocks(6 if cfg.scene_difference else 3, cfg.channels, cfg.kernels, cfg.strides, cfg)
        # With model.wide_input=foreground the stack above reads the foreground, and the local
        # keypoints get a first conv of their own that reads the frame.
        self.local_first = None
        if cfg.reads_foreground:
            self.local_first = nn.Sequential(*_conv_blocks(3, cfg.channels[:1], cfg.kernels[:1], cfg.strides[:1], cfg))
        if project:
            layers.append(nn.Conv2d(cfg.channels[-1], deep_keypoints, 1))
        self.features = nn.Sequential(*layers)
        # The local keypoints' maps: the first conv's features through 1x1 convs of the later
        # layers' widths, so each answers to what one first-layer patch holds (ModelConfig.local_count).
        self.local = None
        if cfg.local_count:
            later = cfg.channels[1:]
            local = _conv_blocks(cfg.channels[0], later, [1] * len(later), [1] * len(later), cfg)
            self.local = nn.Sequential(*local, nn.Conv2d(later[-1], cfg.local_count, 1))
        self.softmax_channels = cfg.num_keypoints
        self.wide_temperature = cfg.wide_temperature  # the wide maps are divided by it (ModelConfig.wide_temperature)
        self.softmax = SpatialSoftmax(cfg.temperature, cfg.learn_temperature)
        self.centres = receptive_field_centres(cfg.kernels, cfg.strides, cfg.padding) if cfg.keypoint_frame == "image" else None
        reads_scene = cfg.scene_difference or cfg.reads_foreground
        if reads_scene and image_size is None:
            raise ValueError("model.scene_difference and model.wide_input=foreground need the image size: SpatialEncoder(cfg, image_size)")
        # The scene's median frame (1, 3, H, W) with model.scene_difference or the foreground, set by DeepSpatialAutoencoder.set_background.
        self.register_buffer("scene", torch.full((1, 3, image_size, image_size), 0.5) if reads_scene else None)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the first convs read: float images (B, 3, H, W) -> (B, 3, H, W), or (B, 6, H, W): the
        frames and, with ``model.scene_difference``, the frames less the scene's median frame, or with
        the foreground (``model.wide_input``) how far each pixel is from it, in units of
        FOREGROUND_CONTRAST and at most 1."""
        if self.scene is None:
            return x
        if x.shape[-2:] != self.scene.shape[-2:]:
            raise ValueError(f"this encoder was trained on {tuple(self.scene.shape[-2:])} frames of its scene, "
                             f"got {tuple(x.shape[-2:])}: render the scene at the encoder's image size")
        difference = x - self.scene
        if self.local_first is not None:
            return torch.cat([x, (difference.abs() / FOREGROUND_CONTRAST).clamp(max=1)], dim=1)
        return torch.cat([x, difference], dim=1)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """One map per keypoint: the first conv's input (B, 3 or 6, H, W; ``inputs``) -> (B, K, h, w);
        the local keypoints' maps first, then those of the whole stack (divided by
        ``model.wide_temperature``, so the shared softmax is that much softer on them)."""
        if self.local is None:
            return self.features(x)
        if self.local_first is not None:  # the frame to the local keypoints, the foreground to the stack
            local, wide = self.local(self.local_first(x[:, :3])), self.features(x[:, 3:])
        else:
            first = self.features[:_BLOCK](x)  # the first conv, its norm and ReLU
            local, wide = self.local(first), self.features[_BLOCK:](first)
        return torch.cat([local, wide / self.wide_temperature], dim=1)

    def forward(self, images: torch.Tensor, **outputs):
        """Keypoints; with ``return_attention``/``return_presence``/... (see SpatialSoftmax) a
        SoftArgmaxResult (its covariance in the keypoints' frame, its attention on the feature grid)."""
        x = self.inputs(to_float_images(images))
        return self.locate(self.feature_maps(x), x.shape[-2:], **outputs)

    def locate(self, features: torch.Tensor, image_size: tuple[int, int], **outputs):
        """Keypoints (B, K, 2) in the keypoint frame from the feature maps (B, K, h, w) of images
        of ``image_size`` (H, W); ``outputs`` as in ``forward``."""
        result = self.softmax(features, **outputs)
        if self.centres is None:
            return result
        scale, shift = self._grid_to_image(features, image_size)
        if isinstance(result, torch.Tensor):
            return result * scale + shift
        covariance = None if result.covariance is None else result.covariance * scale[:, None] * scale[None, :]
        return result._replace(keypoints=result.keypoints * scale + shift, covariance=covariance)

    def _grid_to_image(self, features: torch.Tensor, image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (2,) for (x, y): normalised over the feature grid of ``features``
        (B, K, h, w) -> normalised over an image of ``image_size`` (H, W); identity in the grid frame."""
        if self.centres is None:
            return features.new_ones(2, dtype=torch.float32), features.new_zeros(2, dtype=torch.float32)
        a, b = self.centres
        grid = features.new_tensor([features.shape[-1] - 1, features.shape[-2] - 1], dtype=torch.float32)
        image = features.new_tensor([image_size[-1] - 1, image_size[-2] - 1], dtype=torch.float32)
        return a * grid / image, (a * grid / 2 + b) * 2 / image - 1

    def held_attention(self, features: torch.Tensor) -> torch.Tensor:
        """Each map's softmax with the temperature held fixed (no gradient to it), so that what
        learns from it is the maps, not the shared softmax: (B, K, h, w) -> (B, K, h, w)."""
        return spatial_soft_argmax_full(features, self.softmax.temperature.detach(), return_attention=True).attention

    def attention_spread(self, attention: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """The mean, over frames and keypoints, of the variance of each keypoint's softmax
        (``held_attention``) over its map, x plus y in the keypoints' normalised units, so that a
        lower value means maps that answer in one place: (B, K, h, w) -> (). Each axis's variance
        comes from the softmax summed over the other axis."""
        scale, _ = self._grid_to_image(attention, image_size)
        attention, spread = attention.float(), 0.0
        for axis, s in ((-2, scale[0]), (-1, scale[1])):  # x: summed over rows; y: over columns
            mass = attention.sum(axis)  # (B, K, w) or (B, K, h)
            grid = normalized_grid(mass.shape[-1], mass.device)
            mean = (mass * grid).sum(-1)
            spread = spread + ((mass * grid.pow(2)).sum(-1) - mean.pow(2)) * s.pow(2)
        return spread.mean()


class FCDecoder(nn.Module):
    """Fully connected decoder: keypoints (B, K, 2) -> image (B, h, w) (or (B, 3, h, w) in colour)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, self.size = cfg, cfg.recon_size
        dims = [2 * cfg.num_keypoints, *cfg.decoder_hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], _recon_channels(cfg) * self.size * self.size))
        self.net = nn.Sequential(*layers)
        # Start near a flat mid-grey image: a decoder that starts far from the data sends large
        # gradients into the encoder, which can silence its last ReLUs (every keypoint then
        # sits still at the image centre for good).
        with torch.no_grad():
            layers[-1].weight.mul_(0.1)
            layers[-1].bias.fill_(0.5)

    def forward(self, keypoints: torch.Tensor, images: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _as_recon(self.net(keypoints.flatten(1)).view(-1, _recon_channels(self.cfg), self.size, self.size), self.cfg)


def gaussian_maps(keypoints: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Keypoints (B, K, 2) -> isotropic Gaussian maps (B, K, size, size), peak 1 at each keypoint.

    Pixel centres at normalised coordinates linspace(-1, 1, size), as in the docs/architecture.md convention.
    """
    grid = torch.linspace(-1.0, 1.0, size, device=keypoints.device, dtype=keypoints.dtype)
    gx = torch.exp(-(grid - keypoints[..., 0:1]) ** 2 / (2 * sigma**2))  # (B, K, W)
    gy = torch.exp(-(grid - keypoints[..., 1:2]) ** 2 / (2 * sigma**2))  # (B, K, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


class _NearestWindow(torch.autograd.Function):
    """The largest of the keypoints' Gaussian maps at each pixel, which is the Gaussian of the
    distance to the nearest keypoint: keypoints (B, K, 2) -> (B, 1, size, size).

    Equal to ``gaussian_maps(keypoints, size, sigma).amax(dim=1, keepdim=True)``, but the backward
    pass goes only to each pixel's nearest keypoint, O(B * size^2) instead of O(B * K * size^2).
    Keypoints at the same place (a sharp softmax puts them on the same cell) share it equally, as
    amax shares it between equal maxima; two different keypoints exactly as near a pixel do not.
    """

    @staticmethod
    def forward(ctx, keypoints: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
        grid = torch.linspace(-1.0, 1.0, size, device=keypoints.device, dtype=keypoints.dtype)
        dx2 = (grid - keypoints[..., 0:1]).square()  # (B, K, W)
        dy2 = (grid - keypoints[..., 1:2]).square()  # (B, K, H)
        nearest_d2, nearest = (dy2.unsqueeze(-1) + dx2.unsqueeze(-2)).min(dim=1)  # (B, H, W) each
        window = torch.exp(nearest_d2 * (-0.5 / sigma**2))
        ctx.save_for_backward(keypoints, window, nearest)
        ctx.sigma = sigma
        return window.unsqueeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        keypoints, window, nearest = ctx.saved_tensors
        size = window.shape[-1]
        grid = torch.linspace(-1.0, 1.0, size, device=keypoints.device, dtype=keypoints.dtype)
        pixel = torch.stack([grid.repeat(size), grid.repeat_interleave(size)], dim=-1)  # (H*W, 2) as (x, y)
        index = nearest.flatten(1)  # (B, H*W)
        where = keypoints.gather(1, index.unsqueeze(-1).expand(-1, -1, 2))  # (B, H*W, 2)
        # d window / d keypoint = window * (pixel - keypoint) / sigma^2, summed onto each pixel's keypoint
        pull = (grad.squeeze(1) * window).flatten(1).unsqueeze(-1) * (pixel - where) / ctx.sigma**2
        out = torch.zeros_like(keypoints)
        out.scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, 2), pull.to(out.dtype))
        same = (keypoints.unsqueeze(2) == keypoints.unsqueeze(1)).all(-1).to(out.dtype)  # (B, K, K)
        return same @ out / same.sum(-1, keepdim=True), None, None


def nearest_window(keypoints: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Keypoints (B, K, 2) -> (B, 1, size, size): at each pixel the largest of the keypoints'
    :func:`gaussian_maps` (peak 1), with a backward pass that costs O(B * size^2)."""
    return _NearestWindow.apply(keypoints, size, sigma)


class GaussianDecoder(nn.Module):
    """Keypoints drawn as Gaussian maps, then a small conv net: (B, K, 2) -> (B, h, w) (or (B, 3, h, w)).

    The image is a learned background plus what the convs draw around each keypoint, so a
    keypoint can only explain pixels near where it sits: a strong push for keypoints to sit
    on the things that move.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, self.size, self.sigma = cfg, cfg.recon_size, decoder_sigma_at(cfg, 1.0)
        c, k = cfg.decoder_channels, cfg.decoder_kernel
        self.net = nn.Sequential(
            nn.Conv2d(cfg.num_keypoints, c, k, padding=k // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, k, padding=k // 2), nn.ReLU(inplace=True),
            nn.Conv2d(c, _recon_channels(cfg), k, padding=k // 2),
        )
        self.background = nn.Parameter(torch.full(recon_shape(cfg), 0.5))

    def forward(self, keypoints: torch.Tensor, images: Optional[torch.Tensor] = None) -> torch.Tensor:
        maps = gaussian_maps(keypoints, self.size, self.sigma)
        return _as_recon(self.net(maps), self.cfg) + self.background


class TransportDecoder(nn.Module):
    """Features of the frame show through a Gaussian window at each keypoint onto features of the
    scene's median image; convs decode the mix: (B, K, 2) + images (B, H, W, 3) -> (B, h, w) (or (B, 3, h, w)).

    After Transporter (Kulkarni et al. 2019), with the scene's median image as the source frame.
    The decoder need not learn to draw an object from a coordinate: a keypoint on it opens a
    window onto the object's own features, so one keypoint removes a small object's whole error.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg, self.size, self.sigma = cfg, cfg.recon_size, decoder_sigma_at(cfg, 1.0)
        c = cfg.decoder_channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True))
        self.net = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, _recon_channels(cfg), 3, padding=1))
        # The scene's median colour image at the reconstruction size, set by set_background().
        self.register_buffer("scene", torch.full((1, 3, cfg.recon_size, cfg.recon_size), 0.5))
        self.open_keypoints: Optional[int] = None  # only the first this many keypoints open a window (None: all)

    def forward(self, keypoints: torch.Tensor, images: Optional[torch.Tensor] = None,
                search: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``search`` (B, 1, h, w), when given, adds its gradient to the window's and nothing to its
        value (``model.search_weight``)."""
        if images is None:
            raise ValueError("the transport decoder reconstructs from the frames' features: pass images too")
        frames = F.interpolate(to_float_images(images), size=(self.size, self.size), mode="area")
        shown = keypoints[:, :self.open_keypoints]
        window = nearest_window(shown, self.size, self.sigma)  # (B, 1, h, w)
        if search is not None:
            window = window + (search - search.detach())
        mixed = (1 - window) * self.features(self.scene) + window * self.features(frames)
        return _as_recon(self.net(mixed), self.cfg) + 0.5


def separation_penalty(keypoints: torch.Tensor, sigma: float) -> torch.Tensor:
    """Mean over pairs of keypoints of exp(-d^2 / 2 sigma^2): (B, K, 2) -> scalar in [0, 1].

    1 when all keypoints coincide, ~0 when they are far apart: keypoints crowded on one
    object push each other off, to find the others.
    """
    kp = keypoints.float()
    d2 = (kp[:, :, None] - kp[:, None]).pow(2).sum(-1)  # (B, K, K)
    k = d2.shape[-1]
    return (torch.exp(-d2 / (2 * sigma**2)).sum((-1, -2)) - k).mean() / (k * (k - 1))


def rotate_frames(images: torch.Tensor, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames float (B, C, H, W) turned by ``angles`` (B,) radians about the image centre (borders
    repeated), and the (B, 2, 2) matrices R that carry a keypoint (x, y) of a frame, as a row
    vector in normalised coordinates, to its place in the turned frame: p @ R."""
    cos, sin = angles.cos(), angles.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    # The sampling grid reads the turned frame's pixel q from the frame at R q, so p lands at R^T p.
    theta = torch.cat([rotation, rotation.new_zeros(len(angles), 2, 1)], dim=-1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=True)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=True), rotation


def recolour_background(frames: torch.Tensor, median: torch.Tensor, triples: int) -> torch.Tensor:
    """Frames float (3B, 3, H, W) of B triples, the first ``triples`` of them with their scene
    recoloured: the pixels within BACKGROUND_TOLERANCE of the median frame (1, 3, H, W), and not
    beside one that differs, become the median frame times a gain in [0, 1.5) plus a tint in
    [0, 0.5) per channel, clipped to [0, 1]; one draw per triple, so its three frames agree."""
    if triples == 0:
        return frames
    head = frames[:3 * triples]
    moved = ((head - median).abs().amax(dim=1, keepdim=True) > BACKGROUND_TOLERANCE).float()
    moved = F.max_pool2d(moved, 3, stride=1, padding=1)  # an object's anti-aliased edge stays with it
    gain = (torch.rand(triples, 1, 1, 1, device=frames.device) * 1.5).repeat_interleave(3, dim=0)
    tint = (torch.rand(triples, 3, 1, 1, device=frames.device) * 0.5).repeat_interleave(3, dim=0)
    scene = (median * gain + tint).clamp(0, 1)
    return torch.cat([moved * head + (1 - moved) * scene, frames[3 * triples:]])


def equivariance_error(turned: torch.Tensor, keypoints: torch.Tensor, rotation: torch.Tensor,
                       counted: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared distance between the keypoints of turned frames (B, K, 2) and the frames'
    keypoints (B, K, 2) turned with them by ``rotation`` (B, 2, 2) (see ``rotate_frames``), over
    the keypoints that ``counted`` (B, K) marks and that stay inside the turned frame, each
    keypoint's distance times its ``weight`` (K,) when given -> scalar.

    A keypoint that turns with the frame answers to the same thing at every orientation of it,
    which a conv filter does not by itself.
    """
    expected = torch.bmm(keypoints.float(), rotation)
    counted = counted.float() * (expected.abs() <= 1).all(-1).float()  # (B, K)
    error = (turned.float() - expected).pow(2).sum(-1)
    if weight is not None:
        error = error * weight
    return (error * counted).sum() / counted.sum().clamp(min=1)


def decoder_sigma_at(cfg: ModelConfig, progress: float) -> float:
    """The decoder's window std at ``progress`` (0 to 1) through training: ``decoder_sigma``,
    moving linearly to ``decoder_sigma_end`` when that is set; a trained model keeps the last."""
    if cfg.decoder_sigma_end is None:
        return cfg.decoder_sigma
    return cfg.decoder_sigma + (cfg.decoder_sigma_end - cfg.decoder_sigma) * min(max(progress, 0.0), 1.0)


def make_decoder(cfg: ModelConfig) -> nn.Module:
    """The decoder that ``model.decoder`` names: keypoints (B, K, 2) -> image (B, h, w)."""
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"model.decoder must be one of {DECODERS}, got {cfg.decoder!r}")
    return {"gaussian": GaussianDecoder, "fc": FCDecoder, "transport": TransportDecoder}[cfg.decoder](cfg)


class DeepSpatialAutoencoder(nn.Module):
    """SpatialEncoder + decoder. ``forward(images) -> (keypoints (B, K, 2), reconstruction (B, h, w))``."""

    def __init__(self, cfg: ModelConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.encoder = SpatialEncoder(cfg, image_size)
        self.decoder = make_decoder(cfg)
        size = image_size
        for k, s in zip(cfg.kernels, cfg.strides):
            size = (size + 2 * conv_padding(cfg.padding, k) - k) // s + 1
        if size < 2:
            raise ConfigError(f"image_size={image_size} is too small for this encoder (its feature maps would be {size}x{size})")
        self.feature_size = (size, size)
        self.concentrating = self.cfg.concentration_weight > 0  # whether the concentration term counts now (set_progress; model.concentration_until)
        self.searching = False  # whether the local keypoints learn where to search now (set_progress; model.search_weight)
        # The scene's static image (B-independent, recon_shape): the per-pixel median of training frames,
        # set by set_background() before training; saved with the weights (as is the encoder's
        # full-size median frame with model.scene_difference).
        self.register_buffer("background", torch.full(recon_shape(cfg), 0.5))
        # The full-size median colour frame (1, 3, H, W) that model.background_jitter recolours around.
        self.register_buffer("median_frame", torch.full((1, 3, image_size, image_size), 0.5) if cfg.background_jitter else None)

    @torch.no_grad()
    def set_background(self, frames: torch.Tensor) -> None:
        """The per-pixel median of uint8 frames (N, H, W, 3) becomes the scene's static image,
        which the foreground weighting compares against and the Gaussian decoder starts from."""
        median = recon_target(frames, self.cfg).median(dim=0).values
        self.background.copy_(median)
        full_size = [buffer for buffer in (self.encoder.scene, self.median_frame) if buffer is not None]
        if full_size:
            frame = to_float_images(frames.median(dim=0).values[None])  # (1, 3, H, W)
            for buffer in full_size:
                buffer.copy_(frame)
        if isinstance(self.decoder, GaussianDecoder):
            self.decoder.background.copy_(median)
        if isinstance(self.decoder, TransportDecoder):
            colour = F.interpolate(to_float_images(frames), size=(self.cfg.recon_size,) * 2, mode="area")
            self.decoder.scene.copy_(colour.median(dim=0).values[None])

    def set_progress(self, progress: float) -> None:
        """Set what changes over training (0 to 1): the decoder's window std
        (:func:`decoder_sigma_at`), during ``model.local_warmup`` which keypoints open windows, and
        whether the concentration term still counts (``model.concentration_until``)."""
        if hasattr(self.decoder, "sigma"):
            self.decoder.sigma = decoder_sigma_at(self.cfg, progress)
        self.concentrating = self.cfg.concentration_weight > 0 and progress < self.cfg.concentration_until
        if isinstance(self.decoder, TransportDecoder):
            warming = self.cfg.local_count and progress < self.cfg.local_warmup
            self.decoder.open_keypoints = self.cfg.local_count if warming else None
            self.searching = bool(warming and self.cfg.search_weight > 0)

    def _search(self, attention: torch.Tensor) -> torch.Tensor:
        """``model.search_weight`` times the sum of the local keypoints' softmax attention
        (``SpatialEncoder.held_attention``), at the reconstruction's size: (B, L, h, w) -> (B, 1, r, r).
        Added to the decoder's window as a gradient alone, it moves each local map's mass towards
        the cells where a window would lower the error, wherever its keypoint is."""
        search = attention.sum(1, keepdim=True)
        if search.shape[-1] != self.cfg.recon_size:
            search = F.interpolate(search, size=(self.cfg.recon_size,) * 2, mode="bilinear", align_corners=False)
        return self.cfg.search_weight * search

    def forward(self, images: torch.Tensor):
        keypoints = self.encoder(images)
        return keypoints, self.decoder(keypoints, images)

    def loss(self, triples: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss on frame triples uint8 (B, 3, H, W, 3) (consecutive frames t-1, t, t+1).

        Reconstruction error (``model.recon_loss``: MSE or L1) over all three frames plus
        ``slow_weight`` * mean g_slow (plus the separation and equivariance terms when their
        weights are set). The parts come back detached (no device sync here; call ``float()``
        when logging); ``recon_mse`` is the MSE whichever error trains.
        """
        b = triples.shape[0]
        images = triples.flatten(0, 1)
        x = to_float_images(images)
        if self.median_frame is not None and self.training:
            x = recolour_background(x, self.median_frame, round(self.cfg.background_jitter * b))
        if self.cfg.equivariance_weight > 0:
            keypoints, equivariance, features = self._encode_with_turns(x)
        else:
            features = self.encoder.feature_maps(self.encoder.inputs(x))
            keypoints, equivariance = self.encoder.locate(features, x.shape[-2:]), None
        # the local maps' softmax (every map's when none is local), computed once for the concentration term and the search
        held = self.encoder.held_attention(features[:, :self.cfg.local_count or None]) if self.concentrating or self.searching else None
        recon = self.decoder(keypoints, images, self._search(held)) if self.searching else self.decoder(keypoints, images)
        target = recon_target(images, self.cfg)
        difference = recon.float() - target
        error = difference.abs() if self.cfg.recon_loss == "l1" else difference.pow(2)
        if self.cfg.foreground_weight > 0:
            # What differs from the static scene (the objects, wherever they are) weighs more.
            weight = 1.0 + self.cfg.foreground_weight * (target - self.background).abs()
            recon_loss = (weight * error).mean() / weight.mean()
        else:
            recon_loss = error.mean()
        mse = difference.detach().pow(2).mean()
        f = keypoints.view(b, 3, -1, 2)
        slow = ((f[:, 2] - f[:, 1]) - (f[:, 1] - f[:, 0])).pow(2).sum(-1).mean()
        total = recon_loss + self.cfg.slow_weight * slow
        if self.cfg.separation_weight > 0:
            total = total + self.cfg.separation_weight * separation_penalty(keypoints, self.cfg.separation_sigma)
        parts = {"recon_mse": mse, "slow": slow}
        if equivariance is not None:
            total = total + self.cfg.equivariance_weight * equivariance
            parts["equivariance"] = equivariance
        if self.concentrating:
            parts["concentration"] = self.encoder.attention_spread(held, x.shape[-2:])
            total = total + self.cfg.concentration_weight * parts["concentration"]
        return total, {"loss": total.detach(), **{k: v.detach() for k, v in parts.items()}}

    def _encode_with_turns(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keypoints (3B, K, 2) of the frames of B triples, float (3B, 3, H, W), the
        equivariance error of B / model.equivariance_share of the frames (the middle frames of the
        first triples; past B, the first and then the last frames too), each turned by a random
        angle: all from one encoder batch, so that batch norm sees one
        set of statistics in training. The first conv's inputs are turned, the frames less the
        scene's median frame with them, so that a turned frame is still compared with its own scene.
        Also the unturned frames' feature maps (3B, K, h, w)."""
        x = self.encoder.inputs(x)
        # floor, but a share written to 7 digits (0.6666667) counts as the fraction it stands for
        turns = max(1, min(len(x), math.floor(len(x) / 3 / self.cfg.equivariance_share + 1e-3)))
        angles = (torch.rand(turns, device=x.device) * 2 - 1) * math.radians(self.cfg.equivariance_angle)
        order = torch.arange(len(x), device=x.device).view(-1, 3)[:, [1, 0, 2]].T.flatten()  # middle frames first
        middle = order[:turns]
        turned, rotation = rotate_frames(x[middle], angles)
        features = self.encoder.feature_maps(torch.cat([x, turned]))
        keypoints, turned_keypoints = self.encoder.locate(features, x.shape[-2:]).split([len(x), turns])
        # Only keypoints that have found something (half their softmax mass within a cell of where
        # they sit) must turn with it; a diffuse one stays free to wait for an object to appear.
        with torch.no_grad():
            found = self.encoder.softmax(features[middle], return_presence=True).presence > 0.5
        weight = None
        if self.cfg.local_count and self.cfg.wide_equivariance != 1:
            weight = torch.ones(keypoints.shape[1], device=x.device)
            weight[self.cfg.local_count:] = self.cfg.wide_equivariance
        return keypoints, equivariance_error(turned_keypoints, keypoints[middle], rotation, found, weight), features[:len(x)]
