"""Measure auditor queries at a million audit events.

Fills a fresh data directory's database with a valid hash chain of
``--events`` audit events (50 actors, a mix of actions, a year of
timestamps) and ``--certificates`` certificate rows. Then it times the
auditor's API calls in process through Flask's test client: first pages
with each filter the API offers, and a page deep in the cursor chain. Each
query runs ``--repeat`` times; the table shows the median and the maximum.

Usage: .venv/bin/python bench/audit_query_bench.py [--database sqlite|postgres]
"""

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server import admin as admin_ops  # noqa: E402
from server import audit  # noqa: E402
from server.app import create_app  # noqa: E402
from server.config import load_config  # noqa: E402
from server.models import AccessRequest, AuditEvent, AuditHead, Certificate, User  # noqa: E402
from tests.support.postgres import PostgresCluster, find_bin_dir  # noqa: E402

ACTIONS = ["request.created", "request.approval", "request.approved", "certificate.issued", "request.revoked"]
BATCH = 20_000


def fill_events(engine, count, actors, start):
    """Insert ``count`` chained events in batches; return the head hash."""
    random.seed(7)
    prev_hash = audit.GENESIS_HASH
    step = timedelta(days=365) / count
    with engine.begin() as connection:
        for first in range(1, count + 1, BATCH):
            rows = []
            for event_id in range(first, min(first + BATCH, count + 1)):
                action = ACTIONS[event_id % len(ACTIONS)]
                fields = {
                    "id": event_id,
                    "time": audit.format_time(start + step * event_id),
                    "actor": actors[event_id % len(actors)],
                    "action": action,
                    "request_id": event_id // 4 + 1,
                    "serial": event_id if action == "certificate.issued" else None,
                    "details": {"comment": "benchmark"},
                }
                event_hash = audit.compute_hash(prev_hash, fields)
                rows.append({
                    "id": event_id, "time": start + step * event_id, "actor": fields["actor"],
                    "action": action, "request_id": fields["request_id"], "serial": fields["serial"],
                    "details": audit.canonical_json(fields["details"]), "prev_hash": prev_hash, "hash": event_hash,
                })
                prev_hash = event_hash
            connection.execute(sa.insert(AuditEvent), rows)
        connection.execute(sa.update(AuditHead).where(AuditHead.id == 1).values(last_id=count, last_hash=prev_hash))
    return prev_hash


def fill_certificates(engine, count, user_ids, start):
    """Insert ``count`` certificate rows, one request per certificate."""
    step = timedelta(days=365) / count
    with engine.begin() as connection:
        for first in range(1, count + 1, BATCH):
            numbers = range(first, min(first + BATCH, count + 1))
            requests = []
            certificates = []
            for number in numbers:
                user_id = user_ids[number % len(user_ids)]
                issued = start + step * number
                host = f"db{number % 200}.prod.example.com"
                requests.append({
                    "id": number, "requester_id": user_id, "hosts": [host], "login": "deploy",
                    "reason": "benchmark", "rule": "bench", "approvals_required": 1, "state": "approved",
                    "duration_seconds": 3600, "created_at": issued, "expires_at": issued + timedelta(hours=24),
                    "starts_at": issued, "ends_at": issued + timedelta(hours=1),
                    "policy_sha256": "0" * 64, "inventory_sha256": "0" * 64,
                })
                certificates.append({
                    "serial": number, "request_id": number, "user_id": user_id, "key_id": f"bench {number}",
                    "principals": [f"deploy@{host}"], "hosts": [host], "login": "deploy",
                    "valid_after": issued, "valid_before": issued + timedelta(hours=1), "issued_at": issued,
                })
            connection.execute(sa.insert(AccessRequest), requests)
            connection.execute(sa.insert(Certificate), certificates)


def time_query(client, path, headers, repeat):
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} returned {response.status_code}: {response.get_data(as_text=True)[:200]}")
    return statistics.median(timings), max(timings), response.get_json()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sshca-audit-bench-"))
    cluster = None
    try:
        database_url = None
        if args.database == "postgres":
            cluster = PostgresCluster(find_bin_dir()).start()
            database_url = cluster.url(cluster.create_database("bench"))
        config_path = admin_ops.init_data_dir(workdir, database_url=database_url)
        config = load_config(config_path, environ={})
        actors = [f"user{number}" for number in range(50)]
        for name in actors:
            admin_ops.add_user(config, name, groups=["sre"])
        admin_ops.add_user(config, "auditor", groups=[], auditor=True)
        _, token = admin_ops.create_token(config, "auditor")

        app = create_app(config, web=False)
        engine = app.extensions["sshca"].db.engine
        with engine.connect() as connection:
            user_ids = [row.id for row in connection.execute(sa.select(User.id).where(User.name.in_(actors)))]
            existing = connection.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one()
        # Start after the events admin commands already wrote, so the chain stays valid.
        with engine.begin() as connection:
            connection.execute(sa.delete(AuditEvent))
            connection.execute(sa.update(AuditHead).values(last_id=0, last_hash=audit.GENESIS_HASH))

        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        started = time.perf_counter()
        fill_events(engine, args.events, actors, start)
        fill_certificates(engine, args.certificates, user_ids, start)
        print(f"database: {args.database}; filled {args.events:,} events (replacing {existing}) and "
              f"{args.certificates:,} certificates in {time.perf_counter() - started:.0f} s")

        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        middle = start + timedelta(days=180)
        window = f"since={middle:%Y-%m-%dT%H:%M:%SZ}&until={middle + timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
        queries = [
            ("events, first page", "/v1/audit/events?limit=100"),
            ("events by actor", "/v1/audit/events?actor=user7&limit=100"),
            ("events by action", "/v1/audit/events?action=request.revoked&limit=100"),
            ("events by request", f"/v1/audit/events?request={args.events // 8}"),
            ("events in one day", f"/v1/audit/events?{window}&limit=100"),
            ("events by actor in one day", f"/v1/audit/events?actor=user7&{window}&limit=100"),
            ("events, page at id 900,000", f"/v1/audit/events?cursor={int(args.events * 0.9)}&limit=100"),
            ("events, newest first", "/v1/audit/events?order=desc&limit=100"),
            ("certificates, first page", "/v1/certificates?limit=100"),
            ("certificates by user", "/v1/certificates?user=user7&limit=100"),
            ("certificates by request", f"/v1/certificates?request={args.certificates // 2}"),
            ("certificates in one day", f"/v1/certificates?{window}&limit=100"),
            ("certificates by host", "/v1/certificates?host=db7.prod.example.com&limit=100"),
            ("certificates active now", "/v1/certificates?active=true&limit=100"),
        ]
        print(f"{'query':<30} {'median ms':>9} {'max ms':>7} {'rows':>5}")
        for name, path in queries:
            median, worst, body = time_query(client, path, headers, args.repeat)
            rows = len(body.get("events", body.get("certificates", [])))
            print(f"{name:<30} {median:>9.1f} {worst:>7.1f} {rows:>5}")

        started = time.perf_counter()
        verify = client.get("/v1/audit/verify", headers=headers).get_json()
        print(f"full chain verification: ok={verify['ok']} over {verify['events']:,} events "
              f"in {time.perf_counter() - started:.1f} s")
        app.extensions["sshca"].close()
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
