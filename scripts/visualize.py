"""Film a trained model: `python scripts/visualize.py checkpoint=PATH env=reacher episodes=3`,
or over a recording: `python scripts/visualize.py checkpoint=PATH video=clip.mp4`.

Rolls out fresh episodes with random actions (or a trained agent's: policy=PATH, a run of
scripts/train_rl.py; checkpoint then defaults to the encoder it sees) and writes, into this command's run folder,
an MP4 per episode (keypoints with trails, raw and Kalman-filtered, on the camera frame;
the reconstruction; the attention maps), a contact sheet PNG per episode, a temperature
panel and tracking.json; all are logged to wandb (offline by default) as well.
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
    from pathlib import Path

    from dsae.config import to_dict
    from dsae.logger import Logger
    from dsae.visualize import require_source, visualize

    config = to_config(cfg)
    require_source(config.checkpoint, config.policy)  # before any run folder or logger is made
    overrides = HydraConfig.get().overrides.task
    env_name = config.env.name if any(o.startswith("env=") or o.startswith("env.name=") for o in overrides) else None
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    logger = Logger(config.logger, run_dir, to_dict(config), name=f"visualize-{run_dir.name}")
    try:
        summary = visualize(config.checkpoint, run_dir, config.vis, config.episodes, config.device,
                            env_name=env_name, logger=logger, policy=config.policy, video=config.video)
    finally:
        logger.close()
    print(json.dumps(summary["objects"], indent=2))
    print(f"videos and sheets in {run_dir}")


if __name__ == "__main__":
    main()
