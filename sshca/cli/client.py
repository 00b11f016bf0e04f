"""The engineer, approver and auditor commands of ``sshca``.

They talk to the sshca server over HTTP only. Exit codes: 0 success,
1 refused or failed (one line on stderr saying what failed and what to do),
2 usage error.
"""

import os
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from sshca.cli import keys, output
# The sshca dispatcher loads every client command, `audit` too, from this module.
from sshca.cli.audit import audit  # noqa: F401
from sshca.cli.common import (
    CONTEXT,
    DURATION,
    REQUEST_ID,
    TIME,
    api_client,
    iso_utc,
    now_utc,
    print_json,
)
from sshca.cli.config import (
    SERVER_ENV,
    Settings,
    config_path,
    normalize_server_url,
    read_config,
    write_config,
)
from sshca.cli.errors import CommandError
from sshca.cli.http import ApiClient, ApiError


# -- login ------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.option(
    "--server",
    metavar="URL",
    help=f"The sshca server, e.g. https://sshca.example.com "
    f"(default: ${SERVER_ENV} or the stored URL).",
)
@click.option(
    "--no-check",
    is_flag=True,
    help="Store the token without checking it against the server.",
)
def login(server, no_check):
    """Store the server URL and your API token.

    The token is read from a hidden prompt, or from standard input when it
    is not a terminal (for example `sshca login --server URL < token-file`),
    never from the command line. It is stored with the URL in
    $XDG_CONFIG_HOME/sshca/config.toml (default ~/.config/sshca/config.toml),
    mode 0600. SSHCA_SERVER and SSHCA_TOKEN override the stored values.
    """
    path = config_path()
    stored = read_config(path)
    server = server or _env_server() or stored.get("server")
    if not server:
        raise click.UsageError("missing --server URL: name the sshca server to log in to")
    server = normalize_server_url(server)

    token = _read_token()
    if not no_check:
        _check_token(server, token)

    write_config({**stored, "server": server, "token": token}, path)
    click.echo(f"Stored the server URL and token for {server} in {path}.")


def _env_server() -> str | None:
    return os.environ.get(SERVER_ENV)


def _read_token() -> str:
    if sys.stdin.isatty():
        token = click.prompt("API token", hide_input=True, err=True)
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CommandError("no API token given: paste the token that your sshca admin created")
    if any(character.isspace() or not character.isprintable() for character in token):
        raise CommandError(
            "invalid API token: it contains spaces or control characters; "
            "paste the token exactly as `sshca admin token create` printed it"
        )
    return token


def _check_token(server: str, token: str) -> None:
    with ApiClient(Settings(server=server, token=token)) as client:
        try:
            client.get("/v1/requests", params={"state": "pending"})
        except ApiError as exc:
            if exc.status == 401:
                raise CommandError(
                    f"the sshca server at {server} rejected this API token; "
                    "check it with your sshca admin, nothing was stored"
                )
            raise


# -- request, extend and waiting ---------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("hosts", metavar="HOST...", nargs=-1, required=True)
@click.option("--login", "-l", "login_name", required=True, metavar="LOGIN",
              help="The login (remote user) to use on the hosts, e.g. deploy.")
@click.option("--for", "duration", required=True, type=DURATION,
              help="How long access lasts once granted: 90s, 30m, 2h, 1d.")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why you need access, e.g. a ticket number; approvers read it.")
@click.option("--start", type=TIME, metavar="TIME",
              help="Earliest start of the window, ISO 8601 with offset "
              "(default: when approved).")
@click.option("--wait", is_flag=True,
              help="Wait until the request is approved, denied or expires; "
              "exit 0 only when approved.")
