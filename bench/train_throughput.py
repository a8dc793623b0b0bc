"""Benchmark: training images/s of the framework's step against a straightforward reference loop.

    python bench/train_throughput.py [--models default finn2016] [--steps 20] [--warmup 3]
        [--episodes 24] [--device auto] [--out bench/results/train_throughput.json]

For each model preset (``model=default``, ``model=finn2016`` as Hydra composes them, with the
env settings they bring), on the same episode files:

- ``framework``: ``dsae.train.TrainStep`` with the preset's ``train`` settings (bf16 autocast
  where the device supports it, channels-last on CUDA) fed by ``TripleSampler``, which keeps
  the uint8 frames on the device and gathers each batch there; the same with
  ``train.amp=none`` (``framework_float32``: what the data path alone gives); and with
  ``train.compile=true`` (``--compile``, off by default: compiling takes minutes on a CPU);
- ``reference``: the loop one would write first: a ``torch.utils.data.Dataset`` that reads a
  triple from its episode file per item and returns float32 in [0, 1], a ``DataLoader``
  (shuffle, ``--workers`` processes, pinned memory on CUDA), the same model in float32,
  contiguous memory, no compile, Adam.

Images/s counts the 3 frames of each triple; timing covers ``--steps`` steps after ``--warmup``
(CUDA synchronised). Runs on the CPU always and on CUDA too when it is available. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def compose(model: str, episodes: int, data_dir: Path):
    from hydra import compose as hydra_compose, initialize_config_dir

    from dsae.config import register, to_config

    register()
    with initialize_config_dir(str(REPO / "configs"), version_base=None):
        cfg = to_config(hydra_compose("config", [f"model={model}", "logger=none"]))
    cfg.data.episodes = episodes
    cfg.data.dir = str(data_dir / f"{cfg.env.name}-{cfg.env.image_size}px-{episodes}ep")
    return cfg


class EpisodeTriples(torch.utils.data.Dataset):
    """The reference data path: (episode file, t) -> float32 (3, 3, H, W) frames t-1, t, t+1."""

    def __init__(self, files: list[Path], lengths: list[int]):
        self.files = files
        self.index = [(i, t) for i, n in enumerate(lengths) for t in range(1, n - 1)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> torch.Tensor:
        i, t = self.index[k]
        with np.load(self.files[i]) as data:
            frames = data["frames"][t - 1:t + 2]
        return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def framework_rate(cfg, dataset, device, steps: int, warmup: int, compile_: bool, amp: str | None = None) -> dict:
    from dataclasses import replace

    from dsae.data import TripleSampler
    from dsae.model import DeepSpatialAutoencoder
    from dsae.train import TrainStep

    torch.manual_seed(0)
    train_eps, _ = dataset.split(cfg.data.val_fraction)
    model = DeepSpatialAutoencoder(cfg.model, dataset.image_size).to(device)
    step = TrainStep(model, replace(cfg.train, compile=compile_, amp=amp or cfg.train.amp), device)
    sampler = TripleSampler(dataset, train_eps, device, seed=0, on_device=cfg.train.data_on_device)
    for _ in range(warmup):
        step(sampler.sample(cfg.train.batch_size))
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        parts = step(sampler.sample(cfg.train.batch_size))
    float(parts["loss"])
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"images_per_s": steps * cfg.train.batch_size * 3 / elapsed,
            "amp": str(step.amp_dtype).replace("torch.", "") if step.amp_dtype else "float32",
            "channels_last": step.channels_last, "compile": compile_, "data_on_device": sampler.on_device}


def reference_rate(cfg, dataset, device, steps: int, warmup: int, workers: int) -> dict:
    from dsae.data import episode_name
    from dsae.model import DeepSpatialAutoencoder

    torch.manual_seed(0)
    train_eps, _ = dataset.split(cfg.data.val_fraction)
    files = [dataset.root / episode_name(i) for i in train_eps]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"expected episode files like {missing[0]}")
    loader = torch.utils.data.DataLoader(
        EpisodeTriples(files, dataset.lengths[train_eps].tolist()), batch_size=cfg.train.batch_size, shuffle=True,
        num_workers=workers, pin_memory=device.type == "cuda", drop_last=True, persistent_workers=workers > 0)
    model = DeepSpatialAutoencoder(cfg.model, dataset.image_size).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    batches = iter(loader)

    def one() -> torch.Tensor:
        nonlocal batches
        try:
            triples = next(batches)
        except StopIteration:
            batches = iter(loader)
            triples = next(batches)
        model.train()
        loss, _ = model.loss(triples.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(warmup):
        one()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = one()
    float(loss)
    _sync(device)
    elapsed = time.perf_counter() - start
    return {"images_per_s": steps * cfg.train.batch_size * 3 / elapsed, "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["default", "finn2016"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=24, help="episodes collected for the benchmark")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader worker processes")
    parser.add_argument("--compile", action="store_true", help="also time the framework step with torch.compile")
    parser.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    parser.add_argument("--data", default=None, help="dataset folder (default: a temporary one)")
    parser.add_argument("--out", default="bench/results/train_throughput.json")
    args = parser.parse_args()

    from dsae.collect import collect
    from dsae.data import load_dataset
    from dsae.device import device_name

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    data_root = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="dsae-throughput-"))
    rows = []
    for name in args.models:
        cfg = compose(name, args.episodes, data_root)
        root = collect(cfg.env, cfg.data, Path(cfg.data.dir), progress=False)
        dataset = load_dataset(root)
        for dev in devices:
            device = torch.device(dev)
            ref = reference_rate(cfg, dataset, device, args.steps, args.warmup, args.workers)
            ours = framework_rate(cfg, dataset, device, args.steps, args.warmup, False)
            fp32 = framework_rate(cfg, dataset, device, args.steps, args.warmup, False, amp="none")
            row = {"model": name, "device": dev, "device_name": device_name(device), "image_size": dataset.image_size, "batch_triples": cfg.train.batch_size,
                   "reference": ref, "framework": ours, "speedup": ours["images_per_s"] / ref["images_per_s"],
                   "framework_float32": fp32, "speedup_float32": fp32["images_per_s"] / ref["images_per_s"]}
            if args.compile:
                compiled = framework_rate(cfg, dataset, device, args.steps, args.warmup, True)
                row["framework_compiled"] = compiled
                row["speedup_compiled"] = compiled["images_per_s"] / ref["images_per_s"]
            rows.append(row)
            print(f"{name:9s} {dev:5s} reference {ref['images_per_s']:8.1f} img/s | framework "
                  f"{ours['images_per_s']:8.1f} img/s ({ours['amp']}) | {row['speedup']:.2f}x | float32 step "
                  f"{row['speedup_float32']:.2f}x"
                  + (f" | compiled {row['speedup_compiled']:.2f}x" if args.compile else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
