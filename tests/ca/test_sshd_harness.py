"""The sshd test harness itself: caller-provided configuration, start failures, clean stop."""

import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ca.certs import CertificateSpec, sign_certificate
from ca.userkeys import parse_user_key
from tests.support.sshd import Sshd, base_config_lines, current_login

pytestmark = [pytest.mark.sshd]

LOGIN = current_login()


def write_certificate(ca, key_path: Path, principal: str, out: Path) -> Path:
    now = datetime.now(timezone.utc)
    issued = sign_certificate(
        ca,
        CertificateSpec(
            public_key=parse_user_key(Path(f"{key_path}.pub").read_text()),
            serial=77,
            key_id="user=alice request=1 serial=77",
            principals=(principal,),
            valid_after=now - timedelta(minutes=1),
            valid_before=now + timedelta(minutes=10),
        ),
        max_validity=timedelta(hours=1),
    )
    out.write_text(issued.line + "\n")
    return out


def test_caller_config_with_include(sshd_factory, secure_dir, ca_keys, user_keys, tmp_path):
    ca = ca_keys("ed25519")
    (secure_dir / "ca.pub").write_text(ca.public_line() + "\n")
    principals_dir = secure_dir / "principals"
    principals_dir.mkdir(mode=0o755)
    (principals_dir / LOGIN).write_text(f"{LOGIN}@web1.example\n")
    drop_in = secure_dir / "sshca.conf"
    drop_in.write_text(
        f"TrustedUserCAKeys {secure_dir / 'ca.pub'}\n"
        f"AuthorizedPrincipalsFile {principals_dir}/%u\n"
    )
    config = secure_dir / "sshd_config"
    config.write_text("\n".join([*base_config_lines(), f"Include {drop_in}", ""]))
    key = user_keys("ed25519")
    good = write_certificate(ca, key, f"{LOGIN}@web1.example", tmp_path / "good-cert.pub")
    other = write_certificate(ca, key, f"{LOGIN}@web2.example", tmp_path / "other-cert.pub")

    run_dir = secure_dir / "run"
    run_dir.mkdir(mode=0o700)
    sshd = sshd_factory(run_dir, config_path=config)

    assert sshd.ssh(key, good, "echo included").stdout == "included\n"
    assert sshd.ssh(key, other, "true").returncode == 255
    assert sshd.paramiko_exec(key, good, "echo included")[1] == "included\n"


def test_invalid_config_fails_with_log(secure_dir):
    config = secure_dir / "sshd_config"
    config.write_text("NoSuchOption yes\n")
    sshd = Sshd(secure_dir, config_path=config)

    with pytest.raises(RuntimeError, match=r"(?s)sshd did not start: sshd exited with status .*NoSuchOption"):
        sshd.start()

    sshd.stop()


def test_stop_closes_port_and_removes_dir():
    sshd = Sshd().start()
    port, root_dir = sshd.port, sshd.root_dir
    assert root_dir.is_dir()

    sshd.stop()

    assert not root_dir.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_generated_dir_passes_strict_modes():
    with Sshd() as sshd:
        mode = sshd.root_dir.stat().st_mode & 0o777

        assert mode & 0o022 == 0
        assert "StrictModes yes" in sshd.config_path.read_text()
