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
    RUN_CONFIG,
    find_resume_checkpoint,
    load_checkpoint,
    resumed_config,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from dsae import distributed
from dsae.collect import collect, default_dataset_dir
from dsae.config import Config, LoggerConfig, TrainConfig, from_dict, to_dict
from dsae.data import Dataset, TripleSampler, load_dataset, read_manifest
from dsae.device import cpu_has_native_bf16, device_name, resolve_device
from dsae.draw import grid_image, overlay_keypoints, reconstruction_panel
from dsae.errors import ConfigError
from dsae.evaluate import evaluate_model, reconstruction_mse
from dsae.logger import Logger
from dsae.sources import default_import_dir, import_recording
from dsae.model import DeepSpatialAutoencoder, recon_target


def dataset_dir(cfg: Config) -> Path:
    if cfg.data.dir:
        return Path(cfg.data.dir)
    if cfg.data.source == "collect":
        return default_dataset_dir(cfg.env, cfg.data)
    return default_import_dir(cfg.data, cfg.env.image_size)


def ensure_dataset(cfg: Config) -> Dataset:
    """Load exactly ``data.episodes`` episodes (None: all) of the configured dataset, collecting
    (or extending) it, or importing the recording, first when needed."""
    root = dataset_dir(cfg)
    if cfg.data.source != "collect":
        import_recording(cfg.data, cfg.env.image_size, root)
        return load_dataset(root, episodes=cfg.data.episodes, in_memory=cfg.data.in_memory)
    manifest = read_manifest(root)
    if manifest is None or not manifest.get("complete") or manifest.get("episodes", 0) < cfg.data.episodes:
        print(f"[dsae] collecting {cfg.data.episodes} {cfg.env.name} episodes into {root}")
        collect(cfg.env, cfg.data, root)
    return load_dataset(root, episodes=cfg.data.episodes, in_memory=cfg.data.in_memory)


def background_frames(dataset: Dataset, episodes: np.ndarray, seed: int, count: int = 1000) -> np.ndarray:
    """Up to ``count`` training frames spread over the episodes, uint8 (n, H, W, 3): what the
    scene's static image (their per-pixel median) is estimated from."""
    rows = dataset.frame_indices(episodes)
    pick = np.random.default_rng(seed).choice(len(rows), min(count, len(rows)), replace=False)
    return dataset.frames[rows[np.sort(pick)]]


def _lr_lambda(schedule: str, total: int):
    """``train.lr_schedule`` as a LambdaLR factor: constant, or cosine from 1 down to 0.05."""
    if schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


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


