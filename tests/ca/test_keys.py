import os
import subprocess
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning

from ca.errors import CAKeyError
from ca.keys import (
    KEY_TYPES,
    CAKey,
    fingerprint,
    generate_ca_key,
    load_ca_key,
    public_key_line,
    read_passphrase,
    write_ca_key,
)

PASSPHRASE = b"correct horse battery staple"


@pytest.mark.parametrize(
    ("key_type", "key_class", "size"),
    [
        ("ed25519", ed25519.Ed25519PrivateKey, None),
        ("ecdsa-p256", ec.EllipticCurvePrivateKey, 256),
        ("ecdsa-p384", ec.EllipticCurvePrivateKey, 384),
        ("ecdsa-p521", ec.EllipticCurvePrivateKey, 521),
        ("rsa", rsa.RSAPrivateKey, 3072),
    ],
)
def test_generate_ca_key_types(key_type, key_class, size):
    key = generate_ca_key(key_type)

    assert isinstance(key, key_class)
    if size is not None:
        assert key.key_size == size
    assert CAKey.from_private_key(key).key_type == key_type


def test_generate_ca_key_default_is_ed25519():
    assert isinstance(generate_ca_key(), ed25519.Ed25519PrivateKey)


def test_generate_rsa_4096():
    assert generate_ca_key("rsa", rsa_bits=4096).key_size == 4096


@pytest.mark.parametrize("bits", [1024, 2048, 3071, 16385, True, "4096"])
def test_generate_rsa_size_rejected(bits):
    with pytest.raises(CAKeyError, match=r"invalid RSA key size .*: a CA key needs 3072 to 16384 bits") as info:
        generate_ca_key("rsa", rsa_bits=bits)

    assert info.value.field == "rsa_bits"


@pytest.mark.parametrize("key_type", ["dsa", "ecdsa", "ed448", "RSA", ""])
def test_generate_unknown_type_rejected(key_type):
    with pytest.raises(CAKeyError, match=r"unknown CA key type .*: use one of ed25519, ecdsa-p256") as info:
        generate_ca_key(key_type)

    assert info.value.code == "invalid_key_type"


def _ssh_keygen(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-keygen", *arguments], capture_output=True, text=True, check=False)


def test_write_and_load_round_trip(any_ca_key, tmp_path):
    path = tmp_path / "ca_key"
    old_umask = os.umask(0)
    try:
        write_ca_key(path, any_ca_key.private_key, PASSPHRASE, comment="sshca user CA")
    finally:
        os.umask(old_umask)

    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    public_text = Path(f"{path}.pub").read_text()
    assert public_text == any_ca_key.public_line("sshca user CA") + "\n"

    loaded = load_ca_key(path, PASSPHRASE)
    assert loaded.key_type == any_ca_key.key_type
    assert loaded.fingerprint == any_ca_key.fingerprint
    assert loaded.public_line() == any_ca_key.public_line()

    # OpenSSH itself reads the encrypted key with the passphrase, and not without it.
    derived = _ssh_keygen("-y", "-P", PASSPHRASE.decode(), "-f", str(path))
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == any_ca_key.public_line().split()
    unencrypted = _ssh_keygen("-y", "-P", "", "-f", str(path))
    assert unencrypted.returncode != 0


def test_fingerprint_matches_ssh_keygen(any_ca_key, tmp_path):
    public_path = tmp_path / "ca.pub"
    public_path.write_text(any_ca_key.public_line() + "\n")

    listed = _ssh_keygen("-l", "-E", "sha256", "-f", str(public_path))

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[1] == any_ca_key.fingerprint
    assert fingerprint(any_ca_key.public_key) == any_ca_key.fingerprint


def test_public_line_format(ca_keys):
    ca = ca_keys("ed25519")

    assert ca.public_line().startswith("ssh-ed25519 AAAA")
    assert len(ca.public_line().split()) == 2
    assert ca.public_line("ca 2026") == ca.public_line() + " ca 2026"
    assert public_key_line(ca.public_key) == ca.public_line()


def test_public_line_rejects_newline_comment(ca_keys):
    with pytest.raises(ValueError, match=r"a key comment must be one line"):
        ca_keys("ed25519").public_line("a\nssh-ed25519 AAAA")


def test_repr_hides_private_key(ca_keys):
    ca = ca_keys("ed25519")

    text = repr(ca)

    assert "private_key" not in text
    assert "Private" not in text
    assert ca.fingerprint in text


def test_write_refuses_existing_key(tmp_path, ca_keys):
    path = tmp_path / "ca_key"
    path.write_text("old key")

    with pytest.raises(CAKeyError, match=rf"cannot write the CA key: {path} already exists") as info:
        write_ca_key(path, ca_keys("ed25519").private_key, PASSPHRASE)

    assert info.value.code == "key_file_exists"
    assert path.read_text() == "old key"


def test_write_refuses_existing_public_key(tmp_path, ca_keys):
    path = tmp_path / "ca_key"
    Path(f"{path}.pub").write_text("old")

    with pytest.raises(CAKeyError, match=r"ca_key\.pub already exists"):
        write_ca_key(path, ca_keys("ed25519").private_key, PASSPHRASE)

    assert not path.exists()


def test_write_refuses_empty_passphrase(tmp_path, ca_keys):
    with pytest.raises(CAKeyError, match=r"the CA key passphrase is empty") as info:
        write_ca_key(tmp_path / "ca_key", ca_keys("ed25519").private_key, b"")

    assert info.value.code == "empty_passphrase"
    assert not (tmp_path / "ca_key").exists()


@pytest.fixture
def written_key(tmp_path, ca_keys) -> Path:
    path = tmp_path / "ca_key"
    write_ca_key(path, ca_keys("ed25519").private_key, PASSPHRASE)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644, 0o601, 0o610])
