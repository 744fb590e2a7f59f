"""Completion webhooks: when a job with a `callback_url` ends, the server POSTs its record there.

The delivery is itself a job (task `jobserver.webhook`), enqueued by the store in the same
transaction that ends the job, so it is never lost and is retried with backoff like any job;
one that keeps failing lands in the dead-letter table. The body is the job as GET /jobs/{id}
shows it, signed in the Standard Webhooks format by the `http` task that sends it (signing.py:
webhook-id, webhook-timestamp, webhook-signature), which receivers check with an off-the-shelf
library. The earlier headers
stay beside them for receivers written against them (HMAC-SHA256 over "<timestamp>.<body>"):

    X-Jobserver-Timestamp: 1800000000
    X-Jobserver-Signature: sha256=<hex digest>

Target hosts follow the `http` task's allow-list, redirects included.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from . import codec
from .builtin_tasks import HttpTask
from .clock import Clock
from .errors import NotFound, PermanentError, ValidationError
from .models import WEBHOOK_MAX_RETRIES, WEBHOOK_TASK, Backoff, Job
from .render import job_to_dict
from .tasks import TaskSpec

TIMESTAMP_HEADER = "X-Jobserver-Timestamp"
SIGNATURE_HEADER = "X-Jobserver-Signature"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300
) -> bool:
    """True for a signature made with `secret` over this body, less than `tolerance_s` old."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class Webhooks:
    def __init__(
        self,
        http: HttpTask,
        secret: str | None,
        get_job: Callable[[int], Awaitable[Job]],
        clock: Clock,
    ) -> None:
        self.http = http
        self._secret = secret
        self._get_job = get_job
        self.clock = clock

    def check_url(self, url: str) -> None:
        """Refuse, at enqueue, a callback that could never be delivered."""
        if not self._secret:
            raise ValidationError(
                "callback_url",
                "this server has no webhook secret to sign with:"
                " start it with --webhook-secret or JOBSERVER_WEBHOOK_SECRET",
            )
        try:
            self.http.check_url(url)
        except PermanentError as exc:
            raise ValidationError("callback_url", str(exc)) from None

    async def deliver(self, url: str, job_id: int) -> dict[str, Any]:
        """The `jobserver.webhook` task: POST the job's record, signed."""
        if not self._secret:
            raise PermanentError("no webhook secret is configured")
        try:
            job = await self._get_job(job_id)
        except NotFound:
            raise PermanentError(f"job {job_id} no longer exists") from None
        body = codec.dumps(job_to_dict(job))
        timestamp = str(int(self.clock.now()))
        headers = {  # (the http task adds the Standard Webhooks signature, same secret)
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        return await self.http(url, method="POST", headers=headers, body=body.decode())

    def spec(self) -> TaskSpec:
        return TaskSpec(
            name=WEBHOOK_TASK,
            fn=self.deliver,
            is_async=True,
            wants_ctx=False,
            max_retries=WEBHOOK_MAX_RETRIES,
            backoff=Backoff(base_s=1.0, factor=2.0, cap_s=300.0),
            internal=True,
            isolation="inline",  # the server's own code
        )
