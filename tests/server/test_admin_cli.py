"""The server-host commands, run as subprocesses against a live server: init, users, tokens, CA, reload."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.server.conftest import BACKENDS, new_public_key
from tests.support.live_server import DEFAULT_POLICY

pytestmark = pytest.mark.slow


def sshca(*args, env=None, check=False):
    return subprocess.run([sys.executable, "-m", "sshca", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=check)


@pytest.fixture(params=BACKENDS)
def backend_live_server(request, live_server_factory):
    """A live server on SQLite, then on PostgreSQL."""
    if request.param == "sqlite":
        return live_server_factory()
    cluster = request.getfixturevalue("postgres_cluster")
    return live_server_factory(database_url=cluster.url(cluster.create_database()))


def wait_for_health(server, key: str, value: str, timeout: float = 30.0) -> None:
    """Wait until /healthz returns ``key`` == ``value`` on several requests in a row."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < 4 * server.workers:
        assert time.monotonic() < deadline, f"/healthz never showed {key}={value}:\n{server.log_tail()}"
        streak = streak + 1 if requests.get(server.url + "/healthz", timeout=timeout).json().get(key) == value else 0
        time.sleep(0.05)
    time.sleep(0.5)


def approved_request(server, hosts=("db1.prod.example.com",)) -> int:
    created = server.post("/v1/requests", user="alice", json={
        "hosts": list(hosts), "login": "deploy", "duration": "1h", "reason": "maintenance"})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    for approver in ("bob", "carol"):
        assert server.post(f"/v1/requests/{request_id}/approve", user=approver, json={}).status_code == 200
    return request_id


def test_init_creates_data_dir_and_refuses_overwrite(tmp_path):
    directory = tmp_path / "ca-home"

    result = sshca("admin", "init", str(directory))

    assert result.returncode == 0, result.stderr
    for name in ("sshca.toml", "policy.toml", "inventory.toml", "sshca.db", "session.key", "ca/ca.key", "ca/ca.key.pub",
                 "ca/passphrase"):
        assert (directory / name).exists(), name
    for name in ("ca/ca.key", "ca/passphrase", "session.key", "sshca.db"):
        assert (directory / name).stat().st_mode & 0o077 == 0, name
    key_before = (directory / "ca" / "ca.key").read_bytes()
    assert b"PRIVATE KEY" in key_before

    again = sshca("admin", "init", str(directory))

    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert (directory / "ca" / "ca.key").read_bytes() == key_before
    config = directory / "sshca.toml"
    current = sshca("db", "current", "--config", str(config))
    assert current.stdout.strip() == "0001"
    assert sshca("db", "upgrade", env={"SSHCA_CONFIG": str(config)}).returncode == 0
    assert sshca("admin", "policy", "check", "--config", str(config)).returncode == 0


def test_commands_without_config_are_usage_errors(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "SSHCA_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "sshca", "admin", "user", "add", "x"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "SSHCA_CONFIG" in result.stderr


def test_token_create_prints_only_token(live_server):
    result = live_server.admin("token", "create", "alice", "--expires", "90d")

    lines = result.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    assert token.startswith("sshca_")
    assert len(token) > 40
    response = live_server.get("/v1/requests", token=token)
    assert response.status_code == 200

    bad = live_server.admin("token", "create", "alice", "--expires", "0", check=False)
    assert bad.returncode == 1
    assert "invalid expires '0'" in bad.stderr
    unknown = live_server.admin("token", "create", "nobody", check=False)
    assert unknown.returncode == 1
    assert "nobody" in unknown.stderr

    listed = live_server.admin("token", "list", "alice").stdout
    token_id = listed.split("\t")[0]
    live_server.admin("token", "revoke", token_id)
    assert live_server.get("/v1/requests", token=token).status_code == 401


def test_token_list_shows_expired_tokens(live_server):
    live_server.admin("token", "create", "dave", "--expires", "1s")
    time.sleep(1.5)

    listed = live_server.admin("token", "list", "dave").stdout.splitlines()

    assert len(listed) == 1
    assert listed[0].split("\t")[2] == "expired"


def test_user_commands_change_access(live_server):
    live_server.admin("user", "add", "ivy", "--group", "sre", "--group", "oncall")
    token = live_server.admin("token", "create", "ivy").stdout.strip()
    body = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "x"}
    assert live_server.post("/v1/requests", token=token, json=body).status_code == 201

    duplicate = live_server.admin("user", "add", "ivy", check=False)
    assert duplicate.returncode == 1
    invalid = live_server.admin("user", "add", "bad name", check=False)
    assert invalid.returncode == 1
    assert "bad name" in invalid.stderr

    live_server.admin("user", "set-groups", "ivy", "oncall")
    assert live_server.post("/v1/requests", token=token, json=body).status_code == 403
    live_server.admin("group", "add", "sre", "ivy")
    assert live_server.post("/v1/requests", token=token, json=body).status_code == 201
    live_server.admin("group", "remove", "sre", "ivy")
    assert live_server.post("/v1/requests", token=token, json=body).status_code == 403

    live_server.admin("user", "disable", "ivy")
    response = live_server.get("/v1/requests", token=token)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "user_disabled"
    live_server.admin("user", "enable", "ivy")
    assert live_server.get("/v1/requests", token=token).status_code == 200

    listing = live_server.admin("user", "list", "--json").stdout
    assert '"name": "ivy"' in listing


