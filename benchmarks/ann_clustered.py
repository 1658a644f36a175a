"""The optional ANN index (usearch HNSW) on vectors shaped like a semantic cache's.

``semantic_cache.py`` measures the ANN index on uniformly random vectors: the worst case
for HNSW, with no neighbourhood structure (recall@1 0.285 at 1M). A semantic cache holds
embeddings of prompts, which cluster by topic, and is asked for near duplicates of what
it stored (paraphrases). This benchmark builds that shape synthetically — 2,000 topic
centres, entries scattered around them, queries a small perturbation of a stored entry —
and reports lookup latency and recall@1 of the layer's two indexes (``VectorIndex``, the
exact numpy scan whose answers are the truth, and ``UsearchIndex`` with its defaults:
M=16, ef_add=128, ef_search=64). A wider graph (M=32, ef_add=256, ef_search=128) was
also tried: recall was 1.0 either way at 100k and lookups 4x slower.

    python benchmarks/ann_clustered.py            # 10k and 100k entries (about a minute)
    python benchmarks/ann_clustered.py --full     # also 1M (the build takes many minutes)
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _fullstack import print_table, write_results

DIM = 384
TOPICS = 2_000
QUERIES = 300


def dataset(entries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around topic centres, and queries near stored entries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, TOPICS, entries)] + 0.6 * rng.standard_normal((entries, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, entries, QUERIES)] + 0.05 * rng.standard_normal((QUERIES, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return vectors, queries


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def measure(entries: int) -> list[dict[str, Any]]:
    """The numpy index (exact: the truth) and the ANN index, as the semantic cache builds them."""
    from middlewares.cache.vector_index import UsearchIndex, VectorIndex

    vectors, queries = dataset(entries)
    keys = [str(i) for i in range(entries)]
    rows = []
    truth: list[str | None] = []
    for name, index in (("numpy (exact)", VectorIndex(DIM, entries)), ("usearch HNSW", UsearchIndex(DIM, entries))):
        began = time.perf_counter()
        index.add_many(keys, vectors, "s")
        build = time.perf_counter() - began
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            match = index.search(query, "s")
            latencies.append((time.perf_counter() - began) * 1e3)
            found.append(match.key if match is not None else None)
        truth = truth or found  # the exact index runs first
        rows.append(
            {
                "entries": entries,
                "index": name,
                "build_s": build,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "recall_at_1": sum(a == b for a, b in zip(found, truth, strict=True)) / QUERIES,
            }
        )
        print(f"  {entries:,} entries, {name}: built in {build:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also 1M entries")
    args = parser.parse_args()
    sizes = [10_000, 100_000, *([1_000_000] if args.full else [])]
    rows = [row for entries in sizes for row in measure(entries)]
    print(f"\nclustered vectors (dim {DIM}, {TOPICS:,} topics), {QUERIES} near-duplicate queries")
    print_table(
        ["entries", "index", "build s", "p50 ms", "p99 ms", "recall@1"],
        [[r["entries"], r["index"], r["build_s"], r["p50_ms"], r["p99_ms"], r["recall_at_1"]] for r in rows],
    )
    path = write_results("ann_clustered", {"dim": DIM, "topics": TOPICS, "queries": QUERIES, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
