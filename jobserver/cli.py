"""The `jobserver` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, TextIO

import shtab

from . import __version__
from .client import (
    DEFAULT_URL,
    NOT_GIVEN,
    ApiError,
    AuthError,
    BulkInfo,
    Client,
    ClientError,
    ConnectionFailed,
    JobInfo,
    Page,
    QueueFull,
    QueueInfo,
    UnexpectedResponse,
    WorkflowInfo,
)
from .config import (
    SETTINGS,
    ConfigError,
    Settings,
    env_name,
    flag_name,
    is_loopback,
    load_settings,
    read_config_file,
)
from .errors import DatabaseInUse, StoreError, ValidationError
from .job_options import parse_rfc3339
from .logs import configure_logging
from .models import JobState
from .runtime import tune_gc
from .server import JobServer, open_store
from .tasks import TaskSpec, external_task

log = logging.getLogger("jobserver")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobserver", description="A background-job server.")
    parser.add_argument("--version", action="version", version=f"jobserver {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and the workers",
        description="Every flag can also be set by the environment variable shown, or in a"
        " TOML file given with --config. A flag beats the environment, which beats the file.",
    )
    serve.add_argument("--config", default=None, help="a TOML file of settings [JOBSERVER_CONFIG]")
    for setting, (_convert, help_text) in SETTINGS.items():
        kwargs: dict[str, object] = {"default": None, "help": f"{help_text} [{env_name(setting)}]"}
        if setting in (
            "tasks",
            "http_allow_hosts",
            "token",
            "read_token",
            "worker_token",
            "external_task",
        ):
            kwargs["action"] = "append"
        serve.add_argument(flag_name(setting), dest=setting, **kwargs)  # type: ignore[arg-type]
    add_client_commands(commands)
    add_database_commands(commands)
    completion = commands.add_parser(
        "completion",
        help='print a shell completion script, e.g. eval "$(jobserver completion bash)"',
    )
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS)
    completion.set_defaults(whole_parser=parser)
    return parser


async def serve(settings: Settings) -> int:
    try:
        server = JobServer(
            settings.db,
            tasks=[*settings.tasks, *external_tasks(settings.external_task)],
            concurrency=settings.concurrency,
            durability=settings.durability,
            lease_ttl_s=settings.lease_ttl,
            grace_period_s=settings.grace_period,
            http_allowed_hosts=settings.http_allow_hosts,
            max_body_bytes=settings.max_body_bytes,
            access_log=settings.access_log,
            rescue_interval_s=settings.rescue_interval,
            idempotency_window_s=settings.idempotency_window,
            keep_finished_s=settings.keep_finished_days * 86_400,
            keep_failed_s=settings.keep_failed_days * 86_400,
            keep_events_s=settings.keep_events_hours * 3_600,
            isolation=settings.isolation,
            max_tasks_per_child=settings.max_tasks_per_child,
            max_memory_per_child_mb=settings.max_memory_per_child,
            tokens=settings.token,
            read_tokens=settings.read_token,
            worker_tokens=settings.worker_token,
            server_names=settings.server_name,
            webhook_secret=settings.webhook_secret,
        )
    except ValidationError as exc:  # e.g. a postgresql:// --db without asyncpg installed
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP
    except (ImportError, ValueError) as exc:
        log.error("cannot load tasks: %s: %s", type(exc).__name__, exc)
        return EXIT_STARTUP
    try:
        await server.start()
    except (StoreError, ValidationError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_STARTUP
    try:
        addresses = await server.serve(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await server.stop(0)
        return EXIT_STARTUP
    tune_gc()
    log.info(
        "jobserver listening on %s (tasks: %s)",
        ", ".join(addresses),
        ", ".join(server.registry.names()),
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            # Second signal: leave now. Every acknowledged job is already committed; the
            # jobs that were running are recovered at the next start.
            log.warning("second %s: exiting at once", signal.Signals(signum).name)
            os._exit(128 + signum)
        log.info(
            "%s: draining (grace period %s s)", signal.Signals(signum).name, settings.grace_period
        )
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await stop.wait()
    await server.stop()
    log.info("jobserver stopped")
    left = server.worker.abandoned_tasks + len(server.worker.running_ids)
    if left:
        # Tasks that ignore cancellation: the event loop's own shutdown would wait for them
        # for ever. Their jobs were ended or released; leave now.
        log.warning("exiting without waiting for %d task(s) that ignore cancellation", left)
        logging.shutdown()
        os._exit(0)
    return 0


def external_tasks(declared: Sequence[str]) -> list[TaskSpec]:
    """--external-task 'NAME[=QUEUE] [timeout=S] [max_retries=N]', as task specs."""
    specs = []
    for text in declared:
        head, *options = text.split()
        name, _, queue = head.partition("=")
        given: dict[str, Any] = {}
        for option in options:
            key, _, value = option.partition("=")
            try:
                if key == "timeout":
                    given["timeout"] = float(value)
                elif key == "max_retries":
                    given["max_retries"] = int(value)
                else:
                    raise ValueError(f"unknown option {key!r}")
            except ValueError as exc:
                raise ValueError(
                    f"--external-task {text!r}: {exc} (give timeout=SECONDS, max_retries=N)"
                ) from None
        specs.append(external_task(name, queue=queue or "external", **given))
    return specs


def run(coro_settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.run(serve(coro_settings))
    return int(uvloop.run(serve(coro_settings)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "completion":  # written by shtab from the parser itself
        print(shtab.complete(args.whole_parser, shell=args.shell))
        return 0
    if args.command != "serve":
        return run_command(args)
    try:
        config_path = args.config or os.environ.get("JOBSERVER_CONFIG")
        file_values = read_config_file(config_path) if config_path else {}
        settings = load_settings(vars(args), os.environ, file_values)
    except ConfigError as exc:
        print(f"jobserver: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if (settings.read_token or settings.worker_token) and not settings.token:
        print(
            "jobserver: --read-token and --worker-token need a --token beside them",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    if not is_loopback(settings.host) and not settings.token:
        print(
            f"jobserver: --host {settings.host} is reachable from other machines: set a token"
            " (--token or JOBSERVER_TOKEN) to serve beyond loopback",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    configure_logging(settings.log_format, settings.log_level)
    # `--tasks myapp.tasks` names modules the way `python -m` does: from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    code = run(settings)
    stuck = [t.name for t in threading.enumerate() if t.name.startswith("jobserver-task")]
    if stuck:
        # Sync tasks still running in threads past the grace period: their jobs were released
        # and will run again, so nothing is lost by not waiting for them.
        log.warning("exiting without waiting for %d sync task thread(s)", len(stuck))
        logging.shutdown()
        os._exit(code)
    return code


# -- client commands: jobs, dead letters, queues, schedules, workflows ----------------------------
EXIT_FAILED = 1
PROGRESS_WIDTH = 30
POLL_S = 1.0  # each long poll of `wait` lasts at most this long, so progress updates show
MAX_ERROR_CELL = 60

ClientHandler = Callable[[Client, argparse.Namespace], int]
DatabaseHandler = Callable[[argparse.Namespace], int]


def _any_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be JSON: {exc}") from None


def _json_arg(kind: type, what: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"must be a JSON {what}, got {text!r}")
        return value

    return convert


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _time_arg(text: str) -> str:
    """An RFC 3339 time with its zone, checked here (sent as it is)."""
    try:
        parse_rfc3339("time", text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


# (option, type, metavar, help) of `jobserver queue`'s defaults for every fairness key and of
# `jobserver key`'s settings of one key
KEY_DEFAULT_OPTIONS: tuple[tuple[str, type[int] | type[float], str, str], ...] = (
    ("--key-concurrency-limit", int, "N|none", "each fairness key's jobs running at once"),
    ("--key-rate-limit", float, "R|none", "each fairness key's jobs started per second"),
    ("--key-rate-burst", float, "B|none", "each fairness key's bucket size"),
)
KEY_OWN_OPTIONS: tuple[tuple[str, type[int] | type[float], str, str], ...] = (
    ("--weight", float, "W|none", "its share against the queue's other keys (default 1)"),
    ("--concurrency-limit", int, "N|none", "its jobs running at once, across all nodes"),
    ("--rate-limit", float, "R|none", "its jobs started per second"),
    ("--rate-burst", float, "B|none", "its bucket's size"),
)


def _limit_arg(kind: type[int] | type[float]) -> Callable[[str], int | float | None]:
    """A queue limit: a number, or `none` to lift it."""

    def convert(text: str) -> int | float | None:
        if text.strip().lower() == "none":
            return None
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun} or 'none', got {text!r}") from None
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text!r}")
        return value

    return convert


def _job_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a job id, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a job id (1 or more), got {text!r}")
    return value


def add_client_commands(commands: Any) -> None:
    """The commands that talk to a running server over HTTP with `jobserver.client.Client`."""
    server = argparse.ArgumentParser(add_help=False)
    group = server.add_argument_group("server")
    group.add_argument(
        "--url", help=f"the server's base URL (default {DEFAULT_URL}) [JOBSERVER_URL]"
    )
    group.add_argument(
        "--token", help="API token, sent as 'Authorization: Bearer TOKEN' [JOBSERVER_TOKEN]"
    )

    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def add(
        name: str, handler: ClientHandler, help_text: str, *, lists: bool = False
    ) -> argparse.ArgumentParser:
        parents = [server, listing] if lists else [server]
        parser: argparse.ArgumentParser = commands.add_parser(
            name, parents=parents, help=help_text, description=help_text
        )
        parser.set_defaults(client_handler=handler)
        return parser

    p = add("enqueue", cmd_enqueue, "enqueue a job and print its id")
    p.add_argument("task", help="the task's name")
    p.add_argument(
        "--args",
        type=_json_arg(list, "array"),
        default=[],
        metavar="JSON",
        help="positional arguments as a JSON array, e.g. '[2, 3]'",
    )
    p.add_argument(
        "--kwargs",
        type=_json_arg(dict, "object"),
        metavar="JSON",
        help='keyword arguments as a JSON object, e.g. \'{"to": "a@example.com"}\'',
    )
    p.add_argument("--queue", metavar="Q", help="queue name (default: default)")
    p.add_argument("--priority", type=int, metavar="N", help="-1000..1000, higher first")
    p.add_argument("--delay", type=_seconds_arg, metavar="S", help="run in S seconds")
    p.add_argument("--max-retries", type=int, metavar="N", help="retries after the first run")
    p.add_argument("--timeout", type=_seconds_arg, metavar="S", help="seconds an attempt may run")
    p.add_argument("--idempotency-key", metavar="K", help="enqueue at most once per key")
    p.add_argument(
        "--deadline-in",
        type=_seconds_arg,
        metavar="S",
        help="do not start it after S seconds from now (it then fails as expired)",
    )
    p.add_argument(
        "--unique-key",
        metavar="K",
        help="while a pending or running job holds K, print its id instead of enqueueing",
    )
    p.add_argument(
        "--fairness-key",
        metavar="K",
        help="the key (a tenant, a customer) whose fair share of the queue it runs in",
    )
    p.add_argument(
        "--depends-on",
        type=_job_id_arg,
        action="append",
        default=[],
        metavar="ID",
        help="a job that must succeed first (repeatable)",
    )
    p.add_argument(
        "--pass-result",
        action="store_true",
        default=None,
        help="give it the --depends-on jobs' result(s) as its first argument",
    )
    p.add_argument(
        "--on-dependency-failure",
        choices=["fail", "cancel"],
        help="what a dependency that did not succeed does to it (default fail)",
    )
    p.add_argument(
        "--callback-url", metavar="URL", help="POSTed the job's record, signed, when it ends"
    )
    p.add_argument(
        "--wait",
        type=_seconds_arg,
        nargs="?",
        const=math.inf,
        metavar="S",
        help="wait for the job to end (at most S seconds, default no limit) and print it as"
        " JSON; exit 1 unless it succeeded",
    )

    p = add("get", cmd_get, "print a job as JSON")
    p.add_argument("id", type=int, help="the job's id")

    p = add(
        "attempts",
        cmd_attempts,
        "a job's history: each attempt's outcome, node and error",
        lists=True,
    )
    p.add_argument("id", type=int, help="the job's id")
    p.add_argument("--traceback", action="store_true", help="print each failed attempt's traceback")

    p = add("steps", cmd_steps, "a job's durable steps: name, kind, status, result", lists=True)
    p.add_argument("id", type=int, help="the job's id")

    p = add(
        "signal",
        cmd_signal,
        "send a signal to the jobs waiting for KEY (ctx.wait_for_event), or keep it for the next",
    )
    p.add_argument("key", help="the key the jobs wait for")
    p.add_argument(
        "--payload", type=_any_json, default=None, metavar="JSON", help="what the wait returns"
    )

    p = add(
        "wait",
        cmd_wait,
        "wait for a job to end, with a progress bar on stderr while it reports progress;"
        " print it as JSON; exit 0 if it succeeded, 1 otherwise",
    )
    p.add_argument("id", type=int, help="the job's id")
    p.add_argument("--timeout", type=_seconds_arg, metavar="S", help="give up after S seconds")

    p = add("jobs", cmd_jobs, "list jobs, newest first, as a table", lists=True)
    p.add_argument("--status", choices=[s.value for s in JobState])
    p.add_argument("--queue", metavar="Q")
    p.add_argument("--task", metavar="TASK")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="1-1000 (default 50)")
    p.add_argument("--cursor", metavar="C", help="the next_cursor of the previous page")

    p = add(
        "dead-letters", cmd_dead_letters, "list dead letters, newest first, as a table", lists=True
    )
    p.add_argument("--task", metavar="TASK")
    p.add_argument("--queue", metavar="Q")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="1-1000 (default 50)")
    p.add_argument("--cursor", metavar="C", help="the next_cursor of the previous page")

    p = add("dead-letter", cmd_dead_letter, "print a dead letter as JSON")
    p.add_argument("dead_letter_id", type=int, metavar="DEAD_LETTER_ID")

    p = add("delete-dead-letter", cmd_delete_dead_letter, "delete a dead letter")
    p.add_argument("dead_letter_id", type=int, metavar="DEAD_LETTER_ID")

    p = add("requeue", cmd_requeue, "enqueue a dead letter again as a new job; print its id")
    p.add_argument("dead_letter_id", type=int, metavar="DEAD_LETTER_ID")

    for name, handler, what in (
        ("requeue-dead-letters", cmd_requeue_dead_letters, "enqueue again as new jobs"),
        ("purge-dead-letters", cmd_purge_dead_letters, "delete"),
    ):
        p = add(
            name,
            handler,
            f"{what} the dead letters that match, in one transaction (newest first, up to"
            " --limit); --dry-run shows which without changing anything",
            lists=True,
        )
        p.add_argument("--task", metavar="TASK")
        p.add_argument("--queue", metavar="Q")
        p.add_argument("--error-type", metavar="TYPE", help="the error's type, e.g. TimeoutError")
        p.add_argument(
            "--failed-after",
            type=_time_arg,
            metavar="TIME",
            help="RFC 3339, e.g. 2026-12-01T00:00Z",
        )
        p.add_argument("--failed-before", type=_time_arg, metavar="TIME", help="RFC 3339")
        p.add_argument(
            "--limit", type=int, default=1000, metavar="N", help="1-10000 (default 1000)"
        )
        p.add_argument("--dry-run", action="store_true", help="change nothing; show which")

    p = add("cancel", cmd_cancel, "cancel a job (a running one is asked to stop)")
    p.add_argument("id", type=int, help="the job's id")

    p = add("delete", cmd_delete, "delete a finished job (succeeded, failed or cancelled)")
    p.add_argument("id", type=int, help="the job's id")

    add("queues", cmd_queues, "list the queues: jobs by state, oldest due job, limits", lists=True)

    p = add(
        "purge-queue",
        cmd_purge_queue,
        "cancel a queue's pending jobs, oldest first, in one transaction; --dry-run counts them",
    )
    p.add_argument("name", help="the queue")
    p.add_argument("--limit", type=int, metavar="N", help="1-10000 (default 10000)")
    p.add_argument("--dry-run", action="store_true", help="change nothing; say how many")

    p = add(
        "queue",
        cmd_queue,
        "show a queue as JSON, after changing what the options say (a limit of 'none' lifts it)",
    )
    p.add_argument("name", help="the queue's name")
    pause = p.add_mutually_exclusive_group()
    pause.add_argument(
        "--pause", dest="paused", action="store_const", const=True, help="stop starting its jobs"
    )
    pause.add_argument(
        "--resume", dest="paused", action="store_const", const=False, help="start them again"
    )
    p.add_argument(
        "--concurrency-limit",
        type=_limit_arg(int),
        default=NOT_GIVEN,
        metavar="N|none",
        help="jobs running at once, across all nodes",
    )
    p.add_argument(
        "--rate-limit",
        type=_limit_arg(float),
        default=NOT_GIVEN,
        metavar="R|none",
        help="jobs started per second (a token bucket)",
    )
    p.add_argument(
        "--rate-burst",
        type=_limit_arg(float),
        default=NOT_GIVEN,
        metavar="B|none",
        help="the bucket's size (default one second's worth)",
    )
    p.add_argument(
        "--max-depth",
        type=_limit_arg(int),
        default=NOT_GIVEN,
        metavar="N|none",
        help="pending jobs it may hold; enqueueing past it is refused (429)",
    )
    for option, kind, meta, text in KEY_DEFAULT_OPTIONS:
        p.add_argument(option, type=_limit_arg(kind), default=NOT_GIVEN, metavar=meta, help=text)

    p = add(
        "key",
        cmd_key,
        "show a fairness key of a queue as JSON, after changing its own settings ('none' gives"
        " one back to the queue's key_* default)",
    )
    p.add_argument("queue", help="the queue")
    p.add_argument("key", help="the fairness key")
    for option, kind, meta, text in KEY_OWN_OPTIONS:
        p.add_argument(option, type=_limit_arg(kind), default=NOT_GIVEN, metavar=meta, help=text)

    add("schedules", cmd_schedules, "list the cron schedules as a table", lists=True)

    schedule = commands.add_parser(
        "schedule", help="add, show or remove a cron schedule", description="Cron schedules."
    )
    actions = schedule.add_subparsers(dest="schedule_command", required=True)

    def add_schedule(name: str, handler: ClientHandler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=[server], help=help_text, description=help_text
        )
        parser.set_defaults(client_handler=handler)
        return parser

    p = add_schedule(
        "add",
        cmd_schedule_add,
        "create (or replace) a schedule: a job of TASK at every tick of CRON; print it as JSON",
    )
    p.add_argument("name", help="the schedule's name")
    p.add_argument("task", help="the task's name")
    p.add_argument("cron", help="a cron expression, e.g. '*/5 * * * *' (quote it)")
    p.add_argument(
        "--args",
        type=_json_arg(list, "array"),
        default=[],
        metavar="JSON",
        help="positional arguments as a JSON array",
    )
    p.add_argument(
        "--kwargs",
        type=_json_arg(dict, "object"),
        metavar="JSON",
        help="keyword arguments as a JSON object",
    )
    p.add_argument("--queue", metavar="Q", help="queue name (default: default)")
    p.add_argument("--priority", type=int, metavar="N", help="-1000..1000, higher first")
    p.add_argument("--timezone", metavar="TZ", help="the cron's time zone (default UTC)")
    p.add_argument(
        "--missed",
        choices=["skip", "catch_up"],
        help="ticks missed while the server was down: skip them (default) or run each",
    )
    p.add_argument(
        "--paused", action="store_true", default=None, help="create it paused (no ticks)"
    )

    p = add_schedule("show", cmd_schedule_show, "print a schedule as JSON")
    p.add_argument("name", help="the schedule's name")

    p = add_schedule("rm", cmd_schedule_rm, "remove a schedule")
    p.add_argument("name", help="the schedule's name")

    p = add(
        "workflow",
        cmd_workflow,
        "enqueue a workflow (a chain, group or chord, as JSON in FILE); print its id and its"
        " jobs' ids",
    )
    p.add_argument("file", metavar="FILE.json", help="the workflow as JSON ('-': stdin)")
    p.add_argument(
        "--on-dependency-failure",
        choices=["fail", "cancel"],
        help="what a step whose dependency did not succeed does (default fail)",
    )
    p.add_argument(
        "--wait",
        type=_seconds_arg,
        nargs="?",
        const=math.inf,
        metavar="S",
        help="wait for it to end (at most S seconds, default no limit), print its jobs and"
        " status; exit 1 unless it succeeded",
    )

    p = add(
        "workflow-status", cmd_workflow_status, "print a workflow's jobs and status", lists=True
    )
    p.add_argument("id", type=int, help="the workflow's id")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _fail(message: str) -> int:
    print(f"jobserver: {message}", file=sys.stderr)
    return EXIT_FAILED


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def _utc(job_time: Any) -> str:
    return str(job_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def _cell(text: str, limit: int = MAX_ERROR_CELL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProgressBar:
    """`job 7 [#########---------]  50% message` on stderr: redrawn in place on a terminal,
    one line per change otherwise."""

    def __init__(self, stream: TextIO, job_id: int) -> None:
        self.stream = stream
        self.job_id = job_id
        self.tty = stream.isatty()
        self._last: tuple[float, str | None] | None = None
        self._width = 0

    def show(self, job: JobInfo) -> None:
        if job.progress is None:
            return
        state = (job.progress.fraction, job.progress.message)
        if state == self._last:
            return
        self._last = state
        fraction = min(1.0, max(0.0, job.progress.fraction))
        filled = round(fraction * PROGRESS_WIDTH)
        bar = "#" * filled + "-" * (PROGRESS_WIDTH - filled)
        line = f"job {self.job_id} [{bar}] {fraction * 100:3.0f}%"
        if job.progress.message:
            line += f" {job.progress.message}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, job: JobInfo) -> None:
        """Draw the job's last progress if a bar is up (so it ends at 100 % on success)."""
        if self._last is not None:
            self.show(job)

    def done(self) -> None:
        if self.tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()


