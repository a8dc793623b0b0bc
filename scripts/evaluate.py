"""Score a checkpoint: `python scripts/evaluate.py checkpoint=PATH [dataset=DIR]` (a .pt file or a run folder).

Runs the linear probe on the held-out episodes of the checkpoint's dataset (or of the dataset
folder DIR, e.g. one collected another way in the same scene) and writes metrics.json into this
command's run folder (printed at the end).
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
    from dsae.evaluate import evaluate_checkpoint

    config = to_config(cfg)
    metrics = evaluate_checkpoint(config.checkpoint, HydraConfig.get().runtime.output_dir, device=config.device,
                                  dataset_dir=config.dataset)
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
