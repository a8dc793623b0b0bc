"""Train a SAC agent: `python scripts/train_rl.py env=reacher obs=keypoints encoder=PATH`.

obs=state (the env's own state vector), obs=pixels (vision learned from scratch) or
obs=keypoints (the pretrained DSAE encoder, frozen; rl.finetune_encoder=true trains it too).
Writes returns.csv, checkpoints/agent.pt and metrics.json into the run folder.
"""

import json

import hydra
from hydra.core.hydra_config import HydraConfig

from dsae.config import to_config
from dsae.errors import report_user_errors
from dsae.rl import RLRunConfig, register

register()


@hydra.main(config_path="../configs", config_name="train_rl", version_base=None)
@report_user_errors
def main(cfg) -> None:
    from dsae.rl import run_rl

    hydra_cfg = HydraConfig.get()
    metrics = run_rl(to_config(cfg, RLRunConfig), hydra_cfg.runtime.output_dir, overrides=hydra_cfg.overrides.task)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("curve", "eval_returns")}, indent=2))


if __name__ == "__main__":
    main()
