"""Soak: steady mixed load against the real server, watching it for growth.

    python scripts/soak.py                 # 10 minutes
    python scripts/soak.py --seconds 20    # a smoke run

Runs `python -m jobserver serve` (SQLite file in a temporary directory, 127.0.0.1 only) and,
for --seconds, keeps up a steady mix: single and batch enqueues, polls and long-polls, jobs
that fail and are retried, jobs that fail for good (their dead letters requeued or deleted),
delayed and long jobs that are cancelled, idempotent re-sends, health checks.

Every --interval seconds it samples the server from outside: RSS and threads
(/proc/PID/status), open files (/proc/PID/fd), the WAL and database file sizes, and the
backlog (a short read-only query). The number of asyncio tasks and of live Python objects
cannot be read from outside the process, so a probe job does it: `soak_probe`, a task of this
module, which the server imports like any task module and runs on its own event loop, returns
len(asyncio.all_tasks()) and len(gc.get_objects()); nothing is added to the server itself.

At the end: a table of the samples, and a verdict per measure, flat or growing, comparing the
last third of the samples with the first third (after a warm-up). Exit status 1 if the server
died, answered 5xx, did not drain and stop cleanly with SIGTERM, or (with --strict) a measure
grew.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from jobserver import JobContext, PermanentError, task

REPO = Path(__file__).resolve().parent.parent


# -- tasks the server runs (it imports this module with --tasks scripts.soak) -------------------
@task(name="soak_work")
async def soak_work(ms: float) -> float:
    await asyncio.sleep(ms / 1000)
    return ms


@task(name="soak_flaky")
async def soak_flaky(fail_times: int, ctx: JobContext) -> int:
    """Fails its first `fail_times` attempts, then succeeds."""
    if ctx.attempt <= fail_times:
        raise ValueError(f"attempt {ctx.attempt} of {fail_times + 1} fails on purpose")
    return ctx.attempt


@task(name="soak_doomed")
async def soak_doomed(permanent: bool) -> None:
    if permanent:
        raise PermanentError("fails for good on purpose")
    raise RuntimeError("fails every time on purpose")


@task(name="soak_probe")
async def soak_probe() -> dict[str, int]:
    """Runs inside the server: what cannot be read from /proc."""
    return {"asyncio_tasks": len(asyncio.all_tasks()), "gc_objects": len(gc.get_objects())}


# -- the server ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, db: Path, log_path: Path, concurrency: int) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}
        command = [
            sys.executable,
            "-m",
            "jobserver",
            "serve",
            "--db",
            str(db),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--tasks",
            "scripts.soak",
            "--concurrency",
            str(concurrency),
            "--rescue-interval",
            "1",
            "--grace-period",
            "10",
            # Keep finished jobs ~30 s and failed ones ~1 min, so that retention (every 5
            # minutes) prunes during a long soak, as it would in production.
            "--keep-finished-days",
            "0.00035",
            "--keep-failed-days",
            "0.0007",
            "--log-level",
            "warning",
        ]
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()


# -- sampling --------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
    return {"rss_kb": fields.get("VmRSS", 0), "threads": fields.get("Threads", 0)}


def size_kb(path: Path) -> int:
    try:
        return path.stat().st_size // 1024
    except FileNotFoundError:
        return 0


def backlog(db: Path) -> dict[str, int]:
    """Jobs by state: one short read-only query (it holds no snapshot between samples)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        return dict(c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    threads: int
    asyncio_tasks: int | None
    gc_objects: int | None
    wal_kb: int
    db_kb: int
    pending: int
    running: int
    requests: int


# (column, label, rule): rule(first third, last third) -> growing?
MEASURES: list[tuple[str, str, Callable[[list[float], list[float]], bool]]] = [
    (
        "rss_kb",
        "RSS (KB)",
        lambda a, b: statistics.mean(b) > statistics.mean(a) * 1.10 + 4096,
    ),
    ("fds", "open files", lambda a, b: statistics.mean(b) > statistics.mean(a) + 5),
    ("threads", "threads", lambda a, b: max(b) > max(a) + 4),
    (
        "asyncio_tasks",
        "asyncio tasks",
        lambda a, b: statistics.mean(b) > statistics.mean(a) * 1.5 + 10,
    ),
    (
        "gc_objects",
        "Python objects",
        lambda a, b: statistics.mean(b) > statistics.mean(a) * 1.10 + 20_000,
    ),
    ("wal_kb", "WAL size (KB)", lambda a, b: max(b) > max(a) * 1.10 + 1024),
]


def verdicts(samples: list[Sample], warmup_s: float) -> list[tuple[str, str, str]]:
    """(measure, first third -> last third, flat / growing) after the warm-up."""
    steady = [s for s in samples if s.t >= warmup_s]
    out = []
    for column, label, growing in MEASURES:
        values = [getattr(s, column) for s in steady if getattr(s, column) is not None]
        if len(values) < 3:
            out.append((label, "too few samples", "unknown"))
            continue
        third = max(1, len(values) // 3)
        first, last = values[:third], values[-third:]
        change = f"{statistics.mean(first):,.0f} -> {statistics.mean(last):,.0f}"
        out.append((label, change, "growing" if growing(first, last) else "flat"))
    return out


# -- the load --------------------------------------------------------------------------------------
class Load:
    def __init__(self, url: str, session: Any, rate: float, rng: random.Random) -> None:
        self.url = url
        self.session = session
        self.rate = rate
        self.rng = rng
        self.stop = False
        self.statuses: Counter[str] = Counter()
        self.errors: list[str] = []
        self.jobs_enqueued = 0
        self.recent: list[int] = []  # recent job ids, for polls
        self.cancellable: list[int] = []  # delayed and long jobs
        self.requests = 0

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        import aiohttp

        self.requests += 1
        try:
            async with self.session.request(method, self.url + path, **kwargs) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.statuses["no answer"] += 1
            if not self.stop:
                self.errors.append(f"{method} {path}: {type(exc).__name__}: {exc}")
            return 0, None
        self.statuses[str(status)] += 1
        if status >= 500:
            self.errors.append(f"{method} {path}: {status} {text[:200]}")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = text
        return status, body

    def remember(self, job_id: int, cancellable: bool = False) -> None:
        self.recent.append(job_id)
        del self.recent[:-500]
        if cancellable:
            self.cancellable.append(job_id)
            del self.cancellable[:-200]

    def one_job(self) -> tuple[dict[str, Any], bool]:
        roll = self.rng.random()
        backoff = {"base": 0.05, "factor": 2, "cap": 0.5}
        if roll < 0.78:
            return {"task": "soak_work", "args": [self.rng.uniform(0, 20)]}, False
        if roll < 0.86:
            n = self.rng.randint(1, 2)
            return {"task": "soak_flaky", "args": [n], "max_retries": 3, "backoff": backoff}, False
        if roll < 0.90:
            permanent = self.rng.random() < 0.5
            return {
                "task": "soak_doomed",
                "args": [permanent],
                "max_retries": 1,
                "backoff": backoff,
            }, False
        if roll < 0.95:
            delay = self.rng.uniform(1, 20)
            return {"task": "soak_work", "args": [1], "delay": delay}, True
        if roll < 0.97:
            return {"task": "soak_work", "args": [self.rng.uniform(1000, 4000)]}, True
        key = f"soak-{self.rng.randrange(50)}"  # re-sent: the first job comes back (200)
        return {"task": "soak_work", "args": [1], "idempotency_key": key}, False

    async def paced(self, per_second: float, action: Callable[[], Any]) -> None:
        while not self.stop:
            began = time.monotonic()
            await action()
            spent = time.monotonic() - began
            # Poisson-ish pacing around the mean rate.
            await asyncio.sleep(max(0.0, self.rng.expovariate(per_second) - spent))

    async def enqueue_one(self) -> None:
        body, cancellable = self.one_job()
        status, data = await self.call("POST", "/jobs", json=body)
        if status in (200, 202) and isinstance(data, dict):
            if status == 202:
                self.jobs_enqueued += 1
            self.remember(data["id"], cancellable)

    async def enqueue_batch(self) -> None:
        jobs = [
            {"task": "soak_work", "args": [self.rng.uniform(0, 10)]}
            for _ in range(self.rng.randint(5, 40))
        ]
        status, data = await self.call("POST", "/jobs/batch", json={"jobs": jobs})
        if status == 202 and isinstance(data, dict):
            self.jobs_enqueued += len(data["ids"])
            for job_id in data["ids"][-5:]:
                self.remember(job_id)

    async def poll(self) -> None:
        roll = self.rng.random()
        if self.recent and roll < 0.7:
            await self.call("GET", f"/jobs/{self.rng.choice(self.recent)}")
        elif self.recent and roll < 0.8:
            await self.call("GET", f"/jobs/{self.rng.choice(self.recent)}", params={"wait": "1"})
        elif roll < 0.95:
            state = self.rng.choice(["pending", "running", "succeeded", "failed", "cancelled"])
            await self.call("GET", "/jobs", params={"status": state, "limit": "50"})
        else:
            await self.call("GET", self.rng.choice(["/healthz", "/readyz"]))

    async def cancel(self) -> None:
        if self.cancellable and self.rng.random() < 0.6:
            job_id = self.cancellable.pop(self.rng.randrange(len(self.cancellable)))
            status, _ = await self.call("POST", f"/jobs/{job_id}/cancel")
            # 409: it finished first; 404: retention already pruned it.
            if status not in (200, 404, 409, 0):
                self.errors.append(f"cancel {job_id}: {status}")

    async def settle_dead_letters(self) -> None:
        status, data = await self.call("GET", "/dead-letters", params={"limit": "20"})
        if status != 200 or not isinstance(data, dict):
            return
        for letter in data["items"]:
            if self.rng.random() < 0.3:
                await self.call("POST", f"/dead-letters/{letter['id']}/requeue")
            else:
                await self.call("DELETE", f"/dead-letters/{letter['id']}")

    def tasks(self) -> list[asyncio.Task[None]]:
        r = self.rate
        return [
            asyncio.create_task(self.paced(r * 0.4, self.enqueue_one)),
            asyncio.create_task(self.paced(r * 0.4, self.enqueue_one)),
            asyncio.create_task(self.paced(r * 0.2 / 22, self.enqueue_batch)),  # ~22 per batch
            asyncio.create_task(self.paced(20, self.poll)),
            asyncio.create_task(self.paced(20, self.poll)),
            asyncio.create_task(self.paced(2, self.cancel)),
            asyncio.create_task(self.paced(0.5, self.settle_dead_letters)),
        ]


async def probe(load: Load) -> dict[str, int] | None:
    status, data = await load.call("POST", "/jobs", json={"task": "soak_probe", "priority": 1000})
    if status != 202 or not isinstance(data, dict):
        return None
    status, job = await load.call("GET", f"/jobs/{data['id']}", params={"wait": "5"})
    if status == 200 and isinstance(job, dict) and job.get("status") == "succeeded":
        result: dict[str, int] = job["result"]
        return result
    return None


async def soak(args: argparse.Namespace, workdir: Path) -> tuple[list[Sample], Load, list[str]]:
    import aiohttp

    problems: list[str] = []
    db = workdir / "soak.db"
    server = Server(db, workdir / "server.log", args.concurrency)
    samples: list[Sample] = []
    rng = random.Random(args.seed)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            load = Load(server.url, session, args.rate, rng)
            deadline = time.monotonic() + 20
            while True:
                if server.proc.poll() is not None:
                    raise SystemExit(f"the server exited at start:\n{server.output()}")
                status, _ = await load.call("GET", "/healthz")
                if status == 200:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start:\n{server.output()}")
                await asyncio.sleep(0.05)
            load.errors.clear()
            load.statuses.clear()
            workers = load.tasks()
            began = time.monotonic()
            next_sample = began
            while True:
                now = time.monotonic()
                if server.proc.poll() is not None:
                    problems.append(f"the server died (exit {server.proc.returncode})")
                    break
                if now >= next_sample:
                    status_info = proc_status(server.proc.pid)
                    fds = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
                    inside = await probe(load)
                    counts = backlog(db)
                    samples.append(
                        Sample(
                            t=round(now - began, 1),
                            rss_kb=status_info["rss_kb"],
                            fds=fds,
                            threads=status_info["threads"],
                            asyncio_tasks=inside["asyncio_tasks"] if inside else None,
                            gc_objects=inside["gc_objects"] if inside else None,
                            wal_kb=size_kb(Path(f"{db}-wal")),
                            db_kb=size_kb(db),
                            pending=counts.get("pending", 0),
                            running=counts.get("running", 0),
                            requests=load.requests,
                        )
                    )
                    if not args.quiet:
                        print(row(samples[-1]), flush=True)
                    next_sample += args.interval
                if now - began >= args.seconds:
                    break
                await asyncio.sleep(min(0.2, max(0.0, next_sample - time.monotonic())))
            load.stop = True
            await asyncio.gather(*workers)
            # Let the due work finish (delayed jobs far in the future are left pending), then
            # stop the server the way an operator would.
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                problems.append(f"SIGTERM: exit {code}:\n{server.output()}")
            else:
                left = backlog(db)
                if left.get("running"):
                    problems.append(f"{left['running']} jobs left running after SIGTERM")
    finally:
        server.close()
    return samples, load, problems


HEADER = (
    f"{'t (s)':>7} {'RSS MB':>7} {'fds':>4} {'thr':>4} {'tasks':>6} {'objects':>9}"
    f" {'WAL KB':>7} {'DB KB':>7} {'pend':>5} {'run':>4} {'reqs':>7}"
)


def row(s: Sample) -> str:
    tasks = "-" if s.asyncio_tasks is None else str(s.asyncio_tasks)
    objects = "-" if s.gc_objects is None else f"{s.gc_objects:,}"
    return (
        f"{s.t:7.1f} {s.rss_kb / 1024:7.1f} {s.fds:4d} {s.threads:4d} {tasks:>6} {objects:>9}"
        f" {s.wal_kb:7d} {s.db_kb:7d} {s.pending:5d} {s.running:4d} {s.requests:7d}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="duration (default 600)")
    parser.add_argument("--interval", type=float, default=None, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=100.0, help="jobs enqueued per second")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out (15%%)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a measure grows")
    parser.add_argument("--workdir", help="keep the database and the server log here")
    parser.add_argument("--json", help="also write the samples and verdicts here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.interval is None:
        args.interval = 5.0 if args.seconds >= 120 else max(1.0, args.seconds / 10)
    warmup = args.warmup if args.warmup is not None else 0.15 * args.seconds
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobserver-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)

    if not args.quiet:
        print(
            f"soak: {args.seconds:g} s at ~{args.rate:g} jobs/s; samples every"
            f" {args.interval:g} s; workdir {workdir}\n{HEADER}",
            flush=True,
        )
    samples, load, problems = asyncio.run(soak(args, workdir))

    print(f"\n{HEADER}")
    for s in samples:
        print(row(s))
    results = verdicts(samples, warmup)
    print(f"\nverdict (mean of the last third vs the first third, after {warmup:g} s warm-up):")
    for label, change, verdict in results:
        print(f"  {label:15s} {change:>28s}  {verdict}")
    print(f"requests {load.requests} ({dict(load.statuses)}), jobs enqueued {load.jobs_enqueued}")
    problems += [f"server error: {e}" for e in load.errors[:10]]
    growing = [label for label, _, verdict in results if verdict == "growing"]
    overall = "growing: " + ", ".join(growing) if growing else "flat"
    print(f"overall: {overall}")
    for p in problems:
        print(f"  ! {p}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "seconds": args.seconds,
                    "rate": args.rate,
                    "samples": [s.__dict__ for s in samples],
                    "verdicts": results,
                    "overall": overall,
                    "requests": load.requests,
                    "statuses": dict(load.statuses),
                    "jobs_enqueued": load.jobs_enqueued,
                    "problems": problems,
                },
                indent=2,
            )
        )
    failed = bool(problems) or (args.strict and bool(growing))
    if not failed and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
