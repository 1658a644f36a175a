"""Trains the input guard's injection classifier (``middlewares/guard/classifier.py``).

    python benchmarks/train_injection_classifier.py [--bits 17] [--fp 0.005]

Reads only the ``train`` split of ``benchmarks/data/injection.jsonl`` (see
``benchmarks/guard_data.py`` for where it comes from); the ``test`` split is never
read here. To it are added benign texts the split lacks, long enough for the classifier
to judge: ``--prose`` paragraphs of this Python's standard-library docstrings (real
sentences with "ignore", "override", "rules" in their everyday senses) and
``--augment`` composites per language of the split's own benign rows (``composites``).
scikit-learn's logistic regression is fitted on the same hashed character n-grams the
guard computes at run time (``ngram_hashes`` of the text without the grammar's trigger
words, ``unmarked``); the threshold is the lowest whose false-alarm rate on the benign
texts the guard judges (``--min-letters`` letters or more; shorter ones are left to its
phrase rules), under 5-fold cross-validation whose composites are built within each
fold, is at most ``--fp``. Writes ``middlewares/guard/data/injection.npz`` (float16
weights). scikit-learn is needed here only, never by the guard.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import sys
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from middlewares.guard.classifier import DEFAULT_WEIGHTS, letters, ngram_hashes, unmarked
from middlewares.guard.normalize import normalize

DATA = Path(__file__).parent / "data" / "injection.jsonl"
TRIGGER = "grammar-trigger-words"


MASK = True


def features(texts: list[str], bits: int) -> sparse.csr_matrix:
    rows, cols, values = [], [], []
    for row, text in enumerate(texts):
        norm = normalize(text)
        hashes = ngram_hashes(unmarked(norm) if MASK else norm, bits)
        if not len(hashes):
            continue
        unique, counts = np.unique(hashes, return_counts=True)
        rows.append(np.full(len(unique), row))
        cols.append(unique.astype(np.int64))
        values.append(counts / math.sqrt(len(hashes)))
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(len(texts), 2**bits)
    )


def composites(rows: list[dict], count: int, seed: int) -> list[str]:
    """Benign texts long enough for the classifier to judge, made from benign rows only:
    a benign document with one to three benign trigger-word sentences put between its
    lines, or two to five such sentences in one message. The train split's benign
    prompts that use the trigger words are short (under the classifier's gate) and its
    documents use none, so without these the model learns that any long text saying
    "ignore" or "instructions" is an attack; the latent injections (the same kind of
    documents with an attack inside) are the contrast it must learn instead."""
    rng = random.Random(seed)
    out = []
    for lang in ("en", "ja"):
        sentences = [r["text"] for r in rows if r["label"] == 0 and r["lang"] == lang and r["source"] == TRIGGER]
        documents = [r["text"] for r in rows if r["label"] == 0 and r["lang"] == lang and r["source"] == "documents"]
        if not sentences or not documents:
            continue
        for index in range(count):
            if index % 2 == 0:
                lines = rng.choice(documents).split("\n")
                for sentence in rng.sample(sentences, min(len(sentences), rng.randint(1, 3))):
                    lines.insert(rng.randint(1, len(lines)), sentence)
                out.append("\n".join(lines))
            else:
                picked = rng.sample(sentences, min(len(sentences), rng.randint(2, 5)))
                out.append((" " if lang == "en" else "").join(picked))
    return out


def stdlib_prose(limit: int) -> list[str]:
    """Benign English prose from the docstrings of this Python's standard library
    (PSF licence): paragraphs of 100 letters or more, without code. Real sentences that
    say "ignore", "override", "previous", "rules", "instructions" and "system" in
    their everyday senses, which the train split's benign documents (Faker word salad)
    never do. Sorted and sampled with a fixed seed, so a Python version gives one set."""
    root = Path(os.__file__).parent
    paragraphs = set()
    for path in sorted([*root.glob("*.py"), *root.glob("*/*.py")]):
        if any(part in path.parts for part in ("test", "tests", "idlelib", "lib2to3", "site-packages")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or ""):
                text = " ".join(paragraph.split())
                if letters(text) >= 100 and not _CODE.search(text):
                    paragraphs.add(text)
    ordered = sorted(paragraphs)
    random.Random(11).shuffle(ordered)
    return ordered[:limit]


_CODE = re.compile(r">>>|[{}]|\w\(.*\)\s*->|^\s*[-*]\s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, default=17)
    parser.add_argument("--fp", type=float, default=0.005, help="false-alarm rate allowed on judged benign texts")
    parser.add_argument("--per-source", action="store_true", help="the --fp budget for each benign source alone")
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    parser.add_argument(
        "--min-letters", type=int, default=100, help="texts with fewer letters are left to the phrase rules"
    )
    parser.add_argument("--augment", type=int, default=300, help="benign composites per language (0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--no-mask", action="store_true", help="show the classifier the trigger words too")
    parser.add_argument("--prose", type=int, default=3000, help="benign stdlib docstring paragraphs (0: none)")
    args = parser.parse_args()
    global MASK
    MASK = not args.no_mask
    rows = [json.loads(line) for line in DATA.read_text().split("\n") if line]
    train = [r for r in rows if r["split"] == "train"]
    prose = stdlib_prose(args.prose) if args.prose else []
    train += [{"text": t, "label": 0, "lang": "en", "source": "stdlib-prose", "split": "train"} for t in prose]
    labels = np.array([r["label"] for r in train])

    def judged(texts: list[str]) -> np.ndarray:
        return np.array([letters(normalize(t)) >= args.min_letters for t in texts])

    # Cross-validated scores: each fold's composites are made from its own rows only, so
    # no sentence or document is on both sides of a fold.
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores, truth, kinds = [], [], []
    for fold, (fit_index, held_index) in enumerate(folds.split(np.zeros(len(train)), labels)):
        fit_rows = [train[i] for i in fit_index]
        held_rows = [train[i] for i in held_index]
        fit_texts = [r["text"] for r in fit_rows] + composites(fit_rows, args.augment * 4 // 5, fold)
        fit_labels = np.concatenate([labels[fit_index], np.zeros(len(fit_texts) - len(fit_index), dtype=int)])
        held_texts = [r["text"] for r in held_rows] + composites(held_rows, args.augment // 5, 100 + fold)
        held_labels = np.concatenate([labels[held_index], np.zeros(len(held_texts) - len(held_index), dtype=int)])
        model = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
        model.fit(features(fit_texts, args.bits), fit_labels)
        probs = model.predict_proba(features(held_texts, args.bits))[:, 1]
        scores.append(np.where(judged(held_texts), probs, 0.0))
        truth.append(held_labels)
        kinds += [f"{r['lang']} {r['source']}" for r in held_rows] + ["composite"] * (len(held_texts) - len(held_rows))
    probs, truth, sources = np.concatenate(scores), np.concatenate(truth), np.array(kinds)
    # The false-alarm budget is spent on the benign texts the classifier judges (long
    # enough): counting the short ones, which it never flags, would hide its rate.
    # ``--per-source`` makes it hold for every kind of benign text on its own: pooled,
    # the thousands of easy docstring paragraphs let the train split's documents (the
    # kind that looks most like a latent injection) alarm 6 times in 66 under
    # cross-validation; per source, the threshold rises to 0.73 and the judged attacks'
    # recall falls from 96.8 % to 89.4 % (0.64 and 91.4 % with --fp 0.02).
    threshold = 0.5
    judged_benign = (truth == 0) & (probs > 0)
    long_benign = probs[judged_benign]
    for source in sorted(set(sources[judged_benign])) if args.per_source else [None]:
        ranked = np.sort(probs[judged_benign & (sources == source)] if source else long_benign)
        allowed = math.floor(args.fp * len(ranked))
        if allowed < len(ranked):
            threshold = max(threshold, float(ranked[len(ranked) - allowed - 1]) + 1e-6)
    recall = float((probs[truth == 1] >= threshold).mean())
    long_attacks = probs[(truth == 1) & (probs > 0)]
    false_alarms = float((long_benign >= threshold).mean())
    texts = [r["text"] for r in train] + composites(train, args.augment, 7)
    all_labels = np.concatenate([labels, np.zeros(len(texts) - len(train), dtype=int)])
    model = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
    model.fit(features(texts, args.bits), all_labels)
    args.out.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        args.out,
        weights=model.coef_[0].astype(np.float16),
        bias=np.float32(model.intercept_[0]),
        threshold=np.float32(threshold),
        min_letters=np.int32(args.min_letters),
        masked=np.bool_(MASK),
    )
    print(
        f"train: {len(train) - len(prose)} prompts ({int(labels.sum())} attacks) + {len(prose)} stdlib paragraphs + "
        f"{len(texts) - len(train)} benign composites; "
        f"cross-validated at threshold {threshold:.3f}: recall {recall:.1%} of attacks "
        f"({float((long_attacks >= threshold).mean()):.1%} of the {len(long_attacks)} judged), false alarms "
        f"{false_alarms:.1%} of {len(long_benign)} judged benign; {args.out} {args.out.stat().st_size // 1024} KB"
    )


if __name__ == "__main__":
    main()
