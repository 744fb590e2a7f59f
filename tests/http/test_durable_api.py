"""Durable steps over real HTTP and through the Python client: a job's steps, signals."""

from __future__ import annotations

import asyncio

from jobserver import JobState
from jobserver.client import AsyncClient, InvalidRequest

from ..conftest import ServerFactory, eventually
from ..server.test_durable import effects, reg


async def test_a_signal_over_http_wakes_a_waiting_job_and_its_steps_are_listed(
    make_server: ServerFactory,
) -> None:
    effects.clear()
    server = await make_server(tasks=list(reg))
    [base] = await server.serve("127.0.0.1", 0)
    async with AsyncClient(base) as client:
        ref = await client.enqueue("waits_for_confirmation", [42])

        async def suspended() -> bool:
            # effects read first: a status read that began before the step ran is stale
            ran = bool(effects)
            return ran and (await client.get(ref.id)).status == JobState.PENDING

        await eventually(suspended, bool)
        steps = await client.steps(ref.id)
        assert [(s.name, s.kind, s.status) for s in steps] == [
            ("mail", "run", "done"),
            ("wait:confirm:42", "wait", "waiting"),
        ]
        signal_id, woken = await client.signal("confirm:42", {"plan": "pro"})
        assert signal_id >= 1 and woken == 1
        done = await client.wait(ref.id, timeout_s=10)
        assert done.status == JobState.SUCCEEDED and done.result == {"plan": "pro"}
        steps = await client.steps(ref.id)
        assert steps[1].status == "done" and steps[1].result == {"plan": "pro"}
        assert [s.name for s in steps] == ["mail", "wait:confirm:42", "activate"]
        # the text "\u0000" is not a NUL (its check once took it for one)
        assert (await client.signal("other", "C:\\u0000"))[1] == 0
        try:
            await client.signal("other", "a\x00b")
        except InvalidRequest as exc:
            assert exc.field == "payload"
        else:
            raise AssertionError("a NUL in a payload was taken")
        for bad in ("x" * 201, "a\x00b"):
            try:
                await client.signal(bad, 1)
            except InvalidRequest as exc:
                assert exc.field == "key"
            else:
                raise AssertionError("a bad key was taken")
        await asyncio.sleep(0)
