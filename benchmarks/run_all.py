"""Run every benchmark in ``benchmarks/`` and collect what each wrote.

Each ``benchmarks/<name>.py`` (not this file, not ``plot.py``, not ``_private.py``
helpers) runs in its own interpreter, one after the other, so none disturbs another's
timing. Its table goes to the terminal as it runs; its ``results/<name>.json`` is
checked to be fresh. A summary table follows, and ``results/run_all.json`` records
what ran, how long it took, what failed and which results files are current.

    python benchmarks/run_all.py                     # everything, default settings
    python benchmarks/run_all.py --only soak --only startup
    python benchmarks/run_all.py --skip soak --plot  # then draw the figures
    python benchmarks/run_all.py -- soak --full      # extra arguments for one benchmark
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
NOT_BENCHMARKS = {"run_all", "plot"}


def discover() -> list[str]:
    """Names of the benchmark scripts present, in alphabetical order."""
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_"))


def run_one(name: str, extra: list[str], limit: float) -> dict:
    """Run ``benchmarks/<name>.py`` with ``extra`` arguments; what happened, as a dict."""
    result_file = RESULTS / f"{name}.json"
    before = result_file.stat().st_mtime if result_file.exists() else 0.0
    print(f"\n=== {name} {' '.join(extra)}".rstrip(), flush=True)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], cwd=HERE.parent, timeout=limit)
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {limit:.0f} s"
    seconds = time.perf_counter() - started
    fresh = result_file.exists() and result_file.stat().st_mtime > before
    if status == "ok" and not fresh:
        status = "wrote no results"
    return {
        "name": name,
        "args": extra,
        "status": status,
        "seconds": round(seconds, 2),
        "results": str(result_file.relative_to(HERE.parent)) if fresh else None,
    }


def _split_extra(argv: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    # "-- NAME ARGS..." passes ARGS to benchmark NAME; several groups may follow.
    if "--" not in argv:
        return argv, {}
    index = argv.index("--")
    own, rest = argv[:index], argv[index + 1 :]
    extra: dict[str, list[str]] = {}
    current = None
    for token in rest:
        if current is None or (token in discover() and not token.startswith("-")):
            current = token
            extra.setdefault(current, [])
        else:
            extra[current].append(token)
    return own, extra


def main(argv: list[str] | None = None) -> int:
    own, extra = _split_extra(list(sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    parser.add_argument("--skip", action="append", default=[], help="do not run this benchmark (repeatable)")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before a benchmark is stopped")
    parser.add_argument("--plot", action="store_true", help="draw the figures afterwards (benchmarks/plot.py)")
    args = parser.parse_args(own)
    names = discover()
    unknown = [n for n in [*args.only, *args.skip, *extra] if n not in names]
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)} (have: {', '.join(names)})")
    chosen = [n for n in names if (not args.only or n in args.only) and n not in args.skip]
    started = time.perf_counter()
    runs = [run_one(name, extra.get(name, []), args.limit) for name in chosen]
    total = time.perf_counter() - started
    print("\n=== summary")
    width = max((len(r["name"]) for r in runs), default=4)
    for r in runs:
        print(f"{r['name']:<{width}}  {r['status']:<20}  {r['seconds']:>7.1f} s  {r['results'] or '-'}")
    skipped = [n for n in names if n not in chosen]
    if skipped:
        print("not run: " + ", ".join(skipped))
    print(f"total {total:.1f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {"benchmark": "run_all", "python": sys.version.split()[0], "seconds": round(total, 2), "runs": runs}
    (RESULTS / "run_all.json").write_text(json.dumps(summary, indent=2) + "\n")
    failed = [r for r in runs if r["status"] != "ok"]
    if args.plot:
        subprocess.run([sys.executable, str(HERE / "plot.py")], cwd=HERE.parent, check=False)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
