"""Certificates: check a certificate spec against every signing rule, then sign it.

The certificate is built with cryptography's SSHCertificateBuilder, never by
hand. All checks run before signing, so a spec that breaks a rule never
reaches the CA key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization

from ca.errors import InvalidCertificateSpec, InvalidName, quote_value
from ca.keys import CAKey
from ca.principals import MAX_PRINCIPALS, parse_principal
from ca.userkeys import UserKey

# The extensions OpenSSH defines for user certificates (PROTOCOL.certkeys),
# except no-touch-required, which only applies to security keys.
EXTENSIONS = frozenset(
    {
        "permit-pty",
        "permit-port-forwarding",
        "permit-agent-forwarding",
        "permit-X11-forwarding",
        "permit-user-rc",
    }
)
# The critical options sshca writes. OpenSSH's third one, verify-required,
# only applies to security keys.
CRITICAL_OPTIONS = frozenset({"force-command", "source-address"})

# Serials are unsigned 64-bit numbers in the certificate. Serial 0 is
# rejected because a KRL cannot revoke it by serial and it hides allocation bugs.
MAX_SERIAL = 2**64 - 1
MAX_KEY_ID_LENGTH = 256
MAX_SOURCE_ADDRESSES = 64
MAX_FORCE_COMMAND_LENGTH = 4096

_KEY_ID_USER = re.compile(r"[\x21-\x7e]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class CertificateSpec:
    """Everything that goes into one user certificate.

    Times are timezone-aware. ``critical_options`` may carry further
    ``(name, value)`` pairs; only force-command and source-address are known,
    and each may be set only once in all.
    """

    public_key: UserKey
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime
    valid_before: datetime
    extensions: tuple[str, ...] = ("permit-pty",)
    force_command: str | None = None
    source_address: tuple[str, ...] = ()
    critical_options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate and the facts recorded about it."""

    certificate: serialization.SSHCertificate = field(repr=False)
    line: str = field(repr=False)  # "<type>-cert-v01@openssh.com <base64>", the -cert.pub content
    serial: int
    key_id: str
    principals: tuple[str, ...]
    valid_after: datetime  # aware UTC, as written in the certificate
    valid_before: datetime
    ca_fingerprint: str
    key_fingerprint: str
    extensions: tuple[str, ...] = ()
    critical_options: tuple[tuple[str, str], ...] = ()


def _fail(code: str, field_name: str, value: object, message: str) -> InvalidCertificateSpec:
    return InvalidCertificateSpec(message, code=code, field=field_name, value=value)


def key_id_for(user: str, request_id: int, serial: int) -> str:
    """Return the certificate key ID "user=<name> request=<id> serial=<n>".

    sshd logs the key ID at LogLevel VERBOSE, which ties a login on a host to
    its grant. Raises InvalidCertificateSpec for a user name with white space
    or control characters, or a request ID or serial that is not a positive
    integer.
    """
    if not isinstance(user, str) or not _KEY_ID_USER.fullmatch(user):
        raise _fail(
            "invalid_key_id",
            "user",
            user,
            f"invalid user name {quote_value(user)} for a key ID: it must be non-empty "
            "printable ASCII without spaces",
        )

    if isinstance(request_id, bool) or not isinstance(request_id, int) or request_id < 1:
        raise _fail(
            "invalid_key_id",
            "request_id",
            request_id,
            f"invalid request ID {quote_value(request_id)}: expected a positive integer",
        )

    _check_serial(serial)
    return f"user={user} request={request_id} serial={serial}"


def _check_serial(serial: object) -> int:
    if isinstance(serial, bool) or not isinstance(serial, int) or not (1 <= serial <= MAX_SERIAL):
        raise _fail(
            "invalid_serial",
            "serial",
            serial,
            f"invalid serial {quote_value(serial)}: a serial is an integer from 1 to 2**64 - 1",
        )
    return serial


def _check_key_id(key_id: object) -> str:
    if not isinstance(key_id, str) or not _PRINTABLE.fullmatch(key_id):
        raise _fail(
            "invalid_key_id",
            "key_id",
            key_id,
            f"invalid key ID {quote_value(key_id)}: it must be non-empty printable ASCII",
        )

    if len(key_id) > MAX_KEY_ID_LENGTH:
        raise _fail(
            "invalid_key_id",
            "key_id",
            key_id,
            f"invalid key ID {quote_value(key_id)}: it has {len(key_id)} characters, "
            f"at most {MAX_KEY_ID_LENGTH} are allowed",
        )

    return key_id


