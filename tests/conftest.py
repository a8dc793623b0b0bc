"""Shared fixtures: tiny configs and a tiny collected dataset (made once per test session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_SILENT", "true")
# Under pytest-xdist (`make test`: one worker per core) each worker keeps to its share of the
# cores, for torch in this process and for what it starts; two workers of two threads each on
# 2 cores took 7 min 16 s against 6 min 47 s with one thread each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dsae.config import Config, DataConfig, LoggerConfig, TrainConfig  # noqa: E402
from dsae.config import ModelConfig  # noqa: E402
from envs import load_scene  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: without it they are skipped, and -ra reports each one."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `pytest -m gpu` on a machine with one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_config(tmp: Path, **train) -> Config:
    """A reacher config that trains in seconds: 32 px frames, 8 episodes, a small model."""
    return Config(
        env=load_scene("reacher", image_size=32, object_radius=0.02, max_episode_steps=12),
        model=ModelConfig(channels=[16, 8], kernels=[5, 3], strides=[2, 1], num_keypoints=8, recon_size=16),
        train=TrainConfig(**{"steps": 30, "batch_size": 8, "log_every": 5, "eval_every": 10,
                             "image_every": 15, "checkpoint_every": 10, "probe_frames": 500, **train}),
        data=DataConfig(dir=str(tmp / "data"), episodes=8, workers=1),
        logger=LoggerConfig(backend="none", mode="disabled"),
        device="cpu",
    )


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """(config, dataset root) of a collected 8-episode, 32 px reacher dataset."""
    from dsae.collect import collect

    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config(tmp)
    root = collect(cfg.env, cfg.data, progress=False)
    return cfg, root
