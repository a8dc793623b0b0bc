"""scripts/train_rl.py end to end on tiny configs: train -> checkpoint -> kill -> resume -> evaluate."""

import json
import sys

import numpy as np
import pytest
import torch

from tests.test_e2e import REPO, kill_after_first_checkpoint, script
from tests.test_wrappers import tiny_encoder_path  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


def tiny_rl(tmp, run: str, steps: int = 240, *extra: str) -> list[str]:
    return [f"rl.steps={steps}", "rl.init_steps=48", "rl.batch_size=16", "rl.hidden=[32]", "rl.eval_every=48",
            "rl.eval_episodes=2", "rl.checkpoint_every=48", "rl.log_every=24", "rl.pixel_channels=8",
            "env.max_episode_steps=12", "logger=none", "device=cpu", "threads=1", "progress=false",
            f"hydra.run.dir={tmp / run}", *extra]


def test_killed_sac_run_resumes_to_the_same_agent(tmp_path):
    steps = 1200
    args = tiny_rl(tmp_path, "killed", steps, "obs=state")
    ckpt = tmp_path / "killed" / "checkpoints" / "agent.pt"
    killed_at = kill_after_first_checkpoint([sys.executable, str(REPO / "scripts" / "train_rl.py"), *args],
                                            tmp_path / "killed", "agent.pt")
    assert 0 < killed_at < steps, f"the run was meant to be killed mid-way (checkpoint at {killed_at})"

    out = script("train_rl.py", *tiny_rl(tmp_path, "other-folder", steps, "obs=state"),
                 f"resume={tmp_path / 'killed'}")
    assert f"from env step {killed_at}" in out.stdout
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["env_steps"] == steps and metrics["obs"] == "state"
    assert [c["env_step"] for c in metrics["curve"]] == list(range(48, steps + 1, 48))
    rows = (tmp_path / "killed" / "returns.csv").read_text().splitlines()
    evals = [r for r in rows if ",eval," in r]
    assert len(evals) == steps // 48, "rows after the checkpoint were not logged twice"
    assert len([r for r in rows if ",train," in r]) == steps // 12

    script("train_rl.py", *tiny_rl(tmp_path, "straight", steps, "obs=state"))
    a = torch.load(ckpt, weights_only=False)["agent"]
    b = torch.load(tmp_path / "straight" / "checkpoints" / "agent.pt", weights_only=False)["agent"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert straight["eval_return_mean"] == pytest.approx(metrics["eval_return_mean"], abs=1e-4)

    # The saved agent plays the evaluation episodes again to the same return.
    from dsae.rl import Policy, evaluate_policy

    policy = Policy(tmp_path / "killed", "cpu")
    env = policy.make_env()
    returns = evaluate_policy(env, lambda o: policy.agent.act(o, deterministic=True), 2)["returns"]
    assert np.mean(returns) == pytest.approx(metrics["eval_return_mean"], abs=1e-4)


def test_a_finished_run_trains_further_to_the_same_agent_as_a_longer_run(tmp_path):
    script("train_rl.py", *tiny_rl(tmp_path, "short", 120, "obs=state"))
    out = script("train_rl.py", *tiny_rl(tmp_path, "again", 240, "obs=state"), f"resume={tmp_path / 'short'}")
    assert "from env step 120 of 240" in out.stdout
    script("train_rl.py", *tiny_rl(tmp_path, "long", 240, "obs=state"))
    a = torch.load(tmp_path / "short" / "checkpoints" / "agent.pt", weights_only=False)
    b = torch.load(tmp_path / "long" / "checkpoints" / "agent.pt", weights_only=False)
    assert a["step"] == b["step"] == 240
    for name in a["agent"]:
        torch.testing.assert_close(a["agent"][name], b["agent"][name], rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((tmp_path / "short" / "metrics.json").read_text())["env_steps"] == 240


def test_keypoints_pixels_and_finetune_modes(tmp_path, tiny_encoder_path):  # noqa: F811
    enc = tiny_encoder_path.parent
    script("train_rl.py", *tiny_rl(tmp_path, "kp", 96, "obs=keypoints", f"encoder={tiny_encoder_path}",
                                   "rl.kalman=true", "rl.top_k=4", "rl.state_return=-5", "rl.random_return=-40"))
    m = json.loads((tmp_path / "kp" / "metrics.json").read_text())
    assert m["normalised_score"] == pytest.approx((m["eval_return_mean"] + 40) / 35)
    resolved = torch.load(tmp_path / "kp" / "checkpoints" / "agent.pt", weights_only=False)["env_resolved"]
    assert resolved["image_size"] == 32 and resolved["object_radius"] == 0.02, "the encoder's camera settings"

    script("train_rl.py", *tiny_rl(tmp_path, "px", 96, "obs=pixels", "env.image_size=32"))
    assert json.loads((tmp_path / "px" / "metrics.json").read_text())["env_steps"] == 96

    script("train_rl.py", *tiny_rl(tmp_path, "ft", 96, "obs=keypoints", f"encoder={enc}",
                                   "rl.finetune_encoder=true"))
    before = torch.load(tiny_encoder_path, weights_only=False)["model"]
    after = torch.load(tmp_path / "ft" / "checkpoints" / "agent.pt", weights_only=False)["agent"]
    w = "encoder.features.0.weight"
    assert not torch.equal(after[f"critic.features.image_features.encoder.{w}"], before[w]), \
        "fine-tuning trains the DSAE encoder"

    # visualize.py films the trained agent (the encoder comes from the policy's run)
    out = tmp_path / "vis"
    script("visualize.py", f"policy={tmp_path / 'kp'}", "episodes=1", "logger=none", "device=cpu",
           f"hydra.run.dir={out}")
    summary = json.loads((out / "tracking.json").read_text())
    assert summary["policy"] == str(tmp_path / "kp") and (out / "episode_0.mp4").exists()
    assert summary["episodes"][0]["frames"] == 13 and np.isfinite(summary["episodes"][0]["return"])


def test_bad_rl_input_is_named(tmp_path, tiny_encoder_path):  # noqa: F811
    proc = script("train_rl.py", *tiny_rl(tmp_path, "a", 96, "obs=keypoints"), check=False)
    assert proc.returncode != 0 and "encoder=PATH" in proc.stderr
    proc = script("train_rl.py", *tiny_rl(tmp_path, "b", 96, "obs=depth"), check=False)
    assert proc.returncode != 0 and "obs must be one of" in proc.stderr
    proc = script("train_rl.py", *tiny_rl(tmp_path, "c", 96, "obs=keypoints", f"encoder={tiny_encoder_path}",
                                           "env=pusher"), check=False)
    assert proc.returncode != 0 and "trained on env 'reacher'" in proc.stderr
    proc = script("train_rl.py", *tiny_rl(tmp_path, "d", 96, "obs=state", "rl.stepz=3"), check=False)
    assert proc.returncode != 0 and "stepz" in proc.stderr
    assert not (tmp_path / "c" / "checkpoints").exists()


def test_init_starts_a_fresh_run_from_another_runs_weights(tmp_path):
    from dsae.config import from_dict
    from dsae.rl import RLRunConfig
    from dsae.rl.trainer import RLTrainer

    script("train_rl.py", *tiny_rl(tmp_path, "first", 96, "obs=state"))
    out = script("train_rl.py", *tiny_rl(tmp_path, "second", 96, "obs=state", f"init={tmp_path / 'first'}",
                                         "+env.reward_weights.reward_control_weight=0.0"))
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["env_steps"] == 96, out.stdout
    saved = json.loads((tmp_path / "second" / "config.json").read_text())
    assert saved["init"] == str(tmp_path / "first") and saved["env"]["reward_weights"] == {"reward_control_weight": 0.0}

    first = torch.load(tmp_path / "first" / "checkpoints" / "agent.pt", weights_only=False)
    trainer = RLTrainer(from_dict(first["config"] | {"init": str(tmp_path / "first")}, RLRunConfig),
                        tmp_path / "third", None)
    assert trainer.step == 0 and trainer.buffer.size == 0
    for name, value in trainer.agent.state_dict().items():
        torch.testing.assert_close(value, first["agent"][name], rtol=0, atol=0, msg=name)
    trainer.close_files_and_envs()

    proc = script("train_rl.py", *tiny_rl(tmp_path, "other-scene", 96, "obs=state", "env=pusher",
                                           f"init={tmp_path / 'first'}"), check=False)
    assert proc.returncode != 0 and "init takes a scripts/train_rl.py run of this run's obs and scene" in proc.stderr
    proc = script("train_rl.py", *tiny_rl(tmp_path, "no-run", 96, "obs=state", f"init={tmp_path / 'nothing'}"),
                  check=False)
    assert proc.returncode != 0 and "nothing" in proc.stderr
