"""Settings for `jobserver serve`: from flags, `JOBSERVER_*` environment variables, and an
optional TOML file (`--config jobserver.toml`).

Precedence: a flag beats its environment variable, which beats the file, which beats the
default. A bad value is refused with an error naming where it came from.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import signing
from .builtin_tasks import DEFAULT_ALLOWED_HOSTS


class ConfigError(ValueError):
    """A setting has a value jobserver cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    db: str = "jobserver.db"
    host: str = "127.0.0.1"
    port: int = 8000
    tasks: tuple[str, ...] = ()
    concurrency: int = 16
    durability: str = "full"
    grace_period: float = 30.0
    lease_ttl: float = 30.0
    log_format: str = "text"
    log_level: str = "info"
    access_log: bool = False
    http_allow_hosts: tuple[str, ...] = field(default=tuple(sorted(DEFAULT_ALLOWED_HOSTS)))
    max_body_bytes: int = 1024 * 1024
    rescue_interval: float = 5.0
    idempotency_window: float = 86_400.0
    keep_finished_days: float = 7.0
    keep_failed_days: float = 30.0
    keep_events_hours: float = 24.0
    isolation: str = "inline"
    max_tasks_per_child: int = 10_000
    max_memory_per_child: float = 1024.0
    token: tuple[str, ...] = ()
    read_token: tuple[str, ...] = ()
    worker_token: tuple[str, ...] = ()
    external_task: tuple[str, ...] = ()
    server_name: tuple[str, ...] = ()
    webhook_secret: str | None = None


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return convert


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number of seconds, got {text!r}")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {text!r}")
        return value

    return convert


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be on or off, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError("must name at least one entry")
    return names


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _secret(text: str) -> str:
    signing.signing_key(text)  # refuses one that would sign with an empty or garbled key
    return text


# setting -> (converter, help)
SETTINGS: dict[str, tuple[Callable[[str], Any], str]] = {
    "db": (_text, "SQLite database file (default ./jobserver.db)"),
    "host": (_text, "address to listen on (default 127.0.0.1)"),
    "port": (_int_in(0, 65535), "port to listen on (default 8000)"),
    "tasks": (_names, "module(s) with @task functions to import; repeatable / comma-separated"),
    "concurrency": (_int_in(1, 10_000), "jobs run at once (default 16)"),
    "durability": (
        _choice("full", "normal"),
        "full: fsync every commit (default); normal: faster, the last commits may be lost"
        " on power loss",
    ),
    "grace_period": (
        _positive_float,
        "seconds running jobs get at shutdown (default 30)",
    ),
    "lease_ttl": (_positive_float, "seconds a job's lease lasts without renewal (default 30)"),
    "log_format": (_choice("text", "json"), "log lines as text (default) or JSON"),
    "log_level": (_choice("debug", "info", "warning", "error"), "log level (default info)"),
    "access_log": (
        _switch,
        "on: log each HTTP request (method, path, status, ms, client) as jobserver.access"
        " (default off)",
    ),
    "http_allow_hosts": (_names, "hosts the http task may call (default: loopback only)"),
    "max_body_bytes": (_int_in(1024, 1024**3), "largest request body accepted (default 1 MiB)"),
    "rescue_interval": (
        _positive_float,
        "seconds between looks for expired leases and deadlines (default 5)",
    ),
    "idempotency_window": (
        _positive_float,
        "seconds an idempotency key stays bound to its job (default 86400)",
    ),
    "keep_finished_days": (
        _positive_float,
        "days succeeded and cancelled jobs are kept (default 7)",
    ),
    "keep_failed_days": (
        _positive_float,
        "days failed jobs and dead letters are kept (default 30)",
    ),
    "isolation": (
        _choice("inline", "process"),
        "where task bodies run: inline, in the server's process (default), or process, in"
        " child processes (a task may say otherwise: @task(isolation=...))",
    ),
    "max_tasks_per_child": (
        _int_in(1, 10**9),
        "tasks a child process runs before it is replaced (default 10000)",
    ),
    "max_memory_per_child": (
        _positive_float,
        "MB of memory past which a child process is replaced after its task (default 1024)",
    ),
    "keep_events_hours": (
        _positive_float,
        "hours the event log is kept for streams that resume (Last-Event-ID) (default 24)",
    ),
    "token": (
        _names,
        "bearer token(s) every route but /healthz requires; repeatable / comma-separated",
    ),
    "read_token": (_names, "read-only bearer token(s), e.g. for dashboards and polling"),
    "worker_token": (
        _names,
        "bearer token(s) of external workers: they may only lease jobs and report on them",
    ),
    "external_task": (
        _names,
        "a task run by external workers that lease it over HTTP: 'NAME[=QUEUE] [timeout=S]"
        " [max_retries=N]' (queue: external); repeatable / comma-separated",
    ),
    "server_name": (
        _names,
        "host name(s) the API answers to while no token is set, besides localhost (a"
        " request naming another is refused: DNS rebinding); repeatable / comma-separated",
    ),
    "webhook_secret": (
        _secret,
        "the key that signs completion webhooks and the http task's calls (Standard Webhooks;"
        " whsec_ and base64, or any text)",
    ),
}
SECRET_SETTINGS = frozenset({"token", "read_token", "worker_token", "webhook_secret"})


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def env_name(setting: str) -> str:
    return "JOBSERVER_" + setting.upper()


def read_config_file(path: str) -> dict[str, str]:
    """A TOML file of settings (`port = 8080`, `tasks = ["a.tasks"]`), as text per setting."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    values: dict[str, str] = {}
    for key, value in data.items():
        setting = key.replace("-", "_")
        if setting not in SETTINGS:
            raise ConfigError(f"{path}: {key}: not a setting (see jobserver serve --help)")
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            raise ConfigError(f"{path}: {key}: must not be true/false")
        values[setting] = str(value)
    return values


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    file_values: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from parsed flags (None where not given), the environment and a config file."""
    values: dict[str, Any] = {}
    file_values = file_values or {}
    for setting, (convert, _help) in SETTINGS.items():
        flag_value = flags.get(setting)
        if flag_value is not None and flag_value != []:
            # a repeatable flag gives a list
            raw = ",".join(flag_value) if isinstance(flag_value, list) else str(flag_value)
            source = flag_name(setting)
        elif env_name(setting) in environ:
            raw = environ[env_name(setting)]
            source = env_name(setting)
        elif setting in file_values:
            raw = file_values[setting]
            source = f"{setting} (config file)"
        else:
            continue
        try:
            values[setting] = convert(raw)
        except ValueError as exc:
            if setting in SECRET_SETTINGS:  # never echo a secret back
                raise ConfigError(f"{source}: not a usable value") from None
            raise ConfigError(f"{source}: {exc}") from None
    return Settings(**values)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
