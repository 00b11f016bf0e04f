"""A host set up by hostconfig against a running sshca server: CA keys from /v1/ca,
a real certificate from an approved request, and revocation through /v1/krl."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.hostconfig.conftest import make_identity, run_cli, write_main_config

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

INVENTORY = """\
[[hosts]]
name = "db1"
groups = ["prod-db"]
logins = ["root"]

[[hosts]]
name = "db2"
groups = ["prod-db"]
logins = ["root"]
"""

POLICY = """\
[defaults]
max_duration = "8h"
request_ttl = "24h"
clock_skew = "60s"

[[rules]]
name = "sre-prod-db"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["root"]
max_duration = "4h"
approvals = 1
approvers = ["group:dba-leads"]
"""

USERS = {"alice": ["sre"], "bob": ["dba-leads"]}


def run_sync(script) -> subprocess.CompletedProcess:
    return subprocess.run([str(script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"]})


def issue_certificate(server, identity, hosts) -> int:
    """Request, approve and fetch a certificate for ``identity``; return the request id."""
    created = server.post("/v1/requests", user="alice", json={
        "hosts": hosts, "login": "root", "duration": "1h", "reason": "hostconfig test"})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]

    approved = server.post(f"/v1/requests/{request_id}/approve", user="bob",
                           json={"comment": "ok"})
    assert approved.status_code == 200, approved.text

    issued = server.post(f"/v1/requests/{request_id}/certificate", user="alice",
                         json={"public_key": identity.public_line})
    assert issued.status_code in (200, 201), issued.text
    identity.cert_path.write_text(issued.json()["certificate"] + "\n")
    return request_id


def test_revoke_reaches_sshd(tmp_path, secure_dir, live_server_factory, sshd_factory):
    server = live_server_factory(policy=POLICY, inventory=INVENTORY, users=USERS, workers=1)
    secure_dir.chmod(0o755)
    config = write_main_config(secure_dir)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY)
    out = tmp_path / "out"

    # No --ca-keys: render reads the trusted CA keys from the server.
    rendered = run_cli("render", "db1", "--inventory", inventory, "--server", server.url,
                       "--prefix", secure_dir, "--out", out)
    assert rendered.exit_code == 0, rendered.output
    installed = run_cli("install", out, "--sshd-config", config)
    assert installed.exit_code == 0, installed.output
    served_keys = [key["public_key"] for key in server.get("/v1/ca").json()["keys"]]
    assert (secure_dir / "etc/ssh/sshca/user_ca.pub").read_text().split("\n")[:-1] == [
        " ".join(key.split()[:3]) for key in served_keys]

    sshd = sshd_factory(secure_dir, config_path=config)
    script = secure_dir / "usr/local/sbin/sshca-krl-sync"
    krl = secure_dir / "etc/ssh/sshca/revoked.krl"
    revoked = make_identity(tmp_path, "revoked")
    revoked_request = issue_certificate(server, revoked, ["db1"])
    kept = make_identity(tmp_path, "kept")
    issue_certificate(server, kept, ["group:prod-db"])

    assert sshd.ssh(revoked.key_path, revoked.cert_path, login="root").returncode == 0
    first = run_sync(script)
    assert first.returncode == 0, first.stderr
    before_revoke = krl.read_bytes()

    revoke = server.post(f"/v1/requests/{revoked_request}/revoke", user="alice",
                         json={"reason": "done early"})
    assert revoke.status_code == 200, revoke.text
    synced = run_sync(script)

    assert synced.returncode == 0, synced.stderr
    assert "installed the new KRL" in synced.stderr
    assert krl.read_bytes() != before_revoke
    assert krl.read_bytes() == server.get("/v1/krl").content
    refused = sshd.ssh(revoked.key_path, revoked.cert_path, login="root")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr
    assert sshd.ssh(kept.key_path, kept.cert_path, login="root").returncode == 0

    after_revoke = krl.read_bytes()
    server.stop()
    offline = run_sync(script)

    assert offline.returncode == 1
    assert "failed; keeping the current KRL" in offline.stderr
    assert krl.read_bytes() == after_revoke
    assert sshd.ssh(revoked.key_path, revoked.cert_path, login="root").returncode == 255


def test_render_all_from_server_keys(tmp_path, live_server_factory):
    server = live_server_factory(policy=POLICY, inventory=INVENTORY, users=USERS, workers=1)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY)

    result = run_cli("render", "--all", "--inventory", inventory, "--server", server.url,
                     "--out", tmp_path / "out")

    assert result.exit_code == 0, result.output
    signing = [key for key in server.get("/v1/ca").json()["keys"] if key["signing"]]
    for host in ("db1", "db2"):
        assert signing[0]["public_key"].split()[1] in \
            (tmp_path / "out" / host / "sshca/user_ca.pub").read_text()


def test_render_server_unreachable(tmp_path):
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY)

    result = run_cli("render", "db1", "--inventory", inventory, "--server", "http://127.0.0.1:9",
                     "--out", tmp_path / "out")

    assert result.exit_code == 1
    assert "failed to fetch the CA keys from http://127.0.0.1:9/v1/ca" in result.output
    assert "pass --ca-keys" in result.output

