"""Auditor pages: issued certificates and audit events, with filters, paging and downloads.

The filters and the downloads match ``GET /v1/certificates`` and
``GET /v1/audit/events``: the same service queries, the same JSON records
(:mod:`server.serialize`), the same CSV columns. Each page shows the result
of verifying the audit hash chain at the top.
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlencode

from flask import flash, g, render_template, request, url_for

from ca.durations import parse_time
from ca.errors import CAError
from server import serialize
from server.errors import InvalidInput
from server.export import export_response, stream_rows
from server.models import AuditEvent, Certificate
from server.web.blueprint import bp, runtime, service, sign_in_required

PAGE_SIZE = 50
# Maximum age of a chain verification result that the pages show before they verify again.
CHAIN_STATUS_MAX_AGE = timedelta(minutes=5)
MAX_ID = 2**63 - 1

CERTIFICATE_FILTERS = ("user", "host", "request", "since", "until", "active")
EVENT_FILTERS = ("actor", "action", "request", "host", "since", "until")


# -- filters --------------------------------------------------------------------


def _int_filter(name: str) -> int | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_ID:
        raise InvalidInput("invalid_parameter", f"{name} must be a whole number from 1 to {MAX_ID}, got {value!r}", field=name)
    return int(value)


def _time_filter(name: str):
    value = request.args.get(name, "").strip()
    if not value:
        return None
    return parse_time(value, field=name)


def _active_filter() -> bool | None:
    value = request.args.get("active", "").strip().lower()
    if value in ("", "any"):
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise InvalidInput("invalid_parameter", f"active must be true or false, got {value!r}", field="active")


def _text_filter(name: str) -> str | None:
    return request.args.get(name, "").strip() or None


def certificate_filters() -> dict:
    """Return the service's certificate filters from the query string; raises InvalidInput or CAError."""
    return {
        "user": _text_filter("user"),
        "host": _text_filter("host"),
        "request": _int_filter("request"),
        "since": _time_filter("since"),
        "until": _time_filter("until"),
        "active": _active_filter(),
    }


def event_filters() -> dict:
    """Return the service's event filters from the query string; raises InvalidInput or CAError."""
    return {
        "actor_name": _text_filter("actor"),
        "action": _text_filter("action"),
        "request": _int_filter("request"),
        "host": _text_filter("host"),
        "since": _time_filter("since"),
        "until": _time_filter("until"),
    }


def _filter_values(names) -> dict:
    """Return the filter fields as the user typed them, to fill the form and build links."""
    return {name: request.args.get(name, "").strip() for name in names}


def _query_string(values: dict, **extra) -> str:
    pairs = {key: value for key, value in {**values, **extra}.items() if value not in (None, "")}
    return urlencode(pairs)


def _cursor() -> int | None:
    value = request.args.get("after", "").strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        return None
    return int(value)


def _chain_status():
    # A full verification reads every event, so the pages show a result at
    # most CHAIN_STATUS_MAX_AGE old, with the time it was computed.
    # NOTE: when that result is older, this page load verifies the whole
    # chain again, which takes tens of seconds at a million events.
    return service().verify_audit(g.viewer, max_age=CHAIN_STATUS_MAX_AGE)


# -- pages ----------------------------------------------------------------------


@bp.get("/certificates")
@sign_in_required
def certificates():
    chain = _chain_status()
    values = _filter_values(CERTIFICATE_FILTERS)
    svc = service()

    rows, next_cursor, status = [], None, 200
    try:
        filters = certificate_filters()
    except (InvalidInput, CAError) as exc:
        flash(getattr(exc, "message", None) or str(exc), "error")
        status = 400
    else:
        rows, next_cursor = svc.list_certificates(g.viewer, cursor=_cursor(), limit=PAGE_SIZE, **filters)

    return render_template(
        "web/certificates.html",
        chain=chain,
        filters=values,
        rows=[serialize.certificate_json(row, svc.now) for row in rows],
        next_url=url_for("web.certificates") + "?" + _query_string(values, after=next_cursor) if next_cursor else None,
        first_url=url_for("web.certificates") + "?" + _query_string(values) if _cursor() else None,
        csv_url=url_for("web.certificates_export", output="csv") + "?" + _query_string(values),
        jsonl_url=url_for("web.certificates_export", output="jsonl") + "?" + _query_string(values),
    ), status


@bp.get("/events")
@sign_in_required
def events():
    chain = _chain_status()
    values = _filter_values(EVENT_FILTERS)
    svc = service()

    rows, next_cursor, status = [], None, 200
    try:
        filters = event_filters()
    except (InvalidInput, CAError) as exc:
        flash(getattr(exc, "message", None) or str(exc), "error")
        status = 400
    else:
        rows, next_cursor = svc.list_events(g.viewer, cursor=_cursor(), limit=PAGE_SIZE, **filters)

    records = []
    for row in rows:
        record = serialize.event_json(row)
        record["details_text"] = json.dumps(record["details"], sort_keys=True, separators=(", ", ": "))
        records.append(record)

    return render_template(
        "web/events.html",
        chain=chain,
        filters=values,
        rows=records,
        next_url=url_for("web.events") + "?" + _query_string(values, after=next_cursor) if next_cursor else None,
        first_url=url_for("web.events") + "?" + _query_string(values) if _cursor() else None,
        csv_url=url_for("web.events_export", output="csv") + "?" + _query_string(values),
        jsonl_url=url_for("web.events_export", output="jsonl") + "?" + _query_string(values),
    ), status


# -- downloads ------------------------------------------------------------------


@bp.get("/certificates.<any(csv, jsonl):output>")
@sign_in_required
def certificates_export(output: str):
    svc = service()
    query = svc.certificate_query(g.viewer, **certificate_filters())
    now = svc.now
    records = stream_rows(runtime().db, query, Certificate.serial, lambda row: serialize.certificate_json(row, now))
    return export_response(records, output, serialize.CERTIFICATE_COLUMNS, "certificates")


@bp.get("/events.<any(csv, jsonl):output>")
@sign_in_required
def events_export(output: str):
    svc = service()
    query = svc.event_query(g.viewer, **event_filters())
    records = stream_rows(runtime().db, query, AuditEvent.id, serialize.event_json)
    return export_response(records, output, serialize.EVENT_COLUMNS, "audit-events")
