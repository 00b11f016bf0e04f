"""Helpers for running the ``sshca`` client as a subprocess with its own HOME."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.live_server import LiveServer

# The console script installed beside the interpreter running the tests.
SSHCA = str(Path(sys.executable).parent / "sshca")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs the ``sshca`` console script with HOME and XDG_CONFIG_HOME in a temporary directory."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SSHCA_", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "XDG_"))
        }
        self.env["HOME"] = str(home)
        self.env["XDG_CONFIG_HOME"] = str(home / ".config")

    def run(self, *args: str, input: str | None = None, env: dict | None = None,
            timeout: float = 60) -> Result:
        completed = subprocess.run(
            [SSHCA, *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )
        return Result(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture
def cli(tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


class Agent:
    """A real ``ssh-agent -d`` on a private socket; its debug log shows each key's lifetime."""

    def __init__(self, directory: Path):
        self.socket = directory / "agent.sock"
        self._log_path = directory / "agent.log"
        self._log = open(self._log_path, "wb")
        self._process = subprocess.Popen(
            ["ssh-agent", "-d", "-a", str(self.socket)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self._process.poll() is not None:
                self.stop()
                raise RuntimeError(f"ssh-agent did not start; log: {self._log_path.read_text()}")
            time.sleep(0.05)

    @property
    def env(self) -> dict:
        return {"SSH_AUTH_SOCK": str(self.socket)}

    def lifetimes(self) -> dict[str, int]:
        """Return {key type: lifetime in seconds} of every identity added so far."""
        text = self._log_path.read_text(errors="replace")
        return {
            match.group(1): int(match.group(2))
            for match in re.finditer(r"process_add_identity: add (\S+) \S+ .*\(life: (\d+)\)", text)
        }

    def listed(self) -> str:
        """Return the output of ``ssh-add -l`` against this agent ("" when it has no keys)."""
        result = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True,
                                env={**os.environ, **self.env})
        return result.stdout if result.returncode == 0 else ""

    def stop(self):
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def agent():
    # A short directory: a UNIX socket path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="sshca-agent-"))
    agent = Agent(directory)
    try:
        yield agent
    finally:
        agent.stop()
        shutil.rmtree(directory, ignore_errors=True)


class PatientLiveServer(LiveServer):
    """LiveServer that keeps polling /healthz when a read times out.

    NOTE: LiveServer._wait_healthy retries only on connection errors, but
    gunicorn accepts connections before its workers have booted, so on a
    busy machine the first /healthz read can time out and abort the start.
    """

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                return super()._wait_healthy()
            except requests.Timeout:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
