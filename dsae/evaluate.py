"""Keypoint quality: the linear probe of docs/architecture.md, and reconstruction error.

The probe fits a linear map with intercept from the K x 2 keypoints to each object's
ground-truth position, on frames of the training episodes, and scores it on held-out
episodes: R^2 of the pixel position (one R^2 over both coordinates:
1 - sum of squared residuals / sum of squared deviations from the mean), the mean
Euclidean error in pixels, and the mean Euclidean error in metres (a second map, to the
world position). Objects that do not move in the held-out data (zero variance) get no R^2.

The probe measures information, not location: a keypoint beside an object still probes well.
So each object also gets ``keypoint_err_px``: the held-out mean pixel distance between the
object and the single keypoint that tracks it best, at its raw position (no fitted map), the
keypoint being chosen on the training frames and kept for the held-out ones. That is what a
user sees in the videos, so it counts only the frames where the object's centre is in view
(Pusher's arm leaves the frame in about a tenth of them; no keypoint can follow it there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from dsae.data import Dataset
from dsae.model import DeepSpatialAutoencoder, recon_target
from dsae.spatial_softmax import to_pixels


@torch.no_grad()
def encode_frames(encoder: torch.nn.Module, frames: np.ndarray, device: torch.device,
                  rows: Optional[np.ndarray] = None, batch: int = 512) -> np.ndarray:
    """uint8 frames (N, H, W, 3), or those at ``rows`` (M,), -> keypoints (N or M, K, 2) as float64.
    Frames are read a batch at a time, so memory-mapped ones are never all in memory."""
    encoder.eval()
    return np.concatenate([encoder(chunk).double().cpu().numpy() for chunk in _batches(frames, rows, batch, device)])


def _batches(frames: np.ndarray, rows: Optional[np.ndarray], batch: int, device: torch.device):
    """uint8 tensors (b, H, W, 3) of ``frames`` (at ``rows``, or all), ``batch`` at a time."""
    rows = np.arange(len(frames)) if rows is None else np.asarray(rows)
    for start in range(0, len(rows), batch):
        yield torch.from_numpy(np.ascontiguousarray(frames[rows[start:start + batch]])).to(device)


def accelerations(track: np.ndarray, episode: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|p(t+1) - 2 p(t) + p(t-1)| of a track (N, ..., 2) in frame order, at each middle frame t:
    (N - 2, ...), and whether its three frames lie in one episode (``episode``: (N,) each
    frame's) -> (N - 2,) bool."""
    accel = np.linalg.norm(track[2:] - 2 * track[1:-1] + track[:-2], axis=-1)
    return accel, episode[2:] == episode[:-2]


def keypoint_statistics(keypoints_px: np.ndarray, presence: np.ndarray, lengths: np.ndarray,
                        moving_px: float = 1.0) -> dict[str, Any]:
    """Figures that need no labels, from the keypoints in pixels (N, K, 2) and their presence
    (N, K) over consecutive episodes of ``lengths`` frames (held-out):

    ``presence_mean`` (K,): each keypoint's mean softmax mass near its peak (1: a sharp, present
    feature); ``jitter_px``: mean over keypoints and frames of |k(t+1) - 2 k(t) + k(t-1)|, the
    frame-to-frame acceleration in pixels (0 for keypoints that move smoothly or not at all);
    ``moving_keypoints``: how many keypoints' positions vary by more than ``moving_px`` pixels
    (standard deviation over the frames, either axis).
    """
    accel, within = accelerations(keypoints_px, np.repeat(np.arange(len(lengths)), lengths))
    spread = keypoints_px.std(axis=0).max(axis=-1)  # (K,)
    return {"presence_mean": presence.mean(axis=0).round(4).tolist(),
            "jitter_px": float(accel[within].mean()) if within.any() else None,
            "moving_keypoints": int((spread > moving_px).sum())}


