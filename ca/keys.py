"""CA keys: generate, write encrypted, load with a passphrase, export the public key.

CA private keys are stored in the OpenSSH private-key format, always
encrypted with a passphrase, in files only the owner can read. Loading
refuses a file that group or others can access, like ssh(1) does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.errors import CAKeyError, quote_value

KEY_TYPES = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa")

# NIST SP 800-57 part 1 gives 3072-bit RSA about 128 bits of security, on a
# par with Ed25519 and P-256; a CA key lives long, so nothing weaker.
MIN_CA_RSA_BITS = 3072
# OpenSSH refuses RSA moduli above 16384 bits (SSH_RSA_MAXIMUM_MODULUS_SIZE).
MAX_RSA_BITS = 16384

# Refuse oversized files before reading them: an encrypted RSA-16384 key is
# well under this.
_MAX_KEY_FILE_BYTES = 64 * 1024
_MAX_PASSPHRASE_FILE_BYTES = 4096

_CURVES = {
    "ecdsa-p256": ec.SECP256R1,
    "ecdsa-p384": ec.SECP384R1,
    "ecdsa-p521": ec.SECP521R1,
}
_CURVE_KEY_TYPES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}

PrivateKey = Union[ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
PublicKey = Union[ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey]


def generate_ca_key(key_type: str = "ed25519", *, rsa_bits: int = MIN_CA_RSA_BITS) -> PrivateKey:
    """Generate a new CA private key of ``key_type`` (one of KEY_TYPES).

    Raises CAKeyError (field ``key_type`` or ``rsa_bits``) for an unknown type
    or an RSA size below 3072 or above 16384 bits.
    """
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()

    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())

    if key_type == "rsa":
        if isinstance(rsa_bits, bool) or not isinstance(rsa_bits, int) or not (
            MIN_CA_RSA_BITS <= rsa_bits <= MAX_RSA_BITS
        ):
            raise CAKeyError(
                f"invalid RSA key size {quote_value(rsa_bits)}: a CA key needs "
                f"{MIN_CA_RSA_BITS} to {MAX_RSA_BITS} bits",
                code="invalid_key_size",
                field="rsa_bits",
                value=rsa_bits,
            )
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)

    raise CAKeyError(
        f"unknown CA key type {quote_value(key_type)}: use one of {', '.join(KEY_TYPES)}",
        code="invalid_key_type",
        field="key_type",
        value=key_type,
    )


def ca_key_type(key: PrivateKey | PublicKey) -> str:
    """Return the KEY_TYPES name of a private or public key.

    Raises CAKeyError (code ``unsupported_key_type``) for any other key,
    including DSA.
    """
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"

    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name in _CURVE_KEY_TYPES:
            return _CURVE_KEY_TYPES[key.curve.name]

    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa"

    raise CAKeyError(
        f"unsupported CA key type {type(key).__name__}: use one of {', '.join(KEY_TYPES)}",
        code="unsupported_key_type",
        field="key_type",
        value=type(key).__name__,
    )


def public_key_line(public_key: PublicKey, comment: str = "") -> str:
    """Return ``public_key`` as one authorized_keys line: "<type> <base64> [comment]"."""
    line = public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")

    if comment:
        if any(char in comment for char in "\r\n\0"):
            raise ValueError("a key comment must be one line without NUL characters")
        line = f"{line} {comment}"

    return line


def fingerprint(public_key: PublicKey) -> str:
    """Return the SHA-256 fingerprint of a public key as ssh-keygen -l prints it ("SHA256:...")."""
    blob = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    wire = base64.b64decode(blob.split()[1])
    digest = hashlib.sha256(wire).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class CAKey:
    """A loaded CA key pair. Its repr shows the type and fingerprint, never the private key."""

    private_key: PrivateKey = field(repr=False)
    public_key: PublicKey = field(repr=False)
    key_type: str
    fingerprint: str

    @classmethod
    def from_private_key(cls, private_key: PrivateKey) -> CAKey:
        """Wrap a private key, checking that it is a supported CA key type."""
        key_type = ca_key_type(private_key)
        public_key = private_key.public_key()
        return cls(
            private_key=private_key,
            public_key=public_key,
            key_type=key_type,
            fingerprint=fingerprint(public_key),
        )

    def public_line(self, comment: str = "") -> str:
        """Return the public key as an authorized_keys or TrustedUserCAKeys line."""
        return public_key_line(self.public_key, comment)


def _check_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes):
        raise TypeError("the passphrase must be bytes")

    if not passphrase:
        raise CAKeyError(
            "the CA key passphrase is empty: a CA key is always stored encrypted, "
            "so set a non-empty passphrase",
            code="empty_passphrase",
            field="passphrase",
            value=None,
        )


def write_ca_key(
    path: str | os.PathLike[str],
    private_key: PrivateKey,
    passphrase: bytes,
    *,
    comment: str = "",
) -> None:
    """Write ``private_key`` encrypted to ``path`` (mode 0600) and its public key to ``path.pub``.

    Both files are created exclusively: an existing file is never
    overwritten. Raises CAKeyError for an empty passphrase, an unsupported key
    type or a file that already exists.
    """
    _check_passphrase(passphrase)
    ca_key_type(private_key)

    path = Path(path)
    public_path = Path(f"{path}.pub")
    for target in (path, public_path):
        if target.exists() or target.is_symlink():
            raise CAKeyError(
                f"cannot write the CA key: {target} already exists; "
                "choose another path or move the old file away first",
                code="key_file_exists",
                field="path",
                value=str(target),
            )

    private_bytes = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(passphrase),
    )
    public_text = public_key_line(private_key.public_key(), comment) + "\n"

    _write_exclusive(path, private_bytes, 0o600)
    try:
        _write_exclusive(public_path, public_text.encode("ascii"), 0o644)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise CAKeyError(
            f"cannot write the CA key: {path} already exists; "
            "choose another path or move the old file away first",
            code="key_file_exists",
            field="path",
            value=str(path),
        ) from None

    try:
        # The umask may have cleared bits of ``mode``; set exactly what was asked.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb", closefd=False) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def _read_private_file(path: Path, *, what: str, max_bytes: int) -> bytes:
    """Read a secret file, refusing one that group or others can access."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise CAKeyError(
            f"{what} {path} does not exist; check the path in the configuration",
            code="key_file_missing",
            field="path",
            value=str(path),
        ) from None
    except OSError as exc:
        raise CAKeyError(
            f"cannot open {what} {path}: {exc.strerror}",
            code="key_file_unreadable",
            field="path",
            value=str(path),
        ) from None

    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CAKeyError(
                f"{what} {path} is not a regular file",
                code="key_file_unreadable",
                field="path",
                value=str(path),
            )

        # Checked on the open file, so the file cannot be swapped in between.
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise CAKeyError(
                f"{what} {path} is accessible by group or others (mode {mode:04o}); "
                f"run 'chmod 600 {path}'",
                code="key_file_permissions",
                field="path",
                value=str(path),
            )

        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    finally:
        os.close(fd)

    if len(data) > max_bytes:
        raise CAKeyError(
            f"{what} {path} is larger than {max_bytes} bytes; check that it is the right file",
            code="key_file_invalid",
            field="path",
            value=str(path),
        )

    return data


