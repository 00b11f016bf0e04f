"""Certificate issuance: principals, window, key ID, serials, re-checks and refusals."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from ca.certs import CertificateSpec, sign_certificate
from ca.userkeys import parse_user_key
from server.models import Certificate, User

from tests.server.conftest import new_public_key


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def load_certificate(line: str):
    return serialization.load_ssh_public_identity(line.encode())


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


@pytest.mark.parametrize(("hosts", "login", "principals"), [
    (["db1.prod.example.com"], "deploy", ["deploy@db1.prod.example.com"]),
    (["db1.prod.example.com", "db2.prod.example.com"], "postgres",
     ["postgres@db1.prod.example.com", "postgres@db2.prod.example.com"]),
    (["group:prod-db"], "deploy", ["deploy@group:prod-db"]),
])
def test_principals_equal_approved_hosts(api, hosts, login, principals):
    approved = api.approved_request(hosts=hosts, login=login)

    response = api.certificate(approved["id"])

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["principals"] == principals
    certificate = load_certificate(body["certificate"])
    assert [p.decode() for p in certificate.valid_principals] == principals


def test_certificate_fields_match_grant_and_audit(api):
    approved = api.approved_request(duration="2h")
    public_key = new_public_key("alice@laptop")
    before = datetime.now(timezone.utc)

    body = api.certificate(approved["id"], public_key=public_key).get_json()

    certificate = load_certificate(body["certificate"])
    certificate.verify_cert_signature()
    ends = parse(approved["ends_at"])
    starts = parse(approved["starts_at"])
    skew = api.runtime.snapshot.policy.clock_skew

    assert certificate.valid_before == int(ends.timestamp())
    assert parse(body["valid_before"]) == ends
    after = datetime.now(timezone.utc)
    earliest = int((max(starts, before.replace(microsecond=0)) - skew).timestamp())
    latest = int((max(starts, after.replace(microsecond=0)) - skew).timestamp())
    assert earliest <= certificate.valid_after <= latest
    assert parse(body["valid_after"]).timestamp() == certificate.valid_after
    assert certificate.serial == body["serial"] > 0
    assert certificate.key_id.decode() == f"user=alice request={approved['id']} serial={body['serial']}"
    assert certificate.key_id.decode() == body["key_id"]
    assert certificate.extensions == {b"permit-pty": b""}
    assert certificate.critical_options == {}
    signer = api.runtime.snapshot.signer
    assert certificate.signature_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH,
    ).decode() == signer.public_line()

    [event] = api.events("certificate.issued")
    details = json.loads(event.details)
    assert event.serial == body["serial"]
    assert event.request_id == approved["id"]
    assert event.actor == "alice"
    assert details["key_id"] == body["key_id"]
    assert details["principals"] == body["principals"]
    assert details["valid_before"] == body["valid_before"]
    assert details["valid_after"] == body["valid_after"]
    assert details["key_fingerprint"] == body["key_fingerprint"]
    assert details["policy_sha256"] == api.runtime.snapshot.policy.sha256


def test_rule_options_reach_certificate(api):
    policy = api.config.policy.read_text().replace(
        'approvers = ["group:dba-leads"]',
        'approvers = ["group:dba-leads"]\nextensions = ["permit-pty", "permit-port-forwarding"]\n'
        'source_address = ["10.0.0.0/8", "192.168.1.5"]\nforce_command = "/usr/bin/psql"',
    )
    api.set_policy(policy)
    approved = api.approved_request()

    certificate = load_certificate(api.certificate(approved["id"]).get_json()["certificate"])

    assert set(certificate.extensions) == {b"permit-pty", b"permit-port-forwarding"}
    assert certificate.critical_options[b"force-command"] == b"/usr/bin/psql"
    assert b"10.0.0.0/8" in certificate.critical_options[b"source-address"]


def test_serials_unique_and_never_zero(api):
    approved = api.approved_request()
    serials = [api.certificate(approved["id"]).get_json()["serial"] for _ in range(5)]

    assert 0 not in serials
    assert len(set(serials)) == 5
    assert serials == sorted(serials)


def test_certificate_before_approval_conflict(api):
    created = api.create_request()
    api.approve(created["id"], "bob")

    response = api.certificate(created["id"])

    assert response.status_code == 409
    assert error_code(response) == "not_approved"
    assert api.count("certificates") == 0


def test_certificate_for_other_users_request_forbidden(api):
    approved = api.approved_request()

    for user in ("dave", "bob", "frank"):
        response = api.certificate(approved["id"], user)
        assert response.status_code == 403, user
        assert error_code(response) == "not_requester"
    assert api.count("certificates") == 0


def test_certificate_after_window_conflict(api):
    approved = api.approved_request()
    api.move_request_times(approved["id"], -timedelta(hours=2))

    response = api.certificate(approved["id"])

    assert response.status_code == 409
    assert error_code(response) == "expired"
    assert api.count("certificates") == 0
    assert [e.request_id for e in api.events("request.expired")] == [approved["id"]]
    assert api.get(f"/v1/requests/{approved['id']}", "alice").get_json()["state"] == "expired"


def test_certificate_for_future_window_starts_then(api):
    start = (datetime.now(timezone.utc) + timedelta(hours=5)).replace(microsecond=0)
    approved = api.approved_request(starts_at=start.strftime("%Y-%m-%dT%H:%M:%SZ"))

    certificate = load_certificate(api.certificate(approved["id"]).get_json()["certificate"])

    assert certificate.valid_after == int(start.timestamp()) - 60
    assert certificate.valid_before == int(start.timestamp()) + 3600


def refusal(api, approved_id: int, code: str) -> None:
    response = api.certificate(approved_id)
    assert response.status_code == 403, response.get_json()
    assert error_code(response) == code
    assert api.count("certificates") == 0
    [event] = api.events("certificate.refused")
    assert event.request_id == approved_id
    assert json.loads(event.details)["code"] == code


def test_user_removed_from_group_after_approval_refused(api):
    approved = api.approved_request()
    api.execute("DELETE FROM user_groups WHERE user_id = (SELECT id FROM users WHERE name = 'alice')")
    refusal(api, approved["id"], "not_a_requester")


def test_user_removed_from_group_by_admin_command_refused(api):
    from server import admin as admin_ops

    approved = api.approved_request()
    admin_ops.set_user_groups(api.config, "alice", ["other"])

    refusal(api, approved["id"], "not_a_requester")
    [change] = api.events("user.groups_changed")
    assert json.loads(change.details) == {"user": "alice", "before": ["sre"], "after": ["other"]}


def test_disabled_user_refused_and_audited(api):
    approved = api.approved_request()
    api.execute("UPDATE users SET disabled = true WHERE name = 'alice'")
    refusal(api, approved["id"], "user_disabled")


def test_rule_removed_after_approval_refused(api):
    approved = api.approved_request()
    api.set_policy(api.config.policy.read_text().replace('name = "sre-prod-db"', 'name = "other-name"'))
    refusal(api, approved["id"], "rule_removed")


def test_host_removed_after_approval_refused(api):
    approved = api.approved_request()
    inventory = api.config.inventory.read_text().replace('name = "db1.prod.example.com"', 'name = "db9.prod.example.com"')
    api.set_inventory(inventory)
    refusal(api, approved["id"], "host_removed")


def test_login_removed_after_approval_refused(api):
    approved = api.approved_request(login="postgres")
    inventory = api.config.inventory.read_text().replace('logins = ["deploy", "postgres"]', 'logins = ["deploy"]')
    api.set_inventory(inventory)
    refusal(api, approved["id"], "login_removed")


def test_rule_narrowed_after_approval_refused(api):
    approved = api.approved_request(login="postgres")
    api.set_policy(api.config.policy.read_text().replace('logins = ["deploy", "postgres"]', 'logins = ["deploy"]', 1))
    refusal(api, approved["id"], "rule_changed")


BAD_KEYS = [
    (None, 400, "missing_field"),
    (5, 400, "invalid_type"),
    ("", 400, "empty"),
    ("ssh-ed25519 AAAA", 400, "invalid_key_data"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", 400, None),
    ("x" * 20000, 400, None),
]


@pytest.mark.parametrize(("public_key", "status", "code"), BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_bad_public_key_rejected(api, public_key, status, code):
    approved = api.approved_request()
    body = {} if public_key is None else {"public_key": public_key}

    response = api.post(f"/v1/requests/{approved['id']}/certificate", "alice", json=body)

    assert response.status_code == status
    if code:
        assert error_code(response) == code
    assert api.count("certificates") == 0
    assert api.events("certificate.issued") == []


def test_ca_key_rejected_as_user_key(api):
    approved = api.approved_request()
    response = api.certificate(approved["id"], public_key=api.runtime.snapshot.signer.public_line())
    assert response.status_code == 400
    assert error_code(response) == "ca_key"


def test_revoked_key_never_signed_and_in_krl(api):
    approved = api.approved_request()
    public_key = new_public_key()
    empty_krl = api.get("/v1/krl").data

    assert api.post("/v1/revoked-keys", "alice", json={"public_key": public_key, "reason": "x"}).status_code == 403
    response = api.post("/v1/revoked-keys", "frank", json={"public_key": public_key, "reason": "stolen laptop"})
    assert response.status_code == 201
    assert api.post("/v1/revoked-keys", "frank", json={"public_key": public_key, "reason": "again"}).status_code == 409

    refused = api.certificate(approved["id"], public_key=public_key)
    assert refused.status_code == 400
    assert error_code(refused) == "revoked_key"
    assert api.get("/v1/krl").data != empty_krl
    [event] = api.events("key.revoked")
    assert event.actor == "frank"


def test_revoked_key_input_checks(api):
    for body in ({}, {"public_key": new_public_key()}, {"public_key": "junk", "reason": "x"}, {"public_key": 1, "reason": "x"}):
        response = api.post("/v1/revoked-keys", "frank", json=body)
        assert response.status_code == 400, body
    assert api.count("revoked_keys") == 0


def test_ca_key_cannot_be_revoked(api):
    ca_line = api.runtime.snapshot.signer.public_line()

    response = api.post("/v1/revoked-keys", "frank", json={"public_key": ca_line, "reason": "oops"})

    assert response.status_code == 400
    assert error_code(response) == "ca_key"
    assert api.count("revoked_keys") == 0
    assert api.events("key.revoked") == []


def _insert_revoked_certificates(api, request_id, serials, *, valid_before):
    rows = [
        {"serial": serial, "request_id": request_id, "user_id": 1, "key_id": f"user=alice request={request_id} serial={serial}",
         "principals": ["deploy@db1.prod.example.com"], "hosts": ["db1.prod.example.com"], "login": "deploy",
         "valid_after": valid_before - timedelta(hours=1), "valid_before": valid_before,
         "issued_at": valid_before - timedelta(hours=1), "revoked_at": valid_before - timedelta(minutes=30)}
        for serial in serials
    ]
    with api.runtime.db.engine.begin() as connection:
        user_id = connection.execute(sa.select(User.id).where(User.name == "alice")).scalar_one()
        connection.execute(sa.insert(Certificate), [dict(row, user_id=user_id) for row in rows])


def _sign_with_server_ca(api, serial, key_id, tmp_path):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    user_key = parse_user_key(new_public_key())
    issued = sign_certificate(
        api.runtime.snapshot.signer,
        CertificateSpec(public_key=user_key, serial=serial, key_id=key_id, principals=("deploy@db1.prod.example.com",),
                        valid_after=now, valid_before=now + timedelta(hours=1)),
        max_validity=timedelta(hours=8),
    )
    path = tmp_path / f"{serial}-cert.pub"
    path.write_text(issued.line + "\n")
    return path


def _krl_revokes(api, certificate_path, tmp_path) -> bool:
    krl = tmp_path / "revoked.krl"
    krl.write_bytes(api.get("/v1/krl").data)
    result = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(certificate_path)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 1


def test_krl_omits_long_expired_certificates(api, tmp_path):
    approved = api.approved_request()
    now = datetime.now(timezone.utc)
    _insert_revoked_certificates(api, approved["id"], [900001], valid_before=now - timedelta(days=2))
    _insert_revoked_certificates(api, approved["id"], [900002], valid_before=now + timedelta(hours=1))

    old = _sign_with_server_ca(api, 900001, f"user=alice request={approved['id']} serial=900001", tmp_path)
    current = _sign_with_server_ca(api, 900002, f"user=alice request={approved['id']} serial=900002", tmp_path)

    assert not _krl_revokes(api, old, tmp_path)
    assert _krl_revokes(api, current, tmp_path)


@pytest.mark.slow
def test_krl_dense_serials_use_key_ids(api, tmp_path):
    # OpenSSH 9.2 cannot read back a KRL of serials this dense over this
    # wide a span. The server then revokes the same certificates by key ID.
    approved = api.approved_request()
    serials = range(1003, 18000, 3)
    _insert_revoked_certificates(api, approved["id"], serials, valid_before=datetime.now(timezone.utc) + timedelta(hours=1))

    revoked = _sign_with_server_ca(api, 17998, f"user=alice request={approved['id']} serial=17998", tmp_path)
    kept = _sign_with_server_ca(api, 17999, f"user=alice request={approved['id']} serial=17999", tmp_path)

    assert _krl_revokes(api, revoked, tmp_path)
    assert not _krl_revokes(api, kept, tmp_path)
