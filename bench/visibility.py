"""Diagnostic: how much of each object the camera sees, and a run's keypoint error by it.

    python bench/visibility.py RUN [RUN ...] [--out FILE]

For each ``scripts/train.py`` run folder, every held-out frame of its dataset is rendered again
from the stored state (the robot's joints, and the labelled objects' slide joints) once as it
was and once with each object's geoms made transparent; the pixels that change are the ones of
that object the camera sees. Per object, over the frames where its centre is in view: the mean
and least visible pixels, the share of frames where it is partly hidden (fewer than 80% of its
median count, or none; wholly hidden included) and wholly hidden (none), and the error of the
run's best single keypoint (as ``keypoint_err_px``) and of its linear probe (fit as
``metrics.json``'s) where it is partly hidden and where not, with the probe's R² over all
held-out frames (``metrics.json``'s ``probe_r2``) and over those where the object is in full
view; and the centroid of the object's visible pixels scored as if it were a keypoint (its error
where the object is in full view and where partly hidden, its R²): what a keypoint sitting
exactly on the part the camera sees would get. Pixels are counted on frames drawn without
shadows and reflections, so that an object's shadow does not count as the object. Also the share of pixels that differ between a re-rendered frame and the stored one
(median over frames), which says how faithfully the state was restored. A frame shows the body
positions MuJoCo last computed: with the Euler and implicit integrators those from before the
last substep moved the joints, so the stored joints are taken back by that substep
(q - h * dq/dt); with RK4 those of the stored joints themselves.

Scenes whose other joints the dataset does not store (a block's yaw, a free body) are refused,
naming the joint. Prints a Markdown table; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))

from dsae.evaluate import in_view, probe_fit, probe_predictions, r2_score  # noqa: E402
from envs.scene import EnvConfig, make_env  # noqa: E402
from keypoint_offsets import held_out  # noqa: E402

PARTLY = 0.8  # partly hidden: fewer visible pixels than this share of the object's median
CHANGED = 30  # a pixel changes when its R + G + B move by more than this (of 765)


def restorer(env):
    """A function (joint_state (2J,), positions {object: (3,)}) -> None that puts the env's MuJoCo
    state where a dataset frame shows it; SystemExit where the dataset cannot say."""
    import mujoco

    model, data = env.model, env.data
    known = set(int(j) for j in env.joint_ids)  # the robot's, then the objects' slide joints
    slides = []  # (qpos address, object, axis, world position at qpos 0)
    for name, body in env.object_bodies.items():
        for j in np.flatnonzero(model.jnt_bodyid == body):
            # A slide joint of an object placed in the world frame: its value follows from the position.
            if int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE) and int(j) not in known \
                    and int(model.body_parentid[body]) == 0:
                adr = model.jnt_qposadr[j]
                origin = model.body_pos[body] - model.qpos0[adr] * model.jnt_axis[j]
                slides.append((adr, name, model.jnt_axis[j].copy(), origin))
                known.add(int(j))
    for j in range(model.njnt):
        if j not in known:
            joint = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
            raise SystemExit(f"scene {env.config.name!r}: the dataset does not store joint {joint!r}, "
                             "so its frames cannot be rendered again")
    count = len(env.joint_ids)
    back = 0.0 if int(model.opt.integrator) == int(mujoco.mjtIntegrator.mjINT_RK4) else model.opt.timestep

    def restore(joint_state: np.ndarray, positions: dict[str, np.ndarray]) -> None:
        data.qpos[env.joint_qpos] = joint_state[:count] - back * joint_state[count:]
        for adr, name, axis, origin in slides:
            data.qpos[adr] = float(np.dot(positions[name] - origin, axis))
        mujoco.mj_forward(model, data)

    return restore


def visible_pixels(env, restore, dataset, rows: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """({object: visible pixels per frame (N,)}, {object: their centroid (N, 2) in pixels, x then
    y, NaN where none shows}, median share of pixels unlike the stored frames). An object's pixels
    are counted on frames drawn without shadows and reflections, so that only its own surface
    counts, not the shadow it casts."""
    model = env.model
    geoms = {o: np.flatnonzero(model.geom_bodyid == b) for o, b in env.object_bodies.items()}
    counts = {o: np.zeros(len(rows), dtype=np.int64) for o in geoms}
    centroids = {o: np.full((len(rows), 2), np.nan) for o in geoms}
    lights, reflectance = model.light_castshadow.copy(), model.mat_reflectance.copy()
    unlike = []
    for n, row in enumerate(rows):
        restore(dataset.joint_state[row], {o: dataset.positions[o][row] for o in dataset.objects})
        frame = env.render().astype(np.int64)
        unlike.append(float((np.abs(frame - dataset.frames[row]).sum(-1) > CHANGED).mean()))
        model.light_castshadow[:], model.mat_reflectance[:] = 0, 0.0
        try:
            plain = env.render().astype(np.int64)
            for name, ids in geoms.items():
                rgba = model.geom_rgba[ids].copy()
                model.geom_rgba[ids, 3] = 0.0
                try:
                    y, x = np.nonzero(np.abs(plain - env.render()).sum(-1) > CHANGED)
                finally:
                    model.geom_rgba[ids] = rgba
                counts[name][n] = len(x)
                if len(x):
                    centroids[name][n] = x.mean(), y.mean()
        finally:  # the scene is drawn as it was even where a render raised
            model.light_castshadow[:], model.mat_reflectance[:] = lights, reflectance
    return counts, centroids, float(np.median(unlike))


def visibility(run: Path) -> dict:
    """The module docstring's figures for one run."""
    opened = held_out(run)
    dataset, rows, cfg, kp_px = opened.dataset, opened.rows, opened.cfg, opened.kp_px
    env = make_env(EnvConfig(**dataset.manifest["settings"]["env"]))
    env.reset(seed=0)
    counts, centroids, unlike = visible_pixels(env, restorer(env), dataset, rows)
    env.close()
    # The linear probe as metrics.json fits it (dsae.evaluate.probe), for its predictions.
    fit_rows, kp_fit = probe_fit(opened.model.encoder, dataset, opened.train_eps, torch.device("cpu"),
                                 cfg.train.probe_frames, cfg.seed)
    predicted = probe_predictions(kp_fit, {o: dataset.pixels[o][fit_rows] for o in dataset.objects}, opened.kp)
    out = {"restored_unlike_share": unlike, "objects": {}}
    for name in dataset.objects:
        index = opened.metrics["keypoint_index"][name]
        best = None if index is None else kp_px[:, index]
        out["objects"][name] = object_figures(dataset.pixels[name][rows], predicted[name], best, counts[name],
                                              centroids[name], dataset.image_size)
    return out


