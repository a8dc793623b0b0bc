"""dsae: Deep Spatial Autoencoders (Finn et al., ICRA 2016) for robot learning.

Public API::

    from dsae import DeepSpatialAutoencoder, SpatialSoftmax, load_encoder
    encoder = load_encoder("outputs/<run>/checkpoints/last.pt")  # uint8 (B, H, W, 3) -> (B, K, 2)
"""

from dsae.api import KeypointEncoder, load_encoder
from dsae.model import DeepSpatialAutoencoder, ModelConfig
from dsae.spatial_softmax import SpatialSoftmax, spatial_soft_argmax

__all__ = [
    "DeepSpatialAutoencoder",
    "KeypointEncoder",
    "ModelConfig",
    "SpatialSoftmax",
    "load_encoder",
    "spatial_soft_argmax",
]
