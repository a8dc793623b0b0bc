"""Datasets on disk: manifest checks, clear errors for missing/corrupt files, triple sampling."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dsae.data import MANIFEST, Dataset, DatasetError, TripleSampler, load_dataset


def test_load_tiny_dataset(tiny_dataset):
    cfg, root = tiny_dataset
    ds = load_dataset(root)
    t = cfg.env.max_episode_steps
    assert ds.frames.shape == (8 * (t + 1), 32, 32, 3) and ds.frames.dtype == np.uint8
    assert list(ds.starts) == list(range(0, 8 * (t + 1) + 1, t + 1)) and list(ds.lengths) == [t + 1] * 8
    assert ds.actions.shape == (8 * (t + 1), 2)
    last = ds.starts[1:] - 1
    assert np.isnan(ds.actions[last]).all() and not np.isnan(np.delete(ds.actions, last, axis=0)).any()
    assert ds.joint_state.shape == (8 * (t + 1), 4)
    assert ds.objects == ["fingertip", "target"] and set(ds.positions) == {"fingertip", "target"}
    assert ds.pixels["target"].shape == (8 * (t + 1), 2)
    np.testing.assert_array_equal(ds.episode(2), ds.frames[2 * (t + 1):3 * (t + 1)])
    train, val = ds.split(0.25)
    assert list(train) == list(range(6)) and list(val) == [6, 7]


def test_a_run_uses_exactly_the_episodes_it_asks_for(tiny_dataset):
    """data.episodes below what the folder holds: the first that many, not all of them."""
    from dataclasses import replace

    from dsae.train import ensure_dataset

    cfg, root = tiny_dataset
    fewer = replace(cfg, data=replace(cfg.data, episodes=5))
    ds = ensure_dataset(fewer)
    assert ds.num_episodes == 5
    np.testing.assert_array_equal(ds.frames, load_dataset(root).frames[:ds.starts[-1]])
    assert ds.num_episodes == 5 and ds.starts[-1] == 5 * (cfg.env.max_episode_steps + 1)
    with pytest.raises(DatasetError, match="holds 8 episodes, fewer than the 9 asked for.*data.episodes=9"):
        load_dataset(root, episodes=9)


@pytest.fixture
def copy_of(tiny_dataset, tmp_path):
    _, root = tiny_dataset
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_missing_manifest_names_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"no dataset at {tmp_path}"):
        load_dataset(tmp_path)


def test_missing_episode_is_named(copy_of):
    (copy_of / "episode_00003.npz").unlink()
    with pytest.raises(DatasetError, match="episode_00003.npz.*missing"):
        load_dataset(copy_of)


def test_corrupt_episode_is_named(copy_of):
    path = copy_of / "episode_00002.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="episode_00002.npz.*checksum"):
        load_dataset(copy_of)


def test_truncated_episode_is_named_without_verification(copy_of):
    path = copy_of / "episode_00001.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="episode_00001.npz.*corrupt"):
        load_dataset(copy_of, verify=False)


def test_unfinished_dataset_says_resume(copy_of):
    manifest = json.loads((copy_of / MANIFEST).read_text())
    manifest["complete"] = False
    (copy_of / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="unfinished.*resume"):
        load_dataset(copy_of)


def synthetic(lengths: list[int], size: int = 2) -> Dataset:
    """A dataset in memory whose frame i of episode e has every value e * 20 + i."""
    frames = np.concatenate([np.full((n, size, size, 3), e * 20 + np.arange(n)[:, None, None, None], np.uint8)
                             for e, n in enumerate(lengths)])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    f = len(frames)
    return Dataset(Path("synthetic"), {}, frames, starts, np.zeros((f, 0), np.float32), np.zeros((f, 0), np.float32),
                   {}, {}, None)


def test_triples_are_consecutive_frames_of_one_episode():
    ds = synthetic([10, 3, 7, 2])  # episodes of different lengths; the last holds no triple
    sampler = TripleSampler(ds, np.array([0, 1, 3]), torch.device("cpu"), seed=0)
    batch = sampler.sample(256)
    assert batch.shape == (256, 3, 2, 2, 3)
    values = batch[:, :, 0, 0, 0].long()
    assert ((values[:, 1] - values[:, 0]) == 1).all() and ((values[:, 2] - values[:, 1]) == 1).all()
    episodes = (values[:, 0] // 20).tolist()
    assert set(episodes) == {0, 1}, "only the chosen episodes, never across an episode's end"
    assert 0.75 < episodes.count(0) / 256 < 0.97, "each triple equally likely: 8 in episode 0, 1 in episode 1"
    with pytest.raises(DatasetError, match="3 frames a triple needs"):
        TripleSampler(ds, np.array([3]), torch.device("cpu"))


def test_sampler_is_reproducible_from_its_state():
    s = TripleSampler(synthetic([8, 8, 5, 8]), np.arange(4), torch.device("cpu"), seed=1)
    s.sample(5)
    state = s.generator.get_state()
    a = s.sample(5)
    s.generator.set_state(state)
    torch.testing.assert_close(s.sample(5), a)


def test_host_and_device_paths_sample_the_same_batches():
    ds = synthetic([9, 4, 9, 6, 9], size=4)
    on = TripleSampler(ds, np.arange(5), torch.device("cpu"), seed=3, on_device=True)
    off = TripleSampler(ds, np.arange(5), torch.device("cpu"), seed=3, on_device=False)
    assert on.on_device and not off.on_device
    for _ in range(3):
        torch.testing.assert_close(on.sample(16), off.sample(16))


def test_a_format_1_dataset_still_loads_and_an_unknown_format_is_named(copy_of):
    """Format 1 stored the robot state as ``proprio``; format 2 calls it ``joint_state``."""
    from dsae.data import read_manifest, sha256, write_manifest

    manifest = read_manifest(copy_of)
    for name in manifest["files"]:
        path = copy_of / name
        with np.load(path) as data:
            arrays = {("proprio" if k == "joint_state" else k): data[k] for k in data.files}
        np.savez(path, **arrays)
        manifest["files"][name] = sha256(path)
    write_manifest(copy_of, {**manifest, "settings": {**manifest["settings"], "format": 1}})
    assert load_dataset(copy_of).joint_state.shape[-1] == 4
    write_manifest(copy_of, {**manifest, "settings": {**manifest["settings"], "format": 99}})
    with pytest.raises(DatasetError, match="format 99"):
        load_dataset(copy_of)


def test_a_memory_mapped_dataset_reads_the_same_frames(tiny_dataset):
    from dsae.frames import MappedFrames

    _, root = tiny_dataset
    loaded, mapped = load_dataset(root, in_memory=True), load_dataset(root, in_memory=False)
    assert isinstance(mapped.frames, MappedFrames) and isinstance(loaded.frames, np.ndarray)
    assert mapped.frames.shape == loaded.frames.shape and mapped.image_size == loaded.image_size
    rows = np.array([[3, 50], [7, 103]])
    np.testing.assert_array_equal(mapped.frames[rows], loaded.frames[rows])
    np.testing.assert_array_equal(mapped.frames[5], loaded.frames[5])
    np.testing.assert_array_equal(mapped.episode(2), loaded.episode(2))  # a view of one file's map
    np.testing.assert_array_equal(mapped.frames[10:30], loaded.frames[10:30])  # across two episodes
    np.testing.assert_array_equal(np.asarray(mapped.frames), loaded.frames)
    a = TripleSampler(loaded, np.arange(6), torch.device("cpu"), seed=2, on_device=False)
    b = TripleSampler(mapped, np.arange(6), torch.device("cpu"), seed=2)  # None: stays on disk
    assert b.mapped and not b.on_device
    for _ in range(3):
        torch.testing.assert_close(a.sample(8), b.sample(8))


def test_a_run_on_a_memory_mapped_dataset_matches_one_in_memory(tiny_dataset, tmp_path):
    from dataclasses import replace

    from dsae.train import run_training

    cfg, _ = tiny_dataset
    cfg = replace(cfg, train=replace(cfg.train, steps=10))
    runs = [run_training(replace(cfg, data=replace(cfg.data, in_memory=flag)), tmp_path / str(flag), progress=False)
            for flag in (True, False)]
    assert runs[0]["probe_r2"] == runs[1]["probe_r2"] and runs[0]["recon_mse"] == runs[1]["recon_mse"]


def test_compressed_episode_files_load_whole(copy_of):
    from dsae.data import read_manifest, sha256, write_manifest

    manifest = read_manifest(copy_of)
    path = copy_of / "episode_00004.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    np.savez_compressed(path, **arrays)
    manifest["files"][path.name] = sha256(path)
    write_manifest(copy_of, manifest)
    ds = load_dataset(copy_of, in_memory=False)
    np.testing.assert_array_equal(ds.episode(4), arrays["frames"])
