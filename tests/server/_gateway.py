"""``onion serve`` as a subprocess for the tests of its limits (a plain module: the test
files import it by path, as ``--import-mode=importlib`` gives them no package)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


class Gateway:
    """A running ``onion serve``; ``output`` collects what it prints."""

    def __init__(self, config: Path | None, *, open_files: int | None = None, args: tuple[str, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        command = [sys.executable, "-m", "onion.cli", "serve", "--port", "0", *args]
        if config is not None:
            command += ["--config", str(config)]

        def limit_files() -> None:
            if open_files is not None:
                hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=limit_files
        )
        self.output: list[str] = []
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("onion serve did not start:\n" + "\n".join(self.output))
            self.output.append(line.rstrip("\n"))
            if line.startswith("try: curl"):
                break
        self.url = next(x for x in self.output if x.startswith("listening on ")).split()[2]
        self.port = int(self.url.rsplit(":", 1)[1])
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        for _ in range(200):
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.output)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=5)