def test_load_refuses_open_permissions(written_key, mode):
    written_key.chmod(mode)

    with pytest.raises(
        CAKeyError,
        match=rf"CA key file {written_key} is accessible by group or others \(mode {mode:04o}\); "
        rf"run 'chmod 600 {written_key}'",
    ) as info:
        load_ca_key(written_key, PASSPHRASE)

    assert info.value.code == "key_file_permissions"
    assert info.value.value == str(written_key)


def test_load_accepts_0400(written_key):
    written_key.chmod(0o400)

    assert load_ca_key(written_key, PASSPHRASE).key_type == "ed25519"


def test_load_wrong_passphrase(written_key):
    with pytest.raises(CAKeyError, match=rf"cannot decrypt CA key file {written_key}: wrong passphrase") as info:
        load_ca_key(written_key, b"hunter2-guess")

    assert info.value.code == "wrong_passphrase"
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(info.value)


def test_load_empty_passphrase(written_key):
    with pytest.raises(CAKeyError, match=r"the CA key passphrase is empty"):
        load_ca_key(written_key, b"")


def test_load_missing_file(tmp_path):
    path = tmp_path / "nothing"

    with pytest.raises(CAKeyError, match=rf"CA key file {path} does not exist") as info:
        load_ca_key(path, PASSPHRASE)

    assert info.value.code == "key_file_missing"


def test_load_directory(tmp_path):
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)

    with pytest.raises(CAKeyError, match=rf"CA key file {directory} is not a regular file"):
        load_ca_key(directory, PASSPHRASE)


def test_load_unencrypted_key(tmp_path, ca_keys):
    path = tmp_path / "plain"
    path.write_bytes(
        ca_keys("ed25519").private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)

    with pytest.raises(
        CAKeyError, match=rf"CA key file {path} is not encrypted; encrypt it with 'ssh-keygen -p -f {path}'"
    ) as info:
        load_ca_key(path, PASSPHRASE)

    assert info.value.code == "key_not_encrypted"


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"])
def test_load_garbage(tmp_path, content):
    path = tmp_path / "garbage"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(CAKeyError, match=rf"CA key file {path} is not an OpenSSH private key") as info:
        load_ca_key(path, PASSPHRASE)

    assert info.value.code == "key_file_invalid"


def test_load_oversized_file(tmp_path):
    path = tmp_path / "big"
    path.write_bytes(b"x" * (64 * 1024 + 1))
    path.chmod(0o600)

    with pytest.raises(CAKeyError, match=r"is larger than 65536 bytes"):
        load_ca_key(path, PASSPHRASE)


