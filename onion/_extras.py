"""Which extra of ``onion-llm`` installs a missing package: one line with the fix.

A layer that needs an optional package (Redis for shared state, usearch for a large
semantic index, …) imports it when it is built; the ``ImportError`` names the module,
and ``install_hint`` turns it into the ``pip install`` that adds it.
"""

from __future__ import annotations

__all__ = ["install_hint"]

# Top-level module -> the extra of pyproject.toml that installs it.
_EXTRAS = {
    "redis": "redis",
    "usearch": "semantic-ann",
    "sentence_transformers": "semantic-local",
    "torch": "semantic-local",
    "bpe_openai": "tokenizer",
    "jsonschema": "eval",
    "uvloop": "server",
    "hypothesis": "testing",
}


def install_hint(error: ImportError) -> str:
    """``"needs the Python package 'redis': pip install 'onion-llm[redis]'"`` for an
    import of an optional package that failed; the plain package otherwise."""
    name = (error.name or "").split(".")[0]
    if not name:
        return f"a Python package is missing ({error}): install it"
    if name == "opentelemetry" and "otlp" in (error.name or ""):
        return "needs the OTLP exporter: pip install 'onion-llm[otlp]'"
    extra = _EXTRAS.get(name)
    if extra is not None:
        return f"needs the Python package {name!r}: pip install 'onion-llm[{extra}]'"
    return f"needs the Python package {name!r}: pip install {name}"
