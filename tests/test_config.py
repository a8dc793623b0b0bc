"""Hydra configs compose onto the dataclass schema; typos and wrong types fail with the key."""

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from dsae.config import Config, register, to_config

CONFIGS = str(Path(__file__).resolve().parents[1] / "configs")
register()


def _compose(overrides):
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("overrides", [[], ["env=pusher"], ["model=finn2016"], ["model=gaussian16"], ["logger=none"]])
def test_groups_compose(overrides):
    cfg = to_config(_compose(overrides))
    assert isinstance(cfg, Config)
    m = cfg.model
    if overrides == ["model=finn2016"]:  # the paper's model, whatever the defaults become
        assert cfg.env.image_size == 240 and m.recon_size == 60 and m.kernels == [7, 5, 5]
        assert (m.decoder, m.num_keypoints, m.keypoint_frame, m.padding) == ("fc", 16, "grid", "valid")
    elif overrides == ["model=gaussian16"]:  # the default before 2026-11-24, as its figures were measured
        assert (m.decoder, m.num_keypoints, m.keypoint_frame, m.padding) == ("gaussian", 16, "grid", "valid")
        assert m.kernels == [7, 5, 5] and m.decoder_channels == 32 and m.channels == [64, 32, 16]
        assert m.decoder_sigma == 0.1 and m.decoder_sigma_end is None and m.equivariance_weight == 0
    elif overrides != ["env=pusher"]:  # the setting docs/small_objects.md measured
        assert (m.decoder, m.num_keypoints, m.keypoint_frame, m.padding) == ("transport", 96, "image", "replicate")
        assert m.channels == [64, 32, 16] and m.kernels == [3, 5, 5] and cfg.env.image_size == 64
        assert (m.local_keypoints, m.local_count, m.local_warmup) == (None, 64, 0.3)
        assert (m.wide_input, m.wide_temperature) == ("foreground", 2.0)  # since 2026-12-05: docs section 25
        assert (m.equivariance_weight, m.equivariance_share) == (0.1, 1.0)  # since 2026-12-06: docs section 35
        assert (m.decoder_sigma, m.decoder_sigma_end, m.search_weight) == (0.2, 0.07, 10.0)


def test_the_fine_model_sees_what_the_default_sees_on_a_grid_twice_as_fine():
    import torch

    from dsae.model import DeepSpatialAutoencoder

    default, fine = (to_config(_compose(o)).model for o in ([], ["model=fine"]))
    assert fine.strides == [1, 1, 1] and fine.kernels == [3, 9, 9]
    models = [DeepSpatialAutoencoder(m, 64).eval() for m in (default, fine)]
    frames = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = [model.encoder.feature_maps(model.encoder.inputs(frames)) for model in models]
    assert maps[0].shape[-2:] == (32, 32) and maps[1].shape[-2:] == (64, 64)
    assert maps[0].shape[:2] == maps[1].shape[:2] == (2, 96)

    def field(kernels, strides):  # the pixels one cell of the last map sees
        return 1 + sum((k - 1) * math.prod(strides[:i]) for i, k in enumerate(kernels))

    for m in (default, fine):  # the same fields: 3 px for the local maps, 19 px for the wide ones
        assert (field(m.kernels[:1], m.strides), field(m.kernels, m.strides)) == (3, 19)


def test_fewer_keypoints_from_the_command_line_keep_two_thirds_of_them_local():
    m = to_config(_compose(["model.num_keypoints=8"])).model
    assert (m.num_keypoints, m.local_count) == (8, 5)


def test_misspelt_key_is_named():
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["model.num_keypointz=8"])
    assert "num_keypointz" in str(err.value) + str(err.value.__cause__)


def test_wrong_type_is_named():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        to_config(_compose(["model.num_keypoints=many"]))
    assert "num_keypoints" in str(err.value) + str(err.value.__cause__)


# --- Each default lives in one place: the schemas; the YAML files state only what differs. ---

from dataclasses import fields, replace  # noqa: E402

from omegaconf import OmegaConf  # noqa: E402

from dsae.config import (  # noqa: E402
    DataConfig,
    LoggerConfig,
    ModelConfig,
    TrainConfig,
    VisConfig,
    describe,
    field_comments,
    schema_node,
)
from dsae.errors import ConfigError  # noqa: E402
from dsae.rl.config import DAggerConfig, ImitationRunConfig, RLRunConfig, SACConfig  # noqa: E402
from envs import EnvConfig, load_scene  # noqa: E402

GROUP_SCHEMAS = {"model": ModelConfig, "train": TrainConfig, "rl": SACConfig, "logger": LoggerConfig, "env": EnvConfig,
                 "data": DataConfig}
TOP_SCHEMAS = {"config.yaml": Config, "train_rl.yaml": RLRunConfig, "imitate.yaml": ImitationRunConfig}