def load_ca_key(path: str | os.PathLike[str], passphrase: bytes) -> CAKey:
    """Load an encrypted OpenSSH CA private key.

    Raises CAKeyError when the file is missing or is not an encrypted OpenSSH
    private key, when the passphrase is wrong, or when the key type is not a
    supported CA key type. A file that group or others can access is also
    rejected, and that message names the file and the chmod to run.
    """
    _check_passphrase(passphrase)
    path = Path(path)
    data = _read_private_file(path, what="CA key file", max_bytes=_MAX_KEY_FILE_BYTES)

    try:
        private_key = serialization.load_ssh_private_key(data, passphrase)
    except TypeError:
        # cryptography raises TypeError for a passphrase given to an unencrypted key.
        raise CAKeyError(
            f"CA key file {path} is not encrypted; encrypt it with "
            f"'ssh-keygen -p -f {path}'",
            code="key_not_encrypted",
            field="path",
            value=str(path),
        ) from None
    except ValueError as exc:
        if "checksum" in str(exc):
            # An OpenSSH key decrypts to garbage under a wrong passphrase,
            # which shows up as a broken check value.
            raise CAKeyError(
                f"cannot decrypt CA key file {path}: wrong passphrase",
                code="wrong_passphrase",
                field="passphrase",
                value=str(path),
            ) from None
        raise CAKeyError(
            f"CA key file {path} is not an OpenSSH private key; "
            "create one with 'sshca admin init' or 'ssh-keygen -t ed25519'",
            code="key_file_invalid",
            field="path",
            value=str(path),
        ) from None
    except Exception:
        # UnsupportedAlgorithm (for example DSA) and anything else cryptography
        # cannot load; the message must not echo key material.
        raise CAKeyError(
            f"CA key file {path} contains an unsupported key type; "
            f"use one of {', '.join(KEY_TYPES)}",
            code="unsupported_key_type",
            field="path",
            value=str(path),
        ) from None

    try:
        ca_key = CAKey.from_private_key(private_key)
    except CAKeyError:
        raise CAKeyError(
            f"CA key file {path} contains an unsupported key type; "
            f"use one of {', '.join(KEY_TYPES)}",
            code="unsupported_key_type",
            field="path",
            value=str(path),
        ) from None

    if ca_key.key_type == "rsa" and private_key.key_size < MIN_CA_RSA_BITS:
        raise CAKeyError(
            f"CA key file {path} contains a {private_key.key_size}-bit RSA key; a CA key needs "
            f"at least {MIN_CA_RSA_BITS} bits, so create a new one",
            code="key_too_short",
            field="path",
            value=str(path),
        )

    return ca_key


def read_passphrase(
    *, env: str | None = None, file: str | os.PathLike[str] | None = None
) -> bytes:
    """Read the CA key passphrase from an environment variable or a file.

    Exactly one of ``env`` (the variable name) and ``file`` must be given.
    One trailing newline is removed from a file. The file must not be
    accessible by group or others. Raises CAKeyError when the variable is
    unset or empty, or the file is missing, too open or empty.
    """
    if (env is None) == (file is None):
        raise TypeError("give exactly one of env= and file=")

    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise CAKeyError(
                f"environment variable {env} is not set or empty; "
                "set it to the CA key passphrase",
                code="passphrase_missing",
                field="passphrase_env",
                value=env,
            )
        return value.encode("utf-8")

    path = Path(file)
    data = _read_private_file(path, what="passphrase file", max_bytes=_MAX_PASSPHRASE_FILE_BYTES)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]

    if not data:
        raise CAKeyError(
            f"passphrase file {path} is empty; write the CA key passphrase into it",
            code="passphrase_missing",
            field="passphrase_file",
            value=str(path),
        )

    return data
