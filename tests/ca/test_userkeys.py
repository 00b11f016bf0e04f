import base64
import re
import subprocess
import warnings
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.utils import CryptographyDeprecationWarning

from ca.errors import InvalidPublicKey
from ca.userkeys import MAX_LINE_BYTES, parse_user_key

from .conftest import USER_KEY_TYPES, key_line, ssh_string

OPENSSH_TYPES = {
    "ed25519": ("ssh-ed25519", 256),
    "ecdsa-p256": ("ecdsa-sha2-nistp256", 256),
    "ecdsa-p384": ("ecdsa-sha2-nistp384", 384),
    "ecdsa-p521": ("ecdsa-sha2-nistp521", 521),
    "rsa-2048": ("ssh-rsa", 2048),
    "rsa-4096": ("ssh-rsa", 4096),
}


def public_text(path: Path) -> str:
    return Path(f"{path}.pub").read_text()


def public_blob(line: str) -> bytes:
    return base64.b64decode(line.split()[1])


@pytest.mark.parametrize("key_type", USER_KEY_TYPES)
def test_accepted_types(user_keys, key_type):
    path = user_keys(key_type)
    text = public_text(path)

    key = parse_user_key(text)

    expected_type, expected_bits = OPENSSH_TYPES[key_type]
    assert key.key_type == expected_type
    assert key.bits == expected_bits
    assert key.line == " ".join(text.split()[:2])
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"], capture_output=True, text=True, check=True
    )
    assert listed.stdout.split()[1] == key.fingerprint
    assert listed.stdout.split()[0] == str(expected_bits)


def test_ssh_keygen_key_accepted(tmp_path):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@laptop", "-f", str(path)], check=True)

    key = parse_user_key(public_text(path))

    assert key.key_type == "ssh-ed25519"
    assert key.line == " ".join(public_text(path).split()[:2])


@pytest.mark.parametrize(
    "variant",
    [
        "{line}",
        "{line}\n",
        "{line}\r\n",
        "  {line}  ",
        "{line} comment with spaces",
        "{line}\tcomment",
    ],
)
def test_white_space_and_comment_accepted(user_keys, variant):
    line = " ".join(public_text(user_keys("ed25519")).split()[:2])

    assert parse_user_key(variant.format(line=line)).line == line


def test_min_rsa_bits_configurable(user_keys):
    text = public_text(user_keys("rsa-2048"))

    with pytest.raises(InvalidPublicKey, match=r"this RSA key has 2048 bits but at least 3072 are required"):
        parse_user_key(text, min_rsa_bits=3072)

    assert parse_user_key(public_text(user_keys("rsa-4096")), min_rsa_bits=3072).bits == 4096


def test_min_rsa_bits_cannot_go_below_2048(user_keys):
    with pytest.raises(ValueError, match=r"min_rsa_bits must be at least 2048"):
        parse_user_key(public_text(user_keys("ed25519")), min_rsa_bits=1024)


def _rsa_line(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("bits", [1024, 2047])
def test_short_rsa_rejected(bits):
    with pytest.raises(
        InvalidPublicKey,
        match=rf"invalid public key: this RSA key has {bits} bits but at least 2048 are required; "
        r"create one with 'ssh-keygen -t ed25519'",
    ) as info:
        parse_user_key(_rsa_line(bits))

    assert info.value.code == "key_too_short"
    assert info.value.field == "public_key"


def _dsa_line() -> str:
    key = dsa.generate_private_key(key_size=1024).public_key()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_dsa_rejected():
    with pytest.raises(InvalidPublicKey, match=r"DSA keys \(ssh-dss\) are not accepted") as info:
        parse_user_key(_dsa_line() + " old@key")

    assert info.value.code == "unsupported_key_type"


def _sk_ed25519_line() -> str:
    blob = ssh_string(b"sk-ssh-ed25519@openssh.com") + ssh_string(b"\x01" * 32) + ssh_string(b"ssh:")
    return key_line(blob)


def _sk_ecdsa_line() -> str:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    blob = (
        ssh_string(b"sk-ecdsa-sha2-nistp256@openssh.com")
        + ssh_string(b"nistp256")
        + ssh_string(point)
        + ssh_string(b"ssh:")
    )
    return key_line(blob)


@pytest.mark.parametrize(
    ("line", "key_type"),
    [
        (_sk_ed25519_line(), "sk-ssh-ed25519@openssh.com"),
        (_sk_ecdsa_line(), "sk-ecdsa-sha2-nistp256@openssh.com"),
    ],
)
def test_security_keys_rejected(line, key_type):
    # cryptography would load these as plain keys; the parser must stop them first.
    with pytest.raises(
        InvalidPublicKey,
        match=rf"security-key \(FIDO\) keys of type {key_type} are not supported yet",
    ) as info:
        parse_user_key(line)

    assert info.value.code == "unsupported_key_type"


def test_certificate_rejected(tmp_path, user_keys):
    ca_path = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca_path)], check=True)
    key_path = tmp_path / "id"
    key_path.write_bytes(Path(user_keys("ed25519")).read_bytes())
    Path(f"{key_path}.pub").write_text(public_text(user_keys("ed25519")))
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca_path), "-I", "test", "-n", "root@db1", f"{key_path}.pub"],
        check=True,
    )
    certificate = Path(f"{key_path}-cert.pub").read_text()

    with pytest.raises(
        InvalidPublicKey,
        match=r"this is a certificate \(ssh-ed25519-cert-v01@openssh.com\), not a public key; "
        r"send the public key file",
    ) as info:
        parse_user_key(certificate)

    assert info.value.code == "certificate_not_key"


