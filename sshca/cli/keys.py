"""Key and certificate files on the engineer's machine, and the ssh-agent.

`sshca cert` keeps one Ed25519 key per grant under ``~/.ssh/sshca/``:

    req-<id>            private key, OpenSSH format, mode 0600
    req-<id>.pub        public key
    req-<id>-cert.pub   the certificate, where ssh and ssh-add look for it

Only files with these names are ever removed, and only once the window of
the certificate beside them has ended.
"""

import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sshca.cli.errors import CommandError

KEY_NAME = re.compile(r"req-(\d+)")
CERT_SUFFIX = "-cert.pub"


def key_dir() -> Path:
    """Return the directory for per-grant keys, ``~/.ssh/sshca``."""
    return Path(os.path.expanduser("~")) / ".ssh" / "sshca"


def grant_key_path(request_id: int) -> Path:
    return key_dir() / f"req-{request_id}"


def cert_path_for(key_path: Path) -> Path:
    """Return where ssh and ssh-add look for the certificate of ``key_path``."""
    return key_path.with_name(key_path.name + CERT_SUFFIX)


def public_path_for(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".pub")


def ensure_key_dir() -> Path:
    """Create ``~/.ssh/sshca`` (and ``~/.ssh``) mode 0700 if missing; return it."""
    path = key_dir()
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)
    # An existing directory keeps its mode; private keys must not be listable by others.
    os.chmod(path, 0o700)
    return path


def create_grant_key(request_id: int, comment: str) -> tuple[Path, str, bool]:
    """Return (private key path, public key line, whether the key is new) for a grant.

    Reuses the key made by an earlier `sshca cert` for the same request, so
    fetching the certificate again does not leave a stray key behind.
    Otherwise generates a fresh Ed25519 key and writes it and its ``.pub``.
    """
    ensure_key_dir()
    path = grant_key_path(request_id)
    public_path = public_path_for(path)
    if path.exists() and public_path.exists():
        return path, read_public_key(path), False

    key = Ed25519PrivateKey.generate()
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_line = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    public_line = f"{public_line} {comment}".strip()

    write_file(path, private_bytes, mode=0o600)
    write_file(public_path, (public_line + "\n").encode(), mode=0o644)
    return path, public_line, True


def remove_key_files(key_path: Path) -> list[Path]:
    """Remove a key, its ``.pub`` and its certificate; return the paths removed."""
    removed = []
    for path in (key_path, public_path_for(key_path), cert_path_for(key_path)):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CommandError(f"cannot remove {path}: {exc.strerror}")
        removed.append(path)
    return removed


def read_public_key(key_path: Path) -> str:
    """Return the public key line for the private key at ``key_path``.

    Reads ``<key>.pub``; without it, derives the public key from an
    unencrypted private key. Raises CommandError saying how to make the
    ``.pub`` file otherwise.
    """
    public_path = public_path_for(key_path)
    try:
        line = public_path.read_text().strip()
    except FileNotFoundError:
        line = None
    except OSError as exc:
        raise CommandError(f"cannot read {public_path}: {exc.strerror}")
    if line:
        return line

    try:
        data = key_path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"key file {key_path} not found; check the --key path")
    except OSError as exc:
        raise CommandError(f"cannot read {key_path}: {exc.strerror}")
    try:
        private_key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CommandError(
            f"cannot read a public key for {key_path}: {public_path} is missing; "
            f"create it with `ssh-keygen -y -f {key_path} > {public_path}`"
        )
    return private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to ``path`` atomically, created with ``mode``.

    Raises CommandError naming the file when it cannot be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CommandError(f"cannot write {path}: {exc.strerror}; check the directory")


def certificate_valid_before(cert_path: Path) -> datetime | None:
    """Return the end of a certificate file's validity window, or None if unreadable.

    A certificate valid "forever" (valid_before = 2**64 - 1) returns None too,
    because no window of sshca's ever looks like that.
    """
    try:
        data = cert_path.read_bytes()
        certificate = serialization.load_ssh_public_identity(data)
    except (OSError, ValueError, UnsupportedAlgorithm):
        return None
    valid_before = getattr(certificate, "valid_before", None)
    if valid_before is None or valid_before >= 2**64 - 1:
        return None
    return datetime.fromtimestamp(valid_before, tz=timezone.utc)


