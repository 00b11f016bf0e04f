"""The host inventory: which hosts exist, their groups and their logins.

``inventory.toml`` lists each host once::

    [[hosts]]
    name = "db1.prod.example.com"
    groups = ["prod-db"]
    logins = ["deploy", "postgres"]

The server reads it to resolve host-group grants and to check that policy
rules name known hosts and groups. ``hostconfig render`` reads it to write
each host's AuthorizedPrincipalsFile entries. Names are validated by
:mod:`ca.principals`, the module the signer uses, and kept byte for byte.
Unknown keys are errors, so a typo such as ``login =`` cannot silently
leave a host without logins.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ca import principals
from ca.errors import CAError

HOST_KEYS = frozenset({"name", "groups", "logins"})


class InventoryError(CAError):
    """An invalid inventory file. The message names the file, the entry and the field."""

    def __init__(self, message: str, *, source: str, entry: str | None = None,
                 field: str | None = None, value: object = None,
                 code: str = "invalid_inventory"):
        location = source
        if entry is not None:
            location += f": {entry}"
        if field is not None:
            location += f": field {field!r}"
        super().__init__(f"{location}: {message}", code=code, field=field, value=value)
        self.source = source
        self.entry = entry


@dataclass(frozen=True)
class Host:
    """One inventory entry: a host name, the groups it belongs to and its logins."""

    name: str
    groups: tuple[str, ...]
    logins: tuple[str, ...]

    def principals(self, login: str) -> list[str]:
        """Return the principals that open ``login`` on this host.

        These are the lines of the host's AuthorizedPrincipalsFile for
        ``login``: ``login@host`` and ``login@group:G`` for each group.
        Raises KeyError when the inventory does not list ``login`` for the host.
        """
        if login not in self.logins:
            raise KeyError(login)
        return principals.host_principals(self.name, self.groups, login)


@dataclass(frozen=True)
class Inventory:
    """A validated inventory: hosts by name, in file order."""

    hosts: dict[str, Host]
    source: str
    sha256: str

    @property
    def groups(self) -> set[str]:
        """Every group that at least one host belongs to."""
        return {group for host in self.hosts.values() for group in host.groups}

    def hosts_in_group(self, group: str) -> list[str]:
        """Return the names of the hosts in ``group``, in file order (empty if unknown)."""
        return [host.name for host in self.hosts.values() if group in host.groups]

    def expand_targets(self, targets: Iterable[str]) -> list[str]:
        """Return the host names that grant targets cover, in order, without duplicates.

        Each target is a host name or ``group:<name>``, as in requests and
        policy rules. Raises InvalidName for a malformed target and
        InventoryError for a host or group the inventory does not list.
        """
        hosts: list[str] = []
        for target in targets:
            for name in self._resolve_target(target):
                if name not in hosts:
                    hosts.append(name)
        return hosts

    def unknown_targets(self, targets: Iterable[str]) -> list[str]:
        """Return the targets that name a host or group missing from the inventory.

        Raises InvalidName for a malformed target.
        """
        unknown = []
        for target in targets:
            kind, name = principals.parse_target(target)
            known = name in self.hosts if kind == "host" else name in self.groups
            if not known:
                unknown.append(target)
        return unknown

    def check_targets(self, targets: Iterable[str], *, source: str, entry: str,
                      field: str = "hosts") -> None:
        """Check that every target names a host or group of the inventory.

        For policy rules: ``source``, ``entry`` and ``field`` locate the list
        in its own file, e.g. ``policy.toml``, ``rules[0] (sre-prod-db)``,
        ``hosts``. Raises InventoryError (code ``unknown_target``) naming the
        first unknown target, and InvalidName for a malformed one.
        """
        unknown = self.unknown_targets(targets)
        if unknown:
            raise InventoryError(
                f"unknown host or group {unknown[0]!r}: the inventory {self.source} does not "
                "list it; add it to the inventory or fix the name",
                source=source, entry=entry, field=field, value=unknown[0], code="unknown_target")

    def _resolve_target(self, target: str) -> list[str]:
        kind, name = principals.parse_target(target)
        if kind == "host":
            if name not in self.hosts:
                raise InventoryError(
                    f"unknown host {name!r}; add it to the inventory or fix the name",
                    source=self.source, field="hosts", value=target, code="unknown_host")
            return [name]

        members = self.hosts_in_group(name)
        if not members:
            raise InventoryError(
                f"unknown group {name!r}: no host in the inventory belongs to it",
                source=self.source, field="hosts", value=target, code="unknown_group")
        return members


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file.

    Raises InventoryError when the file cannot be read, is not UTF-8 TOML or
    breaks a rule. The message names the file, the entry and the field.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InventoryError(f"failed to read the inventory: {exc.strerror}; check the path",
                             source=source, code="inventory_unreadable") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InventoryError("the file is not valid UTF-8; save it as UTF-8",
                             source=source) from None
    return parse_inventory(text, source)


def parse_inventory(text: str, source: str = "<inventory>") -> Inventory:
    """Validate inventory TOML text, naming it ``source`` in error messages.

    ``Inventory.sha256`` is the SHA-256 of the UTF-8 encoded text, so it
    equals the digest of the file that ``load_inventory`` read.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"invalid TOML: {exc}", source=source) from None

    unknown = sorted(set(document) - {"hosts"})
    if unknown:
        raise InventoryError(
            f"unknown top-level key {unknown[0]!r}; the inventory has only [[hosts]] tables",
            source=source, field=unknown[0], value=unknown[0])

    entries = document.get("hosts", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InventoryError("'hosts' must be an array of tables, written [[hosts]]",
                             source=source, field="hosts")

    hosts: dict[str, Host] = {}
    first_index: dict[str, int] = {}
    for index, entry in enumerate(entries):
        host = _parse_host(entry, index, source)
        if host.name in hosts:
            raise InventoryError(
                f"duplicate host {host.name!r}, already listed at hosts[{first_index[host.name]}];"
                " merge the two entries",
                source=source, entry=f"hosts[{index}] ({host.name})", field="name",
                value=host.name, code="duplicate_host")
        hosts[host.name] = host
        first_index[host.name] = index

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Inventory(hosts=hosts, source=source, sha256=digest)


def _parse_host(entry: dict, index: int, source: str) -> Host:
    label = f"hosts[{index}]"
    name = entry.get("name")
    if isinstance(name, str):
        label = f"hosts[{index}] ({name})"

    def fail(message: str, field: str, value: object = None, code: str = "invalid_inventory"):
        return InventoryError(message, source=source, entry=label, field=field,
                              value=value, code=code)

    unknown = sorted(set(entry) - HOST_KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; a host has only name, groups and logins",
                   unknown[0], unknown[0])

    if "name" not in entry:
        raise fail("missing host name; add name = \"<host>\"", "name")
    name = _validate(entry["name"], principals.validate_host, fail, "name")

    groups = _validate_list(entry.get("groups", []), principals.validate_group, fail, "groups")

    if "logins" not in entry:
        raise fail("missing logins; list the logins sshca may open on this host",
                   "logins", code="host_without_logins")
    logins = _validate_list(entry["logins"], principals.validate_login, fail, "logins")
    if not logins:
        raise fail("empty logins; list the logins sshca may open on this host",
                   "logins", [], code="host_without_logins")

    return Host(name=name, groups=tuple(groups), logins=tuple(logins))


def _validate(value, validator, fail, field: str) -> str:
    if not isinstance(value, str):
        raise fail(f"expected a string, got {value!r}", field, value)
    try:
        return validator(value)
    except CAError as exc:
        raise fail(str(exc), field, value, code=exc.code) from None


def _validate_list(values, validator, fail, field: str) -> list[str]:
    if not isinstance(values, list):
        raise fail(f"expected a list of strings, got {values!r}", field, values)
    seen: list[str] = []
    for value in values:
        name = _validate(value, validator, fail, field)
        if name in seen:
            raise fail(f"{name!r} is listed twice; remove the duplicate", field, name)
        seen.append(name)
    return seen
