"""Checkpoints are atomic and complete; load_encoder gives keypoints with no Hydra."""

import pytest
import torch

import dsae
from dsae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dsae.config import to_dict
from tests.conftest import tiny_config


def test_public_api_names():
    for name in ("DeepSpatialAutoencoder", "SpatialSoftmax", "load_encoder", "spatial_soft_argmax",
                 "KeypointObservation", "KeypointObservationVector", "PixelObservation",
                 "to_tf_contrib", "from_tf_contrib"):
        assert hasattr(dsae, name)


def test_missing_checkpoint_names_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nope.pt")):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="nope.pt"):
        dsae.load_encoder(tmp_path / "nope.pt")


def test_truncated_checkpoint_is_reported(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {}, "config": {}})
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(path)


def test_save_is_atomic_on_failure(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model": {"a": torch.ones(1)}, "config": {}})
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"model": Unpicklable(), "config": {}})
    assert path.read_bytes() == before, "a failed save leaves the previous checkpoint intact"
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"], "no temporary file left behind"


def test_load_encoder_round_trip(tmp_path):
    cfg = tiny_config(tmp_path)
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32)
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt",
                    {"model": model.state_dict(), "config": to_dict(cfg), "image_size": 32, "step": 0})
    encoder = dsae.load_encoder(tmp_path / "run", device="cpu")  # a run folder works too
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    kp = encoder(images)
    assert kp.shape == (3, cfg.model.num_keypoints, 2)
    assert ((kp >= -1) & (kp <= 1)).all()
    torch.testing.assert_close(kp, model.eval().encoder(images))  # load_encoder gives eval mode (batch norm)
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="32x32 images, got 48x48"):
        encoder(torch.zeros(1, 48, 48, 3, dtype=torch.uint8))


def test_a_checkpoint_from_before_keypoint_frame_keeps_its_keypoints(tmp_path):
    """Saved without model.keypoint_frame, a model was trained in the grid frame, and loads in it
    (keep this true if the default ever changes)."""
    cfg = tiny_config(tmp_path)
    cfg.model.keypoint_frame = "grid"
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32).eval()
    old = to_dict(cfg)
    del old["model"]["keypoint_frame"]
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "image_size": 32, "step": 0})
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(dsae.load_encoder(tmp_path / "old.pt", device="cpu")(images), model.encoder(images))
    assert dsae.load_encoder(tmp_path / "old.pt", device="cpu").encoder.centres is None  # the grid frame


def test_a_checkpoint_from_before_wide_temperature_keeps_its_keypoints(tmp_path):
    """Saved without model.wide_temperature (before 2026-12-05), a model's wide keypoints had the
    local ones' temperature: it loads so, not at today's default of 2."""
    cfg = tiny_config(tmp_path)
    cfg.model.wide_input, cfg.model.wide_temperature = "foreground", 1.0
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32).eval()
    model.set_background(torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8))
    old = to_dict(cfg)
    del old["model"]["wide_temperature"]
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "image_size": 32, "step": 0})
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    loaded = dsae.load_encoder(tmp_path / "old.pt", device="cpu")
    assert loaded.encoder.wide_temperature == 1.0 != dsae.ModelConfig().wide_temperature
    torch.testing.assert_close(loaded(images), model.encoder(images))


def test_a_checkpoint_from_before_decoder_sigma_end_keeps_its_windows(tmp_path):
    """Saved without model.decoder_sigma_end, a model's windows never narrowed: it loads drawing
    with decoder_sigma, not with today's default end."""
    from dsae.api import load_model

    cfg = tiny_config(tmp_path)
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32).eval()
    old = to_dict(cfg)
    del old["model"]["decoder_sigma_end"]
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "image_size": 32, "step": 0})
    assert load_model(tmp_path / "old.pt", device="cpu")[0].decoder.sigma == cfg.model.decoder_sigma != cfg.model.decoder_sigma_end


