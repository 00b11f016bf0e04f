"""Audit log over the API: listing, filters, paging, exports, verification and tampering."""

from __future__ import annotations

import csv
import io
import json
import logging

import pytest

from server.audit import canonical_json


def make_history(api) -> dict:
    """Create one request with two approvals and a certificate; return the certificate response."""
    approved = api.approved_request()
    return api.certificate(approved["id"]).get_json()


def test_auditor_only(api):
    for path in ("/v1/audit/events", "/v1/audit/verify", "/v1/certificates"):
        assert api.get(path, "alice").status_code == 403, path
        assert api.get(path, "frank").status_code == 403, path
        assert api.get(path).status_code == 401, path
        assert api.get(path, "erin").status_code == 200, path


def test_events_list_and_filters(api):
    issued = make_history(api)
    request_id = int(issued["key_id"].split("request=")[1].split()[0])

    events = api.get("/v1/audit/events", "erin").get_json()["events"]
    actions = [event["action"] for event in events]
    assert actions[-5:] == ["request.created", "request.approval", "request.approval", "request.approved",
                            "certificate.issued"]
    assert [event["id"] for event in events] == sorted(event["id"] for event in events)

    by_actor = api.get("/v1/audit/events?actor=bob", "erin").get_json()["events"]
    assert [event["action"] for event in by_actor] == ["request.approval"]
    by_action = api.get("/v1/audit/events?action=certificate.issued", "erin").get_json()["events"]
    assert [event["serial"] for event in by_action] == [issued["serial"]]
    by_request = api.get(f"/v1/audit/events?request={request_id}", "erin").get_json()["events"]
    assert len(by_request) == 5
    issued_event = by_action[0]
    since = api.get(f"/v1/audit/events?since={issued_event['time'].replace('Z', '%2B00:00')}", "erin").get_json()["events"]
    assert issued_event["id"] in [event["id"] for event in since]
    until = api.get(f"/v1/audit/events?until={issued_event['time'].replace('Z', '%2B00:00')}", "erin").get_json()["events"]
    assert issued_event["id"] not in [event["id"] for event in until]


def test_events_cursor_paging(api):
    for _ in range(3):
        api.create_request()
    total = len(api.events())

    seen = []
    cursor = None
    pages = 0
    while True:
        query = "/v1/audit/events?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = api.get(query, "erin").get_json()
        seen += [event["id"] for event in body["events"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break

    assert seen == list(range(1, total + 1))
    assert pages == -(-total // 2)
    descending = api.get("/v1/audit/events?order=desc&limit=2", "erin").get_json()
    assert [event["id"] for event in descending["events"]] == [total, total - 1]


@pytest.mark.parametrize("query", ["limit=0", "limit=5000", "limit=x", "cursor=-1", "request=abc", "since=yesterday",
                                   "format=xml", "order=sideways", "colour=blue"])
def test_events_bad_query_rejected(api, query):
    response = api.get(f"/v1/audit/events?{query}", "erin")
    assert response.status_code == 400
    assert query.split("=")[1] in response.get_json()["error"]["message"] or query.split("=")[0] in response.get_json()["error"]["message"]


def test_events_exports(api):
    make_history(api)
    events = api.get("/v1/audit/events?limit=1000", "erin").get_json()["events"]

    jsonl = api.get("/v1/audit/events?format=jsonl", "erin")
    assert jsonl.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in jsonl.data.decode().splitlines()]
    assert lines == events

    exported = api.get("/v1/audit/events?format=csv&action=certificate.issued", "erin")
    assert exported.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(exported.data.decode())))
    [issued] = [event for event in events if event["action"] == "certificate.issued"]
    assert len(rows) == 1
    assert rows[0]["id"] == str(issued["id"])
    assert rows[0]["serial"] == str(issued["serial"])
    assert json.loads(rows[0]["details"]) == issued["details"]
    assert rows[0]["hash"] == issued["hash"]


def test_export_streams_many_events(api):
    for _ in range(30):
        api.create_request()
    total = len(api.events())

    # Smaller export batches than events, so the stream spans several queries.
    from server import export

    original = export.EXPORT_BATCH
    export.EXPORT_BATCH = 7
    try:
        response = api.get("/v1/audit/events?format=jsonl", "erin")
        ids = [json.loads(line)["id"] for line in response.data.decode().splitlines()]
    finally:
        export.EXPORT_BATCH = original
    assert ids == list(range(1, total + 1))


def test_certificates_list_filters_and_exports(api):
    first = make_history(api)
    web = api.approved_request("dave", approvers=("bob",), hosts=["web1.prod.example.com"])
    second = api.certificate(web["id"], "dave").get_json()

    def serials(query=""):
        response = api.get("/v1/certificates" + query, "erin")
        assert response.status_code == 200, response.get_json()
        return [item["serial"] for item in response.get_json()["certificates"]]

    assert serials() == [first["serial"], second["serial"]]
    assert serials("?user=dave") == [second["serial"]]
    assert serials("?host=db1.prod.example.com") == [first["serial"]]
    assert serials("?host=web1.prod.example.com") == [second["serial"]]
    assert serials(f"?request={web['id']}") == [second["serial"]]
    assert serials("?active=true") == [first["serial"], second["serial"]]
    api.post(f"/v1/requests/{web['id']}/revoke", "dave", json={"reason": "done"})
    assert serials("?active=true") == [first["serial"]]
    assert serials("?active=false") == [second["serial"]]
    assert serials("?limit=1") == [first["serial"]]
    wildcard = api.get("/v1/certificates?host=%25", "erin")
    assert wildcard.status_code == 400
    assert wildcard.get_json()["error"]["code"] == "invalid_host"
    page = api.get("/v1/certificates?limit=1", "erin").get_json()
    assert serials(f"?limit=1&cursor={page['next']}") == [second["serial"]]

    rows = list(csv.DictReader(io.StringIO(api.get("/v1/certificates?format=csv", "erin").data.decode())))
    assert [row["serial"] for row in rows] == [str(first["serial"]), str(second["serial"])]
    assert rows[0]["key_id"] == first["key_id"]
    jsonl = api.get("/v1/certificates?format=jsonl&user=alice", "erin").data.decode().splitlines()
    assert [json.loads(line)["serial"] for line in jsonl] == [first["serial"]]


