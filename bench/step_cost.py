"""Benchmark: what a model setting, or a change of the code, costs a training step, on this machine.

    python bench/step_cost.py model.equivariance_weight=0.01 [--blocks 6] [--steps 5] [--amp none]
        [--out bench/results/step_cost.json]
    python bench/step_cost.py --revision REV [model.FIELD=VALUE ...] [--amp auto] [--out ...]

Times the framework's training step (``dsae.train.TrainStep``: loss, backward pass and Adam step,
``--amp`` as ``train.amp``: none, float32, by default; auto, bf16 where training would use it) on
one batch of random uint8 frame triples of the default size (the default ``train.batch_size``
triples of 64 px frames), in blocks of ``--steps`` steps that alternate between the two sides so
that both see the same load on a shared machine; the first block of each is a warm-up. The
sides: the default model (``default``) and the default with the given ``model.*`` overrides
(``changed``); or, with ``--revision``, the same settings (the default's, with any overrides) at
git revision REV of this repository (``default``, run from a ``git archive`` of it) and in the
working tree (``changed``), each in a process of its own. Writes images/s of both (3 images a
triple) and their ratio, changed over default, as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def model_settings(tree: Path, overrides: list[str]):
    """The model that Hydra composes from ``tree``'s default config with these overrides (keys checked)."""
    from hydra import compose, initialize_config_dir

    from dsae.config import register, to_config

    register()
    with initialize_config_dir(str(tree / "configs"), version_base=None):
        return to_config(compose("config", [*overrides, "logger=none"])).model


class Side:
    """One side's model and training step, in this process, with ``tree``'s ``dsae`` imported."""

    def __init__(self, tree: Path, overrides: list[str], amp: str):
        sys.path.insert(0, str(tree))
        import torch

        from dsae.config import TrainConfig
        from dsae.model import DeepSpatialAutoencoder
        from dsae.train import TrainStep

        import dsae

        if not Path(dsae.__file__).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"imported dsae from {dsae.__file__}, not from {tree}")
        torch.manual_seed(0)
        train = TrainConfig(amp=amp)
        self.batch, size = train.batch_size, 64
        self.triples = torch.randint(0, 256, (self.batch, 3, size, size, 3), dtype=torch.uint8)
        self.step = TrainStep(DeepSpatialAutoencoder(model_settings(tree, overrides), size), train, torch.device("cpu"))

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.step(self.triples)
        return time.perf_counter() - start


class Worker:
    """A :class:`Side` in a subprocess (``--worker TREE``), driven one block at a time over its pipes."""

    def __init__(self, tree: Path, overrides: list[str], amp: str):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(tree), "--amp", amp, *overrides],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tree)
        self.info = json.loads(self._line())

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the step-timing worker in {self.proc.args[3]} stopped (its error is above)")
        return line

    def block(self, steps: int) -> float:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def serve(tree: Path, overrides: list[str], amp: str) -> None:
    """The worker's loop: a line with a step count in, that block's seconds out."""
    side = Side(tree, overrides, amp)
    print(json.dumps({"precision": side.step.precision, "batch": side.batch}), flush=True)
    for line in sys.stdin:
        print(side.block(int(line)), flush=True)


def checkout(revision: str, into: Path) -> Path:
    """The files of ``revision`` (``git archive``) under ``into``."""
    archive = into / "tree.tar"
    done = subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), revision], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"--revision {revision}: git archive could not read it ({done.stderr.strip()}); "
                         "give a commit, branch or tag of this repository")
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="model.FIELD=VALUE settings (against the default; "
                                                     "with --revision, of both sides)")
    parser.add_argument("--revision", help="time the working tree against this git revision, same settings")
    parser.add_argument("--amp", default="none", choices=["none", "auto", "bf16"], help="as train.amp")
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks of each (after one warm-up block)")
    parser.add_argument("--steps", type=int, default=5, help="steps a block")
    parser.add_argument("--out", default="bench/results/step_cost.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return serve(args.worker, args.overrides, args.amp)
    if not args.overrides and not args.revision:
        parser.error("give model.FIELD=VALUE overrides to time against the default, or --revision REV")

    with tempfile.TemporaryDirectory() as tmp:
        if args.revision:
            default = Worker(checkout(args.revision, Path(tmp)), args.overrides, args.amp)
        else:
            default = Worker(REPO, [], args.amp)
        sides = {"default": default, "changed": Worker(REPO, args.overrides, args.amp)}
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for block in range(args.blocks + 1):
            for name, side in sides.items():
                elapsed = side.block(args.steps)
                if block:  # the first block warms up
                    seconds[name].append(elapsed)
        info = sides["changed"].info
        for side in sides.values():
            side.close()

    import torch

    sys.path.insert(0, str(REPO))
    from dsae.device import device_name

    rate = {name: 3 * info["batch"] * args.steps * len(s) / sum(s) for name, s in seconds.items()}
    result = {"overrides": args.overrides, "revision": args.revision, "images_per_s": rate,
              "ratio": rate["changed"] / rate["default"], "precision": info["precision"],
              "device_name": device_name(torch.device("cpu")), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "blocks": args.blocks, "steps": args.steps}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    against = f"revision {args.revision}" if args.revision else "default"
    print(f"{against} {rate['default']:.1f} images/s, {'working tree ' if args.revision else ''}"
          f"{' '.join(args.overrides)} {rate['changed']:.1f} images/s: {result['ratio']:.2f}x ({info['precision']}); "
          f"wrote {out}")


if __name__ == "__main__":
    main()
