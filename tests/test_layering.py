"""Dependencies point one way: the core never imports the layers, the layers use only the
core's public API (as a third-party layer would), and no module imports itself back.

The imports are read from each file's syntax tree, function-level imports and
``importlib.import_module("...")`` calls with a literal name included; only imports under
``if TYPE_CHECKING:`` (never executed) are left out.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("onion", "middlewares")
# What a layer may import from the core: the package and its documented public submodules.
PUBLIC_CORE = frozenset({"onion", "onion.telemetry"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            yield from (n for statement in child.orelse for n in (statement, *_walk(statement)))
            continue
        yield child
        yield from _walk(child)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if not level:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imports_of(module: str) -> list[tuple[str, list[str], int]]:
    """``(imported module, names, line)`` for every import in ``module``'s file."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    out: list[tuple[str, list[str], int]] = []
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            out.append((base, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            argument = node.args[0] if node.args else None
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                out.append((argument.value, [], node.lineno))
    return out


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _edges(module: str) -> set[str]:
    """The project modules ``module`` imports (a ``from pkg import sub`` names the submodule)."""
    targets = set()
    for base, names, _ in imports_of(module):
        for name in names or [""]:
            candidate = f"{base}.{name}" if name else base
            if candidate in MODULES:
                targets.add(candidate)
            elif base in MODULES:
                targets.add(base)
    targets.discard(module)
    return targets


def test_the_core_never_imports_the_layers() -> None:
    wrong = [
        f"{module}:{line} imports {target}"
        for module in MODULES
        if module.split(".")[0] == "onion"
        for target, _, line in imports_of(module)
        if target.split(".")[0] == "middlewares"
    ]
    assert not wrong, "the core must not depend on the built-in layers:\n" + "\n".join(wrong)


def test_layers_import_only_the_public_api_of_the_core() -> None:
    public = {name: set(importlib.import_module(name).__all__) for name in PUBLIC_CORE}
    wrong = []
    for module in MODULES:
        if module.split(".")[0] != "middlewares":
            continue
        for target, names, line in imports_of(module):
            if target.split(".")[0] != "onion":
                continue
            if target not in PUBLIC_CORE:
                wrong.append(f"{module}:{line} imports {target} (not a public module of onion)")
                continue
            hidden = [name for name in names if name not in public[target]]
            if hidden:
                wrong.append(f"{module}:{line} imports {hidden} from {target} (not in its __all__)")
    assert not wrong, "\n".join(wrong)


def _cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles_deferred_or_not() -> None:
    graph = {module: _edges(module) for module in MODULES}
    cycles = {tuple(cycle) for module in MODULES if (cycle := _cycle_from(module, graph))}
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in sorted(cycles))


# The checks above must be able to fail: each is run on a file that breaks it.


def test_the_walk_sees_function_level_and_dynamic_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "onion" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import middlewares.never_run\n"
        "def f():\n    from middlewares.cache import exact\n"
        "def g():\n    import importlib\n    return importlib.import_module('middlewares.guard.pii')\n"
        "from ._private import thing\n"
    )
    monkeypatch.setitem(MODULES, "onion.bad", bad)
    found = [(target, line) for target, _, line in imports_of("onion.bad")]
    assert ("middlewares.cache", 5) in found and ("middlewares.guard.pii", 8) in found
    assert ("onion._private", 9) in found
    assert all(target != "middlewares.never_run" for target, _ in found)


def test_a_cycle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from("a", graph) == ["a", "b", "c", "a"]
    assert _cycle_from("d", graph) is None
