"""The Flask application factory."""

from __future__ import annotations

import importlib.util
import logging
import re
import secrets
import time

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from ca.errors import CAError
from server.api import api, error_response
from server.config import Config, load_config, load_session_key
from server.runtime import Runtime

MAX_REQUEST_BYTES = 64 * 1024

logger = logging.getLogger("sshca.server")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_app(config: Config | None = None, *, runtime: Runtime | None = None, web: bool = True) -> Flask:
    """Create the sshca app.

    ``config`` defaults to :func:`server.config.load_config` (SSHCA_CONFIG and
    SSHCA_* variables). The CA key, policy and inventory are loaded here, once
    per process; ``runtime`` lets tests share one loaded runtime.

    The web pages are a blueprint in ``server.web``: when that package exists
    and ``web`` is true, the factory calls ``server.web.register(app)``, which
    mounts the pages under /ui.
    """
    if runtime is None:
        runtime = Runtime(config or load_config())
    config = runtime.config

    app = Flask("server")
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["SECRET_KEY"] = load_session_key(config.session_key_file)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.json.sort_keys = False
    app.extensions["sshca"] = runtime

    app.register_blueprint(api)
    if web:
        _register_web(app)
    _register_hooks(app)
    _register_error_handlers(app)
    return app


def _register_web(app: Flask) -> None:
    if importlib.util.find_spec("server.web") is None:
        return
    from server import web

    web.register(app)


def _register_hooks(app: Flask) -> None:
    @app.before_request
    def start_request():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        g.db_sessions = []
        g.started = time.perf_counter()

    @app.after_request
    def finish_request(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if logger.isEnabledFor(logging.DEBUG) or response.status_code >= 400:
            logger.log(
                logging.WARNING if response.status_code >= 500 else logging.INFO,
                "http request",
                extra={
                    "method": request.method, "path": request.path, "status": response.status_code,
                    "user": g.get("user_name"), "ms": round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 2),
                },
            )
        return response

    @app.teardown_request
    def close_sessions(exc):
        for session in g.pop("db_sessions", []):
            session.close()


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CAError)
    def handle_ca_error(exc: CAError):
        return error_response(400, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, "too_large", f"the request body is larger than {MAX_REQUEST_BYTES // 1024} KiB; send less")
        if exc.code == 404:
            return error_response(404, "not_found", f"no such endpoint {request.path}; see the API list in the README")
        if exc.code == 405:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
        return error_response(exc.code or 500, "http_error", exc.description or exc.name)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        logger.exception("unhandled error", extra={"path": request.path})
        return error_response(500, "internal_error", f"internal error; quote request id {g.get('request_id')} to the sshca admin")
