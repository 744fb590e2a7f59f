"""Short smoke runs of the tools in scripts/: they run to the end on small inputs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_e2e_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/bench_e2e.py", "--jobs", "300", "--runs", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "median:" in out and "300 no-op jobs" in out


def test_soak_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/soak.py", "--seconds", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "verdict" in out.lower()


def test_bench_quick_smoke() -> None:
    """The issue-5 benchmark in its small mode (no peers): every figure runs to the end."""
    out = subprocess.run(
        [sys.executable, "scripts/bench.py", "--quick", "--skip-peers", "--quiet-below", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    assert "Targets:" in out and "batch enqueue" in out


def test_bench_fairness_smoke() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/bench_fairness.py", "--rounds", "1", "--seconds", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "keyed small p95 / quiet small p95" in out and "median fifo" in out


def test_bench_steps_smoke() -> None:
    command = [sys.executable, "scripts/bench_steps.py", "--jobs", "300", "--latency-jobs", "20"]
    out = subprocess.run(
        [*command, "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "3-step" in out and "steps/s (20-step jobs)" in out and "median:" in out


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed (Debian: golang-go)")
def test_bench_external_smoke() -> None:
    command = [sys.executable, "scripts/bench_external.py", "--jobs", "300", "--rounds", "1"]
    out = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=True
    ).stdout
    assert "external / in-process" in out and "median:" in out