def wait_with_progress(client: Client, job_id: int, timeout_s: float | None) -> JobInfo:
    """Long-poll the job a second at a time until it ends or `timeout_s` passes, drawing its
    progress on stderr."""
    bar = ProgressBar(sys.stderr, job_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        job = client.get(job_id)
        while not job.is_terminal:
            bar.show(job)
            left = POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            job = client.get(job_id, wait_s=min(POLL_S, left))
        bar.finish(job)
    finally:
        bar.done()
    return job


def _report_end(job: JobInfo, timeout_s: float | None) -> int:
    """Print the job as JSON; exit 0 if it succeeded, else 1 with a line on stderr."""
    _print_json(job.to_dict())
    if job.status == JobState.SUCCEEDED:
        return 0
    if not job.is_terminal:
        return _fail(f"job {job.id} is still {job.status} after {timeout_s:g} s")
    return _fail(f"job {job.id} {job.status}" + (f": {job.error}" if job.error else ""))


def cmd_enqueue(client: Client, args: argparse.Namespace) -> int:
    ref = client.enqueue(
        args.task,
        args.args,
        args.kwargs,
        queue=args.queue,
        priority=args.priority,
        delay_s=args.delay,
        max_retries=args.max_retries,
        timeout_s=args.timeout,
        idempotency_key=args.idempotency_key,
        deadline_s=args.deadline_in,
        unique_key=args.unique_key,
        depends_on=args.depends_on,
        pass_result=args.pass_result,
        on_dependency_failure=args.on_dependency_failure,
        callback_url=args.callback_url,
        fairness_key=args.fairness_key,
    )
    if args.wait is None:
        print(ref.id)
        return 0
    timeout_s = None if math.isinf(args.wait) else args.wait
    return _report_end(wait_with_progress(client, ref.id, timeout_s), timeout_s)


def cmd_get(client: Client, args: argparse.Namespace) -> int:
    _print_json(client.get(args.id).to_dict())
    return 0


def cmd_attempts(client: Client, args: argparse.Namespace) -> int:
    attempts = client.attempts(args.id)
    if args.json:
        _print_json({"job_id": args.id, "items": [a.to_dict() for a in attempts]})
        return 0
    rows = [
        [
            str(a.attempt),
            a.outcome,
            _utc(a.started_at) if a.started_at else "",
            _utc(a.ended_at) if a.ended_at else "",
            a.node or "",
            _cell(str(a.error)) if a.error else "",
        ]
        for a in attempts
    ]
    if not rows:
        print(f"job {args.id} has not run yet", file=sys.stderr)
        return 0
    print(_table(["ATTEMPT", "OUTCOME", "STARTED", "ENDED", "NODE", "ERROR"], rows))
    if args.traceback:
        for a in attempts:
            if a.traceback:
                print(f"\n-- attempt {a.attempt} --\n{a.traceback.rstrip()}")
    return 0


def cmd_steps(client: Client, args: argparse.Namespace) -> int:
    steps = client.steps(args.id)
    if args.json:
        _print_json({"job_id": args.id, "items": [s.to_dict() for s in steps]})
        return 0
    rows = [
        [
            str(s.seq),
            s.name,
            s.kind,
            s.status,
            str(s.attempt),
            _utc(s.started_at) if s.started_at else "",
            _cell(json.dumps(s.result)),
        ]
        for s in steps
    ]
    if not rows:
        print(f"job {args.id} has no steps", file=sys.stderr)
        return 0
    print(_table(["SEQ", "NAME", "KIND", "STATUS", "ATTEMPT", "STARTED", "RESULT"], rows))
    return 0


def cmd_signal(client: Client, args: argparse.Namespace) -> int:
    signal_id, woken = client.signal(args.key, args.payload)
    print(f"signal {signal_id} sent to {args.key!r}: {woken} waiting job(s) woken")
    return 0


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    return _report_end(wait_with_progress(client, args.id, args.timeout), args.timeout)


def _more(cursor: str | None) -> None:
    if cursor is not None:
        print(f"(more: --cursor {cursor})", file=sys.stderr)


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(
        status=args.status, queue=args.queue, task=args.task, limit=args.limit, cursor=args.cursor
    )
    if args.json:
        return _print_page(page)
    rows = [
        [str(j.id), j.task, j.queue, j.status.value, str(j.attempts), _utc(j.created_at)]
        for j in page.items
    ]
    if rows:
        print(_table(["ID", "TASK", "QUEUE", "STATUS", "ATTEMPTS", "CREATED"], rows))
    else:
        print("no jobs", file=sys.stderr)
    _more(page.next_cursor)
    return 0


def _print_page(page: Page[Any]) -> int:
    _print_json({"items": [i.to_dict() for i in page.items], "next_cursor": page.next_cursor})
    return 0


def cmd_dead_letters(client: Client, args: argparse.Namespace) -> int:
    page = client.dead_letters(
        limit=args.limit, cursor=args.cursor, task=args.task, queue=args.queue
    )
    if args.json:
        return _print_page(page)
    rows = [
        [
            str(d.id),
            str(d.job_id),
            d.task,
            d.queue,
            str(d.attempts),
            _utc(d.failed_at),
            _cell(str(d.error)) if d.error else "",
        ]
        for d in page.items
    ]
    if rows:
        headers = ["ID", "JOB", "TASK", "QUEUE", "ATTEMPTS", "FAILED", "ERROR"]
        print(_table(headers, rows))
    else:
        print("no dead letters", file=sys.stderr)
    _more(page.next_cursor)
    return 0


def cmd_requeue(client: Client, args: argparse.Namespace) -> int:
    print(client.requeue_dead_letter(args.dead_letter_id))
    return 0


def cmd_dead_letter(client: Client, args: argparse.Namespace) -> int:
    _print_json(client.dead_letter(args.dead_letter_id).to_dict())
    return 0


def cmd_delete_dead_letter(client: Client, args: argparse.Namespace) -> int:
    client.delete_dead_letter(args.dead_letter_id)
    print(f"dead letter {args.dead_letter_id} deleted")
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "task": args.task,
        "queue": args.queue,
        "error_type": args.error_type,
        "failed_after": args.failed_after,
        "failed_before": args.failed_before,
        "limit": args.limit,
        "dry_run": args.dry_run,
    }


