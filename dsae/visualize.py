"""Watch a trained model: rollout videos with tracked keypoints, contact sheets, temperature panels.

``visualize(checkpoint, out_dir, vis_cfg, episodes)`` rolls out fresh episodes of the
checkpoint's env (random actions, or a trained agent's with ``policy=``), or reads a recorded
``video=`` file (resized as an import would), and writes per episode ``episode_<i>.mp4``: side by side,
the camera frame with keypoints (fixed colours, trails; raw dots and Kalman-filtered rings;
pruned keypoints dimmed; ground truth as white crosses), the decoder's reconstruction from
the keypoints, and the per-keypoint attention maps (each scaled to [0, 1]). Also
``episode_<i>_sheet.png`` (evenly spaced frames of that video), ``temperature_panel.png``
(one frame's attention at several softmax temperatures) and ``tracking.json`` (mean pixel
error of the keypoint nearest to each object, raw and filtered).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import imageio.v2 as imageio
import numpy as np
import torch

from dsae.config import VisConfig
from dsae.draw import draw_tracks, enlarge, heatmap_grid, recon_image
from dsae.errors import ConfigError
from dsae.model import to_float_images
from dsae.spatial_softmax import spatial_soft_argmax_full, to_pixels
from dsae.tracking import KeypointKalmanFilter, prune


def _pad16(image: np.ndarray) -> np.ndarray:
    """Pad to multiples of 16 pixels (what H.264 encoders want) with black."""
    h, w = image.shape[:2]
    out = np.zeros((-(-h // 16) * 16, -(-w // 16) * 16, 3), dtype=np.uint8)
    out[:h, :w] = image
    return out


def write_mp4(path: Path, frames: list[np.ndarray], fps: int, quality: int = 8) -> Path:
    """uint8 (H, W, 3) frames -> an H.264 MP4 through imageio-ffmpeg (no moviepy needed), at
    imageio's ``quality`` (0-10). Frames are padded with black to multiples of 16 pixels."""
    import imageio_ffmpeg

    frames = [_pad16(f) for f in frames]
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264", quality=quality,
                                         macro_block_size=16, ffmpeg_log_level="error")
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return Path(path)


def read_mp4(path: Path | str) -> list[np.ndarray]:
    """Decode an MP4 back into uint8 (H, W, 3) frames."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    w, h = next(reader)["size"]
    return [np.frombuffer(f, dtype=np.uint8).reshape(h, w, 3) for f in reader]


def rollout(env, seed: int, act=None) -> dict[str, np.ndarray]:
    """One episode to the env's time limit, with uniform random actions or ``act(obs)`` (a trained
    policy): frames (T, H, W, 3), ground-truth pixels and the episode's return."""
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames, pixels, total = [env.render()], [info["pixels"]], 0.0
    while True:
        action = env.action_space.sample() if act is None else act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        frames.append(env.render())
        pixels.append(info["pixels"])
        if terminated or truncated:
            break
    return {"frames": np.stack(frames), "return": total,
            "pixels": {o: np.stack([p[o] for p in pixels]) for o in pixels[0]}}


@torch.no_grad()
def track_episode(model, frames: np.ndarray, cfg: VisConfig, device: torch.device) -> dict[str, np.ndarray]:
    """Encode an episode's frames: keypoints, presence, keep mask, filtered tracks, attention, recon."""
    images = torch.from_numpy(frames).to(device)
    res = model.encoder(images, return_attention=True, return_presence=True)
    keep = prune(res.presence, cfg.top_k, cfg.presence_threshold)
    kalman = KeypointKalmanFilter(cfg.process_std, cfg.measurement_std)
    filtered = torch.stack([kalman.update(res.keypoints[t:t + 1], keep[t:t + 1])[0] for t in range(len(frames))])
    return {
        "keypoints": res.keypoints.cpu().numpy(), "filtered": filtered.cpu().numpy(),
        "presence": res.presence.cpu().numpy(), "keep": keep.cpu().numpy(),
        "attention": res.attention.cpu().numpy(), "recon": model.decoder(res.keypoints, images).cpu().numpy(),
    }


