"""Each client subcommand as a subprocess against a running sshca server on 127.0.0.1.

The server uses the harness defaults: alice and dave are in sre, bob and
carol approve prod-db requests (two approvals), bob alone approves
prod-web requests (one approval), erin is an auditor.
"""

import csv
import io
import json
import os
import pty
import re
import select
import signal
import sqlite3
import stat
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.cli.conftest import SSHCA, Cli, PatientLiveServer

# One worker runs this module under --dist loadgroup, so its server starts once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cli-live")]

DB_HOST = "db1.prod.example.com"
WEB_HOST = "web1.prod.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with PatientLiveServer(tmp_path_factory.mktemp("cli-live")) as live:
        yield live


@pytest.fixture
def as_user(server, tmp_path):
    """Return user -> Cli whose SSHCA_SERVER and SSHCA_TOKEN belong to that user."""
    clients = {}

    def make(user: str) -> Cli:
        if user not in clients:
            home = tmp_path / f"home-{user}"
            home.mkdir()
            client = Cli(home)
            client.env["SSHCA_SERVER"] = server.url
            client.env["SSHCA_TOKEN"] = server.token(user)
            clients[user] = client
        return clients[user]

    return make


def created_id(result) -> int:
    assert result.returncode == 0, result.stderr
    match = re.match(r"Request (\d+) is pending\.", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


def new_request(as_user, user="alice", hosts=(DB_HOST,), duration="1h") -> int:
    return created_id(as_user(user).run(
        "request", *hosts, "--login", "deploy", "--for", duration, "--reason", "INC-1 check disk"))


def approved_request(as_user, hosts=(DB_HOST,), duration="1h") -> int:
    request_id = new_request(as_user, hosts=hosts, duration=duration)
    for approver in ("bob", "carol"):
        result = as_user(approver).run("approve", str(request_id), "-m", "ok")
        assert result.returncode == 0, result.stderr
    return request_id


def show_json(as_user, request_id, user="alice") -> dict:
    result = as_user(user).run("show", str(request_id), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result):
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


# -- login ----------------------------------------------------------------------


def test_login_stores_working_config(server, cli):
    token = server.token("alice")

    result = cli.run("login", "--server", server.url, input=token + "\n")

    assert result.returncode == 0, result.stderr
    path = cli.home / ".config" / "sshca" / "config.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in result.stdout + result.stderr
    listed = cli.run("list")
    assert listed.returncode == 0, listed.stderr


def test_login_bad_token_stores_nothing(server, cli):
    result = cli.run("login", "--server", server.url, input="not-a-valid-token\n")

    assert_one_line_error(result)
    assert "rejected this API token" in result.stderr
    assert "not-a-valid-token" not in result.stderr
    assert not (cli.home / ".config" / "sshca" / "config.toml").exists()


def test_environment_overrides_login(server, cli):
    stored = cli.run("login", "--server", server.url, input=server.token("alice") + "\n")
    assert stored.returncode == 0, stored.stderr

    result = cli.run("list", env={"SSHCA_TOKEN": "bogus-token"})

    assert_one_line_error(result)
    assert "rejected your API token" in result.stderr


def test_bad_token_says_login(server, cli):
    result = cli.run("list", env={"SSHCA_SERVER": server.url, "SSHCA_TOKEN": "bogus-token"})

    assert_one_line_error(result)
    assert f"run `sshca login --server {server.url}`" in result.stderr
    assert "bogus-token" not in result.stderr


# -- request, show, list ----------------------------------------------------------


def test_request_prints_id_rule_approvals(as_user):
    result = as_user("alice").run(
        "request", DB_HOST, "--login", "deploy", "--for", "2h", "--reason", "INC-2 replication lag")

    request_id = created_id(result)
    assert "  rule:      sre-prod-db" in result.stdout
    assert "  approvals: 0 of 2 needed" in result.stdout
    details = show_json(as_user, request_id)
    assert details["hosts"] == [DB_HOST]
    assert details["duration_seconds"] == 7200
    assert details["reason"] == "INC-2 replication lag"


def test_request_with_start_time(as_user):
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    local = start.astimezone(timezone(timedelta(hours=1)))

    result = as_user("alice").run(
        "request", WEB_HOST, "--login", "deploy", "--for", "90s", "--reason", "deploy window",
        "--start", local.isoformat())

    request_id = created_id(result)
    assert show_json(as_user, request_id)["requested_start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_request_refused_by_policy(as_user):
    result = as_user("alice").run(
        "request", DB_HOST, "--login", "root", "--for", "1h", "--reason", "x")

    assert_one_line_error(result)
    assert "root" in result.stderr


def test_request_too_long_for_rule(as_user):
    result = as_user("alice").run(
        "request", DB_HOST, "--login", "deploy", "--for", "1d", "--reason", "x")

    assert_one_line_error(result)


def test_bad_duration_sends_nothing(server, as_user):
    before = server.get("/v1/requests", user="erin").json()["requests"]

    result = as_user("alice").run(
        "request", DB_HOST, "--login", "deploy", "--for", "abc", "--reason", "x")

    assert result.returncode == 2
    assert "'abc'" in result.stderr
    assert server.get("/v1/requests", user="erin").json()["requests"] == before


def test_show_request(as_user):
    request_id = new_request(as_user)
    as_user("bob").run("approve", str(request_id), "-m", "looks fine")

    result = as_user("alice").run("show", str(request_id))

    assert result.returncode == 0, result.stderr
    assert f"Request {request_id}: pending" in result.stdout
    assert "  requester   alice" in result.stdout
    assert f"  hosts       {DB_HOST}" in result.stdout
    assert "Approvals: 1 of 2 approvals" in result.stdout
    assert re.search(r"  bob approved at .* UTC: looks fine", result.stdout)
    assert "Certificates: 0" in result.stdout


def test_show_unknown_request(as_user):
    result = as_user("alice").run("show", "999999")

    assert_one_line_error(result)
    assert "999999" in result.stderr
    assert "not found" in result.stderr


def test_show_others_request_hidden(as_user):
    request_id = new_request(as_user, user="dave")

    result = as_user("alice").run("show", str(request_id))

    assert_one_line_error(result)


def test_list_filters_state(as_user):
    pending = new_request(as_user)
    cancelled = new_request(as_user)
    assert as_user("alice").run("cancel", str(cancelled)).returncode == 0

    result = as_user("alice").run("list", "--state", "pending")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "REQUESTER", "LOGIN", "HOSTS", "APPROVALS", "WHEN", "REASON"]
    ids = [int(line.split()[0]) for line in lines[1:]]
    assert pending in ids
    assert cancelled not in ids
    assert all(line.split()[1] == "pending" for line in lines[1:])


def test_list_json(as_user):
    request_id = new_request(as_user)

    result = as_user("alice").run("list", "--json")

    assert result.returncode == 0, result.stderr
    assert request_id in [item["id"] for item in json.loads(result.stdout)["requests"]]


def test_list_bad_state_is_usage_error(as_user):
    result = as_user("alice").run("list", "--state", "open")

    assert result.returncode == 2


# -- decisions ----------------------------------------------------------------------


def test_approve_by_two_approvers(as_user):
    request_id = new_request(as_user)

    first = as_user("bob").run("approve", str(request_id), "-m", "ok")
    second = as_user("carol").run("approve", str(request_id))

    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"Approved request {request_id}; it is still pending with 1 of 2 approvals.")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f"Approved request {request_id}; it is now approved."
    assert show_json(as_user, request_id)["state"] == "approved"


