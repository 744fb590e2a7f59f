"""The short chaos run (issue 6, item 1): scripts/chaos.py with 10 kill -9 cycles.

The script kills the real server (`python -m jobserver serve`, SQLite) at random moments while
clients enqueue and workers run jobs, checks the file with `PRAGMA integrity_check` after each
kill, drains the queue and compares what the clients were told with what is stored and what
ran. RELIABILITY.md has the figures of the long run (200 cycles).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CYCLES = 10


def test_ten_kill_9_cycles_lose_nothing(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    workdir = tmp_path / "chaos"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/chaos.py",
            "--cycles",
            str(CYCLES),
            "--max-uptime",
            "1.0",
            "--drain-timeout",
            "30",
            "--max-seconds",
            "60",
            "--workdir",
            str(workdir),
            "--json",
            str(summary_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert summary_path.exists(), output
    s = json.loads(summary_path.read_text())
    assert s["cycles"] == CYCLES, output
    assert s["failures"] == [], output  # every server started, drain exited 0, integrity ok
    # Every kill was followed by a read-only integrity check, plus one at the end.
    assert s["integrity_checks"] == CYCLES + 1, output
    assert all(c["integrity"] == "ok" for c in s["cycle_stats"]), output
    assert s["jobs_acknowledged"] > 0, output
    assert s["lost"] == 0, output  # acknowledged => stored and succeeded after the drain
    assert s["unexpected"] == 0 and s["refused_but_stored"] == 0, output
    assert s["not_succeeded"] == {}, output  # every stored job, acknowledged or not, finished
    assert s["in_flight_at_kills"] > 0, "no kill caught a job mid-run:\n" + output
    assert s["duplicates"] <= s["in_flight_at_kills"], output
    assert s["per_job_bound_violations"] == [] and s["attempt_anomalies"] == [], output
    assert s["passed"] and proc.returncode == 0, output


def test_durable_steps_under_kill_9_lose_no_job_and_rerun_only_interrupted_steps() -> None:
    """Issue 22, item 5 in short: scripts/chaos_steps.py with 5 kill -9 cycles of 40 five-step
    jobs. Every job succeeds with its five steps kept, and a step ran twice only when its
    first run was in a process that was then killed."""
    proc = subprocess.run(
        [sys.executable, "scripts/chaos_steps.py", "--cycles", "5", "--jobs", "40"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = proc.stdout + proc.stderr
    s = json.loads(proc.stdout)
    assert s["jobs_acknowledged"] == 200 and s["lost"] == 0, output
    assert s["steps_run"] >= 1000, output  # each of the 5 x 200 steps at least once
    assert s["failures"] == [] and s["passed"] and proc.returncode == 0, output
