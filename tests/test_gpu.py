"""Every CUDA path, on a GPU: ``pytest -m gpu`` (skipped, and reported as skipped, without one).

bf16 autocast and channels-last on CUDA, the device-resident dataset and its gather, the
pinned-memory fallback, ``torch.compile``, ``device=auto`` picking CUDA, NCCL and SyncBatchNorm
under torchrun, kill -> resume of a CUDA run, the encoder and wrapper on CUDA, SAC on CUDA, and
the CUDA rows the benchmarks add by themselves.
"""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from tests.test_bench import run as run_bench
from tests.test_e2e import REPO, kill_after_first_checkpoint, script, tiny_overrides
from tests.test_rl_e2e import tiny_rl

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def cuda_args(args: list[str]) -> list[str]:
    return [("device=cuda" if a == "device=cpu" else a) for a in args]


def tiny_cuda_model(tmp_path, **model):
    from dsae.model import DeepSpatialAutoencoder

    cfg = tiny_config(tmp_path)
    cfg = replace(cfg, model=replace(cfg.model, **model), device="cuda")
    torch.manual_seed(0)
    return cfg, DeepSpatialAutoencoder(cfg.model, cfg.env.image_size).to(CUDA)


def test_auto_picks_cuda():
    from dsae.device import device_name, resolve_device

    assert resolve_device("auto").type == "cuda" and resolve_device(None).type == "cuda"
    assert device_name(CUDA) == torch.cuda.get_device_name(0)


def test_bf16_autocast_and_channels_last_train_on_cuda(tmp_path, tiny_dataset):
    from dsae.data import TripleSampler, load_dataset
    from dsae.train import TrainStep

    cfg, model = tiny_cuda_model(tmp_path, norm="batch")
    step = TrainStep(model, cfg.train, CUDA)
    assert step.amp_dtype == torch.bfloat16 and step.precision == "bf16", "train.amp=auto is bf16 on CUDA"
    assert step.channels_last
    conv = model.encoder.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    sampler = TripleSampler(load_dataset(tiny_dataset[1]), np.arange(6), CUDA, seed=0)
    losses = [float(step(sampler.sample(16))["loss"]) for _ in range(60)]
    assert all(np.isfinite(losses)) and np.mean(losses[-10:]) < np.mean(losses[:10])
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        keypoints, _ = model(sampler.sample(2)[:, 1])
    assert keypoints.dtype == torch.float32, "the soft-argmax computes in float32 under autocast"


def test_device_resident_and_pinned_samplers_draw_the_same_batches(tiny_dataset):
    from dsae.data import TripleSampler, load_dataset

    dataset = load_dataset(tiny_dataset[1])
    episodes = np.arange(6)
    resident = TripleSampler(dataset, episodes, CUDA, seed=3)  # None: fits, so on the device
    pinned = TripleSampler(dataset, episodes, CUDA, seed=3, on_device=False)
    cpu = TripleSampler(dataset, episodes, torch.device("cpu"), seed=3)
    assert resident.on_device and resident.frames.device.type == "cuda"
    assert not pinned.on_device and pinned.frames.is_pinned()
    for _ in range(3):
        a, b, c = resident.sample(8), pinned.sample(8), cpu.sample(8)
        assert a.device.type == b.device.type == "cuda" and a.dtype == torch.uint8
        assert torch.equal(a, b) and torch.equal(a.cpu(), c)


def test_compiled_step_matches_eager_on_cuda(tmp_path, tiny_dataset):
    from dsae.data import TripleSampler, load_dataset
    from dsae.train import TrainStep
    import torch._inductor.config as inductor_config

    dataset = load_dataset(tiny_dataset[1])
    losses = {}
    # The loss draws random angles (equivariance term): compiled code draws them with the
    # inductor's own generator unless told to fall back to eager's, which makes the two comparable.
    with inductor_config.patch(fallback_random=True):
        for compiled in (False, True):
            cfg, model = tiny_cuda_model(tmp_path)
            step = TrainStep(model, replace(cfg.train, compile=compiled, amp="none"), CUDA)
            sampler = TripleSampler(dataset, np.arange(6), CUDA, seed=0)
            losses[compiled] = [float(step(sampler.sample(16))["loss"]) for _ in range(5)]
    # The same weights and batch give the same loss; later steps drift apart by rounding alone (the
    # compiled kernels sum in another order), measured at up to 1.5e-3 after five steps.
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5), losses
    assert losses[True] == pytest.approx(losses[False], rel=1e-2), losses


