"""The linear probe and its R^2 on synthetic data with known answers."""

import numpy as np
import pytest
import torch

from dsae.evaluate import fit_linear, apply_linear, linear_probe, probe_dataset, probe_predictions, r2_score


def test_fit_linear_recovers_affine_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    w, b = rng.normal(size=(6, 2)), np.array([3.0, -1.0])
    y = x @ w + b
    np.testing.assert_allclose(apply_linear(fit_linear(x, y, ridge=0.0), x), y, atol=1e-8)


def test_r2_values():
    y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    assert r2_score(y, y) == pytest.approx(1.0)
    assert r2_score(y, np.tile(y.mean(0), (3, 1))) == pytest.approx(0.0)
    assert r2_score(np.ones((5, 2)), np.zeros((5, 2))) is None  # no variance: undefined


def test_probe_scores_informative_and_useless_keypoints():
    rng = np.random.default_rng(1)
    n = 2000
    pos = rng.uniform(0, 63, size=(n, 2))
    good = np.stack([pos / 31.5 - 1, rng.uniform(-1, 1, (n, 2))], axis=1)  # keypoint 0 tracks it
    noise = rng.uniform(-1, 1, size=(n, 2, 2))
    res_good = linear_probe(good[:1500], {"o": pos[:1500]}, good[1500:], {"o": pos[1500:]})
    res_noise = linear_probe(noise[:1500], {"o": pos[:1500]}, noise[1500:], {"o": pos[1500:]})
    assert res_good["r2_o"] > 0.999 and res_good["err_o"] < 1e-3
    assert res_noise["r2_o"] < 0.05 and res_noise["err_o"] > 15


def test_probe_predictions_split_a_joint_fit_into_each_targets_columns():
    """Fitting two targets at once predicts each as fitting it alone does (least squares is per column)."""
    rng = np.random.default_rng(2)
    kp = rng.uniform(-1, 1, size=(300, 3, 2))
    a, b = kp[:, 0] * 20 + 30, np.concatenate([kp[:, 1] * 5, kp[:, 2, :1]], axis=1)  # (300, 2), (300, 3)
    both = probe_predictions(kp[:200], {"a": a[:200], "b": b[:200]}, kp[200:])
    assert [p.shape for p in both.values()] == [(100, 2), (100, 3)]
    for name, y in (("a", a), ("b", b)):
        np.testing.assert_allclose(both[name], probe_predictions(kp[:200], {name: y[:200]}, kp[200:])[name], atol=1e-9)
        np.testing.assert_allclose(both[name], y[200:], atol=1e-4)
    assert probe_predictions(kp, {}, kp) == {}


def test_probe_on_a_dataset_with_an_oracle_encoder(tiny_dataset):
    """An 'encoder' that returns the true normalised positions scores R^2 = 1 on held-out data."""
    from dsae.data import load_dataset

    cfg, root = tiny_dataset
    ds = load_dataset(root)
    lookup = {ds.frames[i].tobytes(): np.stack([ds.pixels[o][i] for o in ds.objects]) for i in range(len(ds.frames))}

    class Oracle(torch.nn.Module):
        def forward(self, images):
            return torch.tensor(np.stack([lookup[im.numpy().tobytes()] for im in images]) / 15.5 - 1)

    train, val = ds.split(0.25)
    out = probe_dataset(Oracle(), ds, train, val, torch.device("cpu"))
    for o in ds.objects:
        assert out["probe_r2"][o] == pytest.approx(1.0, abs=1e-6)
        assert out["probe_err_px"][o] < 1e-2  # the probe's tiny ridge term biases it by ~1e-4 px


def test_best_keypoint_is_chosen_on_training_frames_and_scored_raw():
    from dsae.evaluate import best_keypoint

    rng = np.random.default_rng(0)
    obj_train, obj_test = rng.uniform(0, 63, (200, 2)), rng.uniform(0, 63, (50, 2))
    kp_train, kp_test = rng.uniform(0, 63, (200, 4, 2)), rng.uniform(0, 63, (50, 4, 2))
    kp_train[:, 2] = obj_train + [1.0, 0.0]  # keypoint 2 sits 1 px right of the object
    kp_test[:, 2] = obj_test + [0.0, 2.0]  # and 2 px below it on the held-out frames
    kp_test[:, 0] = obj_test  # a keypoint that is only good on the held-out frames is not chosen
    index, err = best_keypoint(kp_train, obj_train, kp_test, obj_test, 64)
    assert index == 2 and err == pytest.approx(2.0)