def test_approve_own_request_refused(server, cli):
    # gina may both request (sre) and approve (dba-leads) prod-db access.
    server.add_user("gina", ["sre", "dba-leads"])
    cli.env.update({"SSHCA_SERVER": server.url, "SSHCA_TOKEN": server.token("gina")})
    request_id = created_id(cli.run(
        "request", DB_HOST, "--login", "deploy", "--for", "1h", "--reason", "self"))

    result = cli.run("approve", str(request_id))

    assert_one_line_error(result)
    assert "own request" in result.stderr
    assert server.get(f"/v1/requests/{request_id}", user="gina").json()["approvals"] == []


def test_approve_twice_counts_once(as_user):
    request_id = new_request(as_user)
    assert as_user("bob").run("approve", str(request_id)).returncode == 0

    result = as_user("bob").run("approve", str(request_id))

    assert_one_line_error(result)
    assert len(show_json(as_user, request_id)["approvals"]) == 1


def test_approve_not_eligible(as_user):
    request_id = new_request(as_user)

    result = as_user("dave").run("approve", str(request_id))

    assert_one_line_error(result)


def test_approve_unknown_request(as_user):
    result = as_user("bob").run("approve", "999999")

    assert_one_line_error(result)
    assert "not found" in result.stderr


def test_deny_with_comment(as_user):
    request_id = new_request(as_user)

    result = as_user("carol").run("deny", str(request_id), "-m", "use the runbook instead")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Denied request {request_id}; it is now denied."
    shown = as_user("alice").run("show", str(request_id))
    assert re.search(r"carol denied at .* UTC: use the runbook instead", shown.stdout)


def test_deny_requires_comment(as_user):
    result = as_user("carol").run("deny", "1")

    assert result.returncode == 2
    assert "-m" in result.stderr


