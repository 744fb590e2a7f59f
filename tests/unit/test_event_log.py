"""The event log's rows (events.encode_log / decode_log): pure, no database."""

from __future__ import annotations

from jobserver.events import INDEX_BITS, ROW_ENTRIES, _live_events, decode_log, encode_log
from jobserver.models import JobState, Transition


def moves(n: int, base: float = 1_790_000_000.123456) -> list[Transition]:
    states = list(JobState)
    return [
        Transition(i + 1, "t", "q", None, states[i % len(states)], "r", i % 3, base + i * 0.0015)
        for i in range(n)
    ]


def test_a_row_reads_back_as_the_events_streamed_live() -> None:
    transitions = moves(7)
    [(at, entries)] = encode_log(transitions)
    assert at == transitions[0].at
    read = decode_log(5, at, entries)
    live = _live_events([5], transitions)
    for event in live:
        event.task = event.queue = None  # the log holds no names: the reader joins them
    assert read == live
    assert [e.id for e in read] == [(5 << INDEX_BITS) + i for i in range(7)]
    assert [(e.job_id, e.state, e.attempt) for e in read] == [
        (t.job_id, t.after.value, t.attempt) for t in transitions
    ]
    assert all(abs(e.at - t.at) < 1e-6 for e, t in zip(read, transitions, strict=True))


def test_a_commit_bigger_than_a_row_takes_several() -> None:
    transitions = moves(ROW_ENTRIES + 3)
    rows = encode_log(transitions)
    assert len(rows) == 2
    read = [e for n, (at, entries) in enumerate(rows) for e in decode_log(10 + n, at, entries)]
    assert [e.job_id for e in read] == [t.job_id for t in transitions]
    assert read[ROW_ENTRIES].id == 11 << INDEX_BITS  # the second row starts its own ids
    assert [e.id for e in read] == sorted(e.id for e in read)
