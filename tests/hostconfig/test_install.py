import json
import os
import stat

import pytest

from hostconfig.install import InstallError, read_manifest
from tests.hostconfig.conftest import run_cli, write_ca_keys, write_main_config

INVENTORY = """\
[[hosts]]
name = "db1"
groups = ["prod-db"]
logins = ["deploy", "postgres"]
"""

pytestmark = pytest.mark.sshd


@pytest.fixture
def rendered(tmp_path, secure_dir, ca_key):
    """Render db1 for a host tree under ``secure_dir`` and write the host's main sshd_config."""
    secure_dir.chmod(0o755)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    ca_keys = write_ca_keys(tmp_path / "ca.pub", ca_key)
    out = tmp_path / "out"

    result = run_cli("render", "db1", "--inventory", inventory, "--ca-keys", ca_keys,
                     "--server", "http://127.0.0.1:9", "--prefix", secure_dir, "--out", out)

    assert result.exit_code == 0, result.output
    write_main_config(secure_dir)
    return out


def install(out, root):
    return run_cli("install", out, "--sshd-config", root / "etc/ssh/sshd_config")


def test_install_places_files(rendered, secure_dir):
    result = install(rendered, secure_dir)

    assert result.exit_code == 0, result.output
    ssh = secure_dir / "etc/ssh"
    expected = {
        ssh / "sshd_config.d/50-sshca.conf": 0o644,
        ssh / "sshca/user_ca.pub": 0o644,
        ssh / "sshca/revoked.krl": 0o644,
        ssh / "sshca/krl-probe.pub": 0o644,
        ssh / "sshca/auth_principals/deploy": 0o644,
        ssh / "sshca/auth_principals/postgres": 0o644,
        secure_dir / "usr/local/sbin/sshca-krl-sync": 0o755,
        secure_dir / "etc/systemd/system/sshca-krl-sync.service": 0o644,
        secure_dir / "etc/systemd/system/sshca-krl-sync.timer": 0o644,
    }
    for path, mode in expected.items():
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == mode, path
        assert (info.st_uid, info.st_gid) == (0, 0), path
    for directory in (ssh / "sshca", ssh / "sshca/auth_principals"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert (ssh / "sshca/auth_principals/deploy").read_text() == "deploy@db1\ndeploy@group:prod-db\n"
    assert "sshd accepts the configuration" in result.output


def test_install_same_content_as_rendered(rendered, secure_dir):
    install(rendered, secure_dir)

    for item in read_manifest(rendered)["files"]:
        installed = (secure_dir / item["target"].removeprefix(f"{secure_dir}/")).read_bytes()
        assert installed == (rendered / item["source"]).read_bytes(), item["source"]


def test_install_keeps_newer_krl(rendered, secure_dir):
    install(rendered, secure_dir)
    krl = secure_dir / "etc/ssh/sshca/revoked.krl"
    krl.write_bytes(b"synced KRL")

    result = install(rendered, secure_dir)

    assert result.exit_code == 0, result.output
    assert krl.read_bytes() == b"synced KRL"
    assert f"kept the existing {krl}" in result.output


def test_install_removes_dropped_login(rendered, secure_dir, tmp_path):
    install(rendered, secure_dir)
    stray = secure_dir / "etc/ssh/sshca/auth_principals/olduser"
    stray.write_text("olduser@db1\n")

    result = install(rendered, secure_dir)

    assert result.exit_code == 0, result.output
    assert not stray.exists()
    assert f"removed {stray}" in result.output
    assert (secure_dir / "etc/ssh/sshca/auth_principals/deploy").exists()


def test_install_replaces_group_writable_modes(rendered, secure_dir):
    install(rendered, secure_dir)
    principals = secure_dir / "etc/ssh/sshca/auth_principals/deploy"
    os.chmod(principals, 0o666)
    os.chmod(principals.parent, 0o777)

    install(rendered, secure_dir)

    assert stat.S_IMODE(principals.stat().st_mode) == 0o644
    assert stat.S_IMODE(principals.parent.stat().st_mode) == 0o755


def test_install_missing_include(rendered, secure_dir):
    config = secure_dir / "etc/ssh/sshd_config"
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith("Include")) + "\n")

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert f"{config} does not include {secure_dir}/etc/ssh/sshd_config.d/50-sshca.conf" \
        in result.output
    assert f"`Include {secure_dir}/etc/ssh/sshd_config.d/*.conf`" in result.output


