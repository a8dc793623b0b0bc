"""Run logging: wandb (offline by default: no account, no network) plus files in the run folder.

Scalars always go to ``<run>/scalars.jsonl`` and images to ``<run>/media/*.png``, whatever
the backend; with ``backend=wandb`` they go to a wandb run in ``<run>/wandb`` as well.
``logger.mode=online`` sends the wandb run to the server (needs ``wandb login``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

import imageio.v3 as iio
import numpy as np

from dsae.checkpoint import METRICS
from dsae.config import LoggerConfig


def drop_rows_after(path: Path, step: int) -> None:
    """Keep only what a step-indexed log file recorded up to ``step`` (the checkpoint a run
    resumes from), so the steps it runs again are not recorded twice. ``.jsonl``: lines with a
    ``step`` key; ``.csv``: a header row, then rows whose first column is the step."""
    path = Path(path)
    if not path.exists():
        return
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(rows[:1] + [row for row in rows[1:] if int(row[0]) <= step])
    else:
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if json.loads(line)["step"] <= step))


class Logger:
    """``resume_step``: the run resumes from a checkpoint at this step; what ``scalars.jsonl``
    holds after it is dropped (it is logged again) and the wandb run ``resume_id`` continues."""

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any],
                 name: Optional[str] = None, resume_id: Optional[str] = None, write_files: bool = True,
                 resume_step: Optional[int] = None):
        self.run_dir = Path(run_dir)
        self.media = self.run_dir / "media"
        self._scalars = None  # write_files=False (e.g. the non-leading processes of a DDP run): nothing
        if write_files:
            self.media.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                drop_rows_after(self.run_dir / "scalars.jsonl", resume_step)
            self._scalars = open(self.run_dir / "scalars.jsonl", "a")
        self.wandb_run = None
        if cfg.backend == "wandb" and cfg.mode != "disabled":
            import wandb

            self.wandb_run = wandb.init(
                project=cfg.project, entity=cfg.entity, mode=cfg.mode, dir=str(self.run_dir),
                config=config, name=name, tags=list(cfg.tags), id=resume_id,
                resume="allow" if resume_id else None, settings=wandb.Settings(console="off", silent=True),
            )

    @property
    def run_id(self) -> Optional[str]:
        return self.wandb_run.id if self.wandb_run is not None else None

    def log(self, scalars: dict[str, float], step: int) -> None:
        scalars = {k: float(v) for k, v in scalars.items()}
        if self._scalars is not None:
            self._scalars.write(json.dumps({"step": step, **scalars}) + "\n")
            self._scalars.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=step)

    def image(self, name: str, image: np.ndarray, step: int) -> Path:
        """Save a uint8 (H, W, 3) image as media/<name>_<step>.png and log it."""
        path = self.media / f"{name.replace('/', '_')}_{step:07d}.png"
        iio.imwrite(path, image)
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({name: wandb.Image(str(path))}, step=step)
        return path

    def video(self, name: str, path: Path, step: int) -> None:
        """Log an MP4 file as it is (wandb copies the file; no moviepy needed)."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({name: wandb.Video(str(path), format="mp4")}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            for k, v in values.items():
                self.wandb_run.summary[k] = v

    def finish(self, metrics: dict[str, Any]) -> None:
        """End a run: its scalar figures become the wandb summary, the log closes, and ``metrics``
        is written to ``<run>/metrics.json`` (last: a run folder that has it is finished)."""
        self.summary({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
        self.close()
        (self.run_dir / METRICS).write_text(json.dumps(metrics, indent=2))

    def close(self) -> None:
        if self._scalars is not None:
            self._scalars.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
