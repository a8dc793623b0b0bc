"""dsae: Deep Spatial Autoencoders (Finn et al., ICRA 2016) for robot learning.

Public API::

    from dsae import DeepSpatialAutoencoder, SpatialSoftmax, load_encoder
    encoder = load_encoder("outputs/<run>/checkpoints/last.pt")  # uint8 (B, H, W, 3) -> (B, K, 2)
    keypoints = dsae.spatial_soft_argmax(features)                # (B, C, H, W) -> (B, C, 2)
    env = dsae.KeypointObservation(make_env(...), encoder)        # gymnasium: keypoints + joint features
"""

from dsae.api import PretrainedEncoder, load_encoder
from dsae.config import ModelConfig
from dsae.model import DeepSpatialAutoencoder
from dsae.rl.wrappers import KeypointObservation, KeypointObservationVector, PixelObservation
from dsae.spatial_softmax import (
    SoftArgmaxResult,
    SpatialSoftmax,
    from_pixels,
    from_tf_contrib,
    spatial_soft_argmax,
    spatial_soft_argmax_full,
    to_pixels,
    to_tf_contrib,
)

__all__ = [
    "DeepSpatialAutoencoder",
    "PretrainedEncoder",
    "KeypointObservation",
    "KeypointObservationVector",
    "ModelConfig",
    "SoftArgmaxResult",
    "SpatialSoftmax",
    "from_pixels",
    "from_tf_contrib",
    "load_encoder",
    "PixelObservation",
    "spatial_soft_argmax",
    "spatial_soft_argmax_full",
    "to_pixels",
    "to_tf_contrib",
]
