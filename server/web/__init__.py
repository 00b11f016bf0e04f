"""Server-rendered pages under /ui for approvers, engineers and auditors.

The pages call the same service layer as the JSON API (:mod:`server.service`),
so every rule the API enforces applies here too. They need no JavaScript: each
action is a plain HTML form with a CSRF token.
"""

from __future__ import annotations

from flask import Flask

from server.web.blueprint import bp
from server.web.sessions import TLSAwareSessionInterface
from server.web.settings import load_web_settings

# Importing the view modules attaches their routes to ``bp``.
from server.web import approver, auditor, auth, engineer  # noqa: E402,F401

__all__ = ["bp", "register"]


def register(app: Flask) -> None:
    """Mount the pages under /ui and configure the session cookie they sign in with.

    Raises server.web.settings.WebSettingError on a malformed web setting.
    """
    settings = load_web_settings(app)
    app.extensions["sshca.web"] = settings

    # The signed session cookie expires after this long, checked on every
    # request against the time it was signed, not only by the browser.
    app.config["PERMANENT_SESSION_LIFETIME"] = settings.session_lifetime
    app.config["SESSION_COOKIE_NAME"] = "sshca_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = TLSAwareSessionInterface()

    app.register_blueprint(bp)
