"""Terminal text for eval reports: a table of cases, totals, tags, and a comparison."""

from __future__ import annotations

from ._report import Comparison, Report

__all__ = ["format_comparison", "format_report"]


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_report(report: Report, *, failure_width: int = 60) -> str:
    """The report as a fixed-width table followed by the totals and per-tag rates."""
    header = ("case", "tags", "passed", "rate", "result", "first failure")
    rows = [
        (
            case.id,
            ",".join(case.tags),
            f"{case.passed_samples}/{len(case.samples)}",
            _pct(case.pass_rate),
            "PASS" if case.passed else "FAIL",
            _cut(case.first_failure(), failure_width),
        )
        for case in report.cases
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [header]]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    t = report.totals
    lines.append("")
    lines.append(
        f"{t.cases_passed}/{t.cases} cases passed; pass rate {_pct(t.pass_rate)} "
        f"({t.samples_passed}/{t.samples} samples, {t.errors} errors) in {t.seconds:.1f}s against {report.target}"
    )
    if report.by_tag:
        lines.append("by tag: " + ", ".join(f"{tag} {_pct(rate)}" for tag, rate in report.by_tag.items()))
    return "\n".join(lines)


def format_comparison(comparison: Comparison, *, previous: str = "the previous report") -> str:
    """What changed since ``previous``: regressions first, then improvements and churn."""
    c = comparison
    lines = [
        f"compared with {previous}: pass rate {_pct(c.pass_rate_before)} -> {_pct(c.pass_rate_after)}",
        f"regressed ({len(c.regressed)}): "
        + (", ".join(f"{x.id} {_pct(x.before)} -> {_pct(x.after)}" for x in c.regressed) or "none"),
    ]
    if c.improved:
        lines.append(
            f"improved ({len(c.improved)}): "
            + ", ".join(f"{x.id} {_pct(x.before)} -> {_pct(x.after)}" for x in c.improved)
        )
    if c.added:
        lines.append(f"new cases ({len(c.added)}): " + ", ".join(c.added))
    if c.removed:
        lines.append(f"removed cases ({len(c.removed)}): " + ", ".join(c.removed))
    return "\n".join(lines)
