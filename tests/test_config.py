"""Hydra configs compose onto the dataclass schema; typos and wrong types fail with the key."""

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


@pytest.mark.parametrize("overrides", [[], ["env=pusher"], ["model=finn2016"], ["logger=none"]])
def test_groups_compose(overrides):
    cfg = to_config(_compose(overrides))
    assert isinstance(cfg, Config)
    if overrides == ["model=finn2016"]:
        assert cfg.env.image_size == 240 and cfg.model.recon_size == 60


def test_misspelt_key_is_named():
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["model.num_keypointz=8"])
    assert "num_keypointz" in str(err.value) + str(err.value.__cause__)


def test_wrong_type_is_named():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        to_config(_compose(["model.num_keypoints=many"]))
    assert "num_keypoints" in str(err.value) + str(err.value.__cause__)
