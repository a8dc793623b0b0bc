"""Device selection shared by training, evaluation and the encoder API."""

from __future__ import annotations

from typing import Optional

import torch


def resolve_device(name: Optional[str | torch.device] = "auto") -> torch.device:
    """"auto" or None -> cuda when available, else cpu; anything else is checked and passed to torch."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device={name!r} is not a torch device (try auto, cpu or cuda)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but no CUDA device is available; use device=auto or device=cpu")
    return device
