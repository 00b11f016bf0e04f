"""User public keys: parse one OpenSSH public-key line strictly and vet it.

The line is checked here before it is passed to cryptography, because
cryptography 50 is lenient in two ways that matter for a CA. Its
``load_ssh_public_key`` returns the bare key of a certificate. It also loads
``sk-*`` security-key blobs as plain Ed25519 or ECDSA keys, and signing those
would yield a certificate the security key cannot use.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.errors import InvalidPublicKey, quote_value
from ca.keys import MAX_RSA_BITS, PublicKey, fingerprint, public_key_line

# Checked before anything else. An RSA-16384 key line is about 2.8 KiB.
MAX_LINE_BYTES = 16 * 1024
DEFAULT_MIN_RSA_BITS = 2048

# Key type -> (number of length-prefixed fields in the blob, key class, curve name).
_KEY_FORMATS = {
    "ssh-ed25519": (2, ed25519.Ed25519PublicKey, None),
    "ecdsa-sha2-nistp256": (3, ec.EllipticCurvePublicKey, "secp256r1"),
    "ecdsa-sha2-nistp384": (3, ec.EllipticCurvePublicKey, "secp384r1"),
    "ecdsa-sha2-nistp521": (3, ec.EllipticCurvePublicKey, "secp521r1"),
    "ssh-rsa": (3, rsa.RSAPublicKey, None),
}
ACCEPTED_TYPES = tuple(_KEY_FORMATS)

_CERT_SUFFIX = "-cert-v01@openssh.com"
_NEW_KEY_HINT = "create one with 'ssh-keygen -t ed25519'"
_LINE = re.compile(r"(?P<type>[^ \t]+)[ \t]+(?P<blob>[^ \t]+)(?:[ \t]+(?P<comment>.*))?", re.DOTALL)
_PRINTABLE = re.compile(r"[\x20-\x7e\t]*")


@dataclass(frozen=True)
class UserKey:
    """A vetted user public key."""

    public_key: PublicKey = field(repr=False)
    key_type: str  # the OpenSSH type name, for example "ssh-ed25519"
    bits: int
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it
    line: str  # canonical "<type> <base64>", without the comment


def _reject(text: object, code: str, reason: str) -> InvalidPublicKey:
    return InvalidPublicKey(
        f"invalid public key: {reason}",
        code=code,
        field="public_key",
        value=quote_value(text, 60),
    )


def _read_fields(blob: bytes) -> tuple[list[bytes], bytes]:
    """Split an SSH wire blob into its length-prefixed fields and any bytes left over."""
    fields = []
    offset = 0
    while len(blob) - offset >= 4:
        (length,) = struct.unpack_from(">I", blob, offset)
        if length > len(blob) - offset - 4:
            break
        fields.append(blob[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return fields, blob[offset:]


def _check_type_token(text: str, key_type: str) -> None:
    if key_type.endswith(_CERT_SUFFIX):
        raise _reject(
            text,
            "certificate_not_key",
            f"this is a certificate ({key_type}), not a public key; "
            "send the public key file (for example id_ed25519.pub), not the -cert.pub file",
        )

    if key_type.startswith("sk-"):
        raise _reject(
            text,
            "unsupported_key_type",
            f"security-key (FIDO) keys of type {key_type} are not supported yet; "
            "create a key without a security key with 'ssh-keygen -t ed25519'",
        )

    if key_type == "ssh-dss":
        raise _reject(
            text,
            "unsupported_key_type",
            f"DSA keys (ssh-dss) are not accepted because DSA is weak and OpenSSH "
            f"disables it by default; {_NEW_KEY_HINT}",
        )

    if key_type not in _KEY_FORMATS:
        raise _reject(
            text,
            "unsupported_key_type",
            f"unknown key type {quote_value(key_type, 60)}; accepted types are "
            f"{', '.join(ACCEPTED_TYPES)}",
        )


def _decode_blob(text: str, key_type: str, encoded: str) -> bytes:
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        blob = None

    # Re-encoding catches non-canonical padding bits that b64decode accepts.
    if blob is None or base64.b64encode(blob).decode("ascii") != encoded:
        raise _reject(
            text,
            "invalid_base64",
            "the key data is not valid base64; copy the whole line of the .pub file",
        )

    expected_fields, _, _ = _KEY_FORMATS[key_type]
    fields, rest = _read_fields(blob)
    if not fields:
        raise _reject(text, "invalid_key_data", "the key data is truncated or corrupt")

    embedded_type = fields[0].decode("ascii", errors="replace")
    if embedded_type != key_type:
        raise _reject(
            text,
            "key_type_mismatch",
            f"the line says {key_type} but the key data is {quote_value(embedded_type, 60)}; "
            "copy the line of the .pub file unchanged",
        )

    if len(fields) < expected_fields:
        raise _reject(text, "invalid_key_data", "the key data is truncated or corrupt")

    if len(fields) > expected_fields or rest:
        raise _reject(
            text,
            "trailing_data",
            "the key data has trailing bytes after the key; copy the line of the .pub file unchanged",
        )

    return blob


def _load_key(text: str, key_type: str, encoded: str) -> tuple[PublicKey, int]:
    _, key_class, curve_name = _KEY_FORMATS[key_type]
    try:
        public_key = serialization.load_ssh_public_key(f"{key_type} {encoded}".encode("ascii"))
    except Exception:
        # ValueError or UnsupportedAlgorithm for points off the curve,
        # bad RSA parameters and the like.
        raise _reject(text, "invalid_key_data", f"the {key_type} key data is corrupt") from None

    if not isinstance(public_key, key_class) or (
        curve_name is not None and public_key.curve.name != curve_name
    ):
        raise _reject(text, "invalid_key_data", f"the {key_type} key data is corrupt")

    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key, 256

    return public_key, public_key.key_size


def _split_line(text: str) -> tuple[str, str]:
    line = text.strip()
    if not line:
        raise _reject(text, "empty", "no key given; paste the content of your .pub file")

    if "\n" in line or "\r" in line:
        raise _reject(text, "invalid_format", "give exactly one key line, not several lines")

    match = _LINE.fullmatch(line)
    if match is None:
        raise _reject(
            text,
            "invalid_format",
            "expected '<type> <base64 key data> [comment]', the content of a .pub file",
        )

    comment = match.group("comment") or ""
    if not _PRINTABLE.fullmatch(comment):
        raise _reject(text, "invalid_format", "the key comment contains control or non-ASCII characters")

    return match.group("type"), match.group("blob")


def _fingerprints_of(ca_public_keys: Iterable) -> set[str]:
    """Return the fingerprints of CA keys given as lines, key objects or objects with a fingerprint."""
    fingerprints = set()
    for ca_key in ca_public_keys:
        if isinstance(ca_key, str):
            key_type, encoded = ca_key.split()[:2]
            loaded = serialization.load_ssh_public_key(f"{key_type} {encoded}".encode("ascii"))
            fingerprints.add(fingerprint(loaded))
        elif isinstance(getattr(ca_key, "fingerprint", None), str):
            # A CAKey, a UserKey or a stored record with an "SHA256:..." fingerprint.
            fingerprints.add(ca_key.fingerprint)
        else:
            fingerprints.add(fingerprint(ca_key))
    return fingerprints


def parse_user_key(
    text: str,
    *,
    min_rsa_bits: int = DEFAULT_MIN_RSA_BITS,
    ca_public_keys: Iterable = (),
    revoked_fingerprints: Container[str] = (),
) -> UserKey:
    """Parse and vet one OpenSSH public-key line ("<type> <base64> [comment]").

    ``ca_public_keys`` are the CA's own keys (CAKey objects, public key
    objects or authorized_keys lines), which must never be signed as user
    keys. ``revoked_fingerprints`` contains "SHA256:..." fingerprints of revoked
    keys. Leading and trailing white space is ignored; anything else that is
    not a well-formed key is rejected.

    Raises InvalidPublicKey (field ``public_key``) with its own message and
    code for each problem. The problems are an oversized line, a bad format,
    a certificate, a security-key, DSA or unknown type, and invalid base64.
    So are a type that differs from the one in the key data, trailing bytes,
    a short RSA key, the CA's own key and a revoked key.
    """
    if min_rsa_bits < DEFAULT_MIN_RSA_BITS:
        raise ValueError(f"min_rsa_bits must be at least {DEFAULT_MIN_RSA_BITS}")

    if not isinstance(text, str):
        raise _reject(text, "invalid_format", "expected the key line as text")

    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_LINE_BYTES:
        raise _reject(
            f"{text[:40]}...",
            "too_large",
            f"the key line is {size} bytes long, more than the limit of {MAX_LINE_BYTES} bytes (16 KiB)",
        )

    key_type, encoded = _split_line(text)
    _check_type_token(text, key_type)
    _decode_blob(text, key_type, encoded)
    public_key, bits = _load_key(text, key_type, encoded)

    if key_type == "ssh-rsa" and bits < min_rsa_bits:
        raise _reject(
            text,
            "key_too_short",
            f"this RSA key has {bits} bits but at least {min_rsa_bits} are required; "
            f"{_NEW_KEY_HINT} (or 'ssh-keygen -t rsa -b 4096')",
        )

    if key_type == "ssh-rsa" and bits > MAX_RSA_BITS:
        raise _reject(
            text,
            "key_too_long",
            f"this RSA key has {bits} bits but OpenSSH accepts at most {MAX_RSA_BITS}; "
            f"{_NEW_KEY_HINT}",
        )

    key_fingerprint = fingerprint(public_key)
    if key_fingerprint in _fingerprints_of(ca_public_keys):
        raise _reject(
            text,
            "ca_key",
            f"this is the CA's own public key ({key_fingerprint}), not a user key; "
            "send your own public key",
        )

    if key_fingerprint in revoked_fingerprints:
        raise _reject(
            text,
            "revoked_key",
            f"key {key_fingerprint} is on the revoked-key list and cannot be signed; "
            f"{_NEW_KEY_HINT}",
        )

    return UserKey(
        public_key=public_key,
        key_type=key_type,
        bits=bits,
        fingerprint=key_fingerprint,
        line=public_key_line(public_key),
    )
