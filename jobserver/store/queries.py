"""A dialect's SQL, kept in files: `store/<dialect>/queries.sql` and its migrations.

A file is a list of blocks, each opened by a `-- name: <name>` line; other comment lines are
left out. A block may hold several statements (SQLite runs them in order)."""

from __future__ import annotations

from importlib import resources


def load(dialect: str, **columns: str) -> dict[str, str]:
    """name -> SQL text, each `{key}` of `columns` (the driver's column lists) filled in."""
    text = resources.files(__package__).joinpath(dialect, "queries.sql").read_text("utf-8")
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            if name in found:
                raise ValueError(f"{dialect}/queries.sql names {name!r} twice")
            current = found[name] = []
        elif stripped.startswith("--") or current is None:
            continue
        else:
            current.append(line)
    queries = {}
    for name, lines in found.items():
        sql = "\n".join(lines).strip()
        for key, text in columns.items():
            sql = sql.replace(f"{{{key}}}", text)
        queries[name] = sql
    return queries


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The dialect's numbered migrations, `migrations/NNNN_name.sql`, in order."""
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    found = sorted(
        (int(entry.name.split("_", 1)[0]), entry.read_text("utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"{dialect} migrations are not numbered 1, 2, 3...")
    return found
