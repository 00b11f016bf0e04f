"""Key fixtures shared by the ca tests: CA keys and user key files, made once per worker."""

import base64
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ca.keys import KEY_TYPES, CAKey, generate_ca_key

USER_KEY_TYPES = ("ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-4096")


def generate_user_private_key(key_type: str):
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("ecdsa-p"):
        curve = {"256": ec.SECP256R1, "384": ec.SECP384R1, "521": ec.SECP521R1}[key_type[-3:]]
        return ec.generate_private_key(curve())
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise ValueError(key_type)


def write_user_key(directory: Path, name: str, private_key) -> Path:
    """Write an unencrypted OpenSSH private key (0600) and its .pub; return the private key path."""
    path = directory / name
    path.write_bytes(
        private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    Path(f"{path}.pub").write_bytes(public + b" test@sshca\n")
    return path


def ssh_string(data: bytes) -> bytes:
    """Encode an SSH wire-format string, for building malformed test keys."""
    return struct.pack(">I", len(data)) + data


def key_line(blob: bytes, key_type: str | None = None) -> str:
    """Return "<type> <base64>" for a wire blob, taking the type from the blob unless given."""
    if key_type is None:
        (length,) = struct.unpack_from(">I", blob)
        key_type = blob[4 : 4 + length].decode()
    return f"{key_type} {base64.b64encode(blob).decode()}"


@pytest.fixture(scope="session")
def ca_keys():
    """Return a function key_type -> CAKey; each type is generated once per worker."""
    cache: dict[str, CAKey] = {}

    def get(key_type: str) -> CAKey:
        if key_type not in cache:
            cache[key_type] = CAKey.from_private_key(generate_ca_key(key_type))
        return cache[key_type]

    return get


@pytest.fixture(scope="session")
def user_keys(tmp_path_factory):
    """Return a function key_type -> private key path (with .pub beside it), made once per worker."""
    directory = tmp_path_factory.mktemp("user-keys")
    cache: dict[str, Path] = {}

    def get(key_type: str) -> Path:
        if key_type not in cache:
            cache[key_type] = write_user_key(directory, f"id_{key_type}", generate_user_private_key(key_type))
        return cache[key_type]

    return get


@pytest.fixture(params=KEY_TYPES)
def any_ca_key(request, ca_keys) -> CAKey:
    """Each CA key type in turn."""
    return ca_keys(request.param)