def test_group_removal_after_approval_refuses_certificate(backend_live_server):
    live_server = backend_live_server
    request_id = approved_request(live_server)

    live_server.admin("user", "set-groups", "alice")
    response = live_server.post(f"/v1/requests/{request_id}/certificate", user="alice",
                                json={"public_key": new_public_key()})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_a_requester"
    events = live_server.get("/v1/audit/events?action=certificate.refused", user="erin").json()["events"]
    assert [event["request_id"] for event in events] == [request_id]


def test_policy_reload_applies_without_restart(live_server):
    body = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "3h", "reason": "x"}
    assert live_server.post("/v1/requests", user="alice", json=body).status_code == 201

    live_server.write_policy(DEFAULT_POLICY.replace('max_duration = "4h"', 'max_duration = "2h"'))

    response = live_server.post("/v1/requests", user="alice", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "duration_too_long"
    events = live_server.get("/v1/audit/events?action=policy.loaded", user="erin").json()["events"]
    hashes = {event["details"]["policy_sha256"] for event in events}
    assert len(hashes) == 2


def test_invalid_policy_reload_refused_and_old_policy_kept(live_server):
    (live_server.data_dir / "policy.toml").write_text(DEFAULT_POLICY.replace("approvals = 2", "approvals = 0"))

    result = live_server.admin("policy", "reload", check=False)

    assert result.returncode == 1
    assert "policy.toml" in result.stderr
    assert "rules[0] (sre-prod-db)" in result.stderr
    assert "'approvals'" in result.stderr
    body = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "x"}
    created = live_server.post("/v1/requests", user="alice", json=body)
    assert created.json()["approvals_required"] == 2


def test_ca_rotate_and_retire(backend_live_server):
    live_server = backend_live_server
    old_keys = live_server.get("/v1/ca").json()["keys"]
    assert len(old_keys) == 1
    old_fingerprint = old_keys[0]["fingerprint"]

    rotated = live_server.admin("ca", "rotate")
    new_fingerprint = rotated.stdout.strip()
    wait_for_health(live_server, "ca_fingerprint", new_fingerprint)

    keys = live_server.get("/v1/ca").json()["keys"]
    assert [(key["fingerprint"], key["signing"]) for key in keys] == [(new_fingerprint, True), (old_fingerprint, False)]
    request_id = approved_request(live_server)
    issued = live_server.post(f"/v1/requests/{request_id}/certificate", user="alice",
                              json={"public_key": new_public_key()}).json()
    assert issued["ca_fingerprint"] == new_fingerprint

    refused = live_server.admin("ca", "retire", new_fingerprint, check=False)
    assert refused.returncode == 1
    assert "rotate first" in refused.stderr
    live_server.admin("ca", "retire", old_fingerprint)
    keys = live_server.get("/v1/ca").json()["keys"]
    assert [key["fingerprint"] for key in keys] == [new_fingerprint]
    unknown = live_server.admin("ca", "retire", "SHA256:nope", check=False)
    assert unknown.returncode == 1

    # Revoking a serial signed by the new key still needs a KRL that names it.
    revoke = live_server.post(f"/v1/requests/{request_id}/revoke", user="alice", json={"reason": "done"})
    assert revoke.status_code == 200
    assert live_server.get("/v1/krl").content.startswith(b"SSHKRL")


def test_sighup_with_invalid_policy_keeps_serving(live_server):
    (live_server.data_dir / "policy.toml").write_text("bogus [[[\n")

    os.kill(live_server.process.pid, signal.SIGHUP)
    time.sleep(3)

    assert live_server.process.poll() is None, live_server.log_tail()
    assert "SIGHUP ignored" in live_server.log_tail(200)
    body = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "x"}
    created = live_server.post("/v1/requests", user="alice", json=body)
    assert created.status_code == 201
    assert created.json()["approvals_required"] == 2
