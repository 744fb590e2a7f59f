"""The `jobserver` client and database commands, run as subprocesses against a real
`jobserver serve` subprocess (with tests/cli_tasks.py) on a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO
from unittest import mock

import pytest

from jobserver import JobState, __version__
from jobserver.cli import main
from jobserver.client import Client, ClientError
from jobserver.store.sqlite.statements import MIGRATIONS

from ..procs import REPO, free_port, server_env

READY_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 30.0
SCHEMA = MIGRATIONS[-1][0]  # the schema version `migrate` brings a database to
WEBHOOK_SECRET = "cli-test-secret"  # callback_url needs one
BAR = re.compile(r"^job (\d+) \[([#-]{30})\] +(\d+)%(?: (.*))?$")


clean_env = server_env


class ServeProcess:
    """`python -m jobserver serve` on `db`, with the tasks of tests/cli_tasks.py."""

    def __init__(self, db: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        command = [
            sys.executable, "-m", "jobserver", "serve", "--db", str(db), "--port", str(self.port),
            "--tasks", "tests.cli_tasks", "--grace-period", "1", "--log-level", "warning",
            "--webhook-secret", WEBHOOK_SECRET, *extra_args,
        ]  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            self._log.close()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        probe = Client(self.url, timeout_s=2)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not probe.health():
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S} s:\n{self.output()}")
            time.sleep(0.05)

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.terminate()  # drains; nothing is left running by then
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.proc.wait(timeout=15)
        finally:
            self._log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for the module's tests; each test uses its own queue or jobs."""
    folder = tmp_path_factory.mktemp("served")
    server = ServeProcess(folder / "jobs.db", folder / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def jobserver(
    *args: str, url: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m jobserver ARGS` to completion; `url` goes in JOBSERVER_URL."""
    extra = dict(env or {})
    if url is not None:
        extra["JOBSERVER_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "jobserver", *args],
        cwd=REPO,
        env=clean_env(extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def enqueue(served: ServeProcess, *args: str) -> int:
    return int(ok(jobserver("enqueue", *args, url=served.url)).strip())


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


# -- enqueue, get, wait ---------------------------------------------------------------------------
def test_enqueue_get_and_wait(served: ServeProcess) -> None:
    job_id = enqueue(served, "echo", "--args", '["hi"]', "--queue", "cli")
    got = json.loads(ok(jobserver("get", str(job_id), url=served.url)))
    assert (got["id"], got["task"], got["queue"], got["args"]) == (job_id, "echo", "cli", ["hi"])

    waited = jobserver("wait", str(job_id), "--timeout", "10", url=served.url)
    done = json.loads(ok(waited))
    assert (done["status"], done["result"], done["is_terminal"]) == ("succeeded", "hi", True)
    assert waited.stderr == ""  # echo reports no progress: no bar

    # --url beats JOBSERVER_URL; a token is sent (the server does not check tokens yet)
    flagged = jobserver(
        "get", str(job_id), "--url", served.url, "--token", "t0k", url="http://127.0.0.1:1"
    )
    assert json.loads(ok(flagged))["id"] == job_id


def test_enqueue_with_options_and_wait(served: ServeProcess) -> None:
    result = jobserver(
        "enqueue", "sleep", "--args", "[0.1]", "--priority", "5", "--max-retries", "1",
        "--timeout", "5", "--idempotency-key", f"cli-{uuid.uuid4()}", "--queue", "opts",
        "--wait", "10", url=served.url,
    )  # fmt: skip
    job = json.loads(ok(result))
    assert (job["status"], job["result"]) == ("succeeded", 0.1)
    assert (job["priority"], job["max_retries"], job["timeout"], job["queue"]) == (
        5,
        1,
        5.0,
        "opts",
    )

    kwargs = json.loads(
        ok(jobserver("enqueue", "echo", "--kwargs", '{"a": 1}', "--wait", url=served.url))
    )
    assert kwargs["result"] == {"args": [], "kwargs": {"a": 1}}

    key = f"cli-{uuid.uuid4()}"
    first = enqueue(served, "echo", "--delay", "600", "--idempotency-key", key)
    assert enqueue(served, "echo", "--delay", "600", "--idempotency-key", key) == first


def test_wait_draws_a_progress_bar(tmp_path: Path, served: ServeProcess) -> None:
    """Each step the job reports is drawn, in order, and the bar ends full. The job holds at
    each step until the bar has drawn it (a gate file), so no step can be missed on a slow or
    loaded machine."""
    job_id = enqueue(served, "cli_progress", "--args", json.dumps([str(tmp_path)]))
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "jobserver", "wait", str(job_id), "--timeout", "30"],
        cwd=REPO,
        env=clean_env({"JOBSERVER_URL": served.url}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as waiter:
        assert waiter.stderr is not None and waiter.stdout is not None
        # readline ends at the latest when `wait` gives up (--timeout) and closes stderr
        for line in iter(waiter.stderr.readline, ""):
            lines.append(line.rstrip("\n"))
            drawn = BAR.match(lines[-1])
            if drawn and drawn.group(4) and drawn.group(4).startswith("step "):
                (tmp_path / drawn.group(4).replace(" ", "-")).touch()  # open the next gate
        out = waiter.stdout.read()
        assert waiter.wait(timeout=CLI_TIMEOUT_S) == 0, (out, lines)
    assert json.loads(out)["result"] == "done"
    bars = [BAR.match(line) for line in lines]
    assert all(bars), lines
    shown = [(int(m.group(3)), m.group(4)) for m in bars if m]
    assert all(m.group(1) == str(job_id) for m in bars if m)
    assert shown == [(25, "step 1"), (50, "step 2"), (75, "step 3"), (100, None)], lines
    assert bars[-1] is not None and bars[-1].group(2) == "#" * 30


def test_attempts_shows_a_jobs_history(served: ServeProcess) -> None:
    result = jobserver(
        "enqueue", "cli_refuse", "--args", '["no thanks"]', "--wait", "10", url=served.url
    )
    job_id = json.loads(result.stdout)["id"]
    rows = table(ok(jobserver("attempts", str(job_id), url=served.url)))
    assert rows[0] == ["ATTEMPT", "OUTCOME", "STARTED", "ENDED", "NODE", "ERROR"]
    assert rows[1][:2] == ["1", "failed"] and rows[1][-3:] == ["PermanentError:", "no", "thanks"]
    shown = ok(jobserver("attempts", str(job_id), "--traceback", url=served.url))
    assert "-- attempt 1 --" in shown and "PermanentError: no thanks" in shown
    missing = jobserver("attempts", "999999", url=served.url)
    assert missing.returncode != 0 and "no job 999999" in missing.stderr


def test_a_failed_or_unfinished_job_exits_1(served: ServeProcess) -> None:
    result = jobserver(
        "enqueue", "cli_refuse", "--args", '["bad input"]', "--wait", "10", url=served.url
    )
    assert result.returncode == 1, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "failed"
    assert job["error"] == {"type": "PermanentError", "message": "bad input"}
    assert result.stderr == f"jobserver: job {job['id']} failed: PermanentError: bad input\n"

    later = enqueue(served, "echo", "--delay", "600")
    started = time.monotonic()
    result = jobserver("wait", str(later), "--timeout", "0.3", url=served.url)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "pending"
    assert result.stderr == f"jobserver: job {later} is still pending after 0.3 s\n"


# -- tables ---------------------------------------------------------------------------------------
def test_jobs_table(served: ServeProcess) -> None:
    queue = f"table-{uuid.uuid4().hex[:8]}"
    ids = [enqueue(served, "echo", "--queue", queue, "--delay", "600") for _ in range(3)]
    rows = table(ok(jobserver("jobs", "--queue", queue, url=served.url)))
    assert rows[0] == ["ID", "TASK", "QUEUE", "STATUS", "ATTEMPTS", "CREATED"]
    assert [int(r[0]) for r in rows[1:]] == ids[::-1]
    for row in rows[1:]:
        assert row[1:5] == ["echo", queue, "pending", "0"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[5]), row

    paged = jobserver("jobs", "--queue", queue, "--limit", "2", url=served.url)
    assert [int(r[0]) for r in table(ok(paged))[1:]] == [ids[2], ids[1]]
    assert paged.stderr == f"(more: --cursor {ids[1]})\n"
    rest = jobserver("jobs", "--queue", queue, "--cursor", str(ids[1]), url=served.url)
    assert [int(r[0]) for r in table(ok(rest))[1:]] == [ids[0]]

    none = jobserver(
        "jobs", "--queue", queue, "--status", "succeeded", "--task", "echo", url=served.url
    )
    assert (ok(none), none.stderr) == ("", "no jobs\n")
    assert jobserver("jobs", "--status", "sleeping", url=served.url).returncode == 2


def test_dead_letters_and_requeue(served: ServeProcess) -> None:
    reason = f"refused {uuid.uuid4().hex[:6]}"
    result = jobserver(
        "enqueue", "cli_refuse", "--args", json.dumps([reason]), "--wait", "10", url=served.url
    )
    assert result.returncode == 1, result.stderr
    job_id = json.loads(result.stdout)["id"]

    out = ok(jobserver("dead-letters", "--limit", "1000", url=served.url))
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "JOB", "TASK", "QUEUE", "ATTEMPTS", "FAILED", "ERROR"]
    [line] = [ln for ln in lines[1:] if ln.split()[1] == str(job_id)]
    dead_letter_id, _, task, queue, attempts, _failed, *error = line.split()
    assert (task, queue, attempts) == ("cli_refuse", "default", "1")
    assert " ".join(error) == f"PermanentError: {reason}"

    new_id = int(ok(jobserver("requeue", dead_letter_id, url=served.url)).strip())
    assert new_id > job_id
    requeued = json.loads(ok(jobserver("get", str(new_id), url=served.url)))
    assert (requeued["task"], requeued["args"]) == ("cli_refuse", [reason])

    again = jobserver("requeue", dead_letter_id, url=served.url)
    assert again.returncode == 1
    assert again.stderr == f"jobserver: not_found: no dead letter {dead_letter_id}\n"


def test_cancel(served: ServeProcess) -> None:
    later = enqueue(served, "echo", "--delay", "600")
    assert ok(jobserver("cancel", str(later), url=served.url)) == f"job {later} cancelled\n"
    assert json.loads(ok(jobserver("get", str(later), url=served.url)))["status"] == "cancelled"

    running = enqueue(served, "sleep", "--args", "[30]")
    client = Client(served.url, timeout_s=10)
    deadline = time.monotonic() + 10
    while client.get(running).status != JobState.RUNNING:
        assert time.monotonic() < deadline, "the sleep job never started"
        time.sleep(0.02)
    out = ok(jobserver("cancel", str(running), url=served.url))
    assert out.startswith(f"job {running} "), out
    waited = jobserver("wait", str(running), "--timeout", "10", url=served.url)
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["status"] == "cancelled"

    done = json.loads(ok(jobserver("enqueue", "echo", "--wait", "10", url=served.url)))["id"]
    refused = jobserver("cancel", str(done), url=served.url)
    assert refused.returncode == 1
    assert refused.stderr == f"jobserver: conflict: job {done} is already succeeded\n"


# -- enqueue's flow options, delete, queues, schedules, workflows --------------------------------
# These run `main()` in this process (what `python -m jobserver` runs, after its imports), against
# the same server subprocess: a subprocess per command would cost half a second of imports each.
def cli(served: ServeProcess, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """`jobserver ARGS --url <served>` in-process: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.object(sys, "stdin", io.StringIO(stdin)),
    ):
        try:
            code = main([*args, "--url", served.url])
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["jobserver", *args], code, out.getvalue(), err.getvalue())


def test_enqueue_with_flow_options(served: ServeProcess) -> None:
    key = f"cli-unique-{uuid.uuid4().hex[:8]}"
    parent = int(ok(cli(
        served, "enqueue", "echo", "--args", "[7]", "--delay", "600", "--deadline-in", "900",
        "--unique-key", key, "--callback-url", "http://127.0.0.1:9/hook",
    )))  # fmt: skip
    assert int(ok(cli(served, "enqueue", "echo", "--unique-key", key))) == parent  # key held
    child = int(ok(cli(
        served, "enqueue", "echo", "--args", '["x"]', "--depends-on", str(parent),
        "--depends-on", str(parent), "--pass-result", "--on-dependency-failure", "cancel",
    )))  # fmt: skip
    client = Client(served.url, timeout_s=10)
    first = client.get(parent)
    assert (first.unique_key, first.callback_url) == (key, "http://127.0.0.1:9/hook")
    assert first.deadline is not None and first.deadline > first.run_at

    got = json.loads(ok(cli(served, "get", str(child))))
    assert got["depends_on"] == [parent]
    assert got["waiting"]["code"] == "waiting_for_dependencies"
    client.cancel(parent)
    assert client.wait(child, timeout_s=10).status == JobState.CANCELLED  # the policy given

    bad = cli(served, "enqueue", "echo", "--depends-on", "x")
    assert bad.returncode == 2 and "must be a job id" in bad.stderr


def test_delete(served: ServeProcess) -> None:
    client = Client(served.url, timeout_s=10)
    done = client.wait(client.enqueue("echo").id, timeout_s=10).id
    assert ok(cli(served, "delete", str(done))) == f"job {done} deleted\n"
    again = cli(served, "delete", str(done))
    assert (again.returncode, again.stderr) == (1, f"jobserver: not_found: no job {done}\n")
    pending = client.enqueue("echo", delay_s=600).id
    refused = cli(served, "delete", str(pending))
    assert refused.stderr == (
        f"jobserver: conflict: job {pending} is pending: only finished jobs can be deleted\n"
    )


def test_queue_limits_pause_resume_and_a_full_queue(served: ServeProcess) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    shown = json.loads(ok(cli(served, "queue", queue, "--max-depth", "1", "--pause")))
    assert (shown["name"], shown["paused"], shown["limits"]["max_depth"]) == (queue, True, 1)

    job_id = int(ok(cli(served, "enqueue", "echo", "--args", '["queued"]', "--queue", queue)))
    full = cli(served, "enqueue", "echo", "--queue", queue)
    assert full.returncode == 1
    assert full.stderr == (
        f"jobserver: queue_full: queue '{queue}' is full: it holds its maximum of 1 pending jobs"
        " (field: queue); try again in 1 s\n"
    )

    listed = jobserver("queues", url=served.url)  # one through the real entry point
    rows = table(ok(listed))
    assert rows[0] == [
        "QUEUE", "PAUSED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "OLDEST",
        "DUE", "LIMITS",
    ]  # fmt: skip
    [row] = [r for r in rows[1:] if r[0] == queue]
    assert row[1:7] == ["yes", "1", "0", "0", "0", "0"]
    assert re.fullmatch(r"\d+(\.\d)?s", row[7]), row  # the job has waited since it was due
    assert row[8] == "max_depth=1"

    changed = cli(
        served, "queue", queue, "--resume", "--max-depth", "none", "--concurrency-limit", "2",
        "--rate-limit", "50", "--rate-burst", "5",
    )  # fmt: skip
    resumed = json.loads(ok(changed))
    assert resumed["paused"] is False
    assert resumed["limits"] == {
        "concurrency_limit": 2, "rate_limit": 50.0, "rate_burst": 5.0, "max_depth": None,
        "key_concurrency_limit": None, "key_rate_limit": None, "key_rate_burst": None,
    }  # fmt: skip
    assert Client(served.url, timeout_s=10).wait(job_id, timeout_s=10).result == "queued"
    [row] = [r for r in table(ok(cli(served, "queues")))[1:] if r[0] == queue]
    assert row[1:8] == ["no", "0", "0", "1", "0", "0", "-"]
    assert row[8] == "concurrency=2,rate=50/s,burst=5"
    assert json.loads(ok(cli(served, "queue", queue)))["counts"]["succeeded"] == 1

    for wrong in (["--max-depth", "0"], ["--rate-limit", "fast"], ["--pause", "--resume"]):
        assert cli(served, "queue", queue, *wrong).returncode == 2, wrong
    missing = cli(served, "queue", f"none-{queue}")
    assert missing.stderr == f"jobserver: not_found: no queue 'none-{queue}'\n"


def test_schedule_add_list_show_and_remove(served: ServeProcess) -> None:
    name = f"nightly-{uuid.uuid4().hex[:6]}"
    added = cli(
        served, "schedule", "add", name, "echo", "0 3 * * *", "--args", '["report"]', "--queue",
        "sched", "--timezone", "Europe/Paris", "--missed", "catch_up",
    )  # fmt: skip
    saved = json.loads(ok(added))
    assert (saved["name"], saved["cron"], saved["timezone"], saved["missed"]) == (
        name, "0 3 * * *", "Europe/Paris", "catch_up",
    )  # fmt: skip
    assert (saved["args"], saved["queue"], saved["source"]) == (["report"], "sched", "api")

    lines = ok(cli(served, "schedules")).splitlines()
    assert lines[0].split() == [
        "NAME", "TASK", "QUEUE", "TIMEZONE", "MISSED", "PAUSED", "NEXT", "LAST", "CRON",
    ]  # fmt: skip
    [line] = [ln for ln in lines[1:] if ln.split()[0] == name]
    cells = line.split(maxsplit=8)
    assert cells[1:6] == ["echo", "sched", "Europe/Paris", "catch_up", "no"]
    assert cells[6] == saved["next_run_at"][:19] + "Z" and cells[7] == "-"
    assert cells[8] == "0 3 * * *"

    assert json.loads(ok(cli(served, "schedule", "show", name))) == saved
    assert ok(cli(served, "schedule", "rm", name)) == f"schedule {name} removed\n"
    gone = cli(served, "schedule", "rm", name)
    assert (gone.returncode, gone.stderr) == (1, f"jobserver: not_found: no schedule '{name}'\n")
    assert name not in ok(cli(served, "schedules"))
    bad = cli(served, "schedule", "add", name, "echo", "61 * * * *")
    assert bad.returncode == 1 and "(field: cron)" in bad.stderr


def test_workflow_chord_and_a_failing_chain(tmp_path: Path, served: ServeProcess) -> None:
    spec = tmp_path / "chord.json"
    members = [{"task": "echo", "args": [n]} for n in (1, 2, 3)]
    spec.write_text(json.dumps({"chord": {"group": members, "callback": {"task": "cli_sum"}}}))
    lines = ok(cli(served, "workflow", str(spec), "--wait", "20")).splitlines()
    workflow_id = int(lines[0].removeprefix("workflow "))
    job_ids = [int(i) for i in lines[1].removeprefix("jobs ").split()]
    assert len(job_ids) == 4
    assert lines[2].split() == ["JOB", "TASK", "STATUS", "RESULT"]
    assert [line.split() for line in lines[3:7]] == [
        [str(job_ids[0]), "echo", "succeeded", "1"],
        [str(job_ids[1]), "echo", "succeeded", "2"],
        [str(job_ids[2]), "echo", "succeeded", "3"],
        [str(job_ids[3]), "cli_sum", "succeeded", "6"],
    ]
    assert lines[7:] == [f"workflow {workflow_id} succeeded"]
    assert ok(cli(served, "workflow-status", str(workflow_id))).splitlines() == lines[2:]

    failing = json.dumps({"chain": [{"task": "cli_refuse", "args": ["nope"]}, {"task": "echo"}]})
    failed = cli(
        served, "workflow", "-", "--wait", "10", "--on-dependency-failure", "cancel", stdin=failing
    )
    assert failed.returncode == 1, failed.stderr
    out = failed.stdout.splitlines()
    flow_id = out[0].removeprefix("workflow ")
    refused_id, echo_id = (int(i) for i in out[1].removeprefix("jobs ").split())
    assert out[3].split() == [str(refused_id), "cli_refuse", "failed", "PermanentError:", "nope"]
    assert out[4].split() == [str(echo_id), "echo", "cancelled"]
    assert out[5:] == [f"workflow {flow_id} failed"]
    assert failed.stderr == (
        f"jobserver: workflow {flow_id} failed: job {refused_id} failed: PermanentError: nope\n"
    )

    later = json.dumps({"group": [{"task": "echo", "delay": 600}]})
    unfinished = cli(served, "workflow", "-", "--wait", "0.2", stdin=later)
    assert unfinished.returncode == 1
    assert unfinished.stdout.splitlines()[-1].endswith(" pending")
    assert unfinished.stderr.endswith(" is still pending after 0.2 s\n")

    spec.write_text("{not json")
    broken = cli(served, "workflow", str(spec))
    assert broken.returncode == 1 and "is not valid JSON" in broken.stderr
    spec.write_text(json.dumps({"chain": [{"task": "echo", "priority": 5000}]}))
    assert cli(served, "workflow", str(spec)).stderr == (
        "jobserver: invalid: must be between -1000 and 1000 (field: chain[0].priority)\n"
    )


# -- errors ---------------------------------------------------------------------------------------
def test_api_errors_print_one_line(served: ServeProcess) -> None:
    missing = jobserver("get", "987654", url=served.url)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "jobserver: not_found: no job 987654\n"

    invalid = jobserver("enqueue", "echo", "--priority", "5000", url=served.url)
    assert invalid.returncode == 1
    assert invalid.stderr == (
        "jobserver: invalid: must be between -1000 and 1000 (field: priority)\n"
    )
    unknown = jobserver("enqueue", "nope", url=served.url)
    assert unknown.stderr == "jobserver: invalid: unknown task 'nope' (field: task)\n"

    bad_args = jobserver("enqueue", "echo", "--args", '{"a": 1}', url=served.url)
    assert bad_args.returncode == 2
    assert "must be a JSON array" in bad_args.stderr


def test_an_unreachable_server(served: ServeProcess) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for result in (
        jobserver("jobs", url=url),  # from JOBSERVER_URL
        jobserver("get", "1", "--url", url, url=served.url),  # --url beats it
    ):
        assert result.returncode == 1
        assert result.stderr.startswith(f"jobserver: the server at {url} is not reachable"), (
            result.stderr
        )
        assert "Traceback" not in result.stderr
    bad = jobserver("jobs", url="localhost:8000")
    assert bad.returncode == 2
    assert bad.stderr.startswith("jobserver: JOBSERVER_URL: "), bad.stderr


def test_version_and_shell_completion() -> None:
    assert ok(jobserver("--version")).strip() == f"jobserver {__version__}"
    script = ok(jobserver("completion", "bash"))
    assert "requeue-dead-letters" in script and "--dry-run" in script
    assert "compdef" in ok(jobserver("completion", "zsh"))


def test_every_listing_prints_json(served: ServeProcess) -> None:
    waited = ok(jobserver("enqueue", "echo", "--args", '["j"]', "--wait", "10", "--queue", "listed",
                          url=served.url))  # fmt: skip
    job_id = json.loads(waited)["id"]
    jobs = json.loads(ok(jobserver("jobs", "--queue", "listed", "--json", url=served.url)))
    assert [j["id"] for j in jobs["items"]] == [job_id] and jobs["next_cursor"] is None
    attempts = json.loads(ok(jobserver("attempts", str(job_id), "--json", url=served.url)))
    assert attempts["job_id"] == job_id and attempts["items"][0]["outcome"] == "succeeded"
    queues = json.loads(ok(jobserver("queues", "--json", url=served.url)))["items"]
    [listed] = [q for q in queues if q["name"] == "listed"]
    assert listed["counts"]["succeeded"] == 1
    assert "items" in json.loads(ok(jobserver("schedules", "--json", url=served.url)))
    letters = json.loads(ok(jobserver("dead-letters", "--json", url=served.url)))
    assert set(letters) == {"items", "next_cursor"}
    header = ok(jobserver("queues", url=served.url)).splitlines()[0].split()
    assert "CANCELLED" in header


def test_dead_letters_show_delete_and_bulk(served: ServeProcess) -> None:
    queue = f"bulk-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        failed = jobserver(
            "enqueue", "cli_refuse", "--args", f'["r{i}"]', "--queue", queue, "--wait", "10",
            url=served.url,
        )  # fmt: skip
        assert failed.returncode == 1
    letters = json.loads(ok(jobserver("dead-letters", "--queue", queue, "--json", url=served.url)))[
        "items"
    ]
    assert len(letters) == 3
    first = letters[0]["id"]
    shown = json.loads(ok(jobserver("dead-letter", str(first), url=served.url)))
    assert shown["queue"] == queue and shown["error"]["type"] == "PermanentError"
    deleted = ok(jobserver("delete-dead-letter", str(first), url=served.url))
    assert deleted == f"dead letter {first} deleted\n"
    gone = jobserver("dead-letter", str(first), url=served.url)
    assert gone.returncode == 1 and "not_found" in gone.stderr

    select = ("--queue", queue, "--error-type", "PermanentError")
    dry = ok(jobserver("requeue-dead-letters", *select, "--dry-run", url=served.url))
    assert dry.splitlines()[0] == "2 dead letters match; --dry-run: nothing requeued"
    assert len(json.loads(ok(jobserver("dead-letters", "--queue", queue, "--json",
                                       url=served.url)))["items"]) == 2  # fmt: skip
    requeued = json.loads(
        ok(jobserver("requeue-dead-letters", *select, "--limit", "1", "--json", url=served.url))
    )
    assert (requeued["matched"], requeued["more"], len(requeued["job_ids"])) == (1, True, 1)
    purged = ok(jobserver("purge-dead-letters", "--queue", queue, url=served.url))
    assert re.fullmatch(r"[12] of [12] dead letters deleted\n", purged), purged
    bad_time = jobserver("purge-dead-letters", "--failed-after", "yesterday", url=served.url)
    assert bad_time.returncode == 2 and "RFC 3339" in bad_time.stderr


def test_fairness_keys_from_the_cli(served: ServeProcess) -> None:
    queue = f"k-{uuid.uuid4().hex[:8]}"
    shown = json.loads(ok(cli(served, "queue", queue, "--key-concurrency-limit", "3")))
    assert shown["limits"]["key_concurrency_limit"] == 3
    key = json.loads(ok(cli(served, "key", queue, "acme", "--weight", "5", "--rate-limit", "9")))
    assert key["own"] == {"weight": 5.0, "concurrency_limit": None, "rate_limit": 9.0,
                          "rate_burst": None}  # fmt: skip
    assert key["effective"]["concurrency_limit"] == 3  # the queue's default for every key
    back = json.loads(ok(cli(served, "key", queue, "acme", "--weight", "none")))
    assert back["own"]["weight"] is None and back["effective"]["weight"] == 1.0
    job_id = int(ok(cli(served, "enqueue", "echo", "--queue", queue, "--fairness-key", "acme")))
    assert json.loads(ok(cli(served, "get", str(job_id))))["fairness_key"] == "acme"
    [row] = [r for r in table(ok(cli(served, "queues")))[1:] if r[0] == queue]
    assert row[-1] == "key_concurrency=3"
    assert cli(served, "key", queue, "acme", "--weight", "0").returncode == 2
    too_long = cli(served, "key", queue, "k" * 201)
    assert too_long.returncode == 1 and "fairness_key" in too_long.stderr


def test_signal_and_steps_from_the_cli(served: ServeProcess) -> None:
    sent = ok(cli(served, "signal", "order:7", "--payload", '{"paid": true}'))
    assert re.fullmatch(r"signal \d+ sent to 'order:7': 0 waiting job\(s\) woken\n", sent), sent
    job_id = int(ok(cli(served, "enqueue", "echo", "--args", '["x"]')))
    Client(served.url, timeout_s=10).wait(job_id, timeout_s=10)
    none = cli(served, "steps", str(job_id))
    assert none.returncode == 0 and f"job {job_id} has no steps" in none.stderr
    assert json.loads(ok(cli(served, "steps", str(job_id), "--json"))) == {
        "job_id": job_id, "items": [],
    }  # fmt: skip
    assert cli(served, "signal", "k", "--payload", "{nope").returncode == 2
    long_key = cli(served, "signal", "k" * 201)
    assert long_key.returncode == 1 and "key" in long_key.stderr


def test_purge_queue(served: ServeProcess) -> None:
    queue = f"purge-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        enqueue(served, "echo", "--queue", queue, "--delay", "600")
    dry = ok(jobserver("purge-queue", queue, "--dry-run", url=served.url))
    assert dry == f"2 pending jobs in {queue}; --dry-run: none cancelled\n"
    assert ok(jobserver("purge-queue", queue, url=served.url)) == (
        f"2 pending jobs in {queue} cancelled\n"
    )


def test_a_wrong_token_and_a_server_that_is_not_jobserver(tmp_path: Path) -> None:
    guarded = ServeProcess(tmp_path / "t.db", tmp_path / "t.log", ("--token", "right-token"))
    try:
        guarded.wait_ready()
        wrong = jobserver("jobs", "--token", "wrong-token", url=guarded.url)
        assert wrong.returncode == 1
        assert wrong.stderr.startswith("jobserver: the server refused the token ("), wrong.stderr
        assert "--token / JOBSERVER_TOKEN" in wrong.stderr
        none = jobserver("jobs", url=guarded.url)
        assert none.stderr.startswith("jobserver: the server needs a token ("), none.stderr
        assert ok(jobserver("jobs", "--token", "right-token", url=guarded.url)) == ""
    finally:
        guarded.close()
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            result = jobserver("jobs", url=url)
            if "not reachable" not in result.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result.returncode == 1
        assert result.stderr.startswith(f"jobserver: {url} did not answer as a jobserver does"), (
            result.stderr
        )
        assert "<" not in result.stderr.splitlines()[0][:80]  # no raw HTML up front
    finally:
        other.terminate()
        other.wait(timeout=10)


# -- database commands ----------------------------------------------------------------------------
def test_migrate(tmp_path: Path, served: ServeProcess) -> None:
    db = tmp_path / "fresh.db"
    assert (
        ok(jobserver("migrate", "--db", str(db)))
        == f"{db}: new database at schema version {SCHEMA}\n"
    )
    again = jobserver("migrate", env={"JOBSERVER_DB": str(db)})
    assert ok(again) == f"{db}: schema version {SCHEMA} (up to date)\n"
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()  # closed cleanly
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA,)

    in_use = jobserver("migrate", "--db", str(served.db))
    assert in_use.returncode == 1
    assert in_use.stderr.startswith(f"jobserver: {served.db} is in use by another jobserver")
    assert "stop it first" in in_use.stderr

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database\n" * 100)
    refused = jobserver("migrate", "--db", str(garbage))
    assert refused.returncode == 1
    assert "not a usable" in refused.stderr and "Traceback" not in refused.stderr
    assert jobserver("migrate", env={"JOBSERVER_DB": ""}).returncode == 2
    postgres = jobserver("migrate", "--db", "postgresql://db.internal/jobs")
    assert postgres.returncode == 2 and "works on SQLite files" in postgres.stderr


def test_backup_while_the_server_runs(tmp_path: Path, served: ServeProcess) -> None:
    queue = f"backup-{uuid.uuid4().hex[:8]}"
    client = Client(served.url, timeout_s=10)
    before = client.enqueue_batch(
        [{"task": "echo", "args": [i], "queue": queue} for i in range(50)]
    )

    # Keep the server writing while the backup runs.
    stop = threading.Event()
    during: list[int] = []
    failures: list[BaseException] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                during.append(client.enqueue("echo", ["during"], queue=queue).id)
            except ClientError as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        copy = tmp_path / "copy.db"
        result = jobserver("backup", str(copy), env={"JOBSERVER_DB": str(served.db)})
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not failures, failures
    assert during, "the server took no writes while the backup ran"
    out = ok(result).splitlines()
    assert out[-1] == "integrity_check: ok"
    assert out[0].startswith(f"{copy}: copy of {served.db}, "), out

    with contextlib.closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        rows = dict(conn.execute("SELECT id, queue FROM jobs WHERE queue = ?", (queue,)).fetchall())
    assert set(before) <= rows.keys()
    assert rows.keys() <= set(before) | set(during)  # a snapshot: no job the server lacks
    assert (
        ok(jobserver("migrate", "--db", str(copy)))
        == f"{copy}: schema version {SCHEMA} (up to date)\n"
    )

    assert client.get(client.enqueue("echo", ["after"]).id, wait_s=10).result == "after"
    exists = jobserver("backup", str(copy), "--db", str(served.db))
    assert exists.returncode == 1 and "already exists" in exists.stderr
    missing = jobserver("backup", str(tmp_path / "c2.db"), "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()


def test_help_lists_every_command() -> None:
    result = jobserver("--help")
    for command in (
        "serve", "enqueue", "get", "wait", "jobs", "dead-letters", "requeue", "cancel",
        "delete", "queues", "queue", "schedules", "schedule", "workflow", "workflow-status",
        "migrate", "backup", "dead-letter", "delete-dead-letter", "requeue-dead-letters",
        "purge-dead-letters", "completion", "purge-queue", "key", "steps", "signal",
    ):  # fmt: skip
        assert command in result.stdout
