"""The no-op task of scripts/bench_nodes.py (`--tasks bench_nodes_peer.noop_tasks`)."""

from __future__ import annotations

from jobserver import task


@task
async def noop() -> None:
    return None
