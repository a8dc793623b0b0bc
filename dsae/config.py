"""Typed configuration: the dataclass schema every Hydra config of the DSAE scripts is checked against.

Each default lives here, once (the scene's settings live in ``envs.EnvConfig`` and the scene
files, RL's in :mod:`dsae.rl.config`); the YAML files of ``configs/`` state only what differs
from these defaults, and a test fails if one restates a default. The comment beside a field is
its meaning: ``python scripts/train.py --help`` prints them (:func:`describe`). A config checks
itself when it is built, from Hydra or in Python, and raises :class:`~dsae.errors.ConfigError`
naming the first bad setting.

``configs/config.yaml`` composes the groups (env/, model/, train/, logger/) on top of
:class:`Config`, registered with Hydra's ConfigStore as ``base_config``; a misspelt key or a
value of the wrong type fails at start-up with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dsae.errors import ConfigError
from envs import EnvConfig, load_scene


def check_at_least(section: Any, prefix: str, minimum: float, *keys: str) -> None:
    """Raise ConfigError naming ``prefix.key`` when a field of ``section`` is below ``minimum``."""
    for key in keys:
        if getattr(section, key) < minimum:
            name = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{name} must be >= {minimum}, got {getattr(section, key)}")


def check_choice(value: Any, name: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {choices}, got {value!r}")


def default_scene() -> EnvConfig:
    """The scene of a config built in Python without one: Reacher, as Hydra's ``env: reacher``."""
    return load_scene("reacher")


PADDINGS = ("valid", "same", "replicate")
KEYPOINT_FRAMES = ("grid", "image")
NORMS = ("none", "batch", "group")
DATA_SOURCES = ("collect", "videos", "hdf5")
EXPLORATION_POLICIES = ("pd", "random")  # data.policy values other than a run folder
DECODERS = ("gaussian", "fc", "transport")
RECON_LOSSES = ("mse", "l1")
WIDE_INPUTS = ("foreground", "frame")


