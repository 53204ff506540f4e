"""The house rules that a parser can check (STYLE.md), so later work keeps to them.

import-linter (``make lint``) checks who imports whom; this checks sizes and the
imports it cannot see: no function over 60 lines and no module over 400 in the
services and the core (``shardsense/settings.py``, one declaration per setting,
is exempt), no private name imported from another module, and test modules that
share code through ``tests/support`` instead of importing each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CORE_AND_SERVICES = ("shardsense", "producers", "stream_processors", "planner_service",
                     "dash_app")
PACKAGES = (*CORE_AND_SERVICES, "infra", "benchmarks")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
LONG_MODULES_ALLOWED = {"shardsense/settings.py"}


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_no_module_over_400_lines() -> None:
    long = {
        _name(p): n for p in _sources(*CORE_AND_SERVICES)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
        and _name(p) not in LONG_MODULES_ALLOWED
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines: split them"


def test_no_function_over_60_lines() -> None:
    long = {}
    for path in _sources(*CORE_AND_SERVICES):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{_name(path)}:{node.lineno} {node.name}"] = lines
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines: name their steps"


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from module import name`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.extend((node.module, alias.name) for alias in node.names)
    return out


def test_no_private_name_is_imported_from_another_module() -> None:
    private = [
        f"{_name(path)}: from {module} import {name}"
        for path in _sources(*PACKAGES, "tests")
        for module, name in _imports(path)
        if name.startswith("_") and not name.startswith("__")
        and module.split(".")[0] in (*PACKAGES, "tests")
    ]
    assert private == [], "make the name public, or move the code that needs it"


def test_test_modules_share_code_through_tests_support() -> None:
    crossing = [
        f"{_name(path)}: {module}"
        for path in _sources("tests")
        for module, _ in _imports(path)
        if module.startswith("tests.") and not module.startswith("tests.support")
    ]
    assert crossing == [], "move the shared helper to tests/support/"
