"""Regenerate the "full stack near the floor" section of ``benchmarks/README.md`` from the
results files: the goals of that issue, each with the figure measured and met/missed.

Reads ``results/observability.json``, ``stack_overhead.json``, ``stack_overhead_trio.json``,
``http_stack.json`` and ``profile_stack.json`` (whichever exist) and rewrites the text
between the ``<!-- full-stack:begin -->`` and ``<!-- full-stack:end -->`` markers.

    python benchmarks/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- full-stack:begin -->", "<!-- full-stack:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value <= goal else f"**missed** ({value / goal:.1f}x the goal)"


def fmt(value: float | None, unit: str = "µs") -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def row_of(data: dict[str, Any] | None, case: str) -> dict[str, Any] | None:
    if data is None:
        return None
    return next((r for r in data["rows"] if r["case"] == case), None)


def goals_table() -> list[str]:
    obs = load("observability")
    asy, trio = load("stack_overhead"), load("stack_overhead_trio")
    http = load("http_stack")
    lines = ["| figure | goal | measured | |", "|---|---|---|---|"]
    for case, goal in (("complete, cache miss", 50), ("complete, cache hit", 10)):
        mine = row_of(asy, case)
        value = mine["onion_p50_us"] if mine else None
        lines.append(f"| default stack in process, {case}, asyncio p50 | ≤ {goal} µs | {fmt(value)} | "
                     f"{verdict(value, goal)} |")  # fmt: skip
    stream = row_of(asy, "stream, cache miss")
    value = stream["onion_p50_us"] if stream else None
    lines.append(f"| default stack, streamed miss (10 chunks), asyncio p50 | ≤ 100 µs | {fmt(value)} | "
                 f"{verdict(value, 100)} |")  # fmt: skip
    if asy and trio:
        for case in ("complete, cache miss", "complete, cache hit", "stream, cache miss"):
            a, t = row_of(asy, case), row_of(trio, case)
            if a and t:
                ratio = t["onion_p50_us"] / a["onion_p50_us"]
                lines.append(f"| trio / asyncio, {case} | ≤ 1.5x | {t['onion_p50_us']:,.1f} µs, {ratio:.2f}x | "
                             f"{verdict(ratio, 1.5)} |")  # fmt: skip
    if obs:
        for key, label in (("all_three_added_us", "complete"), ("all_three_stream_added_us", "streamed (8 chunks)")):
            value = obs.get(key)
            lines.append(f"| metrics + tracing (SDK, exporting) + logging, {label} | ≤ 30 µs | {fmt(value)} | "
                         f"{verdict(value, 30)} |")  # fmt: skip
        for key, label in (("all_three_unexported_added_us", "complete"),
                           ("all_three_unexported_stream_added_us", "streamed (8 chunks)")):  # fmt: skip
            value = obs.get(key)
            lines.append(f"| the same, tracer provider without exporter (`onion serve` default), {label} | ≤ 30 µs | "
                         f"{fmt(value)} | {verdict(value, 30)} |")  # fmt: skip
    if http:
        clients = (("Python client", "python_c1"), ("wrk", "wrk_c1"), ("wrk, cores kept awake", "wrk_c1_awake"))
        for client, key in clients:
            c1 = http.get(key)
            if c1 is None:
                continue
            lines.append(f"| gateway added latency, c=1, default stack, HTTP upstream, {client}: p50 | ≤ 0.5 ms | "
                         f"{fmt(c1['added_p50_ms'], 'ms')} | {verdict(c1['added_p50_ms'], 0.5)} |")  # fmt: skip
            added99 = c1["added_p99_ms"]
            if added99 < 0:
                # A difference of two tails: the direct run's own tail was the longer one
                # (noise on the shared cores), so the difference says nothing of the gateway.
                lines.append(f"| the same, p99 | ≤ 1 ms | {fmt(added99, 'ms')} (direct p99 "
                             f"{c1['direct']['p99_ms']:.1f} ms > gateway p99 {c1['gateway']['p99_ms']:.1f} ms) | "
                             "not measured (noise) |")  # fmt: skip
                continue
            lines.append(f"| the same, p99 | ≤ 1 ms | {fmt(added99, 'ms')} | {verdict(added99, 1.0)} |")
        per = http["throughput_c16"]["per_cpu_second"]
        met = "met" if per >= 2000 else f"**missed** ({per / 2000:.2f}x the goal)"
        lines.append(f"| requests per gateway CPU-second, default stack, HTTP upstream (wrk c=16) | ≥ 2,000 | "
                     f"{per:,.0f} | {met} |")  # fmt: skip
    return lines


def side_by_side() -> list[str]:
    lines = []
    for name, backend in (("stack_overhead", "asyncio"), ("stack_overhead_trio", "trio")):
        data = load(name)
        if data is None:
            continue
        lines += ["", f"`stack_overhead.py --backend {backend}` (µs per call; LiteLLM: "
                      f"{data.get('litellm_version') or 'skipped: ' + str(data.get('litellm_skipped'))}):", "",
                  "| case | floor p50 | onion p50 | onion p99 | LiteLLM p50 | LiteLLM/onion |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in data["rows"]:
            theirs = r.get("litellm_p50_us")
            ratio = r.get("litellm_over_onion_p50")
            lines.append(f"| {r['case']} | {r['floor_p50_us']:.1f} | {r['onion_p50_us']:.1f} | {r['onion_p99_us']:.1f} "
                         f"| {fmt(theirs) if theirs else '-'} | {f'{ratio:.0f}x' if ratio else '-'} |")  # fmt: skip
    return lines


def load_note() -> list[str]:
    asy = load("stack_overhead")
    if asy is None:
        return []
    floor = asy["rows"][0]["floor_p50_us"]
    load_avg = asy.get("load_average_1min")
    when = "" if load_avg is None else f" (load average {load_avg:.1f} on two cores as the run ended)"
    return [f"This run's CPython floor (8 bare closures around the answer) was {floor:.1f} µs p50 for a complete "
            f"call: it moves with the load of the engineers sharing the two cores{when}, and so do the absolute "
            "figures here; the onion/floor and LiteLLM/onion ratios "
            "come from interleaved rounds.", ""]  # fmt: skip


def section() -> str:
    obs, http, prof = load("observability"), load("http_stack"), load("profile_stack")
    asy = load("stack_overhead")
    machine = next((d for d in (asy, http, obs) if d), {}) or {}
    out = [
        BEGIN,
        "## The full stack near the floor (generated by `report.py`)",
        "",
        f"Machine: {machine.get('processor') or machine.get('machine', '?')}, Python {machine.get('python', '?')}, "
        "two cores shared with other work (figures move 2x with the load; ratios within one run hold).",
        "",
        "```bash",
        # The commands of the runs these figures come from, as their results files record them.
        f"python benchmarks/observability.py --calls {(obs or {}).get('calls', 20000)} "
        f"--repeats {(obs or {}).get('repeats', 5)} --clock {(obs or {}).get('clock', 'wall')}",
        f"python benchmarks/stack_overhead.py --calls {(asy or {}).get('calls_per_round', 2000)} "
        f"--rounds {(asy or {}).get('rounds', 5)} [--backend trio] [--litellm-python /tmp/litellm-venv/bin/python]",
        "python benchmarks/http_stack.py     # taskset: gateway core 0, rest core 1",
        f"python benchmarks/profile_stack.py --calls {(prof or {}).get('complete', {}).get('calls', 10000)}",
        "python benchmarks/report.py && python benchmarks/plot.py",
        "```",
        "",
        *load_note(),
        "Every case counts who answered (`served_by`, `x-onion-served-by`) and fails when a miss is "
        "served by a cache or a hit is not.",
        "",
        *goals_table(),
        *side_by_side(),
    ]
    if http:
        out += ["", f"HTTP: pinned with taskset: {http['pinned']}; load generator wrk (apt) beside the Python client; "
                    f"{http['throughput_c16']['requests']} requests in the throughput run, "
                    f"{http['throughput_c16']['gateway_cpu_seconds']:.2f} gateway CPU-seconds."]  # fmt: skip
    if prof:
        out += ["", "Profile of complete misses (`profile_stack.py`), top functions by own time:", "",
                "| function | own % | µs/call |", "|---|---|---|"]  # fmt: skip
        out += [f"| `{t['function'][-70:]}` | {t['own_share'] * 100:.1f} | {t['own_us_per_call']:.2f} |"
                for t in prof["complete"]["top"]]  # fmt: skip
    out += ["", "Figures: `figures/observability.png`, `figures/stack_overhead.png`, `figures/http_stack.png`.", END]
    return "\n".join(out)


def main() -> None:
    text = README.read_text()
    block = section()
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    README.write_text(text)
    print(block)


if __name__ == "__main__":
    sys.exit(main())
