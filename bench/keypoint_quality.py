"""Benchmark: keypoint quality per scene over seeds, for one set of settings.

    python bench/keypoint_quality.py --name default [--scenes reacher pusher push_block] [--seeds 3]
        [--out bench/results/keypoint_quality] [-- OVERRIDE ...]

Runs ``scripts/train.py env=<scene> seed=<s> <OVERRIDES>`` for every scene and seed 0..seeds-1,
one run at a time (a run already uses both cores of a small machine), each into
``<out>/<name>/<scene>-seed<s>``. A finished run (its ``metrics.json`` exists) is read, not run
again; an interrupted one resumes from its checkpoint, so the benchmark can be split across
sessions. Writes ``<out>/<name>.json``: per scene and object the per-seed linear-probe R² and
``keypoint_err_px`` (the single best keypoint's held-out pixel error) with their mean and std,
and the wall time of every run; prints the same as a Markdown table. Scenes that an earlier call
with the same overrides wrote there, and this call did not run, are kept (so scenes may be run
with different numbers of seeds). Seeds change the weights
and batches; every seed of a scene trains on the same dataset (``data.seed`` is not changed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]


def run_once(run_dir: Path, scene: str, seed: int, overrides: list[str]) -> dict:
    """One training run's metrics, training it first unless it has finished already."""
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        print(f"[bench] {run_dir.name}: already done")
        return json.loads(metrics.read_text())
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), f"env={scene}", f"seed={seed}", "logger=none",
           f"hydra.run.dir={run_dir}", *overrides]
    if (run_dir / "checkpoints" / "last.pt").exists():
        cmd.append(f"train.resume={run_dir}")  # an interrupted benchmark picks its runs up where they stopped
    print(f"[bench] start {run_dir.name}", flush=True)
    t0 = time.perf_counter()
    log = run_dir.with_suffix(".log")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"{run_dir.name} failed (exit {code}); see {log}")
    print(f"[bench] {run_dir.name} done in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return json.loads(metrics.read_text())


def summarise(runs: list[dict]) -> dict:
    """Per object: per-seed probe R² (None where the object never moves in the held-out episodes)
    and keypoint_err_px, each with its mean and std over seeds."""
    out = {}
    for obj in runs[0]["probe_r2"]:
        entry = {}
        for key in ("probe_r2", "keypoint_err_px"):
            values = [m[key][obj] for m in runs]
            moved = all(v is not None for v in values)
            entry[key] = values
            entry[f"{key}_mean"] = float(np.mean(values)) if moved else None
            entry[f"{key}_std"] = float(np.std(values)) if moved else None
        out[obj] = entry
    return out


def _cell(entry: dict, key: str, fmt: str) -> str:
    if entry[f"{key}_mean"] is None:
        return "—"
    return f"{entry[f'{key}_mean']:{fmt}} ± {entry[f'{key}_std']:{fmt}}"


def table(summary: dict) -> str:
    rows = ["| scene | object | probe R² | `keypoint_err_px` | seeds |", "| --- | --- | --- | --- | --- |"]
    for scene, entry in summary["scenes"].items():
        for obj, s in entry["objects"].items():
            rows.append(f"| {scene} | {obj} | {_cell(s, 'probe_r2', '.3f')} | {_cell(s, 'keypoint_err_px', '.1f')} px "
                        f"| {len(entry['seeds'])} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the settings' name: runs go to <out>/<name>/")
    parser.add_argument("--scenes", nargs="+", default=["reacher", "pusher", "push_block"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/keypoint_quality")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    started = time.perf_counter()
    path = out / f"{args.name}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    kept = earlier.get("scenes", {}) if earlier.get("overrides") == args.overrides else {}
    summary: dict = {"name": args.name, "overrides": args.overrides, "scenes": dict(kept)}
    for scene in args.scenes:
        runs = [run_once(out / args.name / f"{scene}-seed{s}", scene, s, args.overrides) for s in range(args.seeds)]
        summary["scenes"][scene] = {"seeds": list(range(args.seeds)), "objects": summarise(runs),
                                    "wall_s": [m["wall_s"] for m in runs], "steps": runs[0]["steps"],
                                    "precision": runs[0]["precision"], "device_name": runs[0]["device_name"]}
    summary["bench_wall_s"] = time.perf_counter() - started
    path.write_text(json.dumps(summary, indent=2))
    print(table(summary))
    print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
