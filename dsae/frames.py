"""Frames read from disk as needed: the episode files' frame arrays, memory-mapped, end to end.

``np.savez`` stores each array uncompressed inside the episode's zip file, so its ``frames``
can be memory-mapped where they lie (:func:`map_npz_array`). :class:`MappedFrames` puts the
episodes' maps one after another and answers the indexing the framework uses (a row, a slice,
an array of rows) by reading only those frames: a dataset larger than memory trains,
evaluates and films with the operating system's page cache holding what is in use.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from dsae.errors import UserError


class FrameFileError(UserError, RuntimeError):
    """An episode file whose frames cannot be memory-mapped."""


class CompressedArray(FrameFileError):
    """The array is stored compressed (``np.savez_compressed``): it can only be read whole."""


def map_npz_array(path: Path, key: str) -> np.memmap:
    """The array ``key`` of an uncompressed ``.npz`` file, memory-mapped read-only (no data read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CompressedArray(f"{path} stores {key} compressed, which cannot be memory-mapped")
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    except (OSError, KeyError, ValueError, struct.error, zipfile.BadZipFile) as err:
        raise FrameFileError(f"episode file {path} is corrupt ({err}); delete it and run collect again") from err


class MappedFrames:
    """Per-episode frame arrays (each (T_i, H, W, 3)) seen as one (F, H, W, 3) array, read lazily.

    ``frames[i]`` -> (H, W, 3); ``frames[a:b]`` within one episode -> a view of its map, across
    episodes -> an array; ``frames[rows]`` (int array of any shape) -> (*rows.shape, H, W, 3).
    """

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.dtype = parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            part = int(np.searchsorted(self.starts, start, side="right")) - 1
            if step == 1 and 0 <= part < len(self.parts) and stop <= self.starts[part + 1]:
                return self.parts[part][start - self.starts[part]:stop - self.starts[part]]
            index = np.arange(start, stop, step)
        rows = np.asarray(index)
        if rows.ndim == 0:
            return self._rows(rows.reshape(1))[0]
        return self._rows(rows.ravel()).reshape(*rows.shape, *self.shape[1:])

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.where(rows < 0, rows + len(self), rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"frame rows out of range [0, {len(self)})")
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for p in np.unique(part):
            chosen = part == p
            out[chosen] = self.parts[p][rows[chosen] - self.starts[p]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.concatenate(self.parts)
        return whole if dtype is None else whole.astype(dtype)
