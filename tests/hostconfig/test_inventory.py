import hashlib

import pytest

from ca.errors import CAError, InvalidName
from hostconfig.inventory import Host, InventoryError, load_inventory, parse_inventory

SAMPLE = """\
[[hosts]]
name = "db1.prod.example.com"
groups = ["prod-db", "prod"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "db2.prod.example.com"
groups = ["prod-db"]
logins = ["postgres"]

[[hosts]]
name = "web1.prod.example.com"
groups = ["prod"]
logins = ["john.smith"]

[[hosts]]
name = "bastion"
logins = ["ops"]
"""


def test_parse_sample():
    inventory = parse_inventory(SAMPLE, "inventory.toml")

    assert list(inventory.hosts) == [
        "db1.prod.example.com", "db2.prod.example.com", "web1.prod.example.com", "bastion",
    ]
    assert inventory.hosts["db1.prod.example.com"] == Host(
        name="db1.prod.example.com", groups=("prod-db", "prod"), logins=("deploy", "postgres"))
    assert inventory.hosts["bastion"].groups == ()
    assert inventory.groups == {"prod-db", "prod"}
    assert inventory.source == "inventory.toml"


def test_hosts_in_group_keeps_file_order():
    inventory = parse_inventory(SAMPLE)

    assert inventory.hosts_in_group("prod-db") == ["db1.prod.example.com", "db2.prod.example.com"]
    assert inventory.hosts_in_group("prod") == ["db1.prod.example.com", "web1.prod.example.com"]
    assert inventory.hosts_in_group("nonexistent") == []


