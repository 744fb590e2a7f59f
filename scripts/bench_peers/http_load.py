"""An HTTP load generator in its own process: the fallback when wrk is not installed.

    python -m bench_peers.http_load URL BODY_FILE --connections 64 --seconds 10 --warmup 1

POSTs the body (application/json) over `--connections` keep-alive connections for `--seconds`
after `--warmup`, and prints one JSON line: requests, seconds, rate, non_2xx, errors.
A Python client costs about as much CPU per request as the server does, so on a 2-core
machine it caps the rate it can measure: wrk is preferred.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import uvloop


async def run(url: str, body: bytes, connections: int, seconds: float, warmup: float) -> dict:
    counts = {"requests": 0, "non_2xx": 0, "errors": 0}
    measuring = False
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def client() -> None:
            nonlocal measuring
            while True:
                now = loop.time()
                if now >= stop_at:
                    return
                counted = now >= measure_from
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        ok = 200 <= resp.status < 300
                except aiohttp.ClientError:
                    if counted:
                        counts["errors"] += 1
                    continue
                if counted and loop.time() <= stop_at:
                    counts["requests"] += 1
                    if not ok:
                        counts["non_2xx"] += 1

        await asyncio.gather(*(client() for _ in range(connections)))
    return {**counts, "seconds": seconds, "rate": counts["requests"] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("body_file")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    body = Path(args.body_file).read_bytes()
    started = time.perf_counter()
    result = uvloop.run(run(args.url, body, args.connections, args.seconds, args.warmup))
    result["wall_s"] = time.perf_counter() - started
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
