"""Config files: every error names its table and field; env: secrets; the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onion import ConfigError
from onion.cli import main
from onion.config import DEFAULT_STACK, ApiKey, build_gateway, default_config, load_config, parse_config
from onion.providers import OpenAIProvider, SimulatedProvider

SIM = {"name": "sim", "kind": "simulated", "models": ["m"]}

ERRORS = [
    ({"providers": [{"name": "a", "kind": "opnai"}]}, "providers[0]: field 'kind'"),
    ({"providers": [{"kind": "openai"}]}, "providers[0]: field 'name': required"),
    ({"providers": [{"name": "a", "kind": "openai", "models": [1]}]}, "providers[0]: field 'models[0]'"),
    ({"providers": [{"name": "a", "kind": "simulated", "base_url": "http://x"}]}, "field 'base_url': does not apply"),
    ({"providers": [{"name": "a", "kind": "openai", "ttft": 1.0}]}, "field 'ttft': does not apply"),
    (
        {"providers": [{"name": "a", "kind": "anthropic", "continue_final_message": True}]},
        "field 'continue_final_message': does not apply",
    ),
    ({"providers": [{"name": "a", "kind": "openai", "base_url": "ftp://x"}]}, "field 'base_url': must start"),
    ({"providers": [{"name": "a", "kind": "openai", "api_key": "env:MISSING_VAR"}]}, "MISSING_VAR is not set"),
    ({"providers": [SIM, SIM]}, "providers[1]: field 'name': 'sim' is used twice"),
    ({"providers": []}, "at least one [[providers]]"),
    ({"server": {"port": "x"}, "providers": [SIM]}, "server: field 'port'"),
    ({"server": {"port": 70000}, "providers": [SIM]}, "server: field 'port': must be 1-65535"),
    ({"server": {"prot": 1}, "providers": [SIM]}, "server: field 'prot': no such setting"),
    ({"server": {"api_keys": ["env:NOPE"]}, "providers": [SIM]}, "server: field 'api_keys[0]'"),
    ({"server": {"api_keys": ["k", {"name": "b", "key": "k"}]}, "providers": [SIM]}, "'api_keys[1]': the same key"),
    ({"servers": {}, "providers": [SIM]}, "field 'servers': no such setting"),
    ({"providers": [SIM], "stack": [{"use_": "retry"}]}, "stack[0]: field 'use'"),
    ({"providers": [{**SIM, "error_rates": {"200": 0.5}}]}, "field 'error_rates'"),
]


@pytest.mark.parametrize(("data", "says"), ERRORS)
def test_errors_name_the_table_and_field(data: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, origin="gw.toml", env={})
    assert str(caught.value).startswith("gw.toml: ")
    assert says in str(caught.value)


def test_stack_errors_name_the_layer_and_field() -> None:
    config = parse_config({"providers": [SIM], "stack": [{"use": "retry", "attempts": "three"}]}, origin="gw.toml")
    with pytest.raises(ConfigError) as caught:
        build_gateway(config)
    assert "stack[0] (use = 'retry'): field 'attempts'" in str(caught.value)


def test_env_secrets_are_read_and_never_shown() -> None:
    env = {"UP_KEY": "sk-from-env", "ALICE": "alice-key", "BOB": "bob-key", "BASE": "http://10.1.1.1:9/v1"}
    config = parse_config(
        {
            "server": {"api_keys": ["env:ALICE", "literal-key", {"name": "bob", "key": "env:BOB"}]},
            "providers": [{"name": "up", "kind": "openai", "api_key": "env:UP_KEY", "base_url": "env:BASE"}],
        },
        env=env,
    )
    assert config.providers[0].api_key == "sk-from-env"
    assert config.providers[0].base_url == "http://10.1.1.1:9/v1"
    keys = [ApiKey("ALICE", "alice-key"), ApiKey("key-2", "literal-key"), ApiKey("bob", "bob-key")]
    assert config.server.api_keys == keys
    assert "sk-from-env" not in repr(config) and "alice-key" not in repr(config)
    gateway = build_gateway(config)
    assert gateway.api_keys == {"alice-key": "ALICE", "literal-key": "key-2", "bob-key": "bob"}
    assert "sk-from-env" not in gateway.describe_upstreams()


def test_provider_kinds_and_parameters_reach_the_providers() -> None:
    config = parse_config(
        {
            "providers": [
                {"name": "sim", "kind": "simulated", "models": ["a"], "ttft": 0.0, "error_rates": {"429": 0.25}},
                {"name": "up", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "read_timeout": 3.5},
            ]
        }
    )
    gateway = build_gateway(config)
    sim, up = gateway.providers
    assert isinstance(sim, SimulatedProvider) and sim.ttft == 0.0 and sim.error_rates == {429: 0.25}
    assert isinstance(up, OpenAIProvider) and up.client.timeout.read == 3.5 and up.models == ()
    assert up.continue_final_message is False


def test_continue_final_message_is_accepted_for_openai_upstreams() -> None:
    provider = {"name": "vllm", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "continue_final_message": True}
    (up,) = build_gateway(parse_config({"providers": [provider]})).providers
    assert isinstance(up, OpenAIProvider) and up.continue_final_message is True


def test_default_config_is_simulated_or_the_openai_upstream_from_env() -> None:
    simulated = default_config({})
    assert [p.kind for p in simulated.providers] == ["simulated"]
    assert simulated.stack == DEFAULT_STACK and "simulated" in simulated.source
    build_gateway(simulated)
    real = default_config({"OPENAI_API_KEY": "sk-x"})
    assert real.providers[0].kind == "openai" and real.providers[0].base_url == "https://api.openai.com/v1"
    assert real.providers[0].api_key == "sk-x"
    local = default_config({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert local.providers[0].base_url == "http://127.0.0.1:9/v1" and local.providers[0].api_key is None


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


GOOD = """
[server]
port = 8123
api_keys = ["env:ONION_TEST_KEY"]

