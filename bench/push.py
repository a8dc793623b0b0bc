"""Benchmark: push the puck from pixels. A state expert, a keypoint policy it teaches, and SAC.

    python bench/push.py --encoder RUN [--expert RUN | --expert-steps 150000] [--seeds 3]
        [--sac-steps 20000] [--rounds N] [--workers 2] [--out bench/results/push] [-- OVERRIDE ...]

``--encoder``: a ``scripts/train.py env=pusher`` run. On Pusher (``env=pusher``), all runs play the
same 20 evaluation episodes and report the return, the success rate (the puck's centre inside
the goal disc at the episode's end) and the final puck-to-goal distance:

1. ``expert``: ``scripts/train_rl.py obs=state`` for ``--expert-steps`` (seed 0), trained once
   and reused by every later call; or ``--expert RUN``, a finished state run trained elsewhere;
2. ``imitation-seed<s>``: ``scripts/imitate.py`` (DAgger) from that expert to the encoder's
   keypoints for ``--rounds`` rounds, seeds 0..seeds-1 (before the SAC runs when the expert is given);
3. ``sac-keypoints-seed<s>`` and ``sac-state-seed<s>``: SAC on the frozen keypoints and on the
   state, both for ``--sac-steps`` env steps.

Overrides go to the runs they concern: ``imitation.*`` to imitate.py, ``rl.*`` and ``env.*`` to
train_rl.py (the imitation runs take the expert's scene), any other to all. Runs go ``--workers``
at a time (one torch thread each) into ``--out``; finished runs are read, interrupted ones resumed,
and runs there of other overrides (another expert, encoder or budget) are refused before anything
runs. Writes ``push.json`` (per mode the per-seed figures and their mean and std, with the
do-nothing and random policies'), ``push.png`` (success against env steps for SAC and the expert;
against DAgger rounds for imitation) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jobs import Job, check_jobs, plot_seeds, run_jobs

from dsae.rl.config import DAggerConfig

FIGURES = ("success_rate", "goal_distance_mean", "return_mean")


def sac(mode: str, seed: int, steps: int, out: Path, extra: list[str]) -> Job:
    return Job(f"sac-{mode}-seed{seed}" if seed >= 0 else "expert", "train_rl.py",
               ["env=pusher", f"obs={mode}", f"seed={max(seed, 0)}", f"rl.steps={steps}", "rl.eval_episodes=20",
                f"rl.eval_every={max(steps // 15, 1000)}", f"rl.checkpoint_every={max(steps // 15, 1000)}", *extra],
               out / (f"sac-{mode}-seed{seed}" if seed >= 0 else "expert"))


def route(overrides: list[str], script: str) -> list[str]:
    """The overrides that concern ``script``: imitation.* to imitate.py; rl.*, env.* to train_rl.py."""
    foreign = ("rl.", "env.") if script == "imitate.py" else ("imitation.",)
    return [o for o in overrides if not o.lstrip("+~").startswith(foreign)]


def final(metrics: dict) -> dict[str, float]:
    """A run's final evaluation figures (train_rl's and imitate's metrics name them alike)."""
    return {k: metrics[f"eval_{k}"] for k in FIGURES}


def summary_row(runs: list[dict]) -> dict:
    finals = [final(m) for m in runs]
    return {"seeds": [m["seed"] for m in runs], "per_seed": finals, "wall_s": [m["wall_s"] for m in runs],
            **{f"{k}_mean": float(np.mean([f[k] for f in finals])) for k in FIGURES},
            **{f"{k}_std": float(np.std([f[k] for f in finals])) for k in FIGURES}}


