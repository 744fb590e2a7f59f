"""An experiment for scripts/bench_nodes.py --experiment noevents, not jobserver code.

Loaded into each node as a task module, it stops a node from reading every job that another
node finished (`JobServer._ended_elsewhere` -> `_publish_end` -> `store.get_job`, one read per
job and per other node, for GET /events). Waiters are still woken. It measures what those
reads cost; jobserver could keep the events and drop most of the cost by reading the ids of one
NOTIFY in one `SELECT ... WHERE id = ANY($1)`, or by sending what an event needs in the NOTIFY.
"""

from __future__ import annotations

from jobserver.server import JobServer


def _ended_elsewhere(self: JobServer, job_id: int) -> None:
    self._notify(job_id)


JobServer._ended_elsewhere = _ended_elsewhere  # type: ignore[method-assign]
