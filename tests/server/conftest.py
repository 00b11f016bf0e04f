"""Fixtures for the server tests: one app per database backend, a clean database per test.

``backend`` is session-scoped and parametrized over SQLite and a real
PostgreSQL; ``api`` empties its database before each test, restores the
default policy and inventory and adds the default users with tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from server import admin as admin_ops
from server import db
from server.app import create_app
from server.audit import GENESIS_HASH
from server.config import load_config
from server.models import AuditEvent, Group, Token, User
from server.runtime import Runtime
from server.service import hash_token, new_token
from tests.support.live_server import DEFAULT_INVENTORY, DEFAULT_POLICY, DEFAULT_USERS

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

USERS = dict(DEFAULT_USERS, gina=["dba-leads"], henry=[])

TABLES = (
    "approvals", "certificates", "tokens", "user_groups", "requests", "users", "groups",
    "audit_events", "revoked_keys", "ca_keys",
)


def new_public_key(comment: str = "") -> str:
    """Return a fresh Ed25519 public key line."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


@dataclass
class Backend:
    name: str
    url: str
    runtime: Runtime
    app: object


@pytest.fixture(scope="session")
def server_data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sshca-data")
    (directory / "policy.toml").write_text(DEFAULT_POLICY)
    (directory / "inventory.toml").write_text(DEFAULT_INVENTORY)
    admin_ops.init_data_dir(directory)
    return directory


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request, server_data_dir, tmp_path_factory):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'sshca.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.url(cluster.create_database("sshca_api_tests"))
    db.upgrade(url)
    config = load_config(server_data_dir / "sshca.toml", environ={}, overrides={"database_url": url})
    runtime = Runtime(config)
    yield Backend(request.param, url, runtime, create_app(runtime=runtime))
    runtime.close()


def reset_database(runtime: Runtime) -> None:
    with runtime.db.engine.begin() as connection:
        if runtime.db.is_sqlite:
            for table in TABLES:
                connection.exec_driver_sql(f"DELETE FROM {table}")
            connection.exec_driver_sql("DELETE FROM sqlite_sequence")
        else:
            connection.exec_driver_sql(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
        connection.execute(
            sa.text("UPDATE audit_head SET last_id = 0, last_hash = :genesis WHERE id = 1"), {"genesis": GENESIS_HASH},
        )


class Api:
    """The app's test client plus helpers that set up users, requests and time."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.runtime = backend.runtime
        self.config = backend.runtime.config
        self.client = backend.app.test_client()
        self.tokens: dict[str, str] = {}

    # -- users --------------------------------------------------------------------

    def add_users(self, users: dict) -> None:
        now = datetime.now(timezone.utc)
        with self.runtime.db.write() as session:
            groups: dict[str, Group] = {}
            for name, spec in users.items():
                spec = spec if isinstance(spec, dict) else {"groups": spec}
                user = User(name=name, is_admin=spec.get("admin", False), is_auditor=spec.get("auditor", False),
                            disabled=False, created_at=now)
                for group_name in spec.get("groups", ()):
                    groups.setdefault(group_name, Group(name=group_name))
                    user.groups.append(groups[group_name])
                session.add(user)
                session.flush()
                token = new_token()
                session.add(Token(user_id=user.id, token_hash=hash_token(token), created_at=now))
                self.tokens[name] = token
            session.commit()

    def headers(self, user: str | None) -> dict:
        return {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}

    # -- HTTP -----------------------------------------------------------------------

    def post(self, path: str, user: str | None = None, json=None, **kwargs):
        return self.client.post(path, headers={**self.headers(user), **kwargs.pop("headers", {})}, json=json, **kwargs)

    def get(self, path: str, user: str | None = None, **kwargs):
        return self.client.get(path, headers={**self.headers(user), **kwargs.pop("headers", {})}, **kwargs)

    def create_request(self, user: str = "alice", *, expect: int = 201, **fields) -> dict:
        body = {"hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "deploy fix"}
        body.update(fields)
        response = self.post("/v1/requests", user, json=body)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def approve(self, request_id: int, user: str, *, expect: int = 200, comment: str = "ok") -> dict:
        response = self.post(f"/v1/requests/{request_id}/approve", user, json={"comment": comment})
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def approved_request(self, user: str = "alice", approvers=("bob", "carol"), **fields) -> dict:
        created = self.create_request(user, **fields)
        result = None
        for approver in approvers:
            result = self.approve(created["id"], approver)
        assert result["state"] == "approved", result
        return result

    def certificate(self, request_id: int, user: str = "alice", *, public_key: str | None = None):
        return self.post(f"/v1/requests/{request_id}/certificate", user,
                         json={"public_key": public_key or new_public_key()})

    # -- policy, database and time -------------------------------------------------------

    def set_policy(self, text: str) -> None:
        self.config.policy.write_text(text)
        self.runtime.reload()

    def set_inventory(self, text: str) -> None:
        self.config.inventory.write_text(text)
        self.runtime.reload()

    def execute(self, statement: str, **params) -> None:
        with self.runtime.db.engine.begin() as connection:
            connection.execute(sa.text(statement), params)

    def move_request_times(self, request_id: int, delta: timedelta) -> None:
        """Shift every stored time of a request by ``delta`` (negative: into the past)."""
        with self.runtime.db.write() as session:
            from server.models import AccessRequest

            request = session.get(AccessRequest, request_id)
            for field in ("created_at", "expires_at", "starts_at", "ends_at", "requested_start"):
                value = getattr(request, field)
                if value is not None:
                    setattr(request, field, value + delta)
            session.commit()

    def events(self, action: str | None = None, request_id: int | None = None) -> list[AuditEvent]:
        with self.runtime.db.read() as session:
            query = sa.select(AuditEvent).order_by(AuditEvent.id)
            if action is not None:
                query = query.where(AuditEvent.action == action)
            if request_id is not None:
                query = query.where(AuditEvent.request_id == request_id)
            return list(session.execute(query).scalars().all())

    def count(self, table: str) -> int:
        with self.runtime.db.engine.connect() as connection:
            return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def api(backend):
    runtime = backend.runtime
    reset_database(runtime)
    runtime.auth_failures.clear()
    config = runtime.config
    if config.policy.read_text() != DEFAULT_POLICY or config.inventory.read_text() != DEFAULT_INVENTORY:
        config.policy.write_text(DEFAULT_POLICY)
        config.inventory.write_text(DEFAULT_INVENTORY)
        runtime.reload()
    helper = Api(backend)
    helper.add_users(USERS)
    return helper
