"""End to end: the real scripts on tiny configs (collect -> train -> evaluate -> resume)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def tiny_overrides(tmp: Path, run: str, steps: int = 40) -> list[str]:
    return [
        "env.image_size=32", "env.max_episode_steps=12",
        "model.channels=[16,8]", "model.kernels=[5,3]", "model.strides=[2,1]",
        "model.num_keypoints=8", "model.recon_size=16",
        f"train.steps={steps}", "train.batch_size=8", "train.log_every=5", "train.eval_every=20",
        "train.image_every=20", "train.checkpoint_every=10", "train.probe_frames=500",
        "data.episodes=8", "data.workers=2", f"data.dir={tmp / 'data'}",
        "device=cpu", f"hydra.run.dir={tmp / run}",
    ]


def script(name: str, *args: str, check: bool = True, env_vars: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **(env_vars or {})})
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=kw.pop("cwd", REPO),
                          capture_output=True, text=True, env=env, timeout=600, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def kill_after_first_checkpoint(cmd: list[str], run_dir: Path, checkpoint: str = "last.pt", key: str = "step") -> int:
    """Start ``cmd`` (a run writing into ``run_dir``), SIGKILL it and every process it started as
    soon as its first checkpoint exists, and return the progress (``key``) that checkpoint holds."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = run_dir / "checkpoints" / checkpoint
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    # torchrun's workers live in their own process groups: kill them by their command line too.
    subprocess.run(["pkill", "-KILL", "-f", f"hydra.run.dir={run_dir}"], check=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    return torch.load(ckpt, weights_only=False)[key]


def test_collect_train_evaluate(tmp_path):
    out = script("collect.py", *tiny_overrides(tmp_path, "collect"))
    assert "dataset ready" in out.stdout
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["complete"]

    script("train.py", *tiny_overrides(tmp_path, "train"), "logger=wandb", "logger.mode=offline")
    run = tmp_path / "train"
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("probe_r2", "probe_err_px", "recon_mse", "steps", "train_images_per_s", "wall_s", "checkpoint"):
        assert key in metrics, key
    assert set(metrics["probe_r2"]) == {"fingertip", "target"}
    assert metrics["steps"] == 40 and Path(metrics["checkpoint"]).exists()
    assert list((run / "wandb").glob("offline-run-*")), "an offline wandb run is written"
    assert list((run / "media").glob("keypoints_*.png")) and list((run / "media").glob("reconstruction_*.png"))

    script("evaluate.py", f"checkpoint={run}", f"hydra.run.dir={tmp_path / 'eval'}", "device=cpu")
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["probe_r2"] == pytest.approx(metrics["probe_r2"], abs=1e-9)
    assert again["recon_mse"] == pytest.approx(metrics["recon_mse"], rel=1e-6)

    # dataset=DIR probes on another dataset of the scene; one of another image size is refused.
    def collected(name: str, *extra: str) -> Path:
        args = [o for o in tiny_overrides(tmp_path, f"collect-{name}")
                if not o.startswith(("data.dir=", "env.image_size="))]
        script("collect.py", *args, f"data.dir={tmp_path / name}", *extra)
        return tmp_path / name

    other = collected("other", "env.image_size=32", "data.seed=100")
    script("evaluate.py", f"checkpoint={run}", f"dataset={other}", f"hydra.run.dir={tmp_path / 'eval-other'}",
           "device=cpu")
    elsewhere = json.loads((tmp_path / "eval-other" / "metrics.json").read_text())
    assert elsewhere["dataset"] == str(other) and elsewhere["probe_r2"] != again["probe_r2"]
    small = collected("small", "env.image_size=16")
    proc = script("evaluate.py", f"checkpoint={run}", f"dataset={small}", f"hydra.run.dir={tmp_path / 'eval-small'}",
                  check=False)
    assert proc.returncode != 0 and "holds 16 px frames, but the encoder was trained on 32 px" in proc.stderr


def test_killed_run_resumes_to_the_same_result(tmp_path):
    steps = 300
    args = tiny_overrides(tmp_path, "killed", steps) + ["logger=none", "train.checkpoint_every=20"]
    script("collect.py", *args)
    killed_at = kill_after_first_checkpoint([sys.executable, str(REPO / "scripts" / "train.py"), *args],
                                            tmp_path / "killed")
    assert 0 < killed_at < steps, f"the run was meant to be killed mid-way (checkpoint at {killed_at})"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    script("train.py", *tiny_overrides(tmp_path, "resumed-invocation", steps), "logger=none",
           "train.checkpoint_every=20", f"train.resume={tmp_path / 'killed'}")
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["steps"] == steps
    logged = [json.loads(line)["step"] for line in (tmp_path / "killed" / "scalars.jsonl").read_text().splitlines()]
    resumed_steps = [s for s in logged if s > killed_at]
    assert resumed_steps and min(s for s in logged[logged.index(resumed_steps[0]):]) > killed_at, \
        "the resumed run continued from its checkpoint, not from zero"

    script("train.py", *args[:-1], f"hydra.run.dir={tmp_path / 'straight'}", "logger=none", "train.checkpoint_every=20")
    a = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_latest_finds_the_unfinished_run(tmp_path):
    """train.resume=true picks the newest unfinished run under outputs/ (relative to the cwd)."""
    first = tmp_path / "outputs" / "first"
    script("train.py", *tiny_overrides(tmp_path, "outputs/first", 30), "logger=none")
    (first / "metrics.json").unlink()  # as if it was killed after its last checkpoint
    proc = script("train.py", *tiny_overrides(tmp_path, "second", 30), "logger=none", "train.resume=true",
                  cwd=tmp_path)
    assert f"resuming {Path('outputs') / 'first'}" in proc.stdout
    assert (first / "metrics.json").exists() and not (tmp_path / "second" / "metrics.json").exists()


def test_bad_input_fails_before_any_work(tmp_path):
    proc = script("train.py", "model.num_keypointz=8", f"hydra.run.dir={tmp_path / 'x'}", check=False)
    assert proc.returncode != 0 and "num_keypointz" in proc.stderr
    proc = script("train.py", "train.steps=lots", f"hydra.run.dir={tmp_path / 'y'}", check=False)
    assert proc.returncode != 0 and "train.steps" in proc.stderr
    missing = tmp_path / "no" / "such.pt"
    proc = script("evaluate.py", f"checkpoint={missing}", f"hydra.run.dir={tmp_path / 'z'}", check=False)
    assert proc.returncode != 0 and str(missing) in proc.stderr
    proc = script("train.py", "env.camera_id=0", f"hydra.run.dir={tmp_path / 'w'}", check=False)
    assert proc.returncode != 0 and "camera_id" in proc.stderr and proc.returncode != -6
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_user_errors_print_one_line_without_a_traceback(tmp_path):
    """A user's mistake: one line on stderr, exit status 2; HYDRA_FULL_ERROR=1 brings the stack back."""
    proc = script("train.py", "train.steps=-1", f"hydra.run.dir={tmp_path / 'a'}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: train.steps must be >= 1, got -1"
    proc = script("train.py", "train.steps=-1", f"hydra.run.dir={tmp_path / 'b'}", check=False,
                  env_vars={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "train.steps must be >= 1" in proc.stderr

    missing = tmp_path / "no" / "such.pt"
    proc = script("evaluate.py", f"checkpoint={missing}", f"hydra.run.dir={tmp_path / 'c'}", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and str(missing) in proc.stderr

    args = tiny_overrides(tmp_path, "d", 10) + ["logger=none"]
    script("collect.py", *args)
    episode = tmp_path / "data" / "episode_00003.npz"
    episode.write_bytes(episode.read_bytes()[:-50])
    proc = script("train.py", *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "episode_00003.npz" in proc.stderr


def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 gloo processes on CPU: each trains on half of the same global batch, so the
    loss curve is the single-process one (group norm: no per-process batch statistics; float32; no
    equivariance term, whose turned frames and angles each process draws for its own share; fixed
    decoder windows: narrowing to 0.07 in 20 steps, windows of half a pixel at the tiny run's 16 px
    reconstruction, turned the rounding into loss differences of 4-12% by steps 6-20, against
    under 4% with fixed ones)."""
    args = tiny_overrides(tmp_path, "single", 20) + ["logger=none", "model.norm=group", "train.log_every=2",
                                                      "train.amp=none",  # float32: bf16 rounding would hide the check
                                                      "model.equivariance_weight=0", "model.decoder_sigma_end=null"]
    script("collect.py", *args)
    script("train.py", *args)
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    ddp_args = [a if not a.startswith("hydra.run.dir=") else f"hydra.run.dir={tmp_path / 'ddp'}" for a in args]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "scripts" / "train.py"), *ddp_args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "scalars.jsonl").read_text().splitlines()]
        return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}

    single, ddp = losses("single"), losses("ddp")
    assert sorted(single) == sorted(ddp) == list(range(2, 21, 2)), "rank 0 alone logs, every step once"
    # Step 2 differs only by the order of float sums (gradients are summed across processes);
    # Adam turns such rounding into small step differences that compound, so later steps agree
    # within a few percent.
    assert ddp[2] == pytest.approx(single[2], rel=1e-5)
    for step in single:
        assert ddp[step] == pytest.approx(single[step], rel=0.05), (step, ddp, single)
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 20
    assert metrics["distributed"] == {"backend": "gloo", "processes": 2, "sync_batchnorm_layers": 0}
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["distributed"] is None
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").exists()


def test_multirun_sweep_gives_each_run_its_folder(tmp_path):
    """Hydra multirun over keypoints x seeds, then the same sweep through submitit (its local
    executor, which runs the SLURM launcher's code path on this machine)."""
    base = [a for a in tiny_overrides(tmp_path, "unused", 10) if not a.startswith("hydra.run.dir=")]
    script("collect.py", *base, f"hydra.run.dir={tmp_path / 'collect'}")  # jobs share the dataset
    sweep = tmp_path / "sweep"
    script("train.py", "-m", *base, "logger=none", "model.num_keypoints=4,8", "seed=0,1",
           f"hydra.sweep.dir={sweep}")
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in runs] == ["0", "1", "2", "3"]
    seen = set()
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        seen.add((metrics["num_keypoints"], config["seed"]))
    assert seen == {(4, 0), (4, 1), (8, 0), (8, 1)}

    local = tmp_path / "submitit"
    script("train.py", "-m", *base, "logger=none", "seed=0,1", "hydra/launcher=submitit_local",
           "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={local}")
    for job in ("0", "1"):
        assert json.loads((local / job / "metrics.json").read_text())["steps"] == 10
    assert (local / ".submitit").is_dir(), "the jobs went through submitit"


def test_killed_ddp_run_resumes(tmp_path):
    """A 2-process run killed after its first checkpoint resumes under torchrun to the end."""
    args = tiny_overrides(tmp_path, "ddp", 200) + ["logger=none", "train.checkpoint_every=10"]
    script("collect.py", *args)
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "scripts" / "train.py"), *args]
    killed_at = kill_after_first_checkpoint(cmd, tmp_path / "ddp")
    assert 0 < killed_at < 200 and not (tmp_path / "ddp" / "metrics.json").exists()
    done = subprocess.run(cmd + [f"train.resume={tmp_path / 'ddp'}"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"from step {killed_at} of 200" in done.stdout
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["steps"] == 200 and metrics["processes"] == 2


TINY_MJCF = """<mujoco model="tiny">
  <worldbody>
    <geom type="plane" size="0.5 0.5 0.01" rgba="0.8 0.8 0.8 1"/>
    <body name="arm" pos="0 0 0.02">
      <joint name="hinge" type="hinge" axis="0 0 1" range="-3 3" damping="0.1"/>
      <geom type="capsule" fromto="0 0 0 0.15 0 0" size="0.015" rgba="0.1 0.2 0.7 1" contype="0" conaffinity="0"/>
      <body name="tip" pos="0.15 0 0"><geom type="sphere" size="0.02" rgba="0.1 0.8 0.2 1" contype="0" conaffinity="0"/></body>
    </body>
    <body name="ball" pos="0 0 0.02">
      <joint name="ball_x" type="slide" axis="1 0 0" range="-0.2 0.2"/>
      <joint name="ball_y" type="slide" axis="0 1 0" range="-0.2 0.2"/>
      <geom type="sphere" size="0.03" rgba="0.9 0.1 0.1 1" contype="0" conaffinity="0"/>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" ctrlrange="-1 1" gear="0.5"/></actuator>
</mujoco>"""


def test_a_scene_added_by_a_yaml_file_alone(tmp_path):
    """A user's MJCF and one YAML file (in their own config folder): collect, train, probe, film."""
    (tmp_path / "tiny.xml").write_text(TINY_MJCF)
    (tmp_path / "configs" / "env").mkdir(parents=True)
    (tmp_path / "configs" / "env" / "tiny.yaml").write_text(
        f"name: tiny\nxml: {tmp_path / 'tiny.xml'}\nobjects: {{tip: tip, ball: ball}}\njoints: [hinge]\n"
        "camera_distance: 0.6\n")
    scene = [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "env=tiny"]
    script("train.py", *scene, *tiny_overrides(tmp_path, "train"), "logger=none")
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["env"] == "tiny" and set(metrics["probe_r2"]) == {"tip", "ball"}
    assert set(metrics["keypoint_err_px"]) == {"tip", "ball"}
    assert all(0 <= metrics["keypoint_index"][o] < 8 for o in ("tip", "ball"))
    script("visualize.py", f"checkpoint={tmp_path / 'train'}", "episodes=1", "logger=none", "device=cpu",
           f"hydra.run.dir={tmp_path / 'film'}")
    tracking = json.loads((tmp_path / "film" / "tracking.json").read_text())
    assert (tmp_path / "film" / "episode_0.mp4").stat().st_size > 0 and set(tracking["objects"]) == {"tip", "ball"}
