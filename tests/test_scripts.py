"""Short smoke runs of the tools in scripts/: they run to the end on small inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
