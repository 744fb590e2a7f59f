"""The spec makes working clients: TypeScript types generated from a running server's
/openapi.json (openapi-typescript, as a user would run it) accept every request body the
README and docs send with curl, and refuse wrong ones (tsc --strict); Redocly's recommended
rules find no error in the spec. The tools are pinned in tests/ts/package.json."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import aiohttp
import pytest

from ..conftest import SPEC_TOOLS, SPEC_TOOLS_SKIP, Spawn

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

pytestmark = pytest.mark.skipif(not (SPEC_TOOLS / "tsc").exists(), reason=SPEC_TOOLS_SKIP)

# curl ... -X METHOD <url> ... -d '<json>': options on one line (continuations joined first),
# single-quoted ones included; the body in single quotes, which may span lines.
CURL_WITH_BODY = re.compile(
    r"curl\b(?P<options>(?:[^'\n]|'[^'\n]*')*?)-d '(?P<body>[^']*)'", re.DOTALL
)


def documented_calls() -> list[tuple[str, str, str, object]]:
    """(where, method, path, body) of each curl call with a JSON body in the docs."""
    calls = []
    for doc in DOCS:
        text = doc.read_text("utf-8").replace("\\\n", " ")
        for found in CURL_WITH_BODY.finditer(text):
            options = found["options"]
            method = re.search(r"-X (\w+)", options)
            url = re.search(r"(?:\$J|https?://[\w.:\[\]]+|localhost:\d+)(/[^\s\"'?]*)", options)
            assert method and url, f"{doc.name}: a curl call not understood: {found[0]!r}"
            line = text.count("\n", 0, found.start()) + 1
            calls.append(
                (f"{doc.name}:{line}", method[1].lower(), url[1], json.loads(found["body"]))
            )
    return calls


def template_of(path: str, templates: list[str]) -> str:
    for template in templates:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path} is no path of the spec")


def run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}
    return subprocess.run(
        [str(SPEC_TOOLS / tool), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def typed_calls(calls: list[tuple[str, str, str, object]], templates: list[str]) -> str:
    lines = ['import type { paths } from "./jobserver";', ""]
    lines.append(
        "type Body<P extends keyof paths, M extends keyof paths[P]> ="
        ' paths[P][M] extends { requestBody?: { content: { "application/json": infer B } } }'
        " ? B : never;"
    )
    for n, (where, method, path, body) in enumerate(calls):
        template = template_of(path, templates)
        lines.append(f"// {where}: {method.upper()} {path}")
        lines.append(f'export const call{n}: Body<"{template}", "{method}"> = {json.dumps(body)};')
    return "\n".join(lines) + "\n"


async def served_spec(spawn: Spawn, tmp_path: Path) -> dict[str, object]:
    """The document `jobserver serve --tasks examples.tasks` serves (the README's tour)."""
    server = spawn(tmp_path / "tour.db", ["--tasks", "examples.tasks"])
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        async with session.get(f"{server.url}/openapi.json") as resp:
            assert resp.status == 200
            spec: dict[str, object] = await resp.json()
    return spec


async def test_types_generated_from_the_spec_accept_the_documented_calls(
    spawn: Spawn, tmp_path: Path
) -> None:
    spec = await served_spec(spawn, tmp_path)
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    made = run("openapi-typescript", "openapi.json", "-o", "jobserver.d.ts", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    calls = documented_calls()
    assert len(calls) >= 19, calls  # the extraction finds the docs' calls
    templates = list(spec["paths"])  # type: ignore[call-overload]
    assert {template_of(p, templates) for _, _, p, _ in calls} >= {
        "/jobs", "/workflows", "/schedules", "/queues/{name}",
    }  # fmt: skip
    (tmp_path / "calls.ts").write_text(typed_calls(calls, templates))
    checked = run("tsc", "--noEmit", "--strict", "calls.ts", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout

    # ... and the same types refuse what the server refuses.
    wrong = [
        ("bad", "post", "/jobs", {"task": "add", "args": "2, 3"}),
        ("bad", "post", "/jobs", {"task": "jobserver.webhook"}),  # internal: not offered
        ("bad", "post", "/jobs", {"task": "add", "colour": "red"}),
        ("bad", "patch", "/queues/reports", {"concurrency_limit": "2"}),
    ]
    for n, call in enumerate(wrong):
        (tmp_path / f"wrong{n}.ts").write_text(typed_calls([call], templates))
        refused = run("tsc", "--noEmit", "--strict", f"wrong{n}.ts", cwd=tmp_path)
        assert refused.returncode != 0, call


async def test_the_spec_passes_redocly_recommended_rules(spawn: Spawn, tmp_path: Path) -> None:
    (tmp_path / "openapi.json").write_text(json.dumps(await served_spec(spawn, tmp_path)))
    linted = run(
        "redocly", "lint", "openapi.json", "--extends", "recommended", "--format", "summary",
        cwd=tmp_path,
    )  # fmt: skip
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert "error" not in linted.stdout.lower().replace("0 errors", ""), linted.stdout
