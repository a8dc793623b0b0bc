"""Collection: the exploratory policy, determinism across worker counts, and resume."""

import json
import os

import numpy as np
import pytest

from dsae.collect import ExplorationPolicy, collect, default_dataset_dir
from dsae.config import DataConfig
from dsae.data import MANIFEST, DatasetError, load_dataset
from envs import EnvConfig, make_env
from tests.conftest import tiny_config


def test_policy_drives_joints_towards_targets():
    """Motors (push_block's): PD torque towards the target, within the ctrlrange."""
    policy = ExplorationPolicy(make_env("push_block", image_size=16), noise=0.0, hold=(100, 100))
    policy.reset([7])
    target = policy.targets[0].copy()
    action = policy(np.array([[target[0] - 0.2, target[1] + 0.2, 0.0, 0.0]]))
    assert action[0, 0] > 0 and action[0, 1] < 0
    assert (np.abs(action) <= 1).all()


def test_policy_wraps_unlimited_joint_error():
    policy = ExplorationPolicy(make_env("reacher", image_size=16), noise=0.0, hold=(100, 100))
    policy.reset([0])
    policy.targets[:, 0] = 3.0  # reacher's joint0 is unlimited
    # At -3.0 the short way to +3.0 is backwards across pi (error -0.28 rad), not +6 rad.
    assert policy(np.array([[-3.0, 0.0, 0.0, 0.0]]))[0, 0] < 0


SERVO_XML = """<mujoco><worldbody><body><joint name="hinge" type="hinge" axis="0 0 1" range="-1 1"/>
  <geom type="capsule" fromto="0 0 0 0.1 0 0" size="0.01"/></body></worldbody>
  <actuator><position joint="hinge" kp="5" ctrlrange="-1 1"/></actuator></mujoco>"""


def test_policy_commands_position_servos_to_their_target(tmp_path):
    """A position actuator is sent the target itself; exploration reads the model, not the scene."""
    (tmp_path / "servo.xml").write_text(SERVO_XML)
    env = make_env(EnvConfig(name="servo", xml=str(tmp_path / "servo.xml"), objects={"arm": "world"},
                             joints=["hinge"]))
    policy = ExplorationPolicy(env, noise=0.0, hold=(100, 100))
    policy.reset([3])
    np.testing.assert_allclose(policy(np.array([[0.5, 0.0]])), policy.targets)


def test_random_policy_stays_in_bounds():
    policy = ExplorationPolicy(make_env("pusher", image_size=16), kind="random")
    policy.reset([0, 1, 2])
    a = policy(np.zeros((3, 14)))
    assert a.shape == (3, 7) and (np.abs(a) <= 2).all()
    with pytest.raises(ValueError, match="data.policy"):
        ExplorationPolicy(make_env("reacher", image_size=16), kind="brownian")
    with pytest.raises(ValueError, match="data.policy must be pd, random or the folder of a scripts/train_rl.py"):
        DataConfig(policy="brownian")


def test_dataset_does_not_depend_on_worker_count(tiny_dataset, tmp_path):
    """Two parallel workers (spawned processes) write the same episodes as one in-process env."""
    cfg, root = tiny_dataset
    cfg2 = tiny_config(tmp_path)
    cfg2.data.workers = 2
    cfg2.data.episodes = 3
    root2 = collect(cfg2.env, cfg2.data, progress=False)
    one, two = load_dataset(root), load_dataset(root2)
    n = two.starts[-1]
    np.testing.assert_array_equal(one.frames[:n], two.frames)
    np.testing.assert_array_equal(one.actions[:n], two.actions)


def test_interrupted_collection_resumes(tiny_dataset, tmp_path):
    cfg, full_root = tiny_dataset
    cfg2 = tiny_config(tmp_path)
    cfg2.data.episodes = 4
    root = collect(cfg2.env, cfg2.data, progress=False)
    # Simulate a crash: the manifest lost its last episodes and the completion mark, and a
    # torn temporary file lies around.
    manifest = json.loads((root / MANIFEST).read_text())
    del manifest["files"]["episode_00003.npz"]
    manifest["complete"] = False
    (root / MANIFEST).write_text(json.dumps(manifest))
    (root / "episode_00002.npz").unlink()
    (root / ".episode_00002.npz.tmp123").write_bytes(b"torn")
    before = (root / "episode_00000.npz").stat().st_mtime_ns
    cfg2.data.episodes = 8  # and ask for more
    collect(cfg2.env, cfg2.data, progress=False)
    assert (root / "episode_00000.npz").stat().st_mtime_ns == before, "kept episodes are not rewritten"
    resumed, full = load_dataset(root), load_dataset(full_root)
    np.testing.assert_array_equal(resumed.frames, full.frames)


def test_other_settings_in_the_same_folder_are_refused(tiny_dataset, tmp_path):
    cfg, root = tiny_dataset
    cfg2 = tiny_config(tmp_path)
    cfg2.data.dir = str(root)
    cfg2.env.image_size = 40
    with pytest.raises(DatasetError, match="other settings"):
        collect(cfg2.env, cfg2.data, progress=False)


def test_default_folder_follows_settings(tmp_path):
    a, b = tiny_config(tmp_path), tiny_config(tmp_path)
    b.env.object_radius = None
    assert default_dataset_dir(a.env, a.data) != default_dataset_dir(b.env, b.data)
    b = tiny_config(tmp_path)
    b.data.episodes, b.data.workers = 99, 7  # count and speed do not change the content
    assert default_dataset_dir(a.env, a.data) == default_dataset_dir(b.env, b.data)
    b.env.goal_radius, b.env.reward_weights = 0.5, {"reward_control_weight": 0.0}  # nor what the task scores
    assert default_dataset_dir(a.env, a.data) == default_dataset_dir(b.env, b.data)
    run = tmp_path / "expert"
    run.mkdir()
    a.data.policy, b.data.policy = str(run), os.path.relpath(run)  # one run folder, spelt two ways
    assert default_dataset_dir(a.env, a.data) == default_dataset_dir(b.env, b.data)
