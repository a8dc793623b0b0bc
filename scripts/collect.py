"""Collect a dataset of rollouts: `python scripts/collect.py env=reacher data.episodes=200`.

Runs the exploratory policy in data.workers parallel envs; run it again with the same
settings to resume an interrupted collection. Prints the dataset folder.
"""

import hydra

from dsae.config import register, to_config
from dsae.errors import report_user_errors

register()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
@report_user_errors
def main(cfg) -> None:
    from dsae.collect import collect
    from dsae.train import dataset_dir

    config = to_config(cfg)
    root = collect(config.env, config.data, dataset_dir(config))
    print(f"dataset ready: {root}")


if __name__ == "__main__":
    main()
