"""The JSON API under /v1 and the /healthz probe.

Views parse the body and the query string, authenticate, call the service
layer (:mod:`server.service`) and turn its result into JSON. Every decision
lives in the service layer.
"""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, g, jsonify, request

from ca.durations import parse_time
from server import serialize
from server.export import export_response, stream_rows
from server.errors import InvalidInput, NotFound, ServiceError, TooManyRequests, Unauthorized
from server.models import AuditEvent, CAKeyRecord, Certificate
from server.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Service

logger = logging.getLogger("sshca.server")

api = Blueprint("api", __name__)

MAX_ID = 2**63 - 1
FORMATS = ("json", "csv", "jsonl")


def runtime():
    return current_app.extensions["sshca"]


def _session(write: bool):
    session = runtime().db.write() if write else runtime().db.read()
    g.db_sessions.append(session)
    return session


def service(write: bool = False) -> Service:
    """Return a Service on a session that is closed when the HTTP request ends."""
    return Service(runtime(), _session(write))


def authenticate(svc: Service):
    """Return the user of the request's bearer token.

    Raises Unauthorized, or TooManyRequests once the client address has
    failed too often (see server.ratelimit).
    """
    # NOTE: behind a reverse proxy every client shares the proxy's address,
    # so one guesser can block everyone for a minute. The limit would need
    # the forwarded address, which only a trusted proxy may set.
    address = request.remote_addr or "unknown"
    limiter = runtime().auth_failures
    if limiter.blocked(address):
        raise TooManyRequests(
            "too_many_failures", "too many failed authentications from this address; wait a minute and check your token",
        )

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if not header:
            raise Unauthorized("missing_token", "missing Authorization header; send 'Authorization: Bearer <token>'")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("invalid_token", "the Authorization header must be 'Bearer <token>'")
        user = svc.authenticate(token.strip())
    except Unauthorized as exc:
        limiter.record_failure(address)
        logger.info("authentication failed", extra={"code": exc.code, "address": address})
        raise
    g.user_name = user.name
    return user


def json_body(allowed: set[str]) -> dict:
    """Return the request body as a JSON object with only ``allowed`` fields.

    An empty body counts as ``{}``. Raises InvalidInput naming the problem.
    """
    data = request.get_data(cache=False)
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput("invalid_json", f"the request body is not valid JSON ({exc}); send a JSON object") from None
    except ValueError as exc:
        # Python refuses integers of more than 4300 digits (sys.int_info).
        raise InvalidInput("invalid_json", f"the request body has an invalid number ({exc}); send a JSON object") from None
    except RecursionError:
        raise InvalidInput("invalid_json", "the request body nests arrays or objects too deeply; send a flat JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput("invalid_json", "the request body must be a JSON object such as {\"comment\": \"...\"}")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(
            "unknown_field", f"unknown field '{unknown[0]}'; allowed fields: {', '.join(sorted(allowed))}", field=unknown[0],
        )
    return body


def _check_id(value: int) -> int:
    # Flask's int converter accepts any length, but the database stores 64-bit ids.
    if value > MAX_ID:
        raise NotFound("not_found", f"request {value} not found")
    return value


# -- health and public data ---------------------------------------------------


@api.get("/healthz")
def healthz():
    try:
        with runtime().db.read() as session:
            session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        logger.exception("health check failed: database unreachable")
        return jsonify({"status": "error", "database": "unreachable"}), 503
    snapshot = runtime().snapshot
    return jsonify({
        "status": "ok",
        "database": "ok",
        "policy_sha256": snapshot.policy.sha256,
        "inventory_sha256": snapshot.inventory.sha256,
        "ca_fingerprint": snapshot.signer.fingerprint,
    })


@api.get("/v1/ca")
def ca_keys():
    session = _session(write=False)
    signer = runtime().snapshot.signer
    rows = session.execute(
        sa.select(CAKeyRecord).where(CAKeyRecord.retired_at.is_(None)).order_by(CAKeyRecord.signing.desc(), CAKeyRecord.id)
    ).scalars().all()
    keys = [
        {"public_key": row.public_key, "fingerprint": row.fingerprint, "signing": row.signing, "created_at": serialize.iso(row.created_at)}
        for row in rows
    ]
    if not keys:
        keys = [{"public_key": signer.public_line(), "fingerprint": signer.fingerprint, "signing": True, "created_at": None}]
    return jsonify({"keys": keys})


@api.get("/v1/krl")
def krl():
    data = runtime().krl(_session(write=False))
    return Response(data, mimetype="application/octet-stream", headers={"Cache-Control": "no-cache"})


# -- requests -----------------------------------------------------------------


@api.post("/v1/requests")
def create_request():
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"hosts", "login", "duration", "reason", "starts_at"})
    created = svc.create_request(
        actor, hosts=body.get("hosts"), login=body.get("login"), duration=body.get("duration"),
        reason=body.get("reason"), starts_at=body.get("starts_at"),
    )
    return _request_response(actor, created.id, 201)


def _request_response(actor, request_id: int, status: int = 200):
    # A read session of its own: the write session has committed, and reusing
    # it would take SQLite's write lock again.
    svc = service(write=False)
    return jsonify(serialize.request_json(svc.get_request(actor, request_id), svc.now)), status


@api.get("/v1/requests")
def list_requests():
    svc = service()
    actor = authenticate(svc)
    state = request.args.get("state") or None
    items = svc.list_requests(actor, state=state)
    return jsonify({"requests": [serialize.request_json(item, svc.now) for item in items]})


@api.get("/v1/requests/<int:request_id>")
def get_request(request_id):
    svc = service()
    actor = authenticate(svc)
    return jsonify(serialize.request_json(svc.get_request(actor, _check_id(request_id)), svc.now))


