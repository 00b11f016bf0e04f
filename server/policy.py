"""Access policy: which users may request which hosts and logins, and who approves.

The policy is a TOML file with a ``[defaults]`` table and a list of
``[[rules]]``. Rules are tried in file order; the first rule that lets the
requester ask for every requested host and the login decides. Entries of
``requesters`` and ``approvers`` are user names or ``group:<name>``; entries
of ``hosts`` are host names or ``group:<host group>``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ca.certs import EXTENSIONS
from ca.durations import format_duration, parse_duration
from ca.principals import parse_target, validate_group, validate_login

DEFAULTS_KEYS = {"max_duration", "request_ttl", "clock_skew"}
RULE_KEYS = {
    "name", "requesters", "hosts", "logins", "max_duration", "approvals", "approvers",
    "extensions", "source_address", "force_command",
}
MAX_APPROVALS = 10


class PolicyError(ValueError):
    """An invalid policy file; the message names the file, the entry and the field."""

    code = "invalid_policy"

    def __init__(self, source: str, entry: str, field: str | None, message: str):
        self.source = source
        self.entry = entry
        self.field = field
        where = f"{source}: {entry}" + (f": field '{field}'" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Rule:
    name: str
    requesters: tuple[str, ...]
    hosts: tuple[str, ...]
    logins: tuple[str, ...]
    max_duration: timedelta
    approvals: int
    approvers: tuple[str, ...]
    extensions: tuple[str, ...]
    source_address: tuple[str, ...]
    force_command: str | None

    def allows_requester(self, user: str, groups: frozenset[str]) -> bool:
        return _member(self.requesters, user, groups)

    def allows_approver(self, user: str, groups: frozenset[str]) -> bool:
        return _member(self.approvers, user, groups)

    def covers_target(self, target: str, inventory) -> bool:
        """Tell whether this rule lists ``target`` (a host name or ``group:<name>``) or a group of it."""
        if target in self.hosts:
            return True
        if target.startswith("group:"):
            return False
        host = inventory.hosts.get(target)
        if host is None:
            return False
        return any(f"group:{group}" in self.hosts for group in host.groups)

    def covers(self, targets, login: str, inventory) -> bool:
        return login in self.logins and all(self.covers_target(target, inventory) for target in targets)


def _member(entries, user: str, groups: frozenset[str]) -> bool:
    for entry in entries:
        if entry.startswith("group:"):
            if entry[len("group:"):] in groups:
                return True
        elif entry == user:
            return True
    return False


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    max_duration: timedelta
    request_ttl: timedelta
    clock_skew: timedelta
    sha256: str
    source: str

    def rule(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def check_targets(self, inventory) -> None:
        """Check that every rule's hosts name hosts or groups of ``inventory``.

        A misspelt or removed host would otherwise leave a rule silently
        unusable. Raises InventoryError naming the policy file, the rule and
        the unknown target.
        """
        for index, rule in enumerate(self.rules):
            inventory.check_targets(rule.hosts, source=self.source, entry=f"rules[{index}] ({rule.name})")

    def match(self, user: str, groups: frozenset[str], targets, login: str, inventory) -> Rule | None:
        """Return the first rule that lets ``user`` request ``targets`` as ``login``, or None."""
        for rule in self.rules:
            if rule.allows_requester(user, groups) and rule.covers(targets, login, inventory):
                return rule
        return None

    def rules_approvable_by(self, user: str, groups: frozenset[str]) -> list[str]:
        return [rule.name for rule in self.rules if rule.allows_approver(user, groups)]


def load_policy(path, *, max_certificate_lifetime: timedelta, clock_skew: timedelta, request_ttl: timedelta) -> Policy:
    """Read and validate the policy file at ``path``.

    ``clock_skew`` and ``request_ttl`` are used where ``[defaults]`` does not
    set them; no duration may exceed ``max_certificate_lifetime``.
    Raises PolicyError.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyError(str(path), "file", None, f"cannot be read ({exc.strerror}); check the 'policy' setting") from None
    return parse_policy(
        data, str(path),
        max_certificate_lifetime=max_certificate_lifetime, clock_skew=clock_skew, request_ttl=request_ttl,
    )


