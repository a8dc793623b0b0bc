"""Datasets on disk: a folder of episode files plus a manifest, and frame-triple sampling.

Layout of a dataset folder::

    manifest.json          settings, counts, and the sha256 of every episode file
    episode_00000.npz      frames  uint8 (T+1, H, W, 3)   the camera image before each step and after the last
                           actions float32 (T, A)         (T may differ between episodes)
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
from dsae.frames import CompressedArray, FrameFileError, MappedFrames, map_npz_array

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


def settings_digest(settings: dict[str, Any]) -> str:
    """12 hex characters that name a dataset's settings in its default folder name."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


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


def load_episode(path: Path, skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """An episode file's arrays (all but ``skip``), read whole."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files if k not in skip}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DatasetError(f"episode file {path} is corrupt ({err}); delete it and run collect again to replace it") from err


def existing_episodes(root: Path, manifest: dict | None) -> dict[str, str]:
    """Episode files already written and intact: those in the manifest whose checksum matches,
    plus any written after the last manifest update that still load."""
    files: dict[str, str] = {}
    listed = manifest.get("files", {}) if manifest else {}
    for path in sorted(root.glob("episode_*.npz")):
        digest = sha256(path)
        if listed.get(path.name) == digest:
            files[path.name] = digest
            continue
        try:
            load_episode(path)
        except DatasetError:
            path.unlink()  # a torn or corrupt file: write it again
            continue
        files[path.name] = digest
    return files


@dataclass
class Dataset:
    """A loaded dataset: every episode's frames one after another (episodes may differ in length).

    Episode i is rows ``starts[i]:starts[i + 1]`` of every per-frame array. Objects are what a
    source labels (none for unlabelled footage); ``camera_matrix`` is None when unknown.
    """

    root: Path
    manifest: dict[str, Any]
    frames: np.ndarray  # uint8 (F, H, W, 3), in memory, or a MappedFrames read from the files as needed
    starts: np.ndarray  # int64 (N + 1,)
    actions: np.ndarray  # float32 (F, A): the action taken at each frame; NaN at an episode's last frame
    joint_state: np.ndarray  # float32 (F, 2J); (F, 0) when the source has none
    positions: dict[str, np.ndarray]  # object -> (F, 3) world positions (objects the source places in 3-D)
    pixels: dict[str, np.ndarray]  # object -> (F, 2) pixel (column, row) positions
    camera_matrix: Optional[np.ndarray]  # (3, 4)

    @property
    def num_episodes(self) -> int:
        return len(self.starts) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Frames per episode, (N,)."""
        return np.diff(self.starts)

    @property
    def image_size(self) -> int:
        return self.frames.shape[1]

    @property
    def objects(self) -> list[str]:
        return list(self.pixels)

    def frame_indices(self, episodes: np.ndarray) -> np.ndarray:
        """Rows of the per-frame arrays that belong to ``episodes``, in order, (sum of lengths,)."""
        return np.concatenate([np.arange(self.starts[e], self.starts[e + 1]) for e in episodes] or [np.zeros(0, int)])

    def episode(self, index: int) -> np.ndarray:
        """One episode's frames, uint8 (T, H, W, 3)."""
        return self.frames[self.starts[index]:self.starts[index + 1]]

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Episode indices (train, held-out): the last ``val_fraction`` of episodes are held out."""
        n_val = max(1, int(round(self.num_episodes * val_fraction)))
        if n_val >= self.num_episodes:
            raise DatasetError(f"{self.root}: {self.num_episodes} episode(s) cannot be split into train and held-out; collect more")
        idx = np.arange(self.num_episodes)
        return idx[:-n_val], idx[-n_val:]


def load_dataset(root: Path | str, verify: bool = True, episodes: Optional[int] = None,
                 in_memory: Optional[bool] = None) -> Dataset:
    """Load a complete dataset, checking every file against the manifest.

    ``episodes``: load exactly the first this many episodes (a run uses what it asks for,
    even from a folder collected for more); None loads all. ``in_memory``: read the frames into
    memory (True) or leave them memory-mapped in their files, read as needed (False,
    :class:`dsae.frames.MappedFrames`); None: in memory when they take at most half the memory
    available. Raises DatasetError naming the folder or file when the manifest is missing, the
    collection is unfinished, it holds fewer episodes than asked for, or a file is missing or corrupt.
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
    loaded, maps = [], []
    for name in names:
        path = root / name
        if not path.exists():
            raise DatasetError(f"episode file {path} listed in the manifest is missing; run collect again to replace it")
        if verify and sha256(path) != manifest["files"][name]:
            raise DatasetError(f"episode file {path} does not match its checksum in {root / MANIFEST} (corrupt or changed); delete it and run collect again")
        try:
            maps.append(map_npz_array(path, "frames"))
            loaded.append(load_episode(path, skip=("frames",)))
        except CompressedArray:  # written by np.savez_compressed elsewhere: read it whole
            loaded.append(load_episode(path))
            maps.append(loaded[-1].pop("frames"))
        except FrameFileError as err:
            raise DatasetError(str(err)) from err
    if not loaded:
        raise DatasetError(f"the dataset at {root} has no episodes")
    if in_memory is None:
        in_memory = sum(m.nbytes for m in maps) <= 0.5 * available_memory()
    frames = np.concatenate(maps) if in_memory else MappedFrames(maps)
    try:
        return _flatten(root, manifest, loaded, frames, [len(m) for m in maps], JOINT_STATE_KEY[fmt])
    except (KeyError, ValueError) as err:
        raise DatasetError(f"the episode files in {root} do not share one layout ({err}); collect the dataset again") from err


def available_memory() -> int:
    """Bytes of memory available now (Linux MemAvailable; elsewhere the physical total)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _flatten(root: Path, manifest: dict[str, Any], episodes: list[dict[str, np.ndarray]], frames,
             lengths: list[int], state_key: str) -> Dataset:
    """Episodes' frames (one after another) and per-episode label dicts -> one Dataset."""
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def per_frame(key: str, width: int, dtype) -> np.ndarray:
        return np.concatenate([e[key] if key in e else np.zeros((n, width), dtype) for e, n in zip(episodes, lengths)])

    def actions(e: dict[str, np.ndarray], n: int) -> np.ndarray:
        a = np.asarray(e.get("actions", np.zeros((n - 1, 0))), dtype=np.float32)
        return np.concatenate([a, np.full((1, a.shape[1]), np.nan, np.float32)])  # no action after the last frame

    objects = manifest["objects"]
    placed = [o for o in objects if all(f"pos_{o}" in e for e in episodes)]
    return Dataset(
        root=root, manifest=manifest, starts=starts,
        frames=frames,
        actions=np.concatenate([actions(e, n) for e, n in zip(episodes, lengths)]),
        joint_state=per_frame(state_key, episodes[0].get(state_key, np.zeros((0, 0))).shape[-1], np.float32),
        positions={o: np.concatenate([e[f"pos_{o}"] for e in episodes]) for o in placed},
        pixels={o: np.concatenate([e[f"px_{o}"] for e in episodes]) for o in objects},
        camera_matrix=episodes[0].get("camera_matrix"),
    )


class TripleSampler:
    """Samples triples of consecutive frames (t-1, t, t+1) within chosen episodes.

    Every triple that lies inside one episode is equally likely (a longer episode holds more
    of them); an episode of fewer than 3 frames holds none. ``on_device=True`` copies the
    chosen episodes' uint8 frames to ``device`` (in chunks) and gathers each batch there (no
    host work per step); ``False`` gathers each batch on the host, from pinned memory, or from
    the episode files when the dataset is memory-mapped (``data.in_memory=false``), and copies it
    over asynchronously. ``None`` chooses: on a CUDA device when the frames take at most half
    its free memory; on the CPU unless the dataset is memory-mapped. ``sample(batch)`` returns
    uint8 (batch, 3, H, W, 3) on ``device``. The generator's state is part of a checkpoint.
    """

    def __init__(self, dataset: Dataset, episodes: np.ndarray, device: torch.device, seed: int = 0,
                 on_device: Optional[bool] = None):
        lengths = dataset.lengths[episodes]
        local_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, int)
        centres = [np.arange(s + 1, s + n - 1) for s, n in zip(local_starts, lengths) if n >= 3]
        if not centres:
            raise DatasetError(f"{dataset.root}: no training episode has the 3 frames a triple needs")
        self.centres = torch.from_numpy(np.concatenate(centres))
        self.rows = dataset.frame_indices(episodes)  # dataset row of each chosen frame
        self.device = device = torch.device(device)
        mapped = not isinstance(dataset.frames, np.ndarray)
        if on_device is None:
            nbytes = len(self.rows) * int(np.prod(dataset.frames.shape[1:]))
            on_device = nbytes <= 0.5 * torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else not mapped
        self.on_device, self.mapped = bool(on_device), mapped and not on_device
        if self.on_device:
            self.frames = _copy_rows(dataset.frames, self.rows, device)
            self.centres = self.centres.to(device)
        elif self.mapped:
            self.frames = dataset.frames  # read from the files, a batch at a time
        else:
            host = torch.from_numpy(np.ascontiguousarray(dataset.frames[self.rows]))
            self.frames = host.pin_memory() if device.type == "cuda" else host
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def sample(self, batch: int) -> torch.Tensor:
        pick = torch.randint(0, len(self.centres), (batch,), generator=self.generator)
        if self.on_device:
            local = self.centres[pick.to(self.device)][:, None] + torch.arange(-1, 2, device=self.device)
            return self.frames[local]
        local = self.centres[pick][:, None] + torch.arange(-1, 2)
        out = torch.from_numpy(self.frames[self.rows[local.numpy()]]) if self.mapped else self.frames[local]
        if self.device.type == "cuda":
            out = out.pin_memory()
        return out.to(self.device, non_blocking=True)


def _copy_rows(frames, rows: np.ndarray, device: torch.device, chunk: int = 4096) -> torch.Tensor:
    """frames[rows] as a uint8 tensor on ``device``, read ``chunk`` frames at a time (a
    memory-mapped dataset never passes through host memory whole)."""
    out = torch.empty((len(rows), *frames.shape[1:]), dtype=torch.uint8, device=device)
    for start in range(0, len(rows), chunk):
        out[start:start + chunk] = torch.from_numpy(np.ascontiguousarray(frames[rows[start:start + chunk]])).to(device)
    return out
