"""The stores' SQL, kept in files: `store/shared.sql` (statements both dialects run as they
are), `store/<dialect>/queries.sql` (those whose SQL must differ) and the dialect's migrations.

A file is a list of blocks, each opened by a `-- name: <name>` line; other comment lines are
left out. A block may hold several statements (SQLite runs them in order)."""

from __future__ import annotations

from importlib import resources


def load(dialect: str, **columns: str) -> dict[str, str]:
    """name -> SQL text for the dialect, each `{key}` of `columns` (the driver's column lists)
    filled in. A name given by both the shared file and the dialect's is an error."""
    here = resources.files(__package__)
    shared = _blocks(here.joinpath("shared.sql").read_text("utf-8"), "shared.sql")
    own = _blocks(
        here.joinpath(dialect, "queries.sql").read_text("utf-8"), f"{dialect}/queries.sql"
    )
    both = set(shared) & set(own)
    if both:
        raise ValueError(f"{dialect}/queries.sql repeats what shared.sql names: {sorted(both)}")
    queries = {}
    for name, sql in {**shared, **own}.items():
        for key, text in columns.items():
            sql = sql.replace(f"{{{key}}}", text)
        queries[name] = sql
    return queries


def _blocks(text: str, where: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-- name:"):
            name = stripped.removeprefix("-- name:").strip()
            if name in found:
                raise ValueError(f"{where} names {name!r} twice")
            current = found[name] = []
        elif stripped.startswith("--") or current is None:
            continue
        else:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


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
