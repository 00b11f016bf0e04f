"""Sign-in with a personal token, sign-out, and the start page."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import current_app, flash, g, redirect, render_template, request, url_for

from server.errors import Unauthorized
from server.models import Token
from server.service import hash_token
from server.web.blueprint import bp, safe_next, service, sign_in_required
from server.web.identity import end_session, start_session

logger = logging.getLogger("sshca.server")


@bp.get("/")
@sign_in_required
def index():
    policy = service().snapshot.policy
    if policy.rules_approvable_by(g.viewer.name, g.viewer.group_names):
        return redirect(url_for("web.inbox"))
    return redirect(url_for("web.my_requests"))


@bp.get("/sign-in")
def sign_in():
    if g.viewer is not None:
        return redirect(safe_next(request.args.get("next")) or url_for("web.index"))
    return render_template("web/sign_in.html", next_url=safe_next(request.args.get("next")))


@bp.post("/sign-in")
def sign_in_submit():
    next_url = safe_next(request.form.get("next"))
    token = request.form.get("token", "").strip()

    # The same failure limit as the API's token check, so the sign-in form
    # is no faster a way to guess tokens.
    address = request.remote_addr or "unknown"
    limiter = current_app.extensions["sshca"].auth_failures
    if limiter.blocked(address):
        logger.warning("web sign-in blocked after repeated failures", extra={"remote_addr": address})
        flash("Too many failed sign-ins from this address; wait a minute and check your token.", "error")
        return render_template("web/sign_in.html", next_url=next_url), 429

    svc = service()
    try:
        user = svc.authenticate(token)
    except Unauthorized as exc:
        limiter.record_failure(address)
        logger.info("web sign-in rejected", extra={"remote_addr": address})
        flash(exc.message, "error")
        return render_template("web/sign_in.html", next_url=next_url), 401

    row = svc.session.execute(sa.select(Token).where(Token.token_hash == hash_token(token))).scalar_one()
    start_session(user, row)
    logger.info("web sign-in", extra={"user": user.name})
    return redirect(next_url or url_for("web.index"), code=303)


@bp.post("/sign-out")
def sign_out():
    if g.viewer is not None and not g.viewer_from_proxy:
        logger.info("web sign-out", extra={"user": g.viewer.name})
    end_session()
    flash("You are signed out.", "info")
    return redirect(url_for("web.sign_in"), code=303)
