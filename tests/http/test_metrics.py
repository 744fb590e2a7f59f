"""Prometheus metrics fed by real jobs, and the blocked-loop warning."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from jobserver import JobServer, JobState, PermanentError
from jobserver.tasks import Registry, task

from ..conftest import ServerFactory, eventually

reg = Registry()


@task(registry=reg)
async def fine() -> int:
    return 1


@task(registry=reg)
async def broken() -> None:
    raise PermanentError("no")


@task(registry=reg)
async def hogs_the_loop() -> None:
    time.sleep(0.8)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def run(server: JobServer, name: str, queue: str = "default") -> None:
    job = await server.enqueue(name, queue=queue)
    await server.wait_for(job.id, timeout_s=5)


async def test_counters_histograms_and_queue_gauges(make_server: ServerFactory) -> None:
    server = await make_server(tasks=list(reg))
    for _ in range(3):
        await run(server, "fine", "mail")
    await run(server, "broken", "mail")
    await server.enqueue("fine", queue="mail", delay_s=600)
    got = samples(await server.render_metrics())

    def jobs(event: str, task_name: str) -> float:
        key = (("event", event), ("queue", "mail"), ("task", task_name))
        return got.get(("jobserver_jobs_total", key), 0.0)

    assert jobs("enqueued", "fine") == 4
    assert jobs("started", "fine") == 3 and jobs("succeeded", "fine") == 3
    assert jobs("dead_lettered", "broken") == 1
    assert got[("jobserver_job_failures_total", (("queue", "mail"), ("task", "broken")))] == 1
    duration = ("jobserver_job_duration_seconds_count", (("queue", "mail"), ("task", "fine")))
    assert got[duration] == 3
    assert got[("jobserver_job_queue_wait_seconds_count", (("queue", "mail"),))] == 4
    assert got[("jobserver_queue_jobs", (("queue", "mail"), ("state", "pending")))] == 1
    assert got[("jobserver_queue_jobs", (("queue", "mail"), ("state", "succeeded")))] == 3
    assert got[("jobserver_dead_letters", ())] == 1
    assert got[("jobserver_store_batch_size_count", ())] > 0
    assert got[("jobserver_store_commit_seconds_count", ())] > 0
    assert ("jobserver_event_loop_lag_seconds", ()) in got


async def test_the_busiest_fairness_keys_are_gauges_bounded_per_queue(
    make_server: ServerFactory,
) -> None:
    """A series for each of a queue's ten busiest keys, never one a key: 30 keys, 10 series
    a state; a key no longer among them is dropped at the next scrape."""
    server = await make_server(tasks=list(reg))
    jobs = [
        server.new_job("fine", queue="mail", fairness_key=f"k{i:02d}", delay_s=600)
        for i in range(30)
        for _ in range(i + 1)
    ]
    await server.enqueue_many(jobs)
    got = samples(await server.render_metrics())
    keyed = {labels: v for (name, labels), v in got.items() if name.endswith("busiest_key_jobs")}
    pending = {
        dict(labels)["key"]: v for labels, v in keyed.items() if ("state", "pending") in labels
    }
    assert pending == {f"k{i:02d}": float(i + 1) for i in range(20, 30)}
    assert len(keyed) == 20  # ten keys, pending and running
    await server.enqueue_many(
        [server.new_job("fine", queue="mail", fairness_key="flood", delay_s=600)] * 100
    )
    got = samples(await server.render_metrics())
    keys = {dict(labels)["key"] for (name, labels) in got if name.endswith("busiest_key_jobs")}
    assert "flood" in keys and "k20" not in keys and len(keys) == 10


async def test_a_task_that_blocks_the_loop_is_named(tmp_path: object) -> None:
    async with JobServer(db=tmp_path / "lag.db", tasks=list(reg)) as server:  # type: ignore[operator]
        job = await server.enqueue("hogs_the_loop")
        assert (await server.wait_for(job.id, timeout_s=5)).status == JobState.SUCCEEDED
        got = await eventually(  # the lag watcher wakes after the block
            lambda: server.render_metrics(),
            lambda text: (
                ("jobserver_event_loop_blocks_total", (("task", "hogs_the_loop"),)) in samples(text)
            ),
        )
    blocks = samples(got)
    assert blocks[("jobserver_event_loop_blocks_total", (("task", "hogs_the_loop"),))] >= 1
    assert blocks[("jobserver_event_loop_lag_seconds", ())] >= 0


def test_counters_and_histograms_expose_what_prometheus_clients_own_would() -> None:
    """Kept as plain numbers and exported when scraped: the text must be what
    prometheus-client's own Counter and Histogram give for the same updates."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from jobserver.metrics import DURATION_BUCKETS, LabelledCounter, LabelledHistogram, _Families

    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours_hist = LabelledHistogram("h_seconds", "doc", ["queue"], DURATION_BUCKETS)
    ours_count = LabelledCounter("c", "doc", ["queue", "task"])
    ours_registry.register(_Families([ours_count, ours_hist]))
    theirs_hist = Histogram(
        "h_seconds", "doc", ["queue"], buckets=DURATION_BUCKETS, registry=theirs_registry
    )
    theirs_count = Counter("c", "doc", ["queue", "task"], registry=theirs_registry)
    # on a bound, between bounds, below the first, above the last
    values = [0.0, 0.001, 0.0011, 0.05, 1, 4.99, 5.0, 299.9, 1800, 1800.5, 99_999]
    for i, value in enumerate(values):
        queue = "a" if i % 3 else "b"
        ours_hist.observe((queue,), value)
        theirs_hist.labels(queue).observe(value)
        ours_count.inc((queue, "t"), 2)
        theirs_count.labels(queue, "t").inc(2)

    def parsed(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        got = samples(generate_latest(registry))
        return {k: v for k, v in got.items() if not k[0].endswith("_created")}

    assert parsed(ours_registry) == parsed(theirs_registry)
    assert parsed(ours_registry)[("h_seconds_bucket", (("le", "0.005"), ("queue", "a")))] == 2
    created = samples(generate_latest(ours_registry))
    assert ("h_seconds_created", (("queue", "a"),)) in created
    assert ("c_created", (("queue", "a"), ("task", "t"))) in created