def _report_bulk(result: BulkInfo, args: argparse.Namespace, did: str, made: str) -> int:
    if args.json:
        _print_json(
            {
                "matched": result.matched,
                "more": result.more,
                "dead_letter_ids": result.dead_letter_ids,
                "sample": [d.to_dict() for d in result.sample],
                made: result.done,
            }
        )
        return 0
    more = f" (more match: run again, or raise --limit past {args.limit})" if result.more else ""
    if args.dry_run:
        print(f"{result.matched} dead letters match{more}; --dry-run: nothing {did}")
        rows = [[str(d.id), d.task, d.queue, _cell(str(d.error)) if d.error else ""]
                for d in result.sample]  # fmt: skip
        if rows:
            print(_table(["ID", "TASK", "QUEUE", "ERROR"], rows))
        return 0
    print(f"{len(result.done)} of {result.matched} dead letters {did}{more}")
    return 0


def cmd_requeue_dead_letters(client: Client, args: argparse.Namespace) -> int:
    result = client.requeue_dead_letters(**_selection(args))
    return _report_bulk(result, args, "requeued", "job_ids")


def cmd_purge_dead_letters(client: Client, args: argparse.Namespace) -> int:
    result = client.delete_dead_letters(**_selection(args))
    return _report_bulk(result, args, "deleted", "deleted")


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel(args.id)
    if job.status == JobState.CANCELLED:
        print(f"job {job.id} cancelled")
    else:
        print(f"job {job.id} is {job.status}: asked to stop; it ends cancelled once its task stops")
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_job(args.id)
    print(f"job {args.id} deleted")
    return 0


