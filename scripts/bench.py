"""The benchmark of issue 5: every figure in one command, optionally written to BENCHMARKS.md.

    pip install -e '.[bench]'
    python scripts/bench.py                          # all figures, median of 3 runs
    python scripts/bench.py --write BENCHMARKS.md    # and write the file
    python scripts/bench.py --quick                  # smoke test: small N, 1 run, < 30 s

Figures (each the median of --runs runs; each comparison a ratio taken within one run):
 1. end-to-end no-op throughput: N jobs enqueued first, timed from worker start to the last
    completion, synchronous=FULL, in a fresh process;
 2. HTTP single enqueue, 64 connections from a separate load process (wrk, else an aiohttp
    client), against `jobserver serve` and against a bare aiohttp+uvloop endpoint;
 3. batch enqueue over HTTP (POST /jobs/batch, 1,000 jobs a request), or in-process
    `enqueue_many` when the server has no such route;
 4. latency from the HTTP enqueue to the task starting, idle workers: p50 and p99;
 5. cost growth: figure 1 with 1M pending and 1M finished jobs already in the database, RSS at
    idle, under load and with 1M queued, CPU at idle;
 6. peers on the same machine, same no-op job and N: huey (SqliteHuey), arq, RQ, Celery, SAQ and
    dramatiq, each enqueued first and then timed while its workers drain the queue.
 8. external workers (issue 23): the same `jobserver serve` drains no-op jobs with its own
    workers, then jobs of an external task through one Go reference worker over HTTP
    (scripts/bench_external.py's round; needs Go, else skipped);
 7. process isolation (issue 19) is measured by scripts/bench_isolation.py, which needs Celery
    and Redis beside it: isolated no-op jobs against Celery's prefork pool, and the no-op
    throughput while a CPU-bound task runs, in the server's process and in a child.

Temporary files go to a directory under --tmp (default: the system temp dir, which should be on
a real disk: fsync on tmpfs costs nothing and flatters synchronous=FULL).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
BIN = Path(sys.executable).parent
PY = sys.executable
TASKS = "bench_peers.jobserver_tasks"
DAY = 86_400.0
PROFILE_HZ = 100
NOTES_START = "<!-- notes:start -->"
NOTES_END = "<!-- notes:end -->"

if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

TARGETS = {
    "e2e_vs_peers": 5.0,
    "http_ratio": 0.7,
    "batch_rate": 150_000.0,
    "latency_p50_ms": 1.0,
    "latency_p99_ms": 3.0,
    "growth_within": 0.10,
    "rss_1m_mb": 100.0,
    "rss_idle_mb": 60.0,
}


def short_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def rows_label(args: argparse.Namespace) -> str:
    n = short_count(args.growth_rows)
    return f"{n} pending + {n} finished"


def log(message: str) -> None:
    print(message, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_int(value: float) -> str:
    return f"{value:,.0f}"


# -- processes ------------------------------------------------------------------------------------
def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(SCRIPTS), env.get("PYTHONPATH", "")] if p)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM the process group we started (workers fork children), then SIGKILL it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # children that outlived their parent (same group)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def watch_counter(
    client: Any, jobs: int, procs: list[subprocess.Popen[Any]], log_path: Path
) -> tuple[tuple[float, int], float]:
    """Poll the peers' completion counter (bench_peers/counter.py) until it reaches `jobs`;
    returns (time and count at the first completion seen, time of the last). Fails when a
    worker exits or the count stands still for 30 s."""
    from bench_peers.counter import KEY

    first: tuple[float, int] | None = None
    progress = (time.perf_counter(), 0)
    while True:
        time.sleep(0.005)
        count = int(client.get(KEY) or 0)
        now = time.perf_counter()
        if count and first is None:
            first = (now, count)
        if count >= jobs and first is not None:
            return first, now
        if count != progress[1]:
            progress = (now, count)
        dead = [p for p in procs if p.poll() is not None]
        if dead or now - progress[0] > 30:
            why = "a worker exited" if dead else "no progress for 30 s"
            tail = log_path.read_text(errors="replace")[-600:]
            raise RuntimeError(f"{why} after {count} of {jobs} jobs: {tail}")


def spawn(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


def run_json(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed: {done.stderr.strip()[-800:]}")
    return last_json(done.stdout)


def last_json(text: str) -> dict[str, Any]:
    """The last line of output that is a JSON object (py-spy adds lines of its own)."""
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON result in the output: {text[-400:]!r}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, proc: subprocess.Popen[Any], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited: {log_path.read_text()[-800:]}")
        with contextlib.suppress(OSError):
            if http("GET", url, timeout=1)[0] == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def rss_mb(pid: int) -> float:
    """Resident set size of a process and its children, in MiB (from /proc)."""
    total = 0
    for p in [pid, *children_of(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids = (task / "children").read_text().split()
            for kid in kids:
                found.append(int(kid))
                found.extend(children_of(int(kid)))
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def cpu_busy_fraction(interval: float = 1.0) -> float:
    """The whole machine's CPU use over `interval` seconds, from /proc/stat (0 to 1)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class Serve:
    """`jobserver serve` in a subprocess, as a user runs it (default flags but --db/--port)."""

    def __init__(self, bench: Bench, db: Path, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = bench.tmp / f"serve-{self.port}.log"
        cmd = [PY, "-m", "jobserver", "serve", "--db", str(db), "--port", str(self.port)]
        cmd += ["--tasks", TASKS, *bench.args.serve_arg]
        self.db = db
        self.proc = spawn(cmd, self.log_path, child_env(**(env or {})))
        try:
            wait_http(f"{self.url}/healthz", self.proc, self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)
        drop_db(self.db)

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BareServer:
    def __init__(self, bench: Bench) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = bench.tmp / f"bare-{self.port}.log"
        cmd = [PY, "-m", "bench_peers.bare_server", str(self.port)]
        self.proc = spawn(cmd, self.log_path, child_env())
        try:
            wait_http(f"{self.url}/healthz", self.proc, self.log_path)
        except BaseException:
            stop_process(self.proc)
            raise

    def __enter__(self) -> BareServer:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.proc)


# -- Redis ----------------------------------------------------------------------------------------
def redis_ping(host: str, port: int) -> str | None:
    """The server's version if a Redis answers PING there, else None."""
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\nINFO server\r\n")
            data = b""
            s.settimeout(1)
            while b"redis_version" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"redis_version" in data and b"\r\n\r\n" in data.split(b"redis_version")[1]:
                    break
    except OSError:
        return None
    if not data.startswith(b"+PONG"):
        return None
    found = re.search(rb"redis_version:([\w.]+)", data)
    return found.group(1).decode() if found else "?"


class RedisGuard:
    """Use the Redis on host:port; start a redis-server there if none answers, and stop it."""

    def __init__(self, host: str, port: int, tmp: Path) -> None:
        self.host, self.port, self.tmp = host, port, tmp
        self.started: subprocess.Popen[Any] | None = None
        self.version: str | None = None
        self.problem: str | None = None
        self.persistence = "?"

    def ensure(self) -> bool:
        if self.version is not None:
            return True
        if self.problem is not None:
            return False
        self.version = redis_ping(self.host, self.port)
        if self.version is not None:
            self.describe_persistence()
            return True
        server = shutil.which("redis-server")
        if server is None:
            self.problem = f"no Redis answers on {self.host}:{self.port} and redis-server is absent"
            return False
        cmd = [server, "--bind", self.host, "--port", str(self.port), "--save", ""]
        cmd += ["--appendonly", "no", "--dir", str(self.tmp)]
        self.started = spawn(cmd, self.tmp / "redis.log", dict(os.environ))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.version is None:
            time.sleep(0.1)
            self.version = redis_ping(self.host, self.port)
        if self.version is None:
            self.problem = "started redis-server but it does not answer"
            self.stop()
            return False
        log(f"started redis-server {self.version} on {self.host}:{self.port}")
        self.describe_persistence()
        return True

    def describe_persistence(self) -> str:
        """How this Redis persists writes (appendonly, appendfsync, save), for the report."""
        with contextlib.suppress(Exception):
            import redis

            client = redis.Redis(host=self.host, port=self.port)
            conf = {}
            for key in ("appendonly", "appendfsync", "save"):
                conf.update(client.config_get(key))
            client.close()
            aof = conf.get("appendonly") == "yes"
            self.persistence = (
                f"appendonly yes, appendfsync {conf.get('appendfsync')}"
                if aof
                else f"appendonly no, save '{conf.get('save', '')}'"
            )
        return self.persistence

    def stop(self) -> None:
        if self.started is not None:
            stop_process(self.started)
            self.started = None