@dataclass
class ModelConfig:
    """The ``model`` group: architecture and loss (``model=finn2016`` is the paper's)."""

    channels: list[int] = field(default_factory=lambda: [64, 32, 16])  # conv widths of the encoder
    kernels: list[int] = field(default_factory=lambda: [3, 5, 5])  # conv kernel sizes (paper: 7, 5, 5)
    strides: list[int] = field(default_factory=lambda: [2, 1, 1])  # conv strides
    padding: str = "replicate"  # valid (paper), same (zero-padded to keep each map's size) or replicate (the same, borders repeated)
    norm: str = "batch"  # none (paper), batch or group, after each conv
    num_keypoints: int = 96  # K (paper: 16)
    local_keypoints: Optional[int] = None  # of the K, how many read only a first conv's features (through 1x1 convs; their own first conv with model.wide_input=foreground): each answers to what one patch of the first kernel's size holds, not to the shape around it; None: two thirds of K, rounded down (64 of 96; half before 2026-12-06, which checkpoints saved then keep); 0: none
    project: Optional[bool] = None  # a 1x1 conv from channels[-1] to K; None: only when they differ
    keypoint_frame: str = "image"  # image: a keypoint sits on the pixel its feature-map cell looks at (its receptive field's centre); grid: the feature grid stretched over the whole image (the paper's, and every checkpoint saved before this option)
    temperature: float = 0.1  # initial softmax temperature (paper: 1.0)
    learn_temperature: bool = True  # learn the temperature (paper) or keep it fixed
    recon_size: int = 32  # side of the reconstruction target
    recon_color: bool = False  # reconstruct the frame in colour (3 channels) rather than in grayscale (paper)
    decoder: str = "transport"  # transport (the frame seen through a window at each keypoint), gaussian (keypoints drawn as maps, then convs) or fc (the paper's)
    decoder_hidden: list[int] = field(default_factory=lambda: [512])  # fc: hidden widths; [] = the paper's linear layer
    decoder_channels: int = 16  # gaussian, transport: width of its conv layers
    decoder_sigma: float = 0.2  # gaussian, transport: blob (window) std in normalised units ([-1, 1] spans the image) that training starts with
    decoder_sigma_end: Optional[float] = 0.07  # gaussian, transport: the window std the training ends with, reached linearly from decoder_sigma (the wide start finds the objects, the narrow end centres keypoints on them); null: decoder_sigma throughout
    decoder_kernel: int = 3  # gaussian: conv kernel size; 1 lets a keypoint draw only around itself
    slow_weight: float = 0.01  # weight of g_slow in the loss (paper: 1.0)
    recon_loss: str = "mse"  # mse (paper) or l1: the per-pixel reconstruction error; l1 weighs a faint object's pixels by its contrast, not its contrast squared
    foreground_weight: float = 0.0  # pixels weigh 1 + this * |target - the scene's median image|
    separation_weight: float = 0.0  # weight of a penalty on keypoints closer than separation_sigma
    separation_sigma: float = 0.1  # separation penalty's reach, normalised units
    equivariance_weight: float = 0.1  # 0 = off (paper); weight of ||keypoints(turned frame) - turned keypoints||^2 (Thewlis et al. 2017): the frames that equivariance_share picks turned about the image centre; only keypoints that have found something count
    wide_equivariance: float = 1.0  # the wide keypoints' share of the equivariance term as a multiple of the local ones' (model.equivariance_weight): at 10 a wide keypoint pays ten times as much for not turning with the frame while the local ones pay what they would alone; without local keypoints it does nothing
    equivariance_share: float = 1.0  # the equivariance term turns the middle frame of one triple in this many (4: 1/12 more images through the encoder; 1: every triple's), and below 1 the first and then the last frames too (0.3333333: every frame)
    equivariance_angle: float = 180.0  # the turn is uniform within +-this many degrees
    scene_difference: bool = False  # the encoder also reads each frame less the scene's median frame (6 input channels), so what differs from the static scene stands out even where it is faint against it (a grey arm on a grey table)
    wide_input: str = "foreground"  # what the wide keypoints' stack reads beside local keypoints: foreground, how far each pixel is from the scene's median frame (per channel, min(|frame - median| / 0.1, 1): a grey gripper looks the same over a light table as over a black floor, and what never moves is left to the local keypoints, which then read the frame through a first conv of their own), or frame (the frame itself, as every keypoint read it before 2026-12-05); without local keypoints every keypoint reads the frame
    wide_temperature: float = 2.0  # the wide keypoints' softmax temperature as a multiple of the local ones' (model.temperature): their maps are divided by it before the shared softmax, so at 2 (1 before 2026-12-05) a wide keypoint weighs in the cells about its map's peak too, which brought Pusher's gripper from 3.8 to 3.1 px beside the foreground; without local keypoints it does nothing
    background_jitter: float = 0.0  # in training, this share of the triples show the encoder a recoloured scene: pixels like the scene's median frame become that frame times a random gain plus a random tint (one draw per triple), so a keypoint learns an object apart from what lies behind it (the reconstruction target is the frame as it was)
    concentration_weight: float = 0.03  # 0 = off; weight of the mean variance of each local keypoint's softmax over its map (every keypoint's when none is local; Zhang et al. 2018's concentration term), the temperature held fixed: a small object's map answers in one place, not over several
    concentration_until: float = 0.3  # the share of the steps during which concentration_weight counts (1: all of them); 0.3, the local warmup's: maps held in one place while the local keypoints take the small objects, then free to spread over a tip of a pixel or two
    search_weight: float = 10.0  # 0 = off; during model.local_warmup each local keypoint's softmax also learns, at this weight, from where opening the transport decoder's window would lower the error (a gradient alone: what the decoder draws is unchanged), so that a map whose keypoint is far from a small object still feels it (10: finds stock Reacher's target where no window showed it); without local keypoints, a local warmup or the transport decoder it does nothing
    local_warmup: float = 0.3  # for this share of the steps only the local keypoints open windows in the transport decoder (the others wait), so the keypoints that answer to small patches take the small objects first; without local keypoints or that decoder there is nothing to hold back

    @property
    def reads_foreground(self) -> bool:
        """Whether the wide keypoints' stack reads the foreground (``wide_input``), which it does beside local keypoints alone."""
        return self.wide_input == "foreground" and self.local_count > 0

    @property
    def local_count(self) -> int:
        """How many of the K keypoints are local: ``local_keypoints``, or two thirds of K when that is None."""
        return self.num_keypoints * 2 // 3 if self.local_keypoints is None else self.local_keypoints

    def __post_init__(self) -> None:
        if not (len(self.channels) == len(self.kernels) == len(self.strides)) or not self.channels:
            raise ConfigError("model.channels, model.kernels and model.strides must be non-empty and of equal length")
        check_choice(self.padding, "model.padding", PADDINGS)
        check_choice(self.keypoint_frame, "model.keypoint_frame", KEYPOINT_FRAMES)
        check_choice(self.norm, "model.norm", NORMS)
        check_choice(self.decoder, "model.decoder", DECODERS)
        check_choice(self.recon_loss, "model.recon_loss", RECON_LOSSES)
        check_at_least(self, "model", 1, "num_keypoints", "recon_size", "decoder_channels", "decoder_kernel")
        if self.decoder_kernel % 2 == 0:
            raise ConfigError(f"model.decoder_kernel must be an odd size >= 1, got {self.decoder_kernel}")
        if not 0 <= self.local_count < self.num_keypoints:
            raise ConfigError(f"model.local_keypoints must be within 0..{self.num_keypoints - 1} (fewer than "
                              f"model.num_keypoints={self.num_keypoints}), got {self.local_keypoints}")
        if self.project is False and self.channels[-1] != self.num_keypoints - self.local_count:
            raise ConfigError(
                f"model.num_keypoints={self.num_keypoints} less {self.local_count} local keypoints differs from "
                f"the last conv's {self.channels[-1]} channels: set model.project=true for a 1x1 projection, or make "
                "model.channels end in that number")
        if self.local_count and (
                self.padding == "valid" or len(self.channels) < 2
                or any(s != 1 or k % 2 == 0 for s, k in zip(self.strides[1:], self.kernels[1:]))):
            raise ConfigError(
                "model.local_keypoints needs maps of one size whose cells look at the same pixels: two or more convs, "
                "odd kernels at stride 1 after the first, and padding same or replicate (not valid); "
                "or set model.local_keypoints=0")
        check_choice(self.wide_input, "model.wide_input", WIDE_INPUTS)
        if self.scene_difference and self.reads_foreground:
            raise ConfigError("model.scene_difference and model.wide_input=foreground both change what the encoder reads: "
                              "set model.wide_input=frame with model.scene_difference=true")
        if not 0 < self.wide_temperature < math.inf:
            raise ConfigError(f"model.wide_temperature must be a finite number > 0 (1: the local keypoints' temperature), got {self.wide_temperature}")
        if not 0 <= self.wide_equivariance < math.inf:
            raise ConfigError(f"model.wide_equivariance must be a finite number >= 0 (1: the local keypoints' weight), got {self.wide_equivariance}")
        if not 1 / 3 - 1e-6 <= self.equivariance_share < math.inf:
            raise ConfigError(f"model.equivariance_share must be a finite number >= 1/3 (one triple in this many; 1/3: every frame), got {self.equivariance_share}")
        if not 0 <= self.background_jitter <= 1:
            raise ConfigError(f"model.background_jitter must be in [0, 1] (a share of the triples), got {self.background_jitter}")
        if self.concentration_weight < 0:
            raise ConfigError(f"model.concentration_weight must be >= 0 (0: off), got {self.concentration_weight}")
        if not 0 < self.concentration_until <= 1:
            raise ConfigError(f"model.concentration_until must be in (0, 1] (a share of the steps), got {self.concentration_until}")
        if self.search_weight < 0:
            raise ConfigError(f"model.search_weight must be >= 0 (0: off), got {self.search_weight}")
        if not 0 <= self.local_warmup < 1:
            raise ConfigError(f"model.local_warmup must be in [0, 1), got {self.local_warmup}")
        if not 0 < self.equivariance_angle <= 180:
            raise ConfigError(f"model.equivariance_angle must be in (0, 180] degrees, got {self.equivariance_angle}")
        if self.decoder_sigma_end is not None and not self.decoder_sigma_end > 0:
            raise ConfigError(f"model.decoder_sigma_end must be > 0 (or null: decoder_sigma throughout), got {self.decoder_sigma_end}")
        if not self.temperature > 0 or not self.decoder_sigma > 0 or not self.separation_sigma > 0:
            raise ConfigError("model.temperature, model.decoder_sigma and model.separation_sigma must be > 0")