def fit_linear(x: np.ndarray, y: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Least squares with intercept: x (N, D), y (N, M) -> weights (D + 1, M)."""
    xa = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    gram = xa.T @ xa
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    return np.linalg.solve(gram, xa.T @ y)


def apply_linear(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], axis=1) @ weights


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> Optional[float]:
    """Pooled R^2 over all output columns; None when the truth has no variance."""
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum()
    if total <= 1e-12 * max(1.0, float((y_true ** 2).sum())):
        return None
    return float(1.0 - ((y_true - y_pred) ** 2).sum() / total)


def probe_predictions(kp_train: np.ndarray, targets_train: dict[str, np.ndarray],
                      kp_test: np.ndarray) -> dict[str, np.ndarray]:
    """The linear probe: a map from all keypoints (N, K, 2) to each target (name -> (N, M)),
    fit on train and applied to kp_test (N', K, 2) -> name -> (N', M)."""
    if not targets_train:
        return {}
    w = fit_linear(kp_train.reshape(len(kp_train), -1), np.concatenate(list(targets_train.values()), axis=1))
    pred = apply_linear(w, kp_test.reshape(len(kp_test), -1))
    columns = np.cumsum([0] + [t.shape[1] for t in targets_train.values()])
    return {name: pred[:, a:b] for name, a, b in zip(targets_train, columns[:-1], columns[1:])}


def linear_probe(kp_train: np.ndarray, targets_train: dict[str, np.ndarray],
                 kp_test: np.ndarray, targets_test: dict[str, np.ndarray]) -> dict[str, Optional[float]]:
    """Fit on train, score on test. kp: (N, K, 2); targets: name -> (N, M). Returns r2 and err."""
    out = {}
    for name, p in probe_predictions(kp_train, targets_train, kp_test).items():
        truth = targets_test[name]
        out[f"r2_{name}"] = r2_score(truth, p)
        out[f"err_{name}"] = float(np.linalg.norm(truth - p, axis=1).mean())
    return out


def in_view(px: np.ndarray, size: int) -> np.ndarray:
    """Which pixel positions (N, 2) lie inside a ``size`` x ``size`` image -> bool (N,)."""
    return ((px >= -0.5) & (px <= size - 0.5)).all(axis=-1)


def best_keypoint(kp_train: np.ndarray, px_train: np.ndarray, kp_test: np.ndarray,
                  px_test: np.ndarray, size: int) -> tuple[Optional[int], Optional[float]]:
    """The keypoint nearest to an object on the training frames, and its held-out error, both
    over the frames where the object is in view of the ``size`` px image.

    kp: keypoints in pixels (N, K, 2); px: the object's pixel position (N, 2). Returns
    (keypoint index, mean pixel distance on the test frames); None where it is never in view.
    """
    seen_train, seen_test = in_view(px_train, size), in_view(px_test, size)
    if not seen_train.any() or not seen_test.any():
        return None, None
    distance = np.linalg.norm(kp_train[seen_train] - px_train[seen_train, None], axis=-1)
    index = int(distance.mean(axis=0).argmin())
    return index, float(np.linalg.norm(kp_test[seen_test, index] - px_test[seen_test], axis=-1).mean())


def probe_fit(encoder: torch.nn.Module, dataset: Dataset, train_eps: np.ndarray, device: torch.device,
              max_train_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The frames the probe fits on, all of ``train_eps``'s or a random ``max_train_frames`` of
    them in order, and their keypoints: rows (N,), (N, K, 2)."""
    rows = dataset.frame_indices(train_eps)
    if len(rows) > max_train_frames:
        rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), max_train_frames, replace=False))]
    return rows, encode_frames(encoder, dataset.frames, device, rows)


def probe(dataset: Dataset, train_idx: np.ndarray, kp_train: np.ndarray, test_idx: np.ndarray,
          kp_test: np.ndarray) -> dict[str, dict]:
    """Probe every labelled object of a dataset (none for unlabelled footage) from keypoints
    (N, K, 2) in [-1, 1] at the frames ``train_idx`` (fit) and ``test_idx`` (scored). Returns
    {"probe_r2", "probe_err_px", "probe_err_m", "keypoint_err_px", "keypoint_index"} per object."""
    px = linear_probe(kp_train, {o: a[train_idx] for o, a in dataset.pixels.items()},
                      kp_test, {o: a[test_idx] for o, a in dataset.pixels.items()})
    world = linear_probe(kp_train, {o: a[train_idx] for o, a in dataset.positions.items()},
                         kp_test, {o: a[test_idx] for o, a in dataset.positions.items()})
    objects = dataset.objects
    size = dataset.image_size
    kp_train_px, kp_test_px = (to_pixels(torch.from_numpy(k), size, size).numpy() for k in (kp_train, kp_test))
    best = {o: best_keypoint(kp_train_px, dataset.pixels[o][train_idx], kp_test_px, dataset.pixels[o][test_idx], size)
            for o in objects}
    return {
        "probe_r2": {o: px[f"r2_{o}"] for o in objects},
        "probe_err_px": {o: px[f"err_{o}"] for o in objects},
        "probe_err_m": {o: world.get(f"err_{o}") for o in objects},
        "keypoint_err_px": {o: best[o][1] for o in objects},
        "keypoint_index": {o: best[o][0] for o in objects},
    }


