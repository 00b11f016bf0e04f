import os
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ca.certs import CertificateSpec, sign_certificate
from ca.errors import KRLError
from ca.krl import KRL_MAGIC, build_krl, write_krl
from ca.userkeys import parse_user_key

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def issue(ca, key_path: Path, serial: int, out: Path) -> Path:
    key = parse_user_key(Path(f"{key_path}.pub").read_text())
    issued = sign_certificate(
        ca,
        CertificateSpec(
            public_key=key,
            serial=serial,
            key_id=f"user=alice request=1 serial={serial}",
            principals=("root@db1.example",),
            valid_after=NOW,
            valid_before=NOW + timedelta(hours=1),
        ),
        max_validity=timedelta(hours=8),
    )
    out.write_text(issued.line + "\n")
    return out


def is_revoked(krl: Path, path: Path) -> bool:
    """Ask ssh-keygen -Q whether the KRL revokes a key or certificate."""
    result = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(path)], capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    if result.returncode == 1:
        assert "REVOKED" in result.stdout
    return result.returncode == 1


def test_empty_krl_is_valid(tmp_path, ca_keys, user_keys):
    data = build_krl(serials=[], public_keys=[], ca_public_keys=[])
    krl = tmp_path / "revoked.krl"
    write_krl(krl, data)

    assert data.startswith(KRL_MAGIC)
    certificate = issue(ca_keys("ed25519"), user_keys("ed25519"), 1, tmp_path / "c-cert.pub")
    assert not is_revoked(krl, certificate)
    assert not is_revoked(krl, Path(f"{user_keys('ed25519')}.pub"))


def test_serials_revoked_only_under_their_ca(tmp_path, ca_keys, user_keys):
    ca = ca_keys("ed25519")
    other_ca = ca_keys("ecdsa-p256")
    key = user_keys("ed25519")
    revoked = issue(ca, key, 5, tmp_path / "revoked-cert.pub")
    kept = issue(ca, key, 6, tmp_path / "kept-cert.pub")
    same_serial_other_ca = issue(other_ca, key, 5, tmp_path / "other-cert.pub")

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=[5, 7], public_keys=[], ca_public_keys=[ca.public_line()]))

    assert is_revoked(krl, revoked)
    assert not is_revoked(krl, kept)
    assert not is_revoked(krl, same_serial_other_ca)


def test_serials_revoked_under_every_trusted_ca(tmp_path, ca_keys, user_keys):
    # During a key rotation both CA keys are trusted, and a serial is revoked under each.
    old_ca, new_ca = ca_keys("rsa"), ca_keys("ed25519")
    key = user_keys("ecdsa-p256")
    old_cert = issue(old_ca, key, 10, tmp_path / "old-cert.pub")
    new_cert = issue(new_ca, key, 11, tmp_path / "new-cert.pub")
    unrevoked = issue(new_ca, key, 12, tmp_path / "unrevoked-cert.pub")

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=[10, 11], public_keys=[], ca_public_keys=[old_ca, new_ca.public_line("new")]))

    assert is_revoked(krl, old_cert)
    assert is_revoked(krl, new_cert)
    assert not is_revoked(krl, unrevoked)


def test_public_keys_revoked(tmp_path, ca_keys, user_keys):
    revoked_key, kept_key = user_keys("rsa-2048"), user_keys("ed25519")
    revoked_line = Path(f"{revoked_key}.pub").read_text()
    ca = ca_keys("ed25519")
    # A certificate for a revoked key is revoked too, whatever its serial.
    revoked_cert = issue(ca, revoked_key, 20, tmp_path / "rk-cert.pub")

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=[], public_keys=[revoked_line], ca_public_keys=[ca.public_line()]))

    assert is_revoked(krl, Path(f"{revoked_key}.pub"))
    assert is_revoked(krl, revoked_cert)
    assert not is_revoked(krl, Path(f"{kept_key}.pub"))


def test_keys_and_serials_together(tmp_path, ca_keys, user_keys):
    ca = ca_keys("ecdsa-p384")
    revoked_line = Path(f"{user_keys('ecdsa-p521')}.pub").read_text()
    cert = issue(ca, user_keys("ed25519"), 30, tmp_path / "c-cert.pub")

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=[30, 30, 31], public_keys=[revoked_line], ca_public_keys=[ca.public_line()]))

    assert is_revoked(krl, cert)
    assert is_revoked(krl, Path(f"{user_keys('ecdsa-p521')}.pub"))


def test_many_serials(tmp_path, ca_keys, user_keys):
    ca = ca_keys("ed25519")
    last = issue(ca, user_keys("ed25519"), 5000, tmp_path / "last-cert.pub")

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=range(1, 5001, 3), public_keys=[], ca_public_keys=[ca.public_line()]))

    assert not is_revoked(krl, last)
    write_krl(krl, build_krl(serials=range(2, 5001, 3), public_keys=[], ca_public_keys=[ca.public_line()]))
    assert is_revoked(krl, last)


@pytest.mark.parametrize("serial", [0, -1, 2**64, True, "5", 1.0])
def test_invalid_serial_rejected(ca_keys, serial):
    with pytest.raises(KRLError, match=r"invalid serial .* for the KRL: a serial is an integer from 1 to 2\*\*64 - 1") as info:
        build_krl(serials=[1, serial], public_keys=[], ca_public_keys=[ca_keys("ed25519").public_line()])

    assert info.value.code == "invalid_serial"
    assert info.value.field == "serials"


