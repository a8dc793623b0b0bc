"""Teach a keypoint policy with a state expert:
`python scripts/imitate.py expert=RUN encoder=RUN`.

expert: a run of `scripts/train_rl.py obs=state env=<scene>` (it sees the true state and labels
every step); encoder: a run of `scripts/train.py env=<scene>` (the student sees its keypoints and
the robot's joints). DAgger: the student acts more each round, the expert labels what it sees.
imitation.finetune_encoder=true trains the encoder through the policy loss too.
Writes checkpoints/agent.pt (film it: scripts/visualize.py policy=RUN) and metrics.json.
"""

import json

import hydra
from hydra.core.hydra_config import HydraConfig

from dsae.config import to_config
from dsae.errors import report_user_errors
from dsae.rl import ImitationRunConfig, register

register()


@hydra.main(config_path="../configs", config_name="imitate", version_base=None)
@report_user_errors
def main(cfg) -> None:
    from dsae.rl import run_imitation

    hydra_cfg = HydraConfig.get()
    metrics = run_imitation(to_config(cfg, ImitationRunConfig), hydra_cfg.runtime.output_dir,
                            overrides=hydra_cfg.overrides.task)
    print(json.dumps({k: v for k, v in metrics.items() if k not in ("curve", "eval_returns")}, indent=2))


if __name__ == "__main__":
    main()
