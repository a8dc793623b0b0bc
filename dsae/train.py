"""Training: dataset (collected if missing) -> DSAE -> checkpoints -> probe -> metrics.json.

``run_training(cfg, run_dir)`` is the whole of ``scripts/train.py`` without Hydra. A run
folder ends up holding ``config.json``, ``checkpoints/last.pt``, ``scalars.jsonl``,
``media/*.png``, the wandb run (``wandb/``) and ``metrics.json``, written last, which also
marks the run as finished.

Resuming (``train.resume``): ``true``/``latest`` continues this run folder if it has a
checkpoint, else the newest unfinished run under ``outputs/`` or ``multirun/`` made with the
same settings; a path names a run folder or a checkpoint. The run continues in its own
folder with its own settings (:func:`dsae.checkpoint.resumed_config`: an override that would
change them is refused), to the same final step, with the optimiser, schedule, RNG and batch
sampler restored, so the result matches an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from dsae.checkpoint import (
    CHECKPOINT,
    METRICS,
    RUN_CONFIG,
    find_resume_checkpoint,
    load_checkpoint,
    resumed_config,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from dsae.collect import collect, default_dataset_dir
from dsae.config import Config, LoggerConfig, TrainConfig, from_dict, to_dict
from dsae.data import Dataset, TripleSampler, load_dataset, read_manifest
from dsae.device import cpu_has_native_bf16, device_name, resolve_device
from dsae.draw import grid_image, overlay_keypoints, reconstruction_panel
from dsae.errors import ConfigError
from dsae.evaluate import probe_dataset, reconstruction_mse
from dsae.logger import Logger
from dsae.model import DeepSpatialAutoencoder, gray_target

LR_SCHEDULES = ("cosine", "constant")


def dataset_dir(cfg: Config) -> Path:
    return Path(cfg.data.dir) if cfg.data.dir else default_dataset_dir(cfg.env, cfg.data)


def ensure_dataset(cfg: Config) -> Dataset:
    """Load exactly ``data.episodes`` episodes of the configured dataset, collecting (or
    extending) it first when needed."""
    root = dataset_dir(cfg)
    manifest = read_manifest(root)
    if manifest is None or not manifest.get("complete") or manifest.get("episodes", 0) < cfg.data.episodes:
        print(f"[dsae] collecting {cfg.data.episodes} {cfg.env.name} episodes into {root}")
        collect(cfg.env, cfg.data, root)
    return load_dataset(root, episodes=cfg.data.episodes)


def background_frames(dataset: Dataset, episodes: np.ndarray, seed: int, count: int = 1000) -> np.ndarray:
    """Up to ``count`` training frames spread over the episodes, uint8 (n, H, W, 3): what the
    scene's static image (their per-pixel median) is estimated from."""
    frames = dataset.frames[episodes].reshape(-1, *dataset.frames.shape[2:])
    pick = np.random.default_rng(seed).choice(len(frames), min(count, len(frames)), replace=False)
    return frames[np.sort(pick)]


def _lr_lambda(schedule: str, total: int):
    if schedule not in LR_SCHEDULES:
        raise ConfigError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


AMP_MODES = ("auto", "bf16", "none")


def _check(cfg: Config) -> None:
    t = cfg.train
    for key in ("steps", "batch_size", "log_every", "eval_every", "image_every", "checkpoint_every", "probe_frames"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {getattr(t, key)}")
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {AMP_MODES}, got {t.amp!r}")
    if not 0 < cfg.data.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.data.val_fraction}")


class _Loss(torch.nn.Module):
    """The model's training loss as a forward pass (what DistributedDataParallel and compile wrap)."""

    def __init__(self, model: DeepSpatialAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, triples: torch.Tensor):
        return self.model.loss(triples)


class TrainStep:
    """One optimisation step of a DSAE, with the speed options of ``TrainConfig``.

    bf16 autocast (``train.amp``; the soft-argmax computes in float32 whatever its input),
    channels-last weights and activations, an optional ``torch.compile`` of forward + loss, and,
    under ``torchrun``, DistributedDataParallel. ``step(triples)`` -> the loss parts (detached).
    Used by :func:`run_training` and ``bench/train_throughput.py``.
    """

    def __init__(self, model: DeepSpatialAutoencoder, cfg: TrainConfig, device: torch.device, distributed: bool = False):
        cuda = device.type == "cuda"
        self.model = model
        self.channels_last = cuda if cfg.channels_last is None else cfg.channels_last
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        auto_bf16 = cuda or (device.type == "cpu" and cpu_has_native_bf16())
        self.amp_dtype = torch.bfloat16 if cfg.amp == "bf16" or (cfg.amp == "auto" and auto_bf16) else None
        self.precision = "bf16" if self.amp_dtype is not None else "float32"  # what train.amp resolved to here
        loss: torch.nn.Module = _Loss(model)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            if cuda:
                # Batch statistics over the global batch (in place: BN layers are nested). SyncBatchNorm
                # needs a GPU: on CPU each process normalises with its own share's statistics.
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            loss = DistributedDataParallel(loss, device_ids=[device.index] if cuda else None)
        self.loss = torch.compile(loss) if cfg.compile else loss
        self.device = device
        self.grad_clip = cfg.grad_clip
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(cfg.lr_schedule, cfg.steps))

    def __call__(self, triples: torch.Tensor) -> dict[str, torch.Tensor]:
        self.model.train()
        if self.amp_dtype is None:
            loss, parts = self.loss(triples)
        else:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                loss, parts = self.loss(triples)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return parts