def test_install_include_of_other_directory(rendered, secure_dir):
    config = secure_dir / "etc/ssh/sshd_config"
    config.write_text(config.read_text().replace("sshd_config.d/*.conf", "conf.d/*.conf"))

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert "does not include" in result.output


def test_install_detects_override(rendered, secure_dir):
    # sshd keeps the first value: a setting before the Include wins over the drop-in.
    config = secure_dir / "etc/ssh/sshd_config"
    config.write_text("AuthorizedPrincipalsFile none\n" + config.read_text())

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert "sshd uses AuthorizedPrincipalsFile 'none'" in result.output


def test_install_detects_earlier_dropin(rendered, secure_dir):
    earlier = secure_dir / "etc/ssh/sshd_config.d/10-local.conf"
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text("LogLevel INFO\n")

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert "sshd uses LogLevel 'INFO'" in result.output


def test_install_rejects_unsearchable_parent(rendered, secure_dir):
    # sshd reads the principals file as the login, which cannot pass a 0700 directory.
    secure_dir.chmod(0o700)

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert f"sshd cannot use the principals files below {secure_dir} (owner uid 0, mode 0700)" \
        in result.output
    assert f"chmod 755 {secure_dir}" in result.output


def test_install_reports_sshd_t_failure(rendered, secure_dir):
    config = secure_dir / "etc/ssh/sshd_config"
    config.write_text(config.read_text() + "NoSuchKeyword yes\n")

    result = install(rendered, secure_dir)

    assert result.exit_code == 1
    assert "sshd -t -f" in result.output
    assert "NoSuchKeyword" in result.output


def test_install_missing_sshd(rendered, secure_dir):
    result = run_cli("install", rendered, "--sshd-config", secure_dir / "etc/ssh/sshd_config",
                     "--sshd", "/nonexistent/sshd")

    assert result.exit_code == 1
    assert "sshd not found at /nonexistent/sshd" in result.output


def test_install_into_image_root(rendered, secure_dir, tmp_path):
    # --root places files below an image's mount point; the paths inside
    # the files stay the host's own.
    image = tmp_path / "image"
    sshd_dir = secure_dir / "etc/ssh"
    image_config = image / str(sshd_dir).lstrip("/") / "sshd_config"
    image_config.parent.mkdir(parents=True)
    image_config.write_text(f"Include {sshd_dir}/sshd_config.d/*.conf\n")

    result = run_cli("install", rendered, "--root", image)

    assert result.exit_code == 0, result.output
    dropin = image / str(sshd_dir).lstrip("/") / "sshd_config.d/50-sshca.conf"
    assert f"TrustedUserCAKeys {sshd_dir}/sshca/user_ca.pub" in dropin.read_text()
    assert "sshd -t checked only the drop-in" in result.output
    assert not (sshd_dir / "sshca").exists()


def test_install_root_equal_to_prefix(rendered, secure_dir):
    result = run_cli("install", rendered, "--root", secure_dir)

    assert result.exit_code == 1
    assert f"the rendered paths already start with {secure_dir}" in result.output
    assert not (secure_dir / "etc/ssh/sshca").exists()


def test_install_without_manifest(tmp_path):
    result = run_cli("install", tmp_path)

    assert result.exit_code == 1
    assert f"{tmp_path}/manifest.json not found" in result.output


@pytest.mark.parametrize("target", ["relative/file", "/etc/ssh/../../root/.ssh/authorized_keys"])
def test_manifest_with_unsafe_target(rendered, target):
    manifest = json.loads((rendered / "manifest.json").read_text())
    manifest["files"][0]["target"] = target
    (rendered / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(InstallError, match="invalid target"):
        read_manifest(rendered)


def test_manifest_with_unsafe_source(rendered):
    manifest = json.loads((rendered / "manifest.json").read_text())
    manifest["files"][0]["source"] = "../../etc/shadow"
    (rendered / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(InstallError, match="invalid source"):
        read_manifest(rendered)
