"""Development check of the input guard: the ``train`` split and the ``dev`` sets only.

    python benchmarks/guard_dev.py [--save before.json] [--diff before.json] [--show]

Prints recall on attacks and false alarms on benign prompts per language and
obfuscation (the obfuscations of ``guard_accuracy``) for the ``train`` split of
``benchmarks/data/injection.jsonl`` and for every ``dev`` row of
``benchmarks/data/injection_dev.jsonl`` (hand-written, see ``data/DEV.md``). ``--show``
lists the false alarms (train and dev rows only) with what caught them, ``--misses``
the attacks let through; ``--save`` /
``--diff`` compare verdicts between two versions of the guard, so a rule edit's cost in
recall shows at once. It never reads the ``test`` split: that is measured once, at the
end, by ``guards.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.guard_accuracy import LATIN_ONLY, OBFUSCATIONS
from middlewares.guard.detect import InjectionDetector

DATA = Path(__file__).parent / "data"


def rows(check: bool = False) -> list[dict]:
    out = []
    for name, split in (("injection.jsonl", "train"), ("injection_dev.jsonl", "dev")):
        for index, line in enumerate((DATA / name).read_text().split("\n")):
            if not line:
                continue
            row = json.loads(line)
            if row["split"] != split:  # never the test split
                continue
            # The check batch is written with the others but read once, after the fixes.
            if row["source"].startswith("dev-check") and not check:
                continue
            row["id"] = f"{split}:{index}"
            row["set"] = split
            out.append(row)
    # The held-back package documents (one package in five, never trained on), with the
    # check batch: real READMEs, changelogs and docs that use the trigger words.
    for index, line in enumerate((DATA / "package_docs.jsonl").read_text().split("\n") if check else ()):
        if line and (row := json.loads(line))["split"] == "check":
            out.append({**row, "id": f"docs:{index}", "set": "dev", "source": "package-docs-check"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save")
    parser.add_argument("--diff")
    parser.add_argument("--show", action="store_true")
    parser.add_argument("--misses", action="store_true", help="list the attacks not caught (train and dev rows)")
    parser.add_argument("--no-classifier", action="store_true")
    parser.add_argument("--weights", help="other classifier weights (an .npz of train_injection_classifier.py)")
    parser.add_argument("--only", help="obfuscations, comma separated")
    parser.add_argument(
        "--check", action="store_true", help="add the check batch and held-back package docs (read once)"
    )
    args = parser.parse_args()
    detector = InjectionDetector(classifier=False if args.no_classifier else (args.weights or True))
    cells: dict[tuple[str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    verdicts: dict[str, str | None] = {}
    alarms = []
    misses = []
    chosen = args.only.split(",") if args.only else list(OBFUSCATIONS)
    start = time.process_time()
    for row in rows(args.check):
        text = row["text"][:6000]
        for obfuscation in chosen:
            if row["lang"] == "ja" and obfuscation in LATIN_ONLY:
                continue
            found = detector.find(OBFUSCATIONS[obfuscation](text))
            verdicts[f"{row['id']} {obfuscation}"] = found
            group = row["source"] if row["set"] == "dev" else "train"
            # Per language too: a benign pool of one language can hide the other's alarms.
            for key in (
                (row["set"], row["label"], obfuscation),
                (row["set"], row["label"], f"{row['lang']} {obfuscation}"),
                ("src", row["label"], f"{row['lang']} {group}"),
            ):
                if key[0] == "src" and obfuscation != "plain":
                    continue
                cell = cells[key]
                cell[0] += found is not None
                cell[1] += 1
            if found is not None and not row["label"]:
                alarms.append((row["id"], obfuscation, found, text[:160]))
            elif found is None and row["label"]:
                misses.append((row["id"], obfuscation, row["source"], text[:160]))
    seconds = time.process_time() - start
    print(f"{'':<34}{'recall':>16}{'false alarms':>18}")
    keys = sorted({(k[0], k[2]) for k in cells})
    for set_, name in keys:
        if set_ == "src":
            continue
        attack = cells.get((set_, 1, name), [0, 0])
        benign = cells.get((set_, 0, name), [0, 0])
        rec = f"{attack[0] / attack[1]:6.1%} of {attack[1]:<4}" if attack[1] else f"{'-':>14}"
        fa = f"{benign[0]}/{benign[1]} {benign[0] / benign[1]:5.1%}" if benign[1] else "-"
        print(f"{set_ + ' ' + name:<34}{rec:>16}{fa:>18}")
    print()
    for (src, label, name), (hit, total) in sorted(cells.items()):
        if src == "src":
            print(f"plain {name:<28} label {label}: {hit}/{total}")
    print(f"\n{seconds:.1f} s CPU")
    if args.show:
        for alarm in alarms:
            print(*alarm, sep=" | ")
    if args.misses:
        for miss in misses:
            print("missed", *miss, sep=" | ")
    if args.save:
        Path(args.save).write_text(json.dumps(verdicts))
    if args.diff:
        before = json.loads(Path(args.diff).read_text())
        for key, found in verdicts.items():
            old = before.get(key)
            if (old is None) != (found is None):
                print(f"changed {key}: {old} -> {found}")


if __name__ == "__main__":
    main()
