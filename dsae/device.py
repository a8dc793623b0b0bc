"""Device selection shared by training, evaluation and the encoder API."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dsae.errors import ConfigError


def resolve_device(name: Optional[str | torch.device] = "auto") -> torch.device:
    """"auto" or None -> cuda when available, else cpu; anything else is checked and passed to torch."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"device={name!r} is not a torch device (try auto, cpu or cuda)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA device is available; use device=auto or device=cpu")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def device_name(device: torch.device) -> str:
    """What the device is, in words: the GPU's name, or the CPU's model name (what a speed or a
    bf16 result depends on, recorded beside it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"
