"""The session cookie: Flask's signed cookie, marked Secure whenever the page came over TLS."""

from __future__ import annotations

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface


class TLSAwareSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag set on HTTPS requests.

    SESSION_COOKIE_SECURE=True still forces the flag on every response. Behind
    a TLS-terminating proxy, ``request.is_secure`` is true only when the app
    trusts the proxy's X-Forwarded-Proto header (werkzeug's ProxyFix).
    """

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app) or request.is_secure)
