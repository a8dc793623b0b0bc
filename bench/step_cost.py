"""Benchmark: what a model setting costs a training step, against the default model, on this machine.

    python bench/step_cost.py model.equivariance_weight=0.01 [--blocks 6] [--steps 5]
        [--out bench/results/step_cost.json]

Times the loss, backward pass and Adam step of the default model and of the default with the
given ``model.*`` overrides, on one batch of random uint8 frame triples of the default size (the
default ``train.batch_size`` triples of 64 px frames), alternating between the two in blocks of
``--steps`` steps so that both see the same load on a shared machine; the first block of each
is a warm-up. Writes images/s of both (3 images a triple) and their ratio as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsae.config import ModelConfig, TrainConfig  # noqa: E402
from dsae.device import device_name  # noqa: E402
from dsae.model import DeepSpatialAutoencoder  # noqa: E402


def model_settings(overrides: list[str]) -> ModelConfig:
    """The model that Hydra composes from the default config with these overrides (keys checked)."""
    from hydra import compose, initialize_config_dir

    from dsae.config import register, to_config

    register()
    with initialize_config_dir(str(REPO / "configs"), version_base=None):
        return to_config(compose("config", [*overrides, "logger=none"])).model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="+", help="model.FIELD=VALUE settings to time against the default")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks of each (after one warm-up block)")
    parser.add_argument("--steps", type=int, default=5, help="steps a block")
    parser.add_argument("--out", default="bench/results/step_cost.json")
    args = parser.parse_args()

    torch.manual_seed(0)
    batch, size = TrainConfig().batch_size, 64
    triples = torch.randint(0, 256, (batch, 3, size, size, 3), dtype=torch.uint8)
    settings = {"default": model_settings([]), "changed": model_settings(args.overrides)}
    steps = {}
    for name, cfg in settings.items():
        model = DeepSpatialAutoencoder(cfg, size)
        steps[name] = (model, torch.optim.Adam(model.parameters(), lr=TrainConfig().lr))
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for block in range(args.blocks + 1):
        for name, (model, optimizer) in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                loss, _ = model.loss(triples)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if block:  # the first block warms up
                seconds[name].append(time.perf_counter() - start)
    rate = {name: 3 * batch * args.steps * len(s) / sum(s) for name, s in seconds.items()}
    result = {"overrides": args.overrides, "images_per_s": rate, "ratio": rate["changed"] / rate["default"],
              "device_name": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "blocks": args.blocks, "steps": args.steps}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"default {rate['default']:.1f} images/s, {' '.join(args.overrides)} {rate['changed']:.1f} images/s: "
          f"{result['ratio']:.2f}x; wrote {out}")


if __name__ == "__main__":
    main()
