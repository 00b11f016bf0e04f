"""Measure certificate issuance through the HTTP API under concurrent load.

Starts a real ``sshca serve`` (gunicorn) on 127.0.0.1 on SQLite or on a
PostgreSQL cluster started from initdb, and creates one approved request
per client. Then wrk drives ``POST /v1/requests/<id>/certificate``. Every
call checks the token, re-checks the request against policy and inventory,
allocates a serial, signs, appends the audit event and commits. It prints
the rate and latency percentiles for each client count, then verifies that
the audit chain is intact and that every 200 response left a certificate row.

Usage: .venv/bin/python bench/issue_bench.py --database sqlite --clients 8 32
Needs wrk (Debian package wrk; `make bench` installs it).
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.live_server import LiveServer  # noqa: E402
from tests.support.postgres import PostgresCluster, find_bin_dir  # noqa: E402

POLICY = """\
[defaults]
max_duration = "8h"
request_ttl = "24h"
clock_skew = "60s"

[[rules]]
name = "bench"
requesters = ["group:sre"]
hosts = ["group:bench"]
logins = ["deploy"]
max_duration = "8h"
approvals = 1
approvers = ["group:leads"]
"""

INVENTORY = """\
[[hosts]]
name = "bench1.example.com"
groups = ["bench"]
logins = ["deploy"]
"""

WRK_SCRIPT = """\
-- Each wrk thread (one connection each) issues certificates on its own request.
local ids = {ids}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("request_id", ids[(counter - 1) % #ids + 1])
end

function init(args)
  path = "/v1/requests/" .. request_id .. "/certificate"
  wrk.method = "POST"
  wrk.body = {body}
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer {token}"
end

function request()
  return wrk.format(nil, path)
end
"""


def lua_string(text):
    return json.dumps(text)


def parse_wrk(output):
    """Return requests/s, latency percentiles (ms) and the count of non-2xx replies."""

    def to_ms(value, unit):
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    percentiles = {
        int(match.group(1)): to_ms(match.group(2), match.group(3))
        for match in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    }
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return rate, percentiles, total, int(errors.group(1)) if errors else 0


def prepare_requests(server, count):
    ids = []
    for _ in range(count):
        response = server.post(
            "/v1/requests",
            user="eng",
            json={"hosts": ["bench1.example.com"], "login": "deploy", "duration": "8h", "reason": "benchmark"},
        )
        response.raise_for_status()
        request_id = response.json()["id"]
        server.post(f"/v1/requests/{request_id}/approve", user="lead", json={"comment": "ok"}).raise_for_status()
        ids.append(request_id)
    return ids


def run_load(server, ids, clients, seconds, public_key, workdir):
    script = workdir / f"issue-{clients}.lua"
    body = json.dumps({"public_key": public_key})
    script.write_text(
        WRK_SCRIPT.replace("{ids}", "{" + ", ".join(map(str, ids[:clients])) + "}")
        .replace("{body}", lua_string(body))
        .replace("{token}", server.token("eng"))
    )
    completed = subprocess.run(
        ["wrk", "-t", str(clients), "-c", str(clients), "-d", f"{seconds}s", "--latency", "-s", str(script),
         server.url],
        capture_output=True, text=True, check=True, timeout=seconds + 120,
    )
    return parse_wrk(completed.stdout)


def certificate_count(server):
    total = 0
    cursor = None
    while True:
        params = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = server.get("/v1/certificates", user="auditor", params=params).json()
        total += len(page["certificates"])
        cursor = page.get("next")
        if not cursor:
            return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients per run")
    parser.add_argument("--seconds", type=int, default=10, help="length of each run, in seconds")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        sys.exit("wrk not found: install the Debian package wrk (make bench does)")

    workdir = Path(tempfile.mkdtemp(prefix="sshca-bench-"))
    cluster = None
    server = None
    try:
        database_url = None
        if args.database == "postgres":
            cluster = PostgresCluster(find_bin_dir()).start()
            database_url = cluster.url(cluster.create_database("bench"))

        server = LiveServer(
            workdir / "data", policy=POLICY, inventory=INVENTORY, database_url=database_url,
            users={"eng": ["sre"], "lead": ["leads"], "auditor": {"groups": [], "auditor": True}},
            workers=args.workers, threads=args.threads,
        ).start()
        ids = prepare_requests(server, max(args.clients))
        public_key = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode()

        print(f"database: {args.database}; gunicorn: {args.workers} workers x {args.threads} threads; "
              f"{args.seconds} s per run; load generator wrk on the same machine")
        print(f"{'clients':>7} {'issued/s':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'p99/p50':>7} {'errors':>6}")
        succeeded = 0
        for clients in args.clients:
            rate, percentiles, total, errors = run_load(server, ids, clients, args.seconds, public_key, workdir)
            succeeded += total - errors
            p50, p90, p99 = percentiles[50], percentiles[90], percentiles[99]
            print(f"{clients:>7} {rate:>9.0f} {p50:>7.2f} {p90:>7.2f} {p99:>7.2f} {p99 / p50:>7.2f} {errors:>6}")

        verify = server.get("/v1/audit/verify", user="auditor").json()
        issued = certificate_count(server)
        print(f"audit chain: ok={verify['ok']} events={verify['events']}; "
              f"certificates stored: {issued}, successful responses: {succeeded}")
        if not verify["ok"] or issued < succeeded:
            sys.exit("benchmark check failed: broken chain or fewer certificates than successful responses")
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
