"""The schemas of ``scripts/train_rl.py`` (:class:`RLRunConfig` and its ``rl`` group,
:class:`SACConfig`) and of ``scripts/imitate.py`` (:class:`ImitationRunConfig`, :class:`DAggerConfig`).

Each default lives here, once; ``configs/train_rl.yaml``, ``configs/rl/sac.yaml`` and
``configs/imitate.yaml`` state only what differs from it. The comment beside a field is its
meaning (``--help`` prints it). A config checks itself when it is built (from Hydra or in
Python) and names the first bad setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from dsae.checkpoint import resume_requested
from dsae.config import LoggerConfig, check_at_least, default_scene, schema_node
from dsae.errors import ConfigError
from envs import EnvConfig

OBS_MODES = ("state", "pixels", "keypoints")


def task_scene() -> EnvConfig:
    """RL's default scene: Reacher from the task's own start states (``configs/train_rl.yaml``
    says the same; a test keeps the two equal)."""
    return replace(default_scene(), randomize_arm=False)


@dataclass
class SACConfig:
    """Soft actor-critic: the ``rl`` config group. Budgets and intervals count env steps."""

    steps: int = 20000  # env steps (one update per step after init_steps)
    init_steps: int = 1000  # uniform random actions first (the replay buffer's warm-up)
    batch_size: int = 128  # transitions per update
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # actor and critic MLP widths
    lr: float = 1e-3  # actor, critic and image encoder learning rate
    alpha_lr: float = 1e-3  # entropy weight learning rate
    gamma: float = 0.99  # discount
    tau: float = 0.01  # target critic EMA rate
    encoder_tau: float = 0.05  # target image encoder EMA rate (pixels, fine-tuned keypoints)
    init_temperature: float = 0.1  # initial entropy weight alpha
    target_entropy: Optional[float] = None  # None: -(action dims)
    updates_per_step: int = 1  # gradient updates per env step
    buffer_size: Optional[int] = None  # None: rl.steps (nothing is ever dropped)
    augment: bool = True  # random shift of image observations (DrQ); no effect on vectors
    shift_pad: int = 4  # pixels of random shift each way
    pixel_channels: int = 32  # obs=pixels: conv width
    pixel_features: int = 50  # obs=pixels: feature size after the conv stack
    finetune_encoder: bool = False  # obs=keypoints: train the DSAE encoder with the critic
    keypoints: Optional[list[int]] = None  # obs=keypoints: indices to keep (None: all)
    top_k: Optional[int] = None  # obs=keypoints: keep the k most present keypoints each frame
    presence_threshold: Optional[float] = None  # obs=keypoints: keep keypoints at least this present
    kalman: bool = False  # obs=keypoints: Kalman-filter the keypoints
    eval_every: int = 2000  # env steps between deterministic evaluations
    eval_episodes: int = 10  # evaluation episodes, the same seeds in every run
    checkpoint_every: int = 2000  # env steps between checkpoints (taken at episode ends)
    log_every: int = 1000  # env steps between training-loss logs
    random_return: Optional[float] = None  # the normalised score's zero (None: the random baseline's return)
    state_return: Optional[float] = None  # obs=state's final return, for the normalised score

    def __post_init__(self) -> None:
        check_at_least(self, "rl", 1, "steps", "batch_size", "eval_every", "eval_episodes", "checkpoint_every",
                       "log_every", "updates_per_step")
        if not 0 <= self.init_steps < self.steps:
            raise ConfigError(f"rl.init_steps must be in [0, rl.steps={self.steps}), got {self.init_steps}")
        if not 0 < self.gamma < 1 or not 0 < self.tau <= 1 or not 0 < self.encoder_tau <= 1:
            raise ConfigError("rl.gamma must be in (0, 1) and rl.tau, rl.encoder_tau in (0, 1]")


@dataclass
class RunSettings:
    """What every run of ``scripts/train_rl.py`` and ``scripts/imitate.py`` has besides its task."""

    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0  # weights, collected transitions and training episodes
    device: str = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)
    resume: Optional[str] = None  # true: this or the unfinished run of this script with these settings; or a run folder
    progress: bool = True  # tqdm progress bar


@dataclass
class RLRunConfig(RunSettings):
    """Top-level schema of ``configs/train_rl.yaml``."""

    obs: str = "keypoints"  # state (the env's own vector) | pixels (vision from scratch) | keypoints (the DSAE's)
    encoder: Optional[str] = None  # obs=keypoints: a run folder of scripts/train.py (or its checkpoints/last.pt)
    env: EnvConfig = field(default_factory=task_scene)  # the scene (configs/env/<name>.yaml)
    rl: SACConfig = field(default_factory=SACConfig)
    init: Optional[str] = None  # a scripts/train_rl.py run folder of the same obs and scene: start from its agent's weights (not its optimisers, buffer or step), e.g. to go on under other env.reward_weights

    def __post_init__(self) -> None:
        if self.obs not in OBS_MODES:
            raise ConfigError(f"obs must be one of {OBS_MODES}, got {self.obs!r}")
        if self.obs == "keypoints" and not self.encoder and not resume_requested(self.resume):
            raise ConfigError("obs=keypoints needs a trained DSAE: pass encoder=PATH (a run folder of "
                              "scripts/train.py or its checkpoints/last.pt); `make train` makes one")
        if self.rl.finetune_encoder and self.obs != "keypoints":
            raise ConfigError(f"rl.finetune_encoder=true only applies to obs=keypoints (got obs={self.obs})")


@dataclass
class DAggerConfig:
    """Behaviour cloning with on-policy relabelling (DAgger, Ross et al. 2011): the ``imitation``
    settings. Round i lets the expert act at each step with probability ``beta ** i`` (round 0:
    the expert's own episodes), the student otherwise; the expert labels every step."""

    rounds: int = 32  # collect, relabel, train: this many times (on Pusher the student still gained from 24 to 32)
    episodes_per_round: int = 10  # episodes collected each round
    beta: float = 0.5  # the expert acts with probability beta ** round at each step of a round
    updates_per_round: int = 1000  # gradient steps on all the labelled steps so far, each round
    batch_size: int = 256  # labelled steps per gradient step
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # the policy head's MLP widths
    lr: float = 1e-3  # policy head learning rate
    finetune_encoder: bool = False  # train the DSAE encoder through the policy loss too (stores frames)
    encoder_lr: float = 1e-4  # finetune_encoder: the encoder's learning rate
    eval_episodes: int = 20  # deterministic evaluation episodes after each round (the fixed seeds of train_rl)

    def __post_init__(self) -> None:
        check_at_least(self, "imitation", 1, "rounds", "episodes_per_round", "updates_per_round", "batch_size",
                       "eval_episodes")
        if not 0 <= self.beta <= 1:
            raise ConfigError(f"imitation.beta must be in [0, 1], got {self.beta}")


@dataclass
class ImitationRunConfig(RunSettings):
    """Top-level schema of ``configs/imitate.yaml``. The scene is the expert's, rendered as the
    encoder's training frames were."""

    expert: Optional[str] = None  # a scripts/train_rl.py obs=state run folder: the expert that labels
    encoder: Optional[str] = None  # a scripts/train.py run folder of the same scene: the student's keypoints
    imitation: DAggerConfig = field(default_factory=DAggerConfig)

    def __post_init__(self) -> None:
        if not resume_requested(self.resume):
            for key, made_by in (("expert", "scripts/train_rl.py obs=state"), ("encoder", "scripts/train.py")):
                if not getattr(self, key):
                    raise ConfigError(f"imitation needs {key}=PATH: a run folder of {made_by}")


def register() -> None:
    """Register :class:`RLRunConfig` and :class:`ImitationRunConfig` with Hydra's ConfigStore as
    ``rl_base_config`` and ``imitate_base_config`` (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from dsae.config import register as register_dsae

    register_dsae()  # the help resolver
    ConfigStore.instance().store(name="rl_base_config", node=schema_node(RLRunConfig))
    ConfigStore.instance().store(name="imitate_base_config", node=schema_node(ImitationRunConfig))