# -- load generation ------------------------------------------------------------------------------
WRK_LUA = """local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
"""


def parse_wrk(text: str) -> dict[str, Any]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return {
        "rate": float(rate.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def load(bench: Bench, url: str, body: bytes, connections: int, seconds: float) -> dict[str, Any]:
    body_path = bench.tmp / f"body-{len(body)}.json"
    body_path.write_bytes(body)
    if bench.wrk:
        lua = bench.tmp / f"post-{len(body)}.lua"
        lua.write_text(WRK_LUA.format(body=body_path))
        base = [bench.wrk, "-t1", f"-c{connections}", "-s", str(lua)]
        warmup = max(1, round(bench.args.http_warmup))
        subprocess.run([*base, f"-d{warmup}s", url], capture_output=True, check=True)
        done = subprocess.run(
            [*base, f"-d{max(1, round(seconds))}s", url], capture_output=True, text=True, check=True
        )
        result = parse_wrk(done.stdout)
    else:
        cmd = [PY, "-m", "bench_peers.http_load", url, str(body_path)]
        cmd += ["--connections", str(connections), "--seconds", str(seconds)]
        cmd += ["--warmup", str(bench.args.http_warmup)]
        result = run_json(cmd, child_env(), timeout=seconds + 120)
    if result["non_2xx"] or result["errors"]:
        raise RuntimeError(f"{url}: {result['non_2xx']} non-2xx answers, {result['errors']} errors")
    return result


# -- the growth database --------------------------------------------------------------------------
# task, queue, args, kwargs, priority, status, attempts, max_retries, timeout_s, backoff
FINISHED_ROW = ("bench_noop", "default", b"[]", b"{}", 0, "succeeded", 1, 3, None, None)
PENDING_ROW = ("bench_noop", "default", b"[]", b"{}", 0, "pending", 0, 3, None, None)


def build_growth_db(path: Path, pending: int, finished: int) -> float:
    """The jobserver schema (made by the server itself), then rows inserted directly."""
    import uvloop

    from jobserver.store.sqlite import SQLiteStore

    began = time.perf_counter()

    async def make_schema() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    uvloop.run(make_schema())
    now = time.time()
    cols = (
        "task, queue, args, kwargs, priority, status, attempts, max_retries, timeout_s, backoff,"
        " created_at, run_at, started_at, completed_at, result"
    )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-200000")
    conn.execute("BEGIN")
    done_at = now - 3600
    conn.executemany(
        f"INSERT INTO jobs ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (*FINISHED_ROW, done_at, done_at, done_at, done_at + 0.001, b"null")
            for _ in range(finished)
        ),
    )
    conn.executemany(
        f"INSERT INTO jobs ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (*PENDING_ROW, now, now + 300 * DAY + i * 0.001, None, None, None)
            for i in range(pending)
        ),
    )
    conn.execute("COMMIT")  # no ANALYZE: the server never runs one, and stats change its plans
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - began


def drop_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-lock"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def copy_db(src: Path, dst: Path) -> None:
    drop_db(dst)
    shutil.copyfile(src, dst)