def test_cancel_own_pending(as_user):
    request_id = new_request(as_user)

    result = as_user("alice").run("cancel", str(request_id))
    again = as_user("alice").run("cancel", str(request_id))

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Cancelled request {request_id}; it is now cancelled."
    assert_one_line_error(again)
    assert "cancelled" in again.stderr


def test_revoke_approved(as_user):
    request_id = approved_request(as_user)

    result = as_user("alice").run("revoke", str(request_id), "-m", "work finished")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Revoked request {request_id}; it is now revoked."


def test_revoke_pending_refused(as_user):
    request_id = new_request(as_user)

    result = as_user("alice").run("revoke", str(request_id), "-m", "oops")

    assert_one_line_error(result)


def test_extend_needs_new_approval(as_user):
    request_id = approved_request(as_user)

    result = as_user("alice").run("extend", str(request_id), "--for", "30m",
                                  "--reason", "migration runs long")

    extension = created_id(result)
    assert "  approvals: 0 of 2 needed" in result.stdout
    details = show_json(as_user, extension)
    assert details["extends"] == request_id
    assert details["duration_seconds"] == 1800
    assert details["state"] == "pending"


def test_extend_bad_duration(as_user):
    result = as_user("alice").run("extend", "1", "--for", "0", "--reason", "x")

    assert result.returncode == 2
    assert "'0'" in result.stderr


# -- request --wait -----------------------------------------------------------------


def start_waiting(as_user, *hosts) -> tuple[subprocess.Popen, int]:
    client = as_user("alice")
    process = subprocess.Popen(
        [SSHCA, "request", *hosts, "--login", "deploy", "--for", "1h", "--reason", "wait test",
         "--wait", "--poll", "1s"],
        env=client.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    first_line = process.stdout.readline()
    match = re.match(r"Request (\d+) is pending\.", first_line)
    assert match, first_line
    return process, int(match.group(1))


def test_wait_until_approved(as_user):
    process, request_id = start_waiting(as_user, DB_HOST)
    try:
        time.sleep(1.5)
        assert as_user("bob").run("approve", str(request_id)).returncode == 0
        time.sleep(1.5)
        assert as_user("carol").run("approve", str(request_id)).returncode == 0
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()

    assert process.returncode == 0, stderr
    assert f"Waiting for approval of request {request_id}: 0 of 2 approvals" in stderr
    assert f"Waiting for approval of request {request_id}: 1 of 2 approvals (bob)" in stderr
    assert f"Request {request_id} is approved:" in stdout
    assert f"sshca cert {request_id}" in stdout


def test_wait_until_denied(as_user):
    process, request_id = start_waiting(as_user, WEB_HOST)
    try:
        assert as_user("bob").run("deny", str(request_id), "-m", "not today").returncode == 0
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()

    assert process.returncode == 1
    assert f"Error: request {request_id} is denied" in stderr


# -- audit ------------------------------------------------------------------------


def test_audit_events_table(as_user):
    request_id = new_request(as_user)

    result = as_user("erin").run("audit", "events", "--request", str(request_id))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "ACTOR", "ACTION", "REQUEST", "SERIAL", "DETAILS"]
    assert len(lines) == 2
    # TIME is "YYYY-MM-DD HH:MM:SS UTC", three words.
    assert lines[1].split()[4:7] == ["alice", "request.created", str(request_id)]


def test_audit_events_filters(as_user):
    request_id = new_request(as_user)
    as_user("bob").run("approve", str(request_id))

    result = as_user("erin").run("audit", "events", "--user", "bob", "--format", "jsonl",
                                 "--since", "2000-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00+02:00")

    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events
    assert {event["actor"] for event in events} == {"bob"}
    assert request_id in [event["request_id"] for event in events]


def test_audit_events_by_host(as_user):
    db_request = new_request(as_user)
    web_request = new_request(as_user, hosts=(WEB_HOST,))

    result = as_user("erin").run("audit", "events", "--host", WEB_HOST, "--format", "jsonl")

    assert result.returncode == 0, result.stderr
    request_ids = {json.loads(line)["request_id"] for line in result.stdout.splitlines()}
    assert web_request in request_ids
    assert db_request not in request_ids


def test_audit_events_csv(as_user):
    request_id = new_request(as_user)

    result = as_user("erin").run("audit", "events", "--request", str(request_id), "--format", "csv")

    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["action"] for row in rows] == ["request.created"]
    assert rows[0]["request_id"] == str(request_id)


def test_audit_since_in_future_is_empty(as_user):
    result = as_user("erin").run("audit", "events", "--since", "2999-01-01T00:00:00Z")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No events match."


