"""Several server processes issuing certificates and deciding requests at once, on both databases."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.server.conftest import BACKENDS, new_public_key
from tests.support.live_server import DEFAULT_USERS, LiveServer

pytestmark = pytest.mark.slow

WORKERS = 4
CLIENTS = 12
DECIDED_REQUESTS = 10
ISSUING_REQUESTS = 4
CERTIFICATES_EACH = 10


@pytest.fixture(params=BACKENDS)
def busy_server(request, tmp_path):
    database_url = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        database_url = cluster.url(cluster.create_database())
    users = dict(DEFAULT_USERS, gina=["dba-leads"])
    with LiveServer(tmp_path / "server", users=users, database_url=database_url, workers=WORKERS) as server:
        yield server


def create(server, user="alice") -> int:
    response = server.post("/v1/requests", user=user, json={
        "hosts": ["db1.prod.example.com"], "login": "deploy", "duration": "1h", "reason": "load test"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_parallel_issuing_and_deciding(busy_server):
    server = busy_server
    tokens = {name: server.token(name) for name in ("alice", "bob", "carol", "gina", "erin")}
    decided = [create(server) for _ in range(DECIDED_REQUESTS)]
    issuing = [create(server) for _ in range(ISSUING_REQUESTS)]
    for request_id in issuing:
        for approver in ("bob", "carol"):
            assert server.post(f"/v1/requests/{request_id}/approve", user=approver, json={}).status_code == 200

    # Three approvers race on each decided request; on every other one gina denies instead.
    jobs = []
    for index, request_id in enumerate(decided):
        jobs.append(("bob", f"/v1/requests/{request_id}/approve", {"comment": "ok"}))
        jobs.append(("carol", f"/v1/requests/{request_id}/approve", {"comment": "ok"}))
        action = "deny" if index % 2 else "approve"
        jobs.append(("gina", f"/v1/requests/{request_id}/{action}", {"comment": "race"}))
    for request_id in issuing:
        for _ in range(CERTIFICATES_EACH):
            jobs.append(("alice", f"/v1/requests/{request_id}/certificate", {"public_key": new_public_key()}))
    # Interleave decisions and issuance, the same way on every run.
    random.Random(7).shuffle(jobs)

    def run(job):
        user, path, body = job
        with requests.Session() as http:
            response = http.post(server.url + path, json=body, timeout=120,
                                 headers={"Authorization": f"Bearer {tokens[user]}"})
        return path, response.status_code, response.json()

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(run, jobs))

    issued = [body for path, status, body in results if path.endswith("/certificate")]
    assert all("serial" in body for body in issued), [body for body in issued if "serial" not in body][:3]
    serials = [body["serial"] for body in issued]
    assert len(serials) == ISSUING_REQUESTS * CERTIFICATES_EACH
    assert len(set(serials)) == len(serials)
    assert 0 not in serials

    decisions = [(path, status, body) for path, status, body in results if not path.endswith("/certificate")]
    assert {status for _, status, _ in decisions} <= {200, 409}, [d for d in decisions if d[1] not in (200, 409)][:3]

    erin = {"Authorization": f"Bearer {tokens['erin']}"}
    events = []
    cursor = None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = requests.get(server.url + "/v1/audit/events", params=params, headers=erin, timeout=60).json()
        events += page["events"]
        cursor = page["next"]
        if cursor is None:
            break

    assert [event["id"] for event in events] == list(range(1, len(events) + 1))
    state_changes = Counter(
        event["request_id"] for event in events if event["action"] in ("request.approved", "request.denied")
    )
    for request_id in decided:
        assert state_changes[request_id] == 1, request_id
        body = server.get(f"/v1/requests/{request_id}", user="erin").json()
        approvals = [a for a in body["approvals"] if a["decision"] == "approve"]
        if body["state"] == "approved":
            assert len(approvals) == 2
        else:
            assert body["state"] == "denied"
            assert len(approvals) <= 1

    issued_events = [event for event in events if event["action"] == "certificate.issued"]
    assert sorted(event["serial"] for event in issued_events) == sorted(serials)
    certificates = server.get("/v1/certificates?limit=1000", user="erin").json()["certificates"]
    assert sorted(item["serial"] for item in certificates) == sorted(serials)

    verify = server.get("/v1/audit/verify", user="erin").json()
    assert verify["ok"] is True, verify
    assert verify["events"] == len(events)


def test_verify_while_issuing(busy_server):
    # On PostgreSQL each statement reads newer commits, so verification must
    # not mistake events appended while it reads for a broken chain.
    server = busy_server
    request_id = create(server)
    for approver in ("bob", "carol"):
        assert server.post(f"/v1/requests/{request_id}/approve", user=approver, json={}).status_code == 200
    alice = {"Authorization": f"Bearer {server.token('alice')}"}
    erin = {"Authorization": f"Bearer {server.token('erin')}"}

    def issue(_):
        with requests.Session() as http:
            response = http.post(f"{server.url}/v1/requests/{request_id}/certificate", headers=alice,
                                 json={"public_key": new_public_key()}, timeout=120)
        return response.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        issuing = pool.map(issue, range(60))
        results = []
        with requests.Session() as http:
            for _ in range(15):
                results.append(http.get(f"{server.url}/v1/audit/verify", headers=erin, timeout=120).json())
        statuses = list(issuing)

    assert set(statuses) == {201}
    assert [result for result in results if not result["ok"]] == []
