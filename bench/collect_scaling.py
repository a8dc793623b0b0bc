"""Benchmark: dataset collection frames/s against the number of worker processes.

    python bench/collect_scaling.py [--env reacher] [--workers 1 2 4] [--episodes 24]
        [--out bench/results/collect_scaling.json]

Collects the same episodes (same seeds) with ``data.workers`` = each given count into a fresh
temporary folder and reports frames/s (rendered frames written to disk, per second of wall
time, process start-up included). ``workers=1`` runs in-process and is the baseline; more
workers run a gymnasium AsyncVectorEnv of spawned processes. Writes JSON with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reacher")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default="bench/results/collect_scaling.json")
    args = parser.parse_args()

    from dsae.collect import collect
    from dsae.config import DataConfig
    from dsae.data import load_dataset
    from envs import load_scene

    if 1 not in args.workers:
        args.workers = [1, *args.workers]  # the baseline
    env_cfg = load_scene(args.env, image_size=args.size)
    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="dsae-collect-") as tmp:
            data_cfg = DataConfig(dir=tmp, episodes=args.episodes, workers=workers)
            start = time.perf_counter()
            collect(env_cfg, data_cfg, Path(tmp), progress=False)
            elapsed = time.perf_counter() - start
            ds = load_dataset(tmp, verify=False)
            frames = len(ds.frames)
        rows.append({"workers": workers, "frames": frames, "seconds": elapsed, "frames_per_s": frames / elapsed})
        print(f"{args.env} workers={workers}: {frames / elapsed:7.1f} frames/s ({elapsed:.1f} s)")
    base = next(r["frames_per_s"] for r in rows if r["workers"] == 1)
    for r in rows:
        r["speedup_vs_1"] = r["frames_per_s"] / base
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": args.env, "episodes": args.episodes, "image_size": args.size,
                               "cpu_count": os.cpu_count(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
