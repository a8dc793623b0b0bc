"""Diagnostic: how much a collected dataset shows its objects moving and the arm meeting them.

    python bench/dataset_motion.py DATASET [DATASET ...] [--effector fingertip] [--near 0.05]
        [--view LO HI] [--out FILE]

For each dataset folder (``scripts/collect.py`` output) and each labelled object other than the
effector: the share of episodes in which the object's image position changes by more than 1 px,
the median distance it travels in an episode (world, start to end), the median over episodes of
its largest image displacement, and the share of frames with the effector within ``--near``
metres of it (horizontally). An object that never moves, or that the arm never comes near, is
one the encoder sees only as still scenery. With ``--view LO HI``, also the share of frames in
which each object (the effector too) lies outside pixels LO..HI on either axis: the part of the
image that an encoder's last feature map looks at (11 51 for ``model=gaussian16``'s valid convs at
64 px, 0 62 for the default's replicate padding; see
``dsae.model.receptive_field_centres``). Prints a Markdown table; ``--out`` also writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsae.data import load_dataset  # noqa: E402


def motion(root: Path, effector: str, near: float, view: Optional[tuple[float, float]] = None) -> dict:
    """Per object: moved_share, travel_m (median), max_shift_px (median), near_share
    [, out_of_view_share]; the effector: out_of_view_share only."""
    data = load_dataset(root, verify=False, in_memory=False)  # labels only: frames stay on disk
    if effector not in data.objects:
        raise SystemExit(f"{root}: no object {effector!r} to measure from (it has {data.objects})")
    out = {}
    for obj in data.objects:
        if view is not None:
            px = data.pixels[obj]
            out.setdefault(obj, {})["out_of_view_share"] = float(((px < view[0]) | (px > view[1])).any(axis=1).mean())
        if obj == effector:
            continue
        shifts, travel, close = [], [], []
        for e in range(data.num_episodes):
            rows = slice(data.starts[e], data.starts[e + 1])
            px, pos, tip = data.pixels[obj][rows], data.positions[obj][rows], data.positions[effector][rows]
            shifts.append(float(np.abs(px - px[0]).max()))
            travel.append(float(np.linalg.norm(pos[-1, :2] - pos[0, :2])))
            close.append(np.linalg.norm(tip[:, :2] - pos[:, :2], axis=1) < near)
        shifts = np.array(shifts)
        out.setdefault(obj, {}).update({
            "episodes": data.num_episodes, "moved_share": float((shifts > 1).mean()), "travel_m": float(np.median(travel)),
            "max_shift_px": float(np.median(shifts)), "near_share": float(np.concatenate(close).mean())})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--effector", default="fingertip", help="the labelled object that is the arm's end")
    parser.add_argument("--near", type=float, default=0.05, help="metres: 'near' for near_share")
    parser.add_argument("--view", type=float, nargs=2, metavar=("LO", "HI"), help="pixels an encoder sees")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {str(d): motion(d, args.effector, args.near, args.view) for d in args.datasets}
    print("| dataset | object | episodes | moved > 1 px | median travel | median largest shift | frames with the effector near "
          "| frames out of view |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d, objects in results.items():
        for obj, m in objects.items():
            view = f"{m['out_of_view_share']:.0%}" if "out_of_view_share" in m else "—"
            if "episodes" not in m:  # the effector
                print(f"| {d} | {obj} (effector) | | | | | | {view} |")
                continue
            print(f"| {d} | {obj} | {m['episodes']} | {m['moved_share']:.0%} | {m['travel_m'] * 100:.1f} cm | "
                  f"{m['max_shift_px']:.1f} px | {m['near_share']:.1%} | {view} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