@api.post("/v1/requests/<int:request_id>/approve")
def approve(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"comment"})
    svc.approve(actor, _check_id(request_id), comment=body.get("comment"))
    return _request_response(actor, request_id)


@api.post("/v1/requests/<int:request_id>/deny")
def deny(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"comment"})
    svc.deny(actor, _check_id(request_id), comment=body.get("comment"))
    return _request_response(actor, request_id)


@api.post("/v1/requests/<int:request_id>/cancel")
def cancel(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    json_body(set())
    svc.cancel(actor, _check_id(request_id))
    return _request_response(actor, request_id)


@api.post("/v1/requests/<int:request_id>/revoke")
def revoke(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"reason"})
    svc.revoke(actor, _check_id(request_id), reason=body.get("reason"))
    return _request_response(actor, request_id)


@api.post("/v1/requests/<int:request_id>/extend")
def extend(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"duration", "reason"})
    created = svc.extend(actor, _check_id(request_id), duration=body.get("duration"), reason=body.get("reason"))
    return _request_response(actor, created.id, 201)


@api.post("/v1/requests/<int:request_id>/certificate")
def certificate(request_id):
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"public_key"})
    issued = svc.issue_certificate(actor, _check_id(request_id), public_key=body.get("public_key"))
    return jsonify(serialize.issued_json(issued)), 201


@api.post("/v1/revoked-keys")
def revoke_key():
    svc = service(write=True)
    actor = authenticate(svc)
    body = json_body({"public_key", "reason"})
    revoked = svc.revoke_key(actor, public_key=body.get("public_key"), reason=body.get("reason"))
    return jsonify({
        "fingerprint": revoked.fingerprint, "public_key": revoked.public_key, "reason": revoked.reason,
        "revoked_by": revoked.revoked_by, "created_at": serialize.iso(revoked.created_at),
    }), 201


# -- auditor views ----------------------------------------------------------------


def _query_args(allowed: set[str]) -> dict:
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise InvalidInput(
            "unknown_parameter", f"unknown query parameter '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}",
            field=unknown[0],
        )
    return request.args


def _int_arg(args, name: str, *, minimum: int = 1, maximum: int = MAX_ID) -> int | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or not minimum <= int(value) <= maximum:
        raise InvalidInput("invalid_parameter", f"query parameter '{name}' must be a whole number from {minimum} to {maximum}, got {value!r}", field=name)
    return int(value)


def _time_arg(args, name: str):
    value = args.get(name)
    if not value:
        return None
    return parse_time(value, field=name)


def _format_arg(args) -> str:
    value = args.get("format", "json")
    if value not in FORMATS:
        raise InvalidInput("invalid_parameter", f"format {value!r} is not supported; use json, csv or jsonl", field="format")
    return value


def _bool_arg(args, name: str) -> bool | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise InvalidInput("invalid_parameter", f"query parameter '{name}' must be true or false, got {value!r}", field=name)


@api.get("/v1/certificates")
def list_certificates():
    svc = service()
    actor = authenticate(svc)
    args = _query_args({"user", "host", "request", "since", "until", "active", "format", "cursor", "limit"})
    filters = {
        "user": args.get("user") or None,
        "host": args.get("host") or None,
        "request": _int_arg(args, "request"),
        "since": _time_arg(args, "since"),
        "until": _time_arg(args, "until"),
        "active": _bool_arg(args, "active"),
    }
    output = _format_arg(args)
    now = svc.now

    if output == "json":
        rows, next_cursor = svc.list_certificates(
            actor, cursor=_int_arg(args, "cursor", minimum=0),
            limit=_int_arg(args, "limit", maximum=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE, **filters,
        )
        return jsonify({
            "certificates": [serialize.certificate_json(row, now) for row in rows],
            "next": str(next_cursor) if next_cursor is not None else None,
        })

    query = svc.certificate_query(actor, **filters)
    records = stream_rows(runtime().db, query, Certificate.serial, lambda row: serialize.certificate_json(row, now))
    return export_response(records, output, serialize.CERTIFICATE_COLUMNS, "certificates")


@api.get("/v1/audit/events")
def list_events():
    svc = service()
    actor = authenticate(svc)
    args = _query_args({"actor", "action", "request", "host", "since", "until", "format", "cursor", "limit", "order"})
    filters = {
        "actor_name": args.get("actor") or None,
        "action": args.get("action") or None,
        "request": _int_arg(args, "request"),
        "host": args.get("host") or None,
        "since": _time_arg(args, "since"),
        "until": _time_arg(args, "until"),
    }
    order = args.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInput("invalid_parameter", f"order {order!r} is not supported; use asc or desc", field="order")
    output = _format_arg(args)

    if output == "json":
        rows, next_cursor = svc.list_events(
            actor, cursor=_int_arg(args, "cursor", minimum=0),
            limit=_int_arg(args, "limit", maximum=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE,
            descending=order == "desc", **filters,
        )
        return jsonify({
            "events": [serialize.event_json(row) for row in rows],
            "next": str(next_cursor) if next_cursor is not None else None,
        })

    query = svc.event_query(actor, **filters)
    records = stream_rows(runtime().db, query, AuditEvent.id, serialize.event_json)
    return export_response(records, output, serialize.EVENT_COLUMNS, "audit-events")


@api.get("/v1/audit/verify")
def verify():
    svc = service()
    actor = authenticate(svc)
    return jsonify(svc.verify_audit(actor).to_json())


# -- errors ---------------------------------------------------------------------


def error_response(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


@api.app_errorhandler(ServiceError)
def handle_service_error(exc: ServiceError):
    return error_response(exc.status, exc.code, exc.message)

