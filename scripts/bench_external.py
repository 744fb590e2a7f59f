"""External workers' cost (issue 23, item 4): no-op jobs completed by one batched external
worker process over HTTP, beside the same server's in-process workers, in one run.

    python scripts/bench_external.py                 # 20,000 jobs, 3 rounds, medians
    python scripts/bench_external.py --jobs 2000 --rounds 1
    python scripts/bench_external.py --worker node   # the Node reference worker instead

Each round starts `jobserver serve` (SQLite, synchronous=FULL, --concurrency 64) on a fresh
database and times two drains of --jobs jobs, each enqueued first (POST /jobs/batch): the
in-process no-op task (its queue paused while they go in, then resumed), and the external task
`double` leased, run and reported by a reference worker (examples/workers: Go by default, or
Node with --worker node; batches of --batch, two in flight). Time runs from the resume (or
the worker's start) to the last success, read from GET /queues/{name} every 20 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GO_WORKER = ROOT / "examples" / "workers" / "go"
BIN = Path(sys.executable).parent


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def enqueue(base: str, job: dict[str, Any], n: int) -> None:
    for start in range(0, n, 1000):
        call(base, "POST", "/jobs/batch", {"jobs": [job] * min(1000, n - start)})


def drain_time(base: str, queue: str, n: int, began: float) -> float:
    while True:
        counts = call(base, "GET", f"/queues/{queue}")["counts"]
        if counts["succeeded"] >= n:
            return time.perf_counter() - began
        time.sleep(0.02)


def one_round(tmp: Path, jobs: int, batch: int, worker: list[str]) -> tuple[float, float]:
    port = 18000 + os.getpid() % 1000
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "scripts")}
    with (tmp / "server.log").open("ab") as log:
        server = subprocess.Popen(
            [
                str(BIN / "jobserver"), "serve", "--db", str(tmp / "bench.db"),
                "--port", str(port), "--tasks", "bench_peers.jobserver_tasks",
                "--external-task", "double=external", "--concurrency", "64",
            ],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        for _ in range(200):
            try:
                call(base, "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        call(base, "POST", "/queues/inproc/pause")
        enqueue(base, {"task": "bench_noop", "queue": "inproc"}, jobs)
        began = time.perf_counter()
        call(base, "POST", "/queues/inproc/resume")
        inproc = jobs / drain_time(base, "inproc", jobs, began)
        enqueue(base, {"task": "double", "args": [1]}, jobs)
        worker_env = {
            **os.environ, "JOBSERVER_URL": base, "JOBSERVER_QUEUES": "external",
            "JOBSERVER_BATCH": str(batch),
        }  # fmt: skip
        began = time.perf_counter()
        with (tmp / "worker.log").open("ab") as log:
            process = subprocess.Popen(worker, env=worker_env, stdout=log, stderr=log)
        try:
            external = jobs / drain_time(base, "external", jobs, began)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        return inproc, external
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--worker", choices=("go", "node"), default="go")
    args = parser.parse_args()
    tool = shutil.which(args.worker)
    if tool is None:
        sys.exit(f"bench_external.py --worker {args.worker} needs {args.worker} installed")
    results: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        if args.worker == "go":
            worker = [str(Path(tmp_dir) / "go-worker")]
            subprocess.run([tool, "build", "-o", worker[0], "."], cwd=GO_WORKER, check=True)
        else:
            worker = [tool, str(ROOT / "examples" / "workers" / "worker.mjs")]
        for r in range(args.rounds):
            tmp = Path(tmp_dir) / f"round{r}"
            tmp.mkdir()
            inproc, external = one_round(tmp, args.jobs, args.batch, worker)
            results.append((inproc, external))
            print(
                f"round {r + 1}: in-process {inproc:,.0f} jobs/s; external ({args.worker},"
                f" batches of {args.batch}) {external:,.0f} jobs/s; external / in-process"
                f" {external / inproc:.2f}"
            )
    inproc_m = statistics.median(r[0] for r in results)
    external_m = statistics.median(r[1] for r in results)
    ratio_m = statistics.median(r[1] / r[0] for r in results)
    print(
        f"median: in-process {inproc_m:,.0f} jobs/s; external {external_m:,.0f} jobs/s;"
        f" external / in-process {ratio_m:.2f}"
    )


if __name__ == "__main__":
    main()
