"""``onion eval`` as a command: table, JSON report, comparison, exit status, bad files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from onion.eval import load_report, main
from onion.testing.upstream import FakeUpstream

CASES = "\n".join(
    [
        '{"id": "capital", "input": "capital of France?", "expect": ["paris"], "tags": ["geo"]}',
        '{"id": "count", "input": "count to three", "regex": ["1.*2.*3"], "tags": ["fmt"]}',
    ]
)


@pytest.fixture
def cases_file(tmp_path: Path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text(CASES + "\n")
    return path


@pytest.fixture
def handler_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module whose ``make_stack`` builds a stack; ANSWERS steers its replies."""
    (tmp_path / "eval_target_mod.py").write_text(
        textwrap.dedent(
            """
            from onion import Stack
            from onion.testing import Reply, ScriptedProvider

            ANSWERS = {"capital of France?": "Paris", "count to three": "1, 2, 3"}

            def make_stack():
                provider = ScriptedProvider(lambda request, i: Reply(ANSWERS[request.messages[-1].text]))
                return Stack([], handler=provider)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "eval_target_mod:make_stack"


def test_in_process_run_prints_table_and_writes_report(cases_file, handler_module, tmp_path, capsys) -> None:
    report_path = tmp_path / "report.json"
    status = main([str(cases_file), "--handler", handler_module, "--model", "m", "--report", str(report_path)])
    out = capsys.readouterr().out
    assert status == 0
    assert "capital" in out and "PASS" in out and "2/2 cases passed" in out
    report = load_report(report_path)
    assert report.totals.pass_rate == 1.0
    assert json.loads(report_path.read_text())["cases"][0]["id"] == "capital"


def test_regression_against_a_previous_report_gates(cases_file, handler_module, tmp_path, capsys) -> None:
    import eval_target_mod

    before = tmp_path / "before.json"
    assert main([str(cases_file), "--handler", handler_module, "--model", "m", "--report", str(before)]) == 0
    eval_target_mod.ANSWERS["count to three"] = "three, two, one"
    args = [str(cases_file), "--handler", handler_module, "--model", "m", "--compare", str(before)]
    # A comparison alone reports, it does not gate (--min-pass-rate 0: no gate on cases either).
    assert main([*args, "--min-pass-rate", "0"]) == 0
    assert main([*args, "--min-pass-rate", "0", "--fail-on-regression"]) == 1
    captured = capsys.readouterr()
    assert "regressed (1): count 100% -> 0%" in captured.out
    assert captured.err.splitlines()[-1] == f"FAIL: 1 regressed since {before}: count"
    assert main([*args, "--min-pass-rate", "0.5"]) == 0
    assert main([*args, "--min-pass-rate", "0.9"]) == 1
    assert "FAIL: pass rate 50.0% is below the minimum 90.0%" in capsys.readouterr().err


def test_a_case_below_its_own_min_pass_rate_fails_the_run(cases_file, handler_module, capsys, monkeypatch) -> None:
    import eval_target_mod

    # The module outlives one test (sys.modules): its answers are set here and put back after.
    monkeypatch.setitem(eval_target_mod.ANSWERS, "count to three", "1, 2, 3")
    args = [str(cases_file), "--handler", handler_module, "--model", "m"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "PASS: all 2 cases met their min_pass_rate"
    monkeypatch.setitem(eval_target_mod.ANSWERS, "count to three", "three, two, one")
    assert main(args) == 1  # no option needed: a failing case is a failing run
    captured = capsys.readouterr()
    assert "1/2 cases passed" in captured.out
    assert captured.err.splitlines()[-1] == "FAIL: 1 case is below its min_pass_rate: count (0/1 passed, needs 100%)"
    assert main([*args, "--min-pass-rate", "0"]) == 0  # told otherwise: report only


def test_tags_select_cases(cases_file, handler_module, capsys) -> None:
    assert main([str(cases_file), "--handler", handler_module, "--model", "m", "--tag", "geo"]) == 0
    out = capsys.readouterr().out
    assert "capital" in out and "count" not in out


def test_bad_case_file_exits_2_naming_line_and_field(tmp_path, handler_module, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "ok"}\n{"input": "x", "forbid": [1]}\n')
    assert main([str(path), "--handler", handler_module, "--model", "m"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: field 'forbid[0]'" in err


def test_missing_model_exits_2(cases_file, handler_module, capsys) -> None:
    assert main([str(cases_file), "--handler", handler_module]) == 2
    assert "pass --model" in capsys.readouterr().err


@pytest.mark.parametrize("stream", [False, True])
def test_url_mode_against_a_local_http_gateway(cases_file, tmp_path, monkeypatch, capsys, stream) -> None:
    monkeypatch.setenv("GATEWAY_KEY", "sk-local")
    replies = {"capital of France?": "Paris", "count to three": "one two"}
    with FakeUpstream(reply=lambda body: replies[body["messages"][-1]["content"]], api_key="sk-local") as upstream:
        args = [str(cases_file), "--url", upstream.base_url, "--model", "gpt-4o", "--api-key-env", "GATEWAY_KEY"]
        args += ["--report", str(tmp_path / "r.json"), "--min-pass-rate", "0.5", "--progress"]
        status = main([*args, "--stream"] if stream else args)
    captured = capsys.readouterr()
    assert status == 0
    assert "1/2 cases passed; pass rate 50%" in captured.out
    assert "no match for /1.*2.*3/" in captured.out
    assert "eval [" in captured.err and "2/2 samples, 1 failed" in captured.err
    text = (tmp_path / "r.json").read_text()
    assert "sk-local" not in text and upstream.base_url not in text


def test_config_mode_runs_the_gateway_stack_in_process(cases_file, tmp_path, monkeypatch, capsys) -> None:
    """--config builds providers and stack with the gateway's own loader; the upstream is real HTTP."""
    monkeypatch.setenv("EVAL_UPSTREAM_KEY", "sk-up")
    replies = {"capital of France?": "paris", "count to three": "1 2 3"}
    with FakeUpstream(reply=lambda body: replies[body["messages"][-1]["content"]], api_key="sk-up") as upstream:
        config = tmp_path / "onion.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [[providers]]
                name = "fake"
                kind = "openai"
                base_url = "{upstream.base_url}"
                api_key = "env:EVAL_UPSTREAM_KEY"
                models = ["gpt-4o"]

                [[stack]]
                use = "exact_cache"
                """
            )
        )
        args = [str(cases_file), "--config", str(config), "--model", "gpt-4o", "--samples", "3"]
        assert main(args) == 0
        assert main(args) == 0  # the second run is a new process-level stack: no cache carried over
        sent = len(upstream.requests)
    assert "2/2 cases passed" in capsys.readouterr().out
    assert sent == 4


@pytest.mark.parametrize("stream", [False, True])
def test_url_mode_against_the_onion_gateway(cases_file, tmp_path, capsys, stream) -> None:
    """End to end: onion eval -> onion's own gateway (real HTTP) -> its stack -> fake upstream.

    By default every sample bypasses the gateway's cache (a cached answer would hide a model
    change); --use-cache lets the cache answer.
    """
    from onion.config import build_gateway, parse_config
    from onion.server import create_app
    from onion.testing.upstream import ThreadedServer

    replies = {"capital of France?": "Paris", "count to three": "1 2 3"}
    with FakeUpstream(reply=lambda body: replies[body["messages"][-1]["content"]]) as upstream:
        config = {
            "providers": [{"name": "up", "kind": "openai", "base_url": upstream.base_url, "models": ["gpt-4o"]}],
            "stack": [{"use": "exact_cache"}],
        }
        gateway = build_gateway(parse_config(config, env={}))
        with ThreadedServer(create_app(gateway), lifespan="on") as server:
            report = tmp_path / "r.json"
            args = [str(cases_file), "--url", server.url, "--model", "gpt-4o", "--report", str(report)]
            args += ["--stream"] if stream else []
            assert main(args) == 0
            assert main(args) == 0
            bypassed = len(upstream.requests)
            bypassed_by = {s.served_by for c in load_report(report).cases for s in c.samples}
            assert main([*args, "--use-cache"]) == 0  # fills the cache
            assert main([*args, "--use-cache"]) == 0  # answered by it
            cached_by = {s.served_by for c in load_report(report).cases for s in c.samples}
        total = len(upstream.requests)
    assert bypassed == 4 and bypassed_by == {"up"}
    assert total == 6 and cached_by == {"exact_cache"}
    assert "2/2 cases passed" in capsys.readouterr().out


def test_python_dash_m_onion_eval_runs(cases_file, handler_module, tmp_path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "onion.eval", str(cases_file), "--handler", handler_module, "--model", "m"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "2/2 cases passed" in done.stdout
    failing = subprocess.run(
        [*args, "--min-pass-rate", "1.0", "--tag", "nope"], capture_output=True, text=True, env=env
    )
    assert failing.returncode == 2 and "no cases to run" in failing.stderr


SAMPLED = "\n".join(
    [
        '{"id": "capital", "input": "capital of France?", "expect": ["paris"]}',
        '{"id": "flaky", "input": "count to three", "temperature": 0.7, "samples": 4, "min_pass_rate": 0.5,'
        ' "regex": ["1.*2.*3"]}',
    ]
)


def _flaky_module(tmp_path: Path, count_answers: list[str]) -> str:
    (tmp_path / "flaky_target_mod.py").write_text(
        textwrap.dedent(
            f"""
            from onion import Stack
            from onion.testing import Reply, ScriptedProvider

            COUNT = {count_answers!r}

            def make_stack():
                def reply(request, i):
                    text = request.messages[-1].text
                    return Reply("Paris" if "France" in text else COUNT[i % len(COUNT)])
                return Stack([], handler=ScriptedProvider(reply))
            """
        )
    )
    return "flaky_target_mod:make_stack"


@pytest.mark.parametrize(
    ("count_answers", "status", "last_line"),
    [
        (["1 2 3", "1 2 3", "no", "no"], 0, "PASS: all 2 cases met their min_pass_rate"),
        (
            ["1 2 3", "no", "no", "no"],
            1,
            "FAIL: 1 case is below its min_pass_rate: flaky (1/4 passed, needs 50%)",
        ),
    ],
)
def test_onion_eval_process_exit_status_follows_each_cases_min_pass_rate(
    tmp_path: Path, count_answers: list[str], status: int, last_line: str
) -> None:
    import os
    import subprocess
    import sys

    cases = tmp_path / "sampled.jsonl"
    cases.write_text(SAMPLED + "\n")
    handler = _flaky_module(tmp_path, count_answers)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "onion.cli", "eval", str(cases), "--handler", handler, "--model", "m"]
    done = subprocess.run([*args, "--no-progress"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == status, done.stdout + done.stderr
    assert (done.stdout if status == 0 else done.stderr).splitlines()[-1] == last_line
    told = subprocess.run([*args, "--min-pass-rate", "0.3"], capture_output=True, text=True, env=env, timeout=60)
    assert told.returncode == 0, told.stderr
    assert told.stdout.splitlines()[-1].startswith("PASS: pass rate ")


def test_the_onion_command_runs_eval(cases_file, handler_module, tmp_path) -> None:
    import os
    import shutil
    import subprocess

    onion = shutil.which("onion")
    assert onion is not None, "the console script is installed with the package"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [onion, "eval", str(cases_file), "--handler", handler_module, "--model", "m"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "2/2 cases passed" in done.stdout


def test_schema_case_without_the_eval_extra_exits_2_without_a_traceback(handler_module, tmp_path) -> None:
    """`onion eval` with jsonschema not installed: a case with `schema` is a bad case file
    (exit 2, file, line, field and the extra to install), not a ModuleNotFoundError."""
    import os
    import subprocess
    import sys

    path = tmp_path / "schema.jsonl"
    path.write_text('{"input": "ok"}\n{"input": "a city as JSON", "schema": {"type": "object"}}\n')
    # jsonschema is hidden before onion is imported, exactly as if the extra were absent.
    hide = "import sys, runpy; sys.modules['jsonschema'] = None; runpy.run_module('onion.cli', run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", hide, "eval", str(path), "--handler", handler_module, "--model", "m"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{path}:2: field 'schema': needs pip install 'onion-llm[eval]'" in done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