def _leaves(node, prefix=""):
    """Dotted key -> value of every leaf a YAML file states (lists and dicts as leaves)."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value and key not in ("objects", "geom_rgba"):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _select(node, dotted):
    return OmegaConf.select(node, dotted, throw_on_missing=False)


def _restated(stated: dict, baseline) -> list[str]:
    return [f"{k}: {v!r}" for k, v in stated.items() if _select(baseline, k) == v]


@pytest.mark.parametrize("path", sorted(Path(CONFIGS).glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_group_files_state_only_what_differs_from_the_schema(path):
    if path.parent.name not in GROUP_SCHEMAS:
        pytest.skip(f"{path.parent.name}/ is not a group of the schema")  # hydra/launcher: Hydra's plugin's own
    raw = OmegaConf.to_container(OmegaConf.load(path)) or {}
    if path.name == "finn2016.yaml":  # @package _global_: keys under env. and model.
        baseline = schema_node(Config)
    else:
        baseline = OmegaConf.structured(GROUP_SCHEMAS[path.parent.name])
    assert not _restated(_leaves(raw), baseline), f"{path} restates schema defaults (a second copy to drift)"


@pytest.mark.parametrize("name", sorted(TOP_SCHEMAS))
def test_top_level_files_state_only_what_differs_from_their_groups(name):
    raw = OmegaConf.to_container(OmegaConf.load(Path(CONFIGS) / name))
    baseline = schema_node(TOP_SCHEMAS[name])
    for entry in raw["defaults"]:
        if isinstance(entry, dict):
            (group, option), = entry.items()
            baseline = OmegaConf.merge(baseline, {group: OmegaConf.load(Path(CONFIGS) / group / f"{option}.yaml") or {}})
    stated = _leaves({k: v for k, v in raw.items() if k not in ("defaults", "hydra")})
    assert not _restated(stated, baseline), f"{name} restates defaults of its schema or groups"


@pytest.mark.parametrize("schema", [Config, ModelConfig, TrainConfig, DataConfig, LoggerConfig, VisConfig,
                                    EnvConfig, RLRunConfig, SACConfig, ImitationRunConfig, DAggerConfig])
def test_every_setting_has_its_meaning_written_once_beside_it(schema):
    nested = {f.name for f in fields(schema)
              if f.name in ("env", "model", "train", "data", "logger", "vis", "rl", "imitation")}
    missing = [f.name for f in fields(schema) if f.name not in nested and f.name not in field_comments(schema)]
    assert not missing, f"{schema.__name__} fields without a comment: {missing}"


def test_help_lists_every_setting_with_its_default_and_meaning():
    text = describe(Config)
    assert "  model.num_keypoints = 96  # K (paper: 16)" in text
    assert "  train.amp = 'auto'  # auto: bf16 autocast" in text
    assert "  env.name = 'reacher'" in text and "  vis.seed = 1000" in text


def test_help_of_a_run_schema_lists_its_own_settings_first_then_the_shared_ones_with_their_meaning():
    for schema, first in ((RLRunConfig, "  obs = 'keypoints'"), (ImitationRunConfig, "  expert = None")):
        text = describe(schema)
        assert text.index(first) < text.index("  seed = 0  # weights, collected transitions") < text.index(
            "  progress = True  # tqdm progress bar")


def test_python_defaults_are_the_hydra_defaults():
    """Config() in Python and `python scripts/train.py` with no overrides hold the same settings;
    so do RLRunConfig(obs=...) and `python scripts/train_rl.py obs=...`."""
    assert to_config(_compose([])) == Config()
    from dsae.rl.config import register as register_rl

    register_rl()
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        composed = compose(config_name="train_rl", overrides=["obs=state"])
    assert to_config(composed, RLRunConfig) == RLRunConfig(obs="state")
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        composed = compose(config_name="imitate", overrides=["expert=a", "encoder=b"])
    assert to_config(composed, ImitationRunConfig) == ImitationRunConfig(expert="a", encoder="b")


def test_resume_false_still_needs_an_encoder():
    with pytest.raises(ConfigError, match="needs a trained DSAE"):
        RLRunConfig(obs="keypoints", resume="False")  # Hydra's string for resume=false
    RLRunConfig(obs="keypoints", resume="true")  # the encoder comes from the run resumed


@pytest.mark.parametrize("build, key, overrides", [
    (lambda: TrainConfig(steps=-1), "train.steps", ["train.steps=-1"]),
    (lambda: TrainConfig(amp="fp8"), "train.amp", ["train.amp=fp8"]),
    (lambda: ModelConfig(decoder="mlp"), "model.decoder", ["model.decoder=mlp"]),
    (lambda: ModelConfig(channels=[8], kernels=[3, 3], strides=[1]), "model.channels", None),
    (lambda: DataConfig(val_fraction=1.5), "data.val_fraction", ["data.val_fraction=1.5"]),
    (lambda: LoggerConfig(mode="loud"), "logger.mode", ["logger.mode=loud"]),
    (lambda: SACConfig(init_steps=30000), "rl.init_steps", None),
    (lambda: RLRunConfig(obs="keypoints"), "obs=keypoints needs a trained DSAE", None),
    (lambda: ImitationRunConfig(expert="a"), "imitation needs encoder=PATH", None),
    (lambda: DAggerConfig(beta=2.0), "imitation.beta", None),
    (lambda: replace(Config(), episodes=0), "episodes", ["episodes=0"]),
])
def test_a_config_built_in_python_is_checked_like_one_from_hydra(build, key, overrides):
    with pytest.raises(ConfigError, match=key):
        build()
    if overrides:
        with pytest.raises(ConfigError, match=key):
            to_config(_compose(overrides))


def test_a_scene_is_checked_when_built():
    from envs import SceneError

    with pytest.raises(SceneError, match="env.object_radius"):
        load_scene("reacher", object_radius=-1.0)
    with pytest.raises(SceneError, match="env.name is empty"):
        EnvConfig()
