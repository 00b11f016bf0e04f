"""Helpers for hostconfig tests: a CA, user certificates and host sshd_config files.

Host trees that a real sshd reads live in ``secure_dir`` or
``make_secure_dir()`` directories of the sshd harness (tests/support/sshd.py),
because sshd's StrictModes rejects principals files below /tmp (mode 1777).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.certs import CertificateSpec, sign_certificate
from ca.keys import CAKey, generate_ca_key
from ca.userkeys import parse_user_key
from hostconfig.cli import hostconfig

SSHD = "/usr/sbin/sshd"


def run_cli(*args: str):
    """Run ``sshca hostconfig ARGS`` in-process and return click's Result."""
    return CliRunner().invoke(hostconfig, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def ca_key() -> CAKey:
    return CAKey.from_private_key(generate_ca_key("ed25519"))


def write_ca_keys(path: Path, *keys: CAKey) -> Path:
    path.write_text("".join(f"{key.public_line('sshca-test')}\n" for key in keys),
                    encoding="ascii")
    return path


@dataclass
class UserIdentity:
    """A user key pair on disk and, once signed, its certificate beside it."""

    key_path: Path
    cert_path: Path
    public_line: str


def make_identity(directory: Path, name: str) -> UserIdentity:
    private = ed25519.Ed25519PrivateKey.generate()
    key_path = directory / name
    key_path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    public_line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                    serialization.PublicFormat.OpenSSH).decode()
    return UserIdentity(key_path, directory / f"{name}-cert.pub", public_line)


def sign(ca: CAKey, identity: UserIdentity, principals: list[str], serial: int) -> None:
    """Sign a certificate valid for the next hour and write it to ``identity.cert_path``."""
    now = datetime.now(timezone.utc)
    spec = CertificateSpec(
        public_key=parse_user_key(identity.public_line),
        serial=serial,
        key_id=f"user=tester request={serial} serial={serial}",
        principals=tuple(principals),
        valid_after=now - timedelta(minutes=1),
        valid_before=now + timedelta(hours=1),
    )
    issued = sign_certificate(ca, spec, max_validity=timedelta(hours=2))
    identity.cert_path.write_text(issued.line + "\n", encoding="ascii")


def write_main_config(root: Path) -> Path:
    """Write a host's main sshd_config under ``root``: host key, logins, and the Include of the drop-ins.

    Only what any host has is written here; everything sshca needs comes
    from the rendered drop-in. The sshd test harness forces port, listen
    address and PID file on the command line.
    """
    # sshd -t, which install runs, needs the privilege separation directory
    # that the system's sshd service creates when it starts.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    ssh_dir = root / "etc/ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    host_key = root / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
    config = ssh_dir / "sshd_config"
    config.write_text(
        f"Include {ssh_dir}/sshd_config.d/*.conf\n"
        f"HostKey {host_key}\n"
        "PermitRootLogin prohibit-password\n"
        "AuthorizedKeysFile none\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n",
        encoding="ascii")
    return config
