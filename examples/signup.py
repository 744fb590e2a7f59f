"""Durable steps: a signup flow that sends a mail, sleeps a day, waits for a confirmation.

    python examples/signup.py

The task is ordinary code. Each `ctx.step` runs once and its result is kept, so if the process
dies (or is redeployed) in the middle, the job resumes after the last completed step instead of
sending the welcome mail again. `ctx.sleep` and `ctx.wait_for_event` give the worker slot back:
the job waits in the database, for a day or for days, and resumes on any node after restarts.
A signal (`POST /signals/confirm:<user>`, `server.signal(...)`, `jobserver signal ...`) wakes
it; a signal sent before the job waits is kept for it.

So that this example does not take a day, its server runs on a manual clock that it moves on
by hand; a real server uses the system clock. The database is a file in a temporary directory.
Prints what happened, then "ok".
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobserver import JobContext, JobServer, ManualClock, task

DAY = 86_400.0
sent: list[str] = []  # stands for a mail provider


async def send_mail(to: str, subject: str) -> str:
    sent.append(f"{to}: {subject}")
    return f"message-{len(sent)}"


@task
async def signup(user: str, ctx: JobContext) -> dict[str, Any]:
    welcome = await ctx.step("welcome mail", send_mail, user, "Welcome! Please confirm.")
    await ctx.sleep(DAY)  # durable: the slot is free while it sleeps
    await ctx.step("reminder", send_mail, user, "A reminder: please confirm.")
    confirmed = await ctx.wait_for_event(f"confirm:{user}", timeout_s=3 * DAY)
    if confirmed is None:
        await ctx.step("clean up", send_mail, user, "We removed your unconfirmed account.")
        return {"user": user, "active": False, "welcome": welcome}
    await ctx.step("activate", send_mail, user, f"Your {confirmed['plan']} plan is active.")
    return {"user": user, "active": True, "plan": confirmed["plan"]}


async def run(db: Path) -> None:
    clock = ManualClock()
    async with JobServer(db=db, clock=clock, tasks=[signup]) as server:
        ada = await server.enqueue("signup", ["ada@example.com"])
        bob = await server.enqueue("signup", ["bob@example.com"])
        await settle(server, 2)  # both sent their welcome mail and sleep
        clock.advance(DAY)  # a day later
        server.worker.wake()
        await settle(server, 4)  # both sent their reminder and wait
        _, woken = await server.signal("confirm:ada@example.com", {"plan": "pro"})
        print(f"ada confirmed: {woken} job woken")
        done = await server.wait_for(ada.id, timeout_s=10)
        print(f"ada: {done.result}")
        assert done.result == {"user": "ada@example.com", "active": True, "plan": "pro"}
        clock.advance(3 * DAY)  # bob never confirms
        server.worker.wake()
        done = await server.wait_for(bob.id, timeout_s=10)
        print(f"bob: {done.result}")
        assert done.result["active"] is False
        steps = await server.get_steps(bob.id)
        print("bob's steps:", ", ".join(f"{s.name} ({s.kind})" for s in steps))
    for line in sent:
        print("mail to", line)
    assert len(sent) == 6  # one welcome and one reminder each, ada's activation, bob's clean-up


async def settle(server: JobServer, mails: int) -> None:
    """Wait until `mails` have gone out and no job is running (they sleep or wait)."""
    for _ in range(1000):
        if len(sent) >= mails and not server.worker.running_ids:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(sent)} mails went out")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "signup.db"))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
