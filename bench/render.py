"""Benchmark: rendering speed of the envs, against their stock shadow settings in the same run.

    python bench/render.py [--frames 300] [--size 64] [--out bench/results/render.json]

For each env, frames/s of env.step + env.render at the given size, with the package's
settings and with shadows forced on (the stock models: Pusher has a 4096 shadow map). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def frames_per_s(name: str, size: int, frames: int, **settings) -> float:
    from envs import make_env

    env = make_env(name, image_size=size, **settings)
    env.reset(seed=0)
    for _ in range(10):  # warm-up: GL context, first frames
        env.step(env.action_space.sample())
        env.render()
    start = time.perf_counter()
    for i in range(frames):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        env.render()
        if terminated or truncated:
            env.reset(seed=i)
    elapsed = time.perf_counter() - start
    env.close()
    return frames / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default="bench/results/render.json")
    args = parser.parse_args()
    rows = []
    for name in ("reacher", "pusher"):
        ours = frames_per_s(name, args.size, args.frames)
        stock = frames_per_s(name, args.size, args.frames, shadows=True)
        rows.append({"env": name, "size": args.size, "frames_per_s": ours,
                     "stock_shadows_frames_per_s": stock, "speedup": ours / stock})
        print(f"{name:8s} {args.size}px: {ours:7.1f} frames/s (stock shadows: {stock:7.1f}, x{ours / stock:.2f})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gl": os.environ["MUJOCO_GL"], "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
