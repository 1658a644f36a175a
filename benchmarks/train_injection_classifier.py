"""Trains the input guard's injection classifier (``middlewares/guard/classifier.py``).

    python benchmarks/train_injection_classifier.py [--bits 17] [--fp 0.005]

Reads only the ``train`` split of ``benchmarks/data/injection.jsonl`` (see
``benchmarks/guard_data.py`` for where it comes from); the ``test`` split is never
read here. scikit-learn's logistic regression is fitted on the same hashed character
n-grams the guard computes at run time (``ngram_hashes``); the threshold is the lowest
whose false-alarm rate on benign training prompts, under 5-fold cross-validation, is at
most ``--fp``, counting only texts of ``--min-letters`` letters or more (the guard leaves
shorter ones to its phrase rules; letters, not characters, so encodings that lengthen a
text do not change its gate). Writes ``middlewares/guard/data/injection.npz`` (float16 weights).
scikit-learn is needed here only, never by the guard.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from middlewares.guard.classifier import DEFAULT_WEIGHTS, letters, ngram_hashes
from middlewares.guard.normalize import normalize

DATA = Path(__file__).parent / "data" / "injection.jsonl"


def features(texts: list[str], bits: int) -> sparse.csr_matrix:
    rows, cols, values = [], [], []
    for row, text in enumerate(texts):
        hashes = ngram_hashes(normalize(text), bits)
        if not len(hashes):
            continue
        unique, counts = np.unique(hashes, return_counts=True)
        rows.append(np.full(len(unique), row))
        cols.append(unique.astype(np.int64))
        values.append(counts / math.sqrt(len(hashes)))
    return sparse.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(len(texts), 2**bits)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, default=17)
    parser.add_argument("--fp", type=float, default=0.005, help="false-alarm rate allowed on training benign")
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    parser.add_argument(
        "--min-letters", type=int, default=100, help="texts with fewer letters are left to the phrase rules"
    )
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().split("\n") if line]
    train = [r for r in rows if r["split"] == "train"]
    texts = [r["text"] for r in train]
    labels = np.array([r["label"] for r in train])
    x = features(texts, args.bits)
    model = LogisticRegression(C=args.c, class_weight="balanced", max_iter=2000)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probs = cross_val_predict(model, x, labels, cv=folds, method="predict_proba")[:, 1]
    long_enough = np.array([letters(normalize(t)) >= args.min_letters for t in texts])
    probs = np.where(long_enough, probs, 0.0)
    benign = np.sort(probs[labels == 0])
    allowed = math.floor(args.fp * len(benign))
    threshold = float(benign[len(benign) - allowed - 1]) + 1e-6 if allowed < len(benign) else 0.5
    threshold = max(threshold, 0.5)
    recall = float((probs[labels == 1] >= threshold).mean())
    false_alarms = float((probs[labels == 0] >= threshold).mean())
    model.fit(x, labels)
    DEFAULT_WEIGHTS.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        DEFAULT_WEIGHTS,
        weights=model.coef_[0].astype(np.float16),
        bias=np.float32(model.intercept_[0]),
        threshold=np.float32(threshold),
        min_letters=np.int32(args.min_letters),
    )
    print(
        f"train: {len(train)} prompts ({int(labels.sum())} attacks); cross-validated at threshold "
        f"{threshold:.3f}: recall {recall:.1%}, false alarms {false_alarms:.1%}; "
        f"{DEFAULT_WEIGHTS} {DEFAULT_WEIGHTS.stat().st_size // 1024} KB"
    )


if __name__ == "__main__":
    main()
