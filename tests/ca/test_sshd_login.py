"""Certificates from ca/ used for real logins to OpenSSH's sshd, with ssh and paramiko."""

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paramiko
import pytest

from ca.certs import CertificateSpec, key_id_for, sign_certificate
from ca.krl import build_krl
from ca.userkeys import parse_user_key
from tests.support.sshd import current_login

pytestmark = [pytest.mark.sshd, pytest.mark.xdist_group("ca-sshd-login")]

HOST = "db1.test.example"
GROUP = "test-hosts"
LOGIN = current_login()
CA_TYPES = ("ed25519", "ecdsa-p256", "rsa")
# The clock skew allowance sshca puts before valid_after.
SKEW = timedelta(seconds=60)


@dataclass
class Outcome:
    status: int | None  # exit status of the command, None when the login was refused
    stdout: str
    stderr: str

    @property
    def refused(self) -> bool:
        return self.status is None


def login_openssh(sshd, key_path: Path, cert_path: Path, command: str) -> Outcome:
    result = sshd.ssh(key_path, cert_path, command, LOGIN)
    if result.returncode == 255 and "Permission denied (publickey)" in result.stderr:
        return Outcome(None, result.stdout, result.stderr)
    return Outcome(result.returncode, result.stdout, result.stderr)


def login_paramiko(sshd, key_path: Path, cert_path: Path, command: str) -> Outcome:
    try:
        status, out, err = sshd.paramiko_exec(key_path, cert_path, command, LOGIN)
    except paramiko.AuthenticationException as exc:
        return Outcome(None, "", str(exc))
    return Outcome(status, out, err)


CLIENTS = {"openssh": login_openssh, "paramiko": login_paramiko}


@pytest.fixture(params=sorted(CLIENTS))
def login(request):
    """Log in with each client in turn: login(sshd, key_path, cert_path, command) -> Outcome."""
    return CLIENTS[request.param]


@pytest.fixture(scope="module")
def server(sshd_module_factory, ca_keys):
    """One sshd for the module, trusting one CA key of each type."""
    sshd = sshd_module_factory(hostname=HOST)
    sshd.trust_ca_keys([ca_keys(key_type).public_line(f"test CA {key_type}") for key_type in CA_TYPES])
    sshd.set_principals(LOGIN, [f"{LOGIN}@{HOST}", f"{LOGIN}@group:{GROUP}"])
    return sshd


def issue(
    ca,
    key_path: Path,
    out_dir: Path,
    *,
    principals=(f"{LOGIN}@{HOST}",),
    window=timedelta(minutes=10),
    valid_after=None,
    **options,
):
    """Sign the key's .pub and write the certificate; return (certificate path, IssuedCertificate)."""
    serial = secrets.randbits(62) + 1
    now = datetime.now(timezone.utc)
    valid_after = valid_after or now - SKEW
    issued = sign_certificate(
        ca,
        CertificateSpec(
            public_key=parse_user_key(Path(f"{key_path}.pub").read_text()),
            serial=serial,
            key_id=key_id_for("alice", 1, serial),
            principals=tuple(principals),
            valid_after=valid_after,
            valid_before=now + window,
            **options,
        ),
        max_validity=timedelta(hours=8),
    )
    cert_path = out_dir / f"cert-{serial}-cert.pub"
    cert_path.write_text(issued.line + "\n")
    return cert_path, issued


@pytest.mark.parametrize("ca_type", CA_TYPES)
def test_login_with_each_ca_type(server, ca_keys, user_keys, tmp_path, login, ca_type):
    key = user_keys("ed25519")
    cert, issued = issue(ca_keys(ca_type), key, tmp_path)
    since = server.log_offset()

    outcome = login(server, key, cert, "echo logged-in as $(id -un)")

    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout == f"logged-in as {LOGIN}\n"
    # At LogLevel VERBOSE sshd logs the key ID, which ties the login to its grant.
    server.wait_for_log(
        re.escape(f'Accepted certificate ID "{issued.key_id}" (serial {issued.serial}) signed by ')
        + r"\S+ CA "
        + re.escape(ca_keys(ca_type).fingerprint),
        since=since,
    )


@pytest.mark.parametrize("user_type", ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048"])
def test_login_with_each_user_key_type(server, ca_keys, user_keys, tmp_path, login, user_type):
    key = user_keys(user_type)
    cert, issued = issue(ca_keys("ed25519"), key, tmp_path)

    outcome = login(server, key, cert, "echo ok")

    assert outcome.status == 0, outcome.stderr
    assert outcome.stdout == "ok\n"
    server.wait_for_log(re.escape(f"ID {issued.key_id} (serial {issued.serial})"))


def test_group_principal_logs_in(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ed25519")
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path, principals=[f"{LOGIN}@group:{GROUP}"])

    assert login(server, key, cert, "true").status == 0


def test_command_exit_status_passed_through(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ed25519")
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path)

    assert login(server, key, cert, "exit 3").status == 3


@pytest.mark.parametrize(
    "principal",
    [
        f"{LOGIN}@db2.test.example",
        f"{LOGIN}@group:other-hosts",
        f"deploy@{HOST}",
    ],
)
def test_other_principal_refused(server, ca_keys, user_keys, tmp_path, login, principal):
    key = user_keys("ed25519")
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path, principals=[principal])
    since = server.log_offset()

    outcome = login(server, key, cert, "echo should-not-run")

    assert outcome.refused
    assert "should-not-run" not in outcome.stdout
    server.wait_for_log(r"Certificate does not contain an authorized principal", since=since)