def test_a_run_with_device_auto_trains_on_cuda_and_its_encoder_loads_anywhere(tmp_path, tiny_dataset):
    from dsae import load_encoder
    from dsae.train import run_training

    cfg, _ = tiny_dataset
    metrics = run_training(replace(cfg, device="auto"), tmp_path / "run", progress=False)
    assert metrics["device"] == "cuda" and metrics["precision"] == "bf16"
    assert metrics["device_name"] == torch.cuda.get_device_name(0) and metrics["distributed"] is None
    images = torch.rand(4, 3, 32, 32)
    on_gpu, on_cpu = load_encoder(tmp_path / "run", "cuda"), load_encoder(tmp_path / "run", "cpu")
    assert on_gpu.device.type == "cuda" and on_cpu.device.type == "cpu"
    torch.testing.assert_close(on_gpu(images).cpu(), on_cpu(images), atol=1e-4, rtol=1e-4)


def test_keypoint_wrapper_on_cuda(tmp_path, tiny_dataset):
    from gymnasium.utils.env_checker import check_env

    from dsae import load_encoder
    from dsae.rl.wrappers import KeypointObservation
    from dsae.train import run_training
    from envs import make_env

    cfg, _ = tiny_dataset
    run_training(replace(cfg, device="cuda", train=replace(cfg.train, steps=5)), tmp_path / "run", progress=False)
    encoder = load_encoder(tmp_path / "run", "cuda")
    env = KeypointObservation(make_env(encoder.env_config), encoder, kalman=True)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    check_env(env)
    env.close()


def test_torchrun_one_process_nccl_with_sync_batchnorm(tmp_path):
    args = cuda_args(tiny_overrides(tmp_path, "ddp", 20)) + ["logger=none", "model.norm=batch"]
    script("collect.py", *args)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           str(REPO / "scripts" / "train.py"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["distributed"]["backend"] == "nccl" and metrics["distributed"]["processes"] == 1
    assert metrics["distributed"]["sync_batchnorm_layers"] > 0 and metrics["device"] == "cuda:0"
    assert metrics["steps"] == 20 and np.isfinite(metrics["recon_mse"])


def test_killed_cuda_run_resumes(tmp_path):
    steps = 300
    args = cuda_args(tiny_overrides(tmp_path, "killed", steps)) + ["logger=none", "train.checkpoint_every=20"]
    script("collect.py", *args)
    killed_at = kill_after_first_checkpoint([sys.executable, str(REPO / "scripts" / "train.py"), *args],
                                            tmp_path / "killed")
    assert 0 < killed_at < steps and not (tmp_path / "killed" / "metrics.json").exists()
    out = script("train.py", *args, f"train.resume={tmp_path / 'killed'}")
    assert f"from step {killed_at} of {steps}" in out.stdout
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["steps"] == steps and metrics["device"] == "cuda"
    state = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)
    assert "cuda" in state["rng"], "the CUDA generator's state is checkpointed"


@pytest.mark.parametrize("obs", ["state", "keypoints", "pixels"])
def test_sac_on_cuda(tmp_path, obs):
    extra = [f"obs={obs}"]
    if obs == "keypoints":
        args = cuda_args(tiny_overrides(tmp_path, "enc", 10)) + ["logger=none"]
        script("train.py", *args)
        extra.append(f"encoder={tmp_path / 'enc'}")
    if obs == "pixels":
        extra.append("env.image_size=32")
    script("train_rl.py", *cuda_args(tiny_rl(tmp_path, "rl", 96, *extra)))
    metrics = json.loads((tmp_path / "rl" / "metrics.json").read_text())
    assert metrics["env_steps"] == 96 and np.isfinite(metrics["eval_return_mean"])
    assert metrics["device"].startswith("cuda")
    from dsae.rl import Policy, evaluate_policy

    policy = Policy(tmp_path / "rl", "cpu")  # an agent trained on CUDA plays on a CPU-only machine
    returns = evaluate_policy(policy.make_env(), lambda o: policy.agent.act(o, deterministic=True), 1)["returns"]
    assert np.isfinite(returns).all()


def test_benchmarks_add_their_cuda_rows(tmp_path):
    out = tmp_path / "softmax.json"
    run_bench("spatial_softmax.py", "--repeats", "2", "--out", str(out))
    rows = [r for r in json.loads(out.read_text())["rows"] if r["device"].startswith("cuda")]
    assert len(rows) == 2
    for row in rows:
        assert row["ours"]["peak_memory_bytes"] > 0 and 0 < row["ours"]["bandwidth_fraction_of_copy"]

    out = tmp_path / "throughput.json"
    run_bench("train_throughput.py", "--models", "default", "--steps", "2", "--warmup", "1", "--episodes", "4",
              "--device", "cuda", "--out", str(out))
    (row,) = json.loads(out.read_text())["rows"]
    assert row["device"] == "cuda" and row["framework"]["amp"] == "bfloat16" and row["framework"]["data_on_device"]