def test_certificate_blob_with_key_type_rejected(tmp_path, ca_keys, user_keys):
    # A certificate blob relabelled as a plain key: the blob's own type gives it away.
    key_path = tmp_path / "k"
    key_path.write_bytes(Path(user_keys("ed25519")).read_bytes())
    key_path.chmod(0o600)
    ca_file = tmp_path / "ca"
    ca_file.write_bytes(
        ca_keys("ed25519").private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    ca_file.chmod(0o600)
    Path(f"{key_path}.pub").write_text(public_text(user_keys("ed25519")))
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca_file), "-I", "t", "-n", "a@b", f"{key_path}.pub"], check=True)
    blob = Path(f"{key_path}-cert.pub").read_text().split()[1]

    with pytest.raises(
        InvalidPublicKey,
        match=r"the line says ssh-ed25519 but the key data is 'ssh-ed25519-cert-v01@openssh.com'",
    ) as info:
        parse_user_key(f"ssh-ed25519 {blob}")

    assert info.value.code == "key_type_mismatch"


def test_ca_key_rejected(ca_keys):
    ca = ca_keys("ed25519")

    for given in (ca, ca.public_key, ca.public_line("ca")):
        with pytest.raises(InvalidPublicKey, match=rf"this is the CA's own public key \({re.escape(ca.fingerprint)}\)") as info:
            parse_user_key(ca.public_line(), ca_public_keys=[given])
        assert info.value.code == "ca_key"


def test_other_ca_key_does_not_block(ca_keys, user_keys):
    key = parse_user_key(public_text(user_keys("ed25519")), ca_public_keys=[ca_keys("ed25519"), ca_keys("rsa")])

    assert key.key_type == "ssh-ed25519"


def test_revoked_key_rejected(user_keys):
    text = public_text(user_keys("ecdsa-p256"))
    fingerprint = parse_user_key(text).fingerprint

    with pytest.raises(
        InvalidPublicKey, match=rf"key {re.escape(fingerprint)} is on the revoked-key list and cannot be signed"
    ) as info:
        parse_user_key(text, revoked_fingerprints={fingerprint, "SHA256:other"})

    assert info.value.code == "revoked_key"


def test_line_too_long():
    text = "ssh-ed25519 " + "A" * MAX_LINE_BYTES

    with pytest.raises(
        InvalidPublicKey,
        match=r"the key line is 16396 bytes long, more than the limit of 16384 bytes \(16 KiB\)",
    ) as info:
        parse_user_key(text)

    assert info.value.code == "too_large"
    assert len(repr(info.value.value)) < 100


def test_line_size_checked_in_bytes(user_keys):
    line = " ".join(public_text(user_keys("ed25519")).split()[:2])
    padding = MAX_LINE_BYTES - len(line) - 1

    assert parse_user_key(f"{line} {'x' * padding}").key_type == "ssh-ed25519"
    with pytest.raises(InvalidPublicKey, match=r"more than the limit of 16384 bytes"):
        parse_user_key(f"{line} {'é' * padding}")


@pytest.fixture
def ed25519_line(user_keys) -> str:
    return " ".join(public_text(user_keys("ed25519")).split()[:2])


