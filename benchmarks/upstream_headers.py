"""What choosing the upstream headers to forward costs per answer (``[server]
upstream_headers``), against the fnmatch loop it replaces and the empty list.

The headers are a real OpenAI answer's (21 of them, rate limits, request id, Cloudflare's
and the CDN's). Cases, interleaved round by round (the machine is noisy), each the best
of its rounds, in µs per answer:

- ``compiled``: ``HeaderAllowlist(default).pick(raw)`` (a frozenset and a prefix tuple);
- ``fnmatch``: the same default globs tried with ``fnmatch.fnmatchcase`` per header;
- ``empty``: what the provider does with ``upstream_headers = []`` (a ``None`` check).

    PYTHONPATH=$PWD python benchmarks/upstream_headers.py
"""

from __future__ import annotations

import fnmatch
import json
import platform
import timeit
from pathlib import Path

from onion._upstream_headers import DEFAULT_UPSTREAM_HEADERS, HeaderAllowlist

RAW = [
    (name.encode(), value.encode())
    for name, value in [
        ("date", "Thu, 03 Dec 2026 16:00:00 GMT"),
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "org-abc"),
        ("openai-processing-ms", "412"),
        ("openai-project", "proj_abc"),
        ("openai-version", "2020-10-01"),
        ("x-envoy-upstream-service-time", "415"),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999975"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "0s"),
        ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
        ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ("cf-cache-status", "DYNAMIC"),
        ("set-cookie", "__cf_bm=abc; path=/; expires=Thu, 03-Dec-26 16:30:00 GMT; HttpOnly; Secure"),
        ("server", "cloudflare"),
    ]
]
GLOBS = [g for g in DEFAULT_UPSTREAM_HEADERS if g != "x-upstream-request-id"]


def compiled() -> dict[str, str]:
    return ALLOW.pick(RAW)


def by_fnmatch() -> dict[str, str]:
    chosen = {}
    for key, value in RAW:
        name = key.decode("latin-1").lower()
        if any(fnmatch.fnmatchcase(name, glob) for glob in GLOBS):
            chosen[name] = value.decode("latin-1")
        elif name in ("x-request-id", "request-id"):
            chosen["x-upstream-request-id"] = value.decode("latin-1")
    return chosen


def empty() -> dict[str, str] | None:
    forward = EMPTY
    return forward.pick(RAW) if forward is not None else None


ALLOW = HeaderAllowlist()
EMPTY = HeaderAllowlist([]) or None


def main(rounds: int = 7, number: int = 20000) -> None:
    assert compiled() == by_fnmatch()
    cases = {"compiled": compiled, "fnmatch": by_fnmatch, "empty": empty}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, case in cases.items():
            best[name] = min(best[name], timeit.timeit(case, number=number) / number * 1e6)
    for name, micros in best.items():
        print(f"{name:>9}: {micros:7.3f} µs per answer")
    print(f"fnmatch / compiled: {best['fnmatch'] / best['compiled']:.1f}x")
    out = Path(__file__).resolve().parent / "results" / "upstream_headers.json"
    out.write_text(json.dumps({"python": platform.python_version(), "us_per_answer": best}, indent=2) + "\n")


if __name__ == "__main__":
    main()
