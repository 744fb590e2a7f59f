"""Enqueue N no-op jobs into one peer, from its own process:

    python -m bench_peers.enqueue PEER N        (PEER: huey, arq, rq, celery, saq, dramatiq)

The peer's module is imported under its real name (not as __main__), so the task names its
workers look up match.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys


def main() -> None:
    peer, n = sys.argv[1], int(sys.argv[2])
    module = importlib.import_module(f"bench_peers.peer_{peer}")
    result = module.enqueue(n)
    if inspect.isawaitable(result):
        asyncio.run(result)


if __name__ == "__main__":
    main()
