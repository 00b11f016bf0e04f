"""Principal naming: the one place where principal strings are made and names are checked.

A certificate principal is ``<login>@<host>`` for a host grant and
``<login>@group:<group>`` for a host-group grant. Each host's
AuthorizedPrincipalsFile for login ``L`` lists ``L@<host>`` and
``L@group:<g>`` for each group the host belongs to, so a certificate for one
host or login does not open another.

Names are checked byte for byte and returned unchanged: nothing is trimmed,
lower-cased or otherwise cleaned up, because a name that differs from what was
approved must not be signed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ca.errors import InvalidCertificateSpec, InvalidName, quote_value

# OpenSSH (PROTOCOL.certkeys, sshkey.c) rejects certificates with more than
# 256 principals (SSHKEY_CERT_MAX_PRINCIPALS).
MAX_PRINCIPALS = 256

MAX_LOGIN_LENGTH = 32
MAX_HOST_LENGTH = 253
MAX_HOST_LABEL_LENGTH = 63
MAX_GROUP_LENGTH = 64

GROUP_PREFIX = "group:"

# POSIX portable user name: the portable filename character set
# (A-Z a-z 0-9 . _ -), not starting with '-'.
_LOGIN_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_GROUP = re.compile(r"[a-z0-9][a-z0-9-]*")


def _first_bad_character(value: str, allowed: re.Pattern[str]) -> tuple[int, str] | None:
    for index, char in enumerate(value):
        if not allowed.fullmatch(char):
            return index, char
    return None


def _require_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidName(
            f"invalid {field} {quote_value(value)}: expected a string",
            code=f"invalid_{field}",
            field=field,
            value=value,
        )
    return value


def validate_login(login: str) -> str:
    """Check that ``login`` is a POSIX portable user name and return it unchanged.

    Allowed: letters, digits, '.', '_' and '-', not starting with '-', at most
    32 characters, not all digits (useradd would read it as a user ID), and not
    '.' or '..'. Raises InvalidName (code ``invalid_login``, field ``login``).
    """
    _require_str(login, "login")

    def fail(reason: str) -> InvalidName:
        return InvalidName(
            f"invalid login {quote_value(login)}: {reason}",
            code="invalid_login",
            field="login",
            value=login,
        )

    if not login:
        raise fail("a login must not be empty")

    if len(login) > MAX_LOGIN_LENGTH:
        raise fail(
            f"a login has at most {MAX_LOGIN_LENGTH} characters, this one has {len(login)}"
        )

    bad = _first_bad_character(login, _LOGIN_CHARS)
    if bad is not None:
        index, char = bad
        raise fail(
            f"character {char!r} at position {index} is not allowed; "
            "use only letters, digits, '.', '_' and '-'"
        )

    if login.startswith("-"):
        raise fail("a login must not start with '-'")

    if login in (".", ".."):
        raise fail("'.' and '..' are not user names")

    if login.isdigit():
        raise fail("a login must not be all digits, because it would read as a user ID")

    return login


def validate_host(name: str) -> str:
    """Check that ``name`` is a lower-case DNS host name and return it unchanged.

    Labels of 1 to 63 characters from a-z, 0-9 and '-', not starting or ending
    with '-', joined by single dots, at most 253 characters in all, with no
    trailing dot. Raises InvalidName (code ``invalid_host``, field ``host``).
    """
    _require_str(name, "host")

    def fail(reason: str) -> InvalidName:
        return InvalidName(
            f"invalid host name {quote_value(name)}: {reason}",
            code="invalid_host",
            field="host",
            value=name,
        )

    if not name:
        raise fail("a host name must not be empty")

    if len(name) > MAX_HOST_LENGTH:
        raise fail(
            f"a host name has at most {MAX_HOST_LENGTH} characters, this one has {len(name)}"
        )

    if name != name.lower():
        raise fail(f"host names are written in lower case, for example {name.lower()!r}")

    for label in name.split("."):
        if not label:
            raise fail("empty label: remove the leading, trailing or doubled '.'")
        if len(label) > MAX_HOST_LABEL_LENGTH:
            raise fail(
                f"label {label!r} is longer than {MAX_HOST_LABEL_LENGTH} characters"
            )
        if not _HOST_LABEL.fullmatch(label):
            raise fail(
                f"label {label!r} may contain only a-z, 0-9 and '-', "
                "and must not start or end with '-'"
            )

    return name


def validate_group(name: str) -> str:
    """Check that ``name`` is a host-group name and return it unchanged.

    Allowed: lower-case letters, digits and '-', starting with a letter or a
    digit, at most 64 characters. Raises InvalidName (code ``invalid_group``,
    field ``group``).
    """
    _require_str(name, "group")

    def fail(reason: str) -> InvalidName:
        return InvalidName(
            f"invalid group name {quote_value(name)}: {reason}",
            code="invalid_group",
            field="group",
            value=name,
        )

    if not name:
        raise fail("a group name must not be empty")

    if len(name) > MAX_GROUP_LENGTH:
        raise fail(
            f"a group name has at most {MAX_GROUP_LENGTH} characters, this one has {len(name)}"
        )

    if not _GROUP.fullmatch(name):
        raise fail(
            "use only lower-case letters, digits and '-', starting with a letter or a digit"
        )

    return name


def parse_target(entry: str) -> tuple[str, str]:
    """Split a grant target into its kind and name, validating the name.

    ``"db1"`` returns ``("host", "db1")`` and ``"group:prod-db"`` returns
    ``("group", "prod-db")``. Raises InvalidName.
    """
    _require_str(entry, "host")

    if entry.startswith(GROUP_PREFIX):
        return "group", validate_group(entry[len(GROUP_PREFIX):])

    return "host", validate_host(entry)


def host_principal(login: str, host: str) -> str:
    """Return the principal for a host grant: ``<login>@<host>``."""
    return f"{validate_login(login)}@{validate_host(host)}"


def group_principal(login: str, group: str) -> str:
    """Return the principal for a host-group grant: ``<login>@group:<group>``."""
    return f"{validate_login(login)}@{GROUP_PREFIX}{validate_group(group)}"


def parse_principal(principal: str) -> tuple[str, str, str]:
    """Split a principal into ``(login, kind, name)``, where kind is "host" or "group".

    ``"deploy@db1"`` returns ``("deploy", "host", "db1")`` and
    ``"deploy@group:prod-db"`` returns ``("deploy", "group", "prod-db")``.
    Raises InvalidName (code ``invalid_principal``, field ``principals``).
    """
    _require_str(principal, "principal")

    login, at, target = principal.partition("@")
    if not at:
        raise InvalidName(
            f"invalid principal {quote_value(principal)}: expected '<login>@<host>' "
            "or '<login>@group:<group>'",
            code="invalid_principal",
            field="principals",
            value=principal,
        )

    try:
        validate_login(login)
        kind, name = parse_target(target)
    except InvalidName as exc:
        raise InvalidName(
            f"invalid principal {quote_value(principal)}: {exc}",
            code="invalid_principal",
            field="principals",
            value=principal,
        ) from None

    return login, kind, name


def _check_count(principals: list[str], *, login: str) -> None:
    if len(principals) > MAX_PRINCIPALS:
        raise InvalidCertificateSpec(
            f"the grant for login {quote_value(login)} needs {len(principals)} principals, but "
            f"OpenSSH accepts at most {MAX_PRINCIPALS} in one certificate; "
            "request a host group (group:<name>) instead of single hosts",
            code="too_many_principals",
            field="hosts",
            value=len(principals),
        )


def grant_principals(login: str, targets: Iterable[str]) -> list[str]:
    """Return the certificate principals for a grant of ``login`` on ``targets``.

    Each target is a host name or ``group:<name>``. The principals keep the
    order of the targets, without duplicates. Raises InvalidName for a bad
    login or target, and InvalidCertificateSpec with code ``no_principals``
    for no targets or ``too_many_principals`` for more than 256 principals.
    """
    if isinstance(targets, str):
        raise TypeError("targets must be a list of host or group entries, not one string")

    validate_login(login)

    principals: list[str] = []
    seen: set[str] = set()
    for entry in targets:
        kind, name = parse_target(entry)
        principal = group_principal(login, name) if kind == "group" else host_principal(login, name)
        if principal not in seen:
            seen.add(principal)
            principals.append(principal)

    if not principals:
        # OpenSSH reads an empty principal list as "valid for any principal".
        raise InvalidCertificateSpec(
            f"the grant for login {quote_value(login)} names no host or group; "
            "give at least one host name or group:<name>",
            code="no_principals",
            field="hosts",
            value=[],
        )

    _check_count(principals, login=login)
    return principals


def host_principals(host: str, groups: Iterable[str], login: str) -> list[str]:
    """Return the principals that login ``login`` on ``host`` accepts.

    That is ``login@host`` followed by ``login@group:<g>`` for each group of
    the host, without duplicates: the content of the host's
    AuthorizedPrincipalsFile for that login. Raises InvalidName.
    """
    if isinstance(groups, str):
        raise TypeError("groups must be a list of group names, not one string")

    principals = [host_principal(login, host)]
    for group in groups:
        principal = group_principal(login, group)
        if principal not in principals:
            principals.append(principal)

    return principals