def test_load_short_rsa_key(tmp_path):
    path = tmp_path / "rsa2048"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    )
    path.chmod(0o600)

    with pytest.raises(
        CAKeyError, match=rf"CA key file {path} contains a 2048-bit RSA key; a CA key needs at least 3072 bits"
    ) as info:
        load_ca_key(path, PASSPHRASE)

    assert info.value.code == "key_too_short"


def test_load_dsa_key(tmp_path):
    path = tmp_path / "dsa"
    key = dsa.generate_private_key(key_size=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(PASSPHRASE),
        )
    path.write_bytes(data)
    path.chmod(0o600)

    with pytest.raises(CAKeyError, match=rf"CA key file {path} contains an unsupported key type") as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            load_ca_key(path, PASSPHRASE)

    assert info.value.code == "unsupported_key_type"


def test_passphrase_from_env(monkeypatch):
    monkeypatch.setenv("SSHCA_TEST_PASSPHRASE", "s3cret pass")

    assert read_passphrase(env="SSHCA_TEST_PASSPHRASE") == b"s3cret pass"


@pytest.mark.parametrize("value", [None, ""])
def test_passphrase_env_missing(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SSHCA_TEST_PASSPHRASE", raising=False)
    else:
        monkeypatch.setenv("SSHCA_TEST_PASSPHRASE", value)

    with pytest.raises(
        CAKeyError, match=r"environment variable SSHCA_TEST_PASSPHRASE is not set or empty"
    ) as info:
        read_passphrase(env="SSHCA_TEST_PASSPHRASE")

    assert info.value.code == "passphrase_missing"
    assert info.value.value == "SSHCA_TEST_PASSPHRASE"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"s3cret", b"s3cret"),
        (b"s3cret\n", b"s3cret"),
        (b"s3cret\r\n", b"s3cret"),
        (b"s3cret\n\n", b"s3cret\n"),
        (b" s3cret ", b" s3cret "),
    ],
)
def test_passphrase_from_file(tmp_path, content, expected):
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    path.chmod(0o600)

    assert read_passphrase(file=path) == expected


def test_passphrase_file_permissions(tmp_path):
    path = tmp_path / "passphrase"
    path.write_bytes(b"s3cret")
    path.chmod(0o644)

    with pytest.raises(
        CAKeyError,
        match=rf"passphrase file {path} is accessible by group or others \(mode 0644\); run 'chmod 600 {path}'",
    ):
        read_passphrase(file=path)


@pytest.mark.parametrize("content", [b"", b"\n"])
def test_passphrase_file_empty(tmp_path, content):
    path = tmp_path / "passphrase"
    path.write_bytes(content)
    path.chmod(0o600)

    with pytest.raises(CAKeyError, match=rf"passphrase file {path} is empty"):
        read_passphrase(file=path)


def test_passphrase_file_missing(tmp_path):
    with pytest.raises(CAKeyError, match=r"passphrase file .* does not exist"):
        read_passphrase(file=tmp_path / "missing")


def test_passphrase_needs_one_source(tmp_path):
    with pytest.raises(TypeError, match=r"give exactly one of env= and file="):
        read_passphrase()

    with pytest.raises(TypeError, match=r"give exactly one of env= and file="):
        read_passphrase(env="X", file=tmp_path / "p")


def test_passphrase_file_then_load(tmp_path, written_key):
    passphrase_path = tmp_path / "passphrase"
    passphrase_path.write_bytes(PASSPHRASE + b"\n")
    passphrase_path.chmod(0o600)

    ca = load_ca_key(written_key, read_passphrase(file=passphrase_path))

    assert ca.key_type == "ed25519"


def test_write_refuses_symlink(tmp_path, ca_keys):
    target = tmp_path / "elsewhere"
    path = tmp_path / "ca_key"
    path.symlink_to(target)

    with pytest.raises(CAKeyError, match=r"already exists"):
        write_ca_key(path, ca_keys("ed25519").private_key, PASSPHRASE)

    assert not target.exists()