class Trainer:
    """One DSAE run (or this process's part of a DDP run), step by step: :meth:`fit` trains to
    ``train.steps`` with logging, held-out error, images and checkpoints; :meth:`finish` probes
    the keypoints and writes ``metrics.json``."""

    def __init__(self, cfg: Config, run_dir: Path, state: Optional[dict[str, Any]], rank: int, world: int,
                 device: torch.device):
        self.started = time.perf_counter()
        self.cfg, self.run_dir, self.world, self.device = cfg, run_dir, world, device
        self.lead = rank == 0
        if self.lead:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / RUN_CONFIG).write_text(json.dumps(to_dict(cfg), indent=2))
        seed_everything(cfg.seed)
        self.dataset = ensure_dataset(cfg) if self.lead else None
        distributed.barrier(world)
        if not self.lead:
            self.dataset = load_dataset(dataset_dir(cfg), verify=False, episodes=cfg.data.episodes,
                                        in_memory=cfg.data.in_memory)
        self.train_eps, self.val_eps = self.dataset.split(cfg.data.val_fraction)
        self.model = DeepSpatialAutoencoder(cfg.model, self.dataset.image_size).to(device)
        if state is None:  # a resumed run loads its background with the weights
            frames = background_frames(self.dataset, self.train_eps, cfg.seed)
            self.model.set_background(torch.from_numpy(frames).to(device))
        self.step_fn = TrainStep(self.model, cfg.train, device, distributed=distributed.active())
        # train.amp=auto resolves by the hardware: the precision a run trained in is part of its result.
        self.hardware = {"precision": self.step_fn.precision, "device": str(device), "device_name": device_name(device),
                         "distributed": distributed.describe(self.model)}
        # Every process draws the same global batch (same seed) and trains on its share.
        self.sampler = TripleSampler(self.dataset, self.train_eps, device, seed=cfg.seed,
                                     on_device=cfg.train.data_on_device)
        self.share = slice(rank * cfg.train.batch_size // world, (rank + 1) * cfg.train.batch_size // world)
        self.step, self.elapsed, self.images_seen, self.train_time, wandb_id = 0, 0.0, 0, 0.0, None
        if state is not None:
            wandb_id = self._restore(state)
        self.logger = Logger(cfg.logger if self.lead else LoggerConfig(backend="none", mode="disabled"),
                             run_dir, to_dict(cfg), name=run_dir.name, resume_id=wandb_id, write_files=self.lead,
                             resume_step=self.step if state is not None else None)
        self.val_rows = self.dataset.frame_indices(self.val_eps)  # read in batches: frames may be mapped
        pick = np.random.default_rng(cfg.seed).choice(len(self.val_rows), min(1024, len(self.val_rows)), replace=False)
        self.val_subset = self.dataset.frames[self.val_rows[np.sort(pick)]]
        shown = np.linspace(0, len(self.val_rows) - 1, 8).astype(int)
        self.shown = torch.from_numpy(self.dataset.frames[self.val_rows[shown]]).to(device)

    def _restore(self, state: dict[str, Any]) -> Optional[str]:
        if self.lead and state.get("precision", self.step_fn.precision) != self.step_fn.precision:
            print(f"[dsae] note: the run trained in {state['precision']} on {state.get('device_name')}, it goes on "
                  f"in {self.step_fn.precision} on {self.hardware['device_name']} (train.amp={self.cfg.train.amp})")
        self.model.load_state_dict(state["model"])
        self.step_fn.optimizer.load_state_dict(state["optimizer"])
        self.step_fn.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.sampler.generator.set_state(state["rng"]["sampler"])
        self.step, self.elapsed = state["step"], state["elapsed_s"]
        self.images_seen, self.train_time = state["images_seen"], state["train_time_s"]
        return state.get("wandb_id")

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def checkpoint(self) -> None:
        """The checkpoint (rank 0 only): weights, optimiser, schedule, RNGs, progress and provenance."""
        if not self.lead:
            return
        opt, dataset = self.step_fn, self.dataset
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "model": self.model.state_dict(), "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "step": self.step, "config": to_dict(self.cfg),
            "rng": {**rng_state(), "sampler": self.sampler.generator.get_state()},
            "elapsed_s": self.wall(), "images_seen": self.images_seen, "train_time_s": self.train_time,
            "wandb_id": self.logger.run_id, "image_size": dataset.image_size,
            "dataset": str(dataset.root.resolve()), "objects": dataset.objects, **self.hardware,
        })

    def log_images(self) -> None:
        self.model.eval()
        with torch.no_grad():
            kp, recon = self.model(self.shown)
        self.logger.image("keypoints", grid_image(overlay_keypoints(self.shown.cpu(), kp), nrow=8), self.step)
        target = recon_target(self.shown, self.cfg.model)
        self.logger.image("reconstruction", reconstruction_panel(target, recon, 96), self.step)

    def train_step(self) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        self.model.set_progress(self.step / max(self.cfg.train.steps - 1, 1))
        parts = self.step_fn(self.sampler.sample(self.cfg.train.batch_size)[self.share])
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(f"loss became {float(parts['loss'])} at step {self.step + 1}; lower train.lr")
        self.step += 1
        self.images_seen += self.cfg.train.batch_size * 3
        self.train_time += time.perf_counter() - t0
        return parts

    def log_scalars(self, totals: dict[str, float], count: int) -> dict[str, float]:
        totals = distributed.mean_over_processes(totals, self.world, self.device)
        scalars = {f"train/{k}": v / count for k, v in totals.items()}
        scalars["train/images_per_s"] = self.images_seen / max(self.train_time, 1e-9)
        scalars["train/lr"] = self.step_fn.scheduler.get_last_lr()[0]
        scalars["train/temperature"] = self.model.encoder.softmax.temperature.item()
        self.logger.log(scalars, self.step)
        return scalars

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.cfg.train.steps

    def fit(self, progress: bool) -> None:
        from tqdm import tqdm

        t = self.cfg.train
        totals, count = {}, 0  # the loss's parts (model.loss names them), summed since the last log
        with tqdm(total=t.steps, initial=self.step, desc="train", unit="step", disable=not (progress and self.lead),
                  dynamic_ncols=True) as bar:
            while self.step < t.steps:
                parts = self.train_step()
                totals, count = {k: totals.get(k, 0.0) + float(v) for k, v in parts.items()}, count + 1
                bar.update(1)
                if self._due(t.log_every):
                    scalars = self.log_scalars(totals, count)
                    bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", img_s=f"{scalars['train/images_per_s']:.0f}")
                    totals, count = {}, 0
                if self.lead and self._due(t.eval_every):
                    self.logger.log({"val/recon_mse": reconstruction_mse(self.model, self.val_subset, self.device)},
                                    self.step)
                if self.lead and self._due(t.image_every):
                    self.log_images()
                if self._due(t.checkpoint_every):
                    self.checkpoint()
        if not (self.run_dir / CHECKPOINT).exists():  # steps was already reached by the checkpoint resumed from
            self.checkpoint()

    def finish(self) -> dict[str, Any]:
        """Rank 0: probe on held-out episodes and write ``metrics.json``; other ranks: {}."""
        if not self.lead:
            self.logger.close()
            distributed.barrier(self.world)
            return {}
        print("[dsae] evaluating: linear probe on held-out episodes")
        cfg, dataset = self.cfg, self.dataset
        metrics = {
            **evaluate_model(self.model, dataset, self.train_eps, self.val_eps, self.device, cfg.train.probe_frames,
                             cfg.seed),
            "steps": self.step, "train_images_per_s": self.images_seen / max(self.train_time, 1e-9),
            "wall_s": self.wall(), "checkpoint": str(self.run_dir / CHECKPOINT), "dataset": str(dataset.root),
            "env": cfg.env.name, "image_size": dataset.image_size, "num_keypoints": cfg.model.num_keypoints,
            **self.hardware, "held_out_episodes": int(len(self.val_eps)), "processes": self.world,
        }
        self.logger.log({f"probe/r2_{o}": v for o, v in metrics["probe_r2"].items() if v is not None}, self.step)
        self.logger.finish(metrics)
        distributed.barrier(self.world)
        return metrics


