"""README keeps up with the code: every error code the API can answer is in its errors table,
every page in docs/ is linked from it, and its contents line points at real sections."""

from __future__ import annotations

import re
from pathlib import Path

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
