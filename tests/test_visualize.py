"""Drawing in the docs/architecture.md convention, the MP4 writer, heatmaps, and visualize.py end to end."""

import json

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from dsae.draw import draw_tracks, heatmap_grid, keypoint_colors, overlay_keypoints, recon_image, reconstruction_panel
from dsae.visualize import read_mp4, write_mp4


def test_keypoint_lands_on_the_expected_pixels():
    """(x, y) = (-1 + 2*5/15, -1 + 2*12/15) is column 5, row 12 of a 16x16 frame; at scale 4
    its dot is centred on big pixel (12*4 + 1.5, 5*4 + 1.5)."""
    frame = np.zeros((16, 16, 3), dtype=np.uint8)
    kp = np.array([[[-1 + 10 / 15, -1 + 24 / 15]]])
    out = draw_tracks(frame, kp, scale=4, radius=2)
    color = np.array(keypoint_colors(1)[0])
    rows, cols = np.nonzero((out == color).all(-1))
    assert abs(rows.mean() - (12 * 4 + 1.5)) < 0.6 and abs(cols.mean() - (5 * 4 + 1.5)) < 0.6
    assert out.shape == (64, 64, 3)


def test_pruned_keypoints_are_dimmed_and_truth_is_white():
    frame = np.zeros((16, 16, 3), dtype=np.uint8)
    kp = np.zeros((1, 2, 2))
    kp[0, 1] = [0.5, 0.5]
    out = draw_tracks(frame, kp, keep=np.array([True, False]), truth=[np.array([2.0, 2.0])], scale=4)
    colors = keypoint_colors(2)
    assert (out == colors[0]).all(-1).any()
    assert not (out == colors[1]).all(-1).any(), "a pruned keypoint is not drawn in its full colour"
    assert (out[2 * 4 + 1, 2 * 4 + 1] == 255).all(), "the ground-truth cross is white"


def test_overlay_batches():
    frames = torch.zeros(3, 8, 8, 3, dtype=torch.uint8)
    out = overlay_keypoints(frames, torch.zeros(3, 4, 2), scale=2)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.uint8


def test_heatmaps_are_scaled_per_keypoint():
    att = torch.zeros(2, 4, 4)
    att[0, 1, 2] = 1e-3  # tiny but the peak of its own map
    att[1] += 0.5
    att[1, 0, 0] = 0.9
    grid = heatmap_grid(att, ncols=2, cell=4, pad=0)
    assert grid.shape == (4, 8, 3)
    assert (grid[1, 2] == 255).all() and (grid[0, 4] == 255).all(), "each map's peak is white"


def test_reconstructions_are_drawn_in_gray_or_in_colour():
    gray = torch.full((2, 4, 4), 0.5)
    colour = torch.zeros(2, 3, 4, 4)
    colour[:, 1] = 1.0  # green
    panel = reconstruction_panel(gray, gray, 8)
    assert panel.shape == (16, 16, 3) and (panel == 128).all()
    panel = reconstruction_panel(colour, colour, 8)
    assert panel.shape == (16, 16, 3) and (panel[..., 1] == 255).all() and (panel[..., [0, 2]] == 0).all()
    assert (recon_image(colour[0], 8) == panel[:8, :8]).all() and (recon_image(gray[0], 8) == 128).all()


def test_mp4_round_trip(tmp_path):
    frames = [np.full((20, 30, 3), 10 * i, dtype=np.uint8) for i in range(12)]
    path = write_mp4(tmp_path / "x.mp4", frames, fps=5)
    decoded = read_mp4(path)
    assert len(decoded) == 12
    assert decoded[0].shape == (32, 32, 3)  # padded to multiples of 16
    assert abs(int(decoded[11][5, 5].mean()) - 110) < 8


@pytest.mark.slow
def test_visualize_script(tmp_path):
    """Train a tiny model with the real script, then film it."""
    from tests.test_e2e import script, tiny_overrides

    script("train.py", *tiny_overrides(tmp_path, "run", 20), "logger=none")
    out = tmp_path / "vis"
    script("visualize.py", f"checkpoint={tmp_path / 'run'}", "env=reacher", "episodes=2", "logger=none",
           "device=cpu", f"hydra.run.dir={out}")
    summary = json.loads((out / "tracking.json").read_text())
    assert len(summary["episodes"]) == 2
    for e in range(2):
        decoded = read_mp4(out / f"episode_{e}.mp4")
        assert len(decoded) == summary["episodes"][e]["frames"] == 13  # 12 steps + the first frame
        assert imageio.imread(out / f"episode_{e}_sheet.png").ndim == 3
    assert (out / "temperature_panel.png").exists()
    assert set(summary["objects"]) == {"fingertip", "target"}
    proc = script("visualize.py", f"checkpoint={tmp_path / 'run'}", "env=pusher", "logger=none",
                  f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert proc.returncode != 0 and "trained on env=reacher" in proc.stderr


def test_nearest_keypoint_is_one_index_over_all_frames():
    from dsae.visualize import nearest_keypoint_errors

    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 31, size=(40, 2))  # pixel (u, v) in a 32 px frame
    kp = rng.uniform(-1, 1, size=(40, 4, 2))
    kp[:, 2] = truth / 15.5 - 1  # keypoint 2 follows the object exactly
    noisy = kp + rng.normal(0, 0.05, kp.shape)
    out = nearest_keypoint_errors(noisy, kp, {"obj": truth}, 32)["obj"]
    assert out["keypoint"] == 2
    assert out["filtered_err_px"] < 1e-4 < out["raw_err_px"] < 2.0
