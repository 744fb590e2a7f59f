"""Workflows: chains, groups and chords of jobs, turned into jobs that depend on each other.
Pure: no I/O; the server enqueues the flat list in one transaction.

    chain(a, b, c)          a -> b -> c; each step gets the previous step's result first
    group(a, b, c)          all at once
    chord(group(a, b), cb)  a and b at once, then cb with the list of their results

Nesting works: chain(a, group(b, c), d) runs b and c after a (each given a's result), then d
with [result of b, result of c]. A step runs only if all it depends on succeeded; otherwise it
ends failed as `dependency_failed` (or cancelled, with on_dependency_failure="cancel").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .models import Job, JobState

MAX_WORKFLOW_JOBS = 10_000


@dataclass(slots=True)
class FlatJob:
    options: dict[str, Any]  # what the job itself asks for (task, args, queue...)
    depends_on_index: list[int] = field(default_factory=list)  # earlier FlatJobs
    pass_result: bool = False
    path: str = ""  # where it stands in the spec, e.g. chain[1], for errors


ParseJob = Callable[[dict[str, Any]], dict[str, Any]]


def job(task: str, *args: Any, **options: Any) -> dict[str, Any]:
    """One step, for chain/group/chord: `job("resize", url, width=100)` or with options
    `job("send", to, queue="mail", delay_s=60)`; keyword arguments for the task go in kwargs=."""
    return {"task": task, "args": list(args), **options}


def chain(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"chain": list(steps)}


def group(*members: dict[str, Any]) -> dict[str, Any]:
    return {"group": list(members)}


def chord(
    members: dict[str, Any] | Sequence[dict[str, Any]], callback: dict[str, Any]
) -> dict[str, Any]:
    if isinstance(members, dict) and "group" in members:
        members = members["group"]
    return {"chord": {"group": list(members), "callback": callback}}


def flatten(spec: Any, parse_job: ParseJob) -> list[FlatJob]:
    """Every job of a workflow in an order where dependencies come first."""
    if not isinstance(spec, dict):
        raise ValidationError("body", "a workflow is an object: chain, group or chord")
    out: list[FlatJob] = []
    _build(spec, "", [], out, parse_job)
    if not out:
        raise ValidationError("body", "the workflow has no jobs")
    return out


def _build(
    node: Any, path: str, incoming: list[int], out: list[FlatJob], parse_job: ParseJob
) -> tuple[list[int], list[int]]:
    """Add `node`'s jobs after `incoming`; returns the indices of its first and last jobs."""
    if len(out) >= MAX_WORKFLOW_JOBS:  # every node holds a job, or is refused
        raise ValidationError("body", f"a workflow has at most {MAX_WORKFLOW_JOBS} jobs")
    if not isinstance(node, dict):
        raise ValidationError(path or "body", "must be an object: a job, chain, group or chord")
    kinds = [k for k in ("chain", "group", "chord") if k in node]
    if len(kinds) > 1 or (kinds and len(node) != 1):
        raise ValidationError(path or "body", "give one of chain, group or chord, alone")
    if not kinds:
        return _add_job(node, path, incoming, out, parse_job)
    kind = kinds[0]
    here = f"{path}.{kind}" if path else kind
    if kind == "chord":
        body = node["chord"]
        if not isinstance(body, dict) or set(body) != {"group", "callback"}:
            raise ValidationError(here, "must be an object with group and callback")
        _, tails = _build({"group": body["group"]}, here, incoming, out, parse_job)
        return _build(body["callback"], f"{here}.callback", tails, out, parse_job)
    items = node[kind]
    if not isinstance(items, list) or not items:
        raise ValidationError(here, "must be a non-empty array")
    if kind == "group":
        group_heads: list[int] = []
        group_tails: list[int] = []
        for i, item in enumerate(items):
            h, t = _build(item, f"{here}[{i}]", incoming, out, parse_job)
            group_heads += h
            group_tails += t
        return group_heads, group_tails
    first: list[int] = []
    previous = incoming
    for i, item in enumerate(items):
        h, previous = _build(item, f"{here}[{i}]", previous, out, parse_job)
        if i == 0:
            first = h
    return first, previous


def _add_job(
    node: dict[str, Any], path: str, incoming: list[int], out: list[FlatJob], parse_job: ParseJob
) -> tuple[list[int], list[int]]:
    try:
        options = parse_job(node)
    except ValidationError as exc:
        where = f"{path}.{exc.field}" if path and exc.field else (exc.field or path)
        raise ValidationError(where, exc.message) from None
    out.append(FlatJob(options, list(incoming), pass_result=bool(incoming), path=path))
    index = len(out) - 1
    return [index], [index]


def workflow_status(jobs: Sequence[Job]) -> str:
    """One word for a workflow: pending (nothing started), running (something still to do),
    or, once every job ended: succeeded, failed or cancelled."""
    states = {j.status for j in jobs}
    if states <= {JobState.PENDING}:
        return "pending"
    if states & {JobState.PENDING, JobState.RUNNING}:
        return "running"
    if states <= {JobState.SUCCEEDED}:
        return "succeeded"
    return "failed" if JobState.FAILED in states else "cancelled"
