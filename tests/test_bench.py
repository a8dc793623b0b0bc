"""The benchmarks run and write their JSON (tiny repeat counts; no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``bench/<script>`` to a successful end (its output in the failure message)."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_spatial_softmax_benchmark(tmp_path):
    out = tmp_path / "ss.json"
    run("spatial_softmax.py", "--repeats", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows if r["device"] == "cpu"] == [[64, 16, 109, 109], [256, 32, 21, 21]]
    for r in rows:
        for impl in ("ours", "kornia", "straightforward"):
            assert r[impl]["forward_backward_ms"] > 0 and r[impl]["saved_for_backward_bytes"] > 0
        assert r["speedup_forward_backward_ms_vs_kornia"] > 0


def test_render_benchmark(tmp_path):
    out = tmp_path / "render.json"
    run("render.py", "--frames", "20", "--out", str(out))
    rows = {r["env"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"reacher", "pusher"}
    assert all(r["frames_per_s"] > 0 and r["stock_shadows_frames_per_s"] > 0 for r in rows.values())


def test_train_throughput_benchmark(tmp_path):
    out = tmp_path / "tp.json"
    run("train_throughput.py", "--models", "default", "--steps", "2", "--warmup", "1", "--episodes", "6",
        "--workers", "0", "--data", str(tmp_path / "data"), "--out", str(out))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "default" and row["device"] == "cpu" and row["image_size"] == 64
    assert row["reference"]["images_per_s"] > 0 and row["framework"]["images_per_s"] > 0
    assert row["speedup"] == row["framework"]["images_per_s"] / row["reference"]["images_per_s"]


def test_collect_scaling_benchmark(tmp_path):
    out = tmp_path / "collect.json"
    run("collect_scaling.py", "--workers", "1", "2", "--episodes", "4", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [1, 2]
    assert all(r["frames"] == 4 * 51 and r["frames_per_s"] > 0 for r in rows)
    assert rows[0]["speedup_vs_1"] == 1.0


def test_rl_benchmark(tmp_path):
    """Three modes at a tiny budget: the JSON maps each mode to its normalised score."""
    from dsae.checkpoint import save_checkpoint
    from dsae.config import to_dict
    from dsae.model import DeepSpatialAutoencoder
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path)
    enc = tmp_path / "enc"
    save_checkpoint(enc / "checkpoints" / "last.pt", {
        "model": DeepSpatialAutoencoder(cfg.model, 32).state_dict(), "config": to_dict(cfg), "image_size": 32})
    out = tmp_path / "rl"
    run("rl_reacher.py", "--encoder", str(enc), "--steps", "60", "--seeds", "2", "--pixel-seeds", "1",
        "--out", str(out), "rl.init_steps=24", "rl.batch_size=8", "rl.hidden=[16]", "rl.eval_every=24",
        "rl.eval_episodes=1", "rl.checkpoint_every=24", "rl.pixel_channels=4", "env.max_episode_steps=12",
        "env.image_size=32")
    summary = json.loads((out / "rl_reacher.json").read_text())
    assert set(summary["normalised_score"]) == {"state", "pixels", "keypoints"}
    assert summary["normalised_score"]["state"] == pytest.approx(1.0)
    assert len(summary["modes"]["state"]["final_returns"]) == len(summary["modes"]["keypoints"]["final_returns"]) == 2
    assert len(summary["modes"]["pixels"]["final_returns"]) == 1
    assert summary["steps"] == 60 and (out / "rl_reacher.png").stat().st_size > 0
    for mode, info in summary["modes"].items():
        assert all(c[-1]["env_step"] == 60 for c in info["curves"]), mode


def test_push_benchmark_names_an_unfinished_expert_and_students_of_another_teacher(tmp_path):
    encoder, expert, out = tmp_path / "enc", tmp_path / "expert", tmp_path / "push"
    (encoder / "checkpoints").mkdir(parents=True)
    (encoder / "checkpoints" / "last.pt").write_bytes(b"")
    expert.mkdir()
    command = [sys.executable, str(REPO / "bench" / "push.py"), "--encoder", str(encoder), "--expert", str(expert),
               "--rounds", "5", "--out", str(out)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "is not a finished scripts/train_rl.py run" in proc.stderr
    proc = subprocess.run([*command, "--", "imitation.rounds=3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "give the students' rounds with --rounds" in proc.stderr
    (expert / "metrics.json").write_text("{}")
    stale = out / "imitation-seed1"
    (stale / ".hydra").mkdir(parents=True)
    (stale / "metrics.json").write_text("{}")
    (stale / ".hydra" / "overrides.yaml").write_text(
        f"- expert={tmp_path / 'old-expert'}\n- encoder={encoder}\n- imitation.rounds=5\n- seed=1\n"
        "- threads=1\n- progress=false\n- logger=none\n")
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert f"was made with ['expert={tmp_path / 'old-expert'}'], where this benchmark runs ['expert={expert}']" in proc.stderr
    assert not (out / "sac-state-seed0").exists(), "nothing ran before the stale student was named"
    (stale / ".hydra" / "overrides.yaml").unlink()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "holds a run but no .hydra/overrides.yaml" in proc.stderr


def test_keypoint_quality_benchmark_summarises_seeds_and_skips_finished_runs(tmp_path):
    from tests.test_e2e import script, tiny_overrides

    overrides = [o for o in tiny_overrides(tmp_path, "unused", steps=6) if not o.startswith("hydra.run.dir")]
    args = ["--name", "tiny", "--scenes", "reacher", "--seeds", "2", "--out", str(tmp_path / "kq"), "--", *overrides]
    script("collect.py", *overrides)  # the dataset first, so that the two seeds can train at once
    run("keypoint_quality.py", "--workers", "2", *args)
    summary = json.loads((tmp_path / "kq" / "tiny.json").read_text())
    target = summary["scenes"]["reacher"]["objects"]["target"]
    assert len(target["probe_r2"]) == 2 and len(target["keypoint_err_px"]) == 2
    assert target["keypoint_err_px_mean"] == pytest.approx(sum(target["keypoint_err_px"]) / 2)
    first = (tmp_path / "kq" / "tiny" / "reacher-seed0" / "metrics.json").stat().st_mtime
    # A scene written by an earlier call with the same overrides is kept; with others, dropped.
    (tmp_path / "kq" / "tiny.json").write_text(json.dumps({**summary, "scenes": {**summary["scenes"], "other": summary["scenes"]["reacher"]}}))
    run("keypoint_quality.py", *args)  # a second call reads the finished runs instead of training again
    assert (tmp_path / "kq" / "tiny" / "reacher-seed0" / "metrics.json").stat().st_mtime == first
    again = json.loads((tmp_path / "kq" / "tiny.json").read_text())
    assert set(again["scenes"]) == {"reacher", "other"} and again["scenes"]["reacher"] == summary["scenes"]["reacher"]
    # A later seed alone (--first-seed): seed 1's finished run is read, not trained again.
    second = (tmp_path / "kq" / "tiny" / "reacher-seed1" / "metrics.json").stat().st_mtime
    run("keypoint_quality.py", "--name", "tiny", "--scenes", "reacher", "--seeds", "1", "--first-seed", "1",
        "--out", str(tmp_path / "kq"), "--", *overrides)
    one = json.loads((tmp_path / "kq" / "tiny.json").read_text())["scenes"]["reacher"]
    assert one["seeds"] == [1] and one["objects"]["target"]["keypoint_err_px"] == target["keypoint_err_px"][1:]
    assert (tmp_path / "kq" / "tiny" / "reacher-seed1" / "metrics.json").stat().st_mtime == second
    # Other overrides under the same name: the runs they would be confused with are refused.
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "keypoint_quality.py"), *args, "train.lr=0.001"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "where this benchmark runs ['train.lr=0.001']" in proc.stderr
    assert set(json.loads((tmp_path / "kq" / "tiny.json").read_text())["scenes"]) == {"reacher", "other"}
    # The same overrides on other defaults (the settings a summary or a run recorded): refused too.
    def refused(message: str) -> None:
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "keypoint_quality.py"), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    recorded = (tmp_path / "kq" / "tiny.json").read_text()
    assert json.loads(recorded)["settings"]["model"]["num_keypoints"] == 8  # as tiny_overrides set it
    (tmp_path / "kq" / "tiny.json").write_text(recorded.replace('"num_keypoints": 8', '"num_keypoints": 5'))
    refused("holds scenes of these overrides on other settings (model.num_keypoints)")
    (tmp_path / "kq" / "tiny.json").write_text(json.dumps({k: v for k, v in json.loads(recorded).items() if k != "settings"}))
    refused("was written before summaries recorded their settings")
    # A summary written before a model setting was added reads as its runs ran (MODEL_SETTINGS_SAVED_BEFORE).
    before = json.loads(recorded)
    del before["settings"]["model"]["wide_equivariance"]
    (tmp_path / "kq" / "tiny.json").write_text(json.dumps(before))
    run("keypoint_quality.py", *args)
    assert json.loads((tmp_path / "kq" / "tiny.json").read_text())["settings"] == json.loads(recorded)["settings"]
    (tmp_path / "kq" / "tiny.json").write_text(recorded)
    config = tmp_path / "kq" / "tiny" / "reacher-seed1" / "config.json"
    made = config.read_text()
    config.write_text(made.replace('"slow_weight": ', '"slow_weight": 0.5, "was": '))
    refused("reacher-seed1 was run on other settings (model.slow_weight, model.was)")
    config.write_text(made)

    # Where the best keypoint sits: its error here is the one metrics.json reports.
    run("keypoint_offsets.py", str(tmp_path / "kq" / "tiny" / "reacher-seed0"), "--out", str(tmp_path / "off.json"),
        "--row-edges", "16", "--edge-distances", "4")
    (figures,) = json.loads((tmp_path / "off.json").read_text()).values()
    metrics = json.loads((tmp_path / "kq" / "tiny" / "reacher-seed0" / "metrics.json").read_text())
    for name in ("fingertip", "target"):
        assert figures[name]["best_err_px"] == pytest.approx(metrics["keypoint_err_px"][name], rel=1e-4)
        assert figures[name]["nearest_any_px"] <= figures[name]["best_err_px"]
        rings = figures[name]["by_centre_distance"]  # the default edges, 8 and 20 px: three rings
        assert [r["from_px"] for r in rings] == [0, 8, 20] and sum(r["share"] for r in rings) == pytest.approx(1)
        split = sum(r["share"] * r["err_px"] for r in rings if r["err_px"] is not None)
        assert split == pytest.approx(figures[name]["best_err_px"], rel=1e-6)
        assert all(r["nearest_any_px"] <= r["err_px"] for r in rings if r["err_px"] is not None)
        # The best keypoint's presence, over all frames and split: a share of the softmax's mass.
        assert 0 < figures[name]["presence"] <= 1
        split = sum(r["share"] * r["presence"] for r in rings if r["presence"] is not None)
        assert split == pytest.approx(figures[name]["presence"], rel=1e-6)
        rows = figures[name]["by_row"]  # above and below row 16: the same frames, split another way
        assert [r["from_px"] for r in rows] == [0, 16] and sum(r["share"] for r in rows) == pytest.approx(1)
        split = sum(r["share"] * r["err_px"] for r in rows if r["err_px"] is not None)
        assert split == pytest.approx(figures[name]["best_err_px"], rel=1e-6)
        edges = figures[name]["by_edge_distance"]  # within 4 px of the image's edge and beyond
        assert [r["from_px"] for r in edges] == [0, 4] and sum(r["share"] for r in edges) == pytest.approx(1)
        split = sum(r["share"] * r["err_px"] for r in edges if r["err_px"] is not None)
        assert split == pytest.approx(figures[name]["best_err_px"], rel=1e-6)
    for name in ("fingertip", "target"):  # over time (the figures themselves: the test below)
        lasting = figures[name]["offset_autocorrelation"]
        assert set(lasting) == {"1", "3", "10"} and all(c is None or -1 <= c <= 1 for c in lasting.values())
    assert figures["fingertip"]["keypoint_accel_px"] >= 0 and figures["target"]["object_accel_px"] == 0
    # Gain: a slope where the object moves; none for the target, still in the one held-out episode.
    assert all(isinstance(g, float) for g in figures["fingertip"]["gain"]) and figures["target"]["gain"] == [None, None]

    # What the camera sees of each object; the best keypoint's error, split by it, as metrics.json gives it.
    run("visibility.py", str(tmp_path / "kq" / "tiny" / "reacher-seed0"), "--out", str(tmp_path / "vis.json"))
    (seen,) = json.loads((tmp_path / "vis.json").read_text()).values()
    assert seen["restored_unlike_share"] < 0.05  # the stored state renders the stored frames again
    for name in ("fingertip", "target"):
        f = seen["objects"][name]
        assert f["visible_px_mean"] > 0 and 0 <= f["hidden_share"] <= f["partly_hidden_share"] <= 1
        n, err = f["frames"], f["best_err_px"]
        split = sum(n[k] * err[k] for k in n if err[k] is not None) / sum(n.values())
        assert split == pytest.approx(metrics["keypoint_err_px"][name], rel=1e-4)
        assert f["probe_r2"]["all"] == pytest.approx(metrics["probe_r2"][name], abs=1e-4)
        # The centroid of the pixels it shows sits on its labelled centre (x then y, as the labels).
        assert f["centroid_err_px"]["visible"] < 1.0
    assert seen["objects"]["fingertip"]["centroid_r2"] > 0.95


def test_framing_diagnostic_draws_a_datasets_states_through_other_cameras(tiny_dataset, tmp_path):
    """The dataset's own camera sees every object; a camera looking far away sees none; a view
    that names no scene setting is refused."""
    _, root = tiny_dataset
    run("framing.py", str(root), "--every", "7", "--view", "camera_lookat=[5,5,0]", "--out", str(tmp_path / "fr.json"))
    own, away = json.loads((tmp_path / "fr.json").read_text())["views"]
    assert own["view"] == {} and away["view"] == {"camera_lookat": [5, 5, 0]}
    for name in ("fingertip", "target"):
        assert own["objects"][name]["visible_px_mean"] > 0 and own["objects"][name]["out_of_view_share"] == 0.0
        assert 0.0 <= own["objects"][name]["hidden_share"] <= own["objects"][name]["partly_hidden_share"] <= 1.0
        assert away["objects"][name]["out_of_view_share"] == 1.0 and away["objects"][name]["visible_px_mean"] is None
    assert own["objects"]["target"]["spread_px2"] > 0  # placed anew each episode
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "framing.py"), str(root), "--view", "elevation=-60"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "field=value with a scene setting" in proc.stderr


def test_dataset_motion_diagnostic(tiny_dataset, tmp_path):
    """Reacher's target is placed anew each episode but never moves within one."""
    _, root = tiny_dataset
    run("dataset_motion.py", str(root), "--view", "0", "31", "--out", str(tmp_path / "motion.json"))
    figures = json.loads((tmp_path / "motion.json").read_text())[str(root)]
    target = figures["target"]
    assert target["episodes"] == 8 and target["moved_share"] == 0.0 and target["travel_m"] == 0.0
    assert 0.0 <= target["near_share"] <= 1.0
    assert target["out_of_view_share"] == 0.0 and figures["fingertip"]["out_of_view_share"] == 0.0  # 32 px: all in view
    run("dataset_motion.py", str(root), "--view", "16", "16", "--out", str(tmp_path / "motion.json"))
    assert json.loads((tmp_path / "motion.json").read_text())[str(root)]["target"]["out_of_view_share"] == 1.0
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "dataset_motion.py"), str(root), "--effector", "hand"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "no object 'hand'" in proc.stderr


