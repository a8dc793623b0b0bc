"""Diagnostic: what other camera settings would show of a scene, from a dataset's stored states.

    python bench/framing.py DATASET [--view "camera_elevation=-60 camera_azimuth=270"] [--view ...]
        [--every 13] [--limit 600] [--out FILE]

Every ``--every``-th frame of a collected dataset (at most ``--limit`` of them) is drawn again from
its stored state (the robot's joints and the labelled objects' slide joints, as ``visibility.py``
restores them) through each view: the dataset's own scene settings with the view's ``field=value``
settings in their place (``env.*`` fields, values read as YAML, so ``camera_lookat=[0.25,-0.72,-0.3]``);
the dataset's own camera comes first. Per view and labelled object, over those frames: its visible
pixels (mean), the shares of frames where it is partly hidden (fewer than 80% of its median count,
or none) and wholly hidden, counted as ``visibility.py`` counts them; the spread of its image
position (the two axes' variances summed, px², which a probe's squared error is compared with);
the shares of frames where it is out of view and within 3 px of an edge; its rows and columns at
the 1st and 99th percentiles. Prints a Markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from dsae.data import load_dataset  # noqa: E402
from dsae.evaluate import in_view  # noqa: E402
from envs.camera import project_points  # noqa: E402
from envs.scene import EnvConfig, make_env  # noqa: E402
from visibility import partly_hidden, restorer, visible_pixels  # noqa: E402

EDGE_PX = 3  # "near an edge": within this many pixels of the frame's border


def parse_view(text: str) -> dict:
    """``"camera_elevation=-60 camera_azimuth=270"`` -> {field: value}; values read as YAML."""
    view = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or key not in EnvConfig.__dataclass_fields__:
            raise SystemExit(f"--view {item!r}: write field=value with a scene setting (env.*), e.g. camera_elevation=-60")
        view[key] = yaml.safe_load(value)
    return view


def view_figures(dataset, rows: np.ndarray, view: dict) -> dict:
    """{object: figures} (the module docstring's) through the dataset's scene with ``view`` in place."""
    env = make_env(EnvConfig(**{**dataset.manifest["settings"]["env"], **view}))
    env.reset(seed=0)
    try:
        counts, _, _ = visible_pixels(env, restorer(env), dataset, rows)
        matrix, size = env.camera_matrix, env.config.image_size
    finally:
        env.close()
    out = {}
    for name in dataset.objects:
        px = project_points(matrix, dataset.positions[name][rows])  # (N, 2) column, row
        seen = in_view(px, size)
        near_edge = seen & (np.minimum(px + 0.5, size - 0.5 - px).min(1) < EDGE_PX)
        visible = counts[name]
        out[name] = {
            "visible_px_mean": float(visible[seen].mean()) if seen.any() else None,
            "partly_hidden_share": float(partly_hidden(visible, seen)[seen].mean()) if seen.any() else None,
            "hidden_share": float((visible == 0)[seen].mean()) if seen.any() else None,
            "spread_px2": float(((px - px.mean(0)) ** 2).sum(1).mean()),
            "out_of_view_share": float(1 - seen.mean()), "near_edge_share": float(near_edge.mean()),
            "rows_1_99": [float(v) for v in np.percentile(px[:, 1], [1, 99])],
            "columns_1_99": [float(v) for v in np.percentile(px[:, 0], [1, 99])]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a collected dataset folder (data/<scene>-...)")
    parser.add_argument("--view", action="append", default=[], help="env settings to try, 'field=value ...'")
    parser.add_argument("--every", type=int, default=13, help="draw every this many frames")
    parser.add_argument("--limit", type=int, default=600, help="at most this many frames")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    views = [{}] + [parse_view(text) for text in args.view]
    dataset = load_dataset(args.dataset, verify=False)
    if not dataset.positions:
        raise SystemExit(f"{args.dataset} stores no object positions (an imported recording?): only collected scenes can be drawn again")
    rows = np.arange(0, len(dataset.frames), max(1, args.every))[:args.limit]
    result = {"dataset": str(args.dataset), "frames": len(rows), "views": []}
    print("| view | object | visible px | partly hidden | hidden | spread px² | out of view | near an edge | rows, 1-99% | columns, 1-99% |")
    print("|" + " --- |" * 10)
    for view in views:
        figures = view_figures(dataset, rows, view)
        result["views"].append({"view": view, "objects": figures})
        label = " ".join(f"{k}={v}" for k, v in view.items()) or "(the dataset's)"
        for name, f in figures.items():
            cells = [label, name, *(("—" if f[k] is None else f"{f[k]:.{d}f}") for k, d in
                                    (("visible_px_mean", 1), ("partly_hidden_share", 3), ("hidden_share", 3), ("spread_px2", 1),
                                     ("out_of_view_share", 3), ("near_edge_share", 3))),
                     "{:.1f}-{:.1f}".format(*f["rows_1_99"]), "{:.1f}-{:.1f}".format(*f["columns_1_99"])]
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
