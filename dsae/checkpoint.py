"""Atomic checkpoints that hold everything needed to resume exactly.

A checkpoint is a dict saved with torch.save: ``model``, ``optimizer``, ``scheduler``,
``step``, ``rng`` (python, numpy, torch, cuda and the batch sampler's generator),
``config`` (the full Config as a dict), ``image_size`` and ``dataset``. It is written to a
temporary file beside the target and renamed over it, so an interrupted save never
leaves a truncated checkpoint under the real name.

A run folder (of ``scripts/train.py`` or ``scripts/train_rl.py``) holds ``config.json``
(its settings, written first), ``checkpoints/last.pt`` (a DSAE) or ``checkpoints/agent.pt``
(an RL agent) and, written last, ``metrics.json``, which marks the run as finished. Resuming
(:func:`find_resume_checkpoint`, :func:`resumed_config`) goes on from the checkpoint with
the run's own settings.
"""

from __future__ import annotations

import copy
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from dsae.errors import ConfigError, UserError

CHECKPOINT = Path("checkpoints") / "last.pt"  # a DSAE's, in its run folder
AGENT_CHECKPOINT = Path("checkpoints") / "agent.pt"  # an RL agent's
RUN_CONFIG = "config.json"
METRICS = "metrics.json"  # written last: a run folder that has it is finished
RUN_ROOTS = (Path("outputs"), Path("multirun"))  # where Hydra puts single runs and sweep jobs
MODEL_SETTINGS_SAVED_BEFORE = {  # model settings added since checkpoints were saved, as those were trained
    "keypoint_frame": "grid",  # saved before model.keypoint_frame: its keypoints are in that frame
    "decoder_sigma_end": None,  # saved before model.decoder_sigma_end: its windows never narrowed
    "local_keypoints": 0,  # saved before model.local_keypoints: every keypoint read the whole stack
    "local_warmup": 0.0,  # saved before model.local_warmup: every window opened from the first step
    "recon_loss": "mse",  # saved before model.recon_loss: trained on the squared error
    "scene_difference": False,  # saved before model.scene_difference: its encoder read the frame alone
    "background_jitter": 0.0,  # saved before model.background_jitter: its scene was never recoloured
    "wide_input": "frame",  # saved before model.wide_input: every keypoint read the frame
    "concentration_weight": 0.0,  # saved before model.concentration_weight: no concentration term
    "concentration_until": 1.0,  # saved before model.concentration_until: the term (if any) counted throughout
    "wide_temperature": 1.0,  # saved before model.wide_temperature: the wide keypoints had the local ones' temperature
    "wide_equivariance": 1.0,  # saved before model.wide_equivariance: every keypoint paid the equivariance term alike
    "equivariance_share": 4.0,  # saved before model.equivariance_share: one triple in four had its middle frame turned
    "search_weight": 0.0,  # saved before model.search_weight: the local keypoints learnt from their windows alone
}
RUNTIME_SETTINGS = ("device", "threads", "progress", "logger", "resume", "train.resume", "data.workers",
                    "train.log_every", "train.eval_every", "train.image_every", "train.checkpoint_every",
                    "rl.log_every", "rl.checkpoint_every", "rl.steps", "imitation.rounds")
"""Settings that change how a run is carried out or reported, not what it computes: a resumed
run takes these from the command that resumes it, and the rest from its checkpoint. The RL and
imitation budgets are among them: they change nothing a run computes before reaching them (no
schedule; the replay buffer and the labelled steps keep every record), so ``resume=RUN
rl.steps=N`` trains an agent further and ``resume=RUN imitation.rounds=N`` a student."""

BUDGET_SETTINGS = ("rl.steps", "imitation.rounds")
"""Runtime settings a resumed run keeps from its checkpoint unless the command names them: a bare
``resume=RUN`` goes on to the run's own budget, not to the default one."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing or unreadable."""


def model_settings_as_trained(model: dict[str, Any]) -> dict[str, Any]:
    """A saved config's model section with the settings added since it was saved, as it was trained
    (``MODEL_SETTINGS_SAVED_BEFORE``); a ``local_keypoints`` saved as None (before 2026-12-06) meant half of K."""
    settings = {**MODEL_SETTINGS_SAVED_BEFORE, **model}
    if settings["local_keypoints"] is None:
        settings["local_keypoints"] = settings["num_keypoints"] // 2
    return settings


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


