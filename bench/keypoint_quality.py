"""Benchmark: keypoint quality per scene over seeds, for one set of settings.

    python bench/keypoint_quality.py --name default [--scenes reacher pusher push_block] [--seeds 3]
        [--first-seed 0] [--workers 1] [--out bench/results/keypoint_quality] [-- OVERRIDE ...]

Runs ``scripts/train.py env=<scene> seed=<s> <OVERRIDES>`` for every scene and for ``--seeds``
seeds from ``--first-seed`` on (0, 1, 2 by default), ``--workers`` runs at a time (1 by default: a
run already uses both cores of a small machine; several at a time get their share of the cores
each, unless ``OMP_NUM_THREADS`` says otherwise: on a GPU machine with many cores, several runs
share the GPU; collect each scene's dataset first with ``scripts/collect.py`` so that no two runs
collect it at once), each into
``<out>/<name>/<scene>-seed<s>``. A finished run (its ``metrics.json`` exists) is read, not run
again; an interrupted one resumes from its checkpoint, so the benchmark can be split across
sessions; runs there of other overrides, or of the same overrides on other defaults (the model's
and training's settings as today's code composes them, recorded in each run's ``config.json``),
are refused (give the settings another ``--name``).
Writes ``<out>/<name>.json``: per scene and object the per-seed linear-probe R² and
``keypoint_err_px`` (the single best keypoint's held-out pixel error) with their mean and std,
and the wall time of every run; prints the same as a Markdown table. Scenes that an earlier call
with the same overrides and settings wrote there, and this call did not run, are kept (so scenes
may be run with different numbers of seeds); a summary of the same overrides on other settings
is refused before anything runs. Seeds change the weights and batches; every seed of a scene
trains on the same dataset (``data.seed`` is not changed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jobs import REPO, Job, check_jobs, run_jobs

sys.path.insert(0, str(REPO))
from dsae.checkpoint import RUN_CONFIG, RUNTIME_SETTINGS, model_settings_as_trained  # noqa: E402


def job(out: Path, name: str, scene: str, seed: int, overrides: list[str]) -> Job:
    """One training run of the benchmark (all cores: a run already uses both of a small machine)."""
    run_dir = out / name / f"{scene}-seed{seed}"
    return Job(run_dir.name, "train.py", [f"env={scene}", f"seed={seed}", *overrides], run_dir,
               checkpoint="checkpoints/last.pt", resume=f"train.resume={run_dir}", settings=("logger=none",))


def computed(config: dict) -> dict:
    """What a run computes, from its config as a dict: the model's settings (those added since it
    ran, as it ran) and the training's, less those that only say how it is carried out."""
    train = {k: v for k, v in config["train"].items() if f"train.{k}" not in RUNTIME_SETTINGS}
    return {"model": model_settings_as_trained(config["model"]), "train": train}


def composed_settings(overrides: list[str]) -> dict:
    """``computed`` of the config that today's code composes with these overrides (keys checked)."""
    from hydra import compose, initialize_config_dir

    from dsae.config import register, to_config, to_dict

    register()
    with initialize_config_dir(str(REPO / "configs"), version_base=None):
        return computed(to_dict(to_config(compose("config", [*overrides, "logger=none"]))))


def differences(theirs: dict, ours: dict) -> list[str]:
    """The settings (``model.X``, ``train.Y``) whose values differ between two ``computed`` dicts."""
    return sorted(f"{section}.{key}" for section in ours for key in set(ours[section]) | set(theirs.get(section, {}))
                  if theirs.get(section, {}).get(key, "(none)") != ours[section].get(key, "(none)"))


def check_settings(path: Path, earlier: dict, overrides: list[str], jobs: list[Job], settings: dict) -> None:
    """Refuse a summary of these overrides, or a run folder, made on other settings than today's:
    the defaults changed since, so the same overrides no longer mean the same model."""
    # A summary's settings are a ``computed`` dict; again through it, the model settings added since read as its runs ran.
    recorded = computed(earlier["settings"]) if "settings" in earlier else None
    if earlier.get("scenes") and earlier.get("overrides") == overrides and recorded != settings:
        if recorded is None:
            raise SystemExit(f"{path} was written before summaries recorded their settings, so whether its scenes "
                             "ran on today's defaults is unknown: pass another --name or move it away")
        raise SystemExit(f"{path} holds scenes of these overrides on other settings "
                         f"({', '.join(differences(recorded, settings))}): pass another --name or move it away")
    for job in jobs:
        config = job.run_dir / RUN_CONFIG
        if config.exists() and (which := differences(computed(json.loads(config.read_text())), settings)):
            raise SystemExit(f"{job.run_dir} was run on other settings ({', '.join(which)}): "
                             "pass another --name or move it away")


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
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="the first of them (later seeds follow it)")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default="bench/results/keypoint_quality")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    if args.seeds < 1 or args.first_seed < 0 or args.workers < 1:
        parser.error(f"--seeds and --workers must be >= 1 and --first-seed >= 0, got {args.seeds}, {args.workers} "
                     f"and {args.first_seed}")
    out = Path(args.out).resolve()
    started = time.perf_counter()
    path = out / f"{args.name}.json"
    earlier = json.loads(path.read_text()) if path.exists() else {}
    settings = composed_settings(args.overrides)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = {scene: [job(out, args.name, scene, s, args.overrides) for s in seeds] for scene in args.scenes}
    every = [j for scene_jobs in jobs.values() for j in scene_jobs]
    check_jobs(every)  # other overrides first, then the same overrides on other settings
    check_settings(path, earlier, args.overrides, every, settings)
    kept = earlier.get("scenes", {}) if earlier.get("overrides") == args.overrides else {}
    summary: dict = {"name": args.name, "overrides": args.overrides, "settings": settings, "scenes": dict(kept)}
    done = run_jobs(every, workers=args.workers)
    for scene, scene_jobs in jobs.items():
        runs = [done[j.name] for j in scene_jobs]
        summary["scenes"][scene] = {"seeds": seeds, "objects": summarise(runs),
                                    "wall_s": [m["wall_s"] for m in runs], "steps": runs[0]["steps"],
                                    "precision": runs[0]["precision"], "device_name": runs[0]["device_name"]}
    summary["bench_wall_s"] = time.perf_counter() - started
    path.write_text(json.dumps(summary, indent=2))
    print(table(summary))
    print(f"[bench] wrote {path}")


if __name__ == "__main__":
    main()