@dataclass
class DataConfig:
    """Where the dataset comes from and lives (``data=collect|videos|hdf5``)."""

    source: str = "collect"  # collect: run the scene; videos: a folder of video files; hdf5: robomimic's layout
    path: Optional[str] = None  # videos, hdf5: the recording (a folder of videos, or an HDF5 file)
    dir: Optional[str] = None  # None: data/<env>-<size>px-<hash> (collect) or data/<source>-<name>-<size>px-<hash>
    episodes: Optional[int] = 400  # exactly this many episodes are used (collected when fewer); None: all (imports only)
    workers: int = 2  # collect: parallel env processes (gymnasium AsyncVectorEnv); 1 = in-process
    seed: int = 0  # collect: episode i starts from seed + i
    policy: str = "pd"  # collect: pd (PD control to random joint targets), random (uniform actions), or a scripts/train_rl.py obs=state run of the scene (its agent acts, with noise)
    val_fraction: float = 0.1  # the last episodes, held out for evaluation
    in_memory: Optional[bool] = None  # frames read into memory; false: memory-mapped, read as needed; None: when they fit in half the free memory
    crop: bool = True  # videos, hdf5: centre-crop frames to a square before resizing (false: stretch them)
    camera: str = "agentview"  # hdf5: frames from data/demo_<i>/obs/<camera>_image
    action_key: str = "actions"  # hdf5: the actions of each demo (data/demo_<i>/<action_key>)
    state_keys: list[str] = field(default_factory=list)  # hdf5: obs keys concatenated into the robot state
    labels: dict[str, str] = field(default_factory=dict)  # hdf5: object -> obs key of its (T, 2) pixel positions

    def __post_init__(self) -> None:
        check_choice(self.source, "data.source", DATA_SOURCES)
        if self.source == "collect" and self.episodes is None:
            raise ConfigError("data.episodes=null (all) is for imported recordings; collecting needs a number")
        if self.source != "collect" and not self.path:
            raise ConfigError(f"data.source={self.source} needs data.path=PATH (the recording to import)")
        if self.episodes is not None:
            check_at_least(self, "data", 2, "episodes")  # train and held-out
        check_at_least(self, "data", 1, "workers")
        if self.policy not in EXPLORATION_POLICIES and not Path(self.policy).is_dir():
            raise ConfigError(f"data.policy must be {', '.join(EXPLORATION_POLICIES)} or the folder of a "
                              "scripts/train_rl.py obs=state run; "
                              f"got {self.policy!r}, which is neither")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")


