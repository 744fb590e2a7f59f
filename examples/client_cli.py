"""`jobserver serve` as its own process, driven with the Python client and the CLI.

    python examples/client_cli.py

Starts `python -m jobserver serve --tasks examples.tasks` on a free loopback port (from the
repository's root, so that `examples.tasks` imports), then:

- enqueues `add(2, 3)` with `jobserver.client.Client` and waits for its result;
- runs `jobserver enqueue checksum --args '["abc"]' --wait 10` (as `python -m jobserver`) and
  reads the finished job it prints as JSON;
- stops the server with SIGTERM, as systemd does, and checks that it drained and exited 0.

The database is a file in a temporary directory. Prints what happened, then "ok".
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jobserver.client import Client

ROOT = Path(__file__).resolve().parent.parent  # the directory that holds examples/
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """This environment without JOBSERVER_* settings, so that only the flags below apply."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}


def wait_ready(client: Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not client.health():  # GET /healthz; False while nothing listens yet
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the server is not up after {READY_TIMEOUT_S} s:\n{log.read_text()}"
            )
        time.sleep(0.05)


def run(tmp: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "server.log"
    command = [sys.executable, "-m", "jobserver", "serve", "--tasks", "examples.tasks"]
    command += ["--db", str(tmp / "jobs.db"), "--port", str(port), "--grace-period", "5"]
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            command, cwd=ROOT, env=clean_env(), stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        with Client(url, timeout_s=10) as jobs:
            wait_ready(jobs, server, log)
            print(f"server {server.pid} up on {url}")

            ref = jobs.enqueue("add", [2, 3])
            job = jobs.wait(ref.id, timeout_s=10)  # long-polls GET /jobs/{id}?wait=S
            print(f"client: job {job.id} {job.task}{tuple(job.args)} {job.status} -> {job.result}")
            assert job.succeeded and job.result == 5

        enqueue = [sys.executable, "-m", "jobserver", "enqueue", "checksum", "--args", '["abc"]']
        cli = subprocess.run(
            [*enqueue, "--wait", "10", "--url", url],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert cli.returncode == 0, cli.stderr
        printed = json.loads(cli.stdout)  # the finished job, as GET /jobs/{id} shows it
        print(f"cli: job {printed['id']} {printed['task']} {printed['status']}")
        assert printed["result"] == hashlib.sha256(b"abc").hexdigest()

        server.send_signal(signal.SIGTERM)  # drain: running jobs get --grace-period seconds
        code = server.wait(timeout=STOP_TIMEOUT_S)
        print(f"server stopped with exit status {code}")
        assert code == 0, log.read_text()
    finally:
        if server.poll() is None:  # something above failed: do not leave the server behind
            server.kill()
            server.wait()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="jobserver-example-") as tmp:
        run(Path(tmp))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
