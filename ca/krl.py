"""Key revocation lists (KRLs), built by ssh-keygen and replaced atomically.

A KRL file must exist even when nothing is revoked: sshd with RevokedKeys
pointing at a missing file refuses every public-key login. So an empty
input still yields a valid, empty KRL.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.errors import KRLError, quote_value
from ca.keys import public_key_line

KRL_MAGIC = b"SSHKRL\n\0"
MAX_SERIAL = 2**64 - 1
_TIMEOUT_SECONDS = 60


def _public_line(key: object, field: str) -> str:
    """Return "<type> <base64>" for a public key given as a line, a key object or a CAKey."""
    if hasattr(key, "public_key") and hasattr(key, "fingerprint"):
        key = key.public_key

    if not isinstance(key, str):
        try:
            return public_key_line(key)
        except AttributeError:
            raise KRLError(
                f"invalid {field} entry {quote_value(key)}: expected an OpenSSH public key",
                code="invalid_public_key",
                field=field,
                value=type(key).__name__,
            ) from None

    tokens = key.split()
    try:
        if len(tokens) < 2 or tokens[0].endswith("-cert-v01@openssh.com"):
            raise ValueError(key)
        loaded = serialization.load_ssh_public_key(f"{tokens[0]} {tokens[1]}".encode("ascii"))
    except Exception:
        raise KRLError(
            f"invalid {field} entry {quote_value(key)}: expected one OpenSSH public-key line "
            "such as 'ssh-ed25519 AAAA...'",
            code="invalid_public_key",
            field=field,
            value=quote_value(key),
        ) from None

    return public_key_line(loaded)


def _check_serials(serials: Iterable[int]) -> list[int]:
    checked = set()
    for serial in serials:
        if isinstance(serial, bool) or not isinstance(serial, int) or not 1 <= serial <= MAX_SERIAL:
            raise KRLError(
                f"invalid serial {quote_value(serial)} for the KRL: a serial is an integer "
                "from 1 to 2**64 - 1",
                code="invalid_serial",
                field="serials",
                value=serial,
            )
        checked.add(serial)
    return sorted(checked)


def _check_key_ids(key_ids: Iterable[str]) -> list[str]:
    checked = []
    for key_id in key_ids:
        if not isinstance(key_id, str) or not key_id or not (key_id.isascii() and key_id.isprintable()):
            raise KRLError(
                f"invalid key ID {quote_value(key_id)} for the KRL: expected non-empty printable ASCII",
                code="invalid_key_id",
                field="key_ids",
                value=quote_value(key_id),
            )
        checked.append(key_id)
    return list(dict.fromkeys(checked))


def _run_ssh_keygen(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            arguments,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError:
        raise KRLError(
            f"cannot run {arguments[0]}: not found; install the OpenSSH client tools",
            code="ssh_keygen_missing",
            field="ssh_keygen",
            value=arguments[0],
        ) from None
    except subprocess.TimeoutExpired:
        raise KRLError(
            f"{arguments[0]} {arguments[1]} did not finish within {_TIMEOUT_SECONDS} seconds",
            code="ssh_keygen_failed",
            field="ssh_keygen",
            value=arguments[0],
        ) from None


def _write_with_ssh_keygen(arguments: list[str], cwd: Path) -> None:
    result = _run_ssh_keygen(arguments, cwd)
    if result.returncode != 0:
        raise KRLError(
            f"{arguments[0]} -k failed with exit status {result.returncode}: "
            f"{result.stderr.strip()[-500:]}",
            code="ssh_keygen_failed",
            field="ssh_keygen",
            value=arguments[0],
        )


def _check_readable(krl_path: Path, ssh_keygen: str, cwd: Path) -> None:
    """Raise KRLError unless ``ssh-keygen -Q`` can read the KRL at ``krl_path``.

    sshd loads RevokedKeys with the same code and refuses every key when it
    cannot, so an unreadable KRL must never be served. OpenSSH 9.2 writes
    one when revoked serials are dense over a span of more than 16,384: the
    serial bitmap it chooses is larger than its own reader accepts.
    """
    probe = cwd / "probe.pub"
    probe.write_text(public_key_line(ed25519.Ed25519PrivateKey.generate().public_key()) + "\n", encoding="ascii")

    # Exit status 0: the random probe key is not revoked, so the KRL was read.
    result = _run_ssh_keygen([ssh_keygen, "-Q", "-f", str(krl_path), str(probe)], cwd)
    if result.returncode != 0:
        raise KRLError(
            f"{ssh_keygen} -Q cannot read the KRL that {ssh_keygen} -k wrote "
            f"({result.stderr.strip()[-300:]}); sshd would refuse every key with it. "
            "Revoke these certificates by key ID instead of by serial",
            code="unreadable_krl",
            field="serials",
            value=ssh_keygen,
        )


def build_krl(
    *,
    serials: Iterable[int],
    public_keys: Iterable[str],
    ca_public_keys: Iterable[str],
    key_ids: Iterable[str] = (),
    ssh_keygen: str = "ssh-keygen",
) -> bytes:
    """Build a KRL with ``ssh-keygen -k`` and return its bytes.

    ``serials`` are revoked certificate serials, revoked under every CA key
    in ``ca_public_keys`` (all trusted CA keys during a rotation, since a
    serial is only unique together with its CA). ``public_keys`` are revoked
    public keys as OpenSSH lines; they are revoked whatever CA signed them.
    ``key_ids`` revoke certificates by key ID under every CA key, like
    serials. With nothing revoked the result is a valid, empty KRL.

    Raises KRLError for an invalid serial, key ID or key, for serials or key
    IDs without any CA key, when ssh-keygen fails, and (code
    ``unreadable_krl``) when ssh-keygen cannot read back the KRL it wrote.
    """
    serials = _check_serials(serials)
    key_ids = _check_key_ids(key_ids)
    key_lines = [_public_line(key, "public_keys") for key in public_keys]
    ca_lines = list(dict.fromkeys(_public_line(key, "ca_public_keys") for key in ca_public_keys))

    if (serials or key_ids) and not ca_lines:
        raise KRLError(
            "cannot revoke serials or key IDs without the CA public keys that issued them; "
            "pass the trusted CA public keys",
            code="missing_ca_keys",
            field="ca_public_keys",
            value=[],
        )

    with tempfile.TemporaryDirectory(prefix="sshca-krl-") as tmp:
        workdir = Path(tmp)
        krl_path = workdir / "revoked.krl"

        # The first run creates the KRL with the revoked keys (or empty).
        keys_spec = workdir / "keys.spec"
        keys_spec.write_text("".join(f"key: {line}\n" for line in key_lines), encoding="ascii")
        _write_with_ssh_keygen([ssh_keygen, "-q", "-k", "-f", str(krl_path), str(keys_spec)], workdir)

        # ssh-keygen takes one CA per run (-s), so serials and key IDs are
        # added once per CA key with -u (update the existing KRL).
        if serials or key_ids:
            certificates_spec = workdir / "certificates.spec"
            lines = [f"serial: {n}\n" for n in serials] + [f"id: {key_id}\n" for key_id in key_ids]
            certificates_spec.write_text("".join(lines), encoding="ascii")
            for index, ca_line in enumerate(ca_lines):
                ca_path = workdir / f"ca{index}.pub"
                ca_path.write_text(ca_line + "\n", encoding="ascii")
                _write_with_ssh_keygen(
                    [ssh_keygen, "-q", "-k", "-u", "-f", str(krl_path), "-s", str(ca_path), str(certificates_spec)],
                    workdir,
                )

        _check_readable(krl_path, ssh_keygen, workdir)
        data = krl_path.read_bytes()

    if not data.startswith(KRL_MAGIC):
        raise KRLError(
            f"{ssh_keygen} -k wrote a file that is not a KRL",
            code="ssh_keygen_failed",
            field="ssh_keygen",
            value=ssh_keygen,
        )

    return data


def write_krl(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the KRL at ``path`` atomically with ``data`` (mode 0644).

    The data goes to a temporary file in the same directory, which is then
    renamed over ``path``, so readers such as sshd see the old or the new
    KRL, never a partial one. Raises KRLError when ``data`` is not a KRL.
    """
    if not isinstance(data, bytes) or not data.startswith(KRL_MAGIC):
        raise KRLError(
            f"refusing to write {path}: the data is not an OpenSSH KRL",
            code="invalid_krl",
            field="data",
            value=str(path),
        )

    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise

    # Persist the rename itself.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