LR_SCHEDULES = ("cosine", "constant")
AMP_MODES = ("auto", "bf16", "none")


@dataclass
class TrainConfig:
    """The ``train`` group: optimisation, logging intervals, resuming, speed options."""

    steps: int = 1000  # optimisation steps
    batch_size: int = 32  # frame triples per step (3x as many images)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    lr_schedule: str = "cosine"  # cosine (to 5% of lr) or constant
    grad_clip: float = 10.0  # max gradient norm; 0 disables
    log_every: int = 25  # steps between logged training scalars
    eval_every: int = 500  # steps between held-out reconstruction errors
    image_every: int = 500  # steps between keypoint overlay and reconstruction images
    checkpoint_every: int = 250  # steps between checkpoints
    resume: Optional[str] = None  # true: the unfinished run with these settings; or a run folder / checkpoint
    probe_frames: int = 6000  # at most this many training frames fit the linear probe
    amp: str = "auto"  # auto: bf16 autocast on CUDA and on CPUs with native bf16 (depends on the hardware); bf16; none (float32)
    channels_last: Optional[bool] = None  # None: on CUDA only (measured slower on CPU)
    compile: bool = False  # torch.compile the training step's forward and loss
    data_on_device: Optional[bool] = None  # keep uint8 frames on the device; None: when they fit

    def __post_init__(self) -> None:
        check_at_least(self, "train", 1, "steps", "batch_size", "log_every", "eval_every", "image_every",
                       "checkpoint_every", "probe_frames")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        check_choice(self.lr_schedule, "train.lr_schedule", LR_SCHEDULES)
        check_choice(self.amp, "train.amp", AMP_MODES)


