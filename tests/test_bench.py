"""The benchmarks run and write their JSON (tiny repeat counts; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(script: str, *args: str) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_spatial_softmax_benchmark(tmp_path):
    out = tmp_path / "ss.json"
    run("spatial_softmax.py", "--repeats", "1", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows if r["device"] == "cpu"] == [[64, 16, 109, 109], [256, 32, 21, 21]]
    for r in rows:
        for impl in ("ours", "kornia", "straightforward"):
            assert r[impl]["forward_backward_ms"] > 0 and r[impl]["saved_for_backward_bytes"] > 0
        assert r["speedup_forward_backward_ms_vs_kornia"] > 0


def test_render_benchmark(tmp_path):
    out = tmp_path / "render.json"
    run("render.py", "--frames", "20", "--out", str(out))
    rows = {r["env"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"reacher", "pusher"}
    assert all(r["frames_per_s"] > 0 and r["stock_shadows_frames_per_s"] > 0 for r in rows.values())
