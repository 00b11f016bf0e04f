"""CSRF tokens and the security headers every /ui response carries.

The CSRF token is a random value kept in the signed session cookie and sent
back in a hidden ``csrf_token`` field by every form. A POST whose field is
missing or differs is rejected before any view runs, so it changes nothing.
The session cookie is SameSite=Lax as well, which already keeps most
cross-site POSTs from carrying it; the token covers the rest (older
browsers, sibling subdomains).
"""

from __future__ import annotations

import hmac
import secrets

from flask import Response, request, session

CSRF_FIELD = "csrf_token"
_CSRF_SESSION_KEY = "csrf"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No inline script or style anywhere: the pages work without JavaScript and
# take their look from the one stylesheet under /ui/static.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


class CSRFError(Exception):
    """A state-changing request came without the session's CSRF token."""


def csrf_token() -> str:
    """Return the session's CSRF token, creating one on first use."""
    token = session.get(_CSRF_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_CSRF_SESSION_KEY] = token
    return token


def rotate_csrf_token() -> str:
    """Replace the session's CSRF token; called when the signed-in user changes."""
    session.pop(_CSRF_SESSION_KEY, None)
    return csrf_token()


def check_csrf() -> None:
    """Raise CSRFError unless a state-changing request carries the session's token.

    The token is compared in constant time. A request with no session token at
    all (no cookie, or an expired one) is rejected too.
    """
    if request.method in _SAFE_METHODS:
        return

    expected = session.get(_CSRF_SESSION_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    if not isinstance(expected, str) or not expected or not sent:
        raise CSRFError("missing CSRF token")
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CSRFError("wrong CSRF token")


def set_security_headers(response: Response, *, cacheable: bool) -> Response:
    """Add the /ui security headers; pages with data are never stored by caches."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if not cacheable:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response
