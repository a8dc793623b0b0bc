"""scripts/imitate.py end to end on tiny configs: DAgger from a state expert to a keypoint policy,
kill -> resume to the same weights, fine-tuning, filming, and bad input named."""

import json
import sys

import numpy as np
import pytest
import torch

from tests.test_bench import run as run_bench
from tests.test_e2e import REPO, kill_after_first_checkpoint, script, tiny_overrides
from tests.test_rl_e2e import tiny_rl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny Pusher encoder (scripts/train.py), a tiny state expert and a keypoint expert on Pusher."""
    tmp = tmp_path_factory.mktemp("imitation")
    script("train.py", "env=pusher", *tiny_overrides(tmp, "encoder", steps=20), "logger=none")
    script("train_rl.py", "env=pusher", "obs=state", *tiny_rl(tmp, "expert", 96))
    script("train_rl.py", "env=pusher", "obs=keypoints", f"encoder={tmp / 'encoder'}", *tiny_rl(tmp, "kp", 60))
    return tmp


def tiny_imitation(runs, run_dir, *extra: str) -> list[str]:
    return [f"expert={runs / 'expert'}", f"encoder={runs / 'encoder'}", "imitation.rounds=3",
            "imitation.episodes_per_round=2", "imitation.updates_per_round=20", "imitation.batch_size=16",
            "imitation.hidden=[16]", "imitation.eval_episodes=2", "logger=none", "device=cpu", "threads=1",
            "progress=false", f"hydra.run.dir={run_dir}", *extra]


def test_killed_imitation_resumes_to_the_same_student(runs, tmp_path):
    killed = tmp_path / "killed"
    at = kill_after_first_checkpoint([sys.executable, str(REPO / "scripts" / "imitate.py"),
                                      *tiny_imitation(runs, killed)], killed, "agent.pt", key="round")
    assert 0 < at < 3, f"the run was meant to be killed mid-way (checkpoint after round {at})"
    out = script("imitate.py", *tiny_imitation(runs, tmp_path / "elsewhere"), f"resume={killed}")
    assert f"after round {at} of 3" in out.stdout
    script("imitate.py", *tiny_imitation(runs, tmp_path / "straight"))
    a = torch.load(killed / "checkpoints" / "agent.pt", weights_only=False)
    b = torch.load(tmp_path / "straight" / "checkpoints" / "agent.pt", weights_only=False)
    for name in a["agent"]:
        torch.testing.assert_close(a["agent"][name], b["agent"][name], rtol=1e-5, atol=1e-6, msg=name)
    assert a["data"]["size"] == b["data"]["size"] == 3 * 2 * 12, "every step of every round is labelled once"
    np.testing.assert_allclose(a["data"]["label"], b["data"]["label"], atol=1e-6)

    m = json.loads((killed / "metrics.json").read_text())
    assert [c["round"] for c in m["curve"]] == [1, 2, 3] and m["labelled_steps"] == 72
    for who in (m["expert"], m["baselines"]["random"], m["baselines"]["do_nothing"]):
        assert 0.0 <= who["success_rate"] <= 1.0 and who["goal_distance_mean"] > 0
    assert 0.0 <= m["eval_success_rate"] <= 1.0 and np.isfinite(m["eval_return_mean"]) and m["env"] == "pusher"
    resolved = a["env_resolved"]
    assert resolved["image_size"] == 32 and resolved["max_episode_steps"] == 12, "encoder's camera, expert's task"

    # The saved student plays the evaluation episodes again to the same return, and is filmed.
    from dsae.rl import Policy, evaluate_policy

    policy = Policy(killed, "cpu")
    assert policy.kind == "imitation"
    replay = evaluate_policy(policy.make_env(), lambda o: policy.agent.act(o), 2)
    assert np.mean(replay["returns"]) == pytest.approx(m["eval_return_mean"], abs=1e-4)
    script("visualize.py", f"policy={killed}", "episodes=1", "logger=none", f"hydra.run.dir={tmp_path / 'vis'}")
    assert (tmp_path / "vis" / "episode_0.mp4").stat().st_size > 0


def test_finetuning_trains_the_encoder(runs, tmp_path):
    script("imitate.py", *tiny_imitation(runs, tmp_path / "ft", "imitation.rounds=1",
                                         "imitation.finetune_encoder=true"))
    before = torch.load(runs / "encoder" / "checkpoints" / "last.pt", weights_only=False)["model"]
    after = torch.load(tmp_path / "ft" / "checkpoints" / "agent.pt", weights_only=False)["agent"]
    w = "encoder.features.0.weight"
    assert not torch.equal(after[f"features.image_features.encoder.{w}"], before[w])


@pytest.mark.parametrize("expert, message", [
    ("missing", "no agent checkpoint at"),
    ("encoder", "no agent checkpoint at"),
    ("encoder/checkpoints/last.pt", "is not a policy's checkpoint"),
    ("kp", "the expert must see the state"),
    ("reacher", "was trained on env 'pusher', not 'reacher'"),
])
def test_bad_expert_is_named(runs, tmp_path, expert, message):
    from dsae.checkpoint import CheckpointError
    from dsae.errors import ConfigError
    from dsae.rl import DAggerConfig, ImitationRunConfig, run_imitation

    if expert == "reacher" and not (runs / "reacher").exists():
        script("train_rl.py", "obs=state", *tiny_rl(runs, "reacher", 60))
    cfg = ImitationRunConfig(expert=str(runs / expert), encoder=str(runs / "encoder"), device="cpu", progress=False,
                             imitation=DAggerConfig(rounds=1, episodes_per_round=1, eval_episodes=1))
    with pytest.raises((ConfigError, CheckpointError), match=message):
        run_imitation(cfg, tmp_path / "bad")
    assert not (tmp_path / "bad" / "checkpoints").exists(), "nothing is written for a refused expert"


def test_imitate_script_without_an_expert_says_what_to_pass(runs, tmp_path):
    args = [a for a in tiny_imitation(runs, tmp_path / "none") if not a.startswith("expert=")]
    out = script("imitate.py", *args, check=False)
    assert out.returncode == 2 and "imitation needs expert=PATH" in out.stderr and "Traceback" not in out.stderr


def test_a_state_expert_collects_the_encoder_data(runs, tmp_path):
    """data.policy=<state run>: the expert acts, with the collector's noise; each recorded action is
    its action on that step's state plus the episode's noise stream. A keypoint run, or a run of
    another scene, is refused by name."""
    from dataclasses import replace

    from dsae.collect import collect
    from dsae.config import DataConfig
    from dsae.errors import ConfigError
    from dsae.rl import Policy
    from envs import load_scene, make_env

    scene = replace(load_scene("pusher"), image_size=16, max_episode_steps=12)
    root = collect(scene, DataConfig(policy=str(runs / "expert"), episodes=2, workers=1), root=tmp_path / "d",
                   progress=False)
    episode = np.load(root / "episode_00001.npz")
    env, expert = make_env(scene), Policy(runs / "expert", device="cpu")
    obs, _ = env.reset(seed=1)  # episode i starts from data.seed + i
    half = (env.action_space.high - env.action_space.low) / 2
    noise = 0.2 * half * np.random.default_rng([1, 0xD5AE]).standard_normal(len(half))
    expected = np.clip(expert.act(obs) + noise, env.action_space.low, env.action_space.high)
    np.testing.assert_allclose(episode["actions"][0], expected, atol=1e-5)

    for run, message in (("kp", "collecting needs a scripts/train_rl.py obs=state run"),
                         ("expert", "was trained on env 'pusher', not 'reacher'")):
        target = load_scene("reacher") if run == "expert" else scene
        with pytest.raises(ConfigError, match=message):
            collect(replace(target, image_size=16), DataConfig(policy=str(runs / run), episodes=2, workers=1),
                    root=tmp_path / f"bad-{run}", progress=False)


def test_push_benchmark_reuses_the_expert_and_tabulates_every_policy(runs, tmp_path):
    """bench/push.py on a tiny budget: the finished expert given by --expert is read, not trained
    again; SAC on state and on keypoints and DAgger each run; the JSON, the plot and the table hold
    every policy."""
    out = tmp_path / "push"
    tiny = ["rl.init_steps=24", "rl.batch_size=16", "rl.hidden=[32]", "rl.eval_episodes=2", "env.max_episode_steps=12",
            "device=cpu", "imitation.episodes_per_round=1", "imitation.updates_per_round=5",
            "imitation.batch_size=8", "imitation.hidden=[16]", "imitation.eval_episodes=2"]
    proc = run_bench("push.py", "--encoder", str(runs / "encoder"), "--expert", str(runs / "expert"), "--seeds", "1",
                     "--sac-steps", "36", "--rounds", "1", "--out", str(out), "--", *tiny)
    assert "[bench] expert: already done" in proc.stdout and "| DAgger on keypoints | 12 | 1 |" in proc.stdout
    result = json.loads((out / "push.json").read_text())
    assert set(result["modes"]) == {"expert", "imitation", "sac-state", "sac-keypoints"}
    assert result["modes"]["sac-keypoints"]["env_steps"] == result["modes"]["sac-state"]["env_steps"] == 36
    assert result["modes"]["expert"]["env_steps"] == 96 and 0 <= result["do_nothing"]["success_rate"] <= 1
    assert (out / "push.png").stat().st_size > 0
