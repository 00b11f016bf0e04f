import json
import re
import shutil
import os
import subprocess
from pathlib import Path

import pytest

from ca.keys import CAKey, generate_ca_key
from hostconfig.install import install_rendered
from hostconfig.inventory import parse_inventory
from hostconfig.render import HostPaths, RenderError, SyncSettings, parse_ca_keys, render_host
from tests.hostconfig.conftest import SSHD, run_cli, write_ca_keys

INVENTORY = """\
[[hosts]]
name = "db1.prod.example.com"
groups = ["prod-db", "prod"]
logins = ["deploy", "john.smith"]

[[hosts]]
name = "web1.prod.example.com"
groups = ["prod"]
logins = ["deploy"]
"""


@pytest.fixture
def inventory_file(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_text(INVENTORY, encoding="utf-8")
    return path


@pytest.fixture
def ca_keys_file(tmp_path, ca_key):
    return write_ca_keys(tmp_path / "ca.pub", ca_key)


def render(inventory_file, ca_keys_file, out, *extra):
    return run_cli("render", *extra, "--inventory", inventory_file, "--ca-keys", ca_keys_file,
                   "--server", "https://sshca.example.com", "--out", out)


def test_render_writes_every_file(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    result = render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    assert result.exit_code == 0, result.output
    files = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert files == [
        "manifest.json",
        "sshca-krl-sync",
        "sshca-krl-sync.service",
        "sshca-krl-sync.timer",
        "sshca/auth_principals/deploy",
        "sshca/auth_principals/john.smith",
        "sshca/krl-probe.pub",
        "sshca/revoked.krl",
        "sshca/user_ca.pub",
        "sshd_config.d/50-sshca.conf",
    ]


def test_dropin_default_paths(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    lines = [line for line in (out / "sshd_config.d/50-sshca.conf").read_text().splitlines()
             if not line.startswith("#")]
    assert lines == [
        "TrustedUserCAKeys /etc/ssh/sshca/user_ca.pub",
        "AuthorizedPrincipalsFile /etc/ssh/sshca/auth_principals/%u",
        "RevokedKeys /etc/ssh/sshca/revoked.krl",
        "LogLevel VERBOSE",
    ]


def test_dropin_with_prefix_and_sshd_dir(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    result = render(inventory_file, ca_keys_file, out, "db1.prod.example.com",
                    "--prefix", "/srv/host1", "--sshd-dir", "/usr/local/etc/ssh")

    assert result.exit_code == 0, result.output
    text = (out / "sshd_config.d/50-sshca.conf").read_text()
    assert "TrustedUserCAKeys /usr/local/etc/ssh/sshca/user_ca.pub\n" in text
    manifest = json.loads((out / "manifest.json").read_text())
    targets = {item["source"]: item["target"] for item in manifest["files"]}
    assert targets["sshd_config.d/50-sshca.conf"] == "/usr/local/etc/ssh/sshd_config.d/50-sshca.conf"
    assert targets["sshca-krl-sync"] == "/srv/host1/usr/local/sbin/sshca-krl-sync"
    assert targets["sshca-krl-sync.timer"] == "/srv/host1/etc/systemd/system/sshca-krl-sync.timer"


def test_principals_per_login(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    assert (out / "sshca/auth_principals/deploy").read_text() == (
        "deploy@db1.prod.example.com\ndeploy@group:prod-db\ndeploy@group:prod\n")
    assert (out / "sshca/auth_principals/john.smith").read_text() == (
        "john.smith@db1.prod.example.com\njohn.smith@group:prod-db\njohn.smith@group:prod\n")


def test_stale_principals_removed_from_out(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"
    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")
    inventory_file.write_text(INVENTORY.replace('"deploy", "john.smith"', '"deploy"'))

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    assert sorted(path.name for path in (out / "sshca/auth_principals").iterdir()) == ["deploy"]


def test_modes(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    assert os.stat(out / "sshca-krl-sync").st_mode & 0o777 == 0o755
    for name in ("sshca/user_ca.pub", "sshca/revoked.krl", "sshca/auth_principals/deploy",
                 "sshd_config.d/50-sshca.conf", "sshca-krl-sync.service"):
        assert os.stat(out / name).st_mode & 0o777 == 0o644, name


def test_user_ca_keeps_every_key(tmp_path, inventory_file, ca_key):
    # During a rotation both the old and the new CA key are trusted.
    new_key = CAKey.from_private_key(generate_ca_key("ecdsa-p256"))
    keys_file = write_ca_keys(tmp_path / "ca.pub", ca_key, new_key)
    out = tmp_path / "out"

    render(inventory_file, keys_file, out, "db1.prod.example.com")

    lines = (out / "sshca/user_ca.pub").read_text().splitlines()
    assert lines == [ca_key.public_line("sshca-test"), new_key.public_line("sshca-test")]


def test_initial_krl_is_valid_and_empty(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    check = subprocess.run(["ssh-keygen", "-Q", "-f", str(out / "sshca/revoked.krl"),
                            str(out / "sshca/krl-probe.pub")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().endswith(": ok")


def test_rendered_dropin_passes_sshd_t(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"
    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {host_key}\nInclude {out}/sshd_config.d/*.conf\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    effective = subprocess.run([SSHD, "-T", "-f", str(config)], capture_output=True, text=True)

    assert check.returncode == 0, check.stderr
    assert "trustedusercakeys /etc/ssh/sshca/user_ca.pub" in effective.stdout.splitlines()
    assert "loglevel VERBOSE" in effective.stdout.splitlines()


def test_dropin_never_weakens_sshd(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com")

    keywords = [line.split()[0] for line in
                (out / "sshd_config.d/50-sshca.conf").read_text().splitlines()
                if line and not line.startswith("#")]
    assert keywords == ["TrustedUserCAKeys", "AuthorizedPrincipalsFile", "RevokedKeys", "LogLevel"]


def test_script_settings(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com", "--krl-max-age", "2h",
           "--krl-ca-bundle", "/etc/ssl/sshca-ca.pem")

    script = (out / "sshca-krl-sync").read_text()
    assert script.startswith("#!/bin/sh\n")
    assert ': "${SSHCA_SERVER:=https://sshca.example.com}"' in script
    assert ': "${SSHCA_KRL:=/etc/ssh/sshca/revoked.krl}"' in script
    assert ': "${SSHCA_KRL_PROBE:=/etc/ssh/sshca/krl-probe.pub}"' in script
    assert ': "${SSHCA_KRL_MAX_AGE:=7200}"' in script
    assert ': "${SSHCA_CA_BUNDLE:=/etc/ssl/sshca-ca.pem}"' in script
    assert re.search(r"@[A-Z_]+@", script) is None
    syntax = subprocess.run(["sh", "-n", str(out / "sshca-krl-sync")], capture_output=True)
    assert syntax.returncode == 0, syntax.stderr


def test_systemd_units(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    render(inventory_file, ca_keys_file, out, "db1.prod.example.com", "--krl-interval", "10m")

    service = (out / "sshca-krl-sync.service").read_text()
    timer = (out / "sshca-krl-sync.timer").read_text()
    assert "Type=oneshot\n" in service
    assert "ExecStart=/usr/local/sbin/sshca-krl-sync\n" in service
    assert "ReadWritePaths=/etc/ssh/sshca\n" in service
    assert "OnUnitActiveSec=600s\n" in timer
    assert "RandomizedDelaySec=60s\n" in timer
    assert "WantedBy=timers.target\n" in timer


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze (Debian package systemd) is not installed")
def test_systemd_units_verify(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"
    root = tmp_path / "host"
    render(inventory_file, ca_keys_file, out, "db1.prod.example.com", "--prefix", root)
    install_rendered(out, "/")
    units = root / "etc/systemd/system"

    result = subprocess.run(["systemd-analyze", "verify", str(units / "sshca-krl-sync.service"),
                             str(units / "sshca-krl-sync.timer")],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_render_all(tmp_path, inventory_file, ca_keys_file):
    out = tmp_path / "out"

    result = render(inventory_file, ca_keys_file, out, "--all")

    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [
        "db1.prod.example.com", "web1.prod.example.com"]
    assert sorted(path.name for path in (out / "web1.prod.example.com/sshca/auth_principals")
                  .iterdir()) == ["deploy"]
    assert (out / "web1.prod.example.com/sshca/auth_principals/deploy").read_text() == (
        "deploy@web1.prod.example.com\ndeploy@group:prod\n")


@pytest.mark.parametrize("args", [[], ["db1.prod.example.com", "--all"]])
def test_render_needs_host_or_all(tmp_path, inventory_file, ca_keys_file, args):
    result = render(inventory_file, ca_keys_file, tmp_path / "out", *args)

    assert result.exit_code == 2
    assert "give either HOST or --all" in result.output


def test_render_unknown_host(tmp_path, inventory_file, ca_keys_file):
    result = render(inventory_file, ca_keys_file, tmp_path / "out", "db9.prod.example.com")

    assert result.exit_code == 1
    assert "host 'db9.prod.example.com' is not in the inventory" in result.output
    assert not (tmp_path / "out").exists()


def test_render_invalid_inventory(tmp_path, inventory_file, ca_keys_file):
    inventory_file.write_text('[[hosts]]\nname = "db1"\nlogins = []\n')

    result = render(inventory_file, ca_keys_file, tmp_path / "out", "db1")

    assert result.exit_code == 1
    assert f"{inventory_file}: hosts[0] (db1): field 'logins': empty logins" in result.output


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--prefix", "relative/dir", "invalid prefix 'relative/dir'"),
    ("--prefix", "/srv/a b", "invalid prefix '/srv/a b'"),
    ("--sshd-dir", "/etc/ssh/../x", "invalid sshd-dir '/etc/ssh/../x'"),
    ("--sshd-dir", "/etc/%u", "invalid sshd-dir '/etc/%u'"),
    ("--krl-max-age", "soon", "'soon'"),
    ("--krl-ca-bundle", "/etc/a b.pem", "invalid value '/etc/a b.pem'"),
])
def test_render_invalid_option(tmp_path, inventory_file, ca_keys_file, option, value, message):
    result = render(inventory_file, ca_keys_file, tmp_path / "out", "db1.prod.example.com",
                    option, value)

    assert result.exit_code == 1
    assert message in result.output


def test_render_invalid_server_url(tmp_path, inventory_file, ca_keys_file):
    result = run_cli("render", "db1.prod.example.com", "--inventory", inventory_file,
                     "--ca-keys", ca_keys_file, "--server", "https://x/$(reboot)",
                     "--out", tmp_path / "out")

    assert result.exit_code == 1
    assert "invalid value 'https://x/$(reboot)'" in result.output


@pytest.mark.parametrize("server", ["ftp://sshca.example.com", "sshca.example.com", "https://"])
def test_render_rejects_non_http_server(tmp_path, inventory_file, ca_keys_file, server):
    result = run_cli("render", "db1.prod.example.com", "--inventory", inventory_file,
                     "--ca-keys", ca_keys_file, "--server", server, "--out", tmp_path / "out")

    assert result.exit_code == 2
    assert f"{server!r} is not an http:// or https:// URL" in result.output


def test_render_warns_about_plain_http(tmp_path, inventory_file, ca_keys_file):
    result = run_cli("render", "db1.prod.example.com", "--inventory", inventory_file,
                     "--ca-keys", ca_keys_file, "--server", "http://sshca.example.com",
                     "--out", tmp_path / "out")

    assert result.exit_code == 0, result.output
    assert "over plain HTTP" in result.output


def test_render_loopback_http_no_warning(tmp_path, inventory_file, ca_keys_file):
    result = run_cli("render", "db1.prod.example.com", "--inventory", inventory_file,
                     "--ca-keys", ca_keys_file, "--server", "http://127.0.0.1:8080",
                     "--out", tmp_path / "out")

    assert result.exit_code == 0, result.output
    assert "plain HTTP" not in result.output


def test_parse_ca_keys_skips_comments_and_duplicates(ca_key):
    line = ca_key.public_line("ca-2026")
    text = f"# trusted sshca CA keys\n\n{line}\n{ca_key.public_line()}\n"

    assert parse_ca_keys(text, "ca.pub") == [line]


@pytest.mark.parametrize(("text", "message"), [
    ("", "ca.pub: no CA public key found"),
    ("# only a comment\n", "ca.pub: no CA public key found"),
    ("ssh-ed25519 AAAA-not-base64\n", "ca.pub: line 1: not an SSH public key"),
    ("hello\n", "ca.pub: line 1: unsupported CA key type 'hello'"),
])
def test_parse_ca_keys_invalid(text, message):
    with pytest.raises(RenderError, match=message):
        parse_ca_keys(text, "ca.pub")


def test_parse_ca_keys_rejects_certificate(tmp_path, ca_key):
    from tests.hostconfig.conftest import make_identity, sign

    identity = make_identity(tmp_path, "user")
    sign(ca_key, identity, ["deploy@db1"], serial=1)

    with pytest.raises(RenderError, match="line 2: a certificate, not a CA public key"):
        parse_ca_keys(f"{ca_key.public_line()}\n{identity.cert_path.read_text()}", "ca.pub")


def test_render_host_without_ca_keys():
    inventory = parse_inventory(INVENTORY)

    with pytest.raises(RenderError, match="no CA public key to trust"):
        render_host(inventory, "db1.prod.example.com", ca_keys=[], paths=HostPaths(),
                    sync=SyncSettings(server="https://sshca.example.com"))



def test_parse_ca_keys_rejects_dsa():
    # A DSA key line as ssh-keygen -t dsa writes it (the base64 is not decoded).
    line = "ssh-dss AAAAB3NzaC1kc3MAAACBAP1/U4EddRIpUt9KnC7s5Of2EbdSPO9EAMMeP4C2USZpRV1AIlH7 old-ca"

    with pytest.raises(RenderError, match="line 1: unsupported CA key type 'ssh-dss'"):
        parse_ca_keys(line, "ca.pub")
