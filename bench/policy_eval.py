"""Benchmark: trained policies on more evaluation episodes than their runs played.

    python bench/policy_eval.py RUN [RUN ...] [--episodes 100] [--first 0]
        [--out bench/results/push/policy_eval.json]

Each RUN is a ``scripts/train_rl.py`` or ``scripts/imitate.py`` run folder. Its deterministic policy
plays the fixed evaluation episodes 0..episodes-1 (the first 20 are the ones the runs report), and
the JSON gets, per run, the return, success rate and final object-to-goal distance (with each
episode's), and under ``baselines`` the do-nothing and random policies' on the same episodes (in
the first run's env). ``--first N`` plays episodes N..N+episodes-1 instead: with ``--first 100``,
episodes no run has been evaluated or chosen on. A success rate from 20 episodes has a binomial
standard error near 0.11 at 0.5; from 100, near 0.05. Runs already in ``--out`` with the same
episodes and checkpoint (its modification time) are read, not played again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def evaluate(policy, episodes: int, first: int) -> dict:
    """A loaded ``Policy``'s figures on evaluation episodes first..first+episodes-1."""
    from dsae.rl.policy import evaluate_policy, summarise

    started = time.perf_counter()
    env = policy.make_env()
    played = evaluate_policy(env, lambda o: policy.agent.act(o, deterministic=True), episodes, first)
    env.close()
    return {**summarise(played), **{k: v for k, v in played.items() if k != "returns"}, "episodes": episodes,
            "first": first, "kind": policy.kind, "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="train_rl.py or imitate.py run folders")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--first", type=int, default=0, help="the first evaluation episode played")
    parser.add_argument("--out", default="bench/results/push/policy_eval.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dsae.rl.policy import Policy, baselines, figures

    loaded: dict[str, Policy] = {}  # a SAC checkpoint holds its replay buffer: each is loaded once

    def policy(run: str) -> Policy:
        if run not in loaded:
            loaded[run] = Policy(run, "cpu")
        return loaded[run]

    def saved_at(run: str) -> float:
        from dsae.checkpoint import AGENT_CHECKPOINT, checkpoint_file

        return checkpoint_file(run, AGENT_CHECKPOINT).stat().st_mtime

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for run in args.runs:
        key = str(Path(run))
        wanted = {"episodes": args.episodes, "first": args.first, "checkpoint_mtime": saved_at(run)}
        if {k: results.get(key, {}).get(k) for k in wanted} != wanted:
            results[key] = {**evaluate(policy(run), args.episodes, args.first), **wanted}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2, default=float))
        print(f"{run}: episodes {args.first}..{args.first + args.episodes - 1}, {figures(results[key])}")
    wanted = {"episodes": args.episodes, "first": args.first, "env_of": args.runs[0]}
    if {k: results.get("baselines", {}).get(k) for k in wanted} != wanted:
        env = policy(args.runs[0]).make_env()
        results["baselines"] = {**baselines(env, args.episodes, seed=0, first=args.first), **wanted}
        env.close()
        out.write_text(json.dumps(results, indent=2, default=float))
    for name in ("do_nothing", "random"):
        print(f"{name}: {figures(results['baselines'][name])}")
    print(f"[bench] wrote {out}")


if __name__ == "__main__":
    main()
