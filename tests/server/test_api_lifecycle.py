"""State transitions and permissions: approve, deny, cancel, revoke, extend, expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest


def parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_quorum_of_two_approves(api):
    created = api.create_request()

    first = api.approve(created["id"], "bob")
    assert first["state"] == "pending"
    second = api.approve(created["id"], "carol")

    assert second["state"] == "approved"
    assert [event.action for event in api.events(request_id=created["id"])] == [
        "request.created", "request.approval", "request.approval", "request.approved",
    ]


def test_window_starts_when_quorum_reached(api):
    created = api.create_request(duration="2h")
    before = datetime.now(timezone.utc).replace(microsecond=0)

    approved = api.approve(created["id"], "bob") and api.approve(created["id"], "carol")

    starts, ends = parse(approved["starts_at"]), parse(approved["ends_at"])
    assert before <= starts <= datetime.now(timezone.utc)
    assert ends - starts == timedelta(hours=2)


def test_window_starts_at_requested_start_when_later(api):
    start = (datetime.now(timezone.utc) + timedelta(hours=3)).replace(microsecond=0)
    created = api.create_request(starts_at=start.strftime("%Y-%m-%dT%H:%M:%SZ"))

    approved = api.approve(created["id"], "bob") and api.approve(created["id"], "carol")

    assert parse(approved["starts_at"]) == start
    assert parse(approved["ends_at"]) == start + timedelta(hours=1)


def test_self_approval_refused(api):
    # bob may both request and approve web access under the same rule's groups.
    api.execute("INSERT INTO user_groups (user_id, group_id) SELECT u.id, g.id FROM users u, groups g "
                "WHERE u.name = 'bob' AND g.name = 'sre'")
    created = api.create_request("bob")

    response = api.post(f"/v1/requests/{created['id']}/approve", "bob", json={})

    assert response.status_code == 403
    assert error_code(response) == "self_approval"
    assert api.events("request.approval") == []


def test_self_approval_refused_for_admin(api):
    api.execute("UPDATE users SET is_admin = true WHERE name = 'bob'")
    api.execute("INSERT INTO user_groups (user_id, group_id) SELECT u.id, g.id FROM users u, groups g "
                "WHERE u.name = 'bob' AND g.name = 'sre'")
    created = api.create_request("bob")

    for action in ("approve", "deny"):
        response = api.post(f"/v1/requests/{created['id']}/{action}", "bob", json={})
        assert response.status_code == 403
        assert error_code(response) == "self_approval"
    assert api.get(f"/v1/requests/{created['id']}", "bob").get_json()["state"] == "pending"


def test_same_approver_counts_once(api):
    created = api.create_request()
    api.approve(created["id"], "bob")

    response = api.post(f"/v1/requests/{created['id']}/approve", "bob", json={})

    assert response.status_code == 409
    assert error_code(response) == "already_decided"
    body = api.get(f"/v1/requests/{created['id']}", "alice").get_json()
    assert body["state"] == "pending"
    assert len(body["approvals"]) == 1


def test_approver_outside_rule_refused(api):
    created = api.create_request()

    for user in ("dave", "henry", "erin", "frank"):
        response = api.post(f"/v1/requests/{created['id']}/approve", user, json={})
        assert response.status_code == 403, user
        assert error_code(response) == "not_an_approver"
    assert api.count("approvals") == 0


@pytest.mark.parametrize(("first", "second"), [("deny", "approve"), ("approve_all", "deny"), ("approve_all", "cancel")])
def test_decisions_after_final_state_conflict(api, first, second):
    created = api.create_request()
    if first == "deny":
        assert api.post(f"/v1/requests/{created['id']}/deny", "bob", json={"comment": "no"}).status_code == 200
    else:
        api.approve(created["id"], "bob")
        api.approve(created["id"], "carol")

    user = "alice" if second == "cancel" else "gina"
    response = api.post(f"/v1/requests/{created['id']}/{second}", user, json={})

    assert response.status_code == 409
    assert error_code(response) == "invalid_state"


def test_one_deny_is_final(api):
    created = api.create_request()
    api.approve(created["id"], "bob")

    denied = api.post(f"/v1/requests/{created['id']}/deny", "carol", json={"comment": "not now"})

    assert denied.status_code == 200
    assert denied.get_json()["state"] == "denied"
    assert api.post(f"/v1/requests/{created['id']}/approve", "gina", json={}).status_code == 409
    assert api.certificate(created["id"]).status_code == 409
    [event] = api.events("request.denied")
    assert event.actor == "carol"


def test_cancel_by_requester_only(api):
    created = api.create_request()

    assert api.post(f"/v1/requests/{created['id']}/cancel", "bob", json={}).status_code == 403
    response = api.post(f"/v1/requests/{created['id']}/cancel", "alice")

    assert response.status_code == 200
    assert response.get_json()["state"] == "cancelled"
    assert api.post(f"/v1/requests/{created['id']}/cancel", "alice", json={}).status_code == 409
    assert api.post(f"/v1/requests/{created['id']}/approve", "bob", json={}).status_code == 409


def test_pending_request_expires_after_ttl(api):
    created = api.create_request()
    api.move_request_times(created["id"], -timedelta(hours=25))

    assert api.get(f"/v1/requests/{created['id']}", "alice").get_json()["state"] == "expired"
    response = api.post(f"/v1/requests/{created['id']}/approve", "bob", json={})

    assert response.status_code == 409
    assert error_code(response) == "expired"
    [event] = api.events("request.expired")
    assert event.request_id == created["id"]
    assert api.count("approvals") == 0
    listed = api.get("/v1/requests?state=expired", "alice").get_json()["requests"]
    assert [item["id"] for item in listed] == [created["id"]]


def test_unknown_request_not_found(api):
    for action in ("approve", "deny", "cancel", "revoke", "certificate", "extend"):
        response = api.post(f"/v1/requests/424242/{action}", "bob", json={})
        assert response.status_code in (400, 404), action
        if response.status_code == 400:
            # Body checks come first for endpoints with required fields.
            assert error_code(response) == "missing_field"
    assert api.post("/v1/requests/424242/approve", "bob", json={}).status_code == 404


def test_revoke_permissions(api):
    approved = api.approved_request()

    for user in ("dave", "henry", "erin"):
        response = api.post(f"/v1/requests/{approved['id']}/revoke", user, json={"reason": "x"})
        assert response.status_code == 403, user

    response = api.post(f"/v1/requests/{approved['id']}/revoke", "frank", json={"reason": "incident closed"})
    assert response.status_code == 200
    assert response.get_json()["state"] == "revoked"


@pytest.mark.parametrize("user", ["alice", "gina"])
def test_revoke_by_requester_or_approver(api, user):
    approved = api.approved_request()
    response = api.post(f"/v1/requests/{approved['id']}/revoke", user, json={"reason": "done"})
    assert response.status_code == 200


def test_revoke_requires_reason_and_approved_state(api):
    created = api.create_request()
    assert api.post(f"/v1/requests/{created['id']}/revoke", "alice", json={}).status_code == 400
    assert api.post(f"/v1/requests/{created['id']}/revoke", "alice", json={"reason": "x"}).status_code == 409


def test_revoke_puts_serials_into_krl(api):
    approved = api.approved_request()
    serials = [api.certificate(approved["id"]).get_json()["serial"] for _ in range(2)]
    empty_krl = api.get("/v1/krl").data

    response = api.post(f"/v1/requests/{approved['id']}/revoke", "alice", json={"reason": "laptop lost"})

    assert response.status_code == 200
    assert all(cert["revoked_at"] for cert in response.get_json()["certificates"])
    [event] = api.events("request.revoked")
    assert f'"serials":{serials}'.replace(" ", "") in event.details
    krl = api.get("/v1/krl").data
    assert krl != empty_krl
    assert api.certificate(approved["id"]).status_code == 409


def test_extend_creates_linked_pending_request(api):
    approved = api.approved_request(duration="1h")

    response = api.post(f"/v1/requests/{approved['id']}/extend", "alice", json={"duration": "2h", "reason": "need more time"})

    assert response.status_code == 201
    extension = response.get_json()
    assert extension["state"] == "pending"
    assert extension["extends"] == approved["id"]
    assert extension["hosts"] == approved["hosts"]
    assert extension["login"] == approved["login"]
    assert extension["requested_start"] == approved["ends_at"]
    assert extension["approvals"] == []

    final = api.approve(extension["id"], "bob") and api.approve(extension["id"], "carol")
    assert final["starts_at"] == approved["ends_at"]


def test_revoke_cancels_pending_extension(api):
    approved = api.approved_request(duration="1h")
    extension = api.post(
        f"/v1/requests/{approved['id']}/extend", "alice", json={"duration": "1h", "reason": "more"}
    ).get_json()

    response = api.post(f"/v1/requests/{approved['id']}/revoke", "alice", json={"reason": "done"})

    assert response.status_code == 200
    assert api.get(f"/v1/requests/{extension['id']}", "alice").get_json()["state"] == "cancelled"
    [event] = api.events("request.cancelled")
    assert event.request_id == extension["id"]
    assert f"request {approved['id']}, which it extends, was revoked" in event.details
    approve = api.post(f"/v1/requests/{extension['id']}/approve", "bob", json={})
    assert approve.status_code == 409
    assert api.certificate(extension["id"]).status_code == 409


def test_revoke_revokes_approved_extension(api):
    approved = api.approved_request(duration="1h")
    extension = api.post(
        f"/v1/requests/{approved['id']}/extend", "alice", json={"duration": "1h", "reason": "more"}
    ).get_json()
    api.approve(extension["id"], "bob")
    api.approve(extension["id"], "carol")
    issued = api.certificate(extension["id"])
    assert issued.status_code == 201

    response = api.post(f"/v1/requests/{approved['id']}/revoke", "bob", json={"reason": "incident over"})

    assert response.status_code == 200
    after = api.get(f"/v1/requests/{extension['id']}", "alice").get_json()
    assert after["state"] == "revoked"
    assert all(certificate["revoked_at"] for certificate in after["certificates"])
    revoked = {event.request_id for event in api.events("request.revoked")}
    assert revoked == {approved["id"], extension["id"]}
    assert api.certificate(extension["id"]).status_code == 409


def test_extend_checks(api):
    approved = api.approved_request()
    pending = api.create_request()
    path = f"/v1/requests/{approved['id']}/extend"

    assert api.post(path, "dave", json={"duration": "1h", "reason": "x"}).status_code == 403
    assert api.post(path, "alice", json={"duration": "9h", "reason": "x"}).status_code == 400
    assert api.post(path, "alice", json={"duration": "1h"}).status_code == 400
    assert api.post(f"/v1/requests/{pending['id']}/extend", "alice", json={"duration": "1h", "reason": "x"}).status_code == 409


def test_disabled_user_cannot_act(api):
    created = api.create_request()
    api.execute("UPDATE users SET disabled = true WHERE name = 'bob'")

    response = api.post(f"/v1/requests/{created['id']}/approve", "bob", json={})

    assert response.status_code == 403
    assert error_code(response) == "user_disabled"


def test_approval_under_removed_rule_refused(api):
    created = api.create_request()
    policy = api.config.policy.read_text().replace('name = "sre-prod-db"', 'name = "renamed-db"')
    api.set_policy(policy)

    response = api.post(f"/v1/requests/{created['id']}/approve", "bob", json={})

    assert response.status_code == 403
    assert error_code(response) == "rule_removed"


DECISION_BAD_INPUT = [
    ("approve", {"comment": 5}, "invalid_type"),
    ("approve", {"comment": ["ok"]}, "invalid_type"),
    ("approve", {"comment": "x" * 2001}, "too_long"),
    ("deny", {"comment": {"text": "no"}}, "invalid_type"),
    ("deny", {"comment": "no\x07"}, "invalid_characters"),
    ("cancel", {"reason": "x"}, "unknown_field"),
]


@pytest.mark.parametrize(("action", "body", "code"), DECISION_BAD_INPUT, ids=range(len(DECISION_BAD_INPUT)))
def test_decision_bad_input_changes_nothing(api, action, body, code):
    created = api.create_request()
    user = "alice" if action == "cancel" else "bob"
    events_before = len(api.events())

    response = api.post(f"/v1/requests/{created['id']}/{action}", user, json=body)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code
    assert api.count("approvals") == 0
    assert len(api.events()) == events_before
    assert api.get(f"/v1/requests/{created['id']}", "alice").get_json()["state"] == "pending"


APPROVED_BAD_INPUT = [
    ("revoke", {"reason": 5}, "invalid_type"),
    ("revoke", {"reason": ""}, "missing_field"),
    ("extend", {"duration": 0, "reason": "x"}, "invalid_duration"),
    ("extend", {"duration": -5, "reason": "x"}, "invalid_duration"),
    ("extend", {"duration": 10**30, "reason": "x"}, "invalid_duration"),
    ("extend", {"duration": "5h", "reason": "x"}, "duration_too_long"),
    ("extend", {"duration": "later", "reason": "x"}, "invalid_duration"),
    ("extend", {"duration": [1], "reason": "x"}, "invalid_type"),
    ("extend", {"duration": "1h", "reason": None}, "missing_field"),
    ("certificate", {"public_key": None}, "missing_field"),
    ("certificate", {"public_key": {"k": 1}}, "invalid_type"),
]


@pytest.mark.parametrize(("action", "body", "code"), APPROVED_BAD_INPUT, ids=range(len(APPROVED_BAD_INPUT)))
def test_approved_request_bad_input_changes_nothing(api, action, body, code):
    approved = api.approved_request()
    events_before = len(api.events())
    requests_before = api.count("requests")

    response = api.post(f"/v1/requests/{approved['id']}/{action}", "alice", json=body)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert len(api.events()) == events_before
    assert api.count("requests") == requests_before
    assert api.count("certificates") == 0
    assert api.get(f"/v1/requests/{approved['id']}", "alice").get_json()["state"] == "approved"