def probe_dataset(encoder: torch.nn.Module, dataset: Dataset, train_eps: np.ndarray, test_eps: np.ndarray,
                  device: torch.device, max_train_frames: int = 6000, seed: int = 0) -> dict[str, dict]:
    """:func:`probe` of an encoder: fit on (up to ``max_train_frames``) frames of ``train_eps``,
    scored on every frame of ``test_eps``."""
    train_idx, kp_train = probe_fit(encoder, dataset, train_eps, device, max_train_frames, seed)
    test_idx = dataset.frame_indices(test_eps)
    return probe(dataset, train_idx, kp_train, test_idx, encode_frames(encoder, dataset.frames, device, test_idx))


@torch.no_grad()
def held_out_pass(model: DeepSpatialAutoencoder, frames: np.ndarray, rows: Optional[np.ndarray],
                  device: torch.device, batch: int = 512) -> tuple[np.ndarray, np.ndarray, float]:
    """One pass of the whole model over the uint8 frames at ``rows`` (M,), or all of them:
    keypoints (M, K, 2) in [-1, 1] as float64, their presence (M, K), and the reconstruction's
    mean squared error."""
    model.eval()
    keypoints, presence, total, count = [], [], 0.0, 0
    for chunk in _batches(frames, rows, batch, device):
        result = model.encoder(chunk, return_presence=True)
        recon = model.decoder(result.keypoints, chunk)
        total += float(((recon - recon_target(chunk, model.cfg)) ** 2).sum())
        count += recon.numel()
        keypoints.append(result.keypoints.double().cpu().numpy())
        presence.append(result.presence.double().cpu().numpy())
    return np.concatenate(keypoints), np.concatenate(presence), total / count


def evaluate_model(model: DeepSpatialAutoencoder, dataset: Dataset, train_eps: np.ndarray, val_eps: np.ndarray,
                   device: torch.device, max_train_frames: int, seed: int) -> dict[str, Any]:
    """What ``metrics.json`` reports on a model's quality: the probe, the keypoint statistics and
    the reconstruction error on the held-out episodes ``val_eps``, whose frames go through the
    model once."""
    train_idx, kp_train = probe_fit(model.encoder, dataset, train_eps, device, max_train_frames, seed)
    val_idx = dataset.frame_indices(val_eps)
    kp_val, presence, recon_mse = held_out_pass(model, dataset.frames, val_idx, device)
    size = dataset.image_size
    kp_val_px = to_pixels(torch.from_numpy(kp_val), size, size).numpy()
    return {
        **probe(dataset, train_idx, kp_train, val_idx, kp_val),
        "keypoints": keypoint_statistics(kp_val_px, presence, dataset.lengths[val_eps]),
        "recon_mse": recon_mse,
    }


def reconstruction_mse(model: DeepSpatialAutoencoder, frames: np.ndarray, device: torch.device,
                       rows: Optional[np.ndarray] = None, batch: int = 512) -> float:
    """Mean squared error of the reconstruction (per pixel and channel) over uint8 frames (N, H, W, 3), or
    those at ``rows``, read a batch at a time (:func:`held_out_pass`'s third figure)."""
    return held_out_pass(model, frames, rows, device, batch)[2]


def evaluate_checkpoint(path: Optional[str], run_dir: str | Path, device: Optional[str] = "auto",
                        max_train_frames: Optional[int] = None, dataset_dir: Optional[str] = None) -> dict:
    """Probe a checkpoint on its dataset's held-out episodes, or on those of ``dataset_dir`` (a
    dataset of frames the size it was trained on); writes ``<run_dir>/metrics.json``."""
    import json

    from dsae.api import load_model
    from dsae.checkpoint import CheckpointError
    from dsae.config import from_dict
    from dsae.data import DatasetError, load_dataset
    from dsae.device import resolve_device

    if not path:
        raise CheckpointError("no checkpoint given: pass checkpoint=PATH (a .pt file or a run folder)")
    model, state = load_model(path, device)
    cfg = from_dict(state["config"])
    if dataset_dir is None:
        dataset = load_dataset(state["dataset"], episodes=cfg.data.episodes, in_memory=cfg.data.in_memory)
    else:
        dataset = load_dataset(dataset_dir, in_memory=cfg.data.in_memory)
        if dataset.image_size != state["image_size"]:
            raise DatasetError(f"dataset={dataset_dir} holds {dataset.image_size} px frames, but the encoder was "
                               f"trained on {state['image_size']} px: give a dataset of its scene and image size")
    train_eps, val_eps = dataset.split(cfg.data.val_fraction)
    dev = resolve_device(device)
    metrics = {
        **evaluate_model(model, dataset, train_eps, val_eps, dev, max_train_frames or cfg.train.probe_frames, cfg.seed),
        "steps": state["step"],
        "checkpoint": state["path"],
        "dataset": str(dataset.root),
        "env": cfg.env.name,
        "held_out_episodes": int(len(val_eps)),
    }
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