@dataclass
class LoggerConfig:
    """The ``logger`` group (``logger=none`` turns wandb off; files are written either way)."""

    backend: str = "wandb"  # wandb or none
    mode: str = "offline"  # wandb mode: offline (no account needed), online, disabled
    project: str = "dsae"  # wandb project
    entity: Optional[str] = None  # wandb entity (team or user)
    tags: list[str] = field(default_factory=list)  # wandb tags

    def __post_init__(self) -> None:
        check_choice(self.backend, "logger.backend", ("wandb", "none"))
        check_choice(self.mode, "logger.mode", ("offline", "online", "disabled"))


@dataclass
class VisConfig:
    """scripts/visualize.py: videos of fresh rollouts with tracked keypoints."""

    fps: int = 10  # video frame rate
    scale: int = 4  # the camera frame is enlarged this many times
    trail: int = 8  # steps of trail behind each keypoint
    top_k: Optional[int] = None  # keep only the k most present keypoints (others drawn dimmed)
    presence_threshold: Optional[float] = None  # keep keypoints at least this present
    process_std: float = 0.05  # Kalman filter: acceleration noise per step (normalised units)
    measurement_std: float = 0.03  # Kalman filter: keypoint noise (normalised units)
    sheet_frames: int = 8  # frames in each contact sheet
    temperatures: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1, 0.3, 1.0])  # the temperature panel's
    seed: int = 1000  # episodes use seeds seed, seed + 1, ... (not the training seeds)

    def __post_init__(self) -> None:
        check_at_least(self, "vis", 1, "fps", "scale", "sheet_frames")
        if not self.process_std > 0 or not self.measurement_std > 0:
            raise ConfigError("vis.process_std and vis.measurement_std must be > 0")


@dataclass
class Config:
    """Top-level schema of ``configs/config.yaml`` (train.py, collect.py, evaluate.py, visualize.py)."""

    env: EnvConfig = field(default_factory=default_scene)  # the scene (configs/env/<name>.yaml)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0  # weights, batches and the probe's frame choice
    device: str = "auto"  # auto (cuda when present), cpu, cuda, cuda:1, ...
    checkpoint: Optional[str] = None  # evaluate.py / visualize.py: the checkpoint (or run folder)
    dataset: Optional[str] = None  # evaluate.py: probe on this dataset folder's held-out episodes instead of the checkpoint's
    episodes: int = 3  # visualize.py: fresh episodes to film
    policy: Optional[str] = None  # visualize.py: a scripts/train_rl.py run whose agent acts (default: random actions)
    video: Optional[str] = None  # visualize.py: film the keypoints over this video file instead of fresh rollouts
    vis: VisConfig = field(default_factory=VisConfig)

    def __post_init__(self) -> None:
        check_at_least(self, "", 1, "episodes")


