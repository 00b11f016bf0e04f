"""sshca-krl-sync, the rendered host script, against an HTTP server on 127.0.0.1.

The server here serves whatever a test sets: a KRL built with ca.krl, an
error status, garbage, or a download cut off or held in the middle.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ca.krl import build_krl
from hostconfig.install import install_rendered
from tests.hostconfig.conftest import (
    make_identity, run_cli, sign, write_ca_keys, write_main_config,
)

INVENTORY = """\
[[hosts]]
name = "db1"
groups = ["prod-db"]
logins = ["root"]
"""


class KrlServer:
    """A one-path HTTP server for /v1/krl whose reply each test sets."""

    def __init__(self):
        self.body = b""
        self.status = 200
        self.declared_length: int | None = None  # more than len(body) cuts the transfer off
        self.hold_after: int | None = None  # send this many bytes, then wait for release
        self.held = threading.Event()
        self.release = threading.Event()
        self.requests: list[str] = []

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.path != "/v1/krl":
                    self.send_error(404)
                    return
                self.send_response(server.status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(server.declared_length or len(server.body)))
                self.end_headers()
                if server.hold_after is None:
                    self.wfile.write(server.body)
                    return
                self.wfile.write(server.body[:server.hold_after])
                self.wfile.flush()
                server.held.set()
                server.release.wait(timeout=30)
                self.wfile.write(server.body[server.hold_after:])

            def log_message(self, format, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def krl_server():
    server = KrlServer().start()
    yield server
    server.stop()


class Host:
    """A host tree with the rendered and installed sshca files."""

    def __init__(self, root: Path):
        self.root = root
        self.sshca_dir = root / "etc/ssh/sshca"
        self.krl = self.sshca_dir / "revoked.krl"
        self.probe = self.sshca_dir / "krl-probe.pub"
        self.script = root / "usr/local/sbin/sshca-krl-sync"

    def sync(self, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.script)], capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ["PATH"], **env})

    def start_sync(self) -> subprocess.Popen:
        return subprocess.Popen([str(self.script)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={"PATH": os.environ["PATH"]})

    def leftovers(self) -> list[str]:
        return sorted(path.name for path in self.sshca_dir.iterdir() if path.name.startswith("."))


def render_and_install(work: Path, root: Path, server_url: str, ca_key, *extra: str) -> Host:
    inventory = work / "inventory.toml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    ca_keys = write_ca_keys(work / "ca.pub", ca_key)
    out = work / "out"

    result = run_cli("render", "db1", "--inventory", inventory, "--ca-keys", ca_keys,
                     "--server", server_url, "--prefix", root, "--out", out, *extra)

    assert result.exit_code == 0, result.output
    install_rendered(out, "/")
    return Host(root)


@pytest.fixture
def host(tmp_path, krl_server, ca_key):
    return render_and_install(tmp_path, tmp_path / "host", krl_server.url, ca_key)


def revoking_krl(ca_key, serials=(), public_keys=()) -> bytes:
    return build_krl(serials=list(serials), public_keys=list(public_keys),
                     ca_public_keys=[ca_key.public_line()])


def test_sync_installs_new_krl(host, krl_server, ca_key):
    krl_server.body = revoking_krl(ca_key, serials=[42])
    old_inode = host.krl.stat().st_ino

    result = host.sync()

    assert result.returncode == 0, result.stderr
    assert host.krl.read_bytes() == krl_server.body
    assert host.krl.stat().st_ino != old_inode  # replaced by rename, not rewritten
    assert host.krl.stat().st_mode & 0o777 == 0o644
    assert "installed the new KRL" in result.stderr
    assert host.leftovers() == []
    assert krl_server.requests == ["/v1/krl"]


def test_sync_unchanged_krl_refreshes_age(host, krl_server):
    krl_server.body = host.krl.read_bytes()
    os.utime(host.krl, (time.time() - 7200, time.time() - 7200))

    result = host.sync()

    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stderr
    assert time.time() - host.krl.stat().st_mtime < 60


def test_sync_server_down_keeps_krl(host, krl_server, ca_key):
    before = host.krl.read_bytes()
    krl_server.stop()

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert f"error: fetching {krl_server.url}/v1/krl failed" in result.stderr
    assert "keeping the current KRL" in result.stderr
    assert host.leftovers() == []


def test_sync_server_error_keeps_krl(host, krl_server):
    before = host.krl.read_bytes()
    krl_server.status = 500
    krl_server.body = b'{"error": {"code": "internal", "message": "boom"}}'

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert "500" in result.stderr


def test_sync_rejects_non_krl(host, krl_server):
    before = host.krl.read_bytes()
    krl_server.body = b"<html>maintenance</html>\n"

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert "is not a valid KRL" in result.stderr
    assert host.leftovers() == []


def test_sync_rejects_truncated_krl(host, krl_server, ca_key):
    # A complete HTTP transfer of a KRL cut short: only ssh-keygen -Q notices.
    before = host.krl.read_bytes()
    krl_server.body = revoking_krl(ca_key, serials=[1, 2, 3])[:-5]

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert "is not a valid KRL" in result.stderr


def test_sync_interrupted_download_keeps_krl(host, krl_server, ca_key):
    before = host.krl.read_bytes()
    krl_server.body = revoking_krl(ca_key, serials=[7])
    krl_server.declared_length = len(krl_server.body) + 100

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert "failed" in result.stderr
    assert host.leftovers() == []


def test_half_written_download_never_live(host, krl_server, ca_key):
    before = host.krl.read_bytes()
    # 10,000 sparse serials make a KRL of about 80 kB, more than curl buffers.
    krl_server.body = revoking_krl(ca_key, serials=list(range(1, 10**9, 10**5)))
    krl_server.hold_after = len(krl_server.body) // 2
    assert krl_server.hold_after > 16_384

    process = host.start_sync()
    try:
        assert krl_server.held.wait(timeout=30)
        # The first half sits in a temporary file beside the KRL; the live
        # path still has the old KRL.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            partial = [host.sshca_dir / name for name in host.leftovers()]
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        assert len(partial) == 1
        assert 0 < partial[0].stat().st_size <= krl_server.hold_after
        assert host.krl.read_bytes() == before
    finally:
        krl_server.release.set()
        stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert host.krl.read_bytes() == krl_server.body
    assert host.leftovers() == []


def test_sync_rejects_krl_revoking_probe(host, krl_server, ca_key):
    before = host.krl.read_bytes()
    krl_server.body = revoking_krl(ca_key, public_keys=[host.probe.read_text().strip()])

    result = host.sync()

    assert result.returncode == 1
    assert host.krl.read_bytes() == before
    assert "revokes the probe key" in result.stderr


def test_sync_logs_old_krl(host, krl_server):
    krl_server.stop()
    os.utime(host.krl, (time.time() - 7300, time.time() - 7300))

    result = host.sync()

    assert result.returncode == 1
    assert "was last updated" in result.stderr
    assert "more than the maximum age of 3600s" in result.stderr


def test_sync_fresh_krl_no_age_error(host, krl_server):
    krl_server.stop()

    result = host.sync()

    assert result.returncode == 1
    assert "maximum age" not in result.stderr


def test_sync_missing_krl_logged(host, krl_server):
    krl_server.stop()
    host.krl.unlink()

    result = host.sync()

    assert result.returncode == 1
    assert "is missing, so sshd rejects every key" in result.stderr


def test_sync_max_age_option(tmp_path, krl_server, ca_key):
    host = render_and_install(tmp_path, tmp_path / "host", krl_server.url, ca_key,
                              "--krl-max-age", "10m")
    krl_server.stop()
    os.utime(host.krl, (time.time() - 900, time.time() - 900))

    result = host.sync()

    assert "more than the maximum age of 600s" in result.stderr


def test_sync_environment_overrides(host, krl_server, ca_key, tmp_path):
    other = tmp_path / "other.krl"
    krl_server.body = revoking_krl(ca_key, serials=[9])

    result = host.sync(SSHCA_KRL=str(other))

    assert result.returncode == 0, result.stderr
    assert other.read_bytes() == krl_server.body


@pytest.mark.sshd
def test_synced_krl_refuses_revoked_certificate(tmp_path, secure_dir, krl_server, ca_key,
                                                 sshd_factory):
    secure_dir.chmod(0o755)
    config = write_main_config(secure_dir)
    host = render_and_install(tmp_path, secure_dir, krl_server.url, ca_key)
    sshd = sshd_factory(secure_dir, config_path=config)
    revoked = make_identity(tmp_path, "revoked")
    sign(ca_key, revoked, ["root@db1"], serial=501)
    kept = make_identity(tmp_path, "kept")
    sign(ca_key, kept, ["root@db1"], serial=502)
    assert sshd.ssh(revoked.key_path, revoked.cert_path, login="root").returncode == 0

    krl_server.body = revoking_krl(ca_key, serials=[501])
    result = host.sync()

    assert result.returncode == 0, result.stderr
    refused = sshd.ssh(revoked.key_path, revoked.cert_path, login="root")
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr
    assert sshd.ssh(kept.key_path, kept.cert_path, login="root").returncode == 0


def test_script_needs_only_sh_curl_ssh_keygen(host, tmp_path, krl_server, ca_key):
    # The host has no sshca installed: with a PATH of only these tools the sync still works.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "curl", "ssh-keygen", "mktemp", "dirname", "cmp", "touch", "chmod", "mv",
                 "wc", "stat", "date", "rm", "cat"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    krl_server.body = revoking_krl(ca_key, serials=[3])

    result = subprocess.run(["sh", str(host.script)], capture_output=True, text=True,
                            timeout=60, env={"PATH": str(bin_dir)})

    assert result.returncode == 0, result.stderr
    assert host.krl.read_bytes() == krl_server.body
