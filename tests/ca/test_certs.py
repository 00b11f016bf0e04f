import os
import re
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ca.certs import EXTENSIONS, CertificateSpec, IssuedCertificate, key_id_for, sign_certificate
from ca.errors import InvalidCertificateSpec
from ca.keys import KEY_TYPES, fingerprint
from ca.principals import MAX_PRINCIPALS
from ca.userkeys import parse_user_key

from .conftest import USER_KEY_TYPES

MAX_VALIDITY = timedelta(hours=8)
START = datetime(2026, 12, 4, 19, 30, tzinfo=timezone.utc)

SIGNATURE_ALGORITHMS = {
    "ed25519": "ssh-ed25519",
    "ecdsa-p256": "ecdsa-sha2-nistp256",
    "ecdsa-p384": "ecdsa-sha2-nistp384",
    "ecdsa-p521": "ecdsa-sha2-nistp521",
    "rsa": "rsa-sha2-512",
}


def user_key(user_keys, key_type="ed25519"):
    return parse_user_key(Path(f"{user_keys(key_type)}.pub").read_text())


@pytest.fixture
def spec(user_keys) -> CertificateSpec:
    return CertificateSpec(
        public_key=user_key(user_keys),
        serial=42,
        key_id=key_id_for("alice", 7, 42),
        principals=("deploy@db1.example.com", "deploy@group:prod-db"),
        valid_after=START,
        valid_before=START + timedelta(hours=2),
    )


def ssh_keygen_list(tmp_path: Path, line: str) -> dict:
    """Run ssh-keygen -L (in UTC) on a certificate line and return its fields."""
    path = tmp_path / "id-cert.pub"
    path.write_text(line + "\n")
    result = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TZ": "UTC"},
    )

    fields: dict = {"Principals": [], "Critical Options": [], "Extensions": []}
    section = None
    for raw in result.stdout.splitlines()[1:]:
        if raw.startswith("                "):
            fields[section].append(raw.strip())
            continue
        name, _, value = raw.strip().partition(": ")
        name = name.rstrip(":")
        if name in ("Principals", "Critical Options", "Extensions"):
            section = name
            if value.strip() and value.strip() != "(none)":
                fields[name].append(value.strip())
        else:
            fields[name] = value
    return fields


@pytest.mark.parametrize("ca_type", KEY_TYPES)
@pytest.mark.parametrize("user_type", USER_KEY_TYPES)
def test_round_trip_every_field(ca_keys, user_keys, tmp_path, ca_type, user_type):
    ca = ca_keys(ca_type)
    key = user_key(user_keys, user_type)
    spec = CertificateSpec(
        public_key=key,
        serial=2**64 - 1,
        key_id=key_id_for("john.smith", 12, 2**64 - 1),
        principals=("john.smith@db1.example.com", "john.smith@group:prod-db"),
        valid_after=START,
        valid_before=START + timedelta(hours=4),
        extensions=("permit-pty", "permit-agent-forwarding"),
        force_command="/usr/bin/uptime",
        source_address=("10.0.0.0/8", "2001:DB8::/32", "192.0.2.7"),
    )

    issued = sign_certificate(ca, spec, max_validity=MAX_VALIDITY)

    assert isinstance(issued, IssuedCertificate)
    assert issued.serial == 2**64 - 1
    assert issued.key_id == "user=john.smith request=12 serial=18446744073709551615"
    assert issued.principals == spec.principals
    assert issued.valid_after == START
    assert issued.valid_before == START + timedelta(hours=4)
    assert issued.ca_fingerprint == ca.fingerprint
    assert issued.key_fingerprint == key.fingerprint
    assert issued.line.startswith(f"{key.key_type}-cert-v01@openssh.com AAAA")

    # cryptography's own parser.
    parsed = serialization.load_ssh_public_identity(issued.line.encode())
    assert isinstance(parsed, serialization.SSHCertificate)
    parsed.verify_cert_signature()
    assert parsed.type == serialization.SSHCertificateType.USER
    assert parsed.serial == 2**64 - 1
    assert parsed.key_id == b"user=john.smith request=12 serial=18446744073709551615"
    assert parsed.valid_principals == [b"john.smith@db1.example.com", b"john.smith@group:prod-db"]
    assert parsed.valid_after == int(START.timestamp())
    assert parsed.valid_before == int((START + timedelta(hours=4)).timestamp())
    assert parsed.critical_options == {
        b"force-command": b"/usr/bin/uptime",
        b"source-address": b"10.0.0.0/8,2001:db8::/32,192.0.2.7/32",
    }
    assert parsed.extensions == {b"permit-agent-forwarding": b"", b"permit-pty": b""}
    assert fingerprint(parsed.signature_key()) == ca.fingerprint
    assert fingerprint(parsed.public_key()) == key.fingerprint

    # OpenSSH's parser.
    listed = ssh_keygen_list(tmp_path, issued.line)
    assert listed["Type"] == f"{key.key_type}-cert-v01@openssh.com user certificate"
    assert listed["Public key"].endswith(key.fingerprint)
    assert listed["Signing CA"].endswith(f"{ca.fingerprint} (using {SIGNATURE_ALGORITHMS[ca_type]})")
    assert listed["Key ID"] == '"user=john.smith request=12 serial=18446744073709551615"'
    assert listed["Serial"] == "18446744073709551615"
    assert listed["Valid"] == "from 2026-12-04T19:30:00 to 2026-12-04T23:30:00"
    assert listed["Principals"] == ["john.smith@db1.example.com", "john.smith@group:prod-db"]
    assert listed["Critical Options"] == [
        "force-command /usr/bin/uptime",
        "source-address 10.0.0.0/8,2001:db8::/32,192.0.2.7/32",
    ]
    assert listed["Extensions"] == ["permit-agent-forwarding", "permit-pty"]