def test_large_recording_benchmark(tmp_path):
    out = tmp_path / "large.json"
    run("large_recording.py", "--frames", "600", "--episode-frames", "30", "--size", "32", "--steps", "3",
        "--work", str(tmp_path / "work"), "--out", str(out))
    result = json.loads(out.read_text())
    assert result["frames_bytes"] == 600 * 32 * 32 * 3
    assert 0 < result["train"]["peak_anon_bytes"] <= result["train"]["peak_rss_bytes"]
    assert set(result["probe_r2"]) == {"arm", "puck"}


def test_policy_eval_replays_a_runs_evaluation_episodes_and_more(tmp_path):
    from tests.test_e2e import script
    from tests.test_rl_e2e import tiny_rl

    script("train_rl.py", *tiny_rl(tmp_path, "sac", 96, "obs=state"))
    metrics = json.loads((tmp_path / "sac" / "metrics.json").read_text())
    out = tmp_path / "eval.json"
    run("policy_eval.py", str(tmp_path / "sac"), "--episodes", "3", "--out", str(out))
    written = json.loads(out.read_text())
    row = written[str(tmp_path / "sac")]
    assert written["baselines"]["do_nothing"]["returns"][:2] == pytest.approx(
        metrics["baselines"]["do_nothing"]["returns"], abs=1e-4)
    assert row["episodes"] == 3 and len(row["returns"]) == 3 and row["kind"] == "sac"
    assert row["returns"][:2] == pytest.approx(metrics["eval_returns"], abs=1e-4), "the run's own 2 episodes come first"
    run("policy_eval.py", str(tmp_path / "sac"), "--episodes", "3", "--out", str(out))  # read, not played again
    assert json.loads(out.read_text())[str(tmp_path / "sac")]["wall_s"] == row["wall_s"]
    checkpoint = tmp_path / "sac" / "checkpoints" / "agent.pt"  # trained on: played again
    os.utime(checkpoint, (checkpoint.stat().st_atime, checkpoint.stat().st_mtime + 60))
    run("policy_eval.py", str(tmp_path / "sac"), "--episodes", "3", "--out", str(out))
    again = json.loads(out.read_text())[str(tmp_path / "sac")]
    assert again["checkpoint_mtime"] == row["checkpoint_mtime"] + 60 and again["wall_s"] != row["wall_s"]
    run("policy_eval.py", str(tmp_path / "sac"), "--episodes", "1", "--first", "2", "--out", str(out))
    later = json.loads(out.read_text())
    assert later[str(tmp_path / "sac")]["returns"] == pytest.approx(row["returns"][2:], abs=1e-4)
    assert later["baselines"]["do_nothing"]["returns"] == pytest.approx(
        written["baselines"]["do_nothing"]["returns"][2:], abs=1e-4)


