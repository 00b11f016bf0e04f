"""Text built from the server's JSON: tables, summaries, windows and ssh commands."""

from datetime import datetime, timezone
from pathlib import Path

from sshca.cli import output

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)

REQUEST = {
    "id": 12,
    "state": "approved",
    "requester": "alice",
    "hosts": ["db1.prod.example.com", "group:prod-db"],
    "login": "deploy",
    "reason": "INC-1234 disk full",
    "rule": "sre-prod-db",
    "approvals_required": 2,
    "approvals": [
        {"approver": "bob", "decision": "approve", "comment": "ok", "time": "2026-12-04T11:00:00Z"},
        {"approver": "carol", "decision": "approve", "comment": "", "time": "2026-12-04T11:05:00Z"},
    ],
    "starts_at": "2026-12-04T11:05:00Z",
    "ends_at": "2026-12-04T13:05:00Z",
    "expires_at": "2026-12-05T10:00:00Z",
    "certificates": [
        {"serial": 99, "valid_after": "2026-12-04T11:04:00Z",
         "valid_before": "2026-12-04T13:05:00Z", "principals": ["deploy@db1.prod.example.com"]},
    ],
}


def test_format_time_utc():
    assert output.format_time("2026-12-04T19:30:00Z") == "2026-12-04 19:30:00 UTC"
    assert output.format_time("2026-12-04T20:30:00+01:00") == "2026-12-04 19:30:00 UTC"
    assert output.format_time(None) == "-"


def test_format_relative():
    assert output.format_relative(datetime(2026, 12, 4, 13, 59, 30, tzinfo=timezone.utc), NOW) == "in 1h59m"
    assert output.format_relative(datetime(2026, 12, 4, 11, 58, 30, tzinfo=timezone.utc), NOW) == "1m30s ago"
    assert output.format_relative(datetime(2026, 12, 6, 13, 0, 59, tzinfo=timezone.utc), NOW) == "in 2d1h"


def test_table_aligns_columns():
    text = output.format_table(["ID", "STATE"], [[1, "pending"], [123, None]])

    assert text.splitlines() == ["ID   STATE", "1    pending", "123  -"]


def test_table_cuts_long_cells():
    text = output.format_table(["REASON"], [["x" * 100]])

    assert text.splitlines()[1] == "x" * 57 + "..."


def test_approvals_progress():
    assert output.approvals_progress(REQUEST) == "2 of 2 approvals"
    assert output.approvals_progress({"approvals": [], "approvals_required": 1}) == "0 of 1 approval"


def test_denials_not_counted_as_approvals():
    request = {"approvals_required": 2, "approvals": [
        {"approver": "bob", "decision": "approve"}, {"approver": "carol", "decision": "deny"},
    ]}

    assert output.approvals_progress(request) == "1 of 2 approvals"
    assert output.approvers(request) == ["bob"]


def test_window_of_approved_request():
    assert output.format_window(REQUEST, NOW) == (
        "2026-12-04 11:05:00 UTC to 2026-12-04 13:05:00 UTC (ends in 1h5m)"
    )


def test_window_of_pending_request():
    pending = {"state": "pending", "duration": "2h"}
    assert output.format_window(pending, NOW) == "2h from approval"


def test_request_summary_names_rule_and_approvals():
    created = {**REQUEST, "state": "pending", "approvals": []}

    lines = output.request_summary(created).splitlines()

    assert lines[0] == "Request 12 is pending."
    assert lines[1] == "  rule:      sre-prod-db"
    assert lines[2] == "  approvals: 0 of 2 needed"
    assert lines[3] == "  expires:   2026-12-05 10:00:00 UTC unless approved"


def test_request_details():
    text = output.request_details(REQUEST, NOW)

    assert "Request 12: approved" in text
    assert "  hosts       db1.prod.example.com, group:prod-db" in text
    assert "Approvals: 2 of 2 approvals" in text
    assert "  bob approved at 2026-12-04 11:00:00 UTC: ok" in text
    assert "  carol approved at 2026-12-04 11:05:00 UTC" in text
    assert "Certificates: 1" in text
    assert "serial 99" in text


def test_ssh_commands_use_key_and_certificate():
    commands = output.ssh_commands(
        Path("/home/a/.ssh/sshca/req-12"), Path("/home/a/.ssh/sshca/req-12-cert.pub"),
        "deploy", ["db1.prod.example.com", "group:prod-db"],
    )

    assert commands[0] == (
        "ssh -i /home/a/.ssh/sshca/req-12 -o CertificateFile=/home/a/.ssh/sshca/req-12-cert.pub "
        "deploy@db1.prod.example.com"
    )
    assert commands[1].endswith("deploy@HOST   # HOST: any host in group:prod-db")


def test_ssh_command_quotes_paths():
    commands = output.ssh_commands(Path("/tmp/my key"), Path("/tmp/my key-cert.pub"), "deploy", ["h"])

    assert commands == [
        "ssh -i '/tmp/my key' -o 'CertificateFile=\"/tmp/my key-cert.pub\"' deploy@h"
    ]
