"""Creating, listing and reading requests over the JSON API, and the input checks on every POST."""

from __future__ import annotations

import pytest

from tests.server.conftest import new_public_key

VALID = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "deploy fix"}


def test_create_request_returns_pending_request(api):
    body = api.create_request(hosts=["db1.prod.example.com", "db2.prod.example.com"], duration="2h")

    assert body["state"] == "pending"
    assert body["requester"] == "alice"
    assert body["hosts"] == ["db1.prod.example.com", "db2.prod.example.com"]
    assert body["login"] == "deploy"
    assert body["reason"] == "deploy fix"
    assert body["rule"] == "sre-prod-db"
    assert body["approvals_required"] == 2
    assert body["approvals"] == []
    assert body["duration_seconds"] == 7200
    assert body["starts_at"] is None
    assert body["ends_at"] is None
    assert body["expires_at"].endswith("Z")


def test_create_request_audited_with_policy_hashes(api):
    body = api.create_request()

    [event] = api.events("request.created")
    assert event.request_id == body["id"]
    assert event.actor == "alice"
    snapshot = api.runtime.snapshot
    assert f'"policy_sha256":"{snapshot.policy.sha256}"' in event.details
    assert f'"inventory_sha256":"{snapshot.inventory.sha256}"' in event.details


def test_group_request_matches_group_rule(api):
    body = api.create_request(hosts=["group:prod-db"], login="postgres")
    assert body["rule"] == "sre-prod-db"


def test_first_matching_rule_decides(api):
    policy = api.config.policy.read_text()
    api.set_policy(policy.replace('[[rules]]\nname = "sre-prod-db"', '[[rules]]\nname = "first-db"\nrequesters = ["alice"]\n'
                                  'hosts = ["db1.prod.example.com"]\nlogins = ["deploy"]\napprovals = 1\n'
                                  'approvers = ["carol"]\n\n[[rules]]\nname = "sre-prod-db"', 1))

    assert api.create_request()["rule"] == "first-db"
    assert api.create_request("dave")["rule"] == "sre-prod-db"
    assert api.create_request(hosts=["db2.prod.example.com"])["rule"] == "sre-prod-db"


def test_request_without_matching_rule_forbidden(api):
    response = api.post("/v1/requests", "henry", json=VALID)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "no_matching_rule"
    assert api.count("requests") == 0


def test_request_mixing_rules_forbidden(api):
    # No single rule covers a db host and a web host.
    response = api.post("/v1/requests", "alice", json=dict(VALID, hosts=["db1.prod.example.com", "web1.prod.example.com"]))
    assert response.status_code == 403


BAD_INPUT = [
    # (field overrides, expected code, text the message must contain)
    ({"hosts": "db1.prod.example.com"}, "invalid_type", "'hosts'"),
    ({"hosts": []}, "missing_field", "'hosts'"),
    ({"hosts": [1]}, "invalid_type", "'hosts'"),
    ({"hosts": ["nope.example.com"]}, "unknown_host", "nope.example.com"),
    ({"hosts": ["group:nope"]}, "unknown_group", "group:nope"),
    ({"hosts": ["DB1.prod.example.com"]}, "invalid_host", "DB1.prod.example.com"),
    ({"hosts": ["db1.prod.example.com", "db1.prod.example.com"]}, "duplicate_host", "db1.prod.example.com"),
    ({"hosts": ["db1.prod.example.com,db2"]}, "invalid_host", "db1.prod.example.com,db2"),
    ({"login": 5}, "invalid_type", "'login'"),
    ({"login": "root user"}, "invalid_login", "root user"),
    ({"login": "-rf"}, "invalid_login", "-rf"),
    ({"login": "admin"}, "invalid_login", "admin"),
    ({"duration": "0"}, "invalid_duration", "0"),
    ({"duration": 0}, "invalid_duration", "0"),
    ({"duration": -60}, "invalid_duration", "-60"),
    ({"duration": "-1h"}, "invalid_duration", "-1h"),
    ({"duration": 10**30}, "invalid_duration", str(10**30)),
    ({"duration": "soon"}, "invalid_duration", "soon"),
    ({"duration": 1.5}, "invalid_type", "'duration'"),
    ({"duration": True}, "invalid_type", "'duration'"),
    ({"duration": "5h"}, "duration_too_long", "5h"),
    ({"duration": "9h"}, "duration_too_long", "9h"),
    ({"reason": ""}, "missing_field", "'reason'"),
    ({"reason": "   "}, "missing_field", "'reason'"),
    ({"reason": 7}, "invalid_type", "'reason'"),
    ({"reason": "x" * 2001}, "too_long", "'reason'"),
    ({"reason": "bad\x00byte"}, "invalid_characters", "'reason'"),
    ({"reason": "fix \u202edaolpu"}, "invalid_characters", "U+202E"),
    ({"starts_at": "tomorrow"}, "invalid_time", "tomorrow"),
    ({"starts_at": "2026-12-04T10:00:00"}, "invalid_time", "2026-12-04T10:00:00"),
    ({"starts_at": 5}, "invalid_type", "'starts_at'"),
    ({"starts_at": "2099-01-01T00:00:00Z"}, "starts_at_too_far", "2099-01-01T00:00:00Z"),
    ({"extra": 1}, "unknown_field", "extra"),
]


@pytest.mark.parametrize(("fields", "code", "fragment"), BAD_INPUT, ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BAD_INPUT)])
def test_create_request_bad_input_rejected(api, fields, code, fragment):
    response = api.post("/v1/requests", "alice", json=dict(VALID, **fields))

    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert api.count("requests") == 0
    assert api.events("request.created") == []


