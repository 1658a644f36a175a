"""Draw PNG figures from ``benchmarks/results/*.json`` into ``benchmarks/figures/``.

The benchmarks of this suite get figures made for them (overhead, stack_overhead,
gateway, scaling, streaming, soak, startup, semantic_cache); any other results file gets a
generic figure: every list of rows in it becomes one panel, lines when the first column is
a number, bars otherwise. Needs matplotlib (``pip install matplotlib``); draws off-screen.

    python benchmarks/plot.py [--only soak] [--out benchmarks/figures]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURES = HERE / "figures"

Figure = Any


def _subtitle(data: dict[str, Any]) -> str:
    machine = data.get("machine")
    python = data.get("python") or (machine.get("python") if isinstance(machine, dict) else None)
    bits = [f"Python {python}" if python else "", data.get("processor") or machine or ""]
    return ", ".join(b for b in bits if isinstance(b, str) and b)


def _skipped_note(ax: Any, data: dict[str, Any]) -> None:
    skipped = data.get("skipped") or {}
    if skipped:
        ax.text(0.0, -0.18, "not measured: " + ", ".join(skipped), transform=ax.transAxes, fontsize=7, color="gray")


def plot_overhead(data: dict[str, Any]) -> Figure:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [r["layers"] for r in rows]
    for key, label in (
        ("floor", "CPython floor (bare closures)"),
        ("onion_class", "onion Layer"),
        ("onion_function", "onion function layer"),
    ):
        if key in rows[0]:
            ax.plot(x, [r[key] for r in rows], marker="o", label=label)
    ax.set(xlabel="layers", ylabel="µs per call", title="Middleware overhead against the CPython floor")
    ax.legend()
    return fig


def plot_scaling(data: dict[str, Any]) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    depth = data["depth"]
    x = [r["layers"] for r in depth]
    for key, label in (
        ("pass_complete", "pass-through, complete"),
        ("pass_stream", "pass-through, streamed"),
        ("observe_stream", "observes each chunk, streamed"),
    ):
        fit = data["fits"][key]
        left.plot(x, [r[key] for r in depth], marker="o", label=f"{label} ({fit['us_per_layer']:.2f} µs/layer)")
    left.set(xlabel="layers", ylabel="µs per call", title="Cost by number of layers")
    left.legend(fontsize=8)
    history = data["history"]
    hx = [r["messages"] for r in history]
    for key in [k for k in history[0] if k.endswith("_added")]:
        right.plot(hx, [max(r[key], 1e-3) for r in history], marker="o", label=key.removesuffix("_added"))
    right.set(xscale="log", yscale="log", xlabel="messages in the request", ylabel="µs added per call")
    right.set_title("Cost by history length (each layer alone)")
    right.legend(fontsize=8)
    _skipped_note(right, data)
    return fig


def plot_streaming(data: dict[str, Any]) -> Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ttft = data["ttft_us"]
    names = list(ttft)
    positions = range(len(names))
    left.bar([p - 0.2 for p in positions], [ttft[n]["p50"] for n in names], width=0.4, label="p50")
    left.bar([p + 0.2 for p in positions], [ttft[n]["p99"] for n in names], width=0.4, label="p99")
    left.set_xticks(list(positions), [n.replace("_", " ") for n in names])
    left.set(ylabel="µs to first chunk", title="Time to first token, in process")
    left.legend()
    layers = data.get("per_layer") or []
    if layers:
        labels = [r["layer"] for r in layers]
        right.barh(labels, [r["us_added_per_chunk"] for r in layers], color="tab:orange")
        right.invert_yaxis()
        right.set(xlabel="µs added per chunk", title="Per-chunk cost of each layer alone")
    _skipped_note(left, data)
    return fig


def plot_soak(data: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    samples = data["samples"]
    x = [s["requests"] for s in samples]
    ax.plot(x, [s["rss_mb"] for s in samples], marker="o", label="RSS MiB")
    ax.axvline(data["warmup_requests"], color="gray", linestyle="--", label="end of warm-up")
    if "tail_start_requests" in data:
        ax.axvspan(data["tail_start_requests"], x[-1], color="tab:green", alpha=0.08, label="judged for flatness")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="requests", ylabel="RSS MiB")
    if samples and "blocks" in samples[0]:
        objects = ax.twinx()
        objects.plot(x, [s["blocks"] / 1000 for s in samples], color="tab:orange", marker=".", label="live objects (k)")
        objects.set_ylim(bottom=0)
        objects.set_ylabel("live Python objects (thousands)")
        objects.legend(loc="lower right", fontsize=8)
    verdict = "flat" if data["flat"] else "growing"
    slope = data.get("tail_growth_mb_per_10k", data["growth_mb_per_10k"])
    ax.set_title(f"{data['requests']:,} requests, full stack: {verdict} ({slope:+.2f} MiB / 10k at the end)")
    ax.legend(loc="lower left", fontsize=8)
    _skipped_note(ax, data)
    return fig


def plot_startup(data: dict[str, Any]) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    imports = data["imports"]
    names = list(imports)
    ax.barh(
        names,
        [imports[n]["seconds"] for n in names],
        color=["tab:green" if "litellm" not in n else "tab:red" for n in names],
    )
    ax.axvline(data["target_seconds"], color="gray", linestyle="--", label=f"target {data['target_seconds']} s")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set(xlabel="seconds (log scale)", title="Import time in a fresh interpreter")
    serve = data.get("serve")
    if serve:
        ax.text(
            0.98,
            0.02,
            f"onion serve: first answer {serve['first_answer_seconds']:.2f} s, "
            f"RSS {serve['rss_mb_after_first_answer']:.0f} MiB",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
        )
    ax.legend()
    return fig


def _tables(value: Any, path: str = "") -> list[tuple[str, list[dict[str, Any]]]]:
    """Every list of row dicts in ``value`` with its path (``rows``, ``complete.rows``...)."""
    found = []
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        found.append((path or "rows", value))
    elif isinstance(value, dict) and len(value) >= 2 and all(_flat_numbers(v) for v in value.values()):
        # {name: {metric: number}}: one row per name.
        found.append((path or "rows", [{"name": k, **v} for k, v in value.items()]))
    elif _flat_numbers(value) and len(value) >= 2:
        # {metric: number}: one bar per metric.
        found.append((path or "values", [{"name": k, "value": v} for k, v in value.items()]))
    elif isinstance(value, dict):
        for key, inner in value.items():
            found.extend(_tables(inner, f"{path}.{key}" if path else key))
    return found


def _flat_numbers(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, (int, float)) for v in value.values())


def _numeric(rows: list[dict[str, Any]], key: str) -> bool:
    return all(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows)


def plot_generic(data: dict[str, Any]) -> Figure | None:
    tables = [(p, rows) for p, rows in _tables(data) if len(rows[0]) >= 2][:6]
    if not tables:
        return None
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 4.5), squeeze=False)
    for ax, (path, rows) in zip(axes[0], tables, strict=True):
        first = next(iter(rows[0]))
        columns = [k for k in rows[0] if k != first and _numeric(rows, k)]
        if _numeric(rows, first):
            for column in columns:
                ax.plot([r[first] for r in rows], [r[column] for r in rows], marker="o", label=column)
            ax.set_xlabel(first)
        else:
            width = 0.8 / max(1, len(columns))
            for i, column in enumerate(columns):
                ax.bar([j + i * width for j in range(len(rows))], [r[column] for r in rows], width=width, label=column)
            ax.set_xticks(
                [j + 0.4 - width / 2 for j in range(len(rows))], [str(r[first]) for r in rows], rotation=30, ha="right"
            )
        values = [r[c] for r in rows for c in columns if r[c] > 0]
        if values and max(values) / min(values) > 100:
            ax.set_yscale("log")
        ax.set_title(path)
        ax.legend(fontsize=7)
    return fig


def _grouped_bars(ax: Any, labels: list[str], series: dict[str, list[float | None]]) -> None:
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width=width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.legend(fontsize=8)


def plot_stack_overhead(data: dict[str, Any]) -> Figure:
    rows = data["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    series: dict[str, list[float | None]] = {
        f"floor ({len(data['layers'])} bare closures)": [r["floor_p50_us"] for r in rows],
        "onion default stack": [r["onion_p50_us"] for r in rows],
    }
    if any(r["litellm_p50_us"] for r in rows):
        series[f"LiteLLM {data.get('litellm_version') or ''} Router".replace("  ", " ")] = [
            r["litellm_p50_us"] for r in rows
        ]
    _grouped_bars(ax, [r["case"] for r in rows], series)
    ax.set(ylabel="µs per call, p50 (log)", title="Whole-stack overhead per call, in process")
    return fig


def plot_gateway(data: dict[str, Any]) -> Figure:
    rows = [*data["latency"], *(data.get("litellm") or {}).get("latency", [])]
    cases = sorted({(r["stream"], r["concurrency"]) for r in rows})
    labels = [f"{'stream TTFT' if s else 'complete'}, c={c}" for s, c in cases]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    for ax, key, title in (
        (left, "added_p50_ms", "added latency p50 (ms, log)"),
        (right, "gateway_cpu_ms_per_request", "gateway CPU per request (ms, log)"),
    ):
        series: dict[str, list[float | None]] = {}
        for gateway in dict.fromkeys(r["gateway"] for r in rows):
            by_case = {(r["stream"], r["concurrency"]): r.get(key) for r in rows if r["gateway"] == gateway}
            series[gateway] = [max(by_case[c], 0.01) if by_case.get(c) is not None else None for c in cases]
        _grouped_bars(ax, labels, series)
        ax.set_title(title)
    return fig


def plot_semantic_cache(data: dict[str, Any]) -> Figure:
    speed = data["speed"]
    numpy_rows = speed["numpy"]
    ann_rows = speed.get("usearch") or []
    embedders = (data.get("quality") or {}).get("embedders") or {}
    fig, axes = plt.subplots(1, 2 if embedders else 1, figsize=(13 if embedders else 7.5, 4.8), squeeze=False)
    left = axes[0][0]
    x = [r["entries"] for r in numpy_rows]
    for key, label, style in (
        ("lookup_p50_ms", "numpy p50", {"marker": "o"}),
        ("lookup_p99_ms", "numpy p99", {"marker": "o", "alpha": 0.6}),
        ("one_blas_thread_p50_ms", "numpy p50, one BLAS thread", {"marker": "s"}),
        ("scan_limit_ms", "scan limit (one read of the matrix)", {"color": "gray", "linestyle": "--"}),
    ):
        if all(key in r for r in numpy_rows):
            left.plot(x, [r[key] for r in numpy_rows], label=label, **style)
    if ann_rows:
        ann_x = [r["entries"] for r in ann_rows]
        ann_y = [r["lookup_p50_ms"] for r in ann_rows]
        left.plot(ann_x, ann_y, marker="^", color="tab:purple", label="usearch HNSW p50")
        for i, (entries, ms, row) in enumerate(zip(ann_x, ann_y, ann_rows, strict=True)):
            if "recall_at_1" in row:
                last = i == len(ann_rows) - 1  # label to the left, inside the axes
                left.annotate(
                    f"recall@1 {row['recall_at_1']:.3f}",
                    (entries, ms),
                    textcoords="offset points",
                    xytext=(-6 if last else 6, -14),
                    ha="right" if last else "left",
                    fontsize=8,
                    color="tab:purple",
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
                )
        left.axhline(1.0, color="tab:purple", linestyle=":", linewidth=1, label="ANN target at 1M: 1 ms")
    left.set(xscale="log", yscale="log", xlabel="entries in the index", ylabel="ms per lookup (log)")
    left.set_title(f"Lookup time by cache size (dimension {speed.get('dim', '?')})")
    left.grid(True, which="major", alpha=0.3)
    left.legend(fontsize=8)
    if embedders:
        right = axes[0][1]
        names = list(embedders)
        chosen = [embedders[n]["chosen"] for n in names]
        series = {
            "hits, same meaning (with guards)": [c.get("hit_rate_guarded", c["hit_rate"]) for c in chosen],
            "false hits, threshold only": [c["false_hit_raw"] for c in chosen],
            "false hits, with guards": [c["false_hit_guarded"] for c in chosen],
        }
        width = 0.8 / len(series)
        for i, ((label, values), color) in enumerate(
            zip(series.items(), ("tab:green", "tab:red", "tab:orange"), strict=True)
        ):
            xs = [j + i * width for j in range(len(names))]
            bars = right.bar(xs, [100 * v for v in values], width=width, label=label, color=color)
            right.bar_label(bars, fmt="%.1f%%", fontsize=7)
        right.set_xticks(
            [j + 0.4 - width / 2 for j in range(len(names))],
            [f"{n} (threshold {c['threshold']:.2f})" for n, c in zip(names, chosen, strict=True)],
        )
        right.set(ylabel="% of pairs", ylim=(0, 100))
        right.set_title("Paraphrase set at each embedder's chosen threshold")
        right.legend(fontsize=8)
    return fig


PLOTTERS: dict[str, Callable[[dict[str, Any]], Figure]] = {
    "stack_overhead": plot_stack_overhead,
    "gateway": plot_gateway,
    "overhead": plot_overhead,
    "scaling": plot_scaling,
    "streaming": plot_streaming,
    "soak": plot_soak,
    "startup": plot_startup,
    "semantic_cache": plot_semantic_cache,
}


def draw(path: Path, out: Path) -> Path | None:
    """Draw the figure for one results file; returns the PNG path, or None if nothing to draw."""
    data = json.loads(path.read_text())
    name = path.stem
    plotter = PLOTTERS.get(name)
    try:
        fig = plotter(data) if plotter else plot_generic(data)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        # A results file in an older or newer shape: fall back rather than fail the rest.
        print(f"{name}: specific figure failed ({type(error).__name__}: {error}); drawing a generic one")
        fig = plot_generic(data)
    if fig is None:
        return None
    fig.suptitle(f"{name} — {_subtitle(data)}", fontsize=9, y=0.995)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}.png"
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def _shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it, else as it is."""
    try:
        return path.resolve().relative_to(HERE.parent)
    except ValueError:
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="draw only this benchmark's figure")
    parser.add_argument("--out", type=Path, default=FIGURES)
    args = parser.parse_args()
    for path in sorted(RESULTS.glob("*.json")):
        if path.stem == "run_all" or (args.only and path.stem not in args.only):
            continue
        try:
            target = draw(path, args.out)
        except Exception as error:  # one odd results file must not stop the other figures
            print(f"{path.stem}: not drawn ({type(error).__name__}: {error})")
            continue
        print(f"{path.stem}: {_shown(target) if target else 'nothing to plot'}")


if __name__ == "__main__":
    main()
