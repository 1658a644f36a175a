"""The eval report: results per case, totals, per-tag rates, and comparison of two runs.

A report is plain data (msgspec structs) written as JSON, so a later run can be compared
with it: ``compare_reports(old, new)`` says which cases regressed, improved, appeared or
disappeared after a model or prompt change.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..errors import ConfigError

__all__ = [
    "CaseChange",
    "CaseResult",
    "Comparison",
    "Report",
    "SampleResult",
    "Totals",
    "compare_reports",
    "load_report",
    "save_report",
    "summarize",
]

REPORT_VERSION = 1


class SampleResult(msgspec.Struct, omit_defaults=True):
    """One answer to one case: whether it passed, why not, and how long it took."""

    passed: bool
    reasons: list[str] = []
    answer: str = ""
    error: str | None = None
    seconds: float = 0.0
    served_by: str = ""


class CaseResult(msgspec.Struct, omit_defaults=True):
    """All samples of one case. ``pass_rate`` is passed samples / samples."""

    id: str
    samples: list[SampleResult]
    min_pass_rate: float = 1.0
    tags: list[str] = []

    @property
    def passed_samples(self) -> int:
        """Samples that passed every check."""
        return sum(1 for s in self.samples if s.passed)

    @property
    def pass_rate(self) -> float:
        """Fraction of samples that passed, in [0, 1] (0 for a case with no samples)."""
        return self.passed_samples / len(self.samples) if self.samples else 0.0

    @property
    def passed(self) -> bool:
        """Whether enough samples passed (``pass_rate >= min_pass_rate``)."""
        return bool(self.samples) and self.pass_rate >= self.min_pass_rate

    def first_failure(self) -> str:
        """The reasons of the first failing sample, joined, or ``""``."""
        for sample in self.samples:
            if not sample.passed:
                return sample.error or "; ".join(sample.reasons)
        return ""


class Totals(msgspec.Struct):
    """Run-wide numbers. ``pass_rate`` is the mean of the per-case pass rates, so a case
    with many samples weighs as much as a case with one."""

    cases: int
    cases_passed: int
    samples: int
    samples_passed: int
    errors: int
    pass_rate: float
    seconds: float


class Report(msgspec.Struct, omit_defaults=True):
    """What ``onion eval`` writes: the target, totals, per-tag pass rates, per-case results."""

    target: str
    totals: Totals
    cases: list[CaseResult]
    by_tag: dict[str, float] = {}
    created: str = ""
    version: int = REPORT_VERSION


def summarize(cases: list[CaseResult], *, target: str, seconds: float, created: str = "") -> Report:
    """Build a report (totals and per-tag rates) from case results."""
    samples = [s for c in cases for s in c.samples]
    rate = sum(c.pass_rate for c in cases) / len(cases) if cases else 0.0
    tags: dict[str, list[float]] = {}
    for case in cases:
        for tag in case.tags:
            tags.setdefault(tag, []).append(case.pass_rate)
    totals = Totals(
        cases=len(cases),
        cases_passed=sum(1 for c in cases if c.passed),
        samples=len(samples),
        samples_passed=sum(1 for s in samples if s.passed),
        errors=sum(1 for s in samples if s.error is not None),
        pass_rate=rate,
        seconds=seconds,
    )
    by_tag = {tag: sum(rates) / len(rates) for tag, rates in sorted(tags.items())}
    return Report(target=target, totals=totals, cases=cases, by_tag=by_tag, created=created)


def save_report(report: Report, path: str | Path) -> None:
    """Write ``report`` as indented JSON."""
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")


def load_report(path: str | Path) -> Report:
    """Read a report written by ``save_report``; errors name the file and field."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the report: {error}") from None
    try:
        return msgspec.json.decode(data, type=Report)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ConfigError(f"{path}: not an onion eval report: {error}") from None


class CaseChange(msgspec.Struct, frozen=True):
    """One case's pass rate before and after (``None`` where the case is absent)."""

    id: str
    before: float | None
    after: float | None

    @property
    def delta(self) -> float:
        """after - before (0 when either side is absent)."""
        if self.before is None or self.after is None:
            return 0.0
        return self.after - self.before


class Comparison(msgspec.Struct, frozen=True):
    """How a run differs from a previous one, case by case."""

    regressed: tuple[CaseChange, ...]
    improved: tuple[CaseChange, ...]
    unchanged: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    pass_rate_before: float
    pass_rate_after: float


def compare_reports(old: Report, new: Report, *, tolerance: float = 0.0) -> Comparison:
    """Which cases regressed (pass rate fell by more than ``tolerance``), improved, stayed,
    were added or removed between ``old`` and ``new``.

    With samples, a small drop can be noise: ``tolerance`` (say 0.2 with 5 samples) keeps
    one unlucky sample from counting as a regression.
    """
    before = {c.id: c.pass_rate for c in old.cases}
    after = {c.id: c.pass_rate for c in new.cases}
    regressed, improved, unchanged = [], [], []
    for case_id, rate in after.items():
        if case_id not in before:
            continue
        change = CaseChange(case_id, before[case_id], rate)
        if change.delta < -tolerance:
            regressed.append(change)
        elif change.delta > tolerance:
            improved.append(change)
        else:
            unchanged.append(case_id)
    return Comparison(
        regressed=tuple(sorted(regressed, key=lambda c: (c.delta, c.id))),
        improved=tuple(sorted(improved, key=lambda c: (-c.delta, c.id))),
        unchanged=tuple(unchanged),
        added=tuple(i for i in after if i not in before),
        removed=tuple(i for i in before if i not in after),
        pass_rate_before=old.totals.pass_rate,
        pass_rate_after=new.totals.pass_rate,
    )