def plot(result: dict, runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colours = {"expert": "black", "sac-state": "tab:blue", "sac-keypoints": "tab:green", "imitation": "tab:red"}
    for mode in ("expert", "sac-state", "sac-keypoints"):
        plot_seeds(left, [m["curve"] for m in runs[mode]], "env_step", "success_rate", colours[mode], mode)
    plot_seeds(right, [m["curve"] for m in runs["imitation"]], "round", "success_rate", colours["imitation"],
               "DAgger on keypoints", marker="o")
    right.axhline(result["modes"]["expert"]["success_rate_mean"], color="black", label="the state expert")
    for ax in (left, right):
        ax.axhline(result["do_nothing"]["success_rate"], color="grey", linestyle=":", label="do nothing")
        ax.set_ylabel("success rate (20 evaluation episodes)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    left.set_xlabel("env steps")
    left.set_title("SAC on Pusher: state vs DSAE keypoints")
    right.set_xlabel("DAgger round")
    right.set_title("keypoint policy taught by the state expert")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(result: dict) -> str:
    lines = ["| policy | env steps | seeds | success rate | final puck-goal distance | return |", "| --- | --- | --- | --- | --- | --- |"]
    names = {"expert": "state SAC (the expert)", "imitation": "DAgger on keypoints", "sac-state": "SAC on state",
             "sac-keypoints": "SAC on keypoints"}
    for mode, row in result["modes"].items():
        cells = [f"{row[f'{k}_mean']:.2f} ± {row[f'{k}_std']:.2f}" for k in FIGURES]
        lines.append(f"| {names[mode]} | {row['env_steps']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    for name in ("do_nothing", "random"):
        b = result[name]
        lines.append(f"| {name.replace('_', ' ')} | | | {b['success_rate']:.2f} | {b['goal_distance_mean']:.2f} | "
                     f"{b['return_mean']:.2f} |")
    if result["expert_reward_weights"]:
        lines.append(f"\nReturns of the expert, its students and the baselines are on the expert's reward "
                     f"({result['expert_reward_weights']}); SAC's on the scene's, with this benchmark's env overrides.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="a scripts/train.py env=pusher run folder")
    parser.add_argument("--expert", help="a finished scripts/train_rl.py obs=state env=pusher run to teach the "
                        "students (default: train <out>/expert for --expert-steps)")
    parser.add_argument("--expert-steps", type=int, default=150000, help="the state expert's env steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sac-steps", type=int, default=20000, help="env steps of SAC on keypoints and on state")
    parser.add_argument("--rounds", type=int, default=DAggerConfig.rounds,
                        help="DAgger rounds of each student (default: imitate.py's)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time")
    parser.add_argument("--out", default="bench/results/push")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (see above for which runs get them)")
    args = parser.parse_args()
    if any(o.lstrip("+~").startswith("imitation.rounds=") for o in args.overrides):
        parser.error("give the students' rounds with --rounds, not as an override")
    encoder, out = Path(args.encoder).resolve(), Path(args.out).resolve()
    if not (encoder / "checkpoints" / "last.pt").exists():
        parser.error(f"--encoder {encoder} is not a finished scripts/train.py run (no checkpoints/last.pt)")
    started = time.perf_counter()
    seeds, for_sac = range(args.seeds), route(args.overrides, "train_rl.py")
    if args.expert:  # a finished run: run_jobs reads it
        expert = Job("expert", "train_rl.py", [], Path(args.expert).resolve(), made_elsewhere=True)
        if not (expert.run_dir / "metrics.json").exists():
            parser.error(f"--expert {expert.run_dir} is not a finished scripts/train_rl.py run (no metrics.json): "
                         "end it with `scripts/train_rl.py resume=RUN rl.steps=<its checkpoint's step>`")
    else:
        expert = sac("state", -1, args.expert_steps, out, for_sac)
    jobs = [sac("keypoints", s, args.sac_steps, out, [f"encoder={encoder}", *for_sac]) for s in seeds]
    jobs += [sac("state", s, args.sac_steps, out, for_sac) for s in seeds]
    for_students = [f"expert={expert.run_dir}", f"encoder={encoder}", f"imitation.rounds={args.rounds}",
                    *route(args.overrides, "imitate.py")]
    students = [Job(f"imitation-seed{s}", "imitate.py", [*for_students, f"seed={s}"], out / f"imitation-seed{s}")
                for s in seeds]
    check_jobs([expert, *jobs, *students])  # before anything runs
    if expert.made_elsewhere:  # a finished expert: its students go first
        done = run_jobs([expert, *students, *jobs], args.workers)
    else:  # SAC runs beside the expert; imitation needs it
        done = run_jobs([expert, *jobs], args.workers) | run_jobs(students, args.workers)
    runs = {mode: [m for name, m in done.items() if name.startswith(mode)]
            for mode in ("expert", "imitation", "sac-state", "sac-keypoints")}
    baselines = runs["expert"][0]["baselines"]
    result = {"env": "pusher", "encoder": str(encoder), "eval_episodes": 20, "wall_s": time.perf_counter() - started,
              "do_nothing": baselines["do_nothing"], "random": baselines["random"], "modes": {},
              "expert_reward_weights": json.loads((expert.run_dir / "config.json").read_text())["env"]["reward_weights"]}
    for mode, ms in runs.items():
        steps = [m["labelled_steps"] if mode == "imitation" else m["env_steps"] for m in ms]
        result["modes"][mode] = {**summary_row(ms), "env_steps": steps[0]}
    imitation, teacher = result["modes"]["imitation"], result["modes"]["expert"]
    result["imitation_success_of_expert"] = imitation["success_rate_mean"] / max(teacher["success_rate_mean"], 1e-9)
    out.mkdir(parents=True, exist_ok=True)
    (out / "push.json").write_text(json.dumps(result, indent=2))
    plot(result, runs, out / "push.png")
    print(table(result))
    print(f"imitation reaches {result['imitation_success_of_expert']:.0%} of the expert's success rate")
    print(f"[bench] wrote {out / 'push.json'} and {out / 'push.png'}")


if __name__ == "__main__":
    main()