def _malformed_cases():
    # (name, function line -> bad text, code, message)
    return [
        ("empty", lambda line: "", "empty", r"no key given"),
        ("blank", lambda line: " \n", "empty", r"no key given"),
        ("type only", lambda line: "ssh-ed25519", "invalid_format", r"expected '<type> <base64 key data> \[comment\]'"),
        ("two lines", lambda line: f"{line}\n{line}", "invalid_format", r"give exactly one key line"),
        ("options prefix", lambda line: f'command="id" {line}', "unsupported_key_type", r"unknown key type 'command=\"id\"'"),
        ("unknown type", lambda line: "ssh-foo " + line.split()[1], "unsupported_key_type", r"unknown key type 'ssh-foo'; accepted types are ssh-ed25519"),
        ("bad base64 char", lambda line: line + "!", "invalid_base64", r"the key data is not valid base64"),
        ("truncated base64", lambda line: line[:-3], "invalid_base64", r"the key data is not valid base64"),
        ("base64 extra padding", lambda line: line + "==", "invalid_base64", r"not valid base64"),
        ("non-ascii base64", lambda line: line + "é", "invalid_base64", r"not valid base64"),
        ("type mismatch", lambda line: "ecdsa-sha2-nistp256 " + line.split()[1], "key_type_mismatch", r"the line says ecdsa-sha2-nistp256 but the key data is 'ssh-ed25519'"),
        ("trailing bytes", lambda line: key_line(public_blob(line) + b"junk"), "trailing_data", r"the key data has trailing bytes after the key"),
        ("trailing field", lambda line: key_line(public_blob(line) + ssh_string(b"x")), "trailing_data", r"trailing bytes"),
        ("trailing zero length", lambda line: key_line(public_blob(line) + b"\0\0\0\0"), "trailing_data", r"trailing bytes"),
        ("missing key field", lambda line: key_line(ssh_string(b"ssh-ed25519")), "invalid_key_data", r"the key data is truncated or corrupt"),
        ("truncated blob", lambda line: key_line(public_blob(line)[:-1], "ssh-ed25519"), "invalid_key_data", r"truncated or corrupt"),
        ("short ed25519 key", lambda line: key_line(ssh_string(b"ssh-ed25519") + ssh_string(b"\1" * 31)), "invalid_key_data", r"the ssh-ed25519 key data is corrupt"),
        ("control char in comment", lambda line: f"{line} bad\x00comment", "invalid_format", r"the key comment contains control or non-ASCII characters"),
    ]


@pytest.mark.parametrize(("name", "mutate", "code", "message"), _malformed_cases(), ids=[c[0] for c in _malformed_cases()])
def test_malformed_rejected(ed25519_line, name, mutate, code, message):
    with pytest.raises(InvalidPublicKey, match=message) as info:
        parse_user_key(mutate(ed25519_line))

    assert info.value.code == code
    assert info.value.field == "public_key"
    assert str(info.value).startswith("invalid public key: ")


def test_base64_non_zero_padding_bits_rejected(user_keys):
    line = " ".join(public_text(user_keys("ecdsa-p256")).split()[:2])
    assert line.endswith("=")
    assert not line.endswith("==")
    # The character before '=' carries 2 unused bits; set one of them.
    last = line[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = alphabet[alphabet.index(last) | 1]
    assert bumped != last
    mutated = line[:-2] + bumped + "="

    assert base64.b64decode(mutated.split()[1]) == public_blob(line)
    with pytest.raises(InvalidPublicKey, match=r"the key data is not valid base64"):
        parse_user_key(mutated)


def test_ecdsa_point_off_curve_rejected():
    blob = ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp256") + ssh_string(b"\x04" + b"\x01" * 64)

    with pytest.raises(InvalidPublicKey, match=r"the ecdsa-sha2-nistp256 key data is corrupt"):
        parse_user_key(key_line(blob))


def test_ecdsa_curve_mismatch_rejected():
    point = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    blob = ssh_string(b"ecdsa-sha2-nistp256") + ssh_string(b"nistp384") + ssh_string(point)

    with pytest.raises(InvalidPublicKey, match=r"the ecdsa-sha2-nistp256 key data is corrupt"):
        parse_user_key(key_line(blob))


@pytest.mark.parametrize("cut", [1, 5, 10, 20, 30, 40, 50])
def test_every_truncation_rejected(ed25519_line, cut):
    blob = public_blob(ed25519_line)

    with pytest.raises(InvalidPublicKey):
        parse_user_key(key_line(blob[:-cut], "ssh-ed25519"))


def test_not_a_string():
    with pytest.raises(InvalidPublicKey, match=r"expected the key line as text"):
        parse_user_key(b"ssh-ed25519 AAAA")
