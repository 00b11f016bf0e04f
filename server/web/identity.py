"""Sign-in state: a session started with a personal token, or a user named by a trusted SSO proxy.

The session cookie stores the database ids of the user and of the token they
signed in with, never the token itself. Every request loads the token row
again, so revoking the token, letting it expire, or reaching the session
lifetime signs the browser out at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import request, session

from server.models import Token, User
from server.service import token_is_valid, utcnow
from server.web.security import rotate_csrf_token

logger = logging.getLogger("sshca.server")

_USER_ID = "user_id"
_TOKEN_ID = "token_id"
_SIGNED_IN_AT = "signed_in_at"


def start_session(user: User, token: Token) -> None:
    """Sign ``user`` in with ``token``; any earlier session data is dropped."""
    session.clear()
    session.permanent = True
    session[_USER_ID] = user.id
    session[_TOKEN_ID] = token.id
    session[_SIGNED_IN_AT] = int(utcnow().timestamp())
    rotate_csrf_token()


def end_session() -> None:
    session.clear()


def load_viewer(runtime, settings) -> tuple[User | None, bool]:
    """Return (signed-in user or None, whether the trusted proxy named them)."""
    proxy_user = settings.proxy.user_from(request.remote_addr, request.headers)
    if proxy_user is not None:
        return _user_from_proxy(runtime, proxy_user), True

    user_id = session.get(_USER_ID)
    token_id = session.get(_TOKEN_ID)
    signed_in_at = session.get(_SIGNED_IN_AT)
    if not all(isinstance(value, int) for value in (user_id, token_id, signed_in_at)):
        return None, False

    now = utcnow()
    started = datetime.fromtimestamp(signed_in_at, timezone.utc)
    if now - started >= settings.session_lifetime or started > now:
        end_session()
        return None, False

    with runtime.db.read() as db:
        # The session keeps the token's id, never the token, so the row is
        # checked by id with the same rule Service.authenticate applies.
        token = db.get(Token, token_id)
        if token is None or token.user_id != user_id or not token_is_valid(token, now):
            end_session()
            return None, False
        return token.user, False


def _user_from_proxy(runtime, name: str) -> User | None:
    with runtime.db.read() as db:
        user = db.execute(sa.select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        logger.warning("trusted proxy named an unknown user", extra={"user": name[:64]})
    return user