def test_sha256_matches_file_bytes(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_text(SAMPLE, encoding="utf-8")

    inventory = load_inventory(path)

    assert inventory.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert inventory.sha256 == parse_inventory(SAMPLE).sha256
    assert inventory.source == str(path)


def test_empty_inventory_has_no_hosts():
    inventory = parse_inventory("", "inventory.toml")

    assert inventory.hosts == {}
    assert inventory.groups == set()


def test_host_principals_come_from_ca_principals():
    host = parse_inventory(SAMPLE).hosts["db1.prod.example.com"]

    assert host.principals("deploy") == [
        "deploy@db1.prod.example.com", "deploy@group:prod-db", "deploy@group:prod",
    ]
    with pytest.raises(KeyError):
        host.principals("root")


def test_expand_targets():
    inventory = parse_inventory(SAMPLE)

    assert inventory.expand_targets(["group:prod-db", "web1.prod.example.com"]) == [
        "db1.prod.example.com", "db2.prod.example.com", "web1.prod.example.com",
    ]
    assert inventory.expand_targets(["db2.prod.example.com", "group:prod-db"]) == [
        "db2.prod.example.com", "db1.prod.example.com",
    ]


@pytest.mark.parametrize(("target", "code"), [
    ("db9.prod.example.com", "unknown_host"),
    ("group:staging", "unknown_group"),
])
def test_expand_targets_unknown(target, code):
    inventory = parse_inventory(SAMPLE, "inventory.toml")

    with pytest.raises(InventoryError) as raised:
        inventory.expand_targets([target])

    assert raised.value.code == code
    assert "inventory.toml" in str(raised.value)
    assert target.removeprefix("group:") in str(raised.value)


def test_unknown_targets():
    inventory = parse_inventory(SAMPLE)

    targets = ["bastion", "db9", "group:prod", "group:staging"]

    assert inventory.unknown_targets(targets) == ["db9", "group:staging"]
    with pytest.raises(InvalidName):
        inventory.unknown_targets(["Bad Host"])


def test_check_targets_known():
    inventory = parse_inventory(SAMPLE)

    inventory.check_targets(["group:prod-db", "bastion"], source="policy.toml", entry="rules[0] (a)")


def test_check_targets_names_rule():
    inventory = parse_inventory(SAMPLE, "inventory.toml")

    with pytest.raises(InventoryError) as raised:
        inventory.check_targets(["bastion", "group:staging"], source="policy.toml",
                                entry="rules[1] (sre-staging)")

    assert str(raised.value) == (
        "policy.toml: rules[1] (sre-staging): field 'hosts': unknown host or group "
        "'group:staging': the inventory inventory.toml does not list it; add it to the "
        "inventory or fix the name")
    assert raised.value.code == "unknown_target"
    assert raised.value.value == "group:staging"


def test_load_missing_file(tmp_path):
    path = tmp_path / "missing.toml"

    with pytest.raises(InventoryError, match="failed to read the inventory") as raised:
        load_inventory(path)

    assert str(path) in str(raised.value)


def test_load_rejects_non_utf8(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_bytes(b'[[hosts]]\nname = "\xff"\n')

    with pytest.raises(InventoryError, match="not valid UTF-8"):
        load_inventory(path)


def test_error_is_a_ca_error():
    with pytest.raises(CAError):
        parse_inventory("hosts = 1")


BAD_INVENTORIES = [
    # (TOML text, expected code, fragments the message must contain)
    ("[[hosts]\n", "invalid_inventory", ["inv.toml", "invalid TOML"]),
    ("[[host]]\nname = \"db1\"\nlogins = [\"deploy\"]\n", "invalid_inventory",
     ["inv.toml", "unknown top-level key 'host'"]),
    ("hosts = [\"db1\"]\n", "invalid_inventory", ["inv.toml", "array of tables"]),
    ("[[hosts]]\nname = \"db1\"\nlogin = [\"deploy\"]\n", "invalid_inventory",
     ["hosts[0] (db1)", "field 'login'", "unknown key 'login'"]),
    ("[[hosts]]\nlogins = [\"deploy\"]\n", "invalid_inventory",
     ["hosts[0]", "field 'name'", "missing host name"]),
    ("[[hosts]]\nname = \"DB1\"\nlogins = [\"deploy\"]\n", "invalid_host",
     ["hosts[0] (DB1)", "field 'name'", "'DB1'", "lower case"]),
    ("[[hosts]]\nname = \"db1 db2\"\nlogins = [\"deploy\"]\n", "invalid_host",
     ["hosts[0] (db1 db2)", "field 'name'"]),
    ("[[hosts]]\nname = 7\nlogins = [\"deploy\"]\n", "invalid_inventory",
     ["hosts[0]", "field 'name'", "expected a string"]),
    ("[[hosts]]\nname = \"db1\"\n", "host_without_logins",
     ["hosts[0] (db1)", "field 'logins'", "missing logins"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = []\n", "host_without_logins",
     ["hosts[0] (db1)", "field 'logins'", "empty logins"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = \"deploy\"\n", "invalid_inventory",
     ["hosts[0] (db1)", "field 'logins'", "expected a list"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = [\"-rf\"]\n", "invalid_login",
     ["hosts[0] (db1)", "field 'logins'", "'-rf'"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = [\"de ploy\"]\n", "invalid_login",
     ["hosts[0] (db1)", "field 'logins'", "'de ploy'"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = [\"deploy\", \"deploy\"]\n", "invalid_inventory",
     ["hosts[0] (db1)", "field 'logins'", "listed twice"]),
    ("[[hosts]]\nname = \"db1\"\ngroups = [\"Prod_DB\"]\nlogins = [\"deploy\"]\n",
     "invalid_group", ["hosts[0] (db1)", "field 'groups'", "'Prod_DB'"]),
    ("[[hosts]]\nname = \"db1\"\ngroups = [\"prod,db\"]\nlogins = [\"deploy\"]\n",
     "invalid_group", ["hosts[0] (db1)", "field 'groups'", "'prod,db'"]),
    ("[[hosts]]\nname = \"db1\"\ngroups = [\"prod\", \"prod\"]\nlogins = [\"deploy\"]\n",
     "invalid_inventory", ["hosts[0] (db1)", "field 'groups'", "listed twice"]),
    ("[[hosts]]\nname = \"db1\"\ngroups = \"prod\"\nlogins = [\"deploy\"]\n",
     "invalid_inventory", ["hosts[0] (db1)", "field 'groups'", "expected a list"]),
    ("[[hosts]]\nname = \"db1\"\nlogins = [\"a\"]\n\n[[hosts]]\nname = \"db2\"\nlogins = [\"a\"]\n"
     "\n[[hosts]]\nname = \"db1\"\nlogins = [\"b\"]\n", "duplicate_host",
     ["hosts[2] (db1)", "field 'name'", "duplicate host 'db1'", "hosts[0]"]),
]


@pytest.mark.parametrize(("text", "code", "fragments"), BAD_INVENTORIES)
def test_invalid_inventory(text, code, fragments):
    with pytest.raises(InventoryError) as raised:
        parse_inventory(text, "inv.toml")

    message = str(raised.value)
    assert message.startswith("inv.toml")
    assert raised.value.code == code
    for fragment in fragments:
        assert fragment in message
