"""The engineer's pages: my requests and the new-request form."""

from __future__ import annotations

from dataclasses import dataclass

from flask import flash, g, redirect, render_template, request, url_for

from ca.durations import format_duration
from ca.errors import CAError
from server.errors import ServiceError
from server.service import effective_state
from server.web.blueprint import bp, service, sign_in_required
from server.web.formatting import format_time_left


@dataclass(frozen=True)
class RuleChoice:
    """One policy rule the viewer may request under, as the form's guide table shows it."""

    name: str
    hosts: tuple[str, ...]
    logins: tuple[str, ...]
    max_duration: str
    approvals: int


@dataclass(frozen=True)
class HostChoice:
    """One checkbox of the form: a host name or ``group:<name>``, with the hosts it covers."""

    target: str
    members: tuple[str, ...]


def requestable(policy, inventory, viewer) -> tuple[list[RuleChoice], list[HostChoice], list[str]]:
    """Return the rules, host targets and logins the policy lets ``viewer`` request.

    This fills the form only: the service matches the submitted request
    against the policy and rejects it when no rule covers it.
    """
    rules, targets, logins = [], [], []
    for rule in policy.rules:
        if not rule.allows_requester(viewer.name, viewer.group_names):
            continue
        rules.append(RuleChoice(rule.name, rule.hosts, rule.logins, format_duration(rule.max_duration), rule.approvals))
        for entry in rule.hosts:
            if entry not in targets:
                targets.append(entry)
            if entry.startswith("group:"):
                for host in inventory.hosts_in_group(entry[len("group:"):]):
                    if host not in targets:
                        targets.append(host)
        for login in rule.logins:
            if login not in logins:
                logins.append(login)

    choices = []
    for target in targets:
        members = ()
        if target.startswith("group:"):
            members = tuple(inventory.hosts_in_group(target[len("group:"):]))
        choices.append(HostChoice(target, members))
    return rules, choices, logins


@bp.get("/my-requests")
@sign_in_required
def my_requests():
    svc = service()
    # NOTE: list_requests returns the newest 500 requests the viewer may see.
    # For an auditor or a busy approver, older requests of their own can fall outside them.
    mine = [item for item in svc.list_requests(g.viewer) if item.requester_id == g.viewer.id]
    return render_template(
        "web/my_requests.html",
        requests=mine,
        now=svc.now,
        state_of=lambda item: effective_state(item, svc.now),
        time_left=format_time_left,
    )


def _render_form(svc, form, status: int = 200):
    rules, hosts, logins = requestable(svc.snapshot.policy, svc.snapshot.inventory, g.viewer)
    return render_template("web/new_request.html", rules=rules, hosts=hosts, logins=logins, form=form), status


@bp.get("/requests/new")
@sign_in_required
def new_request():
    return _render_form(service(), {"hosts": [], "login": "", "duration": "", "reason": "", "starts_at": ""})


@bp.post("/requests/new")
@sign_in_required
def create_request():
    form = {
        "hosts": request.form.getlist("hosts"),
        "login": request.form.get("login", ""),
        "duration": request.form.get("duration", "").strip(),
        "reason": request.form.get("reason", ""),
        "starts_at": request.form.get("starts_at", "").strip(),
    }

    svc = service(write=True)
    try:
        created = svc.create_request(
            g.viewer,
            hosts=form["hosts"],
            login=form["login"] or None,
            duration=form["duration"] or None,
            reason=form["reason"],
            starts_at=form["starts_at"] or None,
        )
    except (ServiceError, CAError) as exc:
        # Release the write transaction before the form is rendered again.
        svc.session.rollback()
        flash(getattr(exc, "message", None) or str(exc), "error")
        return _render_form(service(), form, getattr(exc, "status", 400))

    flash(f"Request {created.id} created. It needs {created.approvals_required} approval(s) under rule {created.rule}.", "ok")
    return redirect(url_for("web.request_page", request_id=created.id), code=303)
