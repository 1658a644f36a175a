"""The public API: every exported name resolves and says what it is; lazy names load late."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["onion", "onion.testing", "onion.wire", "onion.wire.openai_chat", "onion.server", "middlewares"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_and_has_a_docstring(package: str) -> None:
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if (inspect.isclass(value) or inspect.isfunction(value)) and not inspect.getdoc(value):
            missing.append(name)
    assert not missing, f"{package}: no docstring on {missing}"
    assert len(set(module.__all__)) == len(module.__all__)


def _type_checking_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                names.update(alias.asname or alias.name for alias in statement.names)
    return names


@pytest.mark.parametrize(
    ("package", "lazy"),
    [("onion", "_LAZY"), ("onion.testing", "_LAZY"), ("middlewares", "_MODULE_OF")],
)
def test_static_imports_match_the_lazy_names(package: str, lazy: str) -> None:
    module = importlib.import_module(package)
    path = Path(module.__file__ or "")
    assert _type_checking_imports(path) == set(getattr(module, lazy))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        module.nope  # noqa: B018


def test_importing_the_packages_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, onion, onion.testing, middlewares\n"
        "print(sorted(m for m in ('httpx', 'numpy', 'opentelemetry', 'uvicorn', 'redis') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_built_in_entry_point_is_a_public_class_of_middlewares() -> None:
    import middlewares
    from onion import available_layers, resolve_layer

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["onion.middlewares"]
    registered = available_layers()
    for short, target in declared.items():
        assert registered.get(short) == target, f"{short}: reinstall the package (pip install -e .)"
        cls = resolve_layer(short)
        assert getattr(middlewares, cls.__name__) is cls
        assert cls.name == short, "a layer's name in traces is the name it is registered under"
