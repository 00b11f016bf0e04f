"""The /ui blueprint and what every page shares: sign-in state, CSRF, headers, errors.

Before any view runs, a state-changing request must carry the session's CSRF
token, and the signed-in user is loaded into ``g.viewer`` (or None). Service
errors become an error page with the service's own status and message.
"""

from __future__ import annotations

import functools
import logging
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, url_for

from ca.errors import CAError
from server.errors import ServiceError
from server.service import Service
from server.web import formatting, security
from server.web.identity import load_viewer

logger = logging.getLogger("sshca.server")

bp = Blueprint(
    "web", __name__, url_prefix="/ui", template_folder="templates", static_folder="static",
)


def runtime():
    return current_app.extensions["sshca"]


def service(write: bool = False) -> Service:
    """Return a Service on a database session that is closed when the HTTP request ends."""
    database = runtime().db
    session = database.write() if write else database.read()
    g.db_sessions.append(session)
    return Service(runtime(), session)


def web_settings():
    return current_app.extensions["sshca.web"]


# -- hooks ----------------------------------------------------------------------


@bp.before_request
def check_csrf_and_load_viewer():
    security.check_csrf()
    if request.endpoint == "web.static":
        g.viewer, g.viewer_from_proxy = None, False
        return
    g.viewer, g.viewer_from_proxy = load_viewer(runtime(), web_settings())


@bp.after_app_request
def add_security_headers(response: Response) -> Response:
    # after_app_request, not after_request: a /ui URL that matches no route
    # never reaches the blueprint's own hooks but still needs the headers.
    if request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/"):
        security.set_security_headers(response, cacheable=request.endpoint == "web.static")
    return response


@bp.context_processor
def page_globals():
    viewer = g.get("viewer")
    return {
        "viewer": viewer,
        "viewer_from_proxy": g.get("viewer_from_proxy", False),
        "nav_links": navigation(viewer),
    }


# A template global, not a context variable, so imported macros can call it.
bp.add_app_template_global(security.csrf_token, "csrf_token")
bp.add_app_template_filter(formatting.format_when, "when")
bp.add_app_template_filter(formatting.format_seconds, "seconds")


def navigation(viewer) -> list[tuple[str, str]]:
    """Return the (endpoint, label) pairs of the top menu for ``viewer``."""
    if viewer is None:
        return []
    links = [
        ("web.inbox", "Approvals"),
        ("web.my_requests", "My requests"),
        ("web.new_request", "New request"),
    ]
    if viewer.is_auditor:
        links += [("web.certificates", "Certificates"), ("web.events", "Audit events")]
    return links


def sign_in_required(view):
    """Send a visitor who is not signed in to the sign-in page, then back here."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if g.get("viewer") is None:
            target = request.full_path if request.method == "GET" else ""
            return redirect(url_for("web.sign_in", next=safe_next(target) or None), code=303)
        return view(*args, **kwargs)

    return wrapper


def safe_next(target: str | None) -> str:
    """Return ``target`` if it is a path under /ui on this site, else an empty string.

    This keeps the sign-in page from redirecting to another site.
    """
    if not target:
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return ""
    if not (parts.path == bp.url_prefix or parts.path.startswith(bp.url_prefix + "/")):
        return ""
    return target.rstrip("?")


# -- errors ---------------------------------------------------------------------


def error_page(status: int, title: str, message: str):
    return render_template("web/error.html", title=title, message=message), status


@bp.errorhandler(security.CSRFError)
def handle_csrf_error(exc):
    logger.warning("form rejected: %s", exc, extra={"path": request.path})
    return error_page(
        400, "Form rejected",
        "The form was not sent from an sshca page of this session, or your session expired. "
        "Reload the page and send the form again.",
    )


_ERROR_TITLES = {400: "Invalid input", 401: "Not signed in", 403: "Not allowed", 404: "Not found",
                 409: "Not possible in this state", 413: "Too large", 429: "Too many requests"}


@bp.errorhandler(ServiceError)
def handle_service_error(exc: ServiceError):
    return error_page(exc.status, _ERROR_TITLES.get(exc.status, "Request failed"), exc.message)


@bp.errorhandler(CAError)
def handle_ca_error(exc: CAError):
    return error_page(400, "Invalid input", str(exc))


@bp.errorhandler(404)
def handle_not_found(exc):
    return error_page(404, "Not found", f"There is no page at {request.path}.")


@bp.errorhandler(405)
def handle_method_not_allowed(exc):
    return error_page(405, "Method not allowed", f"{request.method} is not allowed on {request.path}.")