def fsync_cost_ms(directory: Path, rounds: int = 200) -> float:
    """What one small write + fsync costs where the databases live (tmpfs: about nothing)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        began = time.perf_counter()
        for _ in range(rounds):
            os.write(fd, b"x" * 100)
            os.fsync(fd)
        return (time.perf_counter() - began) / rounds * 1e3
    finally:
        os.close(fd)
        path.unlink()


# -- peers ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Peer:
    key: str
    title: str
    dists: list[str]  # distributions that must be installed; the first gives the version
    redis: bool
    settings: str
    workers: Callable[[Bench], list[list[str]]]
    env: dict[str, str] = dataclasses.field(default_factory=dict)


def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else (shutil.which(name) or name)


def _half(b: Bench) -> str:
    return str(max(1, b.args.concurrency // 2))


def _celery_args(b: Bench, i: int) -> list[str]:
    return [
        *["-A", "bench_peers.peer_celery", "worker", "-P", "threads", "-c", _half(b)],
        *["-n", f"bench{i}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        *["-l", "warning"],
    ]


# Settings: each peer's fastest configuration found on this 2-core machine with 20,000 jobs,
# concurrency like jobserver's (--concurrency, 64) where the peer has such a knob.
PEERS = [
    Peer(
        "huey",
        "huey (SqliteHuey)",
        ["huey"],
        False,
        "`huey_consumer -w 2 -k process`: 2 worker processes (4 processes or 4-16 threads were no"
        " faster); SqliteHuey defaults (WAL, SQLite's default synchronous=FULL); no result stored",
        lambda b: [
            [_tool("huey_consumer"), "bench_peers.peer_huey.huey", "-w", "2", "-k", "process"]
        ],
    ),
    Peer(
        "arq",
        "arq",
        ["arq"],
        True,
        "1 worker process, `max_jobs` = concurrency, `poll_delay=0.01` (the default 0.5 s gave"
        " about 650 jobs/s), `keep_result=0`; 2 processes were slower",
        lambda b: [[_tool("arq"), "bench_peers.peer_arq.WorkerSettings"]],
    ),
    Peer(
        "rq",
        "RQ",
        ["rq"],
        True,
        "2 processes of `rq worker -w rq.worker.SimpleWorker` (no fork per job; 3 were no"
        " faster), jobs enqueued with `enqueue_many`, `result_ttl=0`",
        lambda b: [[_tool("rq"), "worker", "-q", "-w", "rq.worker.SimpleWorker", *b.rq_args]] * 2,
    ),
    Peer(
        "celery",
        "Celery (Redis broker)",
        ["celery", "redis"],
        True,
        "2 processes of `celery worker -P threads -c` concurrency/2, `--without-gossip"
        " --without-mingle --without-heartbeat`, `task_ignore_result=True`, no result backend,"
        " `worker_prefetch_multiplier=64` (prefork -c 2: about 1,850 jobs/s; 2 x solo: 2,900)",
        lambda b: [[_tool("celery"), *_celery_args(b, i)] for i in range(2)],
    ),
    Peer(
        "saq",
        "SAQ",
        ["saq", "redis"],
        True,
        "`saq settings --workers 1`, `concurrency` = concurrency (2 workers were slower)",
        lambda b: [[_tool("saq"), "bench_peers.peer_saq.settings", "--workers", "1"]],
    ),
    Peer(
        "dramatiq",
        "dramatiq (Redis broker)",
        ["dramatiq", "redis"],
        True,
        "`dramatiq --processes 2 --threads` concurrency/2, no result backend (the default 8"
        " threads a process gave about 4,300 jobs/s; 16: 8,700; 64: 8,600)",
        lambda b: [[_tool("dramatiq"), "bench_peers.peer_dramatiq", "-p", "2", "-t", _half(b)]],
    ),
]


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the benchmark --------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="jobserver-bench-", dir=args.tmp))
        self.redis_url = f"redis://{args.redis_host}:{args.redis_port}/{args.redis_db}"
        self.rq_args = ["-u", self.redis_url, "bench"]
        self.redis = RedisGuard(args.redis_host, args.redis_port, self.tmp)
        self.wrk = self._find_wrk()
        self.results: dict[str, Any] = collections.defaultdict(list)
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.profiles: dict[str, dict[str, Any]] = {}
        self.started = datetime.datetime.now(datetime.UTC)
        self._db_counter = 0
        self.fsync_ms = fsync_cost_ms(self.tmp)

    def _find_wrk(self) -> str | None:
        if self.args.load == "python":
            return None
        found = shutil.which("wrk")
        if found is None and self.args.load == "wrk":
            if os.geteuid() == 0 and shutil.which("apt-get"):
                log("installing wrk with apt-get ...")
                subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
                cmd = ["apt-get", "install", "-y", "-qq", "wrk"]
                subprocess.run(cmd, capture_output=True, check=False)
                found = shutil.which("wrk")
            if found is None:
                log("wrk is not installed: using the aiohttp load process instead")
        return found

    def fresh_db(self, name: str) -> Path:
        self._db_counter += 1
        return self.tmp / f"{name}-{self._db_counter}.db"

    def wait_quiet(self) -> None:
        """Before a measurement: wait (up to --quiet-wait s) until the rest of the machine uses
        under --quiet-below of the CPU, and record what it used."""
        a = self.args
        if a.quiet_wait <= 0:
            return
        began = time.monotonic()
        while True:
            busy = cpu_busy_fraction(0.5)
            waited = time.monotonic() - began
            if busy <= a.quiet_below or waited >= a.quiet_wait:
                break
        if busy > a.quiet_below:
            log(f"  (the machine is busy: {busy:.0%} CPU used by others; measuring anyway)")
        self.results["background_busy"].append(busy)
        self.results["quiet_waited_s"].append(waited)

    def cleanup(self) -> None:
        if self.redis.version is not None:  # leave the peers' Redis database empty
            with contextlib.suppress(Exception):
                import redis

                redis.Redis.from_url(self.redis_url).flushdb()
        self.redis.stop()
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- figure 1 and 5: end to end in a fresh process ----------------------------------------
    def e2e(self, db: Path, jobs: int, keys: int = 0) -> dict[str, Any]:
        self.wait_quiet()
        cmd = [PY, "-m", "bench_peers.jobserver_inproc", "e2e", "--db", str(db)]
        cmd += ["--jobs", str(jobs), "--concurrency", str(self.args.concurrency)]
        cmd += ["--keys", str(keys)]
        try:
            return run_json(cmd, child_env(), timeout=max(600, jobs / 100))
        finally:
            drop_db(db)

    # -- figure 2 ---------------------------------------------------------------------------------
    def http_single(self, round_no: int) -> None:
        body = json.dumps({"task": "bench_noop", "delay": DAY}).encode()
        conns, secs = self.args.connections, self.args.http_seconds
        rates: dict[str, float] = {}

        def bare() -> None:
            with BareServer(self) as server:
                status, _ = http("POST", f"{server.url}/jobs", body)
                assert status == 202, status
                self.wait_quiet()
                rates["bare"] = load(self, f"{server.url}/jobs", body, conns, secs)["rate"]

        def ours() -> None:
            with Serve(self, self.fresh_db("http")) as server:
                time.sleep(1.0)
                self.results["rss_idle_serve_mb"].append(rss_mb(server.proc.pid))
                status, reply = http("POST", f"{server.url}/jobs", body)
                if status != 202:
                    raise RuntimeError(f"POST /jobs answered {status}: {reply[:300]!r}")
                self.wait_quiet()
                result = load(self, f"{server.url}/jobs", body, conns, secs)
                rates["jobserver"] = result["rate"]
                self.results["rss_http_load_mb"].append(rss_mb(server.proc.pid))
                # every 202 was a committed job: the newest id counts them (plus the warm-up)
                _, page = http("GET", f"{server.url}/jobs?limit=1")
                newest = json.loads(page)["items"][0]["id"]
                if newest < result["requests"]:
                    raise RuntimeError(f"{result['requests']} acknowledged but newest id {newest}")

        def ours_1m() -> None:
            db = self.fresh_db("http-1m")
            copy_db(self.growth_db(), db)
            with Serve(self, db) as server:
                self.wait_quiet()
                rates["jobserver_1m"] = load(self, f"{server.url}/jobs", body, conns, secs)["rate"]

        steps = [bare, ours] if round_no % 2 == 0 else [ours, bare]
        if not self.args.skip_growth:
            steps.append(ours_1m)
        for step in steps:
            step()
        if "jobserver_1m" in rates:
            self.results["http_jobserver_1m"].append(rates["jobserver_1m"])
            self.results["http_growth_ratio"].append(rates["jobserver_1m"] / rates["jobserver"])
            log(
                f"  HTTP single enqueue with {rows_label(self.args)}:"
                f" {fmt_int(rates['jobserver_1m'])}/s"
                f" ({rates['jobserver_1m'] / rates['jobserver']:.2f} of the empty database's)"
            )
        self.results["http_bare"].append(rates["bare"])
        self.results["http_jobserver"].append(rates["jobserver"])
        self.results["http_ratio"].append(rates["jobserver"] / rates["bare"])
        log(
            f"  HTTP single enqueue: jobserver {fmt_int(rates['jobserver'])}/s,"
            f" bare aiohttp {fmt_int(rates['bare'])}/s,"
            f" ratio {rates['jobserver'] / rates['bare']:.2f}"
        )

    # -- figure 3 ---------------------------------------------------------------------------------
    def batch(self) -> None:
        size = self.args.batch_size
        job: dict[str, Any] = {"task": "bench_noop", "args": [], "delay": DAY}
        with Serve(self, self.fresh_db("batch")) as server:
            url = f"{server.url}/jobs/batch"
            status, reply = http("POST", url, json.dumps({"jobs": [job, job]}).encode())
            if status == 422 and b"delay" in reply:
                job = {"task": "bench_noop", "args": []}  # no delay on this route: workers run
                status, reply = http("POST", url, json.dumps({"jobs": [job, job]}).encode())
                self.notes.append("POST /jobs/batch refused `delay`: its jobs ran meanwhile")
            if status in (404, 405):
                self.results["batch_mode"] = ["in-process"]
            elif status == 202 and len(json.loads(reply).get("ids", [])) == 2:
                body = json.dumps({"jobs": [job] * size}).encode()
                self.wait_quiet()
                result = load(self, url, body, self.args.batch_connections, self.args.http_seconds)
                rate = result["rate"] * size
                self.results["batch_mode"] = ["http"]
                self.results["batch_rate"].append(rate)
                log(f"  batch enqueue over HTTP: {fmt_int(rate)} jobs/s ({size} a request)")
                return
            else:
                raise RuntimeError(f"POST /jobs/batch answered {status}: {reply[:300]!r}")
        db = self.fresh_db("batch-inproc")
        cmd = [PY, "-m", "bench_peers.jobserver_inproc", "enqueue-many", "--db", str(db)]
        cmd += ["--jobs", str(self.args.batch_jobs), "--batch", str(size)]
        cmd += ["--clients", str(self.args.batch_connections)]
        try:
            rate = run_json(cmd, child_env(), timeout=600)["rate"]
        finally:
            drop_db(db)
        self.results["batch_rate"].append(rate)
        log(f"  batch enqueue: no POST /jobs/batch yet; in-process enqueue_many {fmt_int(rate)}/s")

    # -- figure 4 ---------------------------------------------------------------------------------
    def latency(self) -> None:
        stamps = self.tmp / f"stamps-{time.monotonic_ns()}.txt"
        count, warmup = self.args.latency_jobs, min(100, self.args.latency_jobs // 10)
        with Serve(self, self.fresh_db("latency"), env={"BENCH_STAMP_FILE": str(stamps)}) as srv:
            self.wait_quiet()
            sent = uvloop_run(self._latency_client(srv.url, count + warmup))
            deadline = time.monotonic() + 10
            started: dict[int, float] = {}
            while time.monotonic() < deadline and len(started) < len(sent):
                time.sleep(0.05)
                with contextlib.suppress(FileNotFoundError):
                    for line in stamps.read_text().splitlines():
                        seq, when = line.split()
                        started[int(seq)] = float(when)
        start_ms = sorted((started[i] - sent[i][0]) * 1e3 for i in range(warmup, len(sent)))
        ack_ms = sorted((sent[i][1] - sent[i][0]) * 1e3 for i in range(warmup, len(sent)))
        p50, p99 = quantile(start_ms, 0.5), quantile(start_ms, 0.99)
        self.results["latency_p50_ms"].append(p50)
        self.results["latency_p99_ms"].append(p99)
        self.results["ack_p50_ms"].append(quantile(ack_ms, 0.5))
        self.results["ack_p99_ms"].append(quantile(ack_ms, 0.99))
        log(f"  enqueue -> start latency: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({count} jobs)")

    async def _latency_client(self, url: str, count: int) -> list[tuple[float, float]]:
        import aiohttp

        sent: list[tuple[float, float]] = []
        async with aiohttp.ClientSession() as session:
            for seq in range(count):
                body = json.dumps({"task": "bench_stamp", "args": [seq]}).encode()
                began = time.time()
                async with session.post(
                    f"{url}/jobs", data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                    if resp.status != 202:
                        raise RuntimeError(f"POST /jobs answered {resp.status}")
                sent.append((began, time.time()))
                await asyncio.sleep(0.002)  # the job runs meanwhile: the workers are idle again
        return sent

    # -- figure 5 ---------------------------------------------------------------------------------
    def growth_db(self) -> Path:
        path = self.tmp / "growth-template.db"
        if not path.exists():
            n = self.args.growth_rows
            log(f"building the growth database: {n:,} pending + {n:,} finished jobs ...")
            took = build_growth_db(path, n, n)
            size = path.stat().st_size / 2**20
            log(f"  built in {took:.1f} s, {size:,.0f} MiB")
            self.results["growth_db_mb"] = [size]
        return path

    def idle_costs(self) -> None:
        """RSS at idle (empty database and with the growth rows) and CPU used over an idle span."""
        cases = [("empty", self.fresh_db("idle"))]
        if not self.args.skip_growth:
            big = self.fresh_db("idle-1m")
            copy_db(self.growth_db(), big)
            cases.append(("1m", big))
        for name, db in cases:
            with Serve(self, db) as server:
                time.sleep(2.0)
                before = cpu_seconds(server.proc.pid)
                time.sleep(self.args.idle_seconds)
                cpu = cpu_seconds(server.proc.pid) - before
                rss = rss_mb(server.proc.pid)
            self.results[f"rss_idle_{name}_mb"] = [rss]
            self.results[f"cpu_idle_{name}_s"] = [cpu]
            log(
                f"  idle server ({rows_label(self.args) if name == '1m' else 'empty db'}):"
                f" RSS {rss:.1f} MiB, CPU {cpu * 1000:.0f} ms over {self.args.idle_seconds:.0f} s"
            )

    # -- figure 6 ---------------------------------------------------------------------------------
    def peer_available(self, peer: Peer) -> bool:
        """Every peer needs its packages, the redis client and a Redis (the completion counter
        lives there, and it is the broker of all but huey)."""
        if peer.key in self.skipped:
            return False
        missing = [d for d in [*peer.dists, "redis"] if dist_version(d) is None]
        if missing:
            self.skipped[peer.key] = (
                f"not installed ({', '.join(missing)}): pip install -e '.[bench]'"
            )
        elif not self.redis.ensure():
            self.skipped[peer.key] = self.redis.problem or "no Redis"
        return peer.key not in self.skipped

    def run_peer(self, peer: Peer, jobs: int) -> dict[str, Any]:
        import redis
        from bench_peers.counter import KEY

        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        huey_db = self.tmp / "huey.db"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{huey_db}{suffix}").unlink()
        env = child_env(BENCH_REDIS_URL=self.redis_url, BENCH_HUEY_DB=str(huey_db))
        env["BENCH_CONCURRENCY"] = str(self.args.concurrency)
        began = time.perf_counter()
        done = subprocess.run(
            [PY, "-m", "bench_peers.enqueue", peer.key, str(jobs)],
            cwd=ROOT,
            env={**env, "BENCH_HUEY_FSYNC": "0"},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"enqueue failed: {done.stderr.strip()[-600:]}")
        enqueue_s = time.perf_counter() - began
        if int(client.get(KEY) or 0) != 0:
            raise RuntimeError("the counter moved before the workers started")
        log_path = self.tmp / f"peer-{peer.key}.log"
        self.wait_quiet()
        began = time.perf_counter()
        procs = [spawn(cmd, log_path, env) for cmd in peer.workers(self)]
        try:
            first, now = watch_counter(client, jobs, procs, log_path)
        finally:
            for p in procs:
                stop_process(p, timeout=15)
        from_launch = jobs / (now - began)
        steady = (jobs - first[1]) / (now - first[0]) if jobs > first[1] else from_launch
        return {"steady": steady, "from_launch": from_launch, "enqueue_s": enqueue_s}

    def peers(self, jobs: int, ours_rate: float) -> None:
        best = 0.0
        for peer in PEERS:
            if self.args.peers is not None and peer.key not in self.args.peers:
                continue
            if not self.peer_available(peer):
                continue
            try:
                result = self.run_peer(peer, jobs)
            except Exception as exc:
                self.skipped[peer.key] = f"failed: {exc}"
                log(f"  peer {peer.title}: FAILED, skipped from now on: {exc}")
                continue
            for k, v in result.items():
                self.results[f"peer_{peer.key}_{k}"].append(v)
            best = max(best, result["steady"])
            log(
                f"  peer {peer.title}: {fmt_int(result['steady'])} jobs/s"
                f" (from launch {fmt_int(result['from_launch'])}/s;"
                f" enqueue took {result['enqueue_s']:.1f} s)"
            )
        if best:
            self.results["best_peer"].append(best)
            self.results["e2e_vs_best_peer"].append(ours_rate / best)

    # -- profile ----------------------------------------------------------------------------------
    def run_profile(self) -> None:
        """py-spy over figure 1's worker run, and over the server under figures 2 and 3's load."""
        spy = _tool("py-spy")
        if not Path(spy).exists() and shutil.which("py-spy") is None:
            self.skipped["profile"] = "py-spy is not installed (pip install -e '.[bench]')"
            return
        flags = ["--native", "--threads", "--format", "raw", "-r", str(PROFILE_HZ)]
        a = self.args
        db = self.fresh_db("profile")
        jobs = a.jobs
        log(f"profiling figure 1 with py-spy ({jobs:,} jobs) ...")
        inproc = [PY, "-m", "bench_peers.jobserver_inproc"]
        run_json([*inproc, "prepare", "--db", str(db), "--jobs", str(jobs)], child_env(), 600)
        raw = self.tmp / "profile-e2e.txt"
        self.wait_quiet()
        cmd = [spy, "record", *flags, "-o", str(raw), "--", *inproc, "e2e", "--skip-enqueue"]
        cmd += ["--db", str(db), "--jobs", str(jobs), "--concurrency", str(a.concurrency)]
        began = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
        wall = time.perf_counter() - began
        drop_db(db)
        if done.returncode != 0 or not raw.exists():
            self.skipped["profile"] = f"py-spy failed: {done.stderr.strip()[-400:]}"
            return
        prof = summarize_profile(raw.read_text())
        prof["rate"] = last_json(done.stdout)["rate"]
        prof["wall_s"] = wall
        prof["what"] = (
            f"figure 1's worker run ({jobs:,} jobs already enqueued; process start to exit),"
            f" {fmt_int(prof['rate'])} jobs/s while sampled"
        )
        self.profiles["e2e"] = prof
        if a.profile_out:
            shutil.copyfile(raw, a.profile_out)
        if a.skip_http:
            return
        single = json.dumps({"task": "bench_noop", "delay": DAY}).encode()
        job = {"task": "bench_noop", "args": [], "delay": DAY}
        batch = json.dumps({"jobs": [job] * a.batch_size}).encode()
        for name, path, body, conns in [
            ("http", "/jobs", single, a.connections),
            ("batch", "/jobs/batch", batch, a.batch_connections),
        ]:
            log(f"profiling `jobserver serve` under POST {path} load ...")
            with Serve(self, self.fresh_db(f"profile-{name}")) as server:
                raw = self.tmp / f"profile-{name}.txt"
                self.wait_quiet()
                seconds = max(1, round(a.http_seconds))
                cmd = [spy, "record", *flags, "-o", str(raw), "-p", str(server.proc.pid)]
                cmd += ["-d", str(seconds + round(a.http_warmup))]
                spy_proc = subprocess.Popen(
                    cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
                time.sleep(0.3)
                try:
                    result = load(self, f"{server.url}{path}", body, conns, seconds)
                finally:
                    _, err = spy_proc.communicate(timeout=120)
            if spy_proc.returncode != 0 or not raw.exists():
                self.notes.append(f"py-spy on the server under {path} load failed: {err[-300:]}")
                continue
            prof = summarize_profile(raw.read_text())
            prof["wall_s"] = float(seconds + round(a.http_warmup))
            per = a.batch_size if name == "batch" else 1
            prof["what"] = (
                f"`jobserver serve` under {conns}-connection POST {path} load"
                f" ({fmt_int(result['rate'] * per)} jobs/s while sampled), warm-up included"
            )
            self.profiles[name] = prof

    # -- the whole run ----------------------------------------------------------------------------
    def external(self, jobs: int) -> None:
        """Figure 8: one Go worker over HTTP against the same server's own workers."""
        import bench_external

        go = shutil.which("go")
        if go is None:
            self.skipped["external"] = "Go is not installed (Debian: golang-go)"
            return
        where = Path(tempfile.mkdtemp(dir=self.tmp, prefix="external-"))
        worker = where / "go-worker"
        if not worker.exists():
            subprocess.run(
                [go, "build", "-o", str(worker), "."], cwd=bench_external.GO_WORKER, check=True
            )
        self.wait_quiet()
        inproc, external = bench_external.one_round(where, jobs, 256, [str(worker)])
        self.results["external_inproc"].append(inproc)
        self.results["external"].append(external)
        self.results["external_ratio"].append(external / inproc)
        log(
            f"  external worker (Go, over HTTP): {fmt_int(external)} jobs/s,"
            f" {external / inproc:.2f} of the same server's own workers ({fmt_int(inproc)})"
        )

    def run(self) -> None:
        a = self.args
        log(
            f"jobserver benchmark: {a.jobs:,} jobs, {a.runs} run(s), temp dir {self.tmp}"
            f" (fsync {self.fsync_ms:.2f} ms)"
        )
        for r in range(a.runs):
            log(f"run {r + 1} of {a.runs}")
            res = self.e2e(self.fresh_db("e2e"), a.jobs)
            self.results["e2e"].append(res["rate"])
            self.results["e2e_cpu_us_per_job"].append(res["cpu_us_per_job"])
            self.results["e2e_max_rss_mb"].append(res["max_rss_mb"])
            self.results["e2e_run_max_rss_mb"].append(res["run_max_rss_mb"])
            self.results["e2e_run_rss_start_mb"].append(res["run_rss_start_mb"])
            self.results["e2e_tx_per_job"].append(res["transactions"] / max(1, a.jobs))
            log(
                f"  end-to-end: {fmt_int(res['rate'])} jobs/s"
                f" ({res['cpu_us_per_job']:.0f} us CPU a job, RSS {res['run_rss_start_mb']:.0f} ->"
                f" {res['run_max_rss_mb']:.0f} MiB)"
            )
            if not a.skip_keys:
                keys = min(a.keys, a.jobs)
                keyed = self.e2e(self.fresh_db("e2e-keyed"), a.jobs, keys)
                self.results["e2e_keyed"].append(keyed["rate"])
                self.results["keyed_ratio"].append(keyed["rate"] / res["rate"])
                self.results["e2e_keyed_cpu_us_per_job"].append(keyed["cpu_us_per_job"])
                log(
                    f"  end-to-end, {keys:,} fairness keys: {fmt_int(keyed['rate'])} jobs/s"
                    f" ({keyed['rate'] / res['rate']:.2f} of the unkeyed;"
                    f" {keyed['cpu_us_per_job']:.0f} us CPU a job)"
                )
            if not a.skip_growth:
                db = self.fresh_db("e2e-1m")
                copy_db(self.growth_db(), db)
                big = self.e2e(db, a.jobs)
                self.results["e2e_1m"].append(big["rate"])
                self.results["e2e_1m_max_rss_mb"].append(big["run_max_rss_mb"])
                self.results["growth_ratio"].append(big["rate"] / res["rate"])
                log(
                    f"  end-to-end with {rows_label(a)}: {fmt_int(big['rate'])} jobs/s"
                    f" ({big['rate'] / res['rate']:.2f} of the empty database's)"
                )
            if not a.skip_http:
                self.http_single(r)
                self.batch()
                self.latency()
            if not a.skip_peers:
                self.peers(a.jobs, res["rate"])
            if not a.skip_external:
                self.external(min(a.jobs, 20_000))
        if not a.skip_http:
            self.idle_costs()
        if not a.skip_profile:
            self.run_profile()