def _age(seconds: float | None) -> str:
    """42s, 5m12s, 3h04m, 2d03h; `-` for none."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _limits(queue: QueueInfo) -> str:
    limits = queue.limits
    parts = []
    if limits.concurrency_limit is not None:
        parts.append(f"concurrency={limits.concurrency_limit}")
    if limits.rate_limit is not None:
        parts.append(f"rate={limits.rate_limit:g}/s")
    if limits.rate_burst is not None:
        parts.append(f"burst={limits.rate_burst:g}")
    if limits.max_depth is not None:
        parts.append(f"max_depth={limits.max_depth}")
    if limits.key_concurrency_limit is not None:
        parts.append(f"key_concurrency={limits.key_concurrency_limit}")
    if limits.key_rate_limit is not None:
        parts.append(f"key_rate={limits.key_rate_limit:g}/s")
    return ",".join(parts) or "-"


def cmd_queues(client: Client, args: argparse.Namespace) -> int:
    queues = client.queues()
    if args.json:
        _print_json({"items": [q.to_dict() for q in queues]})
        return 0
    states = [
        JobState.PENDING,
        JobState.RUNNING,
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    ]
    rows = [
        [
            q.name,
            "yes" if q.paused else "no",
            *(str(q.counts.get(s.value, 0)) for s in states),
            _age(q.oldest_due_age_s),
            _limits(q),
        ]
        for q in queues
    ]
    if rows:
        headers = ["QUEUE", "PAUSED", *(s.value.upper() for s in states), "OLDEST DUE", "LIMITS"]
        print(_table(headers, rows))
    else:
        print("no queues", file=sys.stderr)
    return 0


def cmd_purge_queue(client: Client, args: argparse.Namespace) -> int:
    result = client.purge_queue(args.name, limit=args.limit, dry_run=args.dry_run)
    more = " (more are pending: run it again)" if result.more else ""
    if args.dry_run:
        print(f"{result.matched} pending jobs in {args.name}{more}; --dry-run: none cancelled")
    else:
        print(f"{len(result.cancelled)} pending jobs in {args.name} cancelled{more}")
    return 0


def cmd_queue(client: Client, args: argparse.Namespace) -> int:
    names = ["concurrency_limit", "rate_limit", "rate_burst", "max_depth"]
    names += [o[0][2:].replace("-", "_") for o in KEY_DEFAULT_OPTIONS]
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not NOT_GIVEN}
    if args.paused is not None:
        changes["paused"] = args.paused
    # One PATCH for every change, so a pause and new limits apply together.
    queue = client.configure_queue(args.name, **changes) if changes else client.queue(args.name)
    _print_json(queue.to_dict())
    return 0


def cmd_key(client: Client, args: argparse.Namespace) -> int:
    names = tuple(o[0][2:].replace("-", "_") for o in KEY_OWN_OPTIONS)
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not NOT_GIVEN}
    if changes:
        key = client.configure_key(args.queue, args.key, **changes)
    else:
        key = client.key(args.queue, args.key)
    _print_json(key.to_dict())
    return 0


def cmd_schedules(client: Client, args: argparse.Namespace) -> int:
    schedules = client.schedules()
    if args.json:
        _print_json({"items": [s.to_dict() for s in schedules]})
        return 0
    rows = [
        [
            s.name,
            s.task,
            s.queue,
            s.timezone,
            s.missed,
            "yes" if s.paused else "no",
            _utc(s.next_run_at),
            _utc(s.last_run_at) if s.last_run_at else "-",
            s.cron,
        ]
        for s in schedules
    ]
    if rows:
        headers = ["NAME", "TASK", "QUEUE", "TIMEZONE", "MISSED", "PAUSED", "NEXT", "LAST", "CRON"]
        print(_table(headers, rows))
    else:
        print("no schedules", file=sys.stderr)
    return 0


def cmd_schedule_add(client: Client, args: argparse.Namespace) -> int:
    schedule = client.create_schedule(
        args.name,
        args.task,
        args.cron,
        args.args,
        args.kwargs,
        queue=args.queue,
        priority=args.priority,
        timezone=args.timezone,
        missed=args.missed,
        paused=args.paused,
    )
    _print_json(schedule.to_dict())
    return 0


def cmd_schedule_show(client: Client, args: argparse.Namespace) -> int:
    _print_json(client.schedule(args.name).to_dict())
    return 0


def cmd_schedule_rm(client: Client, args: argparse.Namespace) -> int:
    client.delete_schedule(args.name)
    print(f"schedule {args.name} removed")
    return 0


def _read_workflow(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowFileError(f"cannot read {path}: {exc}") from None
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise WorkflowFileError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise WorkflowFileError(f"{path} must hold a JSON object: a chain, group or chord")
    return spec


class WorkflowFileError(Exception):
    """The workflow file cannot be read or is not a JSON object."""


def _result_cell(job: JobInfo) -> str:
    if job.error is not None:
        return _cell(str(job.error))
    if job.status == JobState.SUCCEEDED:
        return _cell(json.dumps(job.result, ensure_ascii=False))
    return ""


def _report_workflow(flow: WorkflowInfo, timeout_s: float | None) -> int:
    """Its jobs as a table, then `workflow N STATUS`; exit 0 if it succeeded, else 1."""
    _print_workflow(flow)
    if flow.succeeded:
        return 0
    if not flow.is_terminal:
        return _fail(f"workflow {flow.id} is still {flow.status} after {timeout_s or 0:g} s")
    failed = next((j for j in flow.jobs if j.status == JobState.FAILED and j.error), None)
    detail = f": job {failed.id} failed: {failed.error}" if failed is not None else ""
    return _fail(f"workflow {flow.id} {flow.status}{detail}")


def cmd_workflow(client: Client, args: argparse.Namespace) -> int:
    try:
        spec = _read_workflow(args.file)
    except WorkflowFileError as exc:
        return _fail(str(exc))
    ref = client.enqueue_workflow(spec, on_dependency_failure=args.on_dependency_failure)
    print(f"workflow {ref.id}")
    print("jobs " + " ".join(str(i) for i in ref.job_ids))
    if args.wait is None:
        return 0
    sys.stdout.flush()
    timeout_s = None if math.isinf(args.wait) else args.wait
    return _report_workflow(client.wait_workflow(ref.id, timeout_s), timeout_s)


def _print_workflow(flow: WorkflowInfo) -> None:
    rows = [[str(j.id), j.task, j.status.value, _result_cell(j)] for j in flow.jobs]
    print(_table(["JOB", "TASK", "STATUS", "RESULT"], rows))
    print(f"workflow {flow.id} {flow.status}")


def cmd_workflow_status(client: Client, args: argparse.Namespace) -> int:
    flow = client.workflow(args.id)
    if args.json:
        _print_json(flow.to_dict())
        return 0
    _print_workflow(flow)
    return 0


# -- database commands: migrate, backup -----------------------------------------------------------
def add_database_commands(commands: Any) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument(
        "--db", help=f"SQLite database file (default {Settings().db}) [{env_name('db')}]"
    )
    p = commands.add_parser(
        "migrate",
        parents=[db],
        help="apply the database's schema migrations and print its schema version",
        description="Open the database, apply the migrations it has not had, close it. The"
        " server does the same when it starts; a database a server is using is refused.",
    )
    p.set_defaults(db_handler=cmd_migrate)
    p = commands.add_parser(
        "backup",
        parents=[db],
        help="copy the database, safely while a server is using it",
        description="Copy the database with SQLite's online backup API (a consistent snapshot;"
        " the server keeps running), then check the copy with PRAGMA integrity_check.",
    )
    p.add_argument("path", help="where to write the copy (must not exist yet)")
    p.set_defaults(db_handler=cmd_backup)


class NotSQLite(ConfigError):
    """`migrate` and `backup` work on SQLite files only."""


def _db_path(args: argparse.Namespace) -> str:
    """--db, else JOBSERVER_DB, else the default: as `serve` reads it."""
    environ = {k: v for k, v in os.environ.items() if k == env_name("db")}
    db = load_settings({"db": args.db}, environ).db
    if db.startswith(("postgres://", "postgresql://")):
        raise NotSQLite(
            f"{args.command} works on SQLite files; for PostgreSQL, the server applies"
            " migrations when it starts, and pg_dump makes backups"
        )
    return db


def _connect_existing(path: Path) -> sqlite3.Connection:
    """A connection that only reads, to a file that must exist. Not `mode=ro`: a read-only
    connection that is the last to close leaves the -wal and -shm files behind."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)


