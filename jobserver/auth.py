"""Bearer-token authentication: full tokens, read-only tokens, worker tokens (external workers:
lease jobs and report on them, nothing else), and a limit on failures.

Tokens are compared in constant time, every configured token each time (so the time taken
says nothing about which one, or how much of one, matched).

The failure limit slows a client that keeps sending wrong tokens (a misconfigured script, a
scan) and keeps such requests cheap; it never refuses a valid token, so one bad client on an
address (often 127.0.0.1, beside a sidecar) cannot lock out the app or the dashboard there.
Guessing is answered by the tokens themselves: use long random ones."""

from __future__ import annotations

import collections
import hmac
from collections.abc import Iterable
from enum import Enum

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
FAILURE_WINDOW_S = 60.0
MAX_FAILURES = 10  # per client address and window; then 429 until the window moves on
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(Enum):
    NONE = "none"
    READ = "read"
    WORKER = "worker"  # an external worker's: may only lease jobs and report on them
    FULL = "full"


def host_name(header: str | None) -> str:
    """The name in a Host header, without its port or IPv6 brackets, in lower case."""
    text = (header or "").strip().lower()
    if text.startswith("["):
        return text[1:].partition("]")[0]
    return text.rpartition(":")[0] if text.count(":") == 1 else text


class TokenAuth:
    def __init__(
        self,
        tokens: Iterable[str],
        read_tokens: Iterable[str] = (),
        max_failures: int = MAX_FAILURES,
        server_names: Iterable[str] = (),
        worker_tokens: Iterable[str] = (),
    ) -> None:
        self.max_failures = max_failures
        # While no token is set, the names a request's Host may give: the loopback names and
        # these. A browser page from elsewhere whose name was pointed at 127.0.0.1 (DNS
        # rebinding) sends its own name, and is refused.
        self.server_names = LOOPBACK_NAMES | {host_name(n) for n in server_names if n}
        self._hosts_allowed: set[tuple[str | None, str | None]] = set()  # seen, and allowed
        self._full = [t.encode() for t in tokens if t]
        self._read = [t.encode() for t in read_tokens if t]
        self._worker = [t.encode() for t in worker_tokens if t]
        if not self._full and (self._read or self._worker):
            raise ValueError("read-only and worker tokens need a full token beside them")
        self._failures: dict[str, collections.deque[float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._full)

    def access(self, header: str | None) -> Access:
        """What an Authorization header grants (the scheme's name in any case, RFC 9110)."""
        scheme, _, credentials = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return Access.NONE
        given = credentials.strip().encode()
        full = _matches_any(given, self._full)
        read = _matches_any(given, self._read)
        worker = _matches_any(given, self._worker)
        if full:
            return Access.FULL
        if worker:
            return Access.WORKER
        return Access.READ if read else Access.NONE

    def host_allowed(self, header: str | None, local_address: str | None) -> bool:
        """With a token set, any Host; without, one of server_names or the address the
        connection came in on (a client that names the server by its IP)."""
        if self.enabled or (header, local_address) in self._hosts_allowed:
            return True  # (a client names the server the same way on every request)
        name = host_name(header)
        allowed = name in self.server_names or (local_address is not None and name == local_address)
        if allowed and len(self._hosts_allowed) < 64:
            self._hosts_allowed.add((header, local_address))
        return allowed

    def throttled(self, client: str, now: float) -> float | None:
        """Seconds until `client` may try again after too many failures; None if it may now."""
        failures = self._failures.get(client)
        if not failures:
            return None
        while failures and failures[0] <= now - FAILURE_WINDOW_S:
            failures.popleft()
        if len(failures) < self.max_failures:
            return None
        return failures[0] + FAILURE_WINDOW_S - now

    def record_failure(self, client: str, now: float) -> None:
        if len(self._failures) > 10_000:  # forget the quiet ones rather than grow without end
            self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - 60}
        self._failures.setdefault(client, collections.deque(maxlen=self.max_failures)).append(now)


def _matches_any(given: bytes, tokens: list[bytes]) -> bool:
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given, token)
    return found
