"""Finding layers by name and building them from configuration tables.

Built-in layers and third-party ones are found the same way: by an entry point in the
group ``onion.middlewares`` (onion's own distribution registers the built-ins there) or by
an import path ``package.module:attr``. Nothing is imported until a table names it.
Parameters are validated with msgspec against the layer's constructor signature, so a
wrong name or type fails at build time with the table and field in the message.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import msgspec

from ._extras import install_hint
from .errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_layers",
    "build_layer",
    "convert_every_field",
    "resolve_import",
    "resolve_layer",
]

ENTRY_POINT_GROUP = "onion.middlewares"


def available_layers() -> dict[str, str]:
    """Short names registered in the ``onion.middlewares`` group, with their targets."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_import(path: str) -> Any:
    """The object at the import path ``package.module:attr`` (``attr`` may be dotted).

    The one resolver for everything a config names by path (layers, embedders, guard
    rules, detectors, redactors); raises ``ConfigError`` naming the path.
    """
    module_name, colon, attr = path.partition(":")
    if not colon or not module_name or not attr:
        raise ConfigError(f"{path!r} is not an import path 'package.module:attr'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"cannot import {path!r}: {error}") from None
    return obj


def resolve_layer(name: str) -> Any:
    """The class, factory or function registered as ``name`` (or at that import path)."""
    if ":" in name:
        return resolve_import(name)
    matches = entry_points(group=ENTRY_POINT_GROUP, name=name)
    for ep in matches:
        try:
            return ep.load()
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"the layer {name!r} ({ep.value}) failed to load: {error}") from None
    known = ", ".join(sorted(available_layers())) or "none (is onion installed? pip install -e .)"
    raise ConfigError(f"unknown layer {name!r}; known layers: {known}; or give an import path 'package.module:Class'")


def _supported(tp: Any) -> Any:
    try:
        msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):
        return Any
    return tp


@cache
def _params_struct(factory: Callable[..., Any]) -> type[msgspec.Struct] | None:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        signature = inspect.signature(target)
        hints = typing.get_type_hints(target)
    except (TypeError, ValueError, NameError):
        return None
    fields: list[Any] = []
    for param in list(signature.parameters.values())[1 if inspect.isclass(factory) else 0 :]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            return None
        tp = _supported(hints.get(param.name, Any))
        if param.default is param.empty:
            fields.append((param.name, tp))
        else:
            fields.append((param.name, tp, param.default))
    name = getattr(factory, "__name__", "layer") + "Params"
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)


_PATH = re.compile(r"at `\$\.?([^`]*)`")
_KEY = re.compile(r"^[A-Za-z_]\w*")


def convert_every_field(
    value: Any,
    type_: Any,
    explain: Callable[[msgspec.ValidationError], ConfigError],
    problems: list[ConfigError],
    *,
    strict: bool = True,
) -> Any:
    """``msgspec.convert`` that reports every bad field of a table, not only the first.

    msgspec stops at the first error; after each one the key at fault (the problem's
    ``field``, up to its first ``.`` or ``[``) is dropped and the rest converted again.
    Each problem ``explain`` makes is appended to ``problems``; the result is ``None``
    when the table cannot be made valid.
    """
    data = dict(value) if isinstance(value, Mapping) else value
    dropped: set[str] = set()
    while True:
        try:
            return msgspec.convert(data, type_, strict=strict)
        except msgspec.ValidationError as error:
            problem = explain(error)
            key = _KEY.match(problem.field or "")
            if key and key.group() in dropped:  # "required": a field already reported as bad
                return None
            problems.append(problem)
            if not key or not isinstance(data, dict) or key.group() not in data:
                return None
            del data[key.group()]
            dropped.add(key.group())


def _explain(error: msgspec.ValidationError, where: str, table: str) -> ConfigError:
    text = str(error)
    match = _PATH.search(text)
    unknown = re.search(r"unknown field `([^`]*)`", text)
    missing = re.search(r"missing required field `([^`]*)`", text)
    if match:
        field, message = match.group(1), text[: match.start()].rstrip(" -")
    elif unknown:
        field, message = unknown.group(1), "no such parameter"
    elif missing:
        field, message = missing.group(1), "required"
    else:
        return ConfigError(f"{where}: {text}", table=table)
    return ConfigError(f"{where}: field {field!r}: {message}", table=table, field=field)


def build_layer(table: Mapping[str, Any], where: str = "stack[0]") -> Any:
    """Build one layer from a ``{use = NAME, **params}`` table.

    Raises one ``ConfigError`` naming ``where`` and, for bad parameters, each of them."""
    table_name = where
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table with a 'use' key, got {type(table).__name__}", table=table_name)
    params = dict(table)
    use = params.pop("use", None)
    if not isinstance(use, str) or not use:
        raise ConfigError(f"{where}: field 'use' is required and must name a layer", table=table_name, field="use")
    where = f"{where} (use = {use!r})"
    try:
        factory = resolve_layer(use)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}", table=table_name, field="use") from None
    if inspect.iscoroutinefunction(factory) or not callable(factory):
        if params:
            raise ConfigError(f"{where}: this layer takes no parameters, got {sorted(params)}", table=table_name)
        return factory
    struct = _params_struct(factory)
    if struct is None:
        try:
            return factory(**params)
        except TypeError as error:
            raise ConfigError(f"{where}: {error}", table=table_name) from None
        except ImportError as error:  # an optional package the layer needs
            raise ConfigError(f"{where}: {install_hint(error)}", table=table_name) from None
    problems: list[ConfigError] = []
    checked = convert_every_field(params, struct, lambda error: _explain(error, where, table_name), problems)
    if problems:
        raise ConfigError(problems=problems)
    kwargs = {field: getattr(checked, field) for field in struct.__struct_fields__}
    try:
        return factory(**kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{where}: {error}", table=table_name) from None
    except ImportError as error:  # an optional package the layer needs
        raise ConfigError(f"{where}: {install_hint(error)}", table=table_name) from None