def _check_principals(principals: object) -> tuple[str, ...]:
    if isinstance(principals, str) or not isinstance(principals, Iterable):
        raise _fail(
            "invalid_principals",
            "principals",
            principals,
            f"invalid principals {quote_value(principals)}: expected a list of principal names",
        )

    principals = tuple(principals)
    if not principals:
        # OpenSSH reads an empty principal list as "valid for any principal".
        raise _fail(
            "no_principals",
            "principals",
            [],
            "a certificate needs at least one principal; an empty list would be "
            "valid for every login",
        )

    if len(principals) > MAX_PRINCIPALS:
        raise _fail(
            "too_many_principals",
            "principals",
            len(principals),
            f"the certificate would have {len(principals)} principals, but OpenSSH accepts "
            f"at most {MAX_PRINCIPALS}; grant a host group (group:<name>) instead of single hosts",
        )

    seen = set()
    for principal in principals:
        try:
            parse_principal(principal)
        except InvalidName as exc:
            raise _fail("invalid_principal", "principals", principal, str(exc)) from None
        if principal in seen:
            raise _fail(
                "duplicate_principal",
                "principals",
                principal,
                f"principal {quote_value(principal)} is listed twice; list each principal once",
            )
        seen.add(principal)

    return principals


def _to_timestamp(value: object, field_name: str) -> int:
    if not isinstance(value, datetime):
        raise _fail(
            "invalid_time",
            field_name,
            value,
            f"invalid {field_name} {quote_value(value)}: expected a timezone-aware datetime",
        )

    if value.tzinfo is None or value.utcoffset() is None:
        raise _fail(
            "naive_datetime",
            field_name,
            value.isoformat(),
            f"invalid {field_name} {value.isoformat()}: the datetime has no time zone; "
            "use an aware datetime such as datetime.now(timezone.utc)",
        )

    # Whole seconds, rounded down: valid_before never moves past the grant's end.
    timestamp = int(value.timestamp() // 1)
    if timestamp < 0:
        raise _fail(
            "invalid_time",
            field_name,
            value.isoformat(),
            f"invalid {field_name} {value.isoformat()}: times before 1970 cannot be written "
            "in a certificate",
        )

    return timestamp


def _check_window(
    valid_after: datetime, valid_before: datetime, max_validity: timedelta
) -> tuple[int, int]:
    after = _to_timestamp(valid_after, "valid_after")
    before = _to_timestamp(valid_before, "valid_before")

    if before <= after:
        raise _fail(
            "invalid_window",
            "valid_before",
            valid_before.isoformat(),
            f"valid_before {valid_before.isoformat()} is not later than valid_after "
            f"{valid_after.isoformat()} (in whole seconds); the window must not be empty",
        )

    if before - after > max_validity.total_seconds():
        raise _fail(
            "window_too_long",
            "valid_before",
            valid_before.isoformat(),
            f"the window from {valid_after.isoformat()} to {valid_before.isoformat()} lasts "
            f"{timedelta(seconds=before - after)}, longer than the maximum of {max_validity}; "
            "request a shorter window",
        )

    return after, before


def _check_extensions(extensions: object) -> tuple[str, ...]:
    if isinstance(extensions, str) or not isinstance(extensions, Iterable):
        raise _fail(
            "invalid_extensions",
            "extensions",
            extensions,
            f"invalid extensions {quote_value(extensions)}: expected a list of extension names",
        )

    extensions = tuple(extensions)
    for name in extensions:
        if name not in EXTENSIONS:
            raise _fail(
                "unknown_extension",
                "extensions",
                name,
                f"unknown extension {quote_value(name)}: use any of {', '.join(sorted(EXTENSIONS))}",
            )

    if len(set(extensions)) != len(extensions):
        raise _fail(
            "duplicate_extension",
            "extensions",
            list(extensions),
            f"extensions {list(extensions)} list a name twice; list each extension once",
        )

    return extensions


def _canonical_source_addresses(entries: object) -> str:
    if isinstance(entries, str) or not isinstance(entries, Iterable):
        raise _fail(
            "invalid_source_address",
            "source_address",
            entries,
            f"invalid source_address {quote_value(entries)}: expected a list of IP networks "
            "such as ['10.0.0.0/8']",
        )

    entries = tuple(entries)
    if not entries:
        raise _fail(
            "invalid_source_address",
            "source_address",
            [],
            "source_address is empty; leave it out to allow every address",
        )

    if len(entries) > MAX_SOURCE_ADDRESSES:
        raise _fail(
            "invalid_source_address",
            "source_address",
            len(entries),
            f"source_address has {len(entries)} entries, at most {MAX_SOURCE_ADDRESSES} are allowed",
        )

    networks = []
    for entry in entries:
        if not isinstance(entry, str):
            raise _fail(
                "invalid_source_address",
                "source_address",
                entry,
                f"invalid source address {quote_value(entry)}: expected an IP network as text",
            )
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError:
            hint = "write an IP address or network such as '10.0.0.0/8' or '2001:db8::/32'"
            try:
                hint = f"did you mean {str(ipaddress.ip_network(entry, strict=False))!r}?"
            except ValueError:
                pass
            raise _fail(
                "invalid_source_address",
                "source_address",
                entry,
                f"invalid source address {quote_value(entry)}: {hint}",
            ) from None
        if network in networks:
            raise _fail(
                "invalid_source_address",
                "source_address",
                entry,
                f"source address {quote_value(entry)} is listed twice ({network}); list it once",
            )
        networks.append(network)

    return ",".join(str(network) for network in networks)


def _check_force_command(command: object) -> str:
    if not isinstance(command, str) or not command:
        raise _fail(
            "invalid_force_command",
            "force_command",
            command,
            f"invalid force_command {quote_value(command)}: give a non-empty command, "
            "or None for no forced command",
        )

    if len(command) > MAX_FORCE_COMMAND_LENGTH or not _PRINTABLE.fullmatch(command):
        raise _fail(
            "invalid_force_command",
            "force_command",
            command,
            f"invalid force_command {quote_value(command)}: it must be one line of printable "
            f"ASCII of at most {MAX_FORCE_COMMAND_LENGTH} characters",
        )

    return command


def _collect_critical_options(spec: CertificateSpec) -> tuple[tuple[str, str], ...]:
    extra = spec.critical_options
    pairs = list(extra.items()) if isinstance(extra, Mapping) else list(extra)

    options: dict[str, str] = {}
    if spec.force_command is not None:
        options["force-command"] = _check_force_command(spec.force_command)
    if spec.source_address:
        options["source-address"] = _canonical_source_addresses(spec.source_address)

    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise _fail(
                "invalid_critical_option",
                "critical_options",
                pair,
                f"invalid critical option {quote_value(pair)}: expected a (name, value) pair",
            )
        name, value = pair
        if name not in CRITICAL_OPTIONS:
            raise _fail(
                "unknown_critical_option",
                "critical_options",
                name,
                f"unknown critical option {quote_value(name)}: use any of "
                f"{', '.join(sorted(CRITICAL_OPTIONS))}",
            )
        if name in options:
            raise _fail(
                "duplicate_critical_option",
                "critical_options",
                name,
                f"critical option {name} is set twice; set it once",
            )
        if name == "force-command":
            options[name] = _check_force_command(value)
        else:
            entries = value.split(",") if isinstance(value, str) else value
            options[name] = _canonical_source_addresses(entries)

    return tuple(sorted(options.items()))


def sign_certificate(ca: CAKey, spec: CertificateSpec, *, max_validity: timedelta) -> IssuedCertificate:
    """Check ``spec`` against every signing rule and sign a user certificate with ``ca``.

    Raises InvalidCertificateSpec, naming the field and the value, for each
    broken rule. The public key must be a vetted UserKey and not the CA's
    own key, and the serial must be from 1 to 2**64 - 1. There must be 1 to
    256 valid, distinct principals. Both times must be aware, and
    valid_before must follow valid_after by at most ``max_validity``.
    Extensions and critical options must be known and set once. Source
    addresses are written as canonical IP networks. RSA CA keys sign with
    rsa-sha2-512.
    """
    if not isinstance(ca, CAKey):
        raise TypeError("ca must be a CAKey, as returned by load_ca_key")

    if not isinstance(max_validity, timedelta) or max_validity <= timedelta(0):
        raise ValueError("max_validity must be a positive timedelta")

    if not isinstance(spec.public_key, UserKey):
        raise _fail(
            "invalid_public_key",
            "public_key",
            type(spec.public_key).__name__,
            "the public key must be a UserKey returned by parse_user_key, so that it has been vetted",
        )

    if spec.public_key.fingerprint == ca.fingerprint:
        raise _fail(
            "ca_key",
            "public_key",
            spec.public_key.fingerprint,
            f"key {spec.public_key.fingerprint} is the CA's own key and is never signed",
        )

    serial = _check_serial(spec.serial)
    key_id = _check_key_id(spec.key_id)
    principals = _check_principals(spec.principals)
    after, before = _check_window(spec.valid_after, spec.valid_before, max_validity)
    extensions = _check_extensions(spec.extensions)
    critical_options = _collect_critical_options(spec)

    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(spec.public_key.public_key)
        .type(serialization.SSHCertificateType.USER)
        .serial(serial)
        .key_id(key_id.encode("ascii"))
        .valid_principals([principal.encode("ascii") for principal in principals])
        .valid_after(after)
        .valid_before(before)
    )
    for name in sorted(extensions):
        builder = builder.add_extension(name.encode("ascii"), b"")
    for name, value in critical_options:
        builder = builder.add_critical_option(name.encode("ascii"), value.encode("ascii"))

    # cryptography signs with Ed25519, ECDSA with the curve's hash, and RSA
    # with rsa-sha2-512.
    certificate = builder.sign(ca.private_key)

    return IssuedCertificate(
        certificate=certificate,
        line=certificate.public_bytes().decode("ascii"),
        serial=serial,
        key_id=key_id,
        principals=principals,
        valid_after=datetime.fromtimestamp(after, timezone.utc),
        valid_before=datetime.fromtimestamp(before, timezone.utc),
        ca_fingerprint=ca.fingerprint,
        key_fingerprint=spec.public_key.fingerprint,
        extensions=tuple(sorted(extensions)),
        critical_options=critical_options,
    )