def test_verify_intact_chain(api):
    make_history(api)

    body = api.get("/v1/audit/verify", "erin").get_json()

    events = api.events()
    assert body == {"ok": True, "events": len(events), "head": events[-1].hash}


def test_event_hash_covers_canonical_fields(api):
    make_history(api)
    import hashlib

    previous = "0" * 64
    for event in api.get("/v1/audit/events?limit=1000", "erin").get_json()["events"]:
        fields = {key: event[key] for key in ("id", "time", "actor", "action", "request_id", "serial", "details")}
        expected = hashlib.sha256(previous.encode() + canonical_json(fields).encode()).hexdigest()
        assert event["prev_hash"] == previous
        assert event["hash"] == expected
        previous = event["hash"]


def verify(api) -> dict:
    return api.get("/v1/audit/verify", "erin").get_json()


def test_tamper_edit_detected(api):
    make_history(api)
    [target] = api.events("request.approval")[:1]

    api.execute("UPDATE audit_events SET details = :details WHERE id = :id",
                details=target.details.replace('"comment":"ok"', '"comment":"OK"'), id=target.id)

    assert verify(api)["ok"] is False
    assert verify(api)["first_bad_event"] == target.id


@pytest.mark.parametrize("column,value", [("actor", "mallory"), ("action", "request.denied"), ("serial", 99),
                                          ("request_id", 77)])
def test_tamper_edit_of_any_column_detected(api, column, value):
    make_history(api)
    target = api.events()[-2]

    api.execute(f"UPDATE audit_events SET {column} = :value WHERE id = :id", value=value, id=target.id)

    assert verify(api)["first_bad_event"] == target.id


def test_tamper_time_edit_detected(api):
    make_history(api)
    target = api.events()[2]
    api.execute("UPDATE audit_events SET time = :time WHERE id = :id",
                time=target.time.replace(tzinfo=None, microsecond=(target.time.microsecond + 1) % 1000000), id=target.id)
    assert verify(api)["first_bad_event"] == target.id


def test_tamper_delete_detected(api):
    make_history(api)
    target = api.events()[3]

    api.execute("DELETE FROM audit_events WHERE id = :id", id=target.id)

    result = verify(api)
    assert result["ok"] is False
    assert result["first_bad_event"] == target.id


def test_tamper_delete_last_detected(api):
    make_history(api)
    last = api.events()[-1]

    api.execute("DELETE FROM audit_events WHERE id = :id", id=last.id)

    result = verify(api)
    assert result["ok"] is False
    assert result["first_bad_event"] == last.id


def test_tamper_reorder_detected(api):
    make_history(api)
    first, second = api.events()[2:4]

    # Swap the two rows' positions: each keeps its content but takes the other's id.
    api.execute("UPDATE audit_events SET id = -1 WHERE id = :id", id=first.id)
    api.execute("UPDATE audit_events SET id = :new WHERE id = :old", new=first.id, old=second.id)
    api.execute("UPDATE audit_events SET id = :new WHERE id = -1", new=second.id)

    result = verify(api)
    assert result["ok"] is False
    assert result["first_bad_event"] == first.id


def test_tamper_rehash_of_one_event_detected(api):
    # Recomputing an edited event's own hash still breaks the link to the next one.
    make_history(api)
    events = api.events()
    target = events[2]
    from server.audit import compute_hash, event_fields

    target.actor = "mallory"
    new_hash = compute_hash(target.prev_hash, event_fields(target))
    api.execute("UPDATE audit_events SET actor = 'mallory', hash = :hash WHERE id = :id", hash=new_hash, id=target.id)

    assert verify(api)["first_bad_event"] == events[3].id


def test_audit_events_logged_as_json_lines(api, caplog):
    caplog.set_level(logging.INFO, logger="sshca.audit")

    issued = make_history(api)

    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "sshca.audit"]
    assert [line["action"] for line in lines][-1] == "certificate.issued"
    assert lines[-1]["serial"] == issued["serial"]
    stored = api.events()[-1]
    assert lines[-1]["hash"] == stored.hash
    for record in caplog.records:
        for token in api.tokens.values():
            assert token not in record.getMessage()


@pytest.mark.parametrize("parameter", ["request", "cursor", "limit"])
@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "-1", "1.5"])
def test_non_ascii_digits_rejected_in_query(api, parameter, value):
    response = api.get(f"/v1/audit/events?{parameter}={value}", "erin")

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_parameter"


def test_events_filtered_by_host(api):
    on_db1 = api.create_request(hosts=["db1.prod.example.com"])
    on_group = api.create_request(hosts=["group:prod-db"], login="postgres")
    on_web = api.create_request(hosts=["web1.prod.example.com"])

    def request_ids(host):
        events = api.get(f"/v1/audit/events?host={host}", "erin").get_json()["events"]
        return {event["request_id"] for event in events}

    assert request_ids("db1.prod.example.com") == {on_db1["id"], on_group["id"]}
    assert request_ids("db2.prod.example.com") == {on_group["id"]}
    assert request_ids("web1.prod.example.com") == {on_web["id"]}
    bad = api.get("/v1/audit/events?host=db1%25", "erin")
    assert bad.status_code == 400
    assert "db1%" in bad.get_json()["error"]["message"]