def register() -> None:
    """Register :class:`Config` with Hydra's ConfigStore (idempotent), and the resolver that
    ``hydra.help.template`` uses to print every field's meaning."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="base_config", node=schema_node(Config))
    if not OmegaConf.has_resolver("dsae_help"):
        OmegaConf.register_new_resolver("dsae_help", lambda schema: describe(_schema(schema)))


def schema_node(schema: type) -> Any:
    """``schema`` as an OmegaConf node to compose or merge onto. Its ``env`` starts from
    EnvConfig's field defaults, not from the Reacher scene that a Python ``Config()`` holds, so a
    scene file (or a saved config) fills it without inheriting Reacher's objects or markers."""
    from omegaconf import OmegaConf

    node = OmegaConf.structured(schema)
    if "env" in {f.name for f in dataclasses.fields(schema)}:
        node.env = OmegaConf.structured(EnvConfig)
    return node


def _schema(dotted: str) -> type:
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def field_comments(schema: type) -> dict[str, str]:
    """The comment written beside each field of a dataclass (and of its dataclass bases), from
    their source."""
    comments = {}
    for cls in reversed(schema.__mro__):
        if dataclasses.is_dataclass(cls):
            for line in inspect.getsource(cls).splitlines():
                found = re.match(r"\s+(\w+): [^#]*#\s?(.*)$", line)
                if found:
                    comments[found.group(1)] = found.group(2)
    return comments


def describe(schema: type, prefix: str = "", values: Any = None) -> str:
    """Every setting of ``schema`` (nested dataclasses too), one a line: ``key = default  # meaning``.
    ``values``: an instance whose values to show instead of the field defaults."""
    lines, comments = [], field_comments(schema)
    own = schema.__dict__.get("__annotations__", {})
    for f in sorted(dataclasses.fields(schema), key=lambda f: f.name not in own):  # its own fields first, then its bases'
        if values is not None:
            value = getattr(values, f.name)
        else:
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value):
            lines += ["", describe(type(value), f"{prefix}{f.name}.", value)]
        else:
            note = f"  # {comments[f.name]}" if f.name in comments else ""
            lines.append(f"  {prefix}{f.name} = {value!r}{note}")
    return "\n".join(lines)


def to_config(cfg: Any, schema: type = Config) -> Any:
    """An OmegaConf DictConfig (from Hydra) or a ``schema`` instance -> a ``schema`` dataclass
    instance (``Config``, or e.g. ``dsae.rl.config.RLRunConfig``), checked."""
    if isinstance(cfg, schema):
        return cfg
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise TypeError(f"expected a config composed on the {schema.__name__} schema, got {type(obj).__name__}")
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain dicts and lists (for JSON, checkpoints and loggers), with a model's
    ``local_keypoints`` written as the count it stands for, so that a saved config keeps its meaning
    if the rule for None changes (it did on 2026-12-06: ``checkpoint.model_settings_as_trained``)."""
    data = dataclasses.asdict(cfg)

    def resolve(config: Any, fields: dict[str, Any]) -> None:
        if isinstance(config, ModelConfig):
            fields["local_keypoints"] = config.local_count
        for f in dataclasses.fields(config):
            if dataclasses.is_dataclass(getattr(config, f.name)):
                resolve(getattr(config, f.name), fields[f.name])

    resolve(cfg, data)
    return data


def from_dict(data: dict[str, Any], schema: type = Config) -> Any:
    """The inverse of :func:`to_dict`, checked against ``schema``."""
    from omegaconf import OmegaConf

    return to_config(OmegaConf.merge(schema_node(schema), data), schema)