def compose_frame(frame: np.ndarray, tracks: dict[str, np.ndarray], t: int, truth: list[np.ndarray],
                  cfg: VisConfig) -> np.ndarray:
    """One video frame: keypoints on the camera frame | reconstruction | attention grid."""
    start = max(0, t - cfg.trail)
    left = draw_tracks(frame, tracks["keypoints"][start:t + 1], tracks["filtered"][start:t + 1],
                       tracks["keep"][t], truth, scale=cfg.scale)
    side = left.shape[0]
    recon = recon_image(tracks["recon"][t], side)
    k = tracks["attention"].shape[1]
    ncols = int(np.ceil(np.sqrt(k)))
    cell = max(8, side // ncols - 4)
    heat = heatmap_grid(tracks["attention"][t], ncols, cell)
    heat_panel = np.zeros((side, heat.shape[1], 3), dtype=np.uint8)
    heat_panel[:min(side, heat.shape[0])] = heat[:side]
    gap = np.full((side, 4, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, recon, gap, heat_panel], axis=1)


def nearest_keypoint_errors(keypoints: np.ndarray, filtered: np.ndarray, pixels: dict[str, np.ndarray],
                            size: int) -> dict[str, dict]:
    """For each object, the one keypoint index whose track is nearest to it on average over
    all frames given (T, K, 2), and that keypoint's mean pixel error, raw and Kalman-filtered."""
    raw_px = to_pixels(torch.from_numpy(keypoints).float(), size, size).numpy()
    filt_px = to_pixels(torch.from_numpy(filtered).float(), size, size).numpy()
    out = {}
    for obj, truth in pixels.items():
        dist = np.linalg.norm(raw_px - truth[:, None, :], axis=-1).mean(0)  # (K,)
        k = int(dist.argmin())
        out[obj] = {"keypoint": k, "raw_err_px": float(dist[k]),
                    "filtered_err_px": float(np.linalg.norm(filt_px[:, k] - truth, axis=-1).mean())}
    return out


@torch.no_grad()
def temperature_panel(model, frame: np.ndarray, temperatures: list[float], device: torch.device,
                      cell: int = 48) -> np.ndarray:
    """One frame (left) and its per-keypoint attention maps at each softmax temperature
    (rows, in the given order; columns: keypoints), each map scaled to [0, 1]. The wide
    keypoints' maps come divided by ``model.wide_temperature``, so theirs are at that multiple
    of each row's temperature, as in the model."""
    features = model.encoder.feature_maps(model.encoder.inputs(to_float_images(torch.from_numpy(frame[None]).to(device))))
    k = features.shape[1]
    rows = [heatmap_grid(spatial_soft_argmax_full(features, t, return_attention=True).attention[0], k, cell)
            for t in temperatures]
    grid = np.concatenate(rows, axis=0)
    photo = enlarge(frame, max(1, grid.shape[0] // frame.shape[0]))
    column = np.full((grid.shape[0], photo.shape[1], 3), 255, dtype=np.uint8)
    column[: photo.shape[0]] = photo[: grid.shape[0]]
    return np.concatenate([column, np.full((grid.shape[0], 6, 3), 255, np.uint8), grid], axis=1)


def require_source(checkpoint: Optional[str], policy: Optional[str]) -> None:
    """Fail, naming the fix, when there is neither a DSAE checkpoint nor a policy to film."""
    if not checkpoint and not policy:
        from dsae.checkpoint import CheckpointError

        raise CheckpointError("no checkpoint given: pass checkpoint=PATH (a .pt file or a run folder), "
                              "or policy=PATH (a scripts/train_rl.py run)")


def _load_sources(checkpoint: Optional[str], policy: Optional[str], device: Optional[str],
                  env_name: Optional[str]):
    """(model, its checkpoint state, its training config, the agent or None), checked to fit together.
    Without ``checkpoint``, a keypoint policy's own encoder is filmed."""
    from dsae.api import load_model
    from dsae.config import from_dict

    require_source(checkpoint, policy)
    agent = None
    if policy is not None:
        from dsae.rl import Policy

        agent = Policy(policy, device)
        checkpoint = checkpoint or agent.encoder_path
        if not checkpoint:
            raise ConfigError(f"the policy was trained on obs={agent.cfg.obs}, without a DSAE: pass checkpoint=PATH "
                              "(a scripts/train.py run) to draw its keypoints")
    model, state = load_model(checkpoint, device)
    train_cfg = from_dict(state["config"])
    if env_name is not None and env_name != train_cfg.env.name:
        raise ConfigError(f"the checkpoint was trained on env={train_cfg.env.name}, not env={env_name}; "
                          f"drop the env override or pass a {env_name} checkpoint")
    if agent is not None and agent.env_config.name != train_cfg.env.name:
        raise ConfigError(f"the policy acts in env={agent.env_config.name} but the checkpoint was trained on "
                          f"env={train_cfg.env.name}")
    return model, state, train_cfg, agent


def film_episode(ep: dict, tracks: dict, cfg: VisConfig, out_dir: Path, index: int, progress: bool = True
                 ) -> tuple[Path, Path, np.ndarray, int]:
    """An episode's MP4 and contact sheet: (video path, sheet path, the sheet, frames)."""
    from tqdm import tqdm

    objects = list(ep["pixels"])
    video = []
    for t in tqdm(range(len(ep["frames"])), desc=f"render episode {index}", unit="frame", disable=not progress):
        truth = [ep["pixels"][o][t] for o in objects]
        video.append(compose_frame(ep["frames"][t], tracks, t, truth, cfg))
    path = write_mp4(out_dir / f"episode_{index}.mp4", video, cfg.fps)
    picks = np.linspace(0, len(video) - 1, min(cfg.sheet_frames, len(video))).round().astype(int)
    sheet = np.concatenate([np.concatenate([video[i], np.full((video[i].shape[0], 4, 3), 255, np.uint8)], 1)
                            for i in picks], axis=0)
    sheet_path = out_dir / f"episode_{index}_sheet.png"
    imageio.imwrite(sheet_path, sheet)
    return path, sheet_path, sheet, len(video)


def _episodes(env, agent, cfg: VisConfig, episodes: int, video: Optional[str], image_size: int, crop: bool):
    """The episodes to film: fresh rollouts, or the one recorded ``video`` (its frames resized as
    an import would, its labels file's positions as ground truth)."""
    if video is None:
        for e in range(episodes):
            yield rollout(env, cfg.seed + e, None if agent is None else agent.act)
        return
    from dsae.sources import video_episode

    recorded = video_episode(Path(video), image_size, crop)
    yield {"frames": recorded["frames"], "return": None,
           "pixels": {k[3:]: v for k, v in recorded.items() if k.startswith("px_")}}


def visualize(checkpoint: Optional[str], out_dir: Path | str, cfg: VisConfig, episodes: int = 3,
              device: Optional[str] = "auto", env_name: Optional[str] = None, logger=None,
              progress: bool = True, policy: Optional[str] = None, video: Optional[str] = None) -> dict:
    """Write videos, contact sheets, a temperature panel and tracking.json into ``out_dir``.

    With ``policy`` (a scripts/train_rl.py run), the trained agent acts instead of random actions,
    and ``checkpoint`` defaults to the encoder that agent sees (obs=keypoints). With ``video``
    (a video file), the keypoints are filmed over that recording instead of rollouts.
    """
    from dsae.device import resolve_device
    from envs import make_env

    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    model, state, train_cfg, agent = _load_sources(checkpoint, policy, device, env_name)
    dev = resolve_device(device)
    env = None if video else make_env(train_cfg.env) if agent is None else agent.make_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": state["path"], "env": train_cfg.env.name, "policy": policy, "video": video,
                     "episodes": []}
    all_tracks, all_pixels = [], []
    for e, ep in enumerate(_episodes(env, agent, cfg, episodes, video, state["image_size"], train_cfg.data.crop)):
        tracks = track_episode(model, ep["frames"], cfg, dev)
        path, sheet_path, sheet, frames = film_episode(ep, tracks, cfg, out_dir, e, progress)
        all_tracks.append(tracks)
        all_pixels.append(ep["pixels"])
        summary["episodes"].append({"video": str(path), "sheet": str(sheet_path), "frames": frames,
                                    "return": ep["return"]})
        if logger is not None:
            logger.video(f"episode_{e}", path, step=e)
            logger.image(f"sheet_{e}", sheet, step=e)
    panel = temperature_panel(model, ep["frames"][len(ep["frames"]) // 2], cfg.temperatures, dev)
    imageio.imwrite(out_dir / "temperature_panel.png", panel)
    summary["temperature_panel"] = str(out_dir / "temperature_panel.png")
    summary["temperatures"] = list(cfg.temperatures)
    summary["objects"] = nearest_keypoint_errors(
        np.concatenate([t["keypoints"] for t in all_tracks]), np.concatenate([t["filtered"] for t in all_tracks]),
        {o: np.concatenate([p[o] for p in all_pixels]) for o in all_pixels[0]}, state["image_size"])
    (out_dir / "tracking.json").write_text(json.dumps(summary, indent=2))
    if env is not None:
        env.close()
    return summary
