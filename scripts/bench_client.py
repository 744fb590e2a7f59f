"""Single enqueues from a Python program, one after another, through each queue's own client.

    python scripts/bench_client.py [--jobs 2000] [--rounds 3]

What an app pays to hand one job over: jobserver's `Client` (blocking) and `AsyncClient`
(awaited one at a time) against a `jobserver serve` on this machine, beside the same loop
through RQ, dramatiq, Celery (Redis broker), SAQ and arq (Redis) and huey (SqliteHuey). Each
arm runs in a process of its own, `--jobs` enqueues a round after a warm-up of 200; rounds are
interleaved, the median is quoted, and each peer as a ratio to jobserver's blocking client in
the same round. No worker runs: the jobs pile up and are dropped after (Redis db 15 is
flushed; the database files are temporary).

Needs the bench extra (`pip install -e '.[bench]'`) and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/15"
WARMUP = 200
ARMS = ("jobserver", "jobserver-async", "rq", "dramatiq", "celery", "saq", "arq", "huey")


# -- one arm, in its own process -------------------------------------------------------------------
def _time_sync(enqueue: Any, n: int) -> float:
    for _ in range(WARMUP):
        enqueue()
    started = time.perf_counter()
    for _ in range(n):
        enqueue()
    return n / (time.perf_counter() - started)


async def _time_async(enqueue: Any, n: int) -> float:
    for _ in range(WARMUP):
        await enqueue()
    started = time.perf_counter()
    for _ in range(n):
        await enqueue()
    return n / (time.perf_counter() - started)


def run_arm(arm: str, n: int, url: str, tmp: str) -> float:
    if arm == "jobserver":
        from jobserver.client import Client

        with Client(url) as client:
            return _time_sync(lambda: client.enqueue("bench_noop"), n)
    if arm == "jobserver-async":
        from jobserver.client import AsyncClient

        async def jobserver_async() -> float:
            async with AsyncClient(url) as client:
                return await _time_async(lambda: client.enqueue("bench_noop"), n)

        return asyncio.run(jobserver_async())
    if arm == "rq":
        from redis import Redis
        from rq import Queue

        queue = Queue("bench", connection=Redis.from_url(REDIS_URL))
        return _time_sync(lambda: queue.enqueue("bench_peers.peer_rq.noop", result_ttl=0), n)
    if arm == "dramatiq":
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        dramatiq.set_broker(RedisBroker(url=REDIS_URL))
        actor = dramatiq.actor(lambda: None, actor_name="noop")
        return _time_sync(actor.send, n)
    if arm == "celery":
        from celery import Celery

        app = Celery("bench", broker=REDIS_URL)

        @app.task(name="noop", ignore_result=True)
        def celery_noop() -> None:
            return None

        return _time_sync(celery_noop.delay, n)
    if arm == "saq":
        from saq import Queue as SaqQueue

        async def saq() -> float:
            queue = SaqQueue.from_url(REDIS_URL)
            await queue.connect()
            try:
                return await _time_async(lambda: queue.enqueue("noop"), n)
            finally:
                await queue.disconnect()

        return asyncio.run(saq())
    if arm == "arq":
        from arq import create_pool
        from arq.connections import RedisSettings

        async def arq() -> float:
            pool = await create_pool(RedisSettings.from_dsn(REDIS_URL))
            try:
                return await _time_async(lambda: pool.enqueue_job("noop"), n)
            finally:
                await pool.aclose()

        return asyncio.run(arq())
    if arm == "huey":
        from huey import SqliteHuey

        huey = SqliteHuey(filename=os.path.join(tmp, "huey.db"))

        @huey.task(name="noop")
        def huey_noop() -> None:
            return None

        return _time_sync(huey_noop, n)
    raise SystemExit(f"unknown arm {arm!r}")


# -- the driver ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jobserver", "serve", "--tasks", "bench_peers.jobserver_tasks",
         "--db", os.path.join(tmp, "jobs.db"), "--port", str(port), "--concurrency", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    from jobserver.client import Client

    deadline = time.monotonic() + 30
    with Client(url, timeout_s=2) as probe:
        while not probe.health():
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("jobserver serve did not start")
            time.sleep(0.05)
        probe.pause_queue("default")  # the jobs wait: only the enqueue is timed
    return server, url


def _flush_redis() -> None:
    from redis import Redis

    Redis.from_url(REDIS_URL).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="enqueues timed a round and arm")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset")
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm, print ops/s
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.jobs, args.url, args.tmp)))
        return
    arms = [a for a in args.arms.split(",") if a]
    figures: dict[str, list[float]] = {a: [] for a in arms}
    ratios: dict[str, list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _serve(tmp)
        try:
            env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT}"}
            for round_no in range(args.rounds):
                got: dict[str, float] = {}
                for arm in arms:
                    out = subprocess.run(
                        [sys.executable, __file__, "--arm", arm, "--jobs", str(args.jobs),
                         "--url", url, "--tmp", tmp],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    got[arm] = json.loads(out.stdout.strip().splitlines()[-1])
                    figures[arm].append(got[arm])
                    print(f"round {round_no + 1} {arm:16} {got[arm]:9,.0f} enqueues/s", flush=True)
                for arm in arms:
                    if "jobserver" in got:
                        ratios[arm].append(got[arm] / got["jobserver"])
                _flush_redis()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"\nsingle enqueues a second, one at a time, {args.jobs} a round, median of"
        f" {args.rounds} rounds; ratio: to jobserver's blocking Client in the same round"
    )
    print(f"{'client':16} {'median/s':>10} {'ratio':>7}   per round")
    for arm in arms:
        ratio = f"{statistics.median(ratios[arm]):7.2f}" if ratios[arm] else "      -"
        rounds = ", ".join(f"{f:,.0f}" for f in figures[arm])
        print(f"{arm:16} {statistics.median(figures[arm]):10,.0f} {ratio}   {rounds}")


if __name__ == "__main__":
    main()
