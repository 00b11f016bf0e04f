"""Trusted-proxy and session settings of the web pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask

from server.web.proxy import ProxySettingError, parse_proxy_settings
from server.web.settings import WebSettingError, load_web_settings


def test_proxy_off_without_both_settings():
    assert not parse_proxy_settings(None, None).enabled
    assert not parse_proxy_settings(["10.0.0.1"], None).enabled
    assert not parse_proxy_settings([], "X-Remote-User").enabled
    assert not parse_proxy_settings(["10.0.0.1"], "  ").enabled


@pytest.mark.parametrize("networks", [["10.0.0.0/8", "::1"], "10.0.0.0/8, ::1", "10.0.0.0/8 ::1"])
def test_proxy_networks_parsed(networks):
    settings = parse_proxy_settings(networks, "X-Remote-User")
    assert settings.enabled
    assert [str(network) for network in settings.networks] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize("address, expected", [
    ("10.1.2.3", "alice"),
    ("::1", "alice"),
    ("::ffff:10.1.2.3", "alice"),
    ("11.1.2.3", None),
    ("127.0.0.1", None),
    ("not-an-address", None),
    ("", None),
    (None, None),
])
def test_proxy_user_only_from_trusted_peer(address, expected):
    settings = parse_proxy_settings(["10.0.0.0/8", "::1"], "X-Remote-User")
    assert settings.user_from(address, {"X-Remote-User": "alice"}) == expected


def test_proxy_empty_header_ignored():
    settings = parse_proxy_settings(["10.0.0.0/8"], "X-Remote-User")
    assert settings.user_from("10.1.2.3", {"X-Remote-User": " "}) is None
    assert settings.user_from("10.1.2.3", {}) is None


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "proxy.example.com", "*"])
def test_proxy_invalid_network_named(entry):
    with pytest.raises(ProxySettingError, match="invalid trusted_proxies entry") as info:
        parse_proxy_settings([entry], "X-Remote-User")
    assert repr(entry) in str(info.value)


def test_web_settings_defaults():
    settings = load_web_settings(Flask("test"))
    assert settings.session_lifetime == timedelta(hours=8)
    assert not settings.proxy.enabled


def test_web_settings_from_flask_config():
    app = Flask("test")
    app.config["SSHCA_WEB_SESSION_LIFETIME"] = "30m"
    app.config["SSHCA_TRUSTED_PROXIES"] = ["192.0.2.10"]
    app.config["SSHCA_PROXY_USER_HEADER"] = "X-Forwarded-User"
    settings = load_web_settings(app)
    assert settings.session_lifetime == timedelta(minutes=30)
    assert settings.proxy.user_from("192.0.2.10", {"X-Forwarded-User": "bob"}) == "bob"


@pytest.mark.parametrize("key, value, message", [
    ("SSHCA_WEB_SESSION_LIFETIME", "forever", "web_session_lifetime"),
    ("SSHCA_TRUSTED_PROXIES", ["10.0.0.300"], "trusted_proxies"),
])
def test_web_settings_invalid_value_named(key, value, message):
    app = Flask("test")
    app.config[key] = value
    with pytest.raises(WebSettingError, match=message):
        load_web_settings(app)
