"""Atomic checkpoints that hold everything needed to resume exactly.

A checkpoint is a dict saved with torch.save: ``model``, ``optimizer``, ``scheduler``,
``step``, ``rng`` (python, numpy, torch, cuda and the batch sampler's generator),
``config`` (the full Config as a dict), ``image_size`` and ``dataset``. It is written to a
temporary file beside the target and renamed over it, so an interrupted save never
leaves a truncated checkpoint under the real name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsae.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing or unreadable."""


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / "last.pt"
        path = candidate if candidate.exists() else path / "last.pt"
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} could not be read ({err}); it may be truncated or not a dsae checkpoint") from err
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a dsae checkpoint (no model/config entries)")
    state["path"] = str(path)
    return state


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
