"""Training runs in process on the tiny dataset: what a resumed run records, and where."""

import json
from dataclasses import replace

from dsae.checkpoint import load_checkpoint, save_checkpoint
from dsae.train import CHECKPOINT, METRICS, run_training


def logged_steps(run, key="train/loss"):
    lines = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    return [row["step"] for row in lines if key in row]


def test_a_resumed_run_records_each_step_once(tiny_dataset, tmp_path):
    """Killed after its step-20 checkpoint, having logged step 25: on resume step 25 is logged
    again, so the record of the killed process is dropped, not kept beside the new one."""
    cfg, _ = tiny_dataset
    run = tmp_path / "run"
    run_training(replace(cfg, train=replace(cfg.train, steps=20)), run, progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    state["config"]["train"]["steps"] = 30  # as if the run had been asked for 30 steps
    save_checkpoint(run / CHECKPOINT, state)
    (run / METRICS).unlink()
    with open(run / "scalars.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "train/loss": 1e9}) + "\n")

    run_training(replace(cfg, train=replace(cfg.train, resume=str(run))), run, progress=False)
    steps = logged_steps(run)
    assert steps == [5, 10, 15, 20, 25, 30]
    assert all(json.loads(line).get("train/loss") != 1e9 for line in (run / "scalars.jsonl").read_text().splitlines())


def test_drop_rows_after_keeps_a_csv_header(tmp_path):
    from dsae.logger import drop_rows_after

    path = tmp_path / "returns.csv"
    path.write_text("env_step,kind\n10,train\n20,eval\n30,train\n")
    drop_rows_after(path, 20)
    assert path.read_text().splitlines() == ["env_step,kind", "10,train", "20,eval"]


def test_the_precision_and_hardware_a_run_trained_on_are_recorded(tiny_dataset, tmp_path):
    """train.amp=auto gives bf16 on some CPUs and float32 on others: say which, and where."""
    cfg, _ = tiny_dataset
    run = tmp_path / "run"
    metrics = run_training(replace(cfg, train=replace(cfg.train, steps=10, amp="none")), run, progress=False)
    state = load_checkpoint(run / CHECKPOINT)
    for record in (metrics, state, json.loads((run / METRICS).read_text())):
        assert record["precision"] == "float32" and record["device"] == "cpu"
        assert record["device_name"] and isinstance(record["device_name"], str)
