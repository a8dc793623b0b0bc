"""Training runs in process on the tiny dataset: what a resumed run records, and where."""

import json

import torch
from dataclasses import replace

from dsae.checkpoint import CHECKPOINT, METRICS, load_checkpoint, save_checkpoint
from dsae.train import run_training


def logged_steps(run, key="train/loss"):
    lines = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    return [row["step"] for row in lines if key in row]


def test_a_resumed_run_records_each_step_once(tiny_dataset, tmp_path):
    """Killed after its step-20 checkpoint, having logged step 25: on resume step 25 is logged
    again, so the record of the killed process is dropped, not kept beside the new one."""
    cfg, _ = tiny_dataset
    run = tmp_path / "run"
    run_training(replace(cfg, train=replace(cfg.train, steps=20)), run, progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    state["config"]["train"]["steps"] = 30  # as if the run had been asked for 30 steps
    save_checkpoint(run / CHECKPOINT, state)
    (run / METRICS).unlink()
    with open(run / "scalars.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "train/loss": 1e9}) + "\n")

    run_training(replace(cfg, train=replace(cfg.train, resume=str(run))), run, progress=False)
    steps = logged_steps(run)
    assert steps == [5, 10, 15, 20, 25, 30]
    assert all(json.loads(line).get("train/loss") != 1e9 for line in (run / "scalars.jsonl").read_text().splitlines())


def test_drop_rows_after_keeps_a_csv_header(tmp_path):
    from dsae.logger import drop_rows_after

    path = tmp_path / "returns.csv"
    path.write_text("env_step,kind\n10,train\n20,eval\n30,train\n")
    drop_rows_after(path, 20)
    assert path.read_text().splitlines() == ["env_step,kind", "10,train", "20,eval"]


def test_finishing_a_log_writes_the_metrics_last_and_closes_the_scalars_file(tmp_path):
    from dsae.config import LoggerConfig
    from dsae.logger import Logger

    logger = Logger(LoggerConfig(backend="none"), tmp_path, config={})
    logger.log({"loss": 1.0}, step=3)
    logger.finish({"probe_r2": {"fingertip": 0.9}, "steps": 3})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"probe_r2": {"fingertip": 0.9}, "steps": 3}
    assert logger._scalars.closed and (tmp_path / "scalars.jsonl").read_text() == '{"step": 3, "loss": 1.0}\n'


def test_the_precision_and_hardware_a_run_trained_on_are_recorded(tiny_dataset, tmp_path):
    """train.amp=auto gives bf16 on some CPUs and float32 on others: say which, and where."""
    cfg, _ = tiny_dataset
    run = tmp_path / "run"
    metrics = run_training(replace(cfg, train=replace(cfg.train, steps=10, amp="none")), run, progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    for record in (metrics, state, json.loads((run / METRICS).read_text())):
        assert record["precision"] == "float32" and record["device"] == "cpu"
        assert record["device_name"] and isinstance(record["device_name"], str)


def _unfinished_run(cfg, run, **changes):
    """A run of ``cfg`` (with ``changes`` to its train or top-level settings) that stopped after its last checkpoint."""
    train = {k: v for k, v in changes.items() if hasattr(cfg.train, k)}
    top = {k: v for k, v in changes.items() if k not in train}
    run_training(replace(cfg, train=replace(cfg.train, steps=10, **train), **top), run, progress=False)
    (run / METRICS).unlink()
    return run


def test_resume_true_takes_the_unfinished_run_with_the_same_settings(tiny_dataset, tmp_path, monkeypatch):
    """Two jobs of a sweep (seeds 0 and 1) both stopped: each resumes its own, not the newest."""
    cfg, _ = tiny_dataset
    monkeypatch.chdir(tmp_path)
    mine = _unfinished_run(cfg, tmp_path / "multirun" / "sweep" / "0", seed=0)
    newer = _unfinished_run(cfg, tmp_path / "multirun" / "sweep" / "1", seed=1)
    run_training(replace(cfg, seed=0, train=replace(cfg.train, steps=10, resume="true")), tmp_path / "new",
                 progress=False)
    assert (mine / METRICS).exists() and not (newer / METRICS).exists()
    assert not (tmp_path / "new" / METRICS).exists()


def test_resume_true_with_no_matching_run_names_the_difference(tiny_dataset, tmp_path, monkeypatch):
    import pytest

    from dsae.checkpoint import CheckpointError

    cfg, _ = tiny_dataset
    monkeypatch.chdir(tmp_path)
    _unfinished_run(cfg, tmp_path / "outputs" / "other", seed=3)
    with pytest.raises(CheckpointError, match="seed: 3 there, 0 here.*train.resume=outputs/other to continue"):
        run_training(replace(cfg, train=replace(cfg.train, steps=10, resume="true")), tmp_path / "new", progress=False)


def test_an_override_that_changes_a_resumed_run_is_refused_not_dropped(tiny_dataset, tmp_path):
    import pytest

    from dsae.errors import ConfigError

    cfg, _ = tiny_dataset
    run = _unfinished_run(cfg, tmp_path / "run")
    changed = replace(cfg, train=replace(cfg.train, steps=10, lr=0.01, resume=str(run)))
    with pytest.raises(ConfigError, match=r"train.lr=0.01 \(the run has 0.001\)"):
        run_training(changed, tmp_path / "new", progress=False, overrides=[f"train.resume={run}", "train.lr=0.01"])
    with pytest.raises(ConfigError, match="train.lr"):  # from Python, every setting counts as given
        run_training(changed, tmp_path / "new", progress=False)
    assert not (run / METRICS).exists()
    # Settings the command line did not name come from the run; runtime settings from the command.
    run_training(replace(changed, train=replace(changed.train, log_every=2)), tmp_path / "new", progress=False,
                 overrides=[f"train.resume={run}", "train.log_every=2"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr"] == 0.001 and saved["train"]["log_every"] == 2


def test_the_gaussian16_model_in_colour_trains_probes_and_films(tiny_dataset, tmp_path):
    """model=gaussian16's decoder and frame (the Gaussian-map decoder, the grid frame, valid
    padding; every other test trains the default's transport decoder in the image frame) on the
    tiny encoder, with a colour reconstruction, through training, the probe and a film's tracks."""
    from dsae.api import load_model
    from dsae.config import VisConfig
    from dsae.data import load_dataset
    from dsae.model import GaussianDecoder
    from dsae.visualize import track_episode

    cfg, root = tiny_dataset
    model_cfg = replace(cfg.model, decoder="gaussian", keypoint_frame="grid", padding="valid", recon_color=True,
                        local_keypoints=0)
    cfg = replace(cfg, model=model_cfg, train=replace(cfg.train, steps=10))
    metrics = run_training(cfg, tmp_path / "run", progress=False)
    assert set(metrics["keypoint_err_px"]) == {"fingertip", "target"} and metrics["recon_mse"] > 0
    model, _ = load_model(tmp_path / "run", "cpu")
    assert isinstance(model.decoder, GaussianDecoder) and model.encoder.centres is None  # saved and loaded as trained
    frames = load_dataset(root).episode(0)
    tracks = track_episode(model, frames, VisConfig(), torch.device("cpu"))
    assert tracks["recon"].shape == (len(frames), 3, 16, 16)


def test_the_decoder_window_narrows_over_training_to_decoder_sigma_end(tiny_dataset, tmp_path, monkeypatch):
    """model.decoder_sigma_end: the windows start at decoder_sigma, narrow step by step and end at
    decoder_sigma_end, the width a model rebuilt from the run's config draws with; during
    model.local_warmup only the local keypoints open windows, and after it (and when rebuilt) all."""
    from dsae.model import DeepSpatialAutoencoder, TransportDecoder

    widths, opened = [], []
    forward = TransportDecoder.forward

    def recording(self, keypoints, images=None, search=None):
        if self.training:
            widths.append(self.sigma)
            opened.append(self.open_keypoints)
        return forward(self, keypoints, images, search)

    monkeypatch.setattr(TransportDecoder, "forward", recording)
    cfg, _ = tiny_dataset
    model = replace(cfg.model, decoder="transport", decoder_sigma=0.1, decoder_sigma_end=0.05, local_keypoints=2,
                    local_warmup=0.3)
    cfg = replace(cfg, model=model, train=replace(cfg.train, steps=11))
    run_training(cfg, tmp_path / "run", progress=False)
    assert len(widths) == 11 and widths[0] == 0.1 and abs(widths[-1] - 0.05) < 1e-12
    assert all(a > b for a, b in zip(widths, widths[1:]))
    rebuilt = DeepSpatialAutoencoder(cfg.model, 32).decoder
    assert rebuilt.sigma == 0.05 and rebuilt.open_keypoints is None
    # model.local_warmup=0.3 of 11 steps (progress step / 10): steps 0-2 open only the 2 local keypoints' windows.
    assert opened == [2, 2, 2] + [None] * 8