def parse_policy(data: bytes, source: str, *, max_certificate_lifetime: timedelta, clock_skew: timedelta,
                 request_ttl: timedelta) -> Policy:
    """Parse and validate policy TOML ``data``; ``source`` names the file in errors."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(source, "file", None, f"invalid TOML: {exc}") from None

    unknown = set(document) - {"defaults", "rules"}
    if unknown:
        raise PolicyError(source, "file", None, f"unknown table {sorted(unknown)[0]!r}; expected [defaults] and [[rules]]")

    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise PolicyError(source, "defaults", None, "must be a table: [defaults]")
    for key in defaults:
        if key not in DEFAULTS_KEYS:
            raise PolicyError(source, "defaults", key, f"unknown field; known fields: {', '.join(sorted(DEFAULTS_KEYS))}")

    def duration(entry, table, key, fallback):
        if key not in table:
            return fallback
        try:
            value = parse_duration(table[key], field=key)
        except ValueError as exc:
            raise PolicyError(source, entry, key, str(exc)) from None
        if value > max_certificate_lifetime:
            raise PolicyError(
                source, entry, key,
                f"{format_duration(value)} is longer than the server's max_certificate_lifetime "
                f"{format_duration(max_certificate_lifetime)}; lower it or raise the server setting",
            )
        return value

    max_duration = duration("defaults", defaults, "max_duration", max_certificate_lifetime)
    ttl = duration("defaults", defaults, "request_ttl", request_ttl)
    skew = duration("defaults", defaults, "clock_skew", clock_skew)

    raw_rules = document.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(source, "rules", None, "must be an array of tables: [[rules]]")

    rules = []
    names = set()
    for index, raw in enumerate(raw_rules):
        rule = _parse_rule(source, index, raw, max_duration, duration)
        if rule.name in names:
            raise PolicyError(source, f"rules[{index}] ({rule.name})", "name", "duplicate rule name; give each rule its own name")
        names.add(rule.name)
        rules.append(rule)

    return Policy(
        rules=tuple(rules), max_duration=max_duration, request_ttl=ttl, clock_skew=skew,
        sha256=hashlib.sha256(data).hexdigest(), source=source,
    )


def _parse_rule(source, index, raw, max_duration, duration) -> Rule:
    entry = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(source, entry, None, "must be a table: [[rules]]")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 128 or not name.isprintable():
        raise PolicyError(source, entry, "name", f"must be a non-empty name of at most 128 printable characters, got {name!r}")
    entry = f"rules[{index}] ({name})"

    for key in raw:
        if key not in RULE_KEYS:
            raise PolicyError(source, entry, key, f"unknown field; known fields: {', '.join(sorted(RULE_KEYS))}")

    def string_list(key, required=True):
        value = raw.get(key)
        if value is None and not required:
            return ()
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise PolicyError(source, entry, key, f"must be a list of strings, got {value!r}")
        if required and not value:
            raise PolicyError(source, entry, key, "must list at least one entry")
        return tuple(value)

    def principals(key):
        values = string_list(key)
        for value in values:
            try:
                if value.startswith("group:"):
                    validate_group(value[len("group:"):])
                else:
                    validate_login(value)
            except ValueError as exc:
                raise PolicyError(source, entry, key, str(exc)) from None
        return values

    requesters = principals("requesters")
    approvers = principals("approvers")

    hosts = string_list("hosts")
    for value in hosts:
        try:
            parse_target(value)
        except ValueError as exc:
            raise PolicyError(source, entry, "hosts", str(exc)) from None

    logins = string_list("logins")
    for value in logins:
        try:
            validate_login(value)
        except ValueError as exc:
            raise PolicyError(source, entry, "logins", str(exc)) from None

    rule_max = duration(entry, raw, "max_duration", max_duration)
    if rule_max > max_duration:
        raise PolicyError(
            source, entry, "max_duration",
            f"{format_duration(rule_max)} is longer than [defaults] max_duration {format_duration(max_duration)}",
        )

    approvals = raw.get("approvals", 1)
    if isinstance(approvals, bool) or not isinstance(approvals, int) or not 1 <= approvals <= MAX_APPROVALS:
        raise PolicyError(source, entry, "approvals", f"must be a whole number from 1 to {MAX_APPROVALS}, got {approvals!r}")

    extensions = string_list("extensions", required=False) if "extensions" in raw else ("permit-pty",)
    for value in extensions:
        if value not in EXTENSIONS:
            raise PolicyError(source, entry, "extensions", f"unknown extension {value!r}; known: {', '.join(sorted(EXTENSIONS))}")

    source_address = string_list("source_address", required=False)
    for value in source_address:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise PolicyError(source, entry, "source_address", f"{value!r} is not an IP address or CIDR network such as 10.0.0.0/8") from None

    force_command = raw.get("force_command", "")
    if not isinstance(force_command, str) or "\n" in force_command or "\0" in force_command:
        raise PolicyError(source, entry, "force_command", f"must be a one-line string, got {force_command!r}")

    return Rule(
        name=name, requesters=requesters, hosts=hosts, logins=logins, max_duration=rule_max,
        approvals=approvals, approvers=approvers, extensions=tuple(extensions),
        source_address=source_address, force_command=force_command or None,
    )
