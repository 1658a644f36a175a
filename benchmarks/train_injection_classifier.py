"""Trains the input guard's injection classifier (``middlewares/guard/classifier.py``).

    python benchmarks/train_injection_classifier.py [--c 25] [--fp 0.02] [--obfuscations] [--dry-run]

Reads only the ``train`` split of ``benchmarks/data/injection.jsonl`` (see
``benchmarks/guard_data.py`` for where it comes from); the ``test`` split is never
read here. To it are added benign texts the split lacks, long enough for the classifier
to judge: the ``train`` rows of ``benchmarks/data/package_docs.jsonl`` (real README,
changelog and docs chunks of permissively licensed packages, ``data/make_package_docs.py``;
its ``check`` rows are never read here), ``--prose`` paragraphs of this Python's
standard-library docstrings and ``--augment`` composites per language of the split's own
benign rows (``composites``). scikit-learn's logistic regression is fitted on the same
hashed character n-grams the guard computes at run time (``ngram_hashes`` of the text
without the grammar's trigger words, ``unmarked``). The threshold comes from 5-fold
cross-validation grouped by package (a package's chunks on one side of a fold; each
fold's composites made from its own rows): the lowest at which each benign source alone
has at most ``--fp`` false alarms among the texts the guard judges (``--min-letters``
letters or more; shorter ones are left to its phrase rules). It prints the
cross-validated recall and false alarms per source, for the classifier alone and with
the phrase rules, and with ``--obfuscations`` the whole pipeline's (phrases, decoders,
classifier) on the split's rows under every obfuscation of ``guard_accuracy``. Writes
``middlewares/guard/data/injection.npz`` (float16 weights) unless ``--dry-run``.
scikit-learn is needed here only, never by the guard.
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
from sklearn.model_selection import StratifiedGroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.guard_accuracy import LATIN_ONLY, OBFUSCATIONS
from middlewares.guard.classifier import (
    DEFAULT_WEIGHTS,
    InjectionClassifier,
    _at_least_letters,
    letters,
    ngram_hashes,
    unmarked,
)
from middlewares.guard.decoders import readings
from middlewares.guard.detect import InjectionDetector
from middlewares.guard.normalize import normalize

DATA = Path(__file__).parent / "data" / "injection.jsonl"
DOCS = Path(__file__).parent / "data" / "package_docs.jsonl"
WRAPPERS = ("Summarize this document:", "Here is the email:", "Review this resume:", "Translate to German:")
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


def package_docs(path: Path, seed: int = 5) -> list[dict]:
    """The ``train`` rows of ``package_docs.jsonl`` (``data/make_package_docs.py``): real
    README, changelog and docs chunks of permissively licensed packages, which use
    "ignore", "override", "system", "rules", "instructions" in their everyday senses. Half
    get one of the train split's request lines on top ("Summarize this document:"), since
    its latent injections carry those too and the line alone must not read as an attack.
    The ``check`` rows (one package in five) are never read here."""
    rng = random.Random(seed)
    out = []
    for line in path.read_text().split("\n"):
        if not line:
            continue
        row = json.loads(line)
        if row["split"] != "train":
            continue
        text = row["text"]
        if rng.random() < 0.5:
            text = f"{rng.choice(WRAPPERS)}\n{text}"
        out.append({**row, "text": text, "group": f"package:{row['package']}"})
    return out


def fold_classifier(model: LogisticRegression, min_letters: int) -> InjectionClassifier:
    """A fold's model as the guard runs it (float16 weights, the same gate and masking)."""
    clf = InjectionClassifier.__new__(InjectionClassifier)
    clf.weights = model.coef_[0].astype(np.float16).astype(np.float32)
    clf.bias, clf.threshold, clf.min_letters, clf.masked = float(model.intercept_[0]), 0.5, min_letters, MASK
    clf.bits = int(math.log2(len(clf.weights)))
    return clf


