"""Train a Deep Spatial Autoencoder: `python scripts/train.py env=reacher`.

Collects the dataset first when it is missing, then trains, evaluates the linear probe on
held-out episodes and writes metrics.json into the run folder (printed at the end).
Several processes: `torchrun --nproc_per_node=N scripts/train.py ...` (DistributedDataParallel).
"""

import json

import hydra
from hydra.core.hydra_config import HydraConfig

from dsae.config import register, to_config
from dsae.errors import report_user_errors

register()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
@report_user_errors
def main(cfg) -> None:
    from dsae.train import run_training

    hydra_cfg = HydraConfig.get()
    metrics = run_training(to_config(cfg), hydra_cfg.runtime.output_dir, overrides=hydra_cfg.overrides.task)
    if metrics:  # under torchrun, only rank 0 reports
        print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
