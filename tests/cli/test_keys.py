"""Per-grant key files, certificate checks and the cleanup of ended grants."""

import stat
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sshca.cli import keys
from sshca.cli.errors import CommandError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return tmp_path


def make_certificate(public_line: str, valid_before: datetime, principals=("deploy@db1",)) -> str:
    """Sign ``public_line`` with a throwaway CA and return the certificate line."""
    ca = Ed25519PrivateKey.generate()
    builder = (
        serialization.SSHCertificateBuilder()
        .public_key(serialization.load_ssh_public_key(public_line.encode()))
        .serial(7)
        .type(serialization.SSHCertificateType.USER)
        .key_id(b"user=alice request=1 serial=7")
        .valid_after(int((valid_before - timedelta(hours=1)).timestamp()))
        .valid_before(int(valid_before.timestamp()))
    )
    if principals:
        builder = builder.valid_principals([p.encode() for p in principals])
    else:
        builder = builder.valid_for_all_principals()
    return builder.sign(ca).public_bytes().decode()


def write_grant(request_id: int, valid_before: datetime):
    path, public_line, _ = keys.create_grant_key(request_id, comment="test")
    keys.write_file(keys.cert_path_for(path), make_certificate(public_line, valid_before).encode(),
                    mode=0o644)
    return path


def test_grant_key_files_and_modes(home):
    path, public_line, made = keys.create_grant_key(12, comment="sshca-request-12")

    assert made is True

    assert path == home / ".ssh" / "sshca" / "req-12"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.public_path_for(path).stat().st_mode) == 0o644
    assert public_line.startswith("ssh-ed25519 ")
    assert public_line.endswith(" sshca-request-12")
    private_key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    assert isinstance(private_key, type(Ed25519PrivateKey.generate()))
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_grant_key_reused_for_same_request(home):
    first_path, first_line, _ = keys.create_grant_key(3, comment="c")
    second_path, second_line, second_made = keys.create_grant_key(3, comment="c")
    third_path, third_line, _ = keys.create_grant_key(4, comment="c")

    assert first_path == second_path
    assert first_line == second_line
    assert second_made is False
    assert third_line != first_line


def test_key_dir_mode_tightened(home):
    (home / ".ssh" / "sshca").mkdir(parents=True, mode=0o755)
    (home / ".ssh" / "sshca").chmod(0o755)

    keys.create_grant_key(1, comment="c")

    assert stat.S_IMODE((home / ".ssh" / "sshca").stat().st_mode) == 0o700


def test_read_public_key_from_pub_file(home):
    path, line, _ = keys.create_grant_key(5, comment="c")
    assert keys.read_public_key(path) == line


def test_read_public_key_derived_from_private(home):
    path, line, _ = keys.create_grant_key(5, comment="c")
    keys.public_path_for(path).unlink()

    assert keys.read_public_key(path) == " ".join(line.split()[:2])


def test_read_public_key_missing_file(home):
    with pytest.raises(CommandError, match=r"key file .*nothere not found; check the --key path"):
        keys.read_public_key(home / "nothere")


def test_read_public_key_encrypted_without_pub(home):
    path = home / "id_encrypted"
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(b"passphrase"),
    ))

    with pytest.raises(CommandError, match=r"ssh-keygen -y -f .*id_encrypted > .*id_encrypted.pub"):
        keys.read_public_key(path)


def test_certificate_valid_before(home):
    path = write_grant(1, NOW)
    assert keys.certificate_valid_before(keys.cert_path_for(path)) == NOW


def test_certificate_valid_before_unreadable(home):
    bad = home / "bad-cert.pub"
    bad.write_text("not a certificate\n")
    assert keys.certificate_valid_before(bad) is None


def test_cleanup_removes_only_ended_grants(home):
    ended = write_grant(1, NOW - timedelta(seconds=1))
    current = write_grant(2, NOW + timedelta(hours=1))
    kept = write_grant(3, NOW - timedelta(hours=1))

    removed = keys.remove_expired_keys(NOW, keep=3)

    assert [item.request_id for item in removed] == [1]
    assert set(removed[0].paths) == {ended, keys.public_path_for(ended), keys.cert_path_for(ended)}
    assert not ended.exists()
    assert not keys.cert_path_for(ended).exists()
    assert current.exists()
    assert keys.cert_path_for(current).exists()
    assert kept.exists()
    assert keys.cert_path_for(kept).exists()


def test_cleanup_leaves_foreign_files(home):
    directory = keys.ensure_key_dir()
    key_path, public_line, _ = keys.create_grant_key(9, comment="c")
    ended_certificate = make_certificate(public_line, NOW - timedelta(days=1))
    foreign = {
        "id_ed25519-cert.pub": ended_certificate,
        "req-9x-cert.pub": ended_certificate,
        "req-10-cert.pub": "garbage\n",
    }
    for name, text in foreign.items():
        (directory / name).write_text(text)
    (directory / "req-10").write_text("key without a readable certificate\n")

    removed = keys.remove_expired_keys(NOW)

    assert removed == []
    for name in [*foreign, "req-10", "req-9", "req-9.pub"]:
        assert (directory / name).exists(), name


def test_cleanup_without_directory(home):
    assert keys.remove_expired_keys(NOW) == []


def test_certificate_must_match_key(home):
    _, ours, _ = keys.create_grant_key(1, comment="c")
    _, other, _ = keys.create_grant_key(2, comment="c")

    keys.check_certificate_matches(make_certificate(ours, NOW), ours)
    with pytest.raises(CommandError, match="certificate for a different key"):
        keys.check_certificate_matches(make_certificate(other, NOW), ours)


def test_certificate_without_principals_rejected(home):
    _, ours, _ = keys.create_grant_key(1, comment="c")

    with pytest.raises(CommandError, match="without principals"):
        keys.check_certificate_matches(make_certificate(ours, NOW, principals=()), ours)


def test_plain_key_instead_of_certificate_rejected(home):
    _, ours, _ = keys.create_grant_key(1, comment="c")

    with pytest.raises(CommandError, match="public key instead of a certificate"):
        keys.check_certificate_matches(ours, ours)


def test_agent_missing_gives_note(home):
    path, _, _ = keys.create_grant_key(1, comment="c")

    result = keys.add_to_agent(path, NOW + timedelta(hours=1), NOW)

    assert result.added is False
    assert "SSH_AUTH_SOCK is not set" in result.note


def test_agent_lifetime_is_time_left(home, agent, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.socket))
    path = write_grant(1, NOW + timedelta(seconds=3))

    result = keys.add_to_agent(path, NOW + timedelta(seconds=3), NOW)

    assert result.added is True, result.note
    assert agent.lifetimes() == {"ssh-ed25519": 3, "ssh-ed25519-cert-v01@openssh.com": 3}
    assert "ED25519-CERT" in agent.listed()


def test_agent_drops_key_when_window_ends(home, agent, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.socket))
    now = datetime.now(timezone.utc)
    path = write_grant(1, now + timedelta(seconds=2))

    keys.add_to_agent(path, now + timedelta(seconds=2), now)
    assert "ED25519-CERT" in agent.listed()

    deadline = time.monotonic() + 15
    while agent.listed() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert agent.listed() == ""


def test_agent_not_used_after_window(home, agent, monkeypatch):
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.socket))
    path = write_grant(1, NOW)

    result = keys.add_to_agent(path, NOW, NOW)

    assert result.added is False
    assert agent.listed() == ""
