import pytest

from ca.errors import CAError, InvalidCertificateSpec, InvalidName
from ca.principals import (
    MAX_PRINCIPALS,
    grant_principals,
    group_principal,
    host_principal,
    host_principals,
    parse_principal,
    parse_target,
    validate_group,
    validate_host,
    validate_login,
)


@pytest.mark.parametrize(
    "login",
    ["root", "deploy", "john.smith", "john_smith", "a", "A1", "_svc", "x-y", "a" * 32, "1st", ".hidden"],
)
def test_login_valid(login):
    assert validate_login(login) == login


@pytest.mark.parametrize(
    ("login", "message"),
    [
        ("", r"invalid login '': a login must not be empty"),
        ("a" * 33, r"at most 32 characters, this one has 33"),
        ("-root", r"invalid login '-root': a login must not start with '-'"),
        ("john smith", r"character ' ' at position 4 is not allowed"),
        (" root", r"character ' ' at position 0 is not allowed"),
        ("root\n", r"character '\\n' at position 4 is not allowed"),
        ("root,admin", r"character ',' at position 4 is not allowed"),
        ("ro*t", r"character '\*' at position 2 is not allowed"),
        ("r@ot", r"character '@' at position 1 is not allowed"),
        ("ro\"ot", r"character '\"' at position 2 is not allowed"),
        ("jörg", r"character 'ö' at position 1 is not allowed"),
        ("a\x00b", r"character '\\x00' at position 1 is not allowed"),
        (".", r"'\.' and '\.\.' are not user names"),
        ("..", r"'\.' and '\.\.' are not user names"),
        ("1234", r"must not be all digits"),
    ],
)
def test_login_invalid(login, message):
    with pytest.raises(InvalidName, match=message) as info:
        validate_login(login)

    assert info.value.code == "invalid_login"
    assert info.value.field == "login"
    assert info.value.value == login


def test_login_not_a_string():
    with pytest.raises(InvalidName, match=r"invalid login 5: expected a string"):
        validate_login(5)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        validate_login("")

    assert issubclass(InvalidName, CAError)


@pytest.mark.parametrize(
    "host",
    ["db1", "db1.prod.example.com", "10-0-0-1.example", "a" * 63 + ".example", "x1", "1x"],
)
def test_host_valid(host):
    assert validate_host(host) == host


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("", r"a host name must not be empty"),
        ("DB1.example.com", r"host names are written in lower case, for example 'db1.example.com'"),
        ("db1.", r"empty label: remove the leading, trailing or doubled '\.'"),
        (".db1", r"empty label"),
        ("db1..example", r"empty label"),
        ("-db1", r"label '-db1' may contain only a-z, 0-9 and '-', and must not start or end with '-'"),
        ("db1-", r"label 'db1-' may contain only"),
        ("db_1", r"label 'db_1' may contain only"),
        ("db 1", r"label 'db 1' may contain only"),
        ("*.example", r"label '\*' may contain only"),
        ("db1,db2", r"label 'db1,db2' may contain only"),
        ("a" * 64 + ".example", r"is longer than 63 characters"),
        (".".join(["abcdefghi"] * 26), r"at most 253 characters, this one has 259"),
        ("group:prod", r"label 'group:prod' may contain only"),
    ],
)
def test_host_invalid(host, message):
    with pytest.raises(InvalidName, match=message) as info:
        validate_host(host)

    assert info.value.code == "invalid_host"
    assert info.value.field == "host"
    assert info.value.value == host


@pytest.mark.parametrize("group", ["prod-db", "web", "a1", "1a", "a" * 64])
def test_group_valid(group):
    assert validate_group(group) == group


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("", r"a group name must not be empty"),
        ("Prod", r"use only lower-case letters, digits and '-'"),
        ("prod_db", r"use only lower-case letters, digits and '-'"),
        ("prod.db", r"use only lower-case letters"),
        ("-prod", r"starting with a letter or a digit"),
        ("prod db", r"use only lower-case letters"),
        ("a" * 65, r"at most 64 characters, this one has 65"),
    ],
)
def test_group_invalid(group, message):
    with pytest.raises(InvalidName, match=message) as info:
        validate_group(group)

    assert info.value.code == "invalid_group"
    assert info.value.field == "group"


