"""Benchmark: SAC on Reacher from state, from pixels and from the DSAE's keypoints, at one budget.

    python bench/rl_reacher.py --encoder outputs/<make train run> [--steps 20000] [--seeds 3]
        [--pixel-seeds 1] [--workers 2] [--out bench/results/rl_reacher]

Runs ``scripts/train_rl.py`` for obs=state and obs=keypoints with seeds 0..seeds-1 and obs=pixels
with seeds 0..pixel-seeds-1, all with the same env-step budget and evaluation episodes,
``--workers`` processes at a time (one torch thread each). Writes into ``--out``: each run's
folder, ``rl_reacher.json`` and ``rl_reacher.png`` (evaluation return against env steps, mean
and range over seeds). The JSON has per mode the per-seed final returns, their mean and std,
wall times, and ``normalised_score`` (mean over seeds of (R - R_random) / (R_state - R_random),
R_state the mean final return of obs=state, R_random that of uniform random actions), and the
return of a policy that never moves (zero torque), as a second reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jobs import Job, plot_seeds, run_jobs

MODES = ("state", "pixels", "keypoints")


def plot(curves: dict[str, list[list[dict]]], path: Path, refs: dict[str, float], steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colours = {"state": "tab:blue", "pixels": "tab:orange", "keypoints": "tab:green"}
    for mode, runs in curves.items():
        if runs:
            plot_seeds(ax, runs, "env_step", "return_mean", colours[mode], mode)
    for name, value in refs.items():
        ax.axhline(value, color="grey", linestyle="--" if name == "random" else ":", linewidth=1)
        ax.text(0, value, f"{name} ", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return (mean of episodes)")
    ax.set_title("SAC on Reacher-v5: state vs pixels vs DSAE keypoints")
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="a scripts/train.py run folder (e.g. from `make train`)")
    parser.add_argument("--steps", type=int, default=20000, help="env-step budget of every run")
    parser.add_argument("--seeds", type=int, default=3, help="seeds for obs=state and obs=keypoints")
    parser.add_argument("--pixel-seeds", type=int, default=1, help="seeds for obs=pixels (3 on a GPU)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time")
    parser.add_argument("--out", default="bench/results/rl_reacher")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. rl.eval_every=1000)")
    args = parser.parse_args()
    encoder = Path(args.encoder).resolve()
    if not encoder.exists():
        parser.error(f"--encoder {encoder} does not exist; run `make train` and pass its run folder")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    order = [("pixels", s) for s in range(args.pixel_seeds)]  # the longest first
    order += [(m, s) for s in range(args.seeds) for m in ("keypoints", "state")]
    started = time.perf_counter()
    jobs = [Job(f"{mode}-seed{seed}", "train_rl.py",
                [f"obs={mode}", f"seed={seed}", f"rl.steps={args.steps}", f"device={args.device}", *args.overrides]
                + ([f"encoder={encoder}"] if mode == "keypoints" else []), out / f"{mode}-seed{seed}")
            for mode, seed in order]
    done = run_jobs(jobs, args.workers)
    results = {m: [done[f"{m}-seed{s}"] for mode, s in order if mode == m] for m in MODES}

    episodes = results["state"][0]["eval_episodes"]
    random_return = float(np.mean([m["random_return"] for ms in results.values() for m in ms]))
    zero_return = float(np.mean([m["baselines"]["do_nothing"]["return_mean"] for m in results["state"]]))
    state_return = float(np.mean([m["eval_return_mean"] for m in results["state"]]))
    summary: dict = {"env": "Reacher-v5", "steps": args.steps, "encoder": str(encoder), "eval_episodes": episodes,
                     "random_return": random_return, "zero_action_return": zero_return, "state_return": state_return,
                     "wall_s": time.perf_counter() - started, "workers": args.workers, "modes": {},
                     "normalised_score": {}}
    for mode in MODES:
        runs = sorted(results[mode], key=lambda m: m["seed"])
        if not runs:
            continue
        finals = [m["eval_return_mean"] for m in runs]
        scores = [(r - random_return) / (state_return - random_return) for r in finals]
        summary["normalised_score"][mode] = float(np.mean(scores))
        summary["modes"][mode] = {
            "seeds": [m["seed"] for m in runs], "final_returns": finals,
            "final_return_mean": float(np.mean(finals)), "final_return_std": float(np.std(finals)),
            "normalised_scores": scores, "wall_s": [m["wall_s"] for m in runs],
            "curves": [m["curve"] for m in runs],
        }
    (out / "rl_reacher.json").write_text(json.dumps(summary, indent=2))
    plot({m: [r["curve"] for r in results[m]] for m in MODES}, out / "rl_reacher.png",
         {"random": random_return, "zero torque": zero_return}, args.steps)
    print(json.dumps({"normalised_score": summary["normalised_score"], "state_return": state_return,
                      "random_return": random_return, "zero_action_return": zero_return,
                      "wall_s": summary["wall_s"]}, indent=2))
    print(f"[bench] wrote {out / 'rl_reacher.json'} and {out / 'rl_reacher.png'}")


if __name__ == "__main__":
    main()
