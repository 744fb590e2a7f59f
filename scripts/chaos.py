"""Chaos: kill -9 the real server at random moments under load, then check nothing was lost.

    python scripts/chaos.py                        # 200 cycles
    python scripts/chaos.py --cycles 10 --seed 7 --json summary.json

Each cycle starts `python -m jobserver serve` on one SQLite file (in a temporary directory),
enqueues jobs over HTTP from several clients (single and batch POSTs) while the workers run
them, and sends SIGKILL at a random moment; about one cycle in ten kills the server while it
is still starting up (recovering the previous crash). Before the next server opens the file,
`PRAGMA integrity_check` runs on it through a read-only connection, and the jobs left
`running` are counted: those are the jobs in flight at that kill. After the last cycle a
server drains the queue and is stopped with SIGTERM.

Every enqueue is logged (enqueues.jsonl) as ok (a 2xx with the ids), failed (an error status,
or the connection refused: nothing was sent) or indeterminate (no answer: the server died with
the request in flight). Every job carries a tag of its own in its kwargs; the task appends
"job_id attempt tag" to executions.log with one O_APPEND write per run.

Pass conditions (exit status 1 if one fails):
- lost = 0: every acknowledged job is stored and succeeded after the drain;
- unexpected = 0: every job in the database was sent (ok or indeterminate), and none of the
  enqueues answered with an error got in;
- duplicates (runs beyond one per job) <= the jobs in flight at the kills, and for each job,
  runs - 1 <= the kills that caught it running;
- `PRAGMA integrity_check` = ok after every kill and at the end; every server started; the
  drain ended with exit status 0.

With --poison P (default 0.02), that share of the jobs are poison tasks (issue 19): one
raises SystemExit, one calls sys.exit() in its thread, one hangs in its thread past its
timeout, one swallows every cancellation for ever, one blocks the event loop past its
timeout, and two run in a child process (isolation="process"): one kills its child
(os._exit), one spins past its hard limit (its child is killed). Each must end `failed`
(never lost, never stuck), the server must go on running the rest, and the last SIGTERM must
stop it (exit status 0) although deaf tasks still run.

The server listens on 127.0.0.1 only; the run is bounded by --cycles and --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from jobserver import JobContext, task

REPO = Path(__file__).resolve().parent.parent
EXEC_LOG_ENV = "JOBSERVER_CHAOS_EXEC_LOG"
TASK = "chaos_record"
READY_TIMEOUT_S = 20.0


# -- the task the server runs (it imports this module with --tasks scripts.chaos) ----------------
@task(name=TASK)
async def chaos_record(tag: str, delay_s: float, ctx: JobContext) -> str:
    """Sleeps `delay_s`, then appends "job_id attempt tag" to the executions log."""
    await asyncio.sleep(delay_s)
    line = f"{ctx.job_id} {ctx.attempt} {tag}\n".encode()
    # One write(2) on an O_APPEND descriptor: lines never interleave, and once it returns the
    # bytes are in the kernel, so they survive the SIGKILL that may come next.
    fd = os.open(os.environ[EXEC_LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return tag


POISON_TASKS = {"exit": "chaos_poison", "deaf": "chaos_poison", "block": "chaos_poison",
                "sys_exit": "chaos_poison_sync", "hang": "chaos_poison_sync",
                "crash": "chaos_poison_child", "spin": "chaos_poison_child"}  # fmt: skip


@task(name="chaos_poison", timeout=0.2, max_retries=0)
async def chaos_poison(kind: str, tag: str) -> None:
    """Misbehaves as `kind` says; every kind must end its attempt as failed."""
    if kind == "exit":
        raise SystemExit(3)
    if kind == "block":
        time.sleep(0.5)  # blocks the event loop past the timeout
        return
    while True:  # "deaf": hears no cancellation, ever
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue


@task(name="chaos_poison_child", isolation="process", timeout=0.2, hard_timeout=0.5, max_retries=0)
def chaos_poison_child(kind: str, tag: str) -> None:
    """In a child process: dies on the spot ("crash"), or spins past its soft and hard limits
    ignoring the soft one ("spin"): the child is killed."""
    if kind == "crash":
        os._exit(1)
    while True:
        try:
            while True:
                pass
        except Exception:
            continue


@task(name="chaos_poison_sync", timeout=0.2, max_retries=0)
def chaos_poison_sync(kind: str, tag: str) -> None:
    if kind == "sys_exit":
        sys.exit(4)
    time.sleep(2.0)  # "hang": outlives its timeout in a thread nothing can stop


# -- the server process ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One `python -m jobserver serve` on 127.0.0.1; output to a log file."""

    def __init__(self, db: Path, log_path: Path, exec_log: Path, concurrency: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}
        env[EXEC_LOG_ENV] = str(exec_log)
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
            "scripts.chaos",
            "--concurrency",
            str(concurrency),
            # Long leases: only start-up recovery may run a job again, never a lease expiry
            # (what the duplicates bound assumes).
            "--lease-ttl",
            "600",
            "--grace-period",
            "10",
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

    def output(self, tail: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    async def wait_ready(self, session: Any) -> str | None:
        """None once GET /healthz answers 200; else why not."""
        import aiohttp

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                return f"exited with {self.proc.returncode} before it was ready"
            try:
                async with session.get(
                    f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return None
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                return f"not ready after {READY_TIMEOUT_S} s"
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()
        self._log.close()


# -- bookkeeping ---------------------------------------------------------------------------------
@dataclass
class CycleStats:
    cycle: int
    mode: str  # "load": killed under load; "startup": killed while starting up
    uptime_s: float = 0.0
    requests: int = 0
    acked_jobs: int = 0
    indeterminate_jobs: int = 0
    failed_jobs: int = 0
    running_at_kill: int = 0
    pending_at_kill: int = 0
    integrity: str = ""


@dataclass
class Summary:
    seed: int
    cycles: int = 0
    cycles_asked: int = 0
    kills_under_load: int = 0
    kills_at_startup: int = 0
    requests: int = 0
    jobs_sent: int = 0
    jobs_acknowledged: int = 0
    jobs_indeterminate: int = 0
    jobs_failed_to_enqueue: int = 0
    indeterminate_stored: int = 0
    jobs_in_db: int = 0
    lost: int = 0
    lost_examples: list[str] = field(default_factory=list)
    unexpected: int = 0
    unexpected_examples: list[str] = field(default_factory=list)
    refused_but_stored: int = 0
    not_succeeded: dict[str, int] = field(default_factory=dict)  # not as expected
    poison_jobs: int = 0
    executions: int = 0
    duplicates: int = 0
    in_flight_at_kills: int = 0
    duplicates_within_bound: bool = True
    per_job_bound_violations: list[str] = field(default_factory=list)
    attempt_anomalies: list[str] = field(default_factory=list)
    integrity_checks: int = 0
    failures: list[str] = field(default_factory=list)
    drain_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    workdir: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected == 0
            and self.refused_but_stored == 0
            and not self.not_succeeded
            and self.duplicates_within_bound
            and not self.per_job_bound_violations
            and not self.attempt_anomalies
            and not self.failures
        )


class EnqueueLog:
    """enqueues.jsonl: one line per request with its tags, outcome and ids."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.ok: dict[str, int] = {}  # tag -> id
        self.indeterminate: set[str] = set()
        self.failed: set[str] = set()
        self.requests = 0

    def record(
        self, cycle: int, tags: list[str], outcome: str, ids: list[int], detail: str
    ) -> None:
        self.requests += 1
        entry = {"cycle": cycle, "outcome": outcome, "tags": tags, "ids": ids, "detail": detail}
        self._file.write(json.dumps(entry) + "\n")
        if outcome == "ok":
            self.ok.update(zip(tags, ids, strict=True))
        elif outcome == "indeterminate":
            self.indeterminate.update(tags)
        else:
            self.failed.update(tags)

    def close(self) -> None:
        self._file.close()


def read_only(db: Path) -> sqlite3.Connection:
    # Read-only: no checkpoint and no WAL removal at close; the next server replays the WAL.
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def inspect_after_kill(db: Path) -> tuple[str, list[tuple[int, int]], int]:
    """(integrity_check result, (id, attempts) of the jobs left running, pending count) of the
    file as the kill left it."""
    if not db.exists():
        return "ok", [], 0  # killed before it created the file
    with contextlib.closing(read_only(db)) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        verdict = "; ".join(str(r[0]) for r in rows)
        try:
            running = [
                (r[0], r[1])
                for r in conn.execute("SELECT id, attempts FROM jobs WHERE status = 'running'")
            ]
            (pending,) = conn.execute(
                "SELECT count(*) FROM jobs WHERE status = 'pending'"
            ).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            running, pending = [], 0  # killed before the schema was created
    return verdict, running, pending


# -- the load ------------------------------------------------------------------------------------
class Load:
    """Clients enqueueing until told to stop; every request's outcome goes to the log."""

    def __init__(
        self, server: Server, session: Any, log: EnqueueLog, cycle: int, rng: random.Random
    ) -> None:
        self.server = server
        self.session = session
        self.log = log
        self.cycle = cycle
        self.rng = rng
        self.stopped = False
        self.seq = 0
        self.stats = Counter[str]()
        self.poison = 0.0  # share of poison jobs (set by the run)

    def _job(self) -> dict[str, Any]:
        self.seq += 1
        tag = f"c{self.cycle}-{self.seq}"
        if self.rng.random() < self.poison:
            kind = self.rng.choice(sorted(POISON_TASKS))
            return {"task": POISON_TASKS[kind], "kwargs": {"kind": kind, "tag": tag}}
        # Mostly short jobs, a few longer ones: the kill catches some mid-run.
        delay = self.rng.choice([0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1])
        return {"task": TASK, "kwargs": {"tag": tag, "delay_s": delay}, "max_retries": 100}

    async def client(self, pause_s: float) -> None:
        import aiohttp

        while not self.stopped:
            # 70% single POSTs; batches of 2-10, and now and then a burst of 20-100 that leaves
            # a backlog pending at the kill.
            roll = self.rng.random()
            size = 1 if roll < 0.7 else self.rng.randint(2, 10) if roll < 0.97 else 0
            size = size or self.rng.randint(20, 100)
            batch = size > 1
            jobs = [self._job() for _ in range(size)]
            tags = [j["kwargs"]["tag"] for j in jobs]
            url = f"{self.server.url}/jobs/batch" if batch else f"{self.server.url}/jobs"
            body: dict[str, Any] = {"jobs": jobs} if batch else jobs[0]
            ids: list[int] = []
            outcome, detail = "indeterminate", ""
            try:
                async with self.session.post(url, json=body) as resp:
                    text = await resp.text()
                    if 200 <= resp.status < 300:
                        data = json.loads(text)
                        ids = data["ids"] if batch else [data["id"]]
                        outcome = "ok"
                    else:
                        outcome, detail = "failed", f"HTTP {resp.status}: {text[:200]}"
            except aiohttp.ClientConnectorError as exc:
                outcome, detail = "failed", f"not connected: {exc}"  # nothing was sent
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                detail = f"{type(exc).__name__}: {exc}"  # sent, no answer: maybe stored
            self.log.record(self.cycle, tags, outcome, ids, detail)
            self.stats[outcome] += len(tags)
            await asyncio.sleep(self.rng.uniform(0, pause_s))


# -- one run -------------------------------------------------------------------------------------
class Chaos:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobserver-chaos-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = self.workdir / "chaos.db"
        self.exec_log = self.workdir / "executions.log"
        self.exec_log.touch()
        self.log = EnqueueLog(self.workdir / "enqueues.jsonl")
        self.summary = Summary(seed=args.seed, cycles_asked=args.cycles, workdir=str(self.workdir))
        # The runs the kills interrupted, as (job id, attempt): a job still `running` at the next
        # kill because no server recovered it in between is the same interrupted run.
        self.interrupted: set[tuple[int, int]] = set()
        self.cycle_stats: list[CycleStats] = []
        self.servers = 0

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(text, flush=True)

    def spawn(self) -> Server:
        self.servers += 1
        log_path = self.workdir / f"server-{self.servers:04d}.log"
        return Server(self.db, log_path, self.exec_log, self.args.concurrency)

    async def start(self, session: Any, cycle: int) -> Server | None:
        """A server that answers /healthz, or None (a start-up failure, recorded)."""
        for attempt in (1, 2):
            server = self.spawn()
            problem = await server.wait_ready(session)
            if problem is None:
                return server
            server.close()
            self.summary.failures.append(
                f"cycle {cycle}: server failed to start (try {attempt}): {problem}:"
                f" {server.output(600)}"
            )
        return None

    def after_kill(self, stats: CycleStats) -> None:
        verdict, running, pending = inspect_after_kill(self.db)
        self.summary.integrity_checks += 1
        stats.integrity = verdict
        stats.running_at_kill = len(running)
        stats.pending_at_kill = pending
        self.interrupted.update(running)
        if verdict != "ok":
            self.summary.failures.append(f"cycle {stats.cycle}: integrity_check: {verdict}")

    async def cycle(self, session: Any, cycle: int) -> bool:
        args = self.args
        if self.rng.random() < args.startup_kill_fraction:
            # Killed while starting up: opening the file, recovering the last crash's jobs,
            # maybe already running some of them.
            stats = CycleStats(cycle, "startup")
            server = self.spawn()
            began = time.monotonic()
            await asyncio.sleep(self.rng.uniform(0.05, 0.8))
            stats.uptime_s = time.monotonic() - began
            server.kill()
            server.close()
            self.summary.kills_at_startup += 1
        else:
            stats = CycleStats(cycle, "load")
            started = await self.start(session, cycle)
            if started is None:
                return False
            server = started
            load = Load(server, session, self.log, cycle, self.rng)
            load.poison = self.args.poison
            requests_before = self.log.requests
            clients = [asyncio.create_task(load.client(args.pause)) for _ in range(args.clients)]
            began = time.monotonic()
            await asyncio.sleep(self.rng.uniform(args.min_uptime, args.max_uptime))
            stats.uptime_s = time.monotonic() - began
            server.kill()  # SIGKILL with requests in flight
            load.stopped = True
            await asyncio.gather(*clients)
            server.close()
            stats.requests = self.log.requests - requests_before
            stats.acked_jobs = load.stats["ok"]
            stats.indeterminate_jobs = load.stats["indeterminate"]
            stats.failed_jobs = load.stats["failed"]
            self.summary.kills_under_load += 1
        self.after_kill(stats)
        self.cycle_stats.append(stats)
        self.summary.cycles += 1
        if args.verbose or cycle % 10 == 0 or cycle == args.cycles:
            self.say(
                f"cycle {cycle:4d} {stats.mode:7s} up {stats.uptime_s:4.2f} s"
                f" acked {stats.acked_jobs:4d} indeterminate {stats.indeterminate_jobs:2d}"
                f" failed {stats.failed_jobs:2d} | at the kill: running"
                f" {stats.running_at_kill:2d}, pending {stats.pending_at_kill:5d}"
                f" | integrity {stats.integrity}"
            )
        return True

    async def drain(self, session: Any) -> None:
        server = await self.start(session, self.summary.cycles + 1)
        if server is None:
            return
        began = time.monotonic()
        try:
            deadline = began + self.args.drain_timeout
            while True:
                busy = 0
                for status in ("pending", "running"):
                    async with session.get(
                        f"{server.url}/jobs", params={"status": status, "limit": "1"}
                    ) as resp:
                        busy += len((await resp.json())["items"])
                if not busy:
                    break
                if time.monotonic() > deadline:
                    self.summary.failures.append(
                        f"drain: jobs still pending or running after {self.args.drain_timeout} s"
                    )
                    break
                await asyncio.sleep(0.2)
            self.summary.drain_seconds = round(time.monotonic() - began, 2)
            server.proc.send_signal(signal.SIGTERM)
            try:
                code = server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                self.summary.failures.append(
                    f"drain: the server exited with {code} after SIGTERM: {server.output(600)}"
                )
        finally:
            server.close()

    def verify(self) -> None:
        s = self.summary
        log = self.log
        s.requests = log.requests
        s.jobs_acknowledged = len(log.ok)
        s.jobs_indeterminate = len(log.indeterminate)
        s.jobs_failed_to_enqueue = len(log.failed)
        s.jobs_sent = s.jobs_acknowledged + s.jobs_indeterminate + s.jobs_failed_to_enqueue

        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            verdict = "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
            s.integrity_checks += 1
            if verdict != "ok":
                s.failures.append(f"final integrity_check: {verdict}")
            rows = conn.execute("SELECT id, status, attempts, task, kwargs FROM jobs").fetchall()
        jobs: dict[int, tuple[str, int, str | None]] = {}
        by_tag: dict[str, int] = {}
        poison: set[int] = set()  # jobs of a poison task: they must end failed
        for job_id, status, attempts, task_name, kwargs in rows:
            ours = task_name == TASK or task_name in POISON_TASKS.values()
            tag = json.loads(kwargs).get("tag") if ours else None
            jobs[job_id] = (status, attempts, tag)
            if task_name in POISON_TASKS.values():
                poison.add(job_id)
            if tag is not None:
                by_tag[tag] = job_id
        s.jobs_in_db = len(jobs)
        s.poison_jobs = len(poison)

        # Lost: acknowledged, but not stored under the id we were given, or not ended as
        # expected (succeeded; a poison job failed).
        lost = []
        for tag, job_id in log.ok.items():
            stored = jobs.get(job_id)
            expected = "failed" if job_id in poison else "succeeded"
            if stored is None or stored[2] != tag or stored[0] != expected:
                lost.append(f"{tag} (id {job_id}): {stored}")
        s.lost, s.lost_examples = len(lost), lost[:20]

        # Unexpected: stored, but never sent (neither acknowledged nor indeterminate).
        sent = log.ok.keys() | log.indeterminate
        unexpected = [f"id {i}: {j}" for i, j in jobs.items() if j[2] is None or j[2] not in sent]
        s.unexpected, s.unexpected_examples = len(unexpected), unexpected[:20]
        s.refused_but_stored = sum(1 for tag in log.failed if tag in by_tag)
        s.indeterminate_stored = sum(1 for tag in log.indeterminate if tag in by_tag)
        s.not_succeeded = dict(
            Counter(
                j[0] for i, j in jobs.items() if j[0] != ("failed" if i in poison else "succeeded")
            )
        )

        # Executions: one per job, plus at most one more per kill that caught it running.
        runs: dict[int, list[int]] = {}
        for line in self.exec_log.read_text().splitlines():
            job_id_text, attempt_text, tag = line.split()
            job_id = int(job_id_text)
            runs.setdefault(job_id, []).append(int(attempt_text))
            if job_id in jobs and jobs[job_id][2] != tag:
                s.attempt_anomalies.append(
                    f"job {job_id} ran with tag {tag}, stored {jobs[job_id]}"
                )
        s.executions = sum(len(r) for r in runs.values())
        s.duplicates = sum(len(r) - 1 for r in runs.values())
        s.in_flight_at_kills = len(self.interrupted)
        s.duplicates_within_bound = s.duplicates <= s.in_flight_at_kills
        interrupted = Counter(job_id for job_id, _ in self.interrupted)
        for job_id, attempts in sorted(runs.items()):
            if len(attempts) - 1 > interrupted[job_id]:
                s.per_job_bound_violations.append(
                    f"job {job_id} ran {len(attempts)} times (attempts {attempts}),"
                    f" interrupted by {interrupted[job_id]} kill(s)"
                )
            if len(set(attempts)) != len(attempts):
                s.attempt_anomalies.append(f"job {job_id}: an attempt ran twice: {attempts}")
        for job_id, (status, attempts, _) in jobs.items():
            if status == "succeeded" and attempts not in runs.get(job_id, []):
                s.attempt_anomalies.append(
                    f"job {job_id} succeeded at attempt {attempts}, runs logged:"
                    f" {runs.get(job_id, [])}"
                )
        s.per_job_bound_violations = s.per_job_bound_violations[:20]
        s.attempt_anomalies = s.attempt_anomalies[:20]

    async def run(self) -> Summary:
        import aiohttp

        began = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            for cycle in range(1, self.args.cycles + 1):
                if time.monotonic() - began > self.args.max_seconds:
                    self.summary.failures.append(
                        f"stopped after {cycle - 1} cycles: --max-seconds {self.args.max_seconds}"
                    )
                    break
                # A fresh session per server: pooled connections to a killed one are dead.
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    if not await self.cycle(session, cycle):
                        break
            if self.summary.cycles:
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    await self.drain(session)
        finally:
            self.log.close()
        self.verify()
        self.summary.elapsed_seconds = round(time.monotonic() - began, 1)
        return self.summary


def report(s: Summary) -> str:
    kills = s.kills_under_load + s.kills_at_startup
    lines = [
        f"chaos: {s.cycles} cycles (seed {s.seed}): {kills} kill -9"
        f" ({s.kills_under_load} under load, {s.kills_at_startup} during start-up)",
        f"  enqueue requests        {s.requests}",
        f"  jobs sent               {s.jobs_sent}: acknowledged {s.jobs_acknowledged},"
        f" indeterminate {s.jobs_indeterminate} ({s.indeterminate_stored} of them stored),"
        f" refused {s.jobs_failed_to_enqueue}",
        f"  jobs in the database    {s.jobs_in_db}",
        f"  lost                    {s.lost}" + (f"  e.g. {s.lost_examples[:3]}" if s.lost else ""),
        f"  unexpected              {s.unexpected}"
        + (f"  e.g. {s.unexpected_examples[:3]}" if s.unexpected else ""),
        f"  refused but stored      {s.refused_but_stored}",
        f"  poison jobs (end failed) {s.poison_jobs}",
        f"  not as expected         {s.not_succeeded or 0}",
        f"  executions              {s.executions}",
        f"  duplicates              {s.duplicates} (jobs in flight at the kills:"
        f" {s.in_flight_at_kills}; within the bound: {s.duplicates_within_bound})",
        f"  per-job bound broken    {len(s.per_job_bound_violations)}",
        f"  attempt anomalies       {len(s.attempt_anomalies)}",
        f"  integrity checks        {s.integrity_checks}",
        f"  failures                {len(s.failures)}",
        f"  drain                   {s.drain_seconds} s; whole run {s.elapsed_seconds} s",
    ]
    for item in s.failures[:10] + s.per_job_bound_violations[:5] + s.attempt_anomalies[:5]:
        lines.append(f"    ! {item}")
    lines.append("PASS" if s.passed else "FAIL")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="kill -9 cycles (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent enqueuing clients")
    parser.add_argument("--concurrency", type=int, default=16, help="the server's --concurrency")
    parser.add_argument("--pause", type=float, default=0.05, help="max pause between requests")
    parser.add_argument("--min-uptime", type=float, default=0.1, help="seconds under load, min")
    parser.add_argument("--max-uptime", type=float, default=1.5, help="seconds under load, max")
    parser.add_argument(
        "--startup-kill-fraction", type=float, default=0.1, help="cycles killed at start-up"
    )
    parser.add_argument(
        "--poison", type=float, default=0.02, help="share of poison jobs (issue 19), 0 for none"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop cycling after")
    parser.add_argument("--workdir", help="keep the database and logs here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir even on success")
    parser.add_argument("--json", help="also write the summary to this file as JSON")
    parser.add_argument("--verbose", action="store_true", help="a line for every cycle")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    if args.cycles < 1 or args.min_uptime > args.max_uptime:
        parser.error("--cycles must be at least 1 and --min-uptime at most --max-uptime")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chaos = Chaos(args)
    summary = asyncio.run(chaos.run())
    print(report(summary), flush=True)
    if args.json:
        data = asdict(summary)
        data["passed"] = summary.passed
        data["cycle_stats"] = [asdict(c) for c in chaos.cycle_stats]
        Path(args.json).write_text(json.dumps(data, indent=2))
    if summary.passed and not args.keep and not args.workdir:
        shutil.rmtree(chaos.workdir, ignore_errors=True)
    else:
        print(f"database and logs: {chaos.workdir}", flush=True)
    return 0 if summary.passed else 1


if __name__ == "__main__":
    sys.exit(main())
