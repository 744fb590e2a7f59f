"""jobserver: a background-job server for Python; durable SQLite queue, async workers, HTTP API."""

from .clock import Clock, ManualClock, SystemClock
from .durable import ChildFailed
from .errors import PermanentError, Retry
from .models import Backoff, DeadLetter, Job, JobState, NewJob
from .server import JobServer
from .tasks import JobContext, current_job, task

__all__ = [
    "Backoff",
    "ChildFailed",
    "Clock",
    "DeadLetter",
    "Job",
    "JobContext",
    "JobServer",
    "JobState",
    "ManualClock",
    "NewJob",
    "PermanentError",
    "Retry",
    "SystemClock",
    "current_job",
    "task",
]

__version__ = "0.1.0"
