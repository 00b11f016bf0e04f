"""Fixtures for the /ui tests: a data directory with users, tokens, a policy and an inventory.

Every module gets its own data directory and app. Tests create the requests
they need through the JSON API, so each test works on requests of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server import admin
from server.app import create_app
from server.config import Config, load_config

INVENTORY = """\
[[hosts]]
name = "db1.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "db2.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "web1.example.com"
groups = ["prod-web"]
logins = ["deploy"]
"""

POLICY = """\
[defaults]
max_duration = "8h"
request_ttl = "24h"
clock_skew = "60s"

[[rules]]
name = "sre-db"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["deploy", "postgres"]
max_duration = "4h"
approvals = 1
approvers = ["group:dba-leads"]

[[rules]]
name = "sre-web"
requesters = ["group:sre"]
hosts = ["web1.example.com"]
logins = ["deploy"]
max_duration = "2h"
approvals = 2
approvers = ["group:dba-leads"]
"""

# name -> (groups, is_auditor)
USERS = {
    "alice": (("sre",), False),
    "erin": (("sre",), False),
    "bob": (("dba-leads",), False),
    "dave": (("dba-leads",), False),
    "mallory": ((), False),
    "carol": ((), True),
}

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class WebSite:
    """A data directory with the users above and one API token each."""

    data_dir: Path
    config: Config
    tokens: dict[str, str] = field(default_factory=dict)


def make_site(directory: Path) -> WebSite:
    config_path = admin.init_data_dir(directory)
    (directory / "inventory.toml").write_text(INVENTORY)
    (directory / "policy.toml").write_text(POLICY)
    config = load_config(config_path)

    site = WebSite(directory, config)
    for name, (groups, auditor) in USERS.items():
        admin.add_user(config, name, groups=groups, auditor=auditor)
        site.tokens[name] = admin.create_token(config, name)[1]
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> WebSite:
    return make_site(tmp_path_factory.mktemp("web-data"))


@pytest.fixture(scope="module")
def app(site):
    application = create_app(site.config)
    yield application
    application.extensions["sshca"].close()


def csrf_from(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client, token: str):
    """Sign ``client`` in through the form; return the sign-in response."""
    page = client.get("/ui/sign-in")
    return client.post("/ui/sign-in", data={"csrf_token": csrf_from(page.text), "token": token})


def api_request(client, token: str, *, hosts=("group:prod-db",), login="deploy", duration="1h",
                reason="restart the replica") -> dict:
    """Create a request through the JSON API and return its JSON."""
    response = client.post(
        "/v1/requests", headers={"Authorization": f"Bearer {token}"},
        json={"hosts": list(hosts), "login": login, "duration": duration, "reason": reason},
    )
    assert response.status_code == 201, response.text
    return response.get_json()


def api_get(client, token: str, path: str):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})
