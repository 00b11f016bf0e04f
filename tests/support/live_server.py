"""A real sshca server for tests: ``sshca serve`` (gunicorn) on 127.0.0.1 in a temporary data dir.

Usage::

    def test_something(live_server):          # default policy, inventory and users
        response = live_server.post("/v1/requests", user="alice", json={...})

    def test_other(live_server_factory):
        server = live_server_factory(policy=POLICY, inventory=INVENTORY,
                                     users={"ann": ["sre"], "audra": {"auditor": True}})
        token = server.token("ann")
        server.admin("user", "set-groups", "ann")       # runs `sshca admin ...`

For a module-scoped server, build one with ``LiveServer(directory, ...)`` and
use it as a context manager.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from server import admin as admin_ops
from server.config import load_config

DEFAULT_INVENTORY = """\
[[hosts]]
name = "db1.prod.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "db2.prod.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "web1.prod.example.com"
groups = ["prod-web"]
logins = ["deploy"]
"""

DEFAULT_POLICY = """\
[defaults]
max_duration = "8h"
request_ttl = "24h"
clock_skew = "60s"

[[rules]]
name = "sre-prod-db"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["deploy", "postgres"]
max_duration = "4h"
approvals = 2
approvers = ["group:dba-leads"]

[[rules]]
name = "sre-prod-web"
requesters = ["group:sre"]
hosts = ["group:prod-web"]
logins = ["deploy"]
max_duration = "2h"
approvals = 1
approvers = ["group:sre-leads"]
"""

# name -> groups, or a dict with "groups", "admin", "auditor".
DEFAULT_USERS = {
    "alice": ["sre"],
    "dave": ["sre"],
    "bob": ["dba-leads", "sre-leads"],
    "carol": ["dba-leads"],
    "erin": {"groups": [], "auditor": True},
    "frank": {"groups": [], "admin": True},
}

START_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
STOP_TIMEOUT = 15.0


def _stop_with_parent() -> None:
    """Ask Linux to send SIGTERM to the server when the test process dies, so a killed run leaves no server."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still ends the server in a normal teardown


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A data directory plus a running ``sshca serve``; ``url``, ``data_dir``, ``token(user)``, ``admin(*args)``."""

    def __init__(self, directory, *, policy: str | None = None, inventory: str | None = None,
                 users=None, database_url: str | None = None, workers: int = 2, threads: int = 1,
                 env: dict | None = None):
        self.data_dir = Path(directory)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "policy.toml").write_text(DEFAULT_POLICY if policy is None else policy)
        (self.data_dir / "inventory.toml").write_text(DEFAULT_INVENTORY if inventory is None else inventory)
        self.config_path = admin_ops.init_data_dir(self.data_dir, database_url=database_url)
        self.config = load_config(self.config_path, environ={})
        self.workers = workers
        self.threads = threads
        self.extra_env = dict(env or {})
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "server.log"
        self._tokens: dict[str, str] = {}
        self.http = requests.Session()
        for name, spec in (DEFAULT_USERS if users is None else users).items():
            self.add_user(name, spec)

    # -- setup, in process (fast) -------------------------------------------------

    def add_user(self, name: str, spec=()) -> None:
        """Add a user; ``spec`` is a list of groups or {"groups": [...], "admin": bool, "auditor": bool}."""
        if isinstance(spec, dict):
            admin_ops.add_user(self.config, name, groups=spec.get("groups", ()),
                               admin=spec.get("admin", False), auditor=spec.get("auditor", False))
        else:
            admin_ops.add_user(self.config, name, groups=spec)

    def token(self, user: str) -> str:
        """Return an API token of ``user``, created on first use."""
        if user not in self._tokens:
            self._tokens[user] = admin_ops.create_token(self.config, user)[1]
        return self._tokens[user]

    @property
    def env(self) -> dict:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["SSHCA_CONFIG"] = str(self.config_path)
        return env

    def admin(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``sshca admin ARGS...`` against this data directory; raise on failure when ``check``."""
        result = subprocess.run(
            [sys.executable, "-m", "sshca", "admin", *args], env=self.env, input=input,
            capture_output=True, text=True, timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"sshca admin {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    # -- the server process --------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "the server is not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.port = free_port()
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sshca", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers), "--threads", str(self.threads)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        finally:
            log.close()
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshca serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                # Not listening yet, or the workers are still booting.
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"sshca serve did not answer /healthz within {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.http.close()
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def reload(self) -> None:
        """Run ``sshca admin policy reload`` and wait until every worker serves the new files."""
        policy, inventory = admin_ops.check_policy(self.config)
        self.admin("policy", "reload")
        wanted = (policy.sha256, inventory.sha256)
        deadline = time.monotonic() + START_TIMEOUT
        streak = 0
        while streak < 4 * self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not reload within {START_TIMEOUT}s:\n{self.log_tail()}")
            # While gunicorn replaces its workers, requests wait in the listen queue.
            body = requests.get(self.url + "/healthz", timeout=START_TIMEOUT).json()
            streak = streak + 1 if (body.get("policy_sha256"), body.get("inventory_sha256")) == wanted else 0
            time.sleep(0.05)
        # Old workers finish their requests and exit; give them a moment.
        time.sleep(0.5)

    def write_policy(self, text: str, *, reload: bool = True) -> None:
        (self.data_dir / "policy.toml").write_text(text)
        if reload and self.process is not None:
            self.reload()

    def write_inventory(self, text: str, *, reload: bool = True) -> None:
        (self.data_dir / "inventory.toml").write_text(text)
        if reload and self.process is not None:
            self.reload()

    # -- HTTP helpers -----------------------------------------------------------------

    def request(self, method: str, path: str, *, user: str | None = None, token: str | None = None, **kwargs):
        """Send an HTTP request; ``user`` adds that user's bearer token."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, self.url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs):
        return self.request("POST", path, **kwargs)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@pytest.fixture
def live_server_factory(tmp_path):
    """Return make(**LiveServer options) -> a started LiveServer; all are stopped at teardown."""
    servers = []

    def make(**options) -> LiveServer:
        server = LiveServer(tmp_path / f"sshca-{len(servers)}", **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(live_server_factory) -> LiveServer:
    """A started server with DEFAULT_POLICY, DEFAULT_INVENTORY and DEFAULT_USERS on SQLite."""
    return live_server_factory()
