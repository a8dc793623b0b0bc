"""Benchmark: spatial soft-argmax, ours vs kornia vs a straightforward implementation.

    python bench/spatial_softmax.py [--out bench/results/spatial_softmax.json] [--repeats 20] [--compile]

Times forward and forward+backward at the paper's shape (B=64, C=16, 109x109) and at
(B=256, C=32, 21x21), on CPU and on CUDA when available, all three in the same run, and
reports ratios against kornia and the straightforward version (``--compile``: on CUDA, ours
through ``torch.compile`` too, as ``ours_compiled``), plus peak memory (CUDA:
torch.cuda.max_memory_allocated; CPU: the bytes of tensors saved for backward, measured
with saved-tensor hooks). On CUDA it also reports the achieved memory bandwidth: the least
traffic the operation needs (forward: read the features once; forward+backward: read them
in the forward and again in the backward, write their gradient) over its time, as a fraction
of the device's peak (NVML: memory clock x bus width) and of a large device-to-device copy
timed in the same run. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dsae.device import device_name
from dsae.spatial_softmax import spatial_soft_argmax

SHAPES = [(64, 16, 109, 109), (256, 32, 21, 21)]


def straightforward(features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax, then a product with a full (H, W) meshgrid: the textbook version."""
    b, c, h, w = features.shape
    attention = torch.softmax(features.reshape(b, c, h * w) / temperature, dim=-1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).to(features)  # (HW, 2)
    return attention @ grid


def kornia_impl():
    from kornia.geometry.subpix import spatial_soft_argmax2d

    return lambda f, t=1.0: spatial_soft_argmax2d(f, t)


def saved_bytes(fn, features: torch.Tensor) -> int:
    """Bytes of tensors autograd saves for backward (a device-independent peak-memory proxy)."""
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(features).sum()
    return total


def time_it(fn, features: torch.Tensor, backward: bool, repeats: int) -> float:
    device = features.device

    def once():
        if backward:
            features.grad = None
            fn(features).sum().backward()
        else:
            with torch.no_grad():
                fn(features)

    for _ in range(3):
        once()
    if device.type == "cuda":  # one synchronisation around all repeats: kernels this short hide behind it
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            once()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / repeats
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bandwidth(device: torch.device) -> float | None:
    """The GPU's peak memory bandwidth in bytes/s (NVML: twice the memory clock times the bus
    width), or None where NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        clock_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        return 2 * clock_mhz * 1e6 * pynvml.nvmlDeviceGetMemoryBusWidth(handle) / 8
    except Exception:  # no pynvml, or a driver that does not report these
        return None


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Bytes/s read and written by a device-to-device copy of ``nbytes``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * nbytes * repeats / (time.perf_counter() - t0)


def add_bandwidth(entry: dict, features: torch.Tensor, peak: float | None, copy: float) -> None:
    """Achieved bandwidth of one implementation's timings (the least traffic each pass needs)."""
    nbytes = features.numel() * features.element_size()
    fwd = nbytes / (entry["forward_ms"] / 1e3)
    fwd_bwd = 3 * nbytes / (entry["forward_backward_ms"] / 1e3)
    entry.update({"forward_bytes_per_s": fwd, "forward_backward_bytes_per_s": fwd_bwd,
                  "bandwidth_fraction_of_copy": fwd_bwd / copy,
                  "bandwidth_fraction_of_peak": fwd_bwd / peak if peak else None})


def run(device: torch.device, repeats: int, compile_: bool = False) -> list[dict]:
    impls = {"ours": spatial_soft_argmax, "kornia": kornia_impl(), "straightforward": straightforward}
    if compile_ and device.type == "cuda":
        # dynamic=False: a fresh graph per shape (torch 2.11's dynamo fails on the custom autograd
        # function when it recompiles with dynamic shapes; training shapes are static anyway)
        impls["ours_compiled"] = torch.compile(spatial_soft_argmax, dynamic=False)
    rows = []
    if device.type == "cuda":
        peak, copy = peak_bandwidth(device), copy_bandwidth(device)
        print(f"{device}: peak memory bandwidth {peak / 1e12 if peak else float('nan'):.2f} TB/s (NVML), "
              f"a 1 GiB copy moves {copy / 1e12:.2f} TB/s")
    for shape in SHAPES:
        features = torch.randn(*shape, device=device, requires_grad=True)
        ref = straightforward(features.detach())
        row = {"device": str(device), "shape": list(shape)}
        for name, fn in impls.items():
            err = (fn(features.detach()) - ref).abs().max().item()
            assert err < 1e-4, f"{name} disagrees with the reference by {err}"
            entry = {
                "forward_ms": 1e3 * time_it(fn, features, False, repeats),
                "forward_backward_ms": 1e3 * time_it(fn, features, True, repeats),
                "saved_for_backward_bytes": saved_bytes(fn, features),
            }
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                fn(features).sum().backward()
                torch.cuda.synchronize()
                entry["peak_memory_bytes"] = torch.cuda.max_memory_allocated() - base
                add_bandwidth(entry, features, peak, copy)
            row[name] = entry
        if device.type == "cuda":
            row["device_peak_bytes_per_s"], row["device_copy_bytes_per_s"] = peak, copy
        for other in ("kornia", "straightforward"):
            for key in ("forward_ms", "forward_backward_ms"):
                row[f"speedup_{key}_vs_{other}"] = row[other][key] / row["ours"][key]
        rows.append(row)
        print(f"{str(device):5s} {str(shape):22s} fwd+bwd ms: ours {row['ours']['forward_backward_ms']:.2f}  "
              f"kornia {row['kornia']['forward_backward_ms']:.2f}  straightforward "
              f"{row['straightforward']['forward_backward_ms']:.2f}  (x{row['speedup_forward_backward_ms_vs_kornia']:.2f} vs kornia)"
              + (f"  ours at {row['ours']['bandwidth_fraction_of_copy']:.0%} of copy bandwidth"
                 if device.type == "cuda" else "")
              + (f"  compiled {row['ours_compiled']['forward_backward_ms']:.2f}" if "ours_compiled" in row else ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/spatial_softmax.json")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="on CUDA, also time ours through torch.compile")
    parser.add_argument("--device", nargs="+", default=None, help="devices (default: cpu, and cuda when present)")
    args = parser.parse_args()
    import kornia

    names = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    devices = [torch.device(name) for name in names]
    results = {
        "torch": torch.__version__, "kornia": kornia.__version__, "threads": torch.get_num_threads(),
        "machine": device_name(torch.device("cpu")),
        "gpu": device_name(torch.device("cuda")) if torch.cuda.is_available() else None,
        "rows": [r for d in devices for r in run(d, args.repeats, args.compile)],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
