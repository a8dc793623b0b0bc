"""Recorded data as datasets: a folder of videos, or an HDF5 file in robomimic's layout.

``import_recording(data_cfg, image_size, root)`` reads ``data.path`` once, frame by frame, and
writes the framework's own dataset folder (dsae/data.py's layout), so training, evaluation and
visualisation read it as they read a collected dataset. Frames are centre-cropped to a square
(``data.crop``; else stretched) and resized to ``image_size`` by area averaging, and labelled
pixel positions follow the same transform. Episodes may differ in length. Each episode is
written atomically and the manifest after each one: an interrupted import resumes, and an
episode already imported is kept, not read again.

- ``data.source=videos``: every file in the folder that ffmpeg reads, in name order, one episode
  each. Beside ``clip.mp4`` an optional ``clip.npz`` (or ``clip.json``) gives per-frame
  ``joint_state`` (T, S), ``actions`` (T - 1, A) and labelled positions ``px_<object>`` (T, 2)
  in the video's pixels (column, row).
- ``data.source=hdf5``: ``data/demo_<i>`` in demo order; frames ``obs/<data.camera>_image``
  (T, H, W, 3) uint8, actions ``<data.action_key>`` (T, A; the last is dropped: no frame
  follows it), robot state the ``obs`` keys ``data.state_keys`` side by side, labelled positions
  the ``obs`` keys of ``data.labels`` (object -> key, (T, 2) pixels).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from dsae.config import DataConfig
from dsae.data import (FORMAT_VERSION, DatasetError, episode_name, existing_episodes, read_manifest, save_episode,
                       settings_digest, write_manifest)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v")
CHUNK = 64  # HDF5 frames read at a time


def import_settings(data_cfg: DataConfig, image_size: int) -> dict[str, Any]:
    """What determines an imported dataset's content."""
    settings = {"source": data_cfg.source, "path": str(Path(data_cfg.path).resolve()), "image_size": image_size,
                "crop": data_cfg.crop, "format": FORMAT_VERSION}
    if data_cfg.source == "hdf5":
        settings.update(camera=data_cfg.camera, action_key=data_cfg.action_key, state_keys=list(data_cfg.state_keys),
                        labels=dict(data_cfg.labels))
    return settings


def default_import_dir(data_cfg: DataConfig, image_size: int, root: Path | str = "data") -> Path:
    """``data/<source>-<recording name>-<size>px-<12 hex of the settings>``."""
    digest = settings_digest(import_settings(data_cfg, image_size))
    return Path(root) / f"{data_cfg.source}-{Path(data_cfg.path).stem}-{image_size}px-{digest}"


class FrameResizer:
    """Source frames (h, w, 3) -> square uint8 (size, size, 3), and pixel positions alike."""

    def __init__(self, height: int, width: int, size: int, crop: bool, where: str):
        if min(height, width) < size:
            raise DatasetError(f"{where}: frames are {width}x{height}, smaller than the model's {size}x{size} "
                               f"images; set env.image_size to at most {min(height, width)}")
        self.box, self.size = (0, 0, width, height), size  # stretched whole, unless cropped:
        if crop:
            side = min(height, width)
            self.box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)

    def frame(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        out = Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((self.size, self.size), Image.BOX, box=self.box)
        return np.asarray(out, dtype=np.uint8)

    def pixels(self, px: np.ndarray) -> np.ndarray:
        """(T, 2) (column, row) pixel centres in the source frame -> in the resized frame."""
        x0, y0, x1, y1 = self.box
        scale = np.array([self.size / (x1 - x0), self.size / (y1 - y0)])
        return (np.asarray(px, dtype=np.float64) + 0.5 - np.array([x0, y0])) * scale - 0.5


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        w, h = next(reader)["size"]
    except (OSError, RuntimeError, StopIteration) as err:
        raise DatasetError(f"{path} is not a video ffmpeg can read ({str(err).splitlines()[0][:120]})") from err
    for raw in reader:
        yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)


def _sidecar(video: Path) -> dict[str, np.ndarray]:
    """The optional labels beside a video: ``<stem>.npz`` or ``<stem>.json``."""
    if video.with_suffix(".npz").exists():
        with np.load(video.with_suffix(".npz")) as data:
            return {k: data[k] for k in data.files}
    if video.with_suffix(".json").exists():
        return {k: np.asarray(v) for k, v in json.loads(video.with_suffix(".json").read_text()).items()}
    return {}