def pipeline_score(clf: InjectionClassifier, grammar: InjectionDetector, text: str) -> float:
    """What the guard's pipeline makes of ``text`` with this classifier: 2.0 if the phrase
    rules catch it (on any reading), else the highest classifier score among the texts the
    detector shows the classifier (the message and each decoded payload; 0 if too short)."""
    if grammar.find(text) is not None:
        return 2.0
    inputs = [normalize(text)] + [normalize(payload) for _, _, payload in readings(text)]
    return max([clf.score(t) for t in inputs if _at_least_letters(t, clf.min_letters)], default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, default=17)
    parser.add_argument("--fp", type=float, default=0.02, help="false-alarm rate allowed on each benign source")
    parser.add_argument("--pooled", action="store_true", help="one --fp budget over all judged benign texts (old)")
    parser.add_argument("--c", type=float, default=25.0, help="inverse regularisation strength")
    parser.add_argument(
        "--min-letters", type=int, default=100, help="texts with fewer letters are left to the phrase rules"
    )
    parser.add_argument("--augment", type=int, default=300, help="benign composites per language (0: none)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--no-mask", action="store_true", help="show the classifier the trigger words too")
    parser.add_argument("--prose", type=int, default=3000, help="benign stdlib docstring paragraphs (0: none)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="package documentation chunks ('' for none)")
    parser.add_argument("--obfuscations", action="store_true", help="also cross-validate every obfuscation")
    parser.add_argument("--dry-run", action="store_true", help="cross-validate and report, write nothing")
    parser.add_argument("--scores", type=Path, help="save the cross-validated scores (npz) for threshold studies")
    args = parser.parse_args()
    global MASK
    MASK = not args.no_mask
    rows = [json.loads(line) for line in DATA.read_text().split("\n") if line]
    train = [r for r in rows if r["split"] == "train"]
    base = len(train)
    prose = stdlib_prose(args.prose) if args.prose else []
    train += [{"text": t, "label": 0, "lang": "en", "source": "stdlib-prose", "split": "train"} for t in prose]
    docs = package_docs(args.docs) if str(args.docs) not in ("", ".") else []
    train += docs
    labels = np.array([r["label"] for r in train])
    # Chunks of one package stay on one side of a fold: its README and changelog share
    # names and phrasing, and would otherwise be recognised rather than judged.
    groups = np.array([r.get("group", f"row:{i}") for i, r in enumerate(train)])
    grammar = InjectionDetector(classifier=False)
    by_grammar = np.array([grammar.find(r["text"]) is not None for r in train])

    def judged(texts: list[str]) -> np.ndarray:
        return np.array([letters(normalize(t)) >= args.min_letters for t in texts])

    # Cross-validated scores: each fold's composites are made from its own rows only, so
    # no sentence or document is on both sides of a fold.
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    scores, truth, kinds, caught = [], [], [], []
    obfuscated: dict[str, list[tuple[float, int, str]]] = {name: [] for name in OBFUSCATIONS}
    for fold, (fit_index, held_index) in enumerate(folds.split(np.zeros(len(train)), labels, groups)):
        fit_rows = [train[i] for i in fit_index]
        held_rows = [train[i] for i in held_index]
        fit_texts = [r["text"] for r in fit_rows] + composites(fit_rows, args.augment * 4 // 5, fold)
        fit_labels = np.concatenate([labels[fit_index], np.zeros(len(fit_texts) - len(fit_index), dtype=int)])
        held_texts = [r["text"] for r in held_rows] + composites(held_rows, args.augment // 5, 100 + fold)
        extra = len(held_texts) - len(held_rows)
        held_labels = np.concatenate([labels[held_index], np.zeros(extra, dtype=int)])
        model = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
        model.fit(features(fit_texts, args.bits), fit_labels)
        probs = model.predict_proba(features(held_texts, args.bits))[:, 1]
        scores.append(np.where(judged(held_texts), probs, 0.0))
        truth.append(held_labels)
        kinds += [f"{r['lang']} {r['source']}" for r in held_rows] + ["en composite"] * extra
        clf = fold_classifier(model, args.min_letters)
        for index in held_index[: None if args.obfuscations else 0]:
            row = train[index]
            if index >= base:  # the split's own rows: the added benign prose is not obfuscated
                continue
            for name, obfuscate in OBFUSCATIONS.items():
                if row["lang"] == "en" or name not in LATIN_ONLY:
                    text = obfuscate(row["text"][:6000])
                    obfuscated[name].append((pipeline_score(clf, grammar, text), row["label"], row["lang"]))
        caught.append(
            np.concatenate(
                [by_grammar[held_index], [grammar.find(t) is not None for t in held_texts[len(held_rows) :]]]
            )
        )
    probs, truth, sources, caught = (
        np.concatenate(scores),
        np.concatenate(truth),
        np.array(kinds),
        np.concatenate(caught),
    )
    # The false-alarm budget holds for every kind of benign text on its own (``--fp`` of
    # the judged texts of each source). Pooled over all of them (``--pooled``, the
    # previous weights), the thousands of easy docstring and package paragraphs let the
    # Faker documents, the kind most like a latent injection, alarm 1 time in 10.
    if args.scores:
        np.savez(args.scores, probs=probs, truth=truth, sources=sources, caught=caught)
    judged_benign = (truth == 0) & (probs > 0)
    threshold = 0.5
    for source in [None] if args.pooled else sorted(set(sources[judged_benign])):
        ranked = np.sort(probs[judged_benign & (sources == source)] if source else probs[judged_benign])
        allowed = math.floor(args.fp * len(ranked))
        if allowed < len(ranked):
            threshold = max(threshold, float(ranked[len(ranked) - allowed - 1]) + 1e-6)
    flagged = probs >= threshold
    print(f"cross-validated, threshold {threshold:.3f} (classifier | with the phrase rules):")
    for source in sorted(set(sources)):
        mask = sources == source
        label = "recall" if truth[mask].all() else "false alarms"
        judged_here = int((probs[mask] > 0).sum())
        print(
            f"  {source:<28} {label:<13} {flagged[mask].mean():6.1%} | {(flagged | caught)[mask].mean():6.1%}"
            f"  of {int(mask.sum())} ({judged_here} judged)"
        )
    for lang in ("en", "ja"):
        attacks = (truth == 1) & np.char.startswith(sources, lang)
        benign = (truth == 0) & np.char.startswith(sources, lang)
        print(
            f"  {lang} all: recall {flagged[attacks].mean():.1%} | {(flagged | caught)[attacks].mean():.1%}, "
            f"false alarms {flagged[benign].mean():.2%} | {(flagged | caught)[benign].mean():.2%} "
            f"of {int(benign.sum())}"
        )
    for name, results in obfuscated.items() if args.obfuscations else ():
        cells = []
        for lang in ("en", "ja"):
            got = [(score >= threshold, label) for score, label, language in results if language == lang]
            attacks = [hit for hit, label in got if label]
            benign = [hit for hit, label in got if not label]
            if attacks:
                cells.append(f"{lang} {np.mean(attacks):6.1%} / {np.mean(benign):5.1%}")
        print(f"  {name:<12} recall / false alarms (train split, pipeline): {'   '.join(cells)}")
    if args.scores:
        np.savez(
            args.scores.with_suffix(".obf.npz"),
            **{n: np.array([s for s, _, _ in r]) for n, r in obfuscated.items()},
            **{f"{n}_label": np.array([lab for _, lab, _ in r]) for n, r in obfuscated.items()},
            **{f"{n}_lang": np.array([la for _, _, la in r]) for n, r in obfuscated.items()},
        )
    if args.dry_run:
        return
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
        f"train: {base} prompts ({int(labels.sum())} attacks) + {len(prose)} stdlib paragraphs + {len(docs)} "
        f"package-doc chunks + {len(texts) - len(train)} benign composites; "
        f"{args.out} {args.out.stat().st_size // 1024} KB"
    )


if __name__ == "__main__":
    main()
