"""What may touch what, in one sentence: cli -> wiring, jobs, journal -> adapters -> core -> nothing.

The adapters are openrem/, store/, mail/, archive/ and the shared plumbing (database.py, files.py);
settings.py and errors.py are leaves anyone may use. The core imports only the standard library,
itself and the error tree; only openrem/, store/ and database.py import SQLAlchemy.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ctpoller"
CORE, JOBS, ADAPTERS = ("core",), ("jobs", "journal"), ("openrem", "store", "mail", "archive", "database", "files")
TOP = ("cli", "wiring", "demo", "__main__", "__init__")


def room(module: str) -> str:
    """``ctpoller.openrem.reads`` -> ``openrem``; ``ctpoller`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(relative.parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (also inside functions and TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


ALL = modules()


def ctpoller_imports(path: Path) -> set[str]:
    return {name for name in imports(path) if name.startswith("ctpoller.") and name in ALL}


@pytest.mark.parametrize("module", sorted(m for m in ALL if room(m) == "core"))
def test_the_core_imports_only_the_standard_library_itself_and_the_error_tree(module: str) -> None:
    for name in imports(ALL[module]):
        top = name.split(".")[0]
        if top == "ctpoller":
            assert name.startswith(("ctpoller.core", "ctpoller.errors")) or name == "ctpoller", f"{module}: {name}"
        else:
            assert top in sys.stdlib_module_names or top == "__future__", f"{module} imports {name}"


@pytest.mark.parametrize("module", sorted(m for m in ALL if room(m) in ADAPTERS))
def test_adapters_import_only_core_and_other_adapters(module: str) -> None:
    for name in ctpoller_imports(ALL[module]):
        assert room(name) in (*CORE, *ADAPTERS, "errors", "settings"), f"{module} imports {name}"


@pytest.mark.parametrize("module", sorted(m for m in ALL if room(m) in JOBS))
def test_jobs_never_import_the_cli_or_the_wiring(module: str) -> None:
    for name in ctpoller_imports(ALL[module]):
        assert room(name) not in ("cli", "wiring", "demo"), f"{module} imports {name}"


@pytest.mark.parametrize("module", sorted(ALL))
def test_only_openrem_store_and_database_import_sqlalchemy(module: str) -> None:
    if room(module) in ("openrem", "store", "database", "demo"):  # demo: it writes its own OpenREM
        return
    assert not any(name.split(".")[0] == "sqlalchemy" for name in imports(ALL[module])), module


@pytest.mark.parametrize("module", sorted(ALL))
def test_no_module_holds_several_nouns(module: str) -> None:
    lines = len(ALL[module].read_text(encoding="utf-8").splitlines())
    limit = 720 if module == "ctpoller.demo.exams" else 430  # the demo's exams are data tables
    assert lines <= limit, f"{module}: {lines} lines"


def test_every_room_is_known() -> None:
    assert {room(m) for m in ALL} <= {*CORE, *JOBS, *ADAPTERS, *TOP, "settings", "errors"}