def video_episode(path: Path, size: int, crop: bool) -> dict[str, np.ndarray]:
    """A video file (and its optional labels file) as an episode dict, frames resized to ``size``."""
    if not Path(path).is_file():
        raise DatasetError(f"no video file at {path}")
    frames, resizer = [], None
    for image in _video_frames(path):
        resizer = resizer or FrameResizer(image.shape[0], image.shape[1], size, crop, str(path))
        frames.append(resizer.frame(image))
    if resizer is None:
        raise DatasetError(f"{path} holds no frames")
    episode = {"frames": np.stack(frames)}
    for key, value in _sidecar(path).items():
        if key.startswith("px_"):
            value = resizer.pixels(value)
        elif key not in ("actions", "joint_state"):
            continue
        episode[key] = np.asarray(value, dtype=np.float64 if key.startswith("px_") else np.float32)
    return episode


def video_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"data.path={folder} is not a folder of videos")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise DatasetError(f"no video files in {folder} (looked for {', '.join(VIDEO_SUFFIXES)})")
    return files


def _hdf5_key(group, key: str, where: str):
    if key not in group:
        raise DatasetError(f"{where} has no '{key}'; it holds: {', '.join(sorted(group.keys()))}")
    return group[key]


def _hdf5_episode(demo, data_cfg: DataConfig, size: int, where: str) -> dict[str, np.ndarray]:
    obs = _hdf5_key(demo, "obs", where)
    images = _hdf5_key(obs, f"{data_cfg.camera}_image", f"{where}/obs")
    resizer = FrameResizer(images.shape[1], images.shape[2], size, data_cfg.crop, where)
    frames = np.stack([resizer.frame(f) for start in range(0, len(images), CHUNK) for f in images[start:start + CHUNK]])
    episode = {"frames": frames, "actions": np.asarray(_hdf5_key(demo, data_cfg.action_key, where)[:-1], np.float32)}
    if data_cfg.state_keys:
        state = [np.asarray(_hdf5_key(obs, k, f"{where}/obs")[:], np.float32).reshape(len(frames), -1)
                 for k in data_cfg.state_keys]
        episode["joint_state"] = np.concatenate(state, axis=1)
    for name, key in data_cfg.labels.items():
        episode[f"px_{name}"] = resizer.pixels(_hdf5_key(obs, key, f"{where}/obs")[:])
    return episode


@contextmanager
def _opened(data_cfg: DataConfig) -> Iterator[tuple[list[str], Callable[[str, int], dict[str, np.ndarray]]]]:
    """The recording, open: (episode identities in order, read: (identity, size) -> episode dict)."""
    path = Path(data_cfg.path)
    if data_cfg.source == "videos":
        files = video_files(path)
        yield [p.name for p in files], lambda name, size: video_episode(path / name, size, data_cfg.crop)
        return
    import h5py

    if not path.is_file():
        raise DatasetError(f"data.path={path}: no such HDF5 file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"data.path={path} is not an HDF5 file ({err})") from err
    with handle:
        data = _hdf5_key(handle, "data", str(path))
        demos = sorted(data.keys(), key=lambda k: (len(k), k))  # demo_2 before demo_10
        if not demos:
            raise DatasetError(f"{path}: data/ holds no demos")
        yield demos, lambda name, size: _hdf5_episode(data[name], data_cfg, size, f"{path}:data/{name}")


def import_recording(data_cfg: DataConfig, image_size: int, root: Path | str, progress: bool = True) -> Path:
    """Import (or finish importing) ``data.path`` into the dataset folder ``root``; returns it."""
    from tqdm import tqdm

    root = Path(root)
    settings = import_settings(data_cfg, image_size)
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("settings") != settings:
        raise DatasetError(f"the dataset at {root} was imported with other settings; set data.dir to a new folder "
                           "(or leave it unset for an automatic one)")
    if manifest is not None and manifest.get("complete"):
        return root
    with _opened(data_cfg) as (names, read):
        if manifest is not None and manifest.get("sources", names) != names:
            raise DatasetError(f"the recording {data_cfg.path} changed since {root} was begun: import it into a new data.dir")
        root.mkdir(parents=True, exist_ok=True)
        files = existing_episodes(root, manifest)
        objects = manifest.get("objects") if manifest else None
        base = {"settings": settings, "sources": names, "image_size": image_size, "episodes": len(names)}
        for index, name in enumerate(tqdm(names, desc=f"import {data_cfg.source}", unit="ep", disable=not progress)):
            if episode_name(index) in files:
                continue
            episode = read(name, image_size)
            labelled = sorted(k[3:] for k in episode if k.startswith("px_"))
            if objects is not None and labelled != objects:
                raise DatasetError(f"{name} labels {labelled or 'nothing'}, the episodes before it "
                                   f"{objects or 'nothing'}: every episode must label the same objects")
            objects = labelled
            files[episode_name(index)] = save_episode(root, index, episode)
            write_manifest(root, {**base, "objects": objects, "files": dict(sorted(files.items())), "complete": False})
    write_manifest(root, {**base, "objects": objects or [], "files": dict(sorted(files.items())), "complete": True})
    return root