def _distributed_setup(device_name: str) -> tuple[int, int, Optional[torch.device]]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on GPU, gloo on CPU) and
    return (rank, world size, this process's device); else (0, 1, None)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _broadcast(value: Any, world: int) -> Any:
    """Rank 0's value on every rank."""
    if world <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _mean_over_processes(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """Each process's loss is over its share of the batch: the global figure is their mean."""
    if world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)  # NCCL: on the GPU
    dist.all_reduce(t)
    return dict(zip(values, (t / world).tolist()))


def _drop_stray_run_dir(own: Path, used: Path) -> None:
    """Under torchrun every process's Hydra makes a run folder; ranks > 0 use rank 0's and
    remove their own when it holds nothing but Hydra's files."""
    import shutil

    if own.resolve() != used.resolve() and own.is_dir() and {p.name for p in own.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(own, ignore_errors=True)


def run_training(cfg: Config, run_dir: Path | str, progress: bool = True,
                 overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train (or resume) a DSAE; returns the metrics also written to ``<run>/metrics.json``.

    ``overrides``: the command line's ``key=value`` overrides (what the user set explicitly); a
    resumed run refuses those that would change its settings (None: every setting of ``cfg``).

    Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel: every process
    draws the same global batch of ``train.batch_size`` triples and trains on its 1/N share, so
    the gradient is the single-process one; rank 0 alone logs, checkpoints and evaluates.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    rank, world, dist_device = _distributed_setup(cfg.device)
    lead = rank == 0
    own_dir = Path(run_dir)
    run_dir = Path(_broadcast(str(own_dir), world))
    if not lead:
        _drop_stray_run_dir(own_dir, run_dir)
    given = to_dict(cfg)
    resume_from = find_resume_checkpoint(cfg.train.resume, run_dir, given) if lead else None
    resume_from = _broadcast(resume_from, world)
    state = None
    if resume_from is not None:
        state = load_checkpoint(resume_from)
        cfg = from_dict(resumed_config(state["config"], given, overrides))
        run_dir = resume_from.parent.parent
        if lead:
            print(f"[dsae] resuming {run_dir} from step {state['step']} of {cfg.train.steps}")
    _check(cfg)
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    device = dist_device or resolve_device(cfg.device)
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_CONFIG).write_text(json.dumps(to_dict(cfg), indent=2))

    seed_everything(cfg.seed)
    dataset = ensure_dataset(cfg) if lead else None
    _barrier(world)
    if not lead:
        dataset = load_dataset(dataset_dir(cfg), verify=False, episodes=cfg.data.episodes)
    train_eps, val_eps = dataset.split(cfg.data.val_fraction)
    model = DeepSpatialAutoencoder(cfg.model, dataset.image_size).to(device)
    if state is None:  # a resumed run loads its background with the weights
        model.set_background(torch.from_numpy(background_frames(dataset, train_eps, cfg.seed)).to(device))
    trainer = TrainStep(model, cfg.train, device, distributed=world > 1)
    # train.amp=auto resolves by the hardware: the precision a run trained in is part of its result.
    hardware = {"precision": trainer.precision, "device": str(device), "device_name": device_name(device)}
    if lead and state is not None and state.get("precision", trainer.precision) != trainer.precision:
        print(f"[dsae] note: the run trained in {state['precision']} on {state.get('device_name')}, it goes on in "
              f"{trainer.precision} on {hardware['device_name']} (train.amp={cfg.train.amp})")
    optimizer, scheduler = trainer.optimizer, trainer.scheduler
    # Every process draws the same global batch (same seed) and trains on its share.
    sampler = TripleSampler(dataset.frames, train_eps, device, seed=cfg.seed, on_device=cfg.train.data_on_device)
    share = slice(rank * cfg.train.batch_size // world, (rank + 1) * cfg.train.batch_size // world)
    step, elapsed, images_seen, train_time, wandb_id = 0, 0.0, 0, 0.0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        sampler.generator.set_state(state["rng"]["sampler"])
        step, elapsed = state["step"], state["elapsed_s"]
        images_seen, train_time = state["images_seen"], state["train_time_s"]
        wandb_id = state.get("wandb_id")

    logger = Logger(cfg.logger if lead else LoggerConfig(backend="none", mode="disabled"),
                    run_dir, to_dict(cfg), name=run_dir.name, resume_id=wandb_id, write_files=lead,
                    resume_step=step if state is not None else None)
    val_frames = dataset.frames[val_eps].reshape(-1, *dataset.frames.shape[2:])
    rng = np.random.default_rng(cfg.seed)
    val_subset = val_frames[np.sort(rng.choice(len(val_frames), min(1024, len(val_frames)), replace=False))]
    show = torch.from_numpy(val_frames[np.linspace(0, len(val_frames) - 1, 8).astype(int)]).to(device)

    def checkpoint() -> Optional[Path]:
        if not lead:
            return None
        return save_checkpoint(run_dir / CHECKPOINT, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "config": to_dict(cfg),
            "rng": {**rng_state(), "sampler": sampler.generator.get_state()},
            "elapsed_s": elapsed + time.perf_counter() - started, "images_seen": images_seen,
            "train_time_s": train_time, "wandb_id": logger.run_id,
            "image_size": dataset.image_size, "dataset": str(dataset.root.resolve()), "objects": dataset.objects,
            **hardware,
        })

    def log_images() -> None:
        model.eval()
        with torch.no_grad():
            kp, recon = model(show)
        logger.image("keypoints", grid_image(overlay_keypoints(show.cpu(), kp), nrow=8), step)
        logger.image("reconstruction", reconstruction_panel(gray_target(show, cfg.model.recon_size), recon, 96), step)

    totals = {"loss": 0.0, "recon_mse": 0.0, "slow": 0.0}
    count = 0
    bar = tqdm(total=cfg.train.steps, initial=step, desc="train", unit="step", disable=not (progress and lead),
               dynamic_ncols=True)
    try:
        while step < cfg.train.steps:
            t0 = time.perf_counter()
            batch = sampler.sample(cfg.train.batch_size)[share]
            parts = trainer(batch)
            if not torch.isfinite(parts["loss"]):
                raise FloatingPointError(f"loss became {float(parts['loss'])} at step {step + 1}; lower train.lr")
            step += 1
            images_seen += cfg.train.batch_size * 3
            for k in totals:
                totals[k] += float(parts[k])
            count += 1
            train_time += time.perf_counter() - t0
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                totals = _mean_over_processes(totals, world, device)
                scalars = {f"train/{k}": v / count for k, v in totals.items()}
                scalars["train/images_per_s"] = images_seen / max(train_time, 1e-9)
                scalars["train/lr"] = scheduler.get_last_lr()[0]
                scalars["train/temperature"] = model.encoder.softmax.temperature.item()
                logger.log(scalars, step)
                bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", img_s=f"{scalars['train/images_per_s']:.0f}")
                totals = dict.fromkeys(totals, 0.0)
                count = 0
            if lead and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
                logger.log({"val/recon_mse": reconstruction_mse(model, val_subset, device)}, step)
            if lead and (step % cfg.train.image_every == 0 or step == cfg.train.steps):
                log_images()
            if step % cfg.train.checkpoint_every == 0 or step == cfg.train.steps:
                checkpoint()
    finally:
        bar.close()

    ckpt_path = run_dir / CHECKPOINT
    if lead and not ckpt_path.exists():  # steps was already reached by the checkpoint we resumed from
        checkpoint()
    if not lead:
        logger.close()
        _barrier(world)
        return {}
    print("[dsae] evaluating: linear probe on held-out episodes")
    metrics = {
        **probe_dataset(model.encoder, dataset, train_eps, val_eps, device, cfg.train.probe_frames, cfg.seed),
        "recon_mse": reconstruction_mse(model, val_frames, device),
        "steps": step,
        "train_images_per_s": images_seen / max(train_time, 1e-9),
        "wall_s": elapsed + time.perf_counter() - started,
        "checkpoint": str(ckpt_path),
        "dataset": str(dataset.root),
        "env": cfg.env.name,
        "image_size": dataset.image_size,
        "num_keypoints": cfg.model.num_keypoints,
        **hardware,
        "held_out_episodes": int(len(val_eps)),
        "processes": world,
    }
    logger.summary({k: v for k, v in metrics.items() if not isinstance(v, dict)})
    logger.log({f"probe/r2_{o}": v for o, v in metrics["probe_r2"].items() if v is not None}, step)
    logger.close()
    (run_dir / METRICS).write_text(json.dumps(metrics, indent=2))
    _barrier(world)
    return metrics