@click.option("--poll", type=DURATION, default="2s", show_default=True,
              help="How often --wait asks the server.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def request(hosts, login_name, duration, reason, start, wait, poll, as_json):
    """Request access to HOST... as LOGIN.

    Each HOST is a host name or group:NAME for a host group. Prints the
    request id, the policy rule that matched and the approvals it needs.

    Example: sshca request db1.prod.example.com --login deploy --for 2h
    --reason "INC-1234 disk full"
    """
    body = {
        "hosts": list(hosts),
        "login": login_name,
        "duration": int(duration.total_seconds()),
        "reason": reason,
    }
    if start is not None:
        body["starts_at"] = iso_utc(start)

    with api_client() as client:
        created = client.post("/v1/requests", body)
        _report_created(created, as_json)
        if wait:
            _wait_for_decision(client, created, poll)


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("--for", "duration", required=True, type=DURATION,
              help="How much longer you need access: 90s, 30m, 2h, 1d.")
@click.option("--reason", required=True, metavar="TEXT",
              help="Why you need more time; approvers read it.")
@click.option("--wait", is_flag=True,
              help="Wait until the extension is approved, denied or expires.")
@click.option("--poll", type=DURATION, default="2s", show_default=True,
              help="How often --wait asks the server.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def extend(request_id, duration, reason, wait, poll, as_json):
    """Request more time on request ID.

    The extension is a new request linked to ID and needs approval again.
    Once approved, run `sshca cert NEW_ID` for a certificate covering it.
    """
    body = {"duration": int(duration.total_seconds()), "reason": reason}
    with api_client() as client:
        created = client.post(f"/v1/requests/{request_id}/extend", body)
        _report_created(created, as_json)
        if wait:
            _wait_for_decision(client, created, poll)


def _report_created(created: dict, as_json: bool) -> None:
    if as_json:
        print_json(created)
    else:
        click.echo(output.request_summary(created))


def _wait_for_decision(client: ApiClient, request: dict, poll) -> None:
    """Poll until the request leaves "pending"; exit 1 unless it was approved."""
    request_id = request["id"]
    interval = max(poll.total_seconds(), 0.5)
    last_progress = None
    try:
        while request.get("state") == "pending":
            progress = output.approvals_progress(request)
            if progress != last_progress:
                names = ", ".join(output.approvers(request))
                detail = f" ({names})" if names else ""
                click.echo(f"Waiting for approval of request {request_id}: {progress}{detail}", err=True)
                last_progress = progress
            time.sleep(interval)
            request = client.get(f"/v1/requests/{request_id}")
    except KeyboardInterrupt:
        raise CommandError(
            f"stopped waiting; request {request_id} is still pending "
            f"(see `sshca show {request_id}`)"
        )

    state = request.get("state")
    if state == "approved":
        window = output.format_window(request, now_utc())
        click.echo(f"Request {request_id} is approved: {window}.")
        click.echo(f"Fetch the certificate with: sshca cert {request_id}")
        return
    raise CommandError(f"request {request_id} is {state}; see `sshca show {request_id}`")


# -- list and show ------------------------------------------------------------


@click.command("list", context_settings=CONTEXT)
@click.option("--state", type=click.Choice(["pending", "approved", "denied", "cancelled",
                                            "expired", "revoked"]),
              help="Show only requests in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def list_requests(state, as_json):
    """List requests you made or may act on (auditors see all)."""
    params = {"state": state} if state else None
    with api_client() as client:
        data = client.get("/v1/requests", params=params)
    requests_ = data.get("requests") or []
    if as_json:
        print_json(data)
        return
    if not requests_:
        click.echo("No requests." if not state else f"No {state} requests.")
        return

    now = now_utc()
    rows = []
    for item in requests_:
        rows.append([
            item.get("id"),
            item.get("state"),
            item.get("requester"),
            item.get("login"),
            item.get("hosts"),
            output.approvals_progress(item).split(" approval")[0],
            _list_when(item, now),
            item.get("reason"),
        ])
    click.echo(output.format_table(
        ["ID", "STATE", "REQUESTER", "LOGIN", "HOSTS", "APPROVALS", "WHEN", "REASON"], rows
    ))


def _list_when(item: dict, now: datetime) -> str:
    if item.get("state") == "pending":
        expires = output.parse_server_time(item.get("expires_at"))
        return f"expires {output.format_relative(expires, now)}" if expires else ""
    if item.get("state") == "approved":
        ends = output.parse_server_time(item.get("ends_at"))
        if ends and ends > now:
            return f"ends {output.format_relative(ends, now)}"
        return "ended" if ends else ""
    return output.format_time(item.get("ends_at")) if item.get("ends_at") else ""


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def show(request_id, as_json):
    """Show request ID with its approvals, window and certificates."""
    with api_client() as client:
        data = client.get(f"/v1/requests/{request_id}")
    if as_json:
        print_json(data)
    else:
        click.echo(output.request_details(data, now_utc()))


# -- cert -------------------------------------------------------------------


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("--key", "key_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this private key (its .pub must be beside it) instead of "
              "a fresh Ed25519 key under ~/.ssh/sshca/.")
@click.option("--no-agent", is_flag=True, help="Do not add the key to ssh-agent.")
def cert(request_id, key_path, no_agent):
    """Fetch the certificate of approved request ID and set up ssh.

    Creates a fresh Ed25519 key for the grant under ~/.ssh/sshca/ unless
    --key names one, writes the certificate to <key>-cert.pub, adds key and
    certificate to the running ssh-agent for the seconds left in the window,
    and prints the ssh command to use. Removes keys and certificates it made
    earlier whose windows have ended.
    """
    with api_client() as client:
        grant = client.get(f"/v1/requests/{request_id}")
        _check_grant_state(grant, request_id)

        made_key = False
        if key_path is None:
            key_path, public_key, made_key = keys.create_grant_key(
                request_id, comment=f"sshca-request-{request_id}"
            )
        else:
            key_path = key_path.expanduser().absolute()
            public_key = keys.read_public_key(key_path)

        try:
            issued = client.post(
                f"/v1/requests/{request_id}/certificate", {"public_key": public_key}
            )
        except CommandError:
            # A key made for a refused certificate would stay forever: cleanup
            # only removes keys beside an ended certificate.
            if made_key:
                keys.remove_key_files(key_path)
            raise

    certificate_line = issued.get("certificate")
    if not isinstance(certificate_line, str) or not certificate_line.strip():
        raise CommandError(
            f"the server returned no certificate for request {request_id}; "
            "try again or tell the sshca admin"
        )
    cert_file = keys.cert_path_for(key_path)
    keys.check_certificate_matches(certificate_line, public_key)
    keys.write_file(cert_file, (certificate_line.strip() + "\n").encode(), mode=0o644)

    now = now_utc()
    valid_before = keys.certificate_valid_before(cert_file)
    if valid_before is None:
        raise CommandError(f"cannot read the certificate written to {cert_file}; tell the sshca admin")

    if no_agent:
        agent_note = None
    else:
        agent_note = keys.add_to_agent(key_path, valid_before, now).note
    removed = keys.remove_expired_keys(now, keep=request_id)

    login_name = grant.get("login", "LOGIN")
    principals = issued.get("principals") or []
    click.echo(f"Certificate for request {request_id} written to {cert_file}")
    click.echo(f"  serial:     {issued.get('serial')}")
    click.echo(f"  principals: {', '.join(principals)}")
    click.echo(
        f"  window:     {output.format_time(issued.get('valid_after'))} to "
        f"{output.format_time(issued.get('valid_before'))} "
        f"(ends {output.format_relative(valid_before, now)})"
    )
    if agent_note:
        click.echo(f"  ssh-agent:  {agent_note}")
    for item in removed:
        click.echo(f"Removed the expired key and certificate of request {item.request_id}.")
    click.echo("Log in with:")
    for line in output.ssh_commands(key_path, cert_file, login_name, grant.get("hosts") or []):
        click.echo(f"  {line}")


def _check_grant_state(grant: dict, request_id: int) -> None:
    """Raise CommandError unless the request is approved, before any key is made.

    The server decides again when it signs; this only gives a clearer message
    and avoids a key for a request that cannot get a certificate.
    """
    state = grant.get("state")
    if state == "approved":
        return
    if state == "pending":
        raise CommandError(
            f"request {request_id} is pending ({output.approvals_progress(grant)}); "
            f"run `sshca cert {request_id}` once it is approved, or wait with `sshca show {request_id}`"
        )
    raise CommandError(
        f"request {request_id} is {state}, so it gets no certificate; "
        "request access again with `sshca request`"
    )


# -- decisions ----------------------------------------------------------------


def _report_decision(verb: str, request: dict) -> None:
    state = request.get("state")
    request_id = request.get("id")
    if state == "pending":
        click.echo(f"{verb} request {request_id}; it is still pending with "
                   f"{output.approvals_progress(request)}.")
    else:
        click.echo(f"{verb} request {request_id}; it is now {state}.")


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("-m", "--comment", default="", metavar="COMMENT",
              help="A comment recorded with your approval.")
def approve(request_id, comment):
    """Approve pending request ID (you cannot approve your own)."""
    with api_client() as client:
        result = client.post(f"/v1/requests/{request_id}/approve", {"comment": comment})
    _report_decision("Approved", result)


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("-m", "--comment", required=True, metavar="COMMENT",
              help="Why the request is denied; the requester reads it.")
def deny(request_id, comment):
    """Deny pending request ID."""
    with api_client() as client:
        result = client.post(f"/v1/requests/{request_id}/deny", {"comment": comment})
    _report_decision("Denied", result)


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
def cancel(request_id):
    """Cancel your pending request ID."""
    with api_client() as client:
        result = client.post(f"/v1/requests/{request_id}/cancel", {})
    _report_decision("Cancelled", result)


@click.command(context_settings=CONTEXT)
@click.argument("request_id", metavar="ID", type=REQUEST_ID)
@click.option("-m", "--reason", required=True, metavar="REASON",
              help="Why access ends early; recorded in the audit log.")
def revoke(request_id, reason):
    """End approved request ID's access early.

    Every certificate issued for it goes into the revocation list that
    hosts pull. The key and certificate `sshca cert` made for it on this
    machine are removed from ssh-agent and deleted.
    """
    with api_client() as client:
        result = client.post(f"/v1/requests/{request_id}/revoke", {"reason": reason})
    _report_decision("Revoked", result)

    key_path = keys.grant_key_path(request_id)
    if key_path.exists():
        note = keys.remove_from_agent(key_path)
        keys.remove_key_files(key_path)
        click.echo(f"Deleted {key_path} and its certificate; {note}.")