def test_defaults_permit_pty_only(spec, ca_keys, tmp_path):
    issued = sign_certificate(ca_keys("ed25519"), spec, max_validity=MAX_VALIDITY)

    listed = ssh_keygen_list(tmp_path, issued.line)
    assert listed["Extensions"] == ["permit-pty"]
    assert listed["Critical Options"] == []
    assert issued.critical_options == ()


def test_no_extensions(spec, ca_keys):
    issued = sign_certificate(ca_keys("ed25519"), replace(spec, extensions=()), max_validity=MAX_VALIDITY)

    assert issued.certificate.extensions == {}


def test_all_extensions(spec, ca_keys):
    issued = sign_certificate(
        ca_keys("ed25519"), replace(spec, extensions=tuple(sorted(EXTENSIONS))), max_validity=MAX_VALIDITY
    )

    assert set(issued.certificate.extensions) == {name.encode() for name in EXTENSIONS}


def test_window_exactly_max_allowed(spec, ca_keys):
    issued = sign_certificate(
        ca_keys("ed25519"), replace(spec, valid_before=START + MAX_VALIDITY), max_validity=MAX_VALIDITY
    )

    assert issued.valid_before - issued.valid_after == MAX_VALIDITY


def test_other_time_zone_converted(spec, ca_keys):
    plus_two = timezone(timedelta(hours=2))
    local_spec = replace(
        spec, valid_after=START.astimezone(plus_two), valid_before=(START + timedelta(hours=1)).astimezone(plus_two)
    )

    issued = sign_certificate(ca_keys("ed25519"), local_spec, max_validity=MAX_VALIDITY)

    assert issued.valid_after == START
    assert issued.valid_after.tzinfo == timezone.utc
    assert issued.certificate.valid_after == int(START.timestamp())


def test_fractional_seconds_rounded_down(spec, ca_keys):
    fractional = replace(
        spec,
        valid_after=START + timedelta(microseconds=999999),
        valid_before=START + timedelta(hours=1, microseconds=999999),
    )

    issued = sign_certificate(ca_keys("ed25519"), fractional, max_validity=MAX_VALIDITY)

    assert issued.valid_after == START
    assert issued.valid_before == START + timedelta(hours=1)


def test_critical_options_mapping(spec, ca_keys):
    issued = sign_certificate(
        ca_keys("ed25519"),
        replace(spec, critical_options=(("source-address", "10.1.0.0/16,192.0.2.1"),)),
        max_validity=MAX_VALIDITY,
    )

    assert issued.critical_options == (("source-address", "10.1.0.0/16,192.0.2.1/32"),)


def test_max_principals_allowed(spec, ca_keys):
    principals = tuple(f"deploy@h{i}.example" for i in range(MAX_PRINCIPALS))

    issued = sign_certificate(ca_keys("ed25519"), replace(spec, principals=principals), max_validity=MAX_VALIDITY)

    assert len(issued.certificate.valid_principals) == MAX_PRINCIPALS


def test_key_id_for():
    assert key_id_for("john.smith", 3, 99) == "user=john.smith request=3 serial=99"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("john smith", 1, 1), r"invalid user name 'john smith' for a key ID"),
        (("", 1, 1), r"invalid user name '' for a key ID"),
        (("alice\n", 1, 1), r"invalid user name 'alice\\n' for a key ID"),
        (("alice", 0, 1), r"invalid request ID 0: expected a positive integer"),
        (("alice", True, 1), r"invalid request ID True"),
        (("alice", "3", 1), r"invalid request ID '3'"),
        (("alice", 1, 0), r"invalid serial 0: a serial is an integer from 1 to 2\*\*64 - 1"),
    ],
)
def test_key_id_for_invalid(arguments, message):
    with pytest.raises(InvalidCertificateSpec, match=message):
        key_id_for(*arguments)


