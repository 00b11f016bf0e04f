"""Text output of the client commands: times, tables and request summaries.

These functions only build strings from the server's JSON, so they are
tolerant of missing fields: a field the server leaves out shows as "-".
"""

import json
import shlex
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ca.durations import format_duration

MISSING = "-"
# Columns wider than this are cut with "..." in tables.
MAX_COLUMN_WIDTH = 60


def parse_server_time(value) -> datetime | None:
    """Return an aware UTC datetime from an ISO 8601 string, or None if absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        # The server sends UTC; a missing offset still means UTC.
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_time(value) -> str:
    """Format a server time as ``2026-12-04 19:30:00 UTC``."""
    moment = parse_server_time(value) if not isinstance(value, datetime) else value
    if moment is None:
        return MISSING if not value else str(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_relative(moment: datetime | None, now: datetime) -> str:
    """Return "in 1h59m" or "3m ago" for ``moment`` seen from ``now``."""
    if moment is None:
        return ""
    seconds = int((moment - now).total_seconds())
    if seconds == 0:
        return "now"
    span = _human_span(abs(seconds))
    return f"in {span}" if seconds > 0 else f"{span} ago"


def _human_span(seconds: int) -> str:
    """Return "10m59s", "1h2m" or "3d4h": seconds are dropped from spans of an hour or more."""
    if seconds < 1:
        return "0s"
    if seconds >= 3600:
        seconds -= seconds % 60
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_cell(value) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(format_cell(item) for item in value) or MISSING
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return " ".join(str(value).split())


def format_table(headers: list[str], rows: list[list]) -> str:
    """Return rows as left-aligned columns under a header line."""
    cells = [[format_cell(value) for value in row] for row in rows]
    cells = [
        [cell if len(cell) <= MAX_COLUMN_WIDTH else cell[: MAX_COLUMN_WIDTH - 3] + "..." for cell in row]
        for row in cells
    ]
    widths = [len(header) for header in headers]
    for row in cells:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))

    lines = []
    for row in [headers, *cells]:
        padded = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def approvals_progress(request: dict) -> str:
    """Return "1 of 2 approvals" for a request, counting approve decisions only."""
    required = request.get("approvals_required")
    count = len(approvers(request))
    if required is None:
        return f"{count} approvals"
    noun = "approval" if required == 1 else "approvals"
    return f"{count} of {required} {noun}"


def approvers(request: dict) -> list[str]:
    """Return the names of the users who approved the request.

    The server lists denials in ``approvals`` too, with ``decision`` "deny".
    """
    return [
        approval.get("approver") or MISSING
        for approval in request.get("approvals") or []
        if isinstance(approval, dict) and approval.get("decision", "approve") == "approve"
    ]


def format_window(request: dict, now: datetime) -> str:
    """Describe a request's window: its times once known, else the requested duration and start."""
    starts = parse_server_time(request.get("starts_at"))
    ends = parse_server_time(request.get("ends_at"))
    if request.get("state") == "approved" and starts and ends:
        if now < starts:
            where = f"starts {format_relative(starts, now)}"
        elif now < ends:
            where = f"ends {format_relative(ends, now)}"
        else:
            where = "ended"
        return f"{format_time(starts)} to {format_time(ends)} ({where})"
    if starts and ends:
        return f"{format_time(starts)} to {format_time(ends)}"
    duration = request.get("duration")
    if duration:
        start = format_time(starts) if starts else "approval"
        return f"{_format_seconds(duration)} from {start}"
    return MISSING


def _format_seconds(duration) -> str:
    if isinstance(duration, int) and not isinstance(duration, bool) and duration > 0:
        return format_duration(timedelta(seconds=duration))
    return str(duration)


def request_summary(request: dict) -> str:
    """Return the lines `sshca request` and `sshca extend` print for a new request."""
    required = request.get("approvals_required")
    needed = MISSING if required is None else f"{len(approvers(request))} of {required} needed"
    lines = [
        f"Request {request.get('id')} is {request.get('state', MISSING)}.",
        f"  rule:      {request.get('rule') or MISSING}",
        f"  approvals: {needed}",
    ]
    if request.get("expires_at") and request.get("state") == "pending":
        lines.append(f"  expires:   {format_time(request.get('expires_at'))} unless approved")
    return "\n".join(lines)


def request_details(request: dict, now: datetime) -> str:
    """Return the lines `sshca show` prints: who, what, why, approvals, window, certificates."""
    lines = [f"Request {request.get('id')}: {request.get('state', MISSING)}"]

    def field(name, value):
        lines.append(f"  {name:<12}{format_cell(value)}")

    field("requester", request.get("requester"))
    field("login", request.get("login"))
    field("hosts", ", ".join(request.get("hosts") or []))
    field("reason", request.get("reason"))
    field("rule", request.get("rule"))
    field("window", format_window(request, now))
    if request.get("state") == "pending":
        field("expires", format_time(request.get("expires_at")))
    if request.get("extends"):
        field("extends", f"request {request['extends']}")
    field("created", format_time(request.get("created_at")))

    lines.append(f"Approvals: {approvals_progress(request)}")
    for approval in request.get("approvals") or []:
        if not isinstance(approval, dict):
            continue
        verb = "denied" if approval.get("decision") == "deny" else "approved"
        line = f"  {approval.get('approver') or MISSING} {verb} at {format_time(approval.get('time'))}"
        if approval.get("comment"):
            line += f": {format_cell(approval['comment'])}"
        lines.append(line)

    certificates = request.get("certificates") or []
    lines.append(f"Certificates: {len(certificates)}")
    for certificate in certificates:
        line = (
            f"  serial {certificate.get('serial')}"
            f"  {format_time(certificate.get('valid_after'))} to {format_time(certificate.get('valid_before'))}"
            f"  {format_cell(certificate.get('principals'))}"
        )
        if certificate.get("revoked_at"):
            line += f"  revoked at {format_time(certificate['revoked_at'])}"
        lines.append(line)
    return "\n".join(lines)


def ssh_commands(key_path: Path, cert_path: Path, login: str, hosts: list[str]) -> list[str]:
    """Return one ssh command per granted target, naming the key and certificate files.

    ``-i`` plus ``CertificateFile`` work with ``IdentitiesOnly yes`` setups.
    A group grant has no single host name, so its line names the group.
    """
    cert_option = f"CertificateFile={cert_path}"
    if any(character.isspace() for character in str(cert_path)):
        # ssh splits -o values at white space unless the value is in double quotes.
        cert_option = f'CertificateFile="{cert_path}"'
    base = f"ssh -i {shlex.quote(str(key_path))} -o {shlex.quote(cert_option)}"
    commands = []
    for target in hosts:
        if target.startswith("group:"):
            commands.append(f"{base} {shlex.quote(login)}@HOST   # HOST: any host in {target}")
        else:
            commands.append(f"{base} {shlex.quote(f'{login}@{target}')}")
    return commands
