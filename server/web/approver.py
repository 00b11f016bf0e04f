"""The approver inbox, the request page, and the actions on one request.

The buttons a page shows are only a hint worked out from the policy. Every
action goes to the service layer, which makes the real decision and rejects
what the user may not do, whatever the page showed.
"""

from __future__ import annotations

from flask import flash, g, redirect, render_template, request, url_for

from server.errors import NotFound
from server.models import AccessRequest, User
from server.service import effective_state
from server.web.blueprint import bp, service, sign_in_required
from server.web.formatting import format_time_left

# Request ids are 64-bit in the database; a larger number cannot name one.
MAX_ID = 2**63 - 1


def check_request_id(request_id: int) -> int:
    if request_id > MAX_ID:
        raise NotFound("not_found", f"request {request_id} not found")
    return request_id


def approval_count(access_request: AccessRequest) -> int:
    return sum(1 for approval in access_request.approvals if approval.decision == "approve")


def may_decide(viewer: User, access_request: AccessRequest, policy, now) -> bool:
    """Tell whether to offer Approve and Deny to ``viewer``: a display hint only.

    It mirrors the service's rules (pending, not the requester, an approver
    under the request's rule, no earlier vote); Service.approve and
    Service.deny check them again and reject the POST otherwise.
    """
    if effective_state(access_request, now) != "pending":
        return False
    if access_request.requester_id == viewer.id:
        return False
    if any(approval.approver_id == viewer.id for approval in access_request.approvals):
        return False
    rule = policy.rule(access_request.rule)
    return rule is not None and rule.allows_approver(viewer.name, viewer.group_names)


def may_revoke(viewer: User, access_request: AccessRequest, policy, now) -> bool:
    """Tell whether to offer "End access now": a display hint; Service.revoke decides."""
    if effective_state(access_request, now) != "approved":
        return False
    if viewer.id == access_request.requester_id or viewer.is_admin:
        return True
    rule = policy.rule(access_request.rule)
    return rule is not None and rule.allows_approver(viewer.name, viewer.group_names)


@bp.get("/inbox")
@sign_in_required
def inbox():
    svc = service()
    policy = svc.snapshot.policy
    pending = svc.list_requests(g.viewer, state="pending")
    actionable = [item for item in pending if may_decide(g.viewer, item, policy, svc.now)]
    actionable.sort(key=lambda item: (item.created_at, item.id))
    return render_template(
        "web/inbox.html",
        requests=actionable,
        now=svc.now,
        approval_count=approval_count,
        time_left=format_time_left,
    )


@bp.get("/requests/<int:request_id>")
@sign_in_required
def request_page(request_id: int):
    svc = service()
    access_request = svc.get_request(g.viewer, check_request_id(request_id))
    policy = svc.snapshot.policy
    state = effective_state(access_request, svc.now)
    is_requester = access_request.requester_id == g.viewer.id
    return render_template(
        "web/request.html",
        item=access_request,
        state=state,
        now=svc.now,
        approvals=approval_count(access_request),
        is_requester=is_requester,
        can_decide=may_decide(g.viewer, access_request, policy, svc.now),
        can_cancel=is_requester and state == "pending",
        can_revoke=may_revoke(g.viewer, access_request, policy, svc.now),
        can_extend=is_requester and state == "approved",
        time_left=format_time_left,
    )


@bp.post("/requests/<int:request_id>/approve")
@sign_in_required
def approve(request_id: int):
    updated = service(write=True).approve(
        g.viewer, check_request_id(request_id), comment=request.form.get("comment", ""),
    )
    if updated.state == "approved":
        flash(f"You approved request {request_id}. It is now approved.", "ok")
    else:
        flash(f"You approved request {request_id}. It needs more approvals.", "ok")
    return redirect(url_for("web.request_page", request_id=request_id), code=303)


@bp.post("/requests/<int:request_id>/deny")
@sign_in_required
def deny(request_id: int):
    service(write=True).deny(g.viewer, check_request_id(request_id), comment=request.form.get("comment", ""))
    flash(f"You denied request {request_id}.", "ok")
    return redirect(url_for("web.request_page", request_id=request_id), code=303)


@bp.post("/requests/<int:request_id>/cancel")
@sign_in_required
def cancel(request_id: int):
    service(write=True).cancel(g.viewer, check_request_id(request_id))
    flash(f"You cancelled request {request_id}.", "ok")
    return redirect(url_for("web.request_page", request_id=request_id), code=303)


@bp.post("/requests/<int:request_id>/extend")
@sign_in_required
def extend(request_id: int):
    created = service(write=True).extend(
        g.viewer, check_request_id(request_id),
        duration=request.form.get("duration", "").strip() or None, reason=request.form.get("reason"),
    )
    flash(f"Request {created.id} asks for more time after request {request_id}. It needs approval again.", "ok")
    return redirect(url_for("web.request_page", request_id=created.id), code=303)


@bp.post("/requests/<int:request_id>/revoke")
@sign_in_required
def revoke(request_id: int):
    service(write=True).revoke(g.viewer, check_request_id(request_id), reason=request.form.get("reason"))
    flash(f"Access under request {request_id} has ended; its certificates are revoked.", "ok")
    return redirect(url_for("web.request_page", request_id=request_id), code=303)