[[providers]]
name = "primary"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"
models = ["gpt-4o", "gpt-4o-mini"]

[[providers]]
name = "sim"
kind = "simulated"
models = ["sim-small"]

[[stack]]
use = "timeout"
seconds = 30
[[stack]]
use = "retry"
attempts = 2
"""


def test_onion_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    monkeypatch.setenv("ONION_TEST_KEY", "k")
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "primary (openai at http://127.0.0.1:9001/v1): gpt-4o, gpt-4o-mini" in out
    assert "1. timeout" in out and "2. retry" in out and "handler: router" in out
    assert "laws:" in out.lower()
    monkeypatch.delenv("ONION_TEST_KEY")
    assert main(["check", str(good)]) == 1
    assert "server: field 'api_keys[0]': environment variable ONION_TEST_KEY is not set" in capsys.readouterr().err


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "servers": {},
        "server": {"port": 70000, "prot": 1, "api_keys": ["env:KEY_A", "env:KEY_B"]},
        "providers": [
            {"name": "up", "kind": "openai", "api_key": "env:UP_KEY", "base_url": "env:UP_BASE", "ttft": 1.0},
            {"name": "sim", "kind": "simulated", "models": [1], "seed": "x"},
        ],
        "stack": [{"use_": "retry"}, 5],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, origin="gw.toml", env={})
    found = [(p.table, p.field) for p in caught.value.problems]
    assert found == [
        ("config", "servers"),
        ("server", "prot"),
        ("server", "api_keys[0]"),
        ("server", "api_keys[1]"),
        ("server", "port"),
        ("providers[0]", "ttft"),
        ("providers[0]", "api_key"),
        ("providers[0]", "base_url"),
        ("providers[1]", "models[0]"),
        ("providers[1]", "seed"),
        ("stack[0]", "use"),
        ("stack[1]", None),
    ]
    lines = str(caught.value).splitlines()
    assert lines == [str(p) for p in caught.value.problems] and all(line.startswith("gw.toml: ") for line in lines)
    for name in ("KEY_A", "KEY_B", "UP_KEY", "UP_BASE"):
        assert f"environment variable {name} is not set" in str(caught.value)


def test_a_field_dropped_as_bad_is_not_reported_again_as_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": [{"name": 3, "kind": "opnai"}]}, origin="gw.toml", env={})
    assert [(p.table, p.field) for p in caught.value.problems] == [("providers[0]", "name"), ("providers[0]", "kind")]


def test_build_gateway_reports_every_layer_and_ordering_problem() -> None:
    bad_tables = [{"use": "retry", "attempts": "three", "bogus": 1}, {"use": "no_such_layer"}]
    config = parse_config({"providers": [SIM], "stack": bad_tables}, origin="gw.toml")
    with pytest.raises(ConfigError) as caught:
        build_gateway(config)
    assert [(p.table, p.field) for p in caught.value.problems] == [
        ("stack[0]", "attempts"),
        ("stack[0]", "bogus"),
        ("stack[1]", "use"),
    ]
    assert "gw.toml: stack[0] (use = 'retry'): field 'bogus': no such parameter" in str(caught.value)
    misordered = [{"use": "retry"}, {"use": "fallback", "models": ["a"]}, {"use": "timeout", "seconds": 5}]
    with pytest.raises(ConfigError) as caught:
        build_gateway(parse_config({"providers": [SIM], "stack": misordered}, origin="gw.toml"))
    # A timeout inside retry/fallback is an attempt timeout (issue 17): only the
    # fallback inside retry is a problem.
    assert [p.table for p in caught.value.problems] == ["stack[1]"]
    assert "gw.toml: layer 'fallback' (position 2) must sit outside 'retry' (position 1)" in str(caught.value)


BROKEN = """
[server]
api_keys = ["env:ONION_NO_KEY_A", "env:ONION_NO_KEY_B"]