def checkpoint_file(path: Path | str, checkpoint: Path = CHECKPOINT) -> Path:
    """The checkpoint file a path names: a file as it is; a run folder's ``checkpoint``
    (``checkpoints/last.pt`` or ``checkpoints/agent.pt``); a ``checkpoints/`` folder's file of that name."""
    path = Path(path)
    if not path.is_dir():
        return path
    return path / checkpoint if (path / checkpoint).exists() else path / checkpoint.name


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    path = checkpoint_file(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} could not be read ({err}); it may be truncated or not a dsae checkpoint") from err
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path} is not a dsae checkpoint (no model/config entries)")
    model = state["config"].get("model")
    if isinstance(model, dict):
        state["config"]["model"] = model_settings_as_trained(model)
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


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def setting_differences(saved: dict[str, Any], given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The settings (dotted keys, runtime ones left out) whose values differ: key -> (saved, given)."""
    a, b = _flat(saved), _flat(given)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not _under(k, RUNTIME_SETTINGS) and a.get(k) != b.get(k)}


def resume_requested(resume: Optional[str]) -> bool:
    """Whether a ``resume`` setting asks to resume (Hydra passes ``resume=false`` as a string)."""
    return resume is not None and str(resume).lower() not in ("false", "none", "null", "")


def find_resume_checkpoint(resume: Optional[str], run_dir: Path, config: dict[str, Any],
                           checkpoint: Path = CHECKPOINT, key: str = "train.resume",
                           roots: Iterable[Path] = RUN_ROOTS) -> Optional[Path]:
    """The checkpoint that ``train.resume`` (or ``key``) names, or None for a fresh run.

    ``true``/``latest``: this run folder's checkpoint, else that of the newest unfinished run under
    ``roots`` (``outputs/``, ``multirun/``) made with the same settings as ``config`` (runtime
    settings aside), so each job of a sweep finds its own; otherwise a run folder or a file.
    """
    if not resume_requested(resume):
        return None
    if str(resume).lower() not in ("true", "latest"):
        path = checkpoint_file(resume, checkpoint)
        if not path.exists():
            raise CheckpointError(f"{key}={resume}: no checkpoint at {path}")
        return path
    if (run_dir / checkpoint).exists():
        return run_dir / checkpoint
    unfinished = sorted((p for root in roots for p in Path(root).glob(f"**/{checkpoint.as_posix()}")
                         if not (p.parent.parent / METRICS).exists() and (p.parent.parent / RUN_CONFIG).exists()),
                        key=lambda p: p.stat().st_mtime, reverse=True)
    differences = []
    for path in unfinished:
        differences.append(setting_differences(json.loads((path.parent.parent / RUN_CONFIG).read_text()), config))
        if not differences[-1]:
            return path
    where = " or ".join(f"{r}/" for r in roots)
    if not unfinished:
        raise CheckpointError(f"{key}=true but no unfinished run with a checkpoint was found under {where}; "
                              f"start a fresh run (drop {key}) or pass {key}=PATH to a run folder")
    newest, diff = unfinished[0].parent.parent, differences[0]
    shown = "; ".join(f"{k}: {old!r} there, {new!r} here" for k, (old, new) in list(diff.items())[:3])
    raise CheckpointError(f"{key}=true but none of the {len(unfinished)} unfinished runs under {where} has this "
                          f"command's settings (the newest, {newest}, differs in {shown}); "
                          f"pass {key}={newest} to continue it as it was, or drop {key} for a fresh run")


def resumed_config(saved: dict[str, Any], given: dict[str, Any], overridden: Optional[Iterable[str]],
                   key: str = "train.resume") -> dict[str, Any]:
    """The settings a resumed run goes on with: the checkpoint's, with the runtime settings of
    ``given`` (device, logging, ...). A setting that changes the result and was given explicitly
    with another value than the run's is refused, never dropped in silence: ``overridden`` lists
    the command line's overrides (``key=value``); None counts every setting in ``given`` as given."""
    diff = setting_differences(saved, given)
    named = None if overridden is None else [o.split("=", 1)[0].lstrip("+~") for o in overridden]
    if named is not None:
        diff = {k: v for k, v in diff.items() if _under(k, named)}
    if diff:
        shown = "; ".join(f"{k}={new!r} (the run has {old!r})" for k, (old, new) in diff.items())
        raise ConfigError(f"{key}: this command changes settings of the run it resumes: {shown}. Drop those "
                          f"overrides to continue the run as it was, or drop {key} to start a fresh run with them")
    merged = copy.deepcopy(saved)
    for k, v in _flat(given).items():
        kept = named is not None and _under(k, BUDGET_SETTINGS) and not _under(k, named)
        if _under(k, RUNTIME_SETTINGS) and not kept:
            *groups, name = k.split(".")
            node = merged
            for group in groups:
                node = node.setdefault(group, {})
            node[name] = v
    return merged