NAIVE = datetime(2026, 12, 4, 19, 30)


def _rejections():
    too_many = tuple(f"deploy@h{i}.example" for i in range(MAX_PRINCIPALS + 1))
    return [
        ("empty principals", {"principals": ()}, "no_principals", "principals",
         r"a certificate needs at least one principal; an empty list would be valid for every login"),
        ("principals as string", {"principals": "deploy@db1"}, "invalid_principals", "principals",
         r"expected a list of principal names"),
        ("too many principals", {"principals": too_many}, "too_many_principals", "principals",
         r"the certificate would have 257 principals, but OpenSSH accepts at most 256; grant a host group"),
        ("invalid principal", {"principals": ("deploy@db1", "deploy@DB2")}, "invalid_principal", "principals",
         r"invalid principal 'deploy@DB2': invalid host name 'DB2'"),
        ("wildcard principal", {"principals": ("*",)}, "invalid_principal", "principals",
         r"invalid principal '\*'"),
        ("principal with comma", {"principals": ("deploy@db1,root@db1",)}, "invalid_principal", "principals",
         r"invalid principal 'deploy@db1,root@db1'"),
        ("duplicate principal", {"principals": ("deploy@db1", "deploy@db1")}, "duplicate_principal", "principals",
         r"principal 'deploy@db1' is listed twice"),
        ("serial 0", {"serial": 0}, "invalid_serial", "serial",
         r"invalid serial 0: a serial is an integer from 1 to 2\*\*64 - 1"),
        ("serial 2**64", {"serial": 2**64}, "invalid_serial", "serial", r"invalid serial 18446744073709551616"),
        ("negative serial", {"serial": -1}, "invalid_serial", "serial", r"invalid serial -1"),
        ("bool serial", {"serial": True}, "invalid_serial", "serial", r"invalid serial True"),
        ("string serial", {"serial": "5"}, "invalid_serial", "serial", r"invalid serial '5'"),
        ("empty key id", {"key_id": ""}, "invalid_key_id", "key_id", r"invalid key ID '': it must be non-empty printable ASCII"),
        ("key id newline", {"key_id": "a\nb"}, "invalid_key_id", "key_id", r"invalid key ID 'a\\nb'"),
        ("key id too long", {"key_id": "x" * 257}, "invalid_key_id", "key_id", r"it has 257 characters, at most 256"),
        ("naive valid_after", {"valid_after": NAIVE}, "naive_datetime", "valid_after",
         r"invalid valid_after 2026-12-04T19:30:00: the datetime has no time zone"),
        ("naive valid_before", {"valid_before": NAIVE + timedelta(hours=1)}, "naive_datetime", "valid_before",
         r"invalid valid_before 2026-12-04T20:30:00: the datetime has no time zone"),
        ("timestamp not datetime", {"valid_after": 1733340600}, "invalid_time", "valid_after",
         r"invalid valid_after 1733340600: expected a timezone-aware datetime"),
        ("before 1970", {"valid_after": datetime(1969, 12, 31, tzinfo=timezone.utc)}, "invalid_time", "valid_after",
         r"times before 1970 cannot be written"),
        ("before equals after", {"valid_before": START}, "invalid_window", "valid_before",
         r"valid_before 2026-12-04T19:30:00\+00:00 is not later than valid_after 2026-12-04T19:30:00\+00:00"),
        ("before earlier than after", {"valid_before": START - timedelta(seconds=1)}, "invalid_window", "valid_before",
         r"is not later than valid_after"),
        ("sub-second window", {"valid_before": START + timedelta(microseconds=500000)}, "invalid_window", "valid_before",
         r"\(in whole seconds\); the window must not be empty"),
        ("window too long", {"valid_before": START + MAX_VALIDITY + timedelta(seconds=1)}, "window_too_long", "valid_before",
         r"lasts 8:00:01, longer than the maximum of 8:00:00; request a shorter window"),
        ("unknown extension", {"extensions": ("permit-pty", "permit-everything")}, "unknown_extension", "extensions",
         r"unknown extension 'permit-everything': use any of permit-X11-forwarding, permit-agent-forwarding"),
        ("wrong-case extension", {"extensions": ("permit-x11-forwarding",)}, "unknown_extension", "extensions",
         r"unknown extension 'permit-x11-forwarding'"),
        ("security-key extension", {"extensions": ("no-touch-required",)}, "unknown_extension", "extensions",
         r"unknown extension 'no-touch-required'"),
        ("duplicate extension", {"extensions": ("permit-pty", "permit-pty")}, "duplicate_extension", "extensions",
         r"list a name twice"),
        ("extensions as string", {"extensions": "permit-pty"}, "invalid_extensions", "extensions",
         r"expected a list of extension names"),
        ("unknown critical option", {"critical_options": (("verify-required", ""),)}, "unknown_critical_option",
         "critical_options", r"unknown critical option 'verify-required': use any of force-command, source-address"),
        ("critical option not a pair", {"critical_options": ("force-command",)}, "invalid_critical_option",
         "critical_options", r"expected a \(name, value\) pair"),
        ("critical option twice", {"force_command": "id", "critical_options": (("force-command", "id"),)},
         "duplicate_critical_option", "critical_options", r"critical option force-command is set twice"),
        ("empty force command", {"force_command": ""}, "invalid_force_command", "force_command",
         r"invalid force_command '': give a non-empty command, or None for no forced command"),
        ("force command newline", {"force_command": "id\nrm -rf /"}, "invalid_force_command", "force_command",
         r"it must be one line of printable ASCII"),
        ("source address garbage", {"source_address": ("office",)}, "invalid_source_address", "source_address",
         r"invalid source address 'office': write an IP address or network such as '10.0.0.0/8'"),
        ("source address host bits", {"source_address": ("10.1.2.3/8",)}, "invalid_source_address", "source_address",
         r"invalid source address '10.1.2.3/8': did you mean '10.0.0.0/8'\?"),
        ("source address wildcard", {"source_address": ("10.0.0.*",)}, "invalid_source_address", "source_address",
         r"invalid source address '10.0.0.\*'"),
        ("source address with space", {"source_address": (" 10.0.0.0/8",)}, "invalid_source_address", "source_address",
         r"invalid source address ' 10.0.0.0/8'"),
        ("source address list in one", {"source_address": ("10.0.0.0/8,192.0.2.0/24",)}, "invalid_source_address",
         "source_address", r"invalid source address '10.0.0.0/8,192.0.2.0/24'"),
        ("source address duplicate", {"source_address": ("10.0.0.0/8", "10.0.0.0/8")}, "invalid_source_address",
         "source_address", r"is listed twice"),
        ("source address as string", {"source_address": "10.0.0.0/8"}, "invalid_source_address", "source_address",
         r"expected a list of IP networks"),
        ("source address too many", {"source_address": tuple(f"10.0.{i}.0/24" for i in range(65))},
         "invalid_source_address", "source_address", r"source_address has 65 entries, at most 64"),
    ]


