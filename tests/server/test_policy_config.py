"""Policy parsing and matching, and the configuration layers (defaults, file, environment)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from hostconfig.inventory import InventoryError, parse_inventory
from server.config import ConfigError, load_config, load_session_key
from server.policy import PolicyError, parse_policy
from tests.support.live_server import DEFAULT_INVENTORY, DEFAULT_POLICY

LIMITS = {"max_certificate_lifetime": timedelta(hours=24), "clock_skew": timedelta(seconds=60),
          "request_ttl": timedelta(hours=24)}

RULE = """
[[rules]]
name = "r"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["deploy"]
approvers = ["group:leads"]
"""


def policy(text: str, **limits):
    return parse_policy(text.encode(), "policy.toml", **{**LIMITS, **limits})


def test_default_policy_parses():
    parsed = policy(DEFAULT_POLICY)

    assert [rule.name for rule in parsed.rules] == ["sre-prod-db", "sre-prod-web"]
    assert parsed.max_duration == timedelta(hours=8)
    assert parsed.request_ttl == timedelta(hours=24)
    assert parsed.rules[0].approvals == 2
    assert parsed.rules[0].extensions == ("permit-pty",)
    assert len(parsed.sha256) == 64


def test_config_values_fill_missing_defaults():
    parsed = policy(RULE, clock_skew=timedelta(seconds=30), request_ttl=timedelta(hours=2))

    assert parsed.clock_skew == timedelta(seconds=30)
    assert parsed.request_ttl == timedelta(hours=2)
    assert parsed.max_duration == timedelta(hours=24)
    assert parsed.rules[0].approvals == 1


BAD_POLICIES = [
    ("[defaults]\nmax_duration = 'forever'\n", "defaults", "max_duration"),
    ("[defaults]\nmax_duration = '48h'\n", "defaults", "max_duration"),
    ("[defaults]\ncolour = 'red'\n", "defaults", "colour"),
    (RULE.replace('name = "r"', "name = ''"), "rules[0]", "name"),
    (RULE + RULE, "rules[1] (r)", "name"),
    (RULE.replace('logins = ["deploy"]', 'logins = ["root user"]'), "rules[0] (r)", "logins"),
    (RULE.replace('logins = ["deploy"]', "logins = []"), "rules[0] (r)", "logins"),
    (RULE.replace('hosts = ["group:prod-db"]', 'hosts = ["DB1"]'), "rules[0] (r)", "hosts"),
    (RULE.replace('requesters = ["group:sre"]', 'requesters = ["group:SRE"]'), "rules[0] (r)", "requesters"),
    (RULE.replace('approvers = ["group:leads"]', 'approvers = "group:leads"'), "rules[0] (r)", "approvers"),
    (RULE + "approvals = 0\n", "rules[0] (r)", "approvals"),
    (RULE + "approvals = true\n", "rules[0] (r)", "approvals"),
    (RULE + "max_duration = '0'\n", "rules[0] (r)", "max_duration"),
    ("[defaults]\nmax_duration = '1h'\n" + RULE + "max_duration = '2h'\n", "rules[0] (r)", "max_duration"),
    (RULE + "extensions = ['permit-everything']\n", "rules[0] (r)", "extensions"),
    (RULE + "source_address = ['10.0.0.0/33']\n", "rules[0] (r)", "source_address"),
    (RULE + 'force_command = "a\\nb"\n', "rules[0] (r)", "force_command"),
    (RULE + "colour = 'red'\n", "rules[0] (r)", "colour"),
    ("rules = 'x'\n", "rules", None),
    ("[[rules]\n", "file", None),
]


@pytest.mark.parametrize(("text", "entry", "field"), BAD_POLICIES, ids=range(len(BAD_POLICIES)))
def test_invalid_policy_names_file_entry_field(text, entry, field):
    with pytest.raises(PolicyError) as caught:
        policy(text)

    message = str(caught.value)
    assert message.startswith("policy.toml: ")
    assert entry in message
    if field:
        assert f"'{field}'" in message
    assert caught.value.entry == entry
    assert caught.value.field == field


def test_matching_by_user_group_and_host_group():
    parsed = policy(DEFAULT_POLICY)
    inventory = parse_inventory(DEFAULT_INVENTORY, "inventory.toml")
    sre = frozenset({"sre"})

    assert parsed.match("alice", sre, ["db1.prod.example.com"], "deploy", inventory).name == "sre-prod-db"
    assert parsed.match("alice", sre, ["group:prod-db"], "postgres", inventory).name == "sre-prod-db"
    assert parsed.match("alice", sre, ["web1.prod.example.com"], "deploy", inventory).name == "sre-prod-web"
    assert parsed.match("alice", sre, ["web1.prod.example.com"], "postgres", inventory) is None
    assert parsed.match("alice", frozenset(), ["db1.prod.example.com"], "deploy", inventory) is None
    assert parsed.match("alice", sre, ["group:prod-web", "db1.prod.example.com"], "deploy", inventory) is None


def test_group_request_needs_group_in_rule():
    text = RULE.replace('hosts = ["group:prod-db"]', 'hosts = ["db1.prod.example.com", "db2.prod.example.com"]')
    parsed = policy(text)
    inventory = parse_inventory(DEFAULT_INVENTORY, "inventory.toml")

    # Listing every host of a group is not the same as granting the group.
    assert parsed.match("alice", frozenset({"sre"}), ["group:prod-db"], "deploy", inventory) is None
    assert parsed.match("alice", frozenset({"sre"}), ["db2.prod.example.com"], "deploy", inventory) is not None


def test_config_layers(tmp_path):
    config_file = tmp_path / "sshca.toml"
    config_file.write_text('clock_skew = "30s"\nrequest_ttl = "2h"\npolicy = "p/policy.toml"\n')

    config = load_config(config_file, environ={"SSHCA_REQUEST_TTL": "3h", "SSHCA_DATABASE_URL": "sqlite:///x.db"})

    assert config.data_dir == tmp_path
    assert config.clock_skew == timedelta(seconds=30)
    assert config.request_ttl == timedelta(hours=3)
    assert config.max_certificate_lifetime == timedelta(hours=24)
    assert config.database_url == "sqlite:///x.db"
    assert config.policy == tmp_path / "p" / "policy.toml"
    assert config.inventory == tmp_path / "inventory.toml"
    assert config.ca_key == tmp_path / "ca" / "ca.key"


def test_config_from_environment_only(tmp_path):
    config = load_config(environ={"SSHCA_DATA_DIR": str(tmp_path), "SSHCA_MAX_CERTIFICATE_LIFETIME": "8h",
                                  "SSHCA_CA_PASSPHRASE_ENV": "CA_PASS"})

    assert config.data_dir == tmp_path
    assert config.database_url == f"sqlite:///{tmp_path / 'sshca.db'}"
    assert config.max_certificate_lifetime == timedelta(hours=8)
    assert config.ca_passphrase_env == "CA_PASS"


@pytest.mark.parametrize(("content", "environ", "fragment"), [
    ('colour = "red"\n', {}, "colour"),
    ('clock_skew = "soon"\n', {}, "clock_skew"),
    ("clock_skew = \n", {}, "invalid TOML"),
    ("", {"SSHCA_REQUEST_TTL": "0"}, "SSHCA_REQUEST_TTL"),
    ("", {"SSHCA_MIN_RSA_BITS": "1024"}, "min_rsa_bits"),
    ("", {"SSHCA_LOG_LEVEL": "LOUD"}, "LOUD"),
    ("data_dir = 5\n", {}, "data_dir"),
])
def test_invalid_config_rejected(tmp_path, content, environ, fragment):
    config_file = tmp_path / "sshca.toml"
    config_file.write_text(content)

    with pytest.raises(ConfigError) as caught:
        load_config(config_file, environ=environ)
    assert fragment in str(caught.value)


def test_missing_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="sshca admin init"):
        load_config(tmp_path / "nope.toml", environ={})


def test_session_key_generated_once(tmp_path):
    path = tmp_path / "session.key"

    first = load_session_key(path)
    second = load_session_key(path)

    assert first == second
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in Path(tmp_path).iterdir()] == ["session.key"]


@pytest.mark.parametrize("target", ["db9.prod.example.com", "group:prod-dbs"])
def test_rule_naming_unknown_target_rejected(target):
    parsed = policy(RULE.replace('hosts = ["group:prod-db"]', f'hosts = ["group:prod-db", "{target}"]'))
    inventory = parse_inventory(DEFAULT_INVENTORY, "inventory.toml")

    with pytest.raises(InventoryError, match=rf"unknown host or group '{target}'") as caught:
        parsed.check_targets(inventory)

    assert "policy.toml" in str(caught.value)
    assert "rules[0] (r)" in str(caught.value)
    assert caught.value.code == "unknown_target"


def test_default_policy_targets_known():
    policy(DEFAULT_POLICY).check_targets(parse_inventory(DEFAULT_INVENTORY, "inventory.toml"))


def test_web_settings_from_file_and_environment(tmp_path):
    config_file = tmp_path / "sshca.toml"
    config_file.write_text('trusted_proxies = ["10.0.0.5", "10.1.0.0/16"]\nproxy_user_header = "X-Remote-User"\n'
                           'web_session_lifetime = "2h"\n')

    from_file = load_config(config_file, environ={})
    from_environment = load_config(config_file, environ={"SSHCA_TRUSTED_PROXIES": "192.0.2.1, 192.0.2.2"})

    assert from_file.trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    assert from_file.proxy_user_header == "X-Remote-User"
    assert from_file.web_session_lifetime == timedelta(hours=2)
    assert from_environment.trusted_proxies == ("192.0.2.1", "192.0.2.2")
    assert load_config(None, environ={}).trusted_proxies is None


def test_invalid_trusted_proxies_rejected(tmp_path):
    config_file = tmp_path / "sshca.toml"
    config_file.write_text("trusted_proxies = 5\n")

    with pytest.raises(ConfigError, match=r"trusted_proxies must be a list of addresses or networks"):
        load_config(config_file, environ={})
