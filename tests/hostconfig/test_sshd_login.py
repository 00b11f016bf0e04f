"""Real sshd hosts configured only by `hostconfig render` and `install`, real ssh logins.

Three hosts: db1 and db2 in group prod-db, web1 in group web. Every host
lists login root; db1 also lists nobody. A certificate opens a login on a
host only when its principals match that host's rendered principals file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from ca.keys import CAKey, generate_ca_key
from tests.hostconfig.conftest import make_identity, run_cli, sign, write_ca_keys, write_main_config
from tests.support.sshd import make_secure_dir

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

INVENTORY = """\
[[hosts]]
name = "db1"
groups = ["prod-db"]
logins = ["root", "nobody"]

[[hosts]]
name = "db2"
groups = ["prod-db"]
logins = ["root"]

[[hosts]]
name = "web1"
groups = ["web"]
logins = ["root"]
"""

PERMISSION_DENIED = "Permission denied (publickey)"


@pytest.fixture(scope="module")
def host_trees():
    base = make_secure_dir("sshca-hostconfig-")
    # sshd opens the principals file as the login, so every directory
    # above it must be searchable by others, as /etc/ssh is.
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def hosts(host_trees, sshd_module_factory, ca_key, tmp_path_factory):
    """Start one sshd per inventory host, each configured by render and install alone."""
    work = tmp_path_factory.mktemp("hostconfig-login")
    inventory = work / "inventory.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    ca_keys = write_ca_keys(work / "ca.pub", ca_key)

    started = {}
    for name in ("db1", "db2", "web1"):
        root = host_trees / name
        config = write_main_config(root)
        out = work / "out" / name

        rendered = run_cli("render", name, "--inventory", inventory, "--ca-keys", ca_keys,
                           "--server", "http://127.0.0.1:9", "--prefix", root, "--out", out)
        assert rendered.exit_code == 0, rendered.output
        installed = run_cli("install", out, "--sshd-config", config)
        assert installed.exit_code == 0, installed.output

        started[name] = sshd_module_factory(root, config_path=config)
    return started


def ssh(host, identity, login, command="true"):
    return host.ssh(identity.key_path, identity.cert_path, command, login)


@pytest.fixture(scope="module")
def identities(tmp_path_factory):
    directory = tmp_path_factory.mktemp("hostconfig-keys")
    return directory


def test_approved_login_on_approved_host(hosts, ca_key, identities):
    identity = make_identity(identities, "db1-root")
    sign(ca_key, identity, ["root@db1"], serial=101)

    result = ssh(hosts["db1"], identity, "root", "echo logged-in")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "logged-in"


def test_login_logs_key_id_and_serial(hosts, ca_key, identities):
    identity = make_identity(identities, "db1-root-log")
    sign(ca_key, identity, ["root@db1"], serial=102)

    result = ssh(hosts["db1"], identity, "root")

    assert result.returncode == 0, result.stderr
    log = hosts["db1"].log_text()
    assert 'Accepted certificate ID "user=tester request=102 serial=102" (serial 102)' in log


def test_other_login_same_host_refused(hosts, ca_key, identities):
    identity = make_identity(identities, "db1-root-as-nobody")
    sign(ca_key, identity, ["root@db1"], serial=103)

    result = ssh(hosts["db1"], identity, "nobody")

    assert result.returncode == 255
    assert PERMISSION_DENIED in result.stderr


def test_other_host_refused(hosts, ca_key, identities):
    identity = make_identity(identities, "db1-root-on-db2")
    sign(ca_key, identity, ["root@db1"], serial=104)

    result = ssh(hosts["db2"], identity, "root")

    assert result.returncode == 255
    assert PERMISSION_DENIED in result.stderr


def test_group_grant_opens_every_group_host(hosts, ca_key, identities):
    identity = make_identity(identities, "prod-db-root")
    sign(ca_key, identity, ["root@group:prod-db"], serial=105)

    for name in ("db1", "db2"):
        result = ssh(hosts[name], identity, "root", "echo logged-in")

        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert result.stdout.strip() == "logged-in"


def test_host_outside_group_refused(hosts, ca_key, identities):
    identity = make_identity(identities, "prod-db-root-on-web1")
    sign(ca_key, identity, ["root@group:prod-db"], serial=106)

    result = ssh(hosts["web1"], identity, "root")

    assert result.returncode == 255
    assert PERMISSION_DENIED in result.stderr


def test_login_not_in_inventory_refused(hosts, ca_key, identities):
    # db2 lists only root, so no principals file exists for nobody there.
    identity = make_identity(identities, "db2-nobody")
    sign(ca_key, identity, ["nobody@db2", "nobody@group:prod-db"], serial=107)

    result = ssh(hosts["db2"], identity, "nobody")

    assert result.returncode == 255
    assert PERMISSION_DENIED in result.stderr


def test_listed_other_login_authenticates(hosts, ca_key, identities):
    # nobody is listed for db1, so its certificate authenticates; its shell
    # (nologin) then ends the session, which ssh reports as status 1, not 255.
    identity = make_identity(identities, "db1-nobody")
    sign(ca_key, identity, ["nobody@db1"], serial=108)

    result = ssh(hosts["db1"], identity, "nobody")

    assert result.returncode != 255, result.stderr
    assert PERMISSION_DENIED not in result.stderr


def test_certificate_from_other_ca_refused(hosts, identities):
    other_ca = CAKey.from_private_key(generate_ca_key("ed25519"))
    identity = make_identity(identities, "db1-root-other-ca")
    sign(other_ca, identity, ["root@db1"], serial=109)

    result = ssh(hosts["db1"], identity, "root")

    assert result.returncode == 255
    assert PERMISSION_DENIED in result.stderr


def test_sshca_command_sets_up_host(tmp_path, secure_dir, ca_key, sshd_factory):
    # The same steps as on a host, through the installed `sshca` command, with
    # install finding the main config at PREFIX/etc/ssh/sshd_config by itself.
    secure_dir.chmod(0o755)
    config = write_main_config(secure_dir)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    ca_keys = write_ca_keys(tmp_path / "ca.pub", ca_key)
    out = tmp_path / "out"

    for args in (["render", "web1", "--inventory", inventory, "--ca-keys", ca_keys,
                  "--server", "http://127.0.0.1:9", "--prefix", secure_dir, "--out", out],
                 ["install", out]):
        result = subprocess.run([sys.executable, "-m", "sshca", "hostconfig", *map(str, args)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr

    sshd = sshd_factory(secure_dir, config_path=config)
    identity = make_identity(tmp_path, "web1-root")
    sign(ca_key, identity, ["root@web1"], serial=110)

    assert ssh(sshd, identity, "root").returncode == 0


def test_rotation_trusts_both_ca_keys(tmp_path, secure_dir, ca_key, sshd_factory):
    # During a CA rotation user_ca.pub lists the old and the new key, and
    # certificates from either CA log in.
    new_ca = CAKey.from_private_key(generate_ca_key("ecdsa-p256"))
    secure_dir.chmod(0o755)
    config = write_main_config(secure_dir)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    ca_keys = write_ca_keys(tmp_path / "ca.pub", ca_key, new_ca)
    out = tmp_path / "out"
    assert run_cli("render", "db2", "--inventory", inventory, "--ca-keys", ca_keys,
                   "--server", "http://127.0.0.1:9", "--prefix", secure_dir,
                   "--out", out).exit_code == 0
    assert run_cli("install", out).exit_code == 0
    sshd = sshd_factory(secure_dir, config_path=config)

    for serial, signer in ((111, ca_key), (112, new_ca)):
        identity = make_identity(tmp_path, f"db2-root-{serial}")
        sign(signer, identity, ["root@db2"], serial=serial)

        result = ssh(sshd, identity, "root")

        assert result.returncode == 0, f"CA {signer.fingerprint}: {result.stderr}"
