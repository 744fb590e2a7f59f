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
    for module in (
        "models.py",
        "errors.py",
        "codec.py",
        "retry.py",
        "outcomes.py",
        "job_options.py",
        "fairness.py",
        "flow.py",
    ):
        assert not {i.split(".")[0] for i in imports_of(module)} & io, module


def test_only_the_sqlite_store_imports_aiosqlite() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = str(path.relative_to(PACKAGE))
        if module != "store/sqlite/driver.py":
            assert "aiosqlite" not in imports_of(module), module


def runtime_imports(module: str) -> set[str]:
    """The jobserver modules `module` imports when it runs (not under TYPE_CHECKING), as
    paths relative to the package, e.g. `http/app.py` or `store/base.py`."""
    path = PACKAGE / module
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    package_parts = list(path.relative_to(PACKAGE).parent.parts)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
            elif (node.module or "").startswith("jobserver"):
                base, node.module = [], (node.module or "").removeprefix("jobserver").lstrip(".")
            else:
                continue
            stem = [*base, *filter(None, (node.module or "").split("."))]
            names = ["/".join([*stem, alias.name]) for alias in node.names] + ["/".join(stem)]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("jobserver.").replace(".", "/") for a in node.names
                     if a.name.startswith("jobserver.")]  # fmt: skip
        for name in names:
            for candidate in (f"{name}.py", f"{name}/__init__.py"):
                if name and (PACKAGE / candidate).is_file():
                    found.add(candidate)
    return found - {module}


def all_modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))


def test_nothing_imports_in_a_loop() -> None:
    graph = {m: runtime_imports(m) for m in all_modules()}
    assert graph["server.py"] >= {"http/app.py", "http/listener.py"}  # the walk finds imports

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), set()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(m for m in graph if m in reach(m) and not m.endswith("__init__.py"))
    assert loops == [], loops


def test_the_core_knows_nothing_of_http() -> None:
    """Only the composition root (server.py) and the programs on top (cli.py, __main__) import
    jobserver/http; aiohttp's server side lives there alone."""
    for module in all_modules():
        if module.startswith("http/") or module in ("server.py", "cli.py", "__main__.py"):
            continue
        assert not any(i.startswith("http/") for i in runtime_imports(module)), module
        source = (PACKAGE / module).read_text()
        assert "from aiohttp import web" not in source, module


def test_only_config_and_cli_read_the_environment() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = str(path.relative_to(PACKAGE))
        if module in ("config.py", "cli.py"):
            continue
        assert "os.environ" not in path.read_text(), module


def test_the_lifecycle_does_no_io() -> None:
    io = {"aiohttp", "aiosqlite", "sqlite3", "asyncpg", "socket", "os", "asyncio"}
    for module in ("lifecycle.py", "durable_lifecycle.py"):
        assert not {i.split(".")[0] for i in imports_of(module)} & io, module


def test_each_dialect_names_exactly_the_statements_the_shared_code_runs() -> None:
    """A statement missing from one dialect fails only when that move runs on that store;
    one left over is SQL nobody runs."""
    import re

    from jobserver.store import queries

    source = "".join(
        (PACKAGE / module).read_text()
        for module in ("lifecycle.py", "durable_lifecycle.py", "store/jobstore.py")
    )
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
