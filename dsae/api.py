"""Reuse a trained encoder: ``load_encoder(path)`` -> images to keypoints, no Hydra needed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from dsae.checkpoint import load_checkpoint
from dsae.config import from_dict
from dsae.device import resolve_device
from dsae.errors import ConfigError
from dsae.model import DeepSpatialAutoencoder, SpatialEncoder, to_float_images
from envs import EnvConfig


class PretrainedEncoder(nn.Module):
    """A trained DSAE encoder: images -> keypoints (B, K, 2) in the docs/architecture.md convention.

    Accepts uint8 (B, H, W, 3) (as envs and datasets give them) or float (B, 3, H, W) in
    [0, 1], at the training image size; inputs are moved to the encoder's device. Keyword
    options (``return_attention``, ``return_presence``, ...) are those of SpatialSoftmax.
    ``env_config`` is the scene it was trained on: ``envs.make_env(encoder.env_config)`` renders
    frames as its training frames were rendered, and the keypoint wrappers refuse other frames.
    """

    def __init__(self, encoder: SpatialEncoder, image_size: int, env_config: Optional[EnvConfig] = None):
        super().__init__()
        self.encoder = encoder
        self.image_size = image_size
        self.env_config = env_config
        self.num_keypoints = encoder.softmax_channels

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor, **outputs):
        images = torch.as_tensor(images).to(self.device)
        h, w = (images.shape[1:3] if images.dtype == torch.uint8 else images.shape[2:4])
        if (h, w) != (self.image_size, self.image_size):
            raise ConfigError(
                f"this encoder was trained on {self.image_size}x{self.image_size} images, got {h}x{w}; "
                f"render at env.image_size={self.image_size} or resize first")
        return self.encoder(to_float_images(images), **outputs)


def load_model(path: Path | str, device: Optional[str | torch.device] = None) -> tuple[DeepSpatialAutoencoder, dict]:
    """The whole autoencoder from a checkpoint (a .pt file or a run folder), in eval mode."""
    state = load_checkpoint(path)
    cfg = from_dict(state["config"])
    model = DeepSpatialAutoencoder(cfg.model, state["image_size"])
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval(), state


def load_encoder(path: Path | str, device: Optional[str | torch.device] = None) -> PretrainedEncoder:
    """The frozen encoder of a checkpoint; ``device=None`` picks cuda when present."""
    model, state = load_model(path, device)
    encoder = PretrainedEncoder(model.encoder, state["image_size"], from_dict(state["config"]).env).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
