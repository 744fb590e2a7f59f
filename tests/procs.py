"""Running the real `jobserver serve` as a subprocess, for tests that kill and restart it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

import aiohttp
import pytest

REPO = Path(__file__).resolve().parent.parent
TASKS_MODULE = "tests.process_tasks"
EXEC_LOG_ENV = "JOBSERVER_TEST_EXEC_LOG"  # as in tests/process_tasks.py
READY_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any JOBSERVER_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}
    env.update(extra or {})
    return env


def serve_command(db: Path | str, port: int, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jobserver",
        "serve",
        "--db",
        str(db),
        "--port",
        str(port),
        "--tasks",
        TASKS_MODULE,
        *flags,
    ]


class ServerProcess:
    """One `jobserver serve` subprocess; its stdout and stderr go to a file."""

    def __init__(
        self, db: Path | str, flags: Sequence[str], env: Mapping[str, str] | None, log_path: Path
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                serve_command(db, self.port, *flags),
                cwd=REPO,
                env=server_env(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        """Poll GET /healthz until it answers 200; fail at once if the process exits."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode} before it was ready:\n"
                    + self.output()
                )
            try:
                async with session.get(
                    f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)
                ) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{self.output()}")
            await asyncio.sleep(0.05)

    async def wait_running(self, session: aiohttp.ClientSession, timeout_s: float = 10) -> None:
        """Poll until some job is running (shows the server log if none does in time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            async with session.get(f"{self.url}/jobs?status=running&limit=1") as resp:
                if (await resp.json())["items"]:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"no job running after {timeout_s} s:\n{self.output()}")
            await asyncio.sleep(0.01)

    async def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"server still running {timeout_s} s later:\n{self.output()}")
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            self._log.close()


class Spawn(Protocol):
    def __call__(
        self, db: Path | str, flags: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> ServerProcess: ...


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m jobserver ...` to completion (for start-ups that must fail)."""
    return subprocess.run(
        [sys.executable, "-m", "jobserver", *args],
        cwd=REPO,
        env=server_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
