"""DistributedDataParallel plumbing for ``scripts/train.py`` under ``torchrun``.

Every helper is a no-op in a single process (``world == 1``), so the training loop calls them
unconditionally. Under torchrun the process group is joined whatever the number of processes
(``--nproc_per_node=1`` too: the DistributedDataParallel path on one GPU). NCCL on GPUs, gloo
on CPU. Rank 0 alone collects, logs, checkpoints and evaluates; the others train on their
share of each global batch.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from dsae.device import resolve_device


def launched_by_torchrun() -> bool:
    """torchrun sets LOCAL_RANK and WORLD_SIZE for each process it starts; plain python sets neither."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def active() -> bool:
    """Whether this process has joined a process group (the training step then wraps DDP)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def setup(device_name: str) -> tuple[int, int, Optional[torch.device]]:
    """Under torchrun: join the process group and return (rank, world size, this process's
    device); else (0, 1, None)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not launched_by_torchrun():
        return 0, 1, None
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def teardown() -> None:
    """Leave the process group that ``setup`` joined, so that no process exits with the backend's
    threads still running (gloo then aborts one at exit: "terminate called without an active exception").

    Call it once the DistributedDataParallel wrappers are unreferenced: the group must be freed by
    its own Python object, which lets go of the GIL while gloo's destructor waits for its worker
    thread. Freed last by a DDP reducer, which keeps the GIL, it can deadlock with that thread
    when the thread needs the GIL to free a finished barrier's tensors (seen in one run of the
    two-process test: rank 1 hung in ``~ProcessGroupGloo`` under ``Reducer`` dealloc; PyTorch
    issue 56297). ``gc.collect()`` frees any wrapper left in a reference cycle while the group is
    still registered."""
    if launched_by_torchrun() and active():
        gc.collect()
        torch.distributed.destroy_process_group()


def describe(model: torch.nn.Module) -> Optional[dict[str, Any]]:
    """What a run trains with across processes (recorded in metrics.json): None in a single
    process; else the backend, the number of processes and of SyncBatchNorm layers."""
    if not active():
        return None
    import torch.distributed as dist

    sync = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    return {"backend": dist.get_backend(), "processes": dist.get_world_size(), "sync_batchnorm_layers": sync}


def broadcast(value: Any, world: int) -> Any:
    """Rank 0's value on every rank."""
    if world <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def mean_over_processes(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """Each process's loss is over its share of the batch: the global figure is their mean."""
    if world <= 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)  # NCCL: on the GPU
    dist.all_reduce(t)
    return dict(zip(values, (t / world).tolist()))


def drop_stray_run_dir(own: Path, used: Path) -> None:
    """Under torchrun every process's Hydra makes a run folder; ranks > 0 use rank 0's and
    remove their own when it holds nothing but Hydra's files."""
    if own.resolve() != used.resolve() and own.is_dir() and {p.name for p in own.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(own, ignore_errors=True)
