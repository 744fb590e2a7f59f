"""Scale-out benchmark (issue 8, item 4): end-to-end no-op throughput of one `jobserver serve`
on SQLite, of 1, 2 and 3 `jobserver serve` nodes on one PostgreSQL database, and of pgqueuer,
the peer, on the same database.

    pip install -e '.[postgres]' pgqueuer
    python scripts/bench_nodes.py                  # N=20,000, median of 3 runs, with the peer
    python scripts/bench_nodes.py --quick          # smoke test: N=500, 1 run, no peer, < 30 s
    python scripts/bench_nodes.py --pg postgresql://postgres@127.0.0.1:5432/test --jobs 50000

The database is $JOBSERVER_TEST_PG, else --pg (default postgresql://postgres@127.0.0.1:5432/test).
Every run gets a fresh schema (dropped at the end, on errors too) and its own processes.

One jobserver run, N jobs, K nodes:
1. node 1 starts on a fresh SQLite file or a fresh schema (`?schema=bench_nodes_...`), which
   it creates; the `default` queue is then paused in SQL;
2. N no-op jobs go in through node 1's POST /jobs/batch, 10,000 a request, and stay pending;
3. nodes 2..K start and answer /healthz: every node is up and idle;
4. the queue is resumed in SQL and one more job is posted to node 1, which wakes every node
   (on PostgreSQL through its NOTIFY);
5. the count of succeeded jobs is polled every 50 ms until all N+1 are; the time is from the
   first job's start to the last completion, as the nodes stored them (started_at and
   completed_at, time.time() on this machine), so start-up and the 50 ms poll are not in it.

One pgqueuer run: its tables are installed in a fresh schema and N no-op jobs enqueued
(`Queries.enqueue`, 10,000 a call) with no worker running; then K worker processes start
(`pgqueuer.run`, as `pgq run` does, on uvloop) with as many jobs at once as a jobserver node
(--concurrency: `max_concurrent_tasks`, and batches of half that) and an asyncpg pool of the
same size as a node's (--peer-pool, 8); the queue table is polled every 50 ms until it is
empty; the time is from the first `picked` to the last `successful` row of pgqueuer's log (the
database's now()).

Each figure is the median of --runs runs. CPU is what the nodes (or workers) and the PostgreSQL
processes serving them (their backends, the WAL writer...) used while the jobs ran: per job,
and in cores busy; "whole machine" counts everything, so other work on the machine shows there.
--sample-waits samples pg_stat_activity during the PostgreSQL runs (what the backends wait on);
--profile DIR records each node with py-spy (raw collapsed stacks) during the timed part;
--experiment NAME adds rows where each node also loads a module of scripts/bench_nodes_peer/
that changes the PostgreSQL store, to measure a change before making it (rows marked *).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
PY = sys.executable
TASKS = "bench_nodes_peer.noop_tasks"
PEER_MODULE = "bench_nodes_peer.pgq_peer"
EXPERIMENTS = {  # --experiment NAME: a module loaded into each node, and what it changes
    "noreset": ("bench_nodes_peer.no_pool_reset", "no pool reset"),
    "noevents": ("bench_nodes_peer.no_cross_node_events", "no cross-node event reads"),
}
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 10_000  # POST /jobs/batch takes up to 10,000 jobs a request
POLL_S = 0.05
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- processes and schemas we own, cleaned up on every way out ------------------------------------
class Resources:
    """Every process started and every schema created, so that all are cleaned up."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.procs: list[subprocess.Popen[bytes]] = []
        self.schemas: list[str] = []

    def spawn(
        self, argv: list[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=SCRIPTS,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """Signal the process group we started; SIGKILL it if it is not gone in time."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc)

    async def drop_schema(self, schema: str) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
        if schema in self.schemas:
            self.schemas.remove(schema)

    async def close(self) -> None:
        self.stop_all()
        for schema in list(self.schemas):
            try:
                await self.drop_schema(schema)
            except Exception as exc:  # keep cleaning up the rest
                log(f"could not drop schema {schema}: {exc}")


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without JOBSERVER_* settings, with scripts/ importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSERVER_", "PGQUEUER_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SCRIPTS), env.get("PYTHONPATH")] if p)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- CPU accounting -------------------------------------------------------------------------------
def _cpu_of(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def _group_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and their children."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            total += _cpu_of(proc) + sum(_cpu_of(c) for c in proc.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return total


def pg_port(dsn: str) -> int:
    return urllib.parse.urlsplit(dsn).port or 5432


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process on this machine (backends, WAL writer...)."""
    cpu = {}
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("postgres", "postmaster"):
            cpu[proc.pid] = _cpu_of(proc)
    return cpu


async def pg_backends(conn: asyncpg.Connection | None, pids: list[int], pg_port: int) -> set[int]:
    """PostgreSQL's processes working for these processes: the backends of their connections,
    and the server's own (WAL writer, checkpointer...). Other clients' backends are left out."""
    if conn is None:
        return set()
    ports = await asyncio.to_thread(_pg_ports, pids, pg_port)
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE client_port = ANY($1::int[]) OR backend_type <> 'client backend'",
        ports,
    )
    return {r["pid"] for r in rows}


class CpuMeter:
    """CPU seconds used meanwhile by the nodes, by the PostgreSQL processes serving them, and
    by the whole machine (where other people's work shows). The backends are looked at again
    every SAMPLE_S: asyncpg's pools replace a connection after 50,000 queries, and a backend
    that ends takes its CPU time with it."""

    SAMPLE_S = 0.25

    def __init__(self, pids: list[int], conn: asyncpg.Connection | None, dsn: str) -> None:
        self.pids = pids
        self.conn = conn  # None: no PostgreSQL (SQLite runs)
        self.port = pg_port(dsn)
        self.wall0 = self.nodes0 = self.machine0 = 0.0
        self.pg_first: dict[int, float] = {}
        self.pg_last: dict[int, float] = {}
        self.sampled = 0.0

    async def start(self) -> None:
        self.wall0 = time.perf_counter()
        self.nodes0 = _group_cpu(self.pids)
        self.machine0 = _machine_busy()
        ours = await pg_backends(self.conn, self.pids, self.port)
        self.pg_first = {pid: cpu for pid, cpu in _postgres_cpu().items() if pid in ours}
        self.pg_last = dict(self.pg_first)
        self.sampled = time.monotonic()

    async def sample(self, force: bool = False) -> None:
        """Take the CPU of the backends now (call it often: the poll loops do)."""
        if self.conn is None or (not force and time.monotonic() - self.sampled < self.SAMPLE_S):
            return
        self.sampled = time.monotonic()
        ours = await pg_backends(self.conn, self.pids, self.port) | set(self.pg_last)
        for pid, cpu in _postgres_cpu().items():
            if pid in ours:
                self.pg_first.setdefault(pid, 0.0)  # new since start(): all of its CPU
                self.pg_last[pid] = cpu

    async def stop(self) -> tuple[float, float, float, float]:
        """(wall, nodes, PostgreSQL, machine) seconds since start()."""
        await self.sample(force=True)
        wall = time.perf_counter() - self.wall0
        pg = sum(self.pg_last[pid] - first for pid, first in self.pg_first.items())
        nodes = _group_cpu(self.pids) - self.nodes0
        return wall, nodes, pg, _machine_busy() - self.machine0


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (everything but idle and I/O wait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


# -- pg_stat_activity sampling --------------------------------------------------------------------
def _pg_ports(pids: list[int], pg_port: int) -> list[int]:
    """The local ports of these processes' (and their children's) connections to PostgreSQL."""
    ports = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                for c in p.net_connections(kind="tcp"):
                    if c.raddr and c.raddr.port == pg_port:
                        ports.append(c.laddr.port)
        except psutil.Error:
            continue
    return ports


class WaitSampler:
    """Samples, every 10 ms, what the backends serving the nodes do (the others' are left out:
    they may be anyone's)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pg_port = pg_port(dsn)
        self.counts: collections.Counter[str] = collections.Counter()
        self.queries: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self, pids: list[int]) -> None:
        conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._run(conn, pids))

    async def _run(self, conn: asyncpg.Connection, pids: list[int]) -> None:
        ports: list[int] = []
        refreshed = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() - refreshed > 0.5:  # pools open connections as they go
                    ports = await asyncio.to_thread(_pg_ports, pids, self.pg_port)
                    refreshed = time.monotonic()
                rows = await conn.fetch(
                    """SELECT coalesce(wait_event_type, 'CPU') AS type,
                              coalesce(wait_event, '-') AS event,
                              regexp_replace(left(query, 70), '\\s+', ' ', 'g') AS query
                       FROM pg_stat_activity
                       WHERE state = 'active' AND client_port = ANY($1::int[])""",
                    ports,
                )
                self.samples += 1
                for r in rows:
                    self.counts[f"{r['type']}:{r['event']}"] += 1
                    self.queries[r["query"]] += 1
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def report(self, label: str) -> str:
        if not self.samples:
            return ""
        lines = [
            f"pg_stat_activity, {label}: {self.samples} samples; the nodes' backends, active"
            " on average:"
        ]
        for key, n in self.counts.most_common(8):
            lines.append(f"  {n / self.samples:6.2f}  {key}")
        lines.append("  busiest statements (share of active samples):")
        total = sum(self.queries.values()) or 1
        for query, n in self.queries.most_common(8):
            lines.append(f"  {n / total:6.1%}  {query}")
        return "\n".join(lines)


# -- py-spy ---------------------------------------------------------------------------------------
class Profiler:
    def __init__(self, out_dir: Path | None, res: Resources) -> None:
        self.out_dir = out_dir
        self.res = res
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, label: str, pids: list[int]) -> None:
        if self.out_dir is None:
            return
        pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for i, pid in enumerate(pids, 1):
            out = self.out_dir / f"{label}-node{i}.txt"
            argv = [pyspy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
            argv += ["--output", str(out), "--nonblocking"]
            self.procs.append(self.res.spawn(argv, dict(os.environ), out.with_suffix(".log")))

    def stop(self) -> None:
        for proc in self.procs:
            self.res.stop(proc, signal.SIGINT)  # py-spy writes its file on SIGINT
        self.procs = []


# -- the jobserver side ---------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    jobs: int
    seconds: float  # first start to last completion
    wall: float  # the span CPU was measured over (release to the poll that saw the end)
    cpu_nodes: float  # seconds
    cpu_pg: float
    cpu_machine: float  # everything on the machine: others' work shows here

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def cores(self, cpu: float) -> float:
        return cpu / max(self.wall, 1e-9)

    @property
    def cpu_per_job_us(self) -> float:
        return (self.cpu_nodes + self.cpu_pg) / self.jobs * 1e6


class JobserverRun:
    """One run: K `jobserver serve` nodes on one store (a SQLite file or a PostgreSQL schema)."""

    def __init__(
        self,
        args: argparse.Namespace,
        res: Resources,
        workdir: Path,
        kind: str,
        k: int,
        tasks: str = TASKS,
    ) -> None:
        self.tasks = tasks
        self.args = args
        self.res = res
        self.workdir = workdir
        self.kind = kind  # "sqlite" or "postgres"
        self.k = k
        self.schema = f"bench_nodes_{os.getpid()}_{secrets.token_hex(4)}"
        self.db_file = workdir / "bench.db"
        self.nodes: list[tuple[subprocess.Popen[bytes], str, Path]] = []
        self._pg: asyncpg.Connection | None = None
        self._lite: sqlite3.Connection | None = None

    @property
    def db(self) -> str:
        if self.kind == "sqlite":
            return str(self.db_file)
        sep = "&" if "?" in self.args.pg else "?"
        return f"{self.args.pg}{sep}schema={self.schema}"

    def _start_node(self) -> None:
        port = free_port()
        index = len(self.nodes) + 1
        log_path = self.workdir / f"node{index}.log"
        argv = [PY, "-m", "jobserver", "serve", "--db", self.db, "--port", str(port)]
        argv += ["--tasks", self.tasks, "--concurrency", str(self.args.concurrency)]
        argv += ["--log-level", "warning"]
        proc = self.res.spawn(argv, child_env(), log_path)
        self.nodes.append((proc, f"http://127.0.0.1:{port}", log_path))

    async def _wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, url, log_path in self.nodes:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"a node exited with {proc.returncode}:\n{tail(log_path)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a node was not ready in time:\n{tail(log_path)}")
                await asyncio.sleep(0.05)

    # SQL on the store from this process, on one connection (a short transaction each)
    async def _sql(self, sql: str, *params: Any) -> Any:
        if self.kind == "sqlite":
            return await asyncio.to_thread(self._sqlite, sql, params)
        if self._pg is None:
            settings = {"search_path": self.schema}
            self._pg = await asyncpg.connect(self.args.pg, server_settings=settings)
        return await self._pg.fetchrow(sql, *params)

    def _sqlite(self, sql: str, params: tuple[Any, ...]) -> Any:
        if self._lite is None:
            self._lite = sqlite3.connect(
                self.db_file, timeout=10, isolation_level=None, check_same_thread=False
            )
        return self._lite.execute(sql.replace("$1", "?"), params).fetchone()

    async def _close_sql(self) -> None:
        if self._pg is not None:
            await self._pg.close()
            self._pg = None
        if self._lite is not None:
            self._lite.close()
            self._lite = None

    async def _set_paused(self, paused: bool) -> None:
        flag = ("TRUE" if paused else "FALSE") if self.kind == "postgres" else str(int(paused))
        await self._sql(
            f"INSERT INTO queues (name, paused) VALUES ('default', {flag})"
            f" ON CONFLICT (name) DO UPDATE SET paused = {flag}"
        )

    async def _count(self, status: str) -> int:
        row = await self._sql("SELECT count(*) FROM jobs WHERE status = $1", status)
        return int(row[0])

    async def run(self, session: aiohttp.ClientSession, sampler: WaitSampler | None,
                  profiler: Profiler, label: str) -> RunResult:  # fmt: skip
        jobs = self.args.jobs
        if self.kind == "postgres":
            self.res.schemas.append(self.schema)
        try:
            self._start_node()
            await self._wait_ready(session)
            await self._set_paused(True)
            url = self.nodes[0][1]
            for start in range(0, jobs, BATCH):
                body = {"jobs": [{"task": "noop"}] * min(BATCH, jobs - start)}
                async with session.post(f"{url}/jobs/batch", json=body) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"POST /jobs/batch: {resp.status} {await resp.text()}")
            for _ in range(self.k - 1):
                self._start_node()
            await self._wait_ready(session)
            pending = await self._count("pending")
            if pending != jobs:
                raise RuntimeError(f"{pending} jobs pending before the start, not {jobs}")
            total = jobs + 1  # the job that wakes the nodes

            pids = [proc.pid for proc, _, _ in self.nodes]
            meter = CpuMeter(pids, self._pg, self.args.pg)
            await meter.start()
            profiler.start(label, pids)
            if sampler is not None:
                await sampler.start(pids)
            released = time.time()
            await self._set_paused(False)
            async with session.post(f"{url}/jobs", json={"task": "noop"}) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"POST /jobs: {resp.status} {await resp.text()}")
            deadline = time.monotonic() + self.args.timeout
            while (done := await self._count("succeeded")) < total:
                for proc, _, log_path in self.nodes:
                    if proc.poll() is not None:
                        raise RuntimeError(f"a node exited mid-run:\n{tail(log_path)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {done} of {total} jobs done in {self.args.timeout} s")
                await meter.sample()
                await asyncio.sleep(POLL_S)
            seen = time.time()
            cpu = await meter.stop()
            if sampler is not None:
                await sampler.stop()
            profiler.stop()
            first, last = await self._sql("SELECT min(started_at), max(completed_at) FROM jobs")
            if not (released - 1 <= first <= last <= seen + 1):
                first, last = released, seen  # clocks disagree: fall back on the wall clock
            return RunResult(total, last - first, *cpu)
        finally:
            profiler.stop()
            await self._close_sql()
            for proc, _, _ in self.nodes:
                self.res.stop(proc)
            if self.kind == "postgres":
                await self.res.drop_schema(self.schema)


# -- the peer: pgqueuer ---------------------------------------------------------------------------
class PgqueuerRun:
    def __init__(self, args: argparse.Namespace, res: Resources, workdir: Path, k: int) -> None:
        self.args = args
        self.res = res
        self.workdir = workdir
        self.k = k
        self.schema = f"bench_pgq_{os.getpid()}_{secrets.token_hex(4)}"
        self._pg: asyncpg.Connection | None = None

    def _env(self) -> dict[str, str]:
        stamps = self.workdir / "stamps"
        stamps.mkdir(exist_ok=True)
        return child_env(
            PGDSN=self.args.pg,
            PGQUEUER_SCHEMA=self.schema,
            PGQUEUER_CHANNEL=f"ch_{self.schema}",
            BENCH_STAMP_DIR=str(stamps),
            BENCH_PGQ_POOL=str(self.args.peer_pool),
        )

    def _check(self, workers: list[subprocess.Popen[bytes]]) -> None:
        for i, w in enumerate(workers, 1):
            if w.poll() is not None:
                raise RuntimeError(f"a worker exited:\n{tail(self.workdir / f'w{i}.log')}")

    async def _fetchrow(self, sql: str) -> Any:
        if self._pg is None:
            settings = {"search_path": self.schema}
            self._pg = await asyncpg.connect(self.args.pg, server_settings=settings)
        return await self._pg.fetchrow(sql)

    async def run(self, sampler: WaitSampler | None, profiler: Profiler, label: str) -> RunResult:
        jobs = self.args.jobs
        self.res.schemas.append(self.schema)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            prep_log = self.workdir / "prepare.log"
            prep = self.res.spawn(
                [PY, "-m", PEER_MODULE, "prepare", str(jobs)], self._env(), prep_log
            )
            while prep.poll() is None:
                await asyncio.sleep(0.05)
            self.res.procs.remove(prep)
            if prep.returncode != 0:
                raise RuntimeError(f"pgqueuer prepare failed:\n{tail(prep_log)}")
            queued = (await self._fetchrow("SELECT count(*) FROM pgqueuer"))[0]
            if queued != jobs:
                raise RuntimeError(f"{queued} pgqueuer jobs queued, not {jobs}")

            concurrency = self.args.concurrency
            batch = max(1, concurrency // 2)  # pgqueuer wants max_concurrent >= 2 x batch
            argv = [PY, "-m", PEER_MODULE, "work", str(batch), str(concurrency)]
            for i in range(self.k):
                workers.append(self.res.spawn(argv, self._env(), self.workdir / f"w{i + 1}.log"))
            stamps = self.workdir / "stamps"
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not any(stamps.iterdir()):  # until a first job started: start-up is done
                self._check(workers)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no pgqueuer job started in {READY_TIMEOUT_S} s")
                await asyncio.sleep(0.005)
            pids = [w.pid for w in workers]
            meter = CpuMeter(pids, self._pg, self.args.pg)
            await meter.start()
            profiler.start(label, pids)
            if sampler is not None:
                await sampler.start(pids)
            deadline = time.monotonic() + self.args.timeout
            while (left := (await self._fetchrow("SELECT count(*) FROM pgqueuer"))[0]) > 0:
                self._check(workers)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} pgqueuer jobs left after {self.args.timeout} s")
                await meter.sample()
                await asyncio.sleep(POLL_S)
            cpu = await meter.stop()
            if sampler is not None:
                await sampler.stop()
            profiler.stop()
            row = await self._fetchrow(
                """SELECT extract(epoch FROM min(created) FILTER (WHERE status = 'picked')),
                          extract(epoch FROM max(created) FILTER (WHERE status = 'successful')),
                          count(*) FILTER (WHERE status = 'successful')
                   FROM pgqueuer_log"""
            )
            first, last, succeeded = float(row[0]), float(row[1]), row[2]
            if succeeded != jobs:
                raise RuntimeError(f"pgqueuer logged {succeeded} successful jobs, not {jobs}")
            return RunResult(jobs, last - first, *cpu)
        finally:
            profiler.stop()
            if self._pg is not None:
                await self._pg.close()
            for w in workers:
                self.res.stop(w)
            await self.res.drop_schema(self.schema)


# -- the whole benchmark --------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    label: str
    results: list[RunResult]

    @property
    def rate(self) -> float:
        return statistics.median(r.rate for r in self.results)

    def median_of(self, field: Callable[[RunResult], float]) -> float:
        return statistics.median(field(r) for r in self.results)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def server_facts(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        facts = {"version": (await conn.fetchval("SHOW server_version"))}
        for name in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
            facts[name] = await conn.fetchval(f"SHOW {name}")
        others = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        facts["other_active"] = str(others)
        return facts
    finally:
        await conn.close()


def source_state() -> str:
    """The commit benchmarked, and whether jobserver/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "jobserver"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "jobserver (not a git checkout)"
    return f"jobserver at {head}" + (" with uncommitted changes in jobserver/" if dirty else "")


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


async def repeat(label: str, runs: int, one: Callable[[int], Awaitable[RunResult]]) -> Row:
    results = []
    for i in range(runs):
        r = await one(i)
        log(
            f"  {label}, run {i + 1}: {r.rate:,.0f} jobs/s ({r.jobs:,} jobs in {r.seconds:.2f} s;"
            f" cores busy: nodes {r.cores(r.cpu_nodes):.2f}, PostgreSQL {r.cores(r.cpu_pg):.2f},"
            f" machine {r.cores(r.cpu_machine):.2f} of {os.cpu_count()};"
            f" {r.cpu_per_job_us:.0f} us CPU a job)"
        )
        results.append(r)
    return Row(label, results)


@contextlib.contextmanager
def workdir(base: str | None, name: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"bench_nodes_{name}_", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def bench(args: argparse.Namespace, res: Resources) -> str:
    facts = await server_facts(args.pg)
    log(
        f"PostgreSQL {facts['version']} at {args.pg} ({facts['other_active']} other active"
        f" backends); N={args.jobs:,}, {args.runs} run(s), concurrency {args.concurrency} per node"
    )
    rows: list[Row] = []
    timeout = aiohttp.ClientTimeout(total=120)
    samplers: list[tuple[str, WaitSampler]] = []
    profiler = Profiler(args.profile, res)

    def sampler_for(label: str) -> WaitSampler | None:
        if not args.sample_waits or label.startswith("SQLite"):
            return None
        sampler = WaitSampler(args.pg)
        samplers.append((label, sampler))
        return sampler

    async with aiohttp.ClientSession(timeout=timeout) as session:

        def jobserver(
            kind: str, k: int, label: str, tasks: str
        ) -> Callable[[int], Awaitable[RunResult]]:
            async def one(i: int) -> RunResult:
                with workdir(args.tmp, f"{kind}{k}") as wd:
                    run = JobserverRun(args, res, wd, kind, k, tasks)
                    extra = tasks.removeprefix(TASKS).replace("bench_nodes_peer.", "")
                    tag = f"{kind}-{k}{extra.replace(',', '-')}-run{i + 1}"
                    return await run.run(session, sampler_for(label), profiler, tag)

            return one

        configs = [("sqlite", 1, "SQLite, 1 node", TASKS)]
        for k in args.nodes:
            configs.append(("postgres", k, f"PostgreSQL, {k} node{'s' if k > 1 else ''}", TASKS))
        for names in args.experiment:
            modules = ",".join(EXPERIMENTS[n][0] for n in names)
            what = " + ".join(EXPERIMENTS[n][1] for n in names)
            for k in args.nodes:
                label = f"PostgreSQL, {k} node{'s' if k > 1 else ''}, {what}*"
                configs.append(("postgres", k, label, f"{TASKS},{modules}"))
        for kind, k, label, tasks in configs:
            log(f"{label}:")
            rows.append(await repeat(label, args.runs, jobserver(kind, k, label, tasks)))

        if args.peer:
            for k in args.peer_nodes:
                label = f"pgqueuer {version_of('pgqueuer')}, {k} worker{'s' if k > 1 else ''}"

                async def one(i: int, k: int = k, label: str = label) -> RunResult:
                    with workdir(args.tmp, f"pgq{k}") as wd:
                        run = PgqueuerRun(args, res, wd, k)
                        return await run.run(sampler_for(label), profiler, f"pgq-{k}-run{i + 1}")

                log(f"{label}:")
                rows.append(await repeat(label, args.runs, one))

    for label, sampler in samplers:
        log(sampler.report(label))
    return render(args, rows, facts)


def render(args: argparse.Namespace, rows: list[Row], facts: dict[str, str]) -> str:
    base = rows[0].rate
    lines = [
        f"No-op jobs end to end: {args.jobs:,} jobs enqueued first, then timed from the first start"
        f" to the last completion; median of {args.runs} run(s); {args.concurrency} jobs at once"
        " per node (pgqueuer: `max_concurrent_tasks`, batches of half that).",
        "",
        "| Setup | jobs/s | vs SQLite | CPU a job (nodes + PostgreSQL) | cores busy:"
        " nodes, PostgreSQL, whole machine |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_job = row.median_of(lambda r: r.cpu_per_job_us)
        nodes = row.median_of(lambda r: r.cores(r.cpu_nodes))
        pg = row.median_of(lambda r: r.cores(r.cpu_pg))
        machine = row.median_of(lambda r: r.cores(r.cpu_machine))
        lines.append(
            f"| {row.label} | {row.rate:,.0f} | {row.rate / base:.2f}x | {per_job:.0f} µs"
            f" | {nodes:.2f}, {pg:.2f}, {machine:.2f} |"
        )
    if args.experiment:
        lines += [
            "",
            "\\* Experiments, not jobserver as it is: a module of scripts/bench_nodes_peer/ loaded"
            " into each node. no_pool_reset.py skips asyncpg's reset query when a"
            " connection goes back to the pool; no_cross_node_events.py stops the reads of every"
            " job another node finished (for GET /events).",
        ]
    command = " ".join(shlex.quote(a) for a in ["python", "scripts/bench_nodes.py", *sys.argv[1:]])
    lines += [
        "",
        f"Command: `{command}`",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" PostgreSQL {facts['version']} on the same machine (synchronous_commit"
        f" {facts['synchronous_commit']}, fsync {facts['fsync']}, shared_buffers"
        f" {facts['shared_buffers']}); SQLite {sqlite3.sqlite_version} with synchronous=FULL;"
        f" asyncpg {version_of('asyncpg')}"
        + (f", pgqueuer {version_of('pgqueuer')}." if args.peer else "."),
        f"Source: {source_state()}.",
    ]
    return "\n".join(lines)


def parse_nodes(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers like 1,2,3, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be numbers like 1,2,3, got {text!r}")
    return values


def parse_experiment(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"must be some of {', '.join(EXPERIMENTS)}: {text!r}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="N, jobs a run (default 20,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is shown")
    parser.add_argument("--concurrency", type=int, default=64, help="jobs at once per node")
    parser.add_argument("--nodes", type=parse_nodes, default=[1, 2, 3], help="PostgreSQL nodes")
    parser.add_argument("--pg", default=os.environ.get("JOBSERVER_TEST_PG") or DEFAULT_PG)
    parser.add_argument("--no-peer", dest="peer", action="store_false", help="skip pgqueuer")
    parser.add_argument(
        "--peer-nodes", type=parse_nodes, default=[1, 2, 3], help="pgqueuer worker processes"
    )
    parser.add_argument(
        "--peer-pool",
        type=int,
        default=8,
        help="a pgqueuer worker's asyncpg pool size, as a node's (default 8; 0: one connection)",
    )
    parser.add_argument("--quick", action="store_true", help="N=500, 1 run, no peer: < 30 s")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    parser.add_argument("--tmp", default=None, help="where SQLite files go (a real disk)")
    parser.add_argument("--sample-waits", action="store_true", help="sample pg_stat_activity")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    parser.add_argument(
        "--experiment",
        type=parse_experiment,
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="also PostgreSQL with a change loaded into the nodes (repeatable): noreset"
        " (bench_nodes_peer/no_pool_reset.py), noevents (no_cross_node_events.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.runs, args.peer = 500, 1, False
    if args.peer and importlib.util.find_spec("pgqueuer") is None:
        parser.error("pgqueuer is not installed: pip install pgqueuer, or pass --no-peer")

    res = Resources(args.pg)

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    try:
        table = asyncio.run(bench(args, res))
    except KeyboardInterrupt:
        log("interrupted: stopping the processes and dropping the schemas")
        asyncio.run(res.close())
        return 130
    except BaseException:
        asyncio.run(res.close())
        raise
    asyncio.run(res.close())
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