def test_expired_window_refused(server, ca_keys, user_keys, tmp_path):
    key = user_keys("ed25519")
    certificates = {}

    # Each client gets its own certificate with a window of a few seconds,
    # issued right before the login inside the window.
    for login in (login_openssh, login_paramiko):
        now = datetime.now(timezone.utc)
        cert, issued = issue(
            ca_keys("ed25519"), key, tmp_path, valid_after=now - timedelta(seconds=1), window=timedelta(seconds=5)
        )
        certificates[login] = (cert, issued)
        assert login(server, key, cert, "true").status == 0, login.__name__

    last_end = max(issued.valid_before for _, issued in certificates.values())
    time.sleep(max((last_end - datetime.now(timezone.utc)).total_seconds() + 1.1, 0))

    for login, (cert, _) in certificates.items():
        since = server.log_offset()
        outcome = login(server, key, cert, "echo should-not-run")
        assert outcome.refused, login.__name__
        assert "should-not-run" not in outcome.stdout
        server.wait_for_log(r"Certificate invalid: expired", since=since)


def test_not_yet_valid_refused(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ed25519")
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path, valid_after=later, window=timedelta(hours=2))

    assert login(server, key, cert, "true").refused


def test_revoked_serial_refused(server, ca_keys, user_keys, tmp_path, login):
    ca = ca_keys("ecdsa-p256")
    key = user_keys("ed25519")
    revoked_cert, revoked = issue(ca, key, tmp_path)
    kept_cert, _ = issue(ca, key, tmp_path)
    assert login(server, key, revoked_cert, "true").status == 0

    server.set_krl(build_krl(serials=[revoked.serial], public_keys=[], ca_public_keys=[ca.public_line()]))
    since = server.log_offset()
    try:
        outcome = login(server, key, revoked_cert, "echo should-not-run")
        kept = login(server, key, kept_cert, "true")
    finally:
        server.set_krl(build_krl(serials=[], public_keys=[], ca_public_keys=[]))

    assert outcome.refused
    assert kept.status == 0
    server.wait_for_log(r"Authentication key \S+ \S+ revoked by file " + re.escape(str(server.krl_path)), since=since)


def test_revoked_key_refused(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ecdsa-p384")
    cert, _ = issue(ca_keys("rsa"), key, tmp_path)

    server.set_krl(
        build_krl(serials=[], public_keys=[Path(f"{key}.pub").read_text()], ca_public_keys=[])
    )
    try:
        outcome = login(server, key, cert, "true")
    finally:
        server.set_krl(build_krl(serials=[], public_keys=[], ca_public_keys=[]))

    assert outcome.refused


def test_untrusted_ca_refused(server, ca_keys, user_keys, tmp_path, login):
    # ecdsa-p384 is a valid CA key that this sshd does not trust.
    key = user_keys("ed25519")
    cert, issued = issue(ca_keys("ecdsa-p384"), key, tmp_path)
    since = server.log_offset()

    assert login(server, key, cert, "true").refused
    server.wait_for_log(
        rf"Failed publickey for {re.escape(LOGIN)} from 127\.0\.0\.1 .* ID {re.escape(issued.key_id)} "
        rf"\(serial {issued.serial}\) CA ECDSA {re.escape(issued.ca_fingerprint)}",
        since=since,
    )


def test_source_address_enforced(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ed25519")
    ca = ca_keys("ed25519")
    allowed, _ = issue(ca, key, tmp_path, source_address=("127.0.0.0/8",))
    elsewhere, _ = issue(ca, key, tmp_path, source_address=("192.0.2.0/24",))

    assert login(server, key, allowed, "true").status == 0
    assert login(server, key, elsewhere, "true").refused


def test_force_command_enforced(server, ca_keys, user_keys, tmp_path, login):
    key = user_keys("ed25519")
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path, force_command="echo forced")

    outcome = login(server, key, cert, "echo requested")

    assert outcome.status == 0
    assert outcome.stdout == "forced\n"


def test_missing_krl_refuses_every_login(server, ca_keys, user_keys, tmp_path, login):
    # Why a KRL file must always exist, even when nothing is revoked.
    key = user_keys("ed25519")
    cert, _ = issue(ca_keys("ed25519"), key, tmp_path)
    saved = server.krl_path.read_bytes()

    server.krl_path.unlink()
    try:
        outcome = login(server, key, cert, "true")
    finally:
        server.set_krl(saved)

    assert outcome.refused
    assert login(server, key, cert, "true").status == 0
