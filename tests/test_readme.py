"""README.md keeps its promises: two set-up commands, CI runs the second, the example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", _section("Set up"), flags=re.S)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    serve, test = commands
    assert serve.endswith("onion serve")
    assert test.endswith("python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()[ci.splitlines().index("set +e") + 1]


def test_the_stack_example_runs_as_printed(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)\n```", _section("A stack in code"), flags=re.S)
    assert code is not None
    assert len(code.group(1).splitlines()) <= 16
    path = tmp_path / "example.py"
    path.write_text(code.group(1), encoding="utf-8")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stdout.splitlines() if "[warning" in line]
    assert len(warnings) == 1 and " retrying " in warnings[0] and "upstream_status=503" in warnings[0]
    first, second = [line for line in done.stdout.splitlines() if line not in warnings]
    assert "[EMAIL]" in first and "a@example.com" not in done.stdout
    assert first.endswith("[simulated]") and second.endswith("[exact_cache]")


def test_the_onion_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    """The section's example is a test file: run it with pytest, as a user would, on
    both anyio backends (the async test needs anyio's pytest plugin in auto mode)."""
    blocks = re.findall(r"```python\n(.*?)\n```", _section("Prove your stack's ordering: `onion.testing`"), flags=re.S)
    assert blocks
    for i, code in enumerate(blocks):
        (tmp_path / f"test_readme_example_{i}.py").write_text(code + "\n", encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\nanyio_mode = auto\n", encoding="utf-8")
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n@pytest.fixture(params=['asyncio', 'trio'])\n"
        "def anyio_backend(request):\n    return request.param\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = re.search(r"collected (\d+) items?", done.stdout)
    passed = re.search(r"(\d+) passed", done.stdout)
    assert collected is not None and int(collected.group(1)) > 0, done.stdout
    # Every collected test ran and passed (one per backend at least): none skipped.
    assert passed is not None and int(passed.group(1)) == int(collected.group(1)) >= 2, done.stdout
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", done.stdout), done.stdout
