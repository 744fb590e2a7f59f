"""The exceptions jobserver raises and the ones tasks raise to steer retries.

JobServerError
├── IllegalTransition        a state change the state machine does not allow
├── StoreError
│   ├── StorageUnavailable   the database cannot take writes now (disk full, locked)
│   ├── DatabaseInUse        another jobserver process holds the database file
│   └── SchemaError          the file is not a jobserver database we can open
├── NotFound                 no job / dead letter with that id
├── Conflict                 the request clashes with the current state
└── ValidationError          bad input, naming the field

Exceptions a task raises on purpose (not JobServerError):
├── PermanentError           fail the job now, no retry
└── Retry                    retry after the given delay (counts as an attempt)
"""

from __future__ import annotations


class JobServerError(Exception):
    """Base of every error jobserver raises itself."""


class IllegalTransition(JobServerError):
    """A job cannot move between these two states."""


class StoreError(JobServerError):
    """The store failed."""


class StorageUnavailable(StoreError):
    """The database cannot take writes right now; try again later."""

    def __init__(self, message: str = "storage unavailable", retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DatabaseInUse(StoreError):
    """Another jobserver process is using this database file."""


class SchemaError(StoreError):
    """The database file is not one this version of jobserver can open."""


class NotFound(JobServerError):
    """No such job or dead letter."""


class Conflict(JobServerError):
    """The request conflicts with the current state of the job."""


class QueueFull(JobServerError):
    """The queue holds its maximum number of pending jobs; try again later."""

    def __init__(self, queue: str, max_depth: int, retry_after_s: int = 1) -> None:
        super().__init__(
            f"queue {queue!r} is full: it holds its maximum of {max_depth} pending jobs"
        )
        self.queue = queue
        self.retry_after_s = retry_after_s


class ValidationError(JobServerError):
    """Input was refused; `field` names what was wrong."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class PermanentError(Exception):
    """Raised by a task: the job fails for good at once, with no retry."""


class Retry(Exception):
    """Raised by a task: try again after `delay_s` seconds (uses up an attempt)."""

    def __init__(self, delay_s: float = 0.0, message: str = "retry requested") -> None:
        super().__init__(message)
        self.delay_s = max(0.0, float(delay_s))
