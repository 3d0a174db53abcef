"""Every script of examples/ runs as a user would run it (a subprocess, small
settings), exits 0 and prints the decisions it took."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/<name>`` with the test's Python; returns its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def decisions(stdout: str) -> int:
    """The count in the example's last line, ``decisions: N (...)``."""
    found = re.findall(r"^decisions: (\d+) \(", stdout, flags=re.MULTILINE)
    assert found, f"no 'decisions:' summary in:\n{stdout}"
    return int(found[-1])


def test_plain_loop_decides_once_per_epoch(tmp_path):
    out = run_example("plain_loop.py", "--images", "512", "--epochs", "2", cwd=tmp_path)
    rows = re.findall(r"^\s+\d+\s+[\d.]+\s+(decrease|increase|keep)\s", out, flags=re.MULTILINE)
    assert len(rows) == 2 and decisions(out) == 2, out


def test_warmup_then_decisions_after_the_milestone(tmp_path):
    out = run_example(
        "warmup.py", "--steps", "60", "--warmup", "20", "--every", "10", cwd=tmp_path
    )
    steps = [int(s) for s in re.findall(r"^\s*(\d+) decision", out, flags=re.MULTILINE)]
    assert steps == [30, 40, 50, 60] and decisions(out) == 4, out  # milestone 20, then every 10
    assert re.search(r"^\s*\d+\s+warmup", out, flags=re.MULTILINE), out


def test_hf_trainer_decides_every_evaluation_interval(tmp_path, tiny_checkpoint):
    pytest.importorskip("pyarrow")
    out = run_example(
        "hf_trainer.py", "--model", str(tiny_checkpoint), "--steps", "4", "--every", "2",
        "--examples", "32", cwd=tmp_path,
    )
    assert re.findall(r"^step\s+(\d+)\s+decision", out, flags=re.MULTILINE) == ["2", "4"], out
    assert decisions(out) == 2 and "decision_interval 2" in out, out
    assert list(tmp_path.iterdir()) == [], "the example left files behind"


def test_lightning_fit_decides_every_interval(tmp_path):
    pytest.importorskip("lightning")
    out = run_example("lightning_fit.py", "--steps", "40", "--every", "10", cwd=tmp_path)
    steps = re.findall(r"^step\s+(\d+)\s+decision", out, flags=re.MULTILINE)
    assert steps == ["10", "20", "30", "40"] and decisions(out) == 4, out
