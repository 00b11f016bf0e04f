"""End to end: request over HTTP, two approvals, certificate, a real ssh login; revoke and the KRL."""

from __future__ import annotations

import subprocess

import pytest

from ca.principals import host_principals
from tests.support.sshd import current_login

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

LOGIN = current_login()

INVENTORY = f"""\
[[hosts]]
name = "db1.test.example"
groups = ["test-db"]
logins = ["{LOGIN}"]

[[hosts]]
name = "db2.test.example"
groups = ["test-db"]
logins = ["{LOGIN}"]
"""

POLICY = f"""\
[defaults]
max_duration = "2h"

[[rules]]
name = "test-db"
requesters = ["group:sre"]
hosts = ["group:test-db"]
logins = ["{LOGIN}"]
max_duration = "1h"
approvals = 2
approvers = ["group:dba-leads"]
"""


def make_key(directory):
    key_path = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(key_path)],
                   check=True, capture_output=True)
    return key_path


def test_request_approve_login_revoke(live_server_factory, sshd, tmp_path):
    server = live_server_factory(policy=POLICY, inventory=INVENTORY)
    sshd.trust_ca_keys(key["public_key"] for key in server.get("/v1/ca").json()["keys"])
    sshd.set_principals(LOGIN, host_principals("db1.test.example", ["test-db"], LOGIN))
    sshd.set_krl(server.get("/v1/krl").content)

    created = server.post("/v1/requests", user="alice", json={
        "hosts": ["db1.test.example"], "login": LOGIN, "duration": "30m", "reason": "rotate the replication slot"})
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    for approver in ("bob", "carol"):
        response = server.post(f"/v1/requests/{request_id}/approve", user=approver, json={"comment": "ok"})
        assert response.status_code == 200, response.text
    assert response.json()["state"] == "approved"

    key_path = make_key(tmp_path)
    issued = server.post(f"/v1/requests/{request_id}/certificate", user="alice",
                         json={"public_key": key_path.with_suffix(".pub").read_text()})
    assert issued.status_code == 201, issued.text
    cert_path = tmp_path / "id_ed25519-cert.pub"
    cert_path.write_text(issued.json()["certificate"] + "\n")

    offset = sshd.log_offset()
    login = sshd.ssh(key_path, cert_path, "echo logged-in")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "logged-in"
    sshd.wait_for_log(rf'ID user=alice request={request_id} serial={issued.json()["serial"]}', since=offset)

    # The same certificate does not open a host it was not granted for.
    sshd.set_principals(LOGIN, host_principals("db2.test.example", ["test-db"], LOGIN))
    other_host = sshd.ssh(key_path, cert_path, "echo logged-in")
    assert other_host.returncode == 255
    assert "Permission denied" in other_host.stderr
    sshd.set_principals(LOGIN, host_principals("db1.test.example", ["test-db"], LOGIN))
    assert sshd.ssh(key_path, cert_path, "true").returncode == 0

    revoked = server.post(f"/v1/requests/{request_id}/revoke", user="alice", json={"reason": "work finished"})
    assert revoked.status_code == 200, revoked.text
    sshd.set_krl(server.get("/v1/krl").content)

    refused = sshd.ssh(key_path, cert_path, "echo logged-in")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr
    verify = server.get("/v1/audit/verify", user="erin").json()
    assert verify["ok"] is True
