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
    first, second = done.stdout.splitlines()
    assert "[EMAIL]" in first and "a@example.com" not in done.stdout
    assert first.endswith("[simulated]") and second.endswith("[exact_cache]")
