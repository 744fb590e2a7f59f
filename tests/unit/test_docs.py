"""README keeps up with the code: every error code the API can answer is in its errors table,
every page in docs/ is linked from it, and its contents line points at real sections."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from jobserver.http.errors import HTTP_CODES
from jobserver.http.openapi import ERROR_CODES

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def test_the_errors_table_has_every_code_the_api_answers() -> None:
    table = _section("Errors")
    listed = set(re.findall(r"^\| \d{3} \| `([a-z_]+)` \|", table, re.MULTILINE))
    # http_error: aiohttp's answer to an HTTP status jobserver does not name itself
    assert listed == set(ERROR_CODES) - {"http_error"}


def _codes_in_the_source() -> set[str]:
    """Every error code a literal in jobserver/ passes to error_response, RequestError or
    error_body: what the API can answer, read from the code, not from a list beside it."""
    position = {"error_response": 1, "RequestError": 1, "error_body": 0}
    found: set[str] = set(HTTP_CODES.values())
    for path in (ROOT / "jobserver").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            index = position.get(name or "")
            if index is not None and len(node.args) > index:
                arg = node.args[index]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def test_every_code_the_source_answers_is_declared() -> None:
    """`bad_body` was answered (a body not encoded as its Content-Encoding says) but was in
    neither the OpenAPI document nor the errors table, which were checked against each other."""
    in_source = _codes_in_the_source()
    assert "bad_body" in in_source and "unauthorized" in in_source  # the scan finds them
    assert in_source <= set(ERROR_CODES), in_source - set(ERROR_CODES)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in README, page.name


def test_the_contents_line_points_at_real_sections() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")
        for title in re.findall(r"^## (.+)$", README, re.MULTILINE)
    }
    contents = README[: README.index("\n## ")]
    linked = re.findall(r"\]\(#([a-z0-9-]+)\)", contents)
    assert linked and set(linked) <= anchors, set(linked) - anchors
    assert anchors <= set(linked) | {"set-up-on-a-fresh-machine"}, anchors - set(linked)
