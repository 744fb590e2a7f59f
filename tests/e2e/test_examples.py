"""Every example in examples/ runs by itself: each `examples/*.py` with a `main()` is run in a
subprocess, as `python examples/NAME.py`, and must exit 0 with "ok" as its last line. The
deployment docs' Python snippets parse, and the examples they name exist."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOT_EXAMPLES = {"__init__.py", "tasks.py"}  # the package, and tasks for `--tasks examples.tasks`
TIMEOUT_S = 30


def has_main(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main"
        for node in tree.body
    )


def examples() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("*.py") if p.name not in NOT_EXAMPLES and has_main(p))


def test_the_examples_are_found() -> None:
    names = {p.stem for p in examples()}
    assert {"embedded", "aiohttp_mount", "sidecar", "workflow", "client_cli"} <= names


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.stem)
def test_example_runs(path: Path, tmp_path: Path) -> None:
    # No JOBSERVER_* setting from the caller's environment leaks into an example's servers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSERVER_")}
    env["TMPDIR"] = str(tmp_path)  # whatever an example leaves behind stays in tmp_path
    # A session of its own, so that on a timeout the example and whatever it started (the
    # `jobserver serve` of client_cli.py) are killed together.
    proc = subprocess.Popen(
        [sys.executable, str(path)],
        cwd=tmp_path,  # the examples must not depend on the current directory
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{path.name} still running after {TIMEOUT_S} s:\n{stdout}\n{stderr}")
    report = f"exit status {proc.returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    assert proc.returncode == 0, report
    lines = stdout.strip().splitlines()
    assert lines and lines[-1] == "ok", report
    assert len(lines) > 1, report  # it said what it did, not only "ok"
    assert not list(tmp_path.glob("jobserver-example-*")), "a temporary directory was left"


DOCS = [ROOT / "docs" / "deployment.md", ROOT / "docs" / "coming-from-celery-rq.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_the_docs_python_parses_and_their_examples_exist(doc: Path) -> None:
    text = doc.read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        ast.parse(block)  # a SyntaxError names the line
    for name in re.findall(r"examples/(\w+\.py)", text):
        assert (EXAMPLES / name).is_file(), f"{doc.name} mentions examples/{name}"