@dataclass(frozen=True)
class Removed:
    request_id: int
    paths: tuple[Path, ...]


def remove_expired_keys(now: datetime, *, keep: int | None = None) -> list[Removed]:
    """Remove ``req-<id>`` key, public key and certificate whose window has ended.

    Only names that `sshca cert` makes are touched, and only when the
    certificate beside the key can be read and its valid_before is in the
    past. ``keep`` is a request id to leave alone.
    """
    directory = key_dir()
    if not directory.is_dir():
        return []

    removed = []
    for cert_file in sorted(directory.glob("req-*" + CERT_SUFFIX)):
        match = KEY_NAME.fullmatch(cert_file.name[: -len(CERT_SUFFIX)])
        if not match or int(match.group(1)) == keep:
            continue
        valid_before = certificate_valid_before(cert_file)
        if valid_before is None or valid_before > now:
            continue

        key_path = directory / match.group(0)
        paths = remove_key_files(key_path)
        removed.append(Removed(int(match.group(1)), tuple(paths)))
    return removed


@dataclass(frozen=True)
class AgentResult:
    added: bool
    note: str


def add_to_agent(key_path: Path, valid_before: datetime, now: datetime) -> AgentResult:
    """Add the key and its certificate to the running ssh-agent until ``valid_before``.

    ``ssh-add -t SECONDS`` sets the lifetime, so the agent drops the key when
    the window ends; ssh-add loads ``<key>-cert.pub`` together with the key.
    Returns a note instead of failing when there is no agent, because the
    key files work with ``ssh -i`` alone.
    """
    if not os.environ.get("SSH_AUTH_SOCK"):
        return AgentResult(
            False,
            "no ssh-agent is running (SSH_AUTH_SOCK is not set); "
            "the ssh command below uses the key files directly",
        )

    seconds = math.floor((valid_before - now).total_seconds())
    if seconds <= 0:
        return AgentResult(False, "the window has ended; the key was not added to ssh-agent")

    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        return AgentResult(False, "ssh-add is not installed; the key was not added to ssh-agent")

    result = subprocess.run(
        [ssh_add, "-t", str(seconds), str(key_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        reason = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        return AgentResult(False, f"ssh-add failed ({reason}); the key was not added to ssh-agent")
    return AgentResult(True, f"key and certificate added for {seconds}s, until the window ends")


def remove_from_agent(key_path: Path) -> str:
    """Remove a key and its certificate from the running ssh-agent; return a note on the outcome."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return "no ssh-agent is running"
    ssh_add = shutil.which("ssh-add")
    if ssh_add is None:
        return "ssh-add is not installed"
    # `ssh-add -d KEY` removes the key and, when KEY-cert.pub exists, the certificate too.
    result = subprocess.run(
        [ssh_add, "-d", str(key_path)], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    if result.returncode != 0:
        return "it was not in ssh-agent"
    return "removed from ssh-agent"


def check_certificate_matches(certificate_line: str, public_key_line: str) -> None:
    """Raise CommandError unless the certificate is an SSH certificate for this public key.

    A certificate for another key would be useless with this private key,
    and one with no principals would be valid for any login, so neither is
    written to disk.
    """
    try:
        certificate = serialization.load_ssh_public_identity(certificate_line.strip().encode())
        public_key = serialization.load_ssh_public_key(public_key_line.strip().encode())
    except (ValueError, UnsupportedAlgorithm):
        raise CommandError("the server returned an unreadable certificate; tell the sshca admin")

    if not isinstance(certificate, serialization.SSHCertificate):
        raise CommandError("the server returned a public key instead of a certificate; "
                           "tell the sshca admin")
    encoding, public_format = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    certified = certificate.public_key().public_bytes(encoding, public_format)
    ours = public_key.public_bytes(encoding, public_format)
    if certified != ours:
        raise CommandError("the server returned a certificate for a different key; "
                           "tell the sshca admin")
    if not certificate.valid_principals:
        raise CommandError("the server returned a certificate without principals, "
                           "which sshd would accept for any login; tell the sshca admin")