[[providers]]
name = "up"
kind = "openai"
api_key = "env:ONION_NO_UP_KEY"
base_url = "env:ONION_NO_UP_BASE"

[[stack]]
use = "retry"
[[stack]]
use = "fallback"
models = ["a"]
[[stack]]
use = "timeout"
seconds = 5
"""


def _run_check(*args: str, unset: tuple[str, ...] = ("ONION_NO_",)) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "onion.cli", "check", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_the_readme_config_names_all_its_variables_in_one_run(tmp_path: Path) -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    start = readme.index("A config file declares the server")
    example = re.search(r"```toml\n(.*?)\n```", readme[start:], flags=re.S)
    assert example is not None
    config = tmp_path / "readme.toml"
    config.write_text(example.group(1))
    done = _run_check(str(config), unset=("ONION_KEY_", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"))
    assert done.returncode == 1
    unset = re.findall(r"environment variable (\w+) is not set", done.stderr)
    assert unset == ["ONION_KEY_ALICE", "ONION_KEY_BOB", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"]


def test_onion_check_process_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    done = _run_check(str(broken))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    for name in ("ONION_NO_KEY_A", "ONION_NO_KEY_B", "ONION_NO_UP_KEY", "ONION_NO_UP_BASE"):
        assert sum(f"environment variable {name} is not set" in line for line in lines) == 1
    assert sum("must sit outside" in line for line in lines) == 1  # timeout inside retry is fine now
    assert lines[-1] == f"onion check: {broken}: 5 problems"
    done = _run_check("--json", str(broken))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and len(report["problems"]) == 5
    assert report["problems"][0] == {
        "table": "server",
        "field": "api_keys[0]",
        "message": f"{broken}: server: field 'api_keys[0]': environment variable ONION_NO_KEY_A is not set",
    }
    assert {p["table"] for p in report["problems"]} == {"server", "providers[0]", "stack[1]"}


def test_onion_check_process_passes_a_good_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD.replace('api_keys = ["env:ONION_TEST_KEY"]', 'api_keys = ["literal"]'))
    done = _run_check("--json", str(good))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["problems"] == [] and report["stack"] == ["timeout", "retry"]
    assert _run_check(str(good)).returncode == 0
    missing = _run_check(str(tmp_path / "missing.toml"))
    assert missing.returncode == 1 and "missing.toml: no such file" in missing.stderr


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "kind", "models", "base_url", "ttft", "seed", "junk"]), st.integers()))
def test_no_provider_table_crashes_validation(table: dict) -> None:
    # Whatever the table holds, the loader answers with a config or a ConfigError, never another exception.
    try:
        parse_config({"providers": [table]}, env={})
    except ConfigError as error:
        assert "providers[0]" in str(error)


def test_serve_holds_blas_to_one_thread_unless_the_operator_chose() -> None:
    from onion.cli import _single_threaded_blas

    environ: dict[str, str] = {}
    _single_threaded_blas(environ)
    assert environ == {"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    chosen = {"OMP_NUM_THREADS": "4"}
    _single_threaded_blas(chosen)
    assert chosen == {"OMP_NUM_THREADS": "4"}