@pytest.mark.parametrize("missing", ["hosts", "login", "duration", "reason"])
def test_create_request_missing_field_rejected(api, missing):
    body = {key: value for key, value in VALID.items() if key != missing}

    response = api.post("/v1/requests", "alice", json=body)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "missing_field"
    assert missing in response.get_json()["error"]["message"]
    assert api.count("requests") == 0


def test_login_must_exist_on_every_group_host(api):
    inventory = api.config.inventory.read_text().replace(
        'name = "db2.prod.example.com"\ngroups = ["prod-db"]\nlogins = ["deploy", "postgres"]',
        'name = "db2.prod.example.com"\ngroups = ["prod-db"]\nlogins = ["deploy"]',
    )
    api.set_inventory(inventory)

    response = api.post("/v1/requests", "alice", json=dict(VALID, hosts=["group:prod-db"], login="postgres"))

    assert response.status_code == 400
    assert "db2.prod.example.com" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("path", [
    "/v1/requests", "/v1/requests/1/approve", "/v1/requests/1/deny", "/v1/requests/1/cancel",
    "/v1/requests/1/certificate", "/v1/requests/1/revoke", "/v1/requests/1/extend", "/v1/revoked-keys",
])
def test_invalid_json_rejected_on_every_post(api, path):
    api.create_request()
    user = "frank" if path == "/v1/revoked-keys" else "alice"

    for body, code in ((b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"), (b'"text"', "invalid_json"),
                       (b"\xff\xfe", "invalid_json"), (b'{"unexpected": 1}', "unknown_field"),
                       (b'{"duration": ' + b"9" * 5000 + b"}", "invalid_json"),
                       (b"[" * 20000 + b"]" * 20000, "invalid_json")):
        response = api.post(path, user, data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.get_json())
        assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize("path", ["/v1/requests", "/v1/requests/1/approve", "/v1/requests/1/certificate", "/v1/revoked-keys"])
def test_oversized_body_rejected_on_post(api, path):
    response = api.post(path, "alice", data=b'{"reason": "' + b"x" * (65 * 1024) + b'"}',
                        headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    assert api.count("requests") == 0


def test_list_requests_scoped_to_involvement(api):
    db_request = api.create_request()
    web_request = api.create_request("dave", hosts=["web1.prod.example.com"])

    def ids(user, query=""):
        response = api.get("/v1/requests" + query, user)
        assert response.status_code == 200
        return [item["id"] for item in response.get_json()["requests"]]

    assert ids("alice") == [db_request["id"]]
    assert ids("dave") == [web_request["id"]]
    assert ids("carol") == [db_request["id"]]  # approver of the db rule only
    assert sorted(ids("bob")) == sorted([db_request["id"], web_request["id"]])
    assert sorted(ids("erin")) == sorted([db_request["id"], web_request["id"]])  # auditor
    assert ids("henry") == []


def test_list_requests_filters_by_state(api):
    pending = api.create_request()
    approved = api.approved_request()

    pending_ids = [item["id"] for item in api.get("/v1/requests?state=pending", "erin").get_json()["requests"]]
    approved_ids = [item["id"] for item in api.get("/v1/requests?state=approved", "erin").get_json()["requests"]]

    assert pending_ids == [pending["id"]]
    assert approved_ids == [approved["id"]]
    response = api.get("/v1/requests?state=bogus", "erin")
    assert response.status_code == 400
    assert "bogus" in response.get_json()["error"]["message"]


def test_get_request_visibility(api):
    created = api.create_request()
    path = f"/v1/requests/{created['id']}"

    assert api.get(path, "alice").status_code == 200
    assert api.get(path, "carol").status_code == 200
    assert api.get(path, "erin").status_code == 200
    assert api.get(path, "frank").status_code == 200
    assert api.get(path, "dave").status_code == 403
    assert api.get(path, "henry").status_code == 403
    assert api.get("/v1/requests/999999", "alice").status_code == 404
    assert api.get(f"/v1/requests/{2**70}", "alice").status_code == 404


def test_get_request_shows_approvals_and_certificates(api):
    approved = api.approved_request()
    issued = api.certificate(approved["id"]).get_json()

    body = api.get(f"/v1/requests/{approved['id']}", "alice").get_json()

    assert [(a["approver"], a["decision"], a["comment"]) for a in body["approvals"]] == [
        ("bob", "approve", "ok"), ("carol", "approve", "ok"),
    ]
    assert [c["serial"] for c in body["certificates"]] == [issued["serial"]]
    assert body["certificates"][0]["key_id"] == issued["key_id"]


def test_public_endpoints_need_no_token(api):
    health = api.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "ok"

    keys = api.get("/v1/ca").get_json()["keys"]
    assert keys[0]["public_key"] == api.runtime.snapshot.signer.public_line()
    assert keys[0]["signing"] is True

    krl = api.get("/v1/krl")
    assert krl.status_code == 200
    assert krl.data.startswith(b"SSHKRL")


def test_unknown_endpoint_is_json_404(api):
    response = api.get("/v1/nothing", "alice")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_key_sent_as_request_field_rejected(api):
    # Principals and windows come from the server; a client cannot add them.
    response = api.post("/v1/requests", "alice", json=dict(VALID, principals=["root@db1"]))
    assert response.status_code == 400
    approved = api.approved_request()
    response = api.post(f"/v1/requests/{approved['id']}/certificate", "alice",
                        json={"public_key": new_public_key(), "principals": ["root@db1"]})
    assert response.status_code == 400
    assert api.count("certificates") == 0
