"""The semantic cache on the held-out adversarial paraphrase set, through the layer.

Data: ``benchmarks/data/adversarial_paraphrases.jsonl`` (``make_adversarial_paraphrases.py``):
each stored question has a paraphrase (same answer) and a hard negative (another answer).
An oracle upstream answers every text with its question's answer, so a hit is right
exactly when the entry's answer is the one the upstream would give.

Per embedder, two caches see the same traffic: the fixed threshold (the embedder's
measured default, no bound) and the bound (``max_wrong_hit_rate=0.01``: per-entry
thresholds learned from verified outcomes, shadow checks of 5 % of hits run by
``run_verifier`` in a task group). Each first learns from the ``tune`` split (its
stored questions, then their paraphrases and negatives in random order), then the
held-out split is measured the same way: stored questions first, then paraphrases and
negatives shuffled. Reported per language: the hit rate (paraphrases answered right
from the cache / paraphrases), the wrong-hit rate (wrong answers served / hits) and, for
the bound, what it costs in hit rate against the fixed threshold.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import anyio

from middlewares.cache.semantic import SemanticCache, WrongHitBound
from onion import Context, Message, Request, Stack
from onion.testing import Reply, ScriptedProvider

DATA = Path(__file__).resolve().parent / "data" / "adversarial_paraphrases.jsonl"


def load(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["split"] == split]


def oracle(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The answer the upstream gives to every text of ``rows``: a question and its
    paraphrase share one; the hard negatives of one question that change the same thing
    (its kind) share another ("Is it unsafe to X?" and "Why is it unsafe to X?")."""
    answers: dict[str, str] = {}
    for row in rows:
        answers[row["stored"]] = answers[row["paraphrase"]] = f"answer to {row['stored']!r}"
    for row in rows:
        answers.setdefault(row["negative"], f"answer to the {row['kind']} negative of {row['stored']!r}")
    return answers


def request(text: str) -> Request:
    return Request(model="m", messages=[Message("user", text)], context=Context(caller="bench"))


async def replay(stack: Stack, rows: list[dict[str, Any]], answers: dict[str, str], seed: int) -> dict[str, Any]:
    """Store every question, then ask paraphrases and negatives shuffled; count per language."""
    for row in rows:
        await (await stack(request(row["stored"]))).result()
    asks = [(row["lang"], row["paraphrase"], True) for row in rows]
    asks += [(row["lang"], row["negative"], False) for row in rows]
    random.Random(seed).shuffle(asks)
    counts: dict[str, dict[str, int]] = {}
    for lang, text, is_paraphrase in asks:
        c = counts.setdefault(lang, {"paraphrases": 0, "right_hits": 0, "hits": 0, "wrong_hits": 0})
        response = await stack(request(text))
        completion = await response.result()
        c["paraphrases"] += is_paraphrase
        if response.served_by == "semantic_cache":
            c["hits"] += 1
            right = completion.content == answers[text]
            c["wrong_hits"] += not right
            c["right_hits"] += right and is_paraphrase
    return counts


def rates(counts: dict[str, int]) -> dict[str, float]:
    return {
        "hit_rate": counts["right_hits"] / max(1, counts["paraphrases"]),
        "wrong_hit_rate": counts["wrong_hits"] / max(1, counts["hits"]),
        "hits": counts["hits"],
        "wrong_hits": counts["wrong_hits"],
    }


async def measure(embedder: Any, bound: WrongHitBound | None) -> dict[str, Any]:
    tune, heldout = load("tune"), load("heldout")
    answers = oracle(tune + heldout)

    def script(req: Request, _: int) -> Reply:
        return Reply(answers.get(req.messages[-1].text, "unknown"))

    # A long embed timeout: a shared machine must not turn a slow model into misses here.
    semantic = SemanticCache(
        embedder=embedder, scope="shared", bound=bound, max_entries=100_000, embed_timeout_seconds=30.0
    )
    stack = Stack([semantic], ScriptedProvider(script))
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        if bound is not None:
            tg.start_soon(semantic.run_verifier)
        await replay(stack, tune, answers, seed=1)
        counts = await replay(stack, heldout, answers, seed=2)
        tg.cancel_scope.cancel()
    out: dict[str, Any] = {lang: rates(c) for lang, c in sorted(counts.items())}
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["stats"] = {f: getattr(semantic.stats, f) for f in ("hits", "explored", "verified", "verified_wrong")}
    if semantic.thresholds is not None:
        out["thresholds_by_script"] = dict(semantic.thresholds.thresholds)
        out["shadow_checks"] = semantic.shadow.done
    return out


async def adversarial(embedders: dict[str, Any], rate: float = 0.01) -> dict[str, Any]:
    """Fixed threshold vs the bound, per embedder and language; prints a table."""
    print(f"\nadversarial paraphrase set, held out (tune split learned first); bound = {rate:.0%} wrong hits")
    print("embedder     lang  mode         hit%   wrong%   hits  wrong   (bound costs hit% pts)")
    out: dict[str, Any] = {}
    for name, embedder in embedders.items():
        fixed = await measure(embedder, None)
        bounded = await measure(embedder, WrongHitBound(max_wrong_hit_rate=rate))
        out[name] = {"fixed_threshold": fixed, "bound": bounded, "threshold": embedder.default_threshold}
        for lang in ("en", "ja"):
            for mode, result in (("fixed", fixed), ("bound", bounded)):
                r = result[lang]
                cost = f"   ({100 * (fixed[lang]['hit_rate'] - r['hit_rate']):+.1f})" if mode == "bound" else ""
                print(
                    f"{name:12s} {lang:4s}  {mode:10s} {100 * r['hit_rate']:6.1f} {100 * r['wrong_hit_rate']:8.2f}"
                    f" {r['hits']:6d} {r['wrong_hits']:6d}{cost}"
                )
        learned = bounded.get("thresholds_by_script")
        print(f"{'':12s} bound: {bounded['stats']}, learned thresholds {learned}")
    return out
