"""Reinforcement learning on the keypoints: gymnasium wrappers, soft actor-critic, and the run loop.

- :mod:`dsae.rl.wrappers`: ``KeypointObservation`` (a trained encoder's keypoints + the robot's
  joint features as a gymnasium observation), its vector-env form, and ``PixelObservation``;
- :mod:`dsae.rl.sac`: the SAC agent, its observation feature extractors and replay buffer;
- :mod:`dsae.rl.config`: the schemas of ``scripts/train_rl.py`` (``RLRunConfig``, ``SACConfig``)
  and ``scripts/imitate.py`` (``ImitationRunConfig``, ``DAggerConfig``);
- :mod:`dsae.rl.policy`: building envs and agent from a config, evaluation episodes (success,
  baselines), the agent checkpoint's format, and ``Policy`` (a trained policy loaded from its run);
- :mod:`dsae.rl.trainer`: ``run_rl``, the training loop of ``scripts/train_rl.py``;
- :mod:`dsae.rl.imitation`: ``run_imitation``, DAgger from a state expert to a keypoint policy
  (``scripts/imitate.py``).
"""

from dsae.rl.config import DAggerConfig, ImitationRunConfig, RLRunConfig, SACConfig, register
from dsae.rl.imitation import run_imitation
from dsae.rl.policy import Policy, evaluate_policy
from dsae.rl.trainer import run_rl
from dsae.rl.wrappers import KeypointObservation, KeypointObservationVector, PixelObservation

__all__ = ["DAggerConfig", "ImitationRunConfig", "KeypointObservation", "KeypointObservationVector",
           "PixelObservation", "Policy", "RLRunConfig", "SACConfig", "evaluate_policy", "register", "run_imitation",
           "run_rl"]