def test_key_ids_revoked_under_their_ca(tmp_path, ca_keys, user_keys):
    ca = ca_keys("ed25519")
    other_ca = ca_keys("ecdsa-p256")
    key = user_keys("ed25519")
    revoked = issue(ca, key, 40, tmp_path / "revoked-cert.pub")
    kept = issue(ca, key, 41, tmp_path / "kept-cert.pub")
    same_id_other_ca = issue(other_ca, key, 40, tmp_path / "other-cert.pub")

    krl = tmp_path / "revoked.krl"
    data = build_krl(
        serials=[], key_ids=["user=alice request=1 serial=40"], public_keys=[], ca_public_keys=[ca.public_line()]
    )
    write_krl(krl, data)

    assert is_revoked(krl, revoked)
    assert not is_revoked(krl, kept)
    assert not is_revoked(krl, same_id_other_ca)


def test_dense_serials_over_bitmap_limit_rejected(ca_keys):
    # OpenSSH 9.2's ssh-keygen -k encodes these serials as a bitmap wider
    # than its own reader accepts; such a KRL would make sshd refuse every key.
    ca = ca_keys("ed25519")

    with pytest.raises(KRLError, match=r"ssh-keygen -Q cannot read the KRL that ssh-keygen -k wrote") as info:
        build_krl(serials=range(3, 17000, 3), public_keys=[], ca_public_keys=[ca.public_line()])

    assert info.value.code == "unreadable_krl"


def test_many_key_ids_stay_readable(tmp_path, ca_keys, user_keys):
    ca = ca_keys("ed25519")
    last = issue(ca, user_keys("ed25519"), 16998, tmp_path / "last-cert.pub")
    key_ids = [f"user=alice request=1 serial={n}" for n in range(3, 17000, 3)]

    krl = tmp_path / "revoked.krl"
    write_krl(krl, build_krl(serials=[], key_ids=key_ids, public_keys=[], ca_public_keys=[ca.public_line()]))

    assert is_revoked(krl, last)


@pytest.mark.parametrize("key_id", ["", "line\nbreak", "caf\u00e9", 7])
def test_invalid_key_id_rejected(ca_keys, key_id):
    with pytest.raises(KRLError, match=r"invalid key ID .* for the KRL: expected non-empty printable ASCII") as info:
        build_krl(serials=[], key_ids=[key_id], public_keys=[], ca_public_keys=[ca_keys("ed25519").public_line()])

    assert info.value.code == "invalid_key_id"


def test_serials_need_ca_keys():
    with pytest.raises(KRLError, match=r"cannot revoke serials or key IDs without the CA public keys") as info:
        build_krl(serials=[1], public_keys=[], ca_public_keys=[])

    assert info.value.code == "missing_ca_keys"


@pytest.mark.parametrize("bad", ["", "ssh-ed25519", "ssh-ed25519 !!!", "not a key at all"])
def test_invalid_public_key_rejected(bad):
    with pytest.raises(KRLError, match=r"invalid public_keys entry .*: expected one OpenSSH public-key line") as info:
        build_krl(serials=[], public_keys=[bad], ca_public_keys=[])

    assert info.value.code == "invalid_public_key"


def test_certificate_as_revoked_key_rejected(tmp_path, ca_keys, user_keys):
    cert_line = issue(ca_keys("ed25519"), user_keys("ed25519"), 3, tmp_path / "c-cert.pub").read_text()

    with pytest.raises(KRLError, match=r"invalid public_keys entry"):
        build_krl(serials=[], public_keys=[cert_line], ca_public_keys=[])


def test_invalid_ca_key_rejected():
    with pytest.raises(KRLError, match=r"invalid ca_public_keys entry 'garbage'"):
        build_krl(serials=[1], public_keys=[], ca_public_keys=["garbage"])


def test_missing_ssh_keygen():
    with pytest.raises(KRLError, match=r"cannot run /nonexistent/ssh-keygen: not found") as info:
        build_krl(serials=[], public_keys=[], ca_public_keys=[], ssh_keygen="/nonexistent/ssh-keygen")

    assert info.value.code == "ssh_keygen_missing"


def test_failing_ssh_keygen():
    with pytest.raises(KRLError, match=r"false -k failed with exit status 1") as info:
        build_krl(serials=[], public_keys=[], ca_public_keys=[], ssh_keygen="false")

    assert info.value.code == "ssh_keygen_failed"


def test_write_replaces_file(tmp_path):
    krl = tmp_path / "revoked.krl"
    krl.write_bytes(b"old")
    data = build_krl(serials=[], public_keys=[], ca_public_keys=[])

    write_krl(krl, data)

    assert krl.read_bytes() == data
    assert krl.stat().st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["revoked.krl"]


def test_write_rejects_non_krl(tmp_path):
    krl = tmp_path / "revoked.krl"
    krl.write_bytes(b"old")

    with pytest.raises(KRLError, match=r"refusing to write .*revoked.krl: the data is not an OpenSSH KRL"):
        write_krl(krl, b"<html>oops</html>")

    assert krl.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["revoked.krl"]


def test_write_is_atomic_for_readers(tmp_path, ca_keys):
    # A reader polling the file while it is replaced must always see a whole KRL.
    krl = tmp_path / "revoked.krl"
    small = build_krl(serials=[], public_keys=[], ca_public_keys=[])
    key_ids = [f"user=alice request=1 serial={n}" for n in range(1, 20000, 2)]
    large = build_krl(serials=[], key_ids=key_ids, public_keys=[], ca_public_keys=[ca_keys("ed25519").public_line()])
    write_krl(krl, small)
    seen = set()
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            seen.add(krl.read_bytes())

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for index in range(200):
            write_krl(krl, large if index % 2 else small)
    finally:
        stop.set()
        reader.join()

    assert seen <= {small, large}
    assert sorted(os.listdir(tmp_path)) == ["revoked.krl"]
