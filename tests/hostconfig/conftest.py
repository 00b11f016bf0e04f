"""Fixtures for hostconfig tests: a CA, certificates and sshd hosts set up only by hostconfig.

sshd's StrictModes rejects an AuthorizedPrincipalsFile when the file or any
parent directory is writable by group or others, and /tmp is mode 1777. So
each host tree lives in a root-owned 0755 directory under /run instead of
pytest's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
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
SECURE_BASE = Path("/run")


def run_cli(*args: str):
    """Run ``sshca hostconfig ARGS`` in-process and return click's Result."""
    return CliRunner().invoke(hostconfig, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture
def secure_dir():
    """A fresh root-owned 0755 directory whose parents are not writable by others."""
    path = Path(tempfile.mkdtemp(prefix="sshca-hostconfig-", dir=SECURE_BASE))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_secure_dir():
    path = Path(tempfile.mkdtemp(prefix="sshca-hostconfig-", dir=SECURE_BASE))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SshdHost:
    """An sshd on 127.0.0.1 whose sshca files come only from render and install."""

    name: str
    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.root / "etc/ssh/sshd_config"

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    def ssh(self, identity: UserIdentity, login: str, command: str = "true"):
        """Run the OpenSSH client with ``identity`` and its certificate; return the result."""
        return subprocess.run(
            ["ssh", "-F", "/dev/null", "-p", str(self.port),
             "-i", str(identity.key_path), "-o", f"CertificateFile={identity.cert_path}",
             "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
             "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
             f"{login}@127.0.0.1", command],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def write_main_config(root: Path, port: int) -> Path:
    """Write the host's main sshd_config: listener, host key and the Include of the drop-ins.

    Only what any host has is written here. Everything sshca needs comes
    from the rendered drop-in.
    """
    ssh_dir = root / "etc/ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    host_key = ssh_dir / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True)
    config = ssh_dir / "sshd_config"
    config.write_text(
        f"Include {ssh_dir}/sshd_config.d/*.conf\n"
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {root}/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "AuthorizedKeysFile none\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n",
        encoding="ascii")
    return config


def start_sshd(host: SshdHost) -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(host.log, "wb")
    host.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(host.config)],
                                    stdout=log, stderr=subprocess.STDOUT)
    log.close()

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise RuntimeError(f"sshd for {host.name} exited: {host.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", host.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    host.stop()
    raise RuntimeError(f"sshd for {host.name} did not listen on port {host.port}")
