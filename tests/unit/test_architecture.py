"""The import rules of ARCHITECTURE.md, checked by reading the imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "jobserver"


def imports_of(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / module).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
            found.update(alias.name for alias in node.names)
    return found


def test_pure_modules_do_no_io() -> None:
    io = {"aiohttp", "aiosqlite", "sqlite3", "asyncpg", "socket", "os"}
    for module in ("models.py", "errors.py", "codec.py", "retry.py"):
        assert not {i.split(".")[0] for i in imports_of(module)} & io, module


def test_only_the_sqlite_store_imports_aiosqlite() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = str(path.relative_to(PACKAGE))
        if module != "store/sqlite/driver.py":
            assert "aiosqlite" not in imports_of(module), module


def test_api_and_worker_do_not_import_each_other() -> None:
    assert not any("worker" in i for i in imports_of("api.py"))
    assert not any(i.split(".")[-1] == "api" for i in imports_of("worker.py"))


def test_only_config_and_cli_read_the_environment() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = str(path.relative_to(PACKAGE))
        if module in ("config.py", "cli.py"):
            continue
        assert "os.environ" not in path.read_text(), module


def test_the_lifecycle_does_no_io() -> None:
    io = {"aiohttp", "aiosqlite", "sqlite3", "asyncpg", "socket", "os", "asyncio"}
    assert not {i.split(".")[0] for i in imports_of("lifecycle.py")} & io


def test_each_dialect_names_exactly_the_statements_the_shared_code_runs() -> None:
    """A statement missing from one dialect fails only when that move runs on that store;
    one left over is SQL nobody runs."""
    import re

    from jobserver.store import queries

    source = (PACKAGE / "lifecycle.py").read_text() + (PACKAGE / "store/jobstore.py").read_text()
    called = set(re.findall(r'\b(?:count|rows|row|value|job|jobs|many|Sql)\(\s*"(\w+)"', source))
    assert called, "the pattern no longer finds the lifecycle's statements"
    dialects = {d: set(queries.load(d)) for d in ("sqlite", "postgres")}
    literals = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    used = called | (literals & set.union(*dialects.values()))
    for dialect, names in dialects.items():
        assert names == used, dialect
