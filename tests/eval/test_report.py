"""Reports: totals and pass rates, JSON round trip, and the laws of comparison."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onion.eval import CaseResult, Report, SampleResult, compare_reports, load_report, save_report, summarize

_samples = st.lists(st.builds(SampleResult, passed=st.booleans()), min_size=0, max_size=6)
_ids = st.sampled_from(["a", "b", "c", "d", "e", "f"])


@st.composite
def reports(draw: st.DrawFn) -> Report:
    ids = draw(st.lists(_ids, unique=True, max_size=6))
    cases = [
        CaseResult(id=i, samples=draw(_samples), tags=draw(st.lists(st.sampled_from(["x", "y"]), unique=True)))
        for i in ids
    ]
    return summarize(cases, target="t", seconds=0.0)


@settings(max_examples=80)
@given(reports())
def test_pass_rates_are_fractions(report: Report) -> None:
    """Law: every pass rate (case, tag, total) is in [0, 1]; totals count what cases hold."""
    assert 0.0 <= report.totals.pass_rate <= 1.0
    for case in report.cases:
        assert 0.0 <= case.pass_rate <= 1.0
        assert case.passed == (bool(case.samples) and case.passed_samples == len(case.samples))
    assert all(0.0 <= rate <= 1.0 for rate in report.by_tag.values())
    assert report.totals.samples == sum(len(c.samples) for c in report.cases)
    assert report.totals.samples_passed == sum(c.passed_samples for c in report.cases)


@settings(max_examples=80)
@given(reports(), reports(), st.sampled_from([0.0, 0.2, 0.5]))
def test_comparison_is_symmetric(old: Report, new: Report, tolerance: float) -> None:
    """Law: what regressed from old to new improved from new to old, and added/removed swap."""
    forward = compare_reports(old, new, tolerance=tolerance)
    backward = compare_reports(new, old, tolerance=tolerance)
    assert {c.id for c in forward.regressed} == {c.id for c in backward.improved}
    assert {c.id for c in forward.improved} == {c.id for c in backward.regressed}
    assert set(forward.unchanged) == set(backward.unchanged)
    assert set(forward.added) == set(backward.removed)
    assert set(forward.removed) == set(backward.added)
    # Every case lands in exactly one bucket.
    buckets = [c.id for c in forward.regressed + forward.improved] + [*forward.unchanged, *forward.added]
    assert sorted(buckets) == sorted(c.id for c in new.cases)


@settings(max_examples=50)
@given(reports())
def test_a_report_never_regresses_against_itself(report: Report) -> None:
    """Law: comparing a report with itself finds nothing changed."""
    comparison = compare_reports(report, report)
    assert not comparison.regressed and not comparison.improved
    assert not comparison.added and not comparison.removed


def test_regression_is_found_and_tolerance_absorbs_noise() -> None:
    ok, bad = SampleResult(passed=True), SampleResult(passed=False, reasons=["missing 'x'"])
    old = summarize([CaseResult("a", [ok] * 5), CaseResult("b", [ok] * 5)], target="t", seconds=1)
    new = summarize([CaseResult("a", [ok] * 4 + [bad]), CaseResult("b", [bad] * 5)], target="t", seconds=1)
    strict = compare_reports(old, new)
    assert [(c.id, c.before, c.after) for c in strict.regressed] == [("b", 1.0, 0.0), ("a", 1.0, 0.8)]
    lenient = compare_reports(old, new, tolerance=0.2)
    assert [c.id for c in lenient.regressed] == ["b"]
    assert lenient.unchanged == ("a",)


def test_min_pass_rate_decides_a_case() -> None:
    ok, bad = SampleResult(passed=True), SampleResult(passed=False)
    assert CaseResult("a", [ok, ok, bad], min_pass_rate=0.6).passed
    assert not CaseResult("a", [ok, bad, bad], min_pass_rate=0.6).passed
    assert CaseResult("a", [ok, bad]).first_failure() == ""
    assert CaseResult("a", [ok, SampleResult(passed=False, error="Timeout: no answer in time")]).first_failure() == (
        "Timeout: no answer in time"
    )


@settings(max_examples=20)
@given(reports())
def test_report_json_round_trip(report: Report) -> None:
    """Law: a saved report loads back equal."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.json"
        save_report(report, path)
        assert load_report(path) == report
