"""SQLAlchemy models: users, groups, tokens, requests, approvals, certificates, audit events.

Times are stored as naive UTC and returned as aware UTC (:class:`UTCDateTime`).
That round-trips to the microsecond on SQLite and PostgreSQL alike, which the
audit hash chain relies on.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A 64-bit integer that is still SQLite's rowid alias when it is the primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.types.TypeDecorator):
    """A timezone-aware UTC datetime stored as naive UTC."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given; use an aware UTC datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    pass


user_groups = sa.Table(
    "user_groups",
    Base.metadata,
    sa.Column("user_id", sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("group_id", sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=False)
    is_auditor: Mapped[bool] = mapped_column(default=False)
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Loaded with the user: every policy decision needs the user's groups.
    groups: Mapped[list[Group]] = relationship(secondary=user_groups, lazy="selectin", order_by="Group.name")

    @property
    def group_names(self) -> frozenset[str]:
        return frozenset(group.name for group in self.groups)


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)


class Token(Base):
    """A personal API token; only its SHA-256 is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class AccessRequest(Base):
    """A request for access; ``state`` follows the lifecycle in server.service."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    requester_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    hosts: Mapped[list] = mapped_column(sa.JSON)
    login: Mapped[str] = mapped_column(sa.String(32))
    reason: Mapped[str] = mapped_column(sa.Text)
    rule: Mapped[str] = mapped_column(sa.String(128), index=True)
    approvals_required: Mapped[int]
    duration_seconds: Mapped[int] = mapped_column(sa.BigInteger)
    requested_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extends_id: Mapped[int | None] = mapped_column(sa.ForeignKey("requests.id"), index=True)
    policy_sha256: Mapped[str] = mapped_column(sa.String(64))
    inventory_sha256: Mapped[str] = mapped_column(sa.String(64))

    # Loaded on demand: the certificate path locks the request row alone.
    requester: Mapped[User] = relationship()
    approvals: Mapped[list[Approval]] = relationship(order_by="Approval.id", back_populates="request")
    certificates: Mapped[list[Certificate]] = relationship(order_by="Certificate.serial", back_populates="request")


class Approval(Base):
    """One approver's decision on a request; each approver decides once."""

    __tablename__ = "approvals"
    __table_args__ = (sa.UniqueConstraint("request_id", "approver_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    approver_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(sa.String(8))
    comment: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    approver: Mapped[User] = relationship(lazy="joined", innerjoin=True)
    request: Mapped[AccessRequest] = relationship(back_populates="approvals")


class Certificate(Base):
    """An issued certificate; ``serial`` is allocated by the database and never reused."""

    __tablename__ = "certificates"
    __table_args__ = ({"sqlite_autoincrement": True},)

    serial: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(sa.ForeignKey("requests.id"), index=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    key_id: Mapped[str] = mapped_column(sa.String(200), default="")
    principals: Mapped[list] = mapped_column(sa.JSON, default=list)
    hosts: Mapped[list] = mapped_column(sa.JSON, default=list)
    login: Mapped[str] = mapped_column(sa.String(32), default="")
    public_key: Mapped[str] = mapped_column(sa.Text, default="")
    key_fingerprint: Mapped[str] = mapped_column(sa.String(100), default="")
    ca_fingerprint: Mapped[str] = mapped_column(sa.String(100), default="")
    certificate: Mapped[str] = mapped_column(sa.Text, default="")
    valid_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_before: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()
    request: Mapped[AccessRequest] = relationship(back_populates="certificates")


class AuditEvent(Base):
    """One link of the hash chain; ids are consecutive from 1 and assigned under the append lock."""

    __tablename__ = "audit_events"
    __table_args__ = (
        sa.Index("ix_audit_events_actor_id", "actor", "id"),
        sa.Index("ix_audit_events_action_id", "action", "id"),
        sa.Index("ix_audit_events_time_id", "time", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64))
    request_id: Mapped[int | None] = mapped_column(sa.BigInteger, index=True)
    serial: Mapped[int | None] = mapped_column(sa.BigInteger, index=True)
    details: Mapped[str] = mapped_column(sa.Text)  # canonical JSON text
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    hash: Mapped[str] = mapped_column(sa.String(64))


class AuditHead(Base):
    """The single row naming the last audit event; appends lock it, so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_id: Mapped[int] = mapped_column(sa.BigInteger)
    last_hash: Mapped[str] = mapped_column(sa.String(64))
    last_time: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RevokedKey(Base):
    """A user public key that goes into the KRL and is never signed again."""

    __tablename__ = "revoked_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(100), unique=True)
    public_key: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str] = mapped_column(sa.Text)
    revoked_by: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CAKeyRecord(Base):
    """A CA key: exactly one signs; the others stay trusted until retired."""

    __tablename__ = "ca_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(100), unique=True)
    path: Mapped[str] = mapped_column(sa.Text)
    public_key: Mapped[str] = mapped_column(sa.Text)
    signing: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
