"""Run the project's scripts as benchmark jobs, a few at a time, resumably.

A job is a script of ``scripts/`` with its overrides and a run folder. ``run_jobs`` starts them in
order, ``workers`` at a time: a job whose folder has ``metrics.json`` is read instead of run, one
with a checkpoint is resumed, so a benchmark split over sessions picks up where it stopped. A
folder that other overrides made (Hydra records a run's in ``.hydra/overrides.yaml``) is refused
before anything runs, so a benchmark never reports a run of other settings as its own. Each
job's output goes to ``<run folder>.log``. ``plot_seeds`` draws the runs' curves the same way in
every benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    name: str  # what the benchmark calls it, e.g. "keypoints-seed1"
    script: str  # a file of scripts/, e.g. "train_rl.py"
    args: list[str]  # its Hydra overrides
    run_dir: Path
    checkpoint: str = "checkpoints/agent.pt"  # resume when this exists in run_dir
    resume: str = "resume=true"  # the override that resumes the run from that checkpoint
    settings: tuple[str, ...] = ("threads=1", "progress=false", "logger=none")  # added to args
    made_elsewhere: bool = False  # a finished run the user gave: read as it is, never run or compared

    def overrides(self) -> list[str]:
        return [*self.args, *self.settings]

    def command(self) -> list[str]:
        cmd = [sys.executable, str(REPO / "scripts" / self.script), *self.overrides(), f"hydra.run.dir={self.run_dir}"]
        return cmd + [self.resume] if (self.run_dir / self.checkpoint).exists() else cmd


def check_jobs(jobs: list[Job]) -> None:
    """Refuse, naming the difference, a started or finished run folder whose recorded overrides
    (``.hydra/overrides.yaml``, less the resume override) are not the job's."""
    for job in jobs:
        started = (job.run_dir / "metrics.json").exists() or (job.run_dir / job.checkpoint).exists()
        if job.made_elsewhere or not started:
            continue
        record = job.run_dir / ".hydra" / "overrides.yaml"
        made = [o for o in yaml.safe_load(record.read_text()) if o != job.resume] if record.exists() else None
        if made is None:
            raise SystemExit(f"{job.run_dir} holds a run but no {record.relative_to(job.run_dir)}, so its settings "
                             "are unknown: move it away or pass another output folder")
        if sorted(made) != sorted(job.overrides()):
            theirs, ours = sorted(set(made) - set(job.overrides())), sorted(set(job.overrides()) - set(made))
            raise SystemExit(f"{job.run_dir} was made with {theirs or 'fewer overrides'}, where this benchmark "
                             f"runs {ours or 'fewer overrides'}: move it away or pass another output folder")


def job_environment(workers: int) -> dict[str, str]:
    """The jobs' environment: headless MuJoCo, wandb quiet and, when ``workers`` > 1 run at once
    and ``OMP_NUM_THREADS`` is not set, each job its share of the cores (at least one thread).
    Torch would give every job all the cores: three Pusher runs on a 2-core machine trained at 29
    images/s each that way, against 115 with one thread each."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "WANDB_SILENT": "true"}
    if workers > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    return env


def run_jobs(jobs: list[Job], workers: int) -> dict[str, dict]:
    """Run ``jobs`` (in order, ``workers`` at a time) to their end; {job name: its metrics.json}.
    Folders of other settings are refused first (``check_jobs``); a failed job stops the others
    and the benchmark, naming its log."""
    check_jobs(jobs)
    results: dict[str, dict] = {}
    pending, running = list(jobs), []
    env = job_environment(workers)
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            if (job.run_dir / "metrics.json").exists():
                results[job.name] = json.loads((job.run_dir / "metrics.json").read_text())
                print(f"[bench] {job.name}: already done")
                continue
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.run_dir.with_suffix(".log"), "a")
            print(f"[bench] start {job.name}")
            running.append((job, subprocess.Popen(job.command(), cwd=REPO, env=env, stdout=log,
                                                  stderr=subprocess.STDOUT), time.perf_counter()))
        time.sleep(2)
        for item in list(running):
            job, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                for _, other, _ in running:
                    other.kill()
                raise SystemExit(f"{job.name} failed (exit {proc.returncode}); see {job.run_dir.with_suffix('.log')}")
            results[job.name] = json.loads((job.run_dir / "metrics.json").read_text())
            print(f"[bench] {job.name}: done in {(time.perf_counter() - t0) / 60:.1f} min")
    return results


def plot_seeds(ax, curves: list[list[dict]], x_key: str, y_key: str, colour: str, label: str, **style) -> None:
    """One line per setting: the mean over seeds of ``y_key`` against ``x_key`` (the curve's rows),
    the min-max band over seeds around it; curves are cut to the shortest."""
    n = min(len(c) for c in curves)
    x = np.array([p[x_key] for p in curves[0][:n]])
    y = np.array([[p[y_key] for p in c[:n]] for c in curves])
    seeds = f"{len(curves)} seed{'s' * (len(curves) > 1)}"
    ax.plot(x, y.mean(0), color=colour, label=f"{label} ({seeds})", **style)
    if len(curves) > 1:
        ax.fill_between(x, y.min(0), y.max(0), color=colour, alpha=0.2)
