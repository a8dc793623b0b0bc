"""envs: scenes from YAML files, the top-down camera, its world->pixel matrix, ground truth,
validation, gymnasium registration."""

import math

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from envs import camera_matrix, load_scene, make_env, project_points, scene_names


def test_reacher_frames_and_info():
    env = make_env("reacher", image_size=48)
    _, info = env.reset(seed=3)
    frame = env.render()
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    assert set(info["positions"]) == {"fingertip", "target"}
    assert info["camera_matrix"].shape == (3, 4)
    assert info["joint_state"].shape == (4,)
    _, _, _, _, info2 = env.step(env.action_space.sample())
    assert set(info2["pixels"]) == {"fingertip", "target"}
    assert not np.allclose(info2["joint_state"], info["joint_state"])
    env.close()


# Hue masks for the stock colours: target (0.9, 0.2, 0.2) red; fingertip (0.0, 0.8, 0.6)
# green-teal, unlike the links (0.0, 0.4, 0.6), which are blue-dominant, and the grey floor.
MASKS = {
    "target": lambda r, g, b: (r > 2 * g) & (r > 2 * b) & (r > 60),
    "fingertip": lambda r, g, b: (g > r + 50) & (g > b + 8),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projected_pixels_land_on_the_rendered_objects(seed):
    """The pixels in info (through the camera matrix) are where the spheres appear."""
    env = make_env("reacher", image_size=128, object_radius=0.02, randomize_arm=True)
    _, info = env.reset(seed=seed)
    frame = env.render().astype(int)
    for obj, mask_of in MASKS.items():
        rows, cols = np.nonzero(mask_of(frame[..., 0], frame[..., 1], frame[..., 2]))
        assert len(rows) > 20, f"{obj} not found in the frame"
        centroid = np.array([cols.mean(), rows.mean()])
        assert np.linalg.norm(centroid - info["pixels"][obj]) < 1.5, (obj, centroid, info["pixels"][obj])
    env.close()


def test_camera_matrix_matches_mujoco_scene_camera():
    """Independent reference: MuJoCo's own camera pose (mean of its two stereo eyes)."""
    model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1 1 .1' type='plane'/></worldbody></mujoco>")
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    cam.lookat[:] = [0.1, -0.2, 0.05]
    cam.distance, cam.azimuth, cam.elevation = 0.9, 30.0, -60.0
    scene = mujoco.MjvScene(model, maxgeom=10)
    mujoco.mjv_updateScene(model, data, mujoco.MjvOption(), None, cam, mujoco.mjtCatBit.mjCAT_ALL, scene)
    left, right = scene.camera[0], scene.camera[1]
    pos = (np.array(left.pos) + np.array(right.pos)) / 2
    forward, up = np.array(left.forward), np.array(left.up)
    p = camera_matrix(cam.lookat, cam.distance, cam.azimuth, cam.elevation, model.vis.global_.fovy, 64, 64)
    # The camera centre is the matrix's null space; forward maps to the image centre.
    _, _, vt = np.linalg.svd(p)
    centre = vt[-1, :3] / vt[-1, 3]
    np.testing.assert_allclose(centre, pos, atol=1e-5)
    np.testing.assert_allclose(project_points(p, pos + forward), [31.5, 31.5], atol=1e-4)
    # Up in the world is up in the image (smaller row).
    assert project_points(p, pos + forward + 0.1 * up)[1] < 31.5
    np.testing.assert_allclose(np.linalg.norm(forward), 1.0, atol=1e-6)
    half = math.tan(math.radians(model.vis.global_.fovy) / 2)
    # A point on the top edge of the view frustum projects to row -0.5 (the top pixel's edge).
    np.testing.assert_allclose(project_points(p, pos + forward + half * up)[1], -0.5, atol=1e-4)  # MuJoCo is float32


def test_top_down_axes():
    """azimuth 90, elevation -90: world +x is image right, world +y is image up."""
    p = camera_matrix([0, 0, 0], 1.0, 90.0, -90.0, 45.0, 64, 64)
    c = project_points(p, [0, 0, 0])
    np.testing.assert_allclose(c, [31.5, 31.5], atol=1e-9)
    assert project_points(p, [0.1, 0, 0])[0] > c[0]
    assert project_points(p, [0, 0.1, 0])[1] < c[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="cheetah"), "unknown scene 'cheetah'.*push_block.*pusher.*reacher"),
    (dict(name="reacher", xml="envs/assets/push_block.xml"), "exactly one of env.gym_id"),
    (dict(name="reacher", objects={}), "env.objects is empty"),
    (dict(name="reacher", image_size=0), "image_size"),
    (dict(name="reacher", camera_id=0), "camera_id"),
    (dict(name="reacher", camera_distance=-1.0), "camera_distance"),
    (dict(name="reacher", object_radius=0.0), "object_radius"),
    (dict(name="reacher", task_object="target"), "both env.task_object and env.task_goal"),
    (dict(name="reacher", task_object="target", task_goal="elbow"), "env.task_goal='elbow' is not one of"),
    (dict(name="pusher", goal_radius=0.0), "goal_radius"),
])
def test_invalid_settings_raise_before_mujoco(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        make_env(name, **kwargs)


def test_unknown_setting_is_named():
    with pytest.raises(TypeError, match="image_sise"):
        make_env("reacher", image_sise=64)


def test_pusher_objects_and_no_shadows():
    env = make_env("pusher", image_size=32)
    _, info = env.reset(seed=0)
    assert set(info["positions"]) == {"fingertip", "object", "goal"}
    assert info["joint_state"].shape == (14,)
    assert not env.unwrapped.model.light_castshadow.any()
    assert env.render().shape == (32, 32, 3)
    for obj in ("object", "goal"):
        u, v = info["pixels"][obj]
        assert 0 <= u <= 31 and 0 <= v <= 31, f"{obj} is outside the pusher framing"
    env.close()


@pytest.mark.parametrize("scene, joints, radius", [("pusher", ("obj_slidex", "obj_slidey"), 0.08),
                                                   ("push_block", ("block_x", "block_y"), 0.03)])
def test_task_success_on_hand_placed_states(scene, joints, radius):
    """Success: the object's centre within goal_radius of the goal's, in (x, y), at that step."""
    env = make_env(scene, image_size=32)
    _, info = env.reset(seed=0)
    assert info["success"] is False and info["goal_distance"] > radius, "resets never start solved"
    sim = env.unwrapped.sim
    goal = info["positions"][env.unwrapped.config.task_goal][:2]
    for offset, solved in ((0.0, True), (0.7 * radius, True), (1.3 * radius, False)):
        qpos = sim.data.qpos.copy()
        obj = info["positions"][env.unwrapped.config.task_object][:2]
        for axis, joint in enumerate(joints):  # move the object by the slide joints to goal + (offset, 0)
            qpos[sim.model.joint(joint).qposadr[0]] += goal[axis] + (offset if axis == 0 else 0.0) - obj[axis]
        sim.set_state(qpos, np.zeros_like(sim.data.qvel))
        _, _, _, _, info = env.step(np.zeros(env.action_space.shape))
        assert info["goal_distance"] == pytest.approx(offset, abs=0.01), (scene, offset)
        assert info["success"] is solved, (scene, offset, info["goal_distance"])
    env.close()
    _, info = make_env("reacher", image_size=32).reset(seed=0)
    assert "success" not in info, "a scene without a task reports no success"


def test_object_radius_is_visual_only():
    stock, big = make_env("reacher"), make_env("reacher", object_radius=0.03)
    for geom in load_scene("reacher").marker_geoms:
        gid = mujoco.mj_name2id(big.unwrapped.model, mujoco.mjtObj.mjOBJ_GEOM, geom)
        assert big.unwrapped.model.geom_size[gid, 0] == 0.03
    np.testing.assert_array_equal(stock.unwrapped.model.body_mass, big.unwrapped.model.body_mass)
    stock.reset(seed=0), big.reset(seed=0)
    a = np.array([0.5, -0.5], dtype=np.float32)
    for _ in range(5):
        o1, *_ = stock.step(a)
        o2, *_ = big.step(a)
    np.testing.assert_allclose(o1, o2)


def test_geom_rgba_recolours_and_validates():
    env = make_env("reacher", image_size=64, object_radius=0.03, geom_rgba={"target": [0.0, 0.0, 1.0, 1.0]})
    _, info = env.reset(seed=0)
    u, v = info["pixels"]["target"]
    r, g, b = env.render()[int(round(v)), int(round(u))].astype(int)
    assert b > r + 50 and b > g + 50, "the target is drawn blue"
    with pytest.raises(ValueError, match="geom 'targt' is not in the model.*target"):
        make_env("reacher", geom_rgba={"targt": [1.0, 1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match="4 numbers in"):
        make_env("reacher", geom_rgba={"target": [2.0, 0.0, 0.0]})


def test_reward_weights_reach_the_gymnasium_env_and_validate():
    action = np.full(2, 0.5, dtype=np.float32)
    rewards = {}
    for weight in (0.1, 0.0):  # Reacher-v5's own default, and none
        env = make_env("reacher", reward_weights={"reward_control_weight": weight})
        env.reset(seed=0)
        _, rewards[weight], *_, info = env.step(action)
        assert info["reward_ctrl"] == pytest.approx(-weight * 0.5)
    assert rewards[0.0] - rewards[0.1] == pytest.approx(0.1 * 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="Reacher-v5 does not take one of these keywords"):
        make_env("reacher", reward_weights={"reward_speed_weight": 1.0})
    with pytest.raises(ValueError, match="ends in _weight"):
        make_env("reacher", reward_weights={"reward_control": 1.0})
    with pytest.raises(ValueError, match="only applies to env.gym_id scenes"):
        make_env("push_block", reward_weights={"reward_control_weight": 1.0})


def test_every_scene_builds_and_sees_its_objects():
    for name in scene_names():
        env = make_env(name, image_size=32)
        _, info = env.reset(seed=0)
        assert set(info["pixels"]) == set(load_scene(name).objects)
        assert info["joint_state"].shape == (2 * len(load_scene(name).joints),)
        assert env.joint_features().shape == (3 * len(load_scene(name).joints),)
        env.close()


def test_gymnasium_ids_and_vector_envs():
    env = gym.make("dsae/push_block-v0", image_size=32)
    _, info = env.reset(seed=0)
    assert env.render().shape == (32, 32, 3) and "block" in info["pixels"]
    env.close()
    vec = gym.make_vec("dsae/reacher-v0", num_envs=2, image_size=32)
    obs, _ = vec.reset(seed=0)
    assert obs.shape[0] == 2
    vec.close()


def test_scene_checker_and_recreation_from_spec():
    from gymnasium.utils.env_checker import check_env

    env = make_env("push_block", image_size=32)
    check_env(env)  # the close check re-creates the env from its spec
    again = env.spec.make()
    assert again.unwrapped.config == env.config
    again.close()


def test_episode_length_comes_from_the_scene_file():
    env = make_env("push_block", image_size=32, max_episode_steps=3)
    env.reset(seed=0)
    truncated = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert truncated == [False, False, True]


def test_mjcf_scene_places_its_objects_within_their_joint_ranges():
    """push_block's block and target start anywhere within their slide joints' ranges."""
    env = make_env("push_block", image_size=32)
    starts = np.array([env.reset(seed=s)[1]["positions"]["block"][:2] for s in range(30)])
    model = env.model
    for axis, joint in enumerate(("block_x", "block_y")):
        low, high = model.jnt_range[model.joint(joint).id] + model.body("block").pos[axis]
        assert low - 1e-9 <= starts[:, axis].min() and starts[:, axis].max() <= high + 1e-9
        assert starts[:, axis].std() > 0.25 * (high - low) / math.sqrt(12), "spread over the range"


def test_unknown_body_or_joint_lists_the_models_names():
    with pytest.raises(ValueError, match="body 'puck' is not in the model.*'block'"):
        make_env("push_block", objects={"puck": "puck"}, task_object=None, task_goal=None)
    with pytest.raises(ValueError, match="joint 'wrist' is not in the model.*'elbow'"):
        make_env("push_block", joints=["shoulder", "wrist"])


def test_python_and_hydra_give_the_same_scene():
    """make_env("reacher") and env=reacher read the same file: same settings, same frames."""
    from hydra import compose, initialize_config_dir

    from dsae.config import register, to_config
    from envs.scene import REPO

    register()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        for name in scene_names():
            cfg = to_config(compose(config_name="config", overrides=[f"env={name}"]))
            assert cfg.env == load_scene(name), name
            a, b = make_env(name), make_env(cfg.env)
            a.reset(seed=4), b.reset(seed=4)
            np.testing.assert_array_equal(a.render(), b.render())
