"""Settings of the web pages: session lifetime and the optional trusted-proxy sign-in.

Each setting is read from the server configuration object when it has the
attribute (``trusted_proxies``, ``proxy_user_header``, ``web_session_lifetime``),
else from the Flask config key ``SSHCA_<NAME>`` (for example
``SSHCA_TRUSTED_PROXIES``), else from the default below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Flask

from ca.durations import parse_duration
from server.web.proxy import ProxySettingError, ProxySettings, parse_proxy_settings

DEFAULT_SESSION_LIFETIME = "8h"


class WebSettingError(ValueError):
    """A web setting is malformed; the message names the key and the value."""


@dataclass(frozen=True)
class WebSettings:
    session_lifetime: timedelta
    proxy: ProxySettings


def _setting(app: Flask, name: str, default):
    runtime = app.extensions.get("sshca")
    config = getattr(runtime, "config", None)
    value = getattr(config, name, None)
    if value is not None:
        return value
    return app.config.get("SSHCA_" + name.upper(), default)


def load_web_settings(app: Flask) -> WebSettings:
    """Read the web settings for ``app``; raises WebSettingError on a malformed value."""
    lifetime = _setting(app, "web_session_lifetime", DEFAULT_SESSION_LIFETIME)
    if not isinstance(lifetime, timedelta):
        try:
            lifetime = parse_duration(lifetime, field="web_session_lifetime")
        except ValueError as exc:
            raise WebSettingError(str(exc)) from None

    try:
        proxy = parse_proxy_settings(
            _setting(app, "trusted_proxies", None),
            _setting(app, "proxy_user_header", None),
        )
    except ProxySettingError as exc:
        raise WebSettingError(str(exc)) from None

    return WebSettings(session_lifetime=lifetime, proxy=proxy)
