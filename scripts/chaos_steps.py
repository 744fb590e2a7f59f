"""Durable steps under kill -9 (issue 22, item 5).

    python scripts/chaos_steps.py --cycles 50          # the long run
    python scripts/chaos_steps.py --cycles 5 --jobs 40 # what the test suite runs

Each cycle starts `python -m jobserver serve` (SQLite, synchronous=FULL) with this file's
task, enqueues --jobs jobs of five steps each, lets it run for a random moment and kills it
with SIGKILL. Each step's side effect is a line appended outside the server (tag, step, pid).
After the last cycle a server drains the queue. Checked:

- every acknowledged job ends `succeeded`, with five steps kept (0 lost);
- every step's side effect happened at least once, and a step ran more than once only when
  every run but the last was in a process that was then killed (at-least-once per step, and
  only the step a kill interrupted runs again: a kept step never reruns);
- a job's steps ran in order (step i+1 never before step i's first run).
Prints a summary; exit 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

from jobserver import JobContext, task

REPO = Path(__file__).resolve().parents[1]
LOG_ENV = "CHAOS_STEPS_LOG"
STEPS = 5


def _effect(tag: str, step: int) -> int:
    with open(os.environ[LOG_ENV], "a") as log:  # written before the step's result is kept
        log.write(f"{tag} {step} {os.getpid()}\n")
    time.sleep(0.005)  # work after the side effect: a kill here makes the step run again
    return step


@task(max_retries=10)
async def chaos_steps(tag: str, ctx: JobContext) -> list[int]:
    done = []
    for step in range(STEPS):
        await asyncio.sleep(random.uniform(0, 0.02))  # a kill may land between steps or in one
        done.append(await ctx.step(f"step-{step}", _effect, tag, step))
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def serve(db: Path, log: Path, out: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}
    env[LOG_ENV] = str(log)
    command = [
        sys.executable, "-m", "jobserver", "serve", "--db", str(db), "--port", str(port),
        "--tasks", "scripts.chaos_steps", "--concurrency", "8", "--lease-ttl", "600",
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out.open("ab"), stderr=-2)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            call(f"{url}/healthz")
            return proc, url
        except OSError as exc:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {out.read_text()[-2000:]}") from exc
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=100, help="jobs enqueued each cycle")
    parser.add_argument("--max-uptime", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="chaos-steps-"))
    db, log, out = tmp / "jobs.db", tmp / "effects.log", tmp / "server.log"
    log.touch()
    acknowledged: dict[int, str] = {}
    killed: set[int] = set()
    for cycle in range(args.cycles):
        proc, url = serve(db, log, out)
        for i in range(args.jobs):
            tag = f"c{cycle}-j{i}"
            acknowledged[int(call(f"{url}/jobs", {"task": "chaos_steps", "args": [tag]})["id"])] = (
                tag
            )
        time.sleep(rng.uniform(0.05, args.max_uptime))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed.add(proc.pid)
    proc, url = serve(db, log, out)
    deadline = time.monotonic() + args.drain_timeout
    failures: list[str] = []
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        states = {job_id: str(call(f"{url}/jobs/{job_id}")["status"]) for job_id in acknowledged}
        if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
            break
        time.sleep(0.2)
    lost = [j for j, s in states.items() if s != "succeeded"]
    if lost:
        failures.append(f"{len(lost)} acknowledged jobs did not succeed: {lost[:10]}")
    kept_short = [
        j
        for j in acknowledged
        if len(call(f"{url}/jobs/{j}/steps")["items"]) != STEPS  # type: ignore[arg-type]
    ]
    if kept_short:
        failures.append(f"jobs without {STEPS} kept steps: {kept_short[:10]}")
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)

    runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    first_line: dict[tuple[str, int], int] = {}
    for n, line in enumerate(log.read_text().splitlines()):
        tag, step, pid = line.split()
        runs[(tag, int(step))].append(int(pid))
        first_line.setdefault((tag, int(step)), n)
    duplicates = 0
    for tag in acknowledged.values():
        for step in range(STEPS):
            pids = runs.get((tag, step), [])
            if not pids:
                failures.append(f"{tag} step {step} never ran")
                continue
            duplicates += len(pids) - 1
            if any(pid not in killed for pid in pids[:-1]):
                failures.append(f"{tag} step {step} ran again after a run that was not killed")
            if step and first_line.get((tag, step - 1), 1 << 60) > first_line[(tag, step)]:
                failures.append(f"{tag} step {step} ran before step {step - 1}")
    summary = {
        "cycles": args.cycles,
        "jobs_acknowledged": len(acknowledged),
        "steps_run": sum(len(p) for p in runs.values()),
        "steps_run_again": duplicates,
        "lost": len(lost),
        "failures": failures[:20],
        "passed": not failures,
    }
    print(json.dumps(summary, indent=1))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