def _schema_version(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        with contextlib.closing(_connect_existing(path)) as conn:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None or row[0] is None else int(row[0])


async def _open_and_close(db: str) -> None:
    store = open_store(db)
    await store.open()  # applies the migrations
    await store.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    db = Path(_db_path(args))
    existed = db.exists()
    before = _schema_version(db)
    try:
        asyncio.run(_open_and_close(str(db)))
    except DatabaseInUse as exc:
        return _fail(f"{exc}; stop it first (the server applies migrations when it starts)")
    except (StoreError, ValidationError) as exc:
        return _fail(f"cannot migrate {db}: {exc}")
    after = _schema_version(db)
    if not existed:
        print(f"{db}: new database at schema version {after}")
    elif before == after:
        print(f"{db}: schema version {after} (up to date)")
    else:
        print(f"{db}: schema version {after} (migrated from {before or 0})")
    return 0


def _counts(conn: sqlite3.Connection) -> str:
    try:
        jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    except sqlite3.Error:
        return ""
    return f"; jobs: {jobs}, dead letters: {dead}"


def cmd_backup(args: argparse.Namespace) -> int:
    source_path = Path(_db_path(args))
    dest = Path(args.path)
    if not source_path.is_file():
        return _fail(f"no database at {source_path}")
    if dest.exists():
        return _fail(f"{dest} already exists; give a path that does not")
    partial = dest.with_name(dest.name + ".partial")
    try:
        partial.unlink(missing_ok=True)
        with contextlib.closing(_connect_existing(source_path)) as source:
            source.execute("PRAGMA busy_timeout=5000")
            with contextlib.closing(sqlite3.connect(partial)) as copy:
                # One step: a single read transaction, so the copy is one consistent snapshot
                # (WAL lets the server keep writing meanwhile).
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file
        with contextlib.closing(sqlite3.connect(partial)) as copy:
            check = [row[0] for row in copy.execute("PRAGMA integrity_check")]
            counts = _counts(copy)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        return _fail(f"cannot back up {source_path} to {dest}: {exc}")
    if check != ["ok"]:
        partial.unlink(missing_ok=True)
        return _fail(f"the copy of {source_path} failed its integrity check: {'; '.join(check)}")
    partial.rename(dest)
    print(f"{dest}: copy of {source_path}, {dest.stat().st_size} bytes{counts}")
    print("integrity_check: ok")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """Every command but `serve`."""
    url = token = None
    try:
        if hasattr(args, "db_handler"):
            try:
                handler: DatabaseHandler = args.db_handler
                return handler(args)
            except ConfigError as exc:
                print(f"jobserver: {exc}", file=sys.stderr)
                return EXIT_CONFIG
        url, source = args.url, "--url"
        if url is None:
            url, source = os.environ.get("JOBSERVER_URL") or DEFAULT_URL, "JOBSERVER_URL"
        token = args.token if args.token is not None else os.environ.get("JOBSERVER_TOKEN")
        try:
            client = Client(url, token or None)
        except ValueError as exc:
            print(f"jobserver: {source}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        with client:
            client_handler: ClientHandler = args.client_handler
            return client_handler(client, args)
    except ConnectionFailed as exc:
        return _fail(str(exc))
    except QueueFull as exc:
        after = f"; try again in {exc.retry_after_s:g} s" if exc.retry_after_s is not None else ""
        return _fail(f"{exc}{after}")
    except AuthError as exc:
        if exc.status == 401 and token:
            return _fail(f"the server refused the token ({exc}): check --token / JOBSERVER_TOKEN")
        if exc.status == 401:
            return _fail(f"the server needs a token ({exc}): give --token or set JOBSERVER_TOKEN")
        return _fail(str(exc))
    except ApiError as exc:
        return _fail(str(exc))  # "<code>: <message> (field: X)"
    except UnexpectedResponse as exc:
        return _fail(f"{url} did not answer as a jobserver does: {exc}")
    except ClientError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # stdout's reader left (`jobserver jobs | head -1`): quietly, without a second error
        # when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