def _resume_state(cfg: Config, run_dir: Path, overrides: Optional[Sequence[str]], rank: int, world: int
                  ) -> tuple[Config, Path, Optional[dict[str, Any]]]:
    """(settings, run folder, checkpoint) of a resumed run, or ``(cfg, run_dir, None)`` for a fresh
    one; rank 0 looks the checkpoint up and tells the others."""
    given = to_dict(cfg)
    resume_from = find_resume_checkpoint(cfg.train.resume, run_dir, given) if rank == 0 else None
    resume_from = distributed.broadcast(resume_from, world)
    if resume_from is None:
        return cfg, run_dir, None
    state = load_checkpoint(resume_from)
    return from_dict(resumed_config(state["config"], given, overrides)), resume_from.parent.parent, state


def run_training(cfg: Config, run_dir: Path | str, progress: bool = True,
                 overrides: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Train (or resume) a DSAE; returns the metrics also written to ``<run>/metrics.json``.

    ``overrides``: the command line's ``key=value`` overrides (what the user set explicitly); a
    resumed run refuses those that would change its settings (None: every setting of ``cfg``).

    Under ``torchrun --nproc_per_node=N`` it trains with DistributedDataParallel: every process
    draws the same global batch of ``train.batch_size`` triples and trains on its 1/N share, so
    the gradient is the single-process one; rank 0 alone logs, checkpoints and evaluates.
    """
    rank, world, dist_device = distributed.setup(cfg.device)
    try:
        own_dir = Path(run_dir)
        run_dir = Path(distributed.broadcast(str(own_dir), world))
        if rank > 0:
            distributed.drop_stray_run_dir(own_dir, run_dir)
        cfg, run_dir, state = _resume_state(cfg, run_dir, overrides, rank, world)
        if state is not None and rank == 0:
            print(f"[dsae] resuming {run_dir} from step {state['step']} of {cfg.train.steps}")
        if cfg.train.batch_size % world:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
        trainer = Trainer(cfg, run_dir, state, rank, world, dist_device or resolve_device(cfg.device))
        trainer.fit(progress)
        return trainer.finish()
    finally:
        trainer = None  # its DistributedDataParallel holds the process group: let go of it first (see teardown)
        distributed.teardown()