@pytest.mark.parametrize(("name", "changes", "code", "field", "message"), _rejections(), ids=[r[0] for r in _rejections()])
def test_spec_rejected(spec, ca_keys, name, changes, code, field, message):
    with pytest.raises(InvalidCertificateSpec, match=message) as info:
        sign_certificate(ca_keys("ed25519"), replace(spec, **changes), max_validity=MAX_VALIDITY)

    assert info.value.code == code
    assert info.value.field == field


def test_ca_own_key_rejected(spec, ca_keys):
    ca = ca_keys("ed25519")
    ca_as_user_key = parse_user_key(ca.public_line())

    with pytest.raises(InvalidCertificateSpec, match=r"is the CA's own key and is never signed") as info:
        sign_certificate(ca, replace(spec, public_key=ca_as_user_key), max_validity=MAX_VALIDITY)

    assert info.value.code == "ca_key"


def test_unvetted_public_key_rejected(spec, ca_keys, user_keys):
    raw_key = user_key(user_keys).public_key

    with pytest.raises(InvalidCertificateSpec, match=r"the public key must be a UserKey returned by parse_user_key"):
        sign_certificate(ca_keys("ed25519"), replace(spec, public_key=raw_key), max_validity=MAX_VALIDITY)


def test_ca_must_be_cakey(spec, ca_keys):
    with pytest.raises(TypeError, match=r"ca must be a CAKey"):
        sign_certificate(ca_keys("ed25519").private_key, spec, max_validity=MAX_VALIDITY)


@pytest.mark.parametrize("max_validity", [timedelta(0), timedelta(seconds=-1), 3600])
def test_max_validity_must_be_positive(spec, ca_keys, max_validity):
    with pytest.raises(ValueError, match=r"max_validity must be a positive timedelta"):
        sign_certificate(ca_keys("ed25519"), spec, max_validity=max_validity)


def test_issued_repr_has_no_certificate_blob(spec, ca_keys):
    issued = sign_certificate(ca_keys("ed25519"), spec, max_validity=MAX_VALIDITY)

    assert re.search(r"AAAA", repr(issued)) is None
    assert "serial=42" in repr(issued)