def test_step_cost_times_a_setting_against_the_default(tmp_path):
    out = tmp_path / "cost.json"
    run("step_cost.py", "model.equivariance_weight=0.01", "--blocks", "1", "--steps", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["overrides"] == ["model.equivariance_weight=0.01"]
    assert result["images_per_s"]["default"] > 0 and result["images_per_s"]["changed"] > 0
    assert result["ratio"] == result["images_per_s"]["changed"] / result["images_per_s"]["default"]
    assert result["revision"] is None and result["precision"] == "float32"


def test_step_cost_times_the_working_tree_against_a_revision(tmp_path):
    """``--revision``: the same settings at a git revision (here the one checked out) and in the working tree."""
    out = tmp_path / "cost.json"
    run("step_cost.py", "--revision", "HEAD", "model.num_keypoints=8", "--blocks", "1", "--steps", "1", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["revision"] == "HEAD" and result["overrides"] == ["model.num_keypoints=8"]
    assert result["images_per_s"]["default"] > 0 and result["images_per_s"]["changed"] > 0


def test_visibility_restores_a_frames_state_and_refuses_joints_a_dataset_does_not_store():
    from envs import make_env

    sys.path.insert(0, str(REPO / "bench"))  # bench/ scripts import their siblings, as when run
    import visibility
    env = make_env("reacher", image_size=32)
    _, info = env.reset(seed=3)
    for _ in range(5):
        _, _, _, _, info = env.step(env.action_space.sample())
    frame = env.render()

    def unlike() -> float:
        return float((abs(env.render().astype(int) - frame).sum(-1) > visibility.CHANGED).mean())

    env.reset(seed=4)  # elsewhere; the restorer must bring back the step's pose and target
    elsewhere = unlike()
    visibility.restorer(env)(info["joint_state"], info["positions"])
    assert env.data.xpos[env.object_bodies["target"]] == pytest.approx(info["positions"]["target"], abs=1e-9)
    assert env.data.xpos[env.object_bodies["fingertip"]] == pytest.approx(info["positions"]["fingertip"], abs=1e-4)
    assert unlike() <= 0.005 < elsewhere
    env.close()
    block = make_env("push_block")
    with pytest.raises(SystemExit, match="does not store joint 'block_yaw'"):
        visibility.restorer(block)
    block.close()


def test_visibility_draws_the_scene_as_it_was_after_a_render_raises(monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    from envs import make_env

    sys.path.insert(0, str(REPO / "bench"))
    import visibility
    env = make_env("reacher", image_size=32)
    env.reset(seed=0)
    model = env.model
    lights, reflectance, rgba = model.light_castshadow.copy(), model.mat_reflectance.copy(), model.geom_rgba.copy()
    frame = env.render()
    renders = iter([frame, frame])  # the stored frame, the plain one; the first object's raises

    def render():
        try:
            return next(renders)
        except StopIteration:
            raise RuntimeError("the renderer failed") from None

    monkeypatch.setattr(env, "render", render)
    dataset = SimpleNamespace(joint_state=env.joint_state()[None], objects=list(env.object_names), frames=frame[None],
                              positions={o: env.data.xpos[b][None].copy() for o, b in env.object_bodies.items()})
    with pytest.raises(RuntimeError, match="renderer failed"):
        visibility.visible_pixels(env, lambda joint_state, positions: None, dataset, np.array([0]))
    assert (model.light_castshadow == lights).all() and (model.mat_reflectance == reflectance).all()
    assert (model.geom_rgba == rgba).all()
    env.close()


def test_keypoint_offsets_tells_jitter_from_an_offset_that_lasts():
    import numpy as np

    sys.path.insert(0, str(REPO / "bench"))
    import keypoint_offsets
    t = np.arange(12.0)
    obj = np.stack([t, 2 * t], 1)  # moving at a constant velocity: no acceleration
    episode, seen = np.repeat([0, 1], 6), np.ones(12, bool)
    jitter = obj + np.where(t % 2 == 0, 1.0, -1.0)[:, None]  # the offset flips sign every frame
    figures = keypoint_offsets.temporal(jitter, obj, seen, episode, lags=(1, 2))
    assert figures["offset_autocorrelation"] == pytest.approx({"1": -1.0, "2": 1.0})
    assert figures["object_accel_px"] == 0 and figures["keypoint_accel_px"] == pytest.approx(4 * np.sqrt(2))
    # An offset that grows within each episode lasts; one that never changes has no correlation to give.
    drift = obj + (t % 6)[:, None]
    assert keypoint_offsets.temporal(drift, obj, seen, episode, lags=(1,))["offset_autocorrelation"]["1"] > 0.5
    assert keypoint_offsets.temporal(obj + 3, obj, seen, episode, lags=(1,))["offset_autocorrelation"] == {"1": None}
    # Pairs across two episodes, or with the object out of view, do not count.
    seen[1::2] = False
    assert keypoint_offsets.temporal(jitter, obj, seen, episode, lags=(1,))["offset_autocorrelation"] == {"1": None}


def test_jobs_run_at_once_share_the_cores_unless_told(monkeypatch):
    sys.path.insert(0, str(REPO / "bench"))
    import jobs

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert jobs.job_environment(3)["OMP_NUM_THREADS"] == "5" and jobs.job_environment(32)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in jobs.job_environment(1)  # one job: torch's own choice, all the cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins
    assert jobs.job_environment(3)["OMP_NUM_THREADS"] == "2"


def test_keypoint_offsets_tells_a_keypoint_that_follows_a_shift_from_one_held_on_the_cells():
    """``shifted``: a keypoint on a 1 px grid follows the input 1, 2 and 3 px over; one whose conv
    samples every other pixel (stride 2) keeps to its 2 px cells: 1 px off at odd shifts, on at even ones."""
    import types

    import numpy as np
    import torch

    from dsae.config import ModelConfig
    from dsae.model import SpatialEncoder

    sys.path.insert(0, str(REPO / "bench"))
    import keypoint_offsets
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    for i, col in enumerate((9, 12, 15, 18)):
        frames[i, 14, col:col + 2] = 255  # a dot two pixels wide, from even and odd columns
    strays = {}
    for stride in (1, 2):
        cfg = ModelConfig(channels=[1], kernels=[1], strides=[stride], num_keypoints=1, local_keypoints=0, norm="none",
                          temperature=0.002, learn_temperature=False, wide_input="frame")
        encoder = SpatialEncoder(cfg, 32)
        with torch.no_grad():  # the map is the brightness (a 1x1 conv of weight 1 on every channel)
            encoder.features[0].weight.fill_(1.0), encoder.features[0].bias.zero_()
        opened = types.SimpleNamespace(model=types.SimpleNamespace(encoder=encoder),
                                       dataset=types.SimpleNamespace(frames=frames, image_size=32))
        strays[stride] = keypoint_offsets.shifted(opened, np.arange(4), 0)
    assert strays[1] == pytest.approx({"1": 0.0, "2": 0.0, "3": 0.0}, abs=1e-3)
    assert strays[2] == pytest.approx({"1": 1.0, "2": 0.0, "3": 1.0}, abs=1e-3)