def test_best_keypoint_counts_only_frames_where_the_object_is_in_view():
    from dsae.evaluate import best_keypoint

    obj = np.array([[10.0, 10.0], [-5.0, 30.0], [30.0, 70.0], [50.0, 50.0]])  # the 2nd and 3rd out of a 64 px frame
    kp = np.stack([obj + [1.0, 0.0], np.full((4, 2), 32.0)], axis=1)  # keypoint 0: 1 px off the object
    kp[1:3, 0] = 0.0  # far off where the object is out of view: not counted
    assert best_keypoint(kp, obj, kp, obj, 64) == (0, pytest.approx(1.0))
    assert best_keypoint(kp, obj + 100, kp, obj + 100, 64) == (None, None)  # never in view


def test_keypoint_statistics_on_hand_made_tracks():
    from dsae.evaluate import keypoint_statistics

    t = np.arange(6, dtype=float)
    still = np.zeros((6, 2))
    steady = np.stack([t, t], axis=1)  # constant velocity: no acceleration
    jerk = np.stack([t, t ** 2], axis=1)  # acceleration 2 px per frame^2 in y
    # Two episodes of 3 frames each: the tracks are split where the episodes meet.
    tracks = np.stack([still, steady, jerk], axis=1)  # (6, 3, 2)
    presence = np.tile([1.0, 0.5, 0.0], (6, 1))
    stats = keypoint_statistics(tracks, presence, np.array([3, 3]))
    assert stats["presence_mean"] == [1.0, 0.5, 0.0]
    assert stats["jitter_px"] == pytest.approx(2.0 / 3)  # the third keypoint accelerates by 2 px in each episode
    assert stats["moving_keypoints"] == 2


def test_evaluate_model_equals_the_separate_passes(tiny_dataset):
    """One pass over the held-out frames gives what probing, statistics and error give apart."""
    from dsae.config import ModelConfig
    from dsae.data import load_dataset
    from dsae.evaluate import evaluate_model
    from dsae.model import DeepSpatialAutoencoder, recon_target

    cfg, root = tiny_dataset
    ds = load_dataset(root)
    torch.manual_seed(0)
    model = DeepSpatialAutoencoder(ModelConfig(), ds.image_size).eval()
    train, val = ds.split(0.25)
    cpu = torch.device("cpu")
    out = evaluate_model(model, ds, train, val, cpu, 40, seed=3)
    apart = probe_dataset(model.encoder, ds, train, val, cpu, 40, seed=3)
    for key in ("probe_r2", "probe_err_px", "keypoint_err_px", "keypoint_index"):
        assert out[key] == pytest.approx(apart[key], rel=1e-4, abs=1e-5)  # float rounding differs between the passes' batches (an R² near 0 too)
    held_out = torch.from_numpy(ds.frames[ds.frame_indices(val)])
    with torch.no_grad():
        whole = float(((model(held_out)[1] - recon_target(held_out, model.cfg)) ** 2).mean())
    assert out["recon_mse"] == pytest.approx(whole, rel=1e-5)
    assert out["keypoints"]["moving_keypoints"] <= model.cfg.num_keypoints
    assert len(out["keypoints"]["presence_mean"]) == model.cfg.num_keypoints


def test_probe_fit_takes_a_seeded_subset_of_the_training_episodes_in_order(tiny_dataset):
    from dsae.data import load_dataset
    from dsae.evaluate import encode_frames, probe_fit

    ds = load_dataset(tiny_dataset[1])
    train, _ = ds.split(0.25)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Unflatten(1, (-1, 2)))  # frames as "keypoints"
    rows, kp = probe_fit(encoder, ds, train, torch.device("cpu"), 7, seed=3)
    assert len(rows) == 7 and (np.diff(rows) > 0).all() and set(rows) <= set(ds.frame_indices(train))
    assert (rows == probe_fit(encoder, ds, train, torch.device("cpu"), 7, seed=3)[0]).all()
    assert (rows != probe_fit(encoder, ds, train, torch.device("cpu"), 7, seed=4)[0]).any()
    assert np.array_equal(kp, encode_frames(encoder, ds.frames, torch.device("cpu"), rows))
    every, _ = probe_fit(encoder, ds, train, torch.device("cpu"), 10**6, seed=3)
    assert np.array_equal(every, ds.frame_indices(train))
