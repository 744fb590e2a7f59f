"""The named SQL of a dialect, read from `store/sql/<dialect>.sql`.

A file is a list of blocks, each opened by a `-- name: <name>` line; other comment lines are
left out. A block may hold several statements (SQLite runs them in order)."""

from __future__ import annotations

from importlib import resources


def load(dialect: str, job_columns: str) -> dict[str, str]:
    """name -> SQL text, with `{job_columns}` replaced by the driver's job columns."""
    text = resources.files(__package__).joinpath("sql", f"{dialect}.sql").read_text("utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            if name in found:
                raise ValueError(f"{dialect}.sql names {name!r} twice")
            current = found[name] = []
        elif stripped.startswith("--") or current is None:
            continue
        else:
            current.append(line)
    return {
        name: "\n".join(lines).strip().replace("{job_columns}", job_columns)
        for name, lines in found.items()
    }
