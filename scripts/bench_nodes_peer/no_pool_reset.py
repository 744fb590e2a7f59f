"""An experiment for scripts/bench_nodes.py --experiment noreset, not jobserver code.

Loaded into each node as a task module, it turns off asyncpg's reset of a pooled connection
when it goes back to the pool (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
RESET ALL;`, one more round trip after every transaction of the group-commit writer and every
read). The store's pooled connections take no advisory locks, LISTEN or SET, so nothing needs
resetting; jobserver could get the same by giving its writer one connection of its own, or its
pool a connection class whose `get_reset_query()` is empty.
"""

from __future__ import annotations

import asyncpg


def _no_reset(self: asyncpg.Connection) -> str:
    return ""


asyncpg.Connection.get_reset_query = _no_reset  # type: ignore[method-assign]
