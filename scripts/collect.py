"""Collect a dataset of rollouts: `python scripts/collect.py env=reacher data.episodes=200`,
or import a recording: `python scripts/collect.py data=videos data.path=my_videos/`.

Runs the exploratory policy in data.workers parallel envs (or reads the recording once,
resizing its frames to env.image_size); run it again with the same settings to resume an
interrupted collection or import. Prints the dataset folder.
"""

import hydra

from dsae.config import register, to_config
from dsae.errors import report_user_errors

register()


@hydra.main(config_path="../configs", config_name="config", version_base=None)
@report_user_errors
def main(cfg) -> None:
    from dsae.collect import collect
    from dsae.sources import import_recording
    from dsae.train import dataset_dir

    config = to_config(cfg)
    if config.data.source == "collect":
        root = collect(config.env, config.data, dataset_dir(config))
    else:
        root = import_recording(config.data, config.env.image_size, dataset_dir(config))
    print(f"dataset ready: {root}")


if __name__ == "__main__":
    main()
