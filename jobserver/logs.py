"""Log set-up for the command line: text for people, one JSON object a line for machines; and
the fields every job-related line carries (`job_fields`), which JSON lines show as fields."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from . import codec

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def job_fields(job: Any, **more: Any) -> dict[str, Any]:
    """`extra=` for a log line about a job: its id, task, queue and attempt (JSON lines carry
    them as fields; `traceback`, given in `more`, goes in a field of its own)."""
    return {
        "job_id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempts,
        **more,
    }


class TextFormatter(logging.Formatter):
    """The usual text line; a `traceback` field (a task's own) follows it, indented."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        traceback = getattr(record, "traceback", None)
        if traceback:
            line += "\n" + "\n".join("    " + t for t in str(traceback).rstrip().splitlines())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return codec.dumps(entry, default=str).decode()


def configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