def uvloop_run(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- the profile ----------------------------------------------------------------------------------
FRAME = re.compile(r"^(?P<fn>.+?) \((?P<where>[^()]*)\)$")


def _frame_name(frame: str) -> str:
    m = FRAME.match(frame)
    if m is None:
        return frame
    where = m.group("where")
    if m.group("fn").startswith("0x"):
        return f"[native] {where}"
    path, _, _line = where.rpartition(":")
    path = path or where
    for marker in ("site-packages/", "lib/python3.11/", "main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('fn')} ({path})"


# frames of the event loop and the interpreter themselves, left out of the inclusive tables
PLUMBING = (
    "(<frozen runpy>)",
    "(loop.c)",
    "(core.c)",
    "(object.h)",
    "(queue.h)",
    "(loop-watcher.c)",
    "(linux.c)",
    "(async.c)",
    "(_asynciomodule.c)",
    "(uvloop/__init__.py)",
    "(asyncio/runners.py)",
    "(libpython3.11.so.1.0)",
    "(ceval.c)",
)
IDLE_MARKERS = (
    "_queue_SimpleQueue_get",
    "epoll_pwait",
    "epoll_wait",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "sem_timedwait",
    "sem_clockwait",
    "select (",
    "poll (",
)


def _thread_kind(thread: str, frames: list[str]) -> str:
    name = thread.split(": ", 1)[-1]
    if "_connection_worker_thread" in name:
        return "SQLite threads (aiosqlite)"
    if "jobserver-task" in name:
        return "task thread pool"
    if "MainThread" in name or any(m in f for f in frames for m in ("run_forever", "runpy")):
        return "event loop thread"
    short = re.sub(r"[-_]?\d+", "", name).strip() or name
    return f"thread {short}"


def summarize_profile(raw: str) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks: per thread, how many samples were busy, waiting for the
    GIL, idle (blocked in a queue, epoll or a condition: py-spy --native cannot always tell) or
    importing; and over the busy samples alone, the top functions."""
    states: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaf: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        kind = _thread_kind(frames[0], frames)
        names = [_frame_name(f) for f in frames[1:]]
        if any("take_gil" in f for f in frames):
            state = "GIL wait"
        elif any("_find_and_load" in f for f in frames):
            state = "imports"
        elif any(marker in f for f in frames[-6:] for marker in IDLE_MARKERS):
            state = "idle"
        else:
            state = "busy"
        states[kind][state] += count
        if state != "busy":
            continue
        for name in set(names):
            inclusive[kind][name] += count
        if names:
            leaf[kind][names[-1]] += count
    return {
        "states": {k: dict(v) for k, v in states.items()},
        "inclusive": {k: v.most_common(60) for k, v in inclusive.items()},
        "leaf": {k: v.most_common(20) for k, v in leaf.items()},
    }


# -- the report -----------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        ram = f"{kb / 2**20:.1f} GiB"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
    }


def filesystem(path: Path) -> str:
    """The mount (type and device) a path is on, from /proc/mounts."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) >= len(best[0]):
                best = (mount, kind, dev)
    return f"{best[1]} ({best[2]} mounted on {best[0]})"


def versions(bench: Bench) -> dict[str, str]:
    out = {"Python": platform.python_version(), "SQLite": sqlite3.sqlite_version}
    for dist in ("jobserver", "aiohttp", "aiosqlite", "orjson", "uvloop"):
        out[dist] = dist_version(dist) or "not installed"
    if bench.redis.version:
        out["Redis server"] = bench.redis.version
    if bench.wrk:
        done = subprocess.run([bench.wrk, "--version"], capture_output=True, text=True)
        out["wrk"] = (done.stdout + done.stderr).split()[1] if done.stdout + done.stderr else "?"
    for dist in ("huey", "arq", "rq", "celery", "kombu", "saq", "dramatiq", "redis", "py-spy"):
        v = dist_version(dist)
        if v:
            out[dist] = v
    return out


def background_text(bench: Bench) -> str:
    busy = bench.results.get("background_busy")
    if not busy:
        return "not checked (--quiet-wait 0)"
    waited = bench.results["quiet_waited_s"]
    return (
        "this machine is shared; before each measurement the benchmark waited (up to"
        f" {bench.args.quiet_wait:.0f} s; {sum(waited):.0f} s in all) for the whole machine's CPU"
        f" use to drop under {bench.args.quiet_below:.0%}. Measured then: median"
        f" {median(busy):.0%}, max {max(busy):.0%} over {len(busy)} measurements"
    )


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def target_rows(bench: Bench) -> list[tuple[str, str, str]]:
    r, t = bench.results, TARGETS

    def m(key: str) -> float | None:
        return median(r[key]) if r.get(key) else None

    rows: list[tuple[str, str, str]] = []
    ratio = m("e2e_vs_best_peer")
    rows.append(
        (
            f"end-to-end >= {t['e2e_vs_peers']:.0f}x the fastest peer (goal 10x)",
            "not measured"
            if ratio is None
            else f"{ratio:.2f}x ({fmt_int(m('e2e') or 0)} vs"
            f" {fmt_int(m('best_peer') or 0)} jobs/s)",
            met(None if ratio is None else ratio >= t["e2e_vs_peers"]),
        )
    )
    ratio = m("http_ratio")
    rows.append(
        (
            f"HTTP single enqueue >= {t['http_ratio']}x bare aiohttp",
            "not measured"
            if ratio is None
            else f"{ratio:.2f}x ({fmt_int(m('http_jobserver') or 0)}"
            f" vs {fmt_int(m('http_bare') or 0)} req/s)",
            met(None if ratio is None else ratio >= t["http_ratio"]),
        )
    )
    rate = m("batch_rate")
    http_batch = r.get("batch_mode") == ["http"]
    rows.append(
        (
            f"batch enqueue >= {fmt_int(t['batch_rate'])} jobs/s",
            "not measured"
            if rate is None
            else f"{fmt_int(rate)} jobs/s" + ("" if http_batch else " (in-process: no HTTP route)"),
            met(None if rate is None or not http_batch else rate >= t["batch_rate"]),
        )
    )
    p50, p99 = m("latency_p50_ms"), m("latency_p99_ms")
    rows.append(
        (
            f"enqueue -> start p50 <= {t['latency_p50_ms']:.0f} ms,"
            f" p99 <= {t['latency_p99_ms']:.0f} ms",
            "not measured" if p50 is None else f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
            met(
                None
                if p50 is None or p99 is None
                else p50 <= t["latency_p50_ms"] and p99 <= t["latency_p99_ms"]
            ),
        )
    )
    growth, http_growth = m("growth_ratio"), m("http_growth_ratio")
    measured = []
    if growth is not None:
        measured.append(f"end-to-end {growth:.2f}")
    if http_growth is not None:
        measured.append(f"HTTP single enqueue {http_growth:.2f}")
    ratios = [g for g in (growth, http_growth) if g is not None]
    rows.append(
        (
            f"with {rows_label(bench.args)}: throughput within 10% of the empty database",
            "; ".join(measured) + " of the empty database's" if measured else "not measured",
            met(min(ratios) >= 1 - t["growth_within"] if ratios else None),
        )
    )
    rss = m("rss_idle_1m_mb")
    rows.append(
        (
            f"RSS < {t['rss_1m_mb']:.0f} MB with {short_count(bench.args.growth_rows)} queued",
            "not measured" if rss is None else f"{rss:.1f} MiB at idle",
            met(None if rss is None else rss * 1.048576 < t["rss_1m_mb"]),
        )
    )
    rss = m("rss_idle_empty_mb")
    cpu = m("cpu_idle_empty_s")
    cpu_1m = m("cpu_idle_1m_s")
    idle_s = bench.args.idle_seconds
    text = "not measured"
    if rss is not None and cpu is not None:
        text = f"{rss:.1f} MiB; CPU in {idle_s:.0f} s idle: {cpu * 1000:.0f} ms (empty database)"
        if cpu_1m is not None:
            text += f", {cpu_1m * 1000:.0f} ms ({short_count(bench.args.growth_rows)} queued)"
    busiest = max(c for c in (cpu, cpu_1m, 0.0) if c is not None)
    rows.append(
        (
            f"idle RSS < {t['rss_idle_mb']:.0f} MB, no busy polling at idle (< 1% of a core)",
            text,
            met(
                None
                if rss is None or cpu is None
                else rss * 1.048576 < t["rss_idle_mb"] and busiest < 0.01 * idle_s
            ),
        )
    )
    return rows


def runs_text(values: list[float], fmt: Callable[[float], str]) -> str:
    return ", ".join(fmt(v) for v in values)


def figure_lines(bench: Bench) -> Iterator[str]:
    r, a = bench.results, bench.args
    i, f2 = fmt_int, (lambda v: f"{v:.2f}")
    yield f"### 1. End-to-end no-op throughput ({a.jobs:,} jobs, synchronous=FULL)"
    yield ""
    if r.get("e2e"):
        yield f"**{i(median(r['e2e']))} jobs/s** (runs: {runs_text(r['e2e'], i)})."
        yield (
            f"CPU {median(r['e2e_cpu_us_per_job']):.0f} us a job (all threads),"
            f" {median(r['e2e_tx_per_job']):.3f} transactions a job (group commit). RSS under"
            f" load: {median(r['e2e_run_rss_start_mb']):.0f} MiB at worker start, at most"
            f" {median(r['e2e_run_max_rss_mb']):.0f} MiB while the {a.jobs:,} jobs ran (sampled"
            f" every 50 ms; the process's peak, {median(r['e2e_max_rss_mb']):.0f} MiB, is the"
            " harness's enqueue phase)."
        )
    if r.get("keyed_ratio"):
        yield ""
        yield (
            f"The same end-to-end run with every job given one of {min(a.keys, a.jobs):,}"
            f" fairness keys (job i has key i mod keys; issue 21):"
            f" **{i(median(r['e2e_keyed']))} jobs/s** (runs: {runs_text(r['e2e_keyed'], i)}),"
            f" **{median(r['keyed_ratio']):.2f}** of the unkeyed figure in the same run (runs:"
            f" {runs_text(r['keyed_ratio'], f2)}); CPU"
            f" {median(r['e2e_keyed_cpu_us_per_job']):.0f} us a job."
        )
    if r.get("external_ratio"):
        yield ""
        yield (
            "External workers (issue 23): one `jobserver serve` drains no-op jobs with its own"
            " workers, then as many jobs of an external task leased, run and reported over HTTP"
            " by one Go reference worker (examples/workers/go, batches of 256):"
            f" **{i(median(r['external']))} jobs/s** (runs: {runs_text(r['external'], i)}),"
            f" **{median(r['external_ratio']):.2f}** of the same server's own workers"
            f" (runs: {runs_text(r['external_ratio'], f2)})."
        )
    yield ""
    yield "### 2. HTTP single enqueue (one job a request, 64 connections)"
    yield ""
    if r.get("http_ratio"):
        tool = "wrk (1 thread)" if bench.wrk else "an aiohttp client process"
        yield (
            f"jobserver **{i(median(r['http_jobserver']))} req/s** (runs:"
            f" {runs_text(r['http_jobserver'], i)}); bare aiohttp+uvloop"
            f" **{i(median(r['http_bare']))} req/s** (runs: {runs_text(r['http_bare'], i)});"
            f" ratio **{median(r['http_ratio']):.2f}** (runs: {runs_text(r['http_ratio'], f2)})."
            f" Load from {tool}; every jobserver 202 is sent after its commit (synchronous=FULL)."
        )
    else:
        yield "Not measured (--skip-http)."
    yield ""
    yield f"### 3. Batch enqueue ({a.batch_size:,} jobs a request)"
    yield ""
    if r.get("batch_rate"):
        if r.get("batch_mode") == ["http"]:
            yield (
                f"**{i(median(r['batch_rate']))} jobs/s** over HTTP, `POST /jobs/batch`,"
                f" {a.batch_connections} connections (runs: {runs_text(r['batch_rate'], i)})."
            )
        else:
            yield (
                "The server has no `POST /jobs/batch` route yet (404/405), so this is in-process"
                f" `JobServer.enqueue_many`, {a.batch_connections} concurrent callers:"
                f" **{i(median(r['batch_rate']))} jobs/s** (runs: {runs_text(r['batch_rate'], i)})."
                " It is not the HTTP figure the target asks for."
            )
    else:
        yield "Not measured."
    yield ""
    yield "### 4. Latency, HTTP enqueue to the task starting (idle workers)"
    yield ""
    if r.get("latency_p50_ms"):
        yield (
            f"p50 **{median(r['latency_p50_ms']):.2f} ms**, p99 **{median(r['latency_p99_ms']):.2f}"
            f" ms** over {a.latency_jobs:,} sequential enqueues (runs: p50"
            f" {runs_text(r['latency_p50_ms'], f2)}; p99 {runs_text(r['latency_p99_ms'], f2)}). The"
            f" 202 itself: p50 {median(r['ack_p50_ms']):.2f} ms, p99"
            f" {median(r['ack_p99_ms']):.2f} ms."
        )
    else:
        yield "Not measured (--skip-http)."
    yield ""
    yield "### 5. Cost growth"
    yield ""
    if r.get("growth_ratio"):
        yield (
            f"End-to-end with {a.growth_rows:,} pending (run_at 300 days ahead) and"
            f" {a.growth_rows:,} finished jobs already in the database"
            f" ({median(r['growth_db_mb']):,.0f} MiB file): **{i(median(r['e2e_1m']))} jobs/s**"
            f" (runs: {runs_text(r['e2e_1m'], i)}), **{median(r['growth_ratio']):.2f}** of the"
            f" empty database's in the same run (runs: {runs_text(r['growth_ratio'], f2)}); peak"
            f" RSS {median(r['e2e_1m_max_rss_mb']):.0f} MiB while running."
        )
    if r.get("http_growth_ratio"):
        yield ""
        yield (
            f"HTTP single enqueue against a copy of that database:"
            f" **{i(median(r['http_jobserver_1m']))} req/s** (runs:"
            f" {runs_text(r['http_jobserver_1m'], i)}), **{median(r['http_growth_ratio']):.2f}**"
            f" of the empty database's in the same run (runs:"
            f" {runs_text(r['http_growth_ratio'], f2)})."
        )
    else:
        yield "Throughput growth not measured (--skip-growth)."
    yield ""
    rows = [
        ("idle, empty database", "rss_idle_empty_mb", "cpu_idle_empty_s"),
        (f"idle, {rows_label(a)}", "rss_idle_1m_mb", "cpu_idle_1m_s"),
        ("just started, before the HTTP load", "rss_idle_serve_mb", None),
        ("right after 64-connection HTTP enqueue load", "rss_http_load_mb", None),
        ("figure 1, at most while running (in-process server)", "e2e_run_max_rss_mb", None),
    ]
    if any(r.get(k) for _, k, _ in rows):
        yield f"`jobserver serve` process (RSS from /proc; CPU over {a.idle_seconds:.0f} s idle):"
        yield ""
        yield "| State | RSS | CPU at idle |"
        yield "|---|---|---|"
        for name, rss_key, cpu_key in rows:
            if r.get(rss_key):
                cpu = f"{median(r[cpu_key]) * 1000:.0f} ms" if cpu_key and r.get(cpu_key) else "-"
                yield f"| {name} | {median(r[rss_key]):.1f} MiB | {cpu} |"
        yield ""


def peer_lines(bench: Bench) -> Iterator[str]:
    r, a = bench.results, bench.args
    yield f"### 6. Peers ({a.jobs:,} no-op jobs, same machine)"
    yield ""
    ours = median(r["e2e"]) if r.get("e2e") else None
    yield (
        "| Queue | Version | Settings | jobs/s (steady) | jobs/s (from worker launch) |"
        " enqueue of N | jobserver / it |"
    )
    yield "|---|---|---|---|---|---|---|"
    if ours is not None:
        yield (
            f"| **jobserver** | {dist_version('jobserver')} | in-process workers, concurrency"
            f" {a.concurrency}, SQLite synchronous=FULL | {fmt_int(ours)} | {fmt_int(ours)} | - |"
            " 1.00 |"
        )
    for peer in PEERS:
        key = peer.key
        version = dist_version(peer.dists[0]) or "-"
        if r.get(f"peer_{key}_steady"):
            steady = median(r[f"peer_{key}_steady"])
            launch = median(r[f"peer_{key}_from_launch"])
            enq = median(r[f"peer_{key}_enqueue_s"])
            ratio = f"{ours / steady:.1f}" if ours else "-"
            yield (
                f"| {peer.title} | {version} | {peer.settings} | {fmt_int(steady)} |"
                f" {fmt_int(launch)} | {enq:.1f} s | {ratio} |"
            )
        else:
            why = bench.skipped.get(key, "not run (--skip-peers or --peers)")
            yield f"| {peer.title} | {version} | skipped: {why} | - | - | - | - |"
    yield ""
    if r.get("e2e_vs_best_peer"):
        yield (
            "jobserver / fastest peer, per run:"
            f" {runs_text(r['e2e_vs_best_peer'], '{:.2f}'.format)}"
            f" (median {median(r['e2e_vs_best_peer']):.2f})."
        )
        yield ""


def profile_lines(bench: Bench) -> Iterator[str]:
    yield "## Profile"
    yield ""
    if not bench.profiles:
        yield f"Not run ({bench.skipped.get('profile', '--skip-profile')})."
        yield ""
        return
    yield (
        f"py-spy `record --native --threads` at {PROFILE_HZ} Hz; it samples busy threads only."
        " A thread's share is its samples over those the span's wall time would give; samples"
        " blocked in a queue, epoll or a condition variable count as idle and are left out."
        " Sampling slows the process (the rate while sampled is shown)."
    )
    yield ""
    for prof in bench.profiles.values():
        yield from one_profile(prof)


def one_profile(prof: dict[str, Any]) -> Iterator[str]:
    possible = prof["wall_s"] * PROFILE_HZ
    yield f"### {prof['what']}"
    yield ""
    yield f"Share of the {prof['wall_s']:.1f} s span, by thread:"
    yield ""
    yield "| Thread | Busy | Waiting for the GIL | Importing (start-up) |"
    yield "|---|---|---|---|"
    busy = {k: v.get("busy", 0) for k, v in prof["states"].items()}
    for kind, st in sorted(prof["states"].items(), key=lambda kv: -busy[kv[0]]):
        if busy[kind] + st.get("GIL wait", 0) + st.get("imports", 0) < 0.01 * possible:
            continue
        yield (
            f"| {kind} | {busy[kind] / possible:.0%} | {st.get('GIL wait', 0) / possible:.0%} |"
            f" {st.get('imports', 0) / possible:.0%} |"
        )
    yield ""
    for kind in prof["inclusive"]:
        kind_total = busy[kind]
        if kind_total < 0.05 * possible:
            continue
        yield f"Top functions in the {kind} (inclusive, share of its busy samples):"
        yield ""
        yield "| Function | Inclusive |"
        yield "|---|---|"
        shown = 0
        for name, n in prof["inclusive"][kind]:
            if n >= 0.9 * kind_total or name.startswith("[native]") or name.endswith(PLUMBING):
                continue  # the thread's own entry frames, the event loop's machinery
            yield f"| `{name}` | {n / kind_total:.0%} |"
            shown += 1
            if shown == 25:
                break
        yield ""
        yield f"Top leaf frames in the {kind} (self time, share of its busy samples):"
        yield ""
        yield "| Frame | Self |"
        yield "|---|---|"
        for name, n in prof["leaf"][kind][:12]:
            yield f"| `{name}` | {n / kind_total:.0%} |"
        yield ""


def report(bench: Bench, command: str, old_notes: str | None, old_tail: str = "") -> str:
    a = bench.args
    mach = machine()
    vers = versions(bench)
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py` (issue 5). Every figure is the median of"
        f" {a.runs} run(s); every ratio is taken between measurements of the same run.",
        "",
        "## Machine and command",
        "",
        f"- CPU: {mach['cpu']}, {mach['cores']} cores; RAM {mach['ram']}; {mach['os']}",
        f"- Date: {bench.started.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command}`",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"- Background load: {background_text(bench)}",
        f"- Databases in a temporary directory under {a.tmp or tempfile.gettempdir()}, on"
        f" {filesystem(bench.tmp)}; a small write + fsync there takes {bench.fsync_ms:.2f} ms",
        "",
        "## Targets (issue 5)",
        "",
        "| Target | Measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {ok} |" for t, m, ok in target_rows(bench)]
    lines += ["", "## Figures", ""]
    lines += list(figure_lines(bench))
    lines += list(peer_lines(bench))
    lines += list(method_lines(bench))
    lines += list(profile_lines(bench))
    if bench.notes:
        lines += ["## Remarks from the run", ""] + [f"- {n}" for n in bench.notes] + [""]
    lines += [
        NOTES_START,
        old_notes.strip()
        if old_notes
        else "## Notes\n\n(Kept across reruns: text between these markers is carried over.)",
        NOTES_END,
    ]
    # sections others keep after the notes (e.g. scripts/bench_nodes.py's) are carried over too
    return "\n".join(lines) + (old_tail if old_tail.strip() else "\n")


def method_lines(bench: Bench) -> Iterator[str]:
    a = bench.args
    yield "## How each figure is measured"
    yield ""
    yield (
        "1. **End-to-end.** A fresh process (`bench_peers/jobserver_inproc.py e2e`) enqueues N"
        " `bench_noop` jobs through `server.store.enqueue` in batches of 5,000, closes the store,"
        " then times from `server.start()` to the N-th `succeeded` transition seen through"
        " `server.publisher.publish`, which still does the server's own work (metrics,"
        f" events, waiters). Concurrency {a.concurrency}, durability full"
        " (synchronous=FULL), logging unconfigured (no per-job log line)."
    )
    yield (
        "2. **HTTP single enqueue.** `jobserver serve --db ... --port ... --tasks"
        f" {TASKS}` (its defaults otherwise, so 16 workers and info logging, here to a file) and"
        " `bench_peers/bare_server.py` (aiohttp + uvloop, reads and parses the JSON body and"
        " answers 202 with a small JSON reply) each get the same load in turn:"
        f' {a.connections} keep-alive connections POSTing `{{"task": "bench_noop",'
        f' "delay": 86400}}` for {a.http_seconds:.0f} s after a {a.http_warmup:.0f} s warm-up,'
        " from wrk (`-t1`, a Lua script sets the POST body) in its own process, or an aiohttp"
        " client process when wrk is missing. The delay keeps the workers idle. Any non-2xx"
        " answer fails the run, and the newest job id is checked against the 202s counted."
    )
    yield (
        f'3. **Batch.** The same load tool POSTs `{{"jobs": [...]}}` with {a.batch_size:,} jobs'
        f" (each delayed a day) over {a.batch_connections} connections; jobs/s = requests/s x"
        f" {a.batch_size:,}. Without the route, in-process `enqueue_many` of {a.batch_jobs:,} jobs."
    )
    yield (
        f"4. **Latency.** {a.latency_jobs:,} sequential `POST /jobs` (after"
        f" {min(100, a.latency_jobs // 10)} warm-up ones) from an aiohttp client in the benchmark"
        " process, 2 ms apart so the workers are idle each time; the task `bench_stamp` writes"
        " `time.time()` when it starts, compared with the client's `time.time()` just before"
        " sending (same clock, two processes)."
    )
    yield (
        f"5. **Growth.** The server makes the schema once; then {a.growth_rows:,} finished and"
        f" {a.growth_rows:,} pending jobs (run_at 300 days ahead) are inserted with sqlite3"
        " `executemany`, and each run works on a copy. RSS is VmRSS of the `jobserver serve`"
        f" process; CPU at idle is utime + stime over {a.idle_seconds:.0f} s after a 2 s settle."
    )
    yield (
        "6. **Peers.** For each: flush a Redis database (db"
        f" {a.redis_db}), enqueue N no-op jobs from a separate process with the peer's own client,"
        " then start its workers and poll a completion counter every 5 ms. The task body is"
        " `bump()` (`bench_peers/counter.py`): an in-process increment under a lock, added to a"
        " Redis key by a daemon thread every 10 ms, so no task pays a network round trip and"
        " completions are seen at most about 15 ms late. **Steady** is (N - jobs done when the"
        " counter first moved) / (time from then to the last one): it leaves out the workers'"
        " start-up (imports, forks, connecting), which favours the peers, since jobserver's figure"
        " includes its own start. Settings are the peers' usual fast ones for a 2-core machine"
        " (two worker processes where the peer scales by processes, concurrency like ours where it"
        " is async); see the table. The Redis-based peers' durability is Redis's (here:"
        f" {bench.redis.persistence}), so unless that says `appendfsync always` they fsync"
        " nothing per job, less work than jobserver's synchronous=FULL."
    )
    yield ""


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=None, help="N for figures 1, 5 and 6 (100,000)")
    p.add_argument("--runs", type=int, default=None, help="runs per figure (3)")
    p.add_argument("--quick", action="store_true", help="smoke test: small N, 1 run, < 30 s")
    p.add_argument("--write", metavar="FILE", help="write the results as Markdown to FILE")
    p.add_argument("--concurrency", type=int, default=64, help="jobserver's and async peers'")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--http-seconds", type=float, default=None, help="per load run (10)")
    p.add_argument("--http-warmup", type=float, default=None, help="(1)")
    p.add_argument("--batch-size", type=int, default=1_000)
    p.add_argument("--batch-connections", type=int, default=4)
    p.add_argument("--batch-jobs", type=int, default=None, help="in-process fallback (100,000)")
    p.add_argument("--latency-jobs", type=int, default=None, help="(2,000)")
    p.add_argument("--growth-rows", type=int, default=None, help="pending and finished (1M)")
    p.add_argument("--idle-seconds", type=float, default=None, help="(10)")
    p.add_argument("--skip-growth", action="store_true", help="skip the 1M-row database")
    p.add_argument("--skip-keys", action="store_true", help="skip figure 1 with fairness keys")
    p.add_argument("--skip-external", action="store_true", help="skip figure 8 (external workers)")
    p.add_argument("--keys", type=int, default=100_000, help="fairness keys in figure 1 keyed")
    p.add_argument("--skip-http", action="store_true", help="skip figures 2-4 and idle costs")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--skip-profile", action="store_true")
    p.add_argument("--peers", type=lambda s: s.split(","), help="only these: huey,arq,rq,...")
    p.add_argument(
        "--load",
        choices=["wrk", "python"],
        default="wrk",
        help="wrk (installed with apt-get if missing, when root), or the aiohttp client process",
    )
    p.add_argument("--profile-out", help="also keep py-spy's raw stacks in this file")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `jobserver serve` flag")
    p.add_argument("--redis-host", default="127.0.0.1")
    p.add_argument("--redis-port", type=int, default=6379)
    p.add_argument("--redis-db", type=int, default=13, help="flushed before each peer run")
    p.add_argument(
        "--quiet-below",
        type=float,
        default=0.15,
        help="before each measurement, wait until the machine's CPU use is under this (0.15)",
    )
    p.add_argument(
        "--quiet-wait", type=float, default=None, help="but no longer than this, s (30; 0: off)"
    )
    p.add_argument("--tmp", default=None, help="where the temporary directory goes")
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "jobs": 2_000 if quick else 100_000,
        "runs": 1 if quick else 3,
        "http_seconds": 1.0 if quick else 10.0,
        "http_warmup": 1.0,
        "batch_jobs": 20_000 if quick else 100_000,
        "latency_jobs": 200 if quick else 2_000,
        "growth_rows": 1_000_000,
        "idle_seconds": 2.0 if quick else 10.0,
        "quiet_wait": 0.0 if quick else 30.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.skip_growth = True
        args.skip_profile = True
        if args.load == "wrk" and shutil.which("wrk") is None:
            args.load = "python"  # no installing in a smoke test
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers and workers started here are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    command = " ".join(["python scripts/bench.py", *(sys.argv[1:] if argv is None else argv)])
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.cleanup()
    print()
    print("Targets:")
    for target, measured, ok in target_rows(bench):
        print(f"  {target}: {measured} -> {ok.strip('*')}")
    for key, why in bench.skipped.items():
        print(f"  skipped {key}: {why}")
    if args.write:
        path = Path(args.write)
        old_notes, old_tail = None, ""
        if path.exists():
            text = path.read_text()
            if NOTES_START in text and NOTES_END in text:
                old_notes = text.split(NOTES_START, 1)[1].split(NOTES_END, 1)[0]
                old_tail = text.split(NOTES_END, 1)[1]
        path.write_text(report(bench, command, old_notes, old_tail))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
