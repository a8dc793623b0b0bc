"""Diagnostic: where a run's best single keypoint sits relative to each object.

    python bench/keypoint_offsets.py RUN [RUN ...] [--out FILE] [--rings 8 20] [--row-edges 24] [--edge-distances 2 4 8]

For each ``scripts/train.py`` run folder and each labelled object, on the frames of the run's
held-out episodes where the object is in view (as ``keypoint_err_px``): the best keypoint
(``keypoint_index`` of its ``metrics.json``), its mean distance to the object, its mean offset
(keypoint minus object, pixels) and the offset's spread (std per axis), the mean over frames of
the distance from the object to the nearest of *any* keypoint, both distances again in rings of
the object's distance from the image centre (``--rings``; Reacher's arm is based there, so a tip
near the centre means a folded arm), by the object's image row (``--row-edges``; in Pusher the
table ends at row 24) and by its distance to the nearest edge of the image (``--edge-distances``;
an object near the edge may be partly cut off), and the best keypoint's gain: the slope of its position on
the object's, per axis (1 when it moves exactly as far as the object; in
``model.keypoint_frame=grid`` a keypoint with a sharp softmax that follows an object moves 1.6
times as far at ``model=gaussian16``'s 21x21 feature maps). A best keypoint whose offset
averages near zero but spreads wide follows a point beside the object that turns around it; a
small nearest-of-any distance beside a large best-single error means the keypoints do cover the
object but hand it from one to another. Each split also gives the best keypoint's mean presence
(its softmax mass within a cell of where it sits: near 1 where its map answers in one place, near
0 where it answers nowhere and the keypoint drifts to the mean of a diffuse map). Over time, within
the held-out episodes: the offset's autocorrelation one, three and ten frames apart (near 1: an
offset that lasts, a point beside the object that the keypoint follows; near 0 one frame apart:
jitter) and the mean acceleration |p(t+1) - 2 p(t) + p(t-1)| of the keypoint and of the object
(px). Shifted: how far the best keypoint strays from where it should be when what the encoder
reads moves 1, 2 or 3 px to the right (borders repeated), on every fourth in-view frame at least
6 px from the edges: a keypoint that follows its object between the cells of its feature map moves
as far; one held on 2 px cells (a stride-2 map whose softmax answers in one cell) stays put or
jumps 2 px at odd shifts. Prints a Markdown table; ``--out`` also writes the
figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsae.api import load_model  # noqa: E402
from dsae.config import Config, from_dict  # noqa: E402
from dsae.data import Dataset, load_dataset  # noqa: E402
from dsae.evaluate import accelerations, held_out_pass, in_view  # noqa: E402
from dsae.model import to_float_images  # noqa: E402
from dsae.spatial_softmax import to_pixels  # noqa: E402


class HeldOut(NamedTuple):
    """A finished run and its dataset, with the keypoints of the held-out frames."""

    metrics: dict  # its metrics.json
    model: torch.nn.Module
    cfg: Config
    dataset: Dataset
    train_eps: np.ndarray  # (E,) the training episodes
    rows: np.ndarray  # (N,) the held-out frames' rows in the dataset
    kp: np.ndarray  # (N, K, 2) their keypoints, normalised to [-1, 1]
    presence: np.ndarray  # (N, K) their presence (SpatialSoftmax's return_presence)

    @property
    def kp_px(self) -> np.ndarray:
        """The held-out keypoints (N, K, 2) in pixels."""
        size = self.dataset.image_size
        return to_pixels(torch.from_numpy(self.kp), size, size).numpy()


def held_out(run: Path) -> HeldOut:
    """Open a ``scripts/train.py`` run folder on the CPU and encode its held-out frames."""
    metrics = json.loads((run / "metrics.json").read_text())
    model, state = load_model(run, "cpu")
    cfg = from_dict(state["config"])
    dataset = load_dataset(state["dataset"], episodes=cfg.data.episodes, verify=False)
    train_eps, test_eps = dataset.split(cfg.data.val_fraction)
    rows = dataset.frame_indices(test_eps)
    kp, presence, _ = held_out_pass(model, dataset.frames, rows, torch.device("cpu"))
    return HeldOut(metrics, model, cfg, dataset, train_eps, rows, kp, presence)


def offsets(run: Path, rings: list[float], row_edges: list[float], edge_distances: list[float]) -> dict[str, dict]:
    """{object: figures} for one run (see the module docstring)."""
    opened = held_out(run)
    metrics, dataset, rows, kp = opened.metrics, opened.dataset, opened.rows, opened.kp_px
    size = dataset.image_size
    episode = np.searchsorted(dataset.starts, rows, side="right") - 1  # (N,) each held-out frame's episode
    out = {}
    for name in dataset.objects:
        obj = dataset.pixels[name][rows]  # (N, 2)
        seen = in_view(obj, size)  # frames where the object is in view, as keypoint_err_px counts them
        index = metrics["keypoint_index"][name]
        if index is None:  # never in view
            continue
        over_time = temporal(kp[:, index], obj, seen, episode)
        obj, kp_seen = obj[seen], kp[seen]  # (n, 2), (n, K, 2)
        presence = opened.presence[seen, index]  # (n,): the best keypoint's
        offset = kp_seen[:, index] - obj
        error = np.linalg.norm(offset, axis=1)  # (n,): the best keypoint's
        nearest = np.linalg.norm(kp_seen - obj[:, None], axis=-1).min(1)  # (n,): the nearest of any keypoint
        # Gain: the least-squares slope of the keypoint's position on the object's, per axis
        # (1: it moves as far as the object; None where the object does not move).
        spread = ((obj - obj.mean(0)) ** 2).sum(0)
        gain = [float(((kp_seen[:, index, a] - kp_seen[:, index, a].mean()) * (obj[:, a] - obj[:, a].mean())).sum() / spread[a])
                if spread[a] > 1e-9 else None for a in (0, 1)]
        edge_distance = np.minimum(obj, size - 1 - obj).min(1).clip(min=0)  # (n,): from the image's nearest edge
        inside = rows[seen][edge_distance >= 6][::4]  # every fourth in-view frame 6 px from the edges
        shift = shifted(opened, inside, index) if len(inside) else None
        out[name] = {"keypoint_index": index, "best_err_px": float(error.mean()), "shift_deviation_px": shift,
                     "mean_offset_px": offset.mean(0).tolist(), "offset_std_px": offset.std(0).tolist(),
                     "gain": gain, "nearest_any_px": float(nearest.mean()), "presence": float(presence.mean()),
                     **over_time,
                     "by_centre_distance": by_ring(error, nearest, presence, np.linalg.norm(obj - (size - 1) / 2, axis=1), rings),
                     "by_row": by_ring(error, nearest, presence, obj[:, 1], row_edges),
                     "by_edge_distance": by_ring(error, nearest, presence, edge_distance, edge_distances)}
    return out


@torch.no_grad()
def shifted(opened: HeldOut, rows: np.ndarray, index: int, shifts: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """{shift: the mean distance (px) between keypoint ``index`` of the frames at ``rows`` with what
    the encoder reads (its ``inputs``) moved ``shift`` px to the right, borders repeated, and where it
    should then be: its unshifted position plus the shift}."""
    encoder, size = opened.model.encoder.eval(), opened.dataset.image_size
    x = encoder.inputs(to_float_images(torch.from_numpy(np.asarray(opened.dataset.frames[rows]))))
    def place(inputs: torch.Tensor) -> np.ndarray:
        return to_pixels(encoder.locate(encoder.feature_maps(inputs), inputs.shape[-2:]), size, size)[:, index].numpy()
    base = place(x)
    deviation = {}
    for s in shifts:
        moved = torch.cat([x[..., :1].expand(*x.shape[:-1], s), x[..., :-s]], dim=-1)
        deviation[str(s)] = float(np.linalg.norm(place(moved) - base - [s, 0], axis=1).mean())
    return deviation


def temporal(track: np.ndarray, obj: np.ndarray, seen: np.ndarray, episode: np.ndarray,
             lags: tuple[int, ...] = (1, 3, 10)) -> dict:
    """How the best keypoint's offset from the object moves over the held-out frames in order, from
    its track and the object's positions (N, 2), where the object is in view (N,) and each frame's
    episode (N,): the offset's autocorrelation at each lag (the mean over the axes along which it
    varies; None where it never does over frames that far apart in one episode), and the mean
    acceleration of the keypoint and of the object over the triples of consecutive frames in view
    (px)."""
    offset = track - obj
    centred = offset - offset[seen].mean(0)
    autocorrelation = {}
    for lag in lags:
        pair = (episode[lag:] == episode[:-lag]) & seen[lag:] & seen[:-lag]
        a, b = centred[lag:][pair], centred[:-lag][pair]
        scale = np.sqrt((a ** 2).mean(0) * (b ** 2).mean(0)) if pair.any() else np.zeros(2)
        moving = scale > 1e-12  # the axes along which the offset varies
        autocorrelation[str(lag)] = float(((a * b).mean(0)[moving] / scale[moving]).mean()) if moving.any() else None
    def acceleration(p: np.ndarray) -> Optional[float]:
        accel, within = accelerations(p, episode)
        triple = within & seen[2:] & seen[1:-1] & seen[:-2]
        return float(accel[triple].mean()) if triple.any() else None
    return {"offset_autocorrelation": autocorrelation, "keypoint_accel_px": acceleration(track),
            "object_accel_px": acceleration(obj)}


def by_ring(error: np.ndarray, nearest: np.ndarray, presence: np.ndarray, radius: np.ndarray,
            rings: list[float]) -> list[dict]:
    """The best keypoint's errors and presence and the nearest keypoint's distances (N,) split by
    radius (N,) (or any other per-frame value, such as the object's image row) at the edges
    ``rings`` (px): per ring its share of the frames and the three means (None where empty)."""
    edges = [0.0, *rings, float("inf")]
    out = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (radius >= low) & (radius < high)
        out.append({"from_px": low, "to_px": high, "share": float(inside.mean()),
                    "err_px": float(error[inside].mean()) if inside.any() else None,
                    "nearest_any_px": float(nearest[inside].mean()) if inside.any() else None,
                    "presence": float(presence[inside].mean()) if inside.any() else None})
    return out


def splits(parts: list[dict]) -> str:
    """by_ring's parts as one table cell: 'from–to px (share): error (nearest of any), presence; ...'."""
    return "; ".join(f"{r['from_px']:g}–{r['to_px']:g} px ({r['share']:.0%}): "
                     + ("—" if r["err_px"] is None else f"{r['err_px']:.1f} ({r['nearest_any_px']:.1f}), {r['presence']:.2f}")
                     for r in parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="scripts/train.py run folders")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--rings", type=float, nargs="*", default=[8.0, 20.0],
                        help="ring edges (px from the image centre) at which the distances are split again")
    parser.add_argument("--row-edges", type=float, nargs="*", default=[],
                        help="image rows (px from the top) at which the distances are split again, by the object's row "
                             "(Pusher's table ends at row 24: above it the grey arm lies on the grey table)")
    parser.add_argument("--edge-distances", type=float, nargs="*", default=[],
                        help="distances (px) from the object to the image's nearest edge at which the distances are split again")
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "metrics.json").exists():
            parser.error(f"{run} is not a finished scripts/train.py run (no metrics.json)")
    result = {str(run): offsets(run, args.rings, args.row_edges, args.edge_distances) for run in args.runs}
    print("| run | object | best keypoint | its error | mean offset | offset std | gain | nearest of any | its presence | "
          "error (nearest of any), presence by distance from the centre | by image row | by distance from the edge | "
          "offset's autocorrelation 1, 3, 10 frames apart | acceleration: keypoint, object | strays when shifted 1, 2, 3 px |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run, objects in result.items():
        for name, f in objects.items():
            gain = ", ".join("—" if g is None else f"{g:.2f}" for g in f["gain"])
            rings, rows, edges = (splits(f["by_centre_distance"]), splits(f["by_row"]), splits(f["by_edge_distance"]))
            lasting = ", ".join("—" if c is None else f"{c:.2f}" for c in f["offset_autocorrelation"].values())
            accel = ", ".join("—" if a is None else f"{a:.1f}" for a in (f["keypoint_accel_px"], f["object_accel_px"]))
            print(f"| {Path(run).parent.name}/{Path(run).name} | {name} | {f['keypoint_index']} | {f['best_err_px']:.1f} px | "
                  f"({f['mean_offset_px'][0]:.1f}, {f['mean_offset_px'][1]:.1f}) px | "
                  f"({f['offset_std_px'][0]:.1f}, {f['offset_std_px'][1]:.1f}) px | ({gain}) | {f['nearest_any_px']:.1f} px | "
                  f"{f['presence']:.2f} | {rings} | {rows} | {edges} | {lasting} | {accel} px | "
                  + ("—" if f["shift_deviation_px"] is None else ", ".join(f"{d:.2f}" for d in f["shift_deviation_px"].values()) + " px") + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
