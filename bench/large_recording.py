"""Benchmark: a recording larger than the memory it is trained in.

    python bench/large_recording.py [--frames 100000] [--episode-frames 100] [--size 96]
        [--steps 200] [--work /tmp/dsae-large] [--out bench/results/large_recording.json]

Writes a synthetic robomimic-layout HDF5 recording of ``--frames`` frames (episodes of
``--episode-frames``; two discs, one steered smoothly, one pushed now and then, with their pixel
positions as labels), then runs the real scripts on it as a user would, each in its own process:
``scripts/collect.py data=hdf5`` (the import) and ``scripts/train.py data=hdf5
data.in_memory=false`` (memory-mapped frames); the import starts afresh each time. Samples each
process's memory from /proc every 50 ms: its peak anonymous memory (what it holds itself; a
memory-mapped dataset's frames are not in it) and its peak resident memory (plus the mapped
file pages it has touched, which the kernel drops and reads again under memory pressure), beside
the size of the dataset's frames, with the wall times and the probe. Writes JSON. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def disc_frames(centres: np.ndarray, colour: tuple, size: int, radius: float, out: np.ndarray) -> None:
    """Draw a disc at each (T, 2) pixel centre into frames ``out`` (T, size, size, 3) in place."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2 <= radius**2
    out[inside] = colour


def write_recording(path: Path, frames: int, episode_frames: int, size: int, seed: int = 0) -> None:
    """A robomimic-layout HDF5 file of moving discs (``agentview_image``, ``actions``, labels)."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for e in range(frames // episode_frames):
            t = np.arange(episode_frames)[:, None]
            phase, speed = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.05, 0.15, 2)
            arm = size / 2 + size * 0.3 * np.sin(speed * t + phase)
            puck = np.cumsum(rng.normal(0, 0.4, (episode_frames, 2)), axis=0) + rng.uniform(0.3, 0.7, 2) * size
            puck = np.clip(puck, 4, size - 5)
            images = np.full((episode_frames, size, size, 3), (90, 110, 90), np.uint8)
            disc_frames(arm, (40, 60, 220), size, size * 0.05, images)
            disc_frames(puck, (220, 50, 40), size, size * 0.04, images)
            demo = f.create_group(f"data/demo_{e}")
            demo["actions"] = np.diff(arm, axis=0, append=arm[-1:]).astype(np.float32)
            demo["obs/agentview_image"] = images
            demo["obs/arm_px"], demo["obs/puck_px"] = arm, puck


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def _memory(pids: list[int]) -> dict[str, int]:
    """Summed ``RssAnon`` (the processes' own memory) and ``RssFile`` (mapped file pages that the
    kernel may drop and read again) of ``pids``, in bytes, from /proc/<pid>/status."""
    total = {"RssAnon": 0, "RssFile": 0}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in total:
                    total[key] += int(value.split()[0]) * 1024
        except OSError:
            pass
    return total


def run_script(name: str, args: list[str], run_dir: Path) -> dict[str, float]:
    """Run scripts/<name> to the end in a process of its own, sampling its memory (and its
    children's) every 50 ms: wall seconds, peak anonymous memory (what it holds itself) and peak
    resident memory (anonymous plus the pages of mapped files it has touched)."""
    env = {**os.environ, "WANDB_SILENT": "true"}
    t0 = time.perf_counter()
    log = open(run_dir.with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / name), *args, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    anon = resident = 0
    while proc.poll() is None:
        mem = _memory(_tree(proc.pid))
        anon, resident = max(anon, mem["RssAnon"]), max(resident, mem["RssAnon"] + mem["RssFile"])
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): see {log.name}")
    return {"wall_s": time.perf_counter() - t0, "peak_anon_bytes": anon, "peak_rss_bytes": resident}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--episode-frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=96, help="recording and model image size")
    parser.add_argument("--steps", type=int, default=200, help="training steps")
    parser.add_argument("--work", default="/tmp/dsae-large", help="where the recording and dataset go")
    parser.add_argument("--out", default="bench/results/large_recording.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recording = work / f"recording-{args.frames}-{args.size}px.hdf5"
    if not recording.exists():
        t0 = time.perf_counter()
        write_recording(recording, args.frames, args.episode_frames, args.size)
        print(f"[bench] wrote {recording} in {time.perf_counter() - t0:.0f} s")
    dataset = work / f"dataset-{args.frames}-{args.size}px"
    common = ["data=hdf5", f"data.path={recording}", f"data.dir={dataset}",
              "++data.labels={arm: arm_px, puck: puck_px}", f"env.image_size={args.size}", "logger=none"]
    shutil.rmtree(dataset, ignore_errors=True)  # measure a whole import, not a resumed one
    imported = run_script("collect.py", common, work / "collect")
    shutil.rmtree(work / "train", ignore_errors=True)
    trained = run_script("train.py", [*common, "data.in_memory=false", f"train.steps={args.steps}"], work / "train")
    metrics = json.loads((work / "train" / "metrics.json").read_text())
    frame_bytes = args.frames // args.episode_frames * args.episode_frames * args.size**2 * 3
    result = {"frames": args.frames, "image_size": args.size, "frames_bytes": frame_bytes,
              "import": imported, "train": {**trained, "steps": args.steps,
                                            "peak_anon_fraction_of_frames": trained["peak_anon_bytes"] / frame_bytes},
              "probe_r2": metrics["probe_r2"], "keypoint_err_px": metrics["keypoint_err_px"],
              "machine": metrics["device_name"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for name, run in (("import", imported), ("train", trained)):
        print(f"{name}: peak anonymous memory {run['peak_anon_bytes'] / 2**30:.2f} GiB "
              f"({run['peak_anon_bytes'] / frame_bytes:.0%} of the {frame_bytes / 2**30:.2f} GiB of frames), "
              f"peak resident with mapped pages {run['peak_rss_bytes'] / 2**30:.2f} GiB, {run['wall_s']:.0f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
