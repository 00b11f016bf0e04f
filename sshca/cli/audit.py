"""`sshca audit`: list and export certificates and audit events, verify the hash chain."""

import click

from sshca.cli import output
from sshca.cli.common import CONTEXT, REQUEST_ID, TIME, api_client, iso_utc
from sshca.cli.errors import CommandError

FORMATS = click.Choice(["table", "csv", "jsonl"])


@click.group(context_settings=CONTEXT)
def audit():
    """List, export and verify the audit log (auditors)."""


def _filter_options(function):
    options = [
        click.option("--user", metavar="USER", help="Only this user."),
        click.option("--request", "request_id", type=REQUEST_ID, metavar="ID",
                     help="Only this request."),
        click.option("--since", type=TIME, metavar="TIME",
                     help="From this time on, ISO 8601 with offset."),
        click.option("--until", type=TIME, metavar="TIME",
                     help="Up to this time, ISO 8601 with offset."),
        click.option("--format", "output_format", type=FORMATS, default="table",
                     show_default=True, help="table for reading, csv or jsonl for export."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _time_params(since, until) -> dict:
    params = {}
    if since is not None:
        params["since"] = iso_utc(since)
    if until is not None:
        params["until"] = iso_utc(until)
    if since is not None and until is not None and until < since:
        raise click.UsageError(f"--until {iso_utc(until)} is before --since {iso_utc(since)}")
    return params


@audit.command("events", context_settings=CONTEXT)
@_filter_options
@click.option("--action", metavar="ACTION", help="Only this action, e.g. request.approved.")
@click.option("--host", metavar="HOST", help="Only events of requests for this host or one of its groups.")
def audit_events(user, request_id, since, until, output_format, action, host):
    """List audit events: who did what, when, to which request."""
    params = {"actor": user, "action": action, "request": request_id, "host": host}
    params.update(_time_params(since, until))
    _list_or_export("/v1/audit/events", "events", params, output_format, _event_rows,
                    ["ID", "TIME", "ACTOR", "ACTION", "REQUEST", "SERIAL", "DETAILS"])


@audit.command("certs", context_settings=CONTEXT)
@_filter_options
@click.option("--host", metavar="HOST", help="Only certificates valid for this host.")
@click.option("--active", is_flag=True, help="Only certificates whose window has not ended.")
def audit_certs(user, request_id, since, until, output_format, host, active):
    """List issued certificates."""
    params = {"user": user, "host": host, "request": request_id}
    if active:
        params["active"] = "true"
    params.update(_time_params(since, until))
    _list_or_export("/v1/certificates", "certificates", params, output_format, _cert_rows,
                    ["SERIAL", "USER", "REQUEST", "PRINCIPALS", "VALID AFTER",
                     "VALID BEFORE", "REVOKED"])


def _event_rows(events):
    return [[event.get("id"), output.format_time(event.get("time")), event.get("actor"),
             event.get("action"), event.get("request_id"), event.get("serial"),
             event.get("details")] for event in events]


def _cert_rows(certificates):
    return [[certificate.get("serial"), certificate.get("user"), certificate.get("request_id"),
             certificate.get("principals"), output.format_time(certificate.get("valid_after")),
             output.format_time(certificate.get("valid_before")),
             output.format_time(certificate["revoked_at"]) if certificate.get("revoked_at") else "no"]
            for certificate in certificates]


def _list_or_export(path, key, params, output_format, to_rows, headers):
    params = {name: value for name, value in params.items() if value is not None}
    with api_client() as client:
        if output_format != "table":
            stdout = click.get_binary_stream("stdout")
            for chunk in client.stream(path, params={**params, "format": output_format}):
                stdout.write(chunk)
            stdout.flush()
            return

        items = []
        cursor = None
        while True:
            page_params = {**params, "format": "json"}
            if cursor is not None:
                page_params["cursor"] = cursor
            page = client.get(path, params=page_params)
            items.extend(page.get(key) or [])
            cursor = page.get("next")
            if not cursor:
                break

    if not items:
        click.echo(f"No {key} match.")
        return
    click.echo(output.format_table(headers, to_rows(items)))


@audit.command("verify", context_settings=CONTEXT)
def audit_verify():
    """Check the audit log's hash chain; exit 1 when it is broken."""
    with api_client() as client:
        result = client.get("/v1/audit/verify")
    events = result.get("events")
    if result.get("ok") is True:
        click.echo(f"Audit chain intact: {events} events, head {result.get('head')}.")
        return
    bad = result.get("first_bad_event")
    problem = result.get("problem") or "an event was changed, removed or reordered"
    raise CommandError(
        f"audit chain broken at event {bad} ({problem}); {events} events before it verify. "
        "Keep the database as it is and tell your security team"
    )
