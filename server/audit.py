"""The hash-chained audit log.

Each event's ``hash`` is SHA-256 over the previous event's hash (64 hex
digits, ASCII) followed by the canonical JSON of the event's fields ``id``,
``time``, ``actor``, ``action``, ``request_id``, ``serial`` and ``details``.
Canonical JSON is sorted keys, no spaces, UTF-8; ``time`` is ISO 8601 UTC with
microseconds (``2026-12-04T19:30:00.000000Z``), which both databases store
exactly. The first event's previous hash is 64 zeros.

Appends are serialised by locking the single ``audit_head`` row: on
PostgreSQL with ``SELECT ... FOR UPDATE``, on SQLite by the write transaction
(``BEGIN IMMEDIATE``) the caller already holds. Event ids are therefore
consecutive, and verification detects an edited, deleted or reordered row, and
a truncated tail by comparing with the head row. Event times never decrease
along the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64
VERIFY_BATCH = 20000

audit_logger = logging.getLogger("sshca.audit")


def canonical_json(value) -> str:
    """Serialise ``value`` with sorted keys and no spaces, as the chain hashes it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_time(value: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with microseconds."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_fields(event: AuditEvent) -> dict:
    """Return the hashed fields of ``event`` as a JSON-ready dict."""
    return {
        "id": event.id,
        "time": format_time(event.time),
        "actor": event.actor,
        "action": event.action,
        "request_id": event.request_id,
        "serial": event.serial,
        "details": json.loads(event.details),
    }


def compute_hash(prev_hash: str, fields: dict) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(canonical_json(fields).encode("utf-8"))
    return digest.hexdigest()


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    request_id: int | None = None,
    serial: int | None = None,
    details: dict | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Add one event to the chain inside the caller's transaction; return it (not in the session).

    The head row stays locked until the caller commits, so call this as the
    last write of a transaction. The event is logged on ``sshca.audit`` only
    after the commit succeeds (see :func:`emit_committed`).
    """
    # Plain SQL statements rather than ORM objects: every write transaction
    # ends here, so this is on the hot path of certificate issuance.
    head_table = AuditHead.__table__
    head = session.execute(
        sa.select(head_table.c.last_id, head_table.c.last_hash, head_table.c.last_time)
        .where(head_table.c.id == 1).with_for_update()
    ).one()

    # Times never go backwards along the chain, even when server clocks
    # disagree: auditors' time filters rely on it to turn a time into an id.
    now = now or datetime.now(timezone.utc)
    if head.last_time is not None and now < head.last_time:
        now = head.last_time

    event = AuditEvent(
        id=head.last_id + 1,
        time=now,
        actor=actor,
        action=action,
        request_id=request_id,
        serial=serial,
        details=canonical_json(details or {}),
        prev_hash=head.last_hash,
    )
    event.hash = compute_hash(head.last_hash, event_fields(event))

    session.execute(sa.insert(AuditEvent.__table__).values(
        id=event.id, time=event.time, actor=event.actor, action=event.action, request_id=event.request_id,
        serial=event.serial, details=event.details, prev_hash=event.prev_hash, hash=event.hash,
    ))
    session.execute(
        sa.update(head_table).where(head_table.c.id == 1)
        .values(last_id=event.id, last_hash=event.hash, last_time=now)
    )
    session.info.setdefault("audit_events", []).append(event)
    return event


def emit_committed(session: Session) -> None:
    """Log the events the session committed, one JSON line each, on ``sshca.audit``."""
    events = session.info.pop("audit_events", [])
    for event in events:
        record = event_fields(event)
        record["hash"] = event.hash
        audit_logger.info(canonical_json(record), extra={"audit_event": record})


def discard_uncommitted(session: Session) -> None:
    """Forget events of a rolled-back transaction so they are never logged."""
    session.info.pop("audit_events", None)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    head: str
    first_bad_event: int | None = None
    problem: str | None = None
    checked_at: datetime | None = None  # when the chain was read, for results shown later

    def to_json(self) -> dict:
        result = {"ok": self.ok, "events": self.events, "head": self.head}
        if not self.ok:
            result["first_bad_event"] = self.first_bad_event
            result["problem"] = self.problem
        return result


_encode_string = json.JSONEncoder(ensure_ascii=False).encode


def _row_hash(prev_hash: str, row) -> str:
    """Return the hash of one stored event row, as :func:`compute_hash` would.

    The canonical JSON is assembled from the stored columns: ``details`` is
    stored as canonical JSON already, so it is used as written. This is what
    makes verifying a million events take seconds, not minutes. A details
    text that is not canonical, which sshca never writes, counts as changed.
    """
    # Same text as format_time, which strftime makes several times slower.
    time = row.time.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    request_id = "null" if row.request_id is None else int(row.request_id)
    serial = "null" if row.serial is None else int(row.serial)
    document = (
        f'{{"action":{_encode_string(row.action)},"actor":{_encode_string(row.actor)},"details":{row.details},'
        f'"id":{int(row.id)},"request_id":{request_id},"serial":{serial},"time":"{time}"}}'
    )
    digest = hashlib.sha256(prev_hash.encode("ascii"))
    digest.update(document.encode("utf-8"))
    return digest.hexdigest()


def verify_chain(session: Session) -> VerifyResult:
    """Recompute the chain from the first event and compare it with the head row.

    ``first_bad_event`` is the id of the first event that was edited, is
    missing, or sits out of place.
    """
    result = _verify_rows(session)
    return dataclasses.replace(result, checked_at=datetime.now(timezone.utc))


def _verify_rows(session: Session) -> VerifyResult:
    head = session.execute(sa.select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).one()
    table = AuditEvent.__table__
    columns = [table.c[name] for name in (
        "id", "time", "actor", "action", "request_id", "serial", "details", "prev_hash", "hash",
    )]
    expected_id = 1
    prev_hash = GENESIS_HASH
    count = 0
    last_seen = 0

    while True:
        # Events appended after the head row was read are left for the next
        # verification, because on PostgreSQL each statement reads newer commits.
        batch = session.execute(
            sa.select(*columns).where(table.c.id > last_seen, table.c.id <= head.last_id)
            .order_by(table.c.id).limit(VERIFY_BATCH)
        ).all()
        if not batch:
            break
        for row in batch:
            if row.id != expected_id:
                return VerifyResult(False, count, prev_hash, expected_id, f"event {expected_id} is missing")
            if row.prev_hash != prev_hash:
                return VerifyResult(False, count, prev_hash, row.id, f"event {row.id} does not follow event {row.id - 1}")
            try:
                recomputed = _row_hash(prev_hash, row)
            except (ValueError, TypeError, AttributeError):
                recomputed = None
            if recomputed != row.hash:
                return VerifyResult(False, count, prev_hash, row.id, f"event {row.id} was changed after it was written")
            prev_hash = row.hash
            expected_id += 1
            count += 1
        last_seen = batch[-1].id

    if head.last_id != count or head.last_hash != prev_hash:
        missing = count + 1 if head.last_id > count else head.last_id + 1
        return VerifyResult(False, count, prev_hash, missing, f"the log ends at event {count} but its head names event {head.last_id}")

    # An event past the head is either appended since the head was read
    # (its transaction moved the head too) or written around the chain.
    last_row = session.execute(sa.select(sa.func.max(table.c.id))).scalar_one()
    if last_row is not None and last_row > head.last_id:
        current = session.execute(sa.select(AuditHead.last_id).where(AuditHead.id == 1)).scalar_one()
        if last_row > current:
            return VerifyResult(
                False, count, prev_hash, current + 1,
                f"event {current + 1} is in the log but its head names event {current}",
            )
    return VerifyResult(True, count, prev_hash)
