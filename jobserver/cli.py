"""The `jobserver` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from .config import (
    SETTINGS,
    ConfigError,
    Settings,
    env_name,
    flag_name,
    is_loopback,
    load_settings,
)
from .errors import StoreError, ValidationError
from .logs import configure_logging
from .server import JobServer

log = logging.getLogger("jobserver")

EXIT_CONFIG = 2
EXIT_STARTUP = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobserver", description="A background-job server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and the workers",
        description="Every flag can also be set by the environment variable shown.",
    )
    for setting, (_convert, help_text) in SETTINGS.items():
        kwargs: dict[str, object] = {"default": None, "help": f"{help_text} [{env_name(setting)}]"}
        if setting in ("tasks", "http_allow_hosts"):
            kwargs["action"] = "append"
        serve.add_argument(flag_name(setting), dest=setting, **kwargs)  # type: ignore[arg-type]
    return parser


async def serve(settings: Settings) -> int:
    try:
        server = JobServer(
            settings.db,
            tasks=settings.tasks,
            concurrency=settings.concurrency,
            durability=settings.durability,
            lease_ttl_s=settings.lease_ttl,
            grace_period_s=settings.grace_period,
            http_allowed_hosts=settings.http_allow_hosts,
            max_body_bytes=settings.max_body_bytes,
        )
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
    if not is_loopback(settings.host):
        log.warning(
            "listening on %s, beyond this machine: the API has no authentication yet,"
            " so put it behind a proxy or firewall that does",
            settings.host,
        )
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
    return 0


def run(coro_settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        return asyncio.run(serve(coro_settings))
    return int(uvloop.run(serve(coro_settings)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(vars(args), os.environ)
    except ConfigError as exc:
        print(f"jobserver: {exc}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