def test_audit_until_before_since(as_user):
    result = as_user("erin").run("audit", "events", "--since", "2026-01-02T00:00:00Z",
                                 "--until", "2026-01-01T00:00:00Z")

    assert result.returncode == 2


def test_audit_time_without_offset(as_user):
    result = as_user("erin").run("audit", "certs", "--since", "2026-01-01T00:00:00")

    assert result.returncode == 2
    assert "no UTC offset" in result.stderr


def test_audit_needs_auditor(as_user):
    result = as_user("alice").run("audit", "events")

    assert_one_line_error(result)
    assert "auditor" in result.stderr


def test_audit_verify_intact(as_user):
    result = as_user("erin").run("audit", "verify")

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"Audit chain intact: \d+ events, head [0-9a-f]{64}\.\n", result.stdout)


def test_server_error_message_passed_through(as_user):
    result = as_user("alice").run(
        "request", "no-such-host.example.com", "--login", "deploy", "--for", "1h", "--reason", "x")

    assert_one_line_error(result)
    assert "no-such-host.example.com" in result.stderr


@pytest.fixture
def tampered_server(tmp_path):
    """A server of its own whose audit log gets edited behind its back."""
    with PatientLiveServer(tmp_path / "tampered") as live:
        yield live


def test_audit_verify_broken_chain(tampered_server, tmp_path):
    server = tampered_server
    erin = Cli(tmp_path)
    erin.env.update({"SSHCA_SERVER": server.url, "SSHCA_TOKEN": server.token("erin")})
    created = server.post("/v1/requests", user="alice", json={
        "hosts": [DB_HOST], "login": "deploy", "duration": "1h", "reason": "original reason"})
    assert created.status_code == 201, created.text
    assert erin.run("audit", "verify").returncode == 0

    database = sqlite3.connect(server.config.database_url.removeprefix("sqlite:///"))
    with database:
        database.execute(
            "UPDATE audit_events SET details = replace(details, 'original reason', 'edited reason') "
            "WHERE action = 'request.created'")
    database.close()
    result = erin.run("audit", "verify")

    assert_one_line_error(result)
    assert "audit chain broken at event" in result.stderr


def test_wait_interrupted(as_user):
    process, request_id = start_waiting(as_user, DB_HOST)
    try:
        process.stderr.readline()  # the first progress line: the loop is running
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.communicate()

    assert process.returncode == 1
    assert f"Error: stopped waiting; request {request_id} is still pending" in stderr
    assert "Traceback" not in stderr


def test_login_prompt_hides_token(server, cli):
    token = server.token("carol")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen([SSHCA, "login", "--server", server.url], env=cli.env,
                                   stdin=terminal, stdout=terminal, stderr=terminal)
        os.close(terminal)
        seen = read_until(controller, b"API token: ")
        os.write(controller, token.encode() + b"\n")
        process.wait(timeout=60)
        seen += read_until(controller, None)
    finally:
        os.close(controller)

    assert process.returncode == 0, seen
    assert token.encode() not in seen
    assert b"Stored the server URL and token" in seen
    assert f'token = "{token}"' in (cli.home / ".config" / "sshca" / "config.toml").read_text()


def read_until(fd: int, marker: bytes | None, timeout: float = 60) -> bytes:
    """Read from a pty until ``marker`` appears, or until it closes when ``marker`` is None."""
    data = b""
    deadline = time.monotonic() + timeout
    while marker is None or marker not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {marker!r}; read {data!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        data += chunk
    return data


def test_audit_certs_filters(as_user):
    request_id = approved_request(as_user)
    fetched = as_user("alice").run("cert", str(request_id))
    assert fetched.returncode == 0, fetched.stderr
    serial = show_json(as_user, request_id)["certificates"][0]["serial"]

    on_host = as_user("erin").run("audit", "certs", "--host", DB_HOST, "--user", "alice",
                                  "--active", "--format", "jsonl")
    other_host = as_user("erin").run("audit", "certs", "--host", WEB_HOST, "--format", "jsonl")
    table = as_user("erin").run("audit", "certs", "--request", str(request_id))

    assert on_host.returncode == 0, on_host.stderr
    assert serial in [json.loads(line)["serial"] for line in on_host.stdout.splitlines()]
    assert other_host.returncode == 0, other_host.stderr
    assert serial not in [json.loads(line)["serial"] for line in other_host.stdout.splitlines()]
    rows = table.stdout.splitlines()
    assert rows[0].split()[:4] == ["SERIAL", "USER", "REQUEST", "PRINCIPALS"]
    assert rows[1].split()[:4] == [str(serial), "alice", str(request_id), f"deploy@{DB_HOST}"]
