"""Typed configuration: the dataclass schema every Hydra config is checked against.

``configs/config.yaml`` composes the groups (env/, model/, train/, logger/) on top of
:class:`Config`, registered with Hydra's ConfigStore as ``base_config``; a misspelt key or a
value of the wrong type fails at start-up with a message that names the key. The package
itself takes these dataclasses, so it is usable without Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from envs import EnvConfig
from dsae.model import ModelConfig


@dataclass
class DataConfig:
    """Where the dataset lives and how it is collected."""

    dir: Optional[str] = None  # None: data/<env>-<hash of the settings below and env/>
    episodes: int = 400
    workers: int = 2  # parallel env processes (gymnasium AsyncVectorEnv); 1 = in-process
    seed: int = 0
    policy: str = "pd"  # "pd": PD control to random joint targets; "random": uniform actions
    val_fraction: float = 0.1  # the last episodes, held out for evaluation


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 32  # frame triples per step (3x as many images)
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # "cosine" or "constant"
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    log_every: int = 25
    eval_every: int = 500  # held-out reconstruction error
    image_every: int = 500  # keypoint overlay and reconstruction images to the logger
    checkpoint_every: int = 250
    resume: Optional[str] = None  # "true"/"latest": the unfinished run with these settings; or a run folder / checkpoint
    probe_frames: int = 6000  # at most this many training frames fit the linear probe
    amp: str = "auto"  # "auto": bf16 autocast on CUDA and on CPUs with native bf16; "bf16"; "none" (float32)
    channels_last: Optional[bool] = None  # None: on CUDA only (measured slower on CPU)
    compile: bool = False  # torch.compile the training step's forward and loss
    data_on_device: Optional[bool] = None  # keep uint8 frames on the device; None: when they fit


@dataclass
class LoggerConfig:
    backend: str = "wandb"  # "wandb" or "none"
    mode: str = "offline"  # wandb mode: "offline" (no account needed), "online", "disabled"
    project: str = "dsae"
    entity: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class VisConfig:
    """scripts/visualize.py: videos of fresh rollouts with tracked keypoints."""

    fps: int = 10
    scale: int = 4  # the camera frame is enlarged this many times
    trail: int = 8  # steps of trail behind each keypoint
    top_k: Optional[int] = None  # keep only the k most present keypoints (others drawn dimmed)
    presence_threshold: Optional[float] = None  # keep keypoints at least this present
    process_std: float = 0.05  # Kalman filter: acceleration noise per step (normalised units)
    measurement_std: float = 0.03  # Kalman filter: keypoint noise (normalised units)
    sheet_frames: int = 8  # frames in each contact sheet
    temperatures: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.3, 1.0])
    seed: int = 1000  # episodes use seeds seed, seed + 1, ... (not the training seeds)


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when present), "cpu", "cuda", "cuda:1", ...
    checkpoint: Optional[str] = None  # evaluate.py / visualize.py: the checkpoint (or run folder)
    episodes: int = 3  # visualize.py: fresh episodes to film
    policy: Optional[str] = None  # visualize.py: a scripts/train_rl.py run whose agent acts
    vis: VisConfig = field(default_factory=VisConfig)


def register() -> None:
    """Register :class:`Config` with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="base_config", node=Config)


def to_config(cfg: Any, schema: type = Config) -> Any:
    """An OmegaConf DictConfig (from Hydra) or a ``schema`` instance -> a ``schema`` dataclass
    instance (``Config``, or e.g. ``dsae.rl.RLRunConfig``)."""
    if isinstance(cfg, schema):
        return cfg
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise TypeError(f"expected a config composed on the {schema.__name__} schema, got {type(obj).__name__}")
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain dicts and lists (for JSON, checkpoints and loggers)."""
    from dataclasses import asdict

    return asdict(cfg)


def from_dict(data: dict[str, Any], schema: type = Config) -> Any:
    """The inverse of :func:`to_dict`, checked against ``schema``."""
    from omegaconf import OmegaConf

    return to_config(OmegaConf.merge(OmegaConf.structured(schema), data), schema)