def test_parse_target_host_and_group():
    assert parse_target("db1.example.com") == ("host", "db1.example.com")
    assert parse_target("group:prod-db") == ("group", "prod-db")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("group:", r"invalid group name '': a group name must not be empty"),
        ("group:Prod", r"invalid group name 'Prod'"),
        ("Group:prod", r"invalid host name 'Group:prod'"),
        ("db1 ", r"invalid host name 'db1 '"),
    ],
)
def test_parse_target_invalid(entry, message):
    with pytest.raises(InvalidName, match=message):
        parse_target(entry)


def test_principal_builders():
    assert host_principal("deploy", "db1.prod.example.com") == "deploy@db1.prod.example.com"
    assert group_principal("john.smith", "prod-db") == "john.smith@group:prod-db"


def test_principal_builders_validate():
    with pytest.raises(InvalidName, match=r"invalid login 'de ploy'"):
        host_principal("de ploy", "db1")

    with pytest.raises(InvalidName, match=r"invalid host name 'DB1'"):
        host_principal("deploy", "DB1")

    with pytest.raises(InvalidName, match=r"invalid group name 'prod_db'"):
        group_principal("deploy", "prod_db")


def test_parse_principal_round_trip():
    assert parse_principal("deploy@db1.example") == ("deploy", "host", "db1.example")
    assert parse_principal("deploy@group:prod-db") == ("deploy", "group", "prod-db")


@pytest.mark.parametrize(
    ("principal", "message"),
    [
        ("deploy", r"invalid principal 'deploy': expected '<login>@<host>'"),
        ("@db1", r"invalid principal '@db1': invalid login ''"),
        ("deploy@", r"invalid principal 'deploy@': invalid host name ''"),
        ("deploy@db1@db2", r"invalid principal 'deploy@db1@db2': invalid host name 'db1@db2'"),
        ("*@db1", r"invalid principal '\*@db1'"),
        ("deploy@group:", r"invalid group name ''"),
    ],
)
def test_parse_principal_invalid(principal, message):
    with pytest.raises(InvalidName, match=message) as info:
        parse_principal(principal)

    assert info.value.code == "invalid_principal"
    assert info.value.field == "principals"


def test_grant_principals_order_and_duplicates():
    principals = grant_principals(
        "deploy", ["db2.example", "group:prod-db", "db1.example", "db2.example", "group:prod-db"]
    )

    assert principals == ["deploy@db2.example", "deploy@group:prod-db", "deploy@db1.example"]


def test_grant_principals_empty_rejected():
    with pytest.raises(InvalidCertificateSpec, match=r"names no host or group") as info:
        grant_principals("deploy", [])

    assert info.value.code == "no_principals"


def test_grant_principals_at_limit():
    hosts = [f"h{i}.example" for i in range(MAX_PRINCIPALS)]

    assert len(grant_principals("deploy", hosts)) == MAX_PRINCIPALS


def test_grant_principals_over_limit():
    hosts = [f"h{i}.example" for i in range(MAX_PRINCIPALS + 1)]

    with pytest.raises(
        InvalidCertificateSpec,
        match=r"needs 257 principals, but OpenSSH accepts at most 256 .*request a host group",
    ) as info:
        grant_principals("deploy", hosts)

    assert info.value.code == "too_many_principals"
    assert info.value.value == 257


def test_grant_principals_invalid_entries():
    with pytest.raises(InvalidName, match=r"invalid login 'de ploy'"):
        grant_principals("de ploy", ["db1"])

    with pytest.raises(InvalidName, match=r"invalid host name 'DB1'"):
        grant_principals("deploy", ["db1", "DB1"])


def test_grant_principals_rejects_one_string():
    with pytest.raises(TypeError, match=r"not one string"):
        grant_principals("deploy", "db1")


def test_host_principals_lists_host_then_groups():
    assert host_principals("db1.example", ["prod-db", "prod", "prod-db"], "postgres") == [
        "postgres@db1.example",
        "postgres@group:prod-db",
        "postgres@group:prod",
    ]


def test_host_principals_validate():
    with pytest.raises(InvalidName, match=r"invalid group name 'Prod'"):
        host_principals("db1", ["Prod"], "deploy")