def test_a_checkpoint_from_before_local_keypoints_loads_without_them(tmp_path):
    """Saved without model.local_keypoints, model.local_warmup, model.recon_loss,
    model.scene_difference, model.background_jitter, model.concentration_weight/_until,
    model.wide_input, model.wide_temperature, model.wide_equivariance and model.equivariance_share,
    every keypoint read the whole stack from the frame alone, every window opened from the first
    step and the squared error trained it on the scene as it was: it loads so, not with today's
    defaults."""
    cfg = tiny_config(tmp_path)
    cfg.model.local_keypoints, cfg.model.local_warmup = 0, 0.0
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32).eval()
    old = to_dict(cfg)
    for key in ("local_keypoints", "local_warmup", "recon_loss", "scene_difference", "background_jitter",
                "concentration_weight", "concentration_until", "wide_input", "wide_temperature", "wide_equivariance",
                "equivariance_share"):
        del old["model"][key]
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "image_size": 32, "step": 0})
    model_cfg = load_checkpoint(tmp_path / "old.pt")["config"]["model"]
    assert (model_cfg["local_keypoints"], model_cfg["local_warmup"], model_cfg["recon_loss"],
            model_cfg["scene_difference"], model_cfg["background_jitter"], model_cfg["concentration_weight"],
            model_cfg["concentration_until"], model_cfg["wide_input"], model_cfg["wide_temperature"],
            model_cfg["wide_equivariance"], model_cfg["equivariance_share"]) == (
                0, 0.0, "mse", False, 0.0, 0.0, 1.0, "frame", 1.0, 1.0, 4.0)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(dsae.load_encoder(tmp_path / "old.pt", device="cpu")(images), model.encoder(images))


def test_a_checkpoint_whose_local_keypoints_were_none_keeps_half_of_them_local(tmp_path):
    """Saved with model.local_keypoints None (before 2026-12-06, when None meant half of K), a model
    loads with half its keypoints local, not today's two thirds."""
    cfg = tiny_config(tmp_path)
    cfg.model.local_keypoints = cfg.model.num_keypoints // 2
    model = dsae.DeepSpatialAutoencoder(cfg.model, 32).eval()
    old = to_dict(cfg)
    old["model"]["local_keypoints"] = None
    save_checkpoint(tmp_path / "old.pt", {"model": model.state_dict(), "config": old, "image_size": 32, "step": 0})
    assert load_checkpoint(tmp_path / "old.pt")["config"]["model"]["local_keypoints"] == 4 != dsae.ModelConfig(num_keypoints=8).local_count
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(dsae.load_encoder(tmp_path / "old.pt", device="cpu")(images), model.encoder(images))


def test_a_resumed_run_keeps_its_budget_unless_the_command_names_one():
    from dsae.checkpoint import resumed_config
    from dsae.errors import ConfigError

    saved = {"seed": 0, "device": "cpu", "rl": {"steps": 400, "lr": 0.001}}
    given = {"seed": 0, "device": "cuda", "rl": {"steps": 20, "lr": 0.001}}  # the command's defaults
    bare = resumed_config(saved, given, ["resume=run"], key="resume")
    assert bare["rl"]["steps"] == 400 and bare["device"] == "cuda", "budget kept; runtime settings from the command"
    assert resumed_config(saved, given, ["resume=run", "rl.steps=20"], key="resume")["rl"]["steps"] == 20
    assert resumed_config(saved, given, None, key="resume")["rl"]["steps"] == 20  # None: everything counts as given
    student = {"seed": 0, "imitation": {"rounds": 16, "lr": 0.001}}
    defaults = {"seed": 0, "imitation": {"rounds": 8, "lr": 0.001}}
    assert resumed_config(student, defaults, ["resume=run"], key="resume")["imitation"]["rounds"] == 16
    extended = {"seed": 0, "imitation": {"rounds": 24, "lr": 0.001}}
    assert resumed_config(student, extended, ["resume=run", "imitation.rounds=24"], key="resume")["imitation"]["rounds"] == 24
    with pytest.raises(ConfigError, match="rl.lr=0.01"):
        resumed_config(saved, {**given, "rl": {"steps": 20, "lr": 0.01}}, ["resume=run", "rl.lr=0.01"], key="resume")
