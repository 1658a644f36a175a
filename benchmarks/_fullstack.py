"""The "full stack" the benchmarks measure: every built-in layer that exists, in the
recommended order, built from configuration tables exactly as ``onion serve`` would.

Layers land in ``middlewares/`` over time; a layer that is not there yet, or cannot be
built with these parameters, is skipped and named in ``skipped`` so every benchmark says
what it measured. Also: cheap terminal handlers (complete and streamed) and RSS reading.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from onion import Chunk, Completion, ConfigError, Request, Response, Stack, Usage, build_layer

RESULTS_DIR = Path(__file__).parent / "results"

# Outermost first. The order follows the intended relations: mask_errors outermost;
# timeout (total) outside fallback and retry; fallback outside retry outside the
# breaker; the exact cache inside the input guard and outside the output guard.
FULL_STACK: list[dict[str, Any]] = [
    {"use": "mask_errors"},
    {"use": "logging"},
    {"use": "metrics"},
    {"use": "tracing"},
    {"use": "timeout", "seconds": 60.0},
    {"use": "rate_limit", "requests_per_minute": 10_000_000},
    {"use": "input_guard"},
    {"use": "trim_context"},
    {"use": "exact_cache", "max_bytes": 4 * 1024 * 1024},
    {"use": "semantic_cache"},
    {"use": "output_guard"},
    {"use": "fallback", "models": ["bench-backup"]},
    {"use": "retry"},
    {"use": "circuit_breaker"},
]


def build_full_stack(
    handler: Any, *, overrides: dict[str, dict[str, Any]] | None = None, without: tuple[str, ...] = ()
) -> tuple[Stack, list[str], dict[str, str]]:
    """The full stack around ``handler``: (stack, names of built layers, {skipped: why}).

    ``overrides`` replaces a layer's parameters by short name; ``without`` leaves layers out.
    A layer whose parameters do not fit its constructor is retried with defaults.
    """
    _logs_to_devnull()
    layers, built, skipped = [], [], {}
    for table in FULL_STACK:
        name = table["use"]
        if name in without:
            continue
        table = {"use": name, **(overrides or {}).get(name, {k: v for k, v in table.items() if k != "use"})}
        try:
            layer = build_layer(table, f"full[{name}]")
        except ConfigError as error:
            try:
                layer = build_layer({"use": name}, f"full[{name}]")
            except ConfigError:
                skipped[name] = _short(str(error))
                continue
        except Exception as error:  # a layer under construction may fail in any way
            skipped[name] = _short(f"{type(error).__name__}: {error}")
            continue
        layers.append(layer)
        built.append(name)
    try:
        return Stack(layers, handler, name="full"), built, skipped
    except ConfigError as error:
        raise SystemExit(f"the full stack violates an ordering constraint: {error}") from None


_DEVNULL: Any = None


def _logs_to_devnull() -> None:
    # The logging layer formats a JSON line per request, as in production, but writes it
    # to /dev/null: the cost is measured, the terminal stays readable.
    global _DEVNULL
    if _DEVNULL is not None:
        return
    try:
        from onion.telemetry import configure_logging
    except ImportError:
        return
    _DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - kept open for the process's life
    configure_logging(json=True, stream=_DEVNULL)


def _short(text: str) -> str:
    if "unknown layer" in text or "No module named 'middlewares." in text:
        return "not in middlewares/ yet"
    return text if len(text) < 140 else text[:137] + "..."


class CompleteHandler:
    """A terminal handler answering at once with a fresh complete response."""

    name = "bench"

    def __init__(self, text: str = "The quick brown fox jumps over the lazy dog.") -> None:
        self.text = text
        self.usage = Usage(10, 10, 20)
        # Streamed as an upstream streams tokens, each word with the space before it: the
        # streamed answer is the complete one (split without its spaces, the text was one
        # 35-letter run, a case the output guard must hold back whole).
        words = text.split(" ")
        self.pieces = [words[0], *(" " + word for word in words[1:])]

    async def __call__(self, request: Request) -> Response:
        if request.stream:
            return Response.stream(_chunks(self.pieces, self.usage), served_by="bench", model=request.model)
        return Response.complete(
            Completion(content=self.text, model=request.model, usage=self.usage), served_by="bench"
        )


class StreamHandler:
    """A terminal handler streaming ``chunks`` word pieces at once (no upstream delay)."""

    name = "bench"

    def __init__(self, chunks: int) -> None:
        self.pieces = [f"w{i} " for i in range(chunks)]
        self.usage = Usage(10, chunks, 10 + chunks)

    async def __call__(self, request: Request) -> Response:
        return Response.stream(_chunks(self.pieces, self.usage), served_by="bench", model=request.model)


async def _chunks(pieces: list[str], usage: Usage) -> AsyncGenerator[Chunk, None]:
    yield Chunk(content=pieces[0], role="assistant")
    for piece in pieces[1:]:
        yield Chunk(content=piece)
    yield Chunk(finish_reason="stop", usage=usage)


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 elsewhere)."""
    return _status_kb("VmRSS:") / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return _status_kb("VmHWM:") / 1024


def _status_kb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def machine() -> dict[str, str]:
    """Where the numbers come from: Python, OS, CPU."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpus": str(os.cpu_count()),
        # BLAS threads change the semantic cache's lookup cost by 10x on small machines.
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def check_served(label: str, served: dict[str, int], expect: str) -> None:
    """Fail loudly unless every answer (``served``: who answered, how often) came from
    ``expect``: a "miss" a cache answered, or no answer at all, is not measured."""
    wrong = {k: v for k, v in served.items() if k != expect}
    if wrong or not served:
        raise RuntimeError(f"{label}: every answer should come from {expect!r} (a miss), got {served}")


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine description added."""
    import json
    import os

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    # The machine is shared: how loaded it was when the run ended goes with the figures.
    load = {"load_average_1min": round(os.getloadavg()[0], 2)}
    path.write_text(json.dumps({"benchmark": name, **machine(), **load, **payload}, indent=2) + "\n")
    return path


def print_table(headers: list[str], rows: list[list[Any]]) -> None:
    """Print a right-aligned text table (floats with 2 decimals unless already strings)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
