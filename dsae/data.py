"""Datasets on disk: a folder of episode files plus a manifest, and frame-triple sampling.

Layout of a dataset folder::

    manifest.json          settings, counts, and the sha256 of every episode file
    episode_00000.npz      frames  uint8 (T+1, H, W, 3)   the camera image before each step and after the last
                           actions float32 (T, A)
                           joint_state float32 (T+1, 2J)  joint angles then joint velocities
                           pos_<object> float64 (T+1, 3)  world positions
                           px_<object>  float64 (T+1, 2)  pixel (column, row) positions
                           camera_matrix float64 (3, 4)

Every file is written to a temporary name and renamed, so a crash never leaves a half
file under a real name; the manifest is rewritten after each batch of episodes, which is
what lets an interrupted collection resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dsae.errors import UserError

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: the robot state is stored as joint_state (format 1 called it proprio)
JOINT_STATE_KEY = {1: "proprio", 2: "joint_state"}  # the formats this version reads


class DatasetError(UserError, RuntimeError):
    """A dataset folder is missing, incomplete, corrupt, or was made with other settings."""


def episode_name(index: int) -> str:
    return f"episode_{index:05d}.npz"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_episode(root: Path, index: int, arrays: dict[str, np.ndarray]) -> str:
    """Write one episode atomically; returns its sha256."""
    path = Path(root) / episode_name(index)
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
    return sha256(path)


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True).encode()
    atomic_write_bytes(Path(root) / MANIFEST, lambda f: f.write(text))


def read_manifest(root: Path) -> Optional[dict[str, Any]]:
    path = Path(root) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); delete the folder {root} and collect again") from err


def load_episode(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"episode file {path} is corrupt ({err}); delete it and run collect again to replace it") from err


@dataclass
class Dataset:
    """A loaded dataset: arrays stacked over episodes (N episodes of T+1 frames)."""

    root: Path
    manifest: dict[str, Any]
    frames: np.ndarray  # uint8 (N, T+1, H, W, 3)
    actions: np.ndarray  # float32 (N, T, A)
    joint_state: np.ndarray  # float32 (N, T+1, 2J)
    positions: dict[str, np.ndarray]  # object -> (N, T+1, 3)
    pixels: dict[str, np.ndarray]  # object -> (N, T+1, 2)
    camera_matrix: np.ndarray  # (3, 4)

    @property
    def num_episodes(self) -> int:
        return self.frames.shape[0]

    @property
    def image_size(self) -> int:
        return self.frames.shape[2]

    @property
    def objects(self) -> list[str]:
        return list(self.positions)

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Episode indices (train, held-out): the last ``val_fraction`` of episodes are held out."""
        n_val = max(1, int(round(self.num_episodes * val_fraction)))
        if n_val >= self.num_episodes:
            raise DatasetError(f"{self.root}: {self.num_episodes} episode(s) cannot be split into train and held-out; collect more")
        idx = np.arange(self.num_episodes)
        return idx[:-n_val], idx[-n_val:]


def load_dataset(root: Path | str, verify: bool = True, episodes: Optional[int] = None) -> Dataset:
    """Load a complete dataset, checking every file against the manifest.

    ``episodes``: load exactly the first this many episodes (a run uses what it asks for,
    even from a folder collected for more); None loads all. Raises DatasetError naming the
    folder or file when the manifest is missing, the collection is unfinished, it holds
    fewer episodes than asked for, or a file is missing or corrupt.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise DatasetError(f"no dataset at {root} (no {MANIFEST}): run `python scripts/collect.py` to make one")
    if not manifest.get("complete"):
        raise DatasetError(
            f"the dataset at {root} is unfinished ({len(manifest.get('files', {}))} of "
            f"{manifest.get('episodes')} episodes): run collect again with the same settings to resume it"
        )
    fmt = manifest.get("settings", {}).get("format", FORMAT_VERSION)
    if fmt not in JOINT_STATE_KEY:
        raise DatasetError(f"the dataset at {root} is in format {fmt}, which this version cannot read: "
                           "collect it again (a fresh data.dir, or delete the folder)")
    names = sorted(manifest["files"])
    if episodes is not None:
        if len(names) < episodes:
            raise DatasetError(f"the dataset at {root} holds {len(names)} episodes, fewer than the {episodes} asked for: "
                               f"run collect with data.episodes={episodes} to extend it")
        names = names[:episodes]
    loaded = []
    for name in names:
        path = root / name
        if not path.exists():
            raise DatasetError(f"episode file {path} listed in the manifest is missing; run collect again to replace it")
        if verify and sha256(path) != manifest["files"][name]:
            raise DatasetError(f"episode file {path} does not match its checksum in {root / MANIFEST} (corrupt or changed); delete it and run collect again")
        loaded.append(load_episode(path))
    if not loaded:
        raise DatasetError(f"the dataset at {root} has no episodes")
    objects = manifest["objects"]
    try:
        return Dataset(
            root=root,
            manifest=manifest,
            frames=np.stack([e["frames"] for e in loaded]),
            actions=np.stack([e["actions"] for e in loaded]),
            joint_state=np.stack([e[JOINT_STATE_KEY[fmt]] for e in loaded]),
            positions={o: np.stack([e[f"pos_{o}"] for e in loaded]) for o in objects},
            pixels={o: np.stack([e[f"px_{o}"] for e in loaded]) for o in objects},
            camera_matrix=loaded[0]["camera_matrix"],
        )
    except (KeyError, ValueError) as err:
        raise DatasetError(f"the episode files in {root} do not share one layout ({err}); collect the dataset again") from err


class TripleSampler:
    """Samples triples of consecutive frames (t-1, t, t+1) from chosen episodes.

    frames: uint8 (N, T+1, H, W, 3). ``on_device=True`` keeps them on ``device`` as uint8 and
    gathers each batch there (no host work per step); ``False`` keeps them in pinned host
    memory and copies each gathered batch over asynchronously (for datasets larger than the
    device). ``None`` chooses: on the device when it is the CPU, or when the frames take at
    most half of the CUDA device's free memory. ``sample(batch)`` returns uint8
    (batch, 3, H, W, 3) on ``device``. The generator's state is part of a checkpoint.
    """

    def __init__(self, frames: np.ndarray, episodes: np.ndarray, device: torch.device, seed: int = 0,
                 on_device: Optional[bool] = None):
        if frames.shape[1] < 3:
            raise DatasetError(f"episodes have {frames.shape[1]} frames; triples need at least 3")
        device = torch.device(device)
        host = torch.from_numpy(np.ascontiguousarray(frames[episodes]))
        if on_device is None:
            on_device = device.type != "cuda" or host.numel() <= 0.5 * torch.cuda.mem_get_info(device)[0]
        self.on_device = bool(on_device)
        if self.on_device:
            self.frames = host.to(device)
        else:
            self.frames = host.pin_memory() if device.type == "cuda" else host
        self.device = device
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def sample(self, batch: int) -> torch.Tensor:
        n, t = self.frames.shape[:2]
        ep = torch.randint(0, n, (batch,), generator=self.generator)
        mid = torch.randint(1, t - 1, (batch,), generator=self.generator)
        if not self.on_device:
            times = mid[:, None] + torch.arange(-1, 2)
            out = self.frames[ep[:, None], times]
            if self.device.type == "cuda":
                out = out.pin_memory()
            return out.to(self.device, non_blocking=True)
        ep = ep.to(self.device)
        times = mid.to(self.device)[:, None] + torch.arange(-1, 2, device=self.device)
        return self.frames[ep[:, None], times]
