"""API token authentication: one 401 for every bad token, hashed storage, expiry and revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from server import admin as admin_ops
from server.models import Token
from server.service import hash_token

PROTECTED = [
    ("GET", "/v1/requests"),
    ("GET", "/v1/requests/1"),
    ("POST", "/v1/requests"),
    ("POST", "/v1/requests/1/approve"),
    ("POST", "/v1/requests/1/deny"),
    ("POST", "/v1/requests/1/cancel"),
    ("POST", "/v1/requests/1/certificate"),
    ("POST", "/v1/requests/1/revoke"),
    ("POST", "/v1/requests/1/extend"),
    ("POST", "/v1/revoked-keys"),
    ("GET", "/v1/certificates"),
    ("GET", "/v1/audit/events"),
    ("GET", "/v1/audit/verify"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_endpoint_needs_token(api, method, path):
    response = api.client.open(path, method=method, json={})

    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_token"


def test_same_401_for_unknown_expired_and_revoked(api):
    _, expired = admin_ops.create_token(api.config, "alice", expires=timedelta(seconds=60))
    api.execute("UPDATE tokens SET expires_at = created_at - interval '1 hour'" if api.backend.name == "postgresql"
                else "UPDATE tokens SET expires_at = datetime(created_at, '-1 hour') WHERE expires_at IS NOT NULL")
    _, revoked = admin_ops.create_token(api.config, "alice")
    admin_ops.revoke_tokens(api.config, user="alice")

    bodies = []
    for token in ("sshca_unknown", expired, revoked, api.tokens["alice"]):
        response = api.get("/v1/requests", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        bodies.append(response.get_json())

    assert all(body == bodies[0] for body in bodies)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer ", "token x", "Bearer " + "x" * 300])
def test_malformed_authorization_header(api, header):
    response = api.get("/v1/requests", headers={"Authorization": header})
    assert response.status_code == 401


def test_token_stored_only_as_sha256(api):
    token_id, token = admin_ops.create_token(api.config, "alice", expires=timedelta(days=90))

    with api.runtime.db.read() as session:
        row = session.get(Token, token_id)
    assert row.token_hash == hash_token(token)
    assert token not in (row.token_hash or "")
    assert row.expires_at - row.created_at == timedelta(days=90)
    assert api.get("/v1/requests", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_revoked_single_token_leaves_others(api):
    first_id, first = admin_ops.create_token(api.config, "alice")
    _, second = admin_ops.create_token(api.config, "alice")

    assert admin_ops.revoke_tokens(api.config, token_id=first_id) == [first_id]

    assert api.get("/v1/requests", headers={"Authorization": f"Bearer {first}"}).status_code == 401
    assert api.get("/v1/requests", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    with api.runtime.db.read() as session:
        actions = session.execute(sa.text("SELECT action FROM audit_events ORDER BY id")).scalars().all()
    assert actions.count("token.created") == 2
    assert actions.count("token.revoked") == 1


def test_responses_carry_request_id(api):
    response = api.get("/healthz", headers={"X-Request-ID": "trace-123"})
    assert response.headers["X-Request-ID"] == "trace-123"
    generated = api.get("/healthz", headers={"X-Request-ID": "bad value with spaces"})
    assert generated.headers["X-Request-ID"] != "bad value with spaces"
    assert len(generated.headers["X-Request-ID"]) == 16


def test_repeated_failures_get_429(api):
    from server.ratelimit import MAX_FAILURES

    for _ in range(MAX_FAILURES):
        assert api.get("/v1/requests", headers={"Authorization": "Bearer sshca_guess"}).status_code == 401

    blocked = api.get("/v1/requests", headers={"Authorization": "Bearer sshca_guess"})
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "too_many_failures"
    assert api.get("/v1/requests", "alice").status_code == 429
    assert api.get("/healthz").status_code == 200


def test_failure_limiter_window():
    from server.ratelimit import FailureLimiter

    limiter = FailureLimiter(max_failures=3, window=60, max_addresses=2)
    for second in range(3):
        limiter.record_failure("10.0.0.1", now=100.0 + second)

    assert limiter.blocked("10.0.0.1", now=103.0)
    assert not limiter.blocked("10.0.0.2", now=103.0)
    assert not limiter.blocked("10.0.0.1", now=160.5)
    limiter.record_failure("10.0.0.2", now=104.0)
    limiter.record_failure("10.0.0.3", now=105.0)
    assert not limiter.blocked("10.0.0.1", now=105.0)  # evicted: only two addresses are tracked
