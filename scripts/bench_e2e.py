"""End-to-end no-op throughput alone: figure 1 of scripts/bench.py, without the rest.

    python scripts/bench_e2e.py --jobs 100000 --concurrency 64 --runs 3

Each run is `bench_peers.jobserver_inproc`'s e2e (the code figure 1 runs, `serve`'s GC tuning
included) on a fresh database. Prints one line per run and the median. synchronous=FULL unless
--durability normal.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import uvloop
from bench_peers.jobserver_inproc import e2e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--durability", choices=["full", "normal"], default="full")
    parser.add_argument("--keys", type=int, default=0, help="job i has fairness key i %% keys")
    args = parser.parse_args()
    rates = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "bench.db")
            run_e2e = e2e(db, args.jobs, args.concurrency, args.durability, keys=args.keys)
            rate = uvloop.run(run_e2e)["rate"]
        rates.append(rate)
        print(f"run {run + 1}: {rate:,.0f} jobs/s")
    print(f"median: {statistics.median(rates):,.0f} jobs/s ({args.jobs:,} no-op jobs)")


if __name__ == "__main__":
    main()
