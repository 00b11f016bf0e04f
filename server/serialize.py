"""JSON shapes of requests, certificates and audit events, shared by the API and the web pages."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from ca.durations import format_duration
from server.audit import format_time
from server.models import AccessRequest, AuditEvent, Certificate
from server.service import effective_state, iso

CERTIFICATE_COLUMNS = (
    "serial", "key_id", "user", "request_id", "login", "hosts", "principals", "key_fingerprint",
    "ca_fingerprint", "valid_after", "valid_before", "issued_at", "revoked_at",
)
EVENT_COLUMNS = ("id", "time", "actor", "action", "request_id", "serial", "details", "prev_hash", "hash")


def request_json(request: AccessRequest, now: datetime) -> dict:
    """Return a request with its approvals and certificates (both must be loaded)."""
    return {
        "id": request.id,
        "state": effective_state(request, now),
        "requester": request.requester.name,
        "hosts": list(request.hosts),
        "login": request.login,
        "reason": request.reason,
        "rule": request.rule,
        "duration": format_duration(timedelta(seconds=request.duration_seconds)),
        "duration_seconds": request.duration_seconds,
        "approvals_required": request.approvals_required,
        "approvals": [
            {
                "approver": approval.approver.name,
                "decision": approval.decision,
                "comment": approval.comment,
                "time": iso(approval.created_at),
            }
            for approval in request.approvals
        ],
        "created_at": iso(request.created_at),
        "requested_start": iso(request.requested_start),
        "starts_at": iso(request.starts_at),
        "ends_at": iso(request.ends_at),
        "expires_at": iso(request.expires_at),
        "closed_at": iso(request.closed_at),
        "extends": request.extends_id,
        "certificates": [
            {
                "serial": certificate.serial,
                "key_id": certificate.key_id,
                "principals": list(certificate.principals),
                "key_fingerprint": certificate.key_fingerprint,
                "valid_after": iso(certificate.valid_after),
                "valid_before": iso(certificate.valid_before),
                "revoked_at": iso(certificate.revoked_at),
            }
            for certificate in request.certificates
        ],
        "policy_sha256": request.policy_sha256,
        "inventory_sha256": request.inventory_sha256,
    }


def issued_json(certificate: Certificate) -> dict:
    """Return what the certificate endpoint sends back."""
    return {
        "certificate": certificate.certificate,
        "serial": certificate.serial,
        "key_id": certificate.key_id,
        "principals": list(certificate.principals),
        "valid_after": iso(certificate.valid_after),
        "valid_before": iso(certificate.valid_before),
        "ca_fingerprint": certificate.ca_fingerprint,
        "key_fingerprint": certificate.key_fingerprint,
    }


def certificate_json(certificate: Certificate, now: datetime) -> dict:
    return {
        "serial": certificate.serial,
        "key_id": certificate.key_id,
        "user": certificate.user.name,
        "request_id": certificate.request_id,
        "login": certificate.login,
        "hosts": list(certificate.hosts),
        "principals": list(certificate.principals),
        "key_fingerprint": certificate.key_fingerprint,
        "ca_fingerprint": certificate.ca_fingerprint,
        "valid_after": iso(certificate.valid_after),
        "valid_before": iso(certificate.valid_before),
        "issued_at": iso(certificate.issued_at),
        "revoked_at": iso(certificate.revoked_at),
        "active": certificate.revoked_at is None and certificate.valid_before > now,
    }


def event_json(event: AuditEvent) -> dict:
    """Return an audit event with exactly the values its hash covers, plus both hashes."""
    return {
        "id": event.id,
        "time": format_time(event.time),
        "actor": event.actor,
        "action": event.action,
        "request_id": event.request_id,
        "serial": event.serial,
        "details": json.loads(event.details),
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def csv_row(record: dict, columns) -> list[str]:
    """Flatten a JSON record into CSV cells; lists and objects become JSON text."""
    row = []
    for column in columns:
        value = record.get(column)
        if value is None:
            row.append("")
        elif isinstance(value, (list, dict)):
            row.append(json.dumps(value, sort_keys=True, separators=(",", ":")))
        else:
            row.append(str(value))
    return row