def partly_hidden(visible: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Which frames show an object partly hidden, from its visible pixels (N,) and where it is in
    view (N,) -> bool (N,): under PARTLY of its median count over the in-view frames, or none shown
    (as for an object whose own geoms lie inside others, like Pusher's tips_arm, whose two spheres
    sit inside the prongs)."""
    return (visible < PARTLY * (np.median(visible[seen]) if seen.any() else 0.0)) | (visible == 0)


def object_figures(truth: np.ndarray, predicted: np.ndarray, best: np.ndarray | None, visible: np.ndarray,
                   centroid: np.ndarray, size: int) -> dict:
    """One object's figures from its pixel positions, the probe's predictions and the best
    keypoint's positions (N, 2) (None: never in view), its visible pixels (N,) and their
    centroid (N, 2) (NaN where none shows).

    ``centroid_err_px`` and ``centroid_r2`` score the centroid of the visible pixels as if it were
    a keypoint: what a keypoint sitting exactly on the part of the object the camera sees would
    get (the R² over the in-view frames where any of it shows)."""
    seen = in_view(truth, size)
    partly = partly_hidden(visible, seen)
    full, part = seen & ~partly, seen & partly
    probe_err = np.linalg.norm(predicted - truth, axis=1)
    best_err = None if best is None else np.linalg.norm(best - truth, axis=1)
    shows = seen & (visible > 0)
    centroid_err = np.linalg.norm(np.nan_to_num(centroid) - truth, axis=1)

    def mean(values, mask):
        return float(values[mask].mean()) if values is not None and mask.any() else None

    return {"visible_px_mean": mean(visible, seen), "visible_px_min": int(visible[seen].min()) if seen.any() else None,
            "partly_hidden_share": mean(partly, seen), "hidden_share": mean(visible == 0, seen),
            "frames": {"visible": int(full.sum()), "partly_hidden": int(part.sum())},
            "best_err_px": {"visible": mean(best_err, full), "partly_hidden": mean(best_err, part)},
            "probe_err_px": {"visible": mean(probe_err, full), "partly_hidden": mean(probe_err, part)},
            "probe_r2": {"all": r2_score(truth, predicted),
                         "visible": r2_score(truth[full], predicted[full]) if full.any() else None},
            "centroid_err_px": {"visible": mean(centroid_err, full), "partly_hidden": mean(centroid_err, part & shows)},
            "centroid_r2": r2_score(truth[shows], centroid[shows]) if shows.any() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="scripts/train.py run folders")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "metrics.json").exists():
            parser.error(f"{run} is not a finished scripts/train.py run (no metrics.json)")
    result = {str(run): visibility(run) for run in args.runs}

    def fmt(value, unit=""):
        return "—" if value is None else f"{value:.2f}{unit}" if isinstance(value, float) else f"{value}{unit}"

    columns = ["run", "object", "visible px (mean, least)", "partly hidden", "hidden",
               "best keypoint, visible / partly hidden", "probe, visible / partly hidden", "probe R², all / visible",
               "visible pixels' centroid, visible / partly hidden", "centroid R²"]
    print("| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns))
    for run, figures in result.items():
        for name, f in figures["objects"].items():
            cells = [run, name, f"{fmt(f['visible_px_mean'])}, {fmt(f['visible_px_min'])}", fmt(f["partly_hidden_share"]),
                     fmt(f["hidden_share"]), *(" / ".join(fmt(f[key][part], unit) for part in ("visible", "partly_hidden"))
                                               for key, unit in (("best_err_px", " px"), ("probe_err_px", " px"))),
                     f"{fmt(f['probe_r2']['all'])} / {fmt(f['probe_r2']['visible'])}",
                     " / ".join(fmt(f["centroid_err_px"][part], " px") for part in ("visible", "partly_hidden")),
                     fmt(f["centroid_r2"])]
            print("| " + " | ".join(cells) + " |")
        print(f"(re-rendered frames unlike the stored ones: {figures['restored_unlike_share']:.1%} of pixels, median)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
