"""End to end: request, two approvals, `sshca cert`, then plain ssh into a real sshd.

The sshd host is configured only by `sshca hostconfig render` and `install`
against the live server, and the ssh command is the one `sshca cert`
printed, pointed at the test sshd's port on 127.0.0.1.
"""

import json
import re
import shlex
import shutil
import stat
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ca.keys import fingerprint
from tests.cli.conftest import SSHCA, Cli, PatientLiveServer
from tests.support.sshd import SSH_CLIENT_OPTIONS, Sshd, base_config_lines, make_secure_dir

# One worker runs this module under --dist loadgroup, so its server and sshd start once.
pytestmark = [pytest.mark.sshd, pytest.mark.slow, pytest.mark.xdist_group("cli-ssh")]

INVENTORY = """\
[[hosts]]
name = "db1"
groups = ["prod-db"]
logins = ["root"]

[[hosts]]
name = "db2"
groups = ["prod-db"]
logins = ["root"]
"""

POLICY = """\
[defaults]
max_duration = "8h"
request_ttl = "24h"
clock_skew = "60s"

[[rules]]
name = "root-on-db"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["root"]
max_duration = "4h"
approvals = 2
approvers = ["group:dba-leads"]
"""

USERS = {"alice": ["sre"], "bob": ["dba-leads"], "carol": ["dba-leads"], "erin": {"auditor": True}}

PERMISSION_DENIED = "Permission denied (publickey)"


class Host:
    """A private host tree with an sshd configured only by `sshca hostconfig`."""

    def __init__(self, name: str, server, work: Path):
        self.name = name
        self.server = server
        self.work = work
        self.root = make_secure_dir("sshca-cli-host-")
        # sshd opens the principals file as the login, so every directory
        # above it must be searchable by others, as /etc/ssh is.
        self.root.chmod(0o755)
        self.config = self._write_main_config()
        self.inventory = work / "inventory.toml"
        self.inventory.write_text(INVENTORY)
        self.sshd = Sshd(self.root, config_path=self.config)
        try:
            # `sshca hostconfig install` checks the config with `sshd -t`, which needs the host key.
            self.sshd.generate_host_key()
            self.render()
            self.sshd.start()
        except BaseException:
            self.stop()
            raise

    def _write_main_config(self) -> Path:
        ssh_dir = self.root / "etc/ssh"
        ssh_dir.mkdir(parents=True)
        config = ssh_dir / "sshd_config"
        config.write_text("\n".join([
            f"Include {ssh_dir}/sshd_config.d/*.conf",
            f"HostKey {self.root / 'ssh_host_ed25519_key'}",
            *base_config_lines(),
        ]) + "\n")
        return config

    def render(self) -> None:
        """Render this host's files from the server's CA keys and install them."""
        out = self.work / f"rendered-{time.monotonic_ns()}"
        for args in (
            ["render", self.name, "--inventory", str(self.inventory), "--server", self.server.url,
             "--prefix", str(self.root), "--out", str(out)],
            ["install", str(out), "--sshd-config", str(self.config)],
        ):
            result = subprocess.run([SSHCA, "hostconfig", *args], capture_output=True, text=True,
                                    timeout=120)
            assert result.returncode == 0, result.stderr

    def trusted_ca_keys(self) -> list[str]:
        text = (self.root / "etc/ssh/sshca/user_ca.pub").read_text()
        return [line.split()[1] for line in text.splitlines() if line.strip()]

    def stop(self) -> None:
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server_and_host(work: Path):
    server = PatientLiveServer(work / "server", policy=POLICY, inventory=INVENTORY, users=USERS)
    server.start()
    try:
        return server, Host("db1", server, work)
    except BaseException:
        server.stop()
        raise


def make_clients(server, directory: Path) -> dict[str, Cli]:
    clients = {}
    for user in USERS:
        home = directory / f"home-{user}"
        home.mkdir()
        clients[user] = Cli(home)
        clients[user].env.update({"SSHCA_SERVER": server.url, "SSHCA_TOKEN": server.token(user)})
    return clients


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A live server with the test policy and one host db1, shared by the module's tests."""
    server, host = start_server_and_host(tmp_path_factory.mktemp("cli-ssh"))
    try:
        yield server, host
    finally:
        host.stop()
        server.stop()


@pytest.fixture
def setup(shared, tmp_path):
    """The shared server and host, and a Cli per user with a fresh HOME."""
    server, host = shared
    return server, host, make_clients(server, tmp_path)


@pytest.fixture
def own_setup(tmp_path):
    """A server and host of the test's own, for tests that change the CA keys."""
    server, host = start_server_and_host(tmp_path)
    try:
        yield server, host, make_clients(server, tmp_path)
    finally:
        host.stop()
        server.stop()


def approved(clients, duration="10m") -> int:
    """Create a request as alice for root on db1 and have bob and carol approve it."""
    result = clients["alice"].run("request", "db1", "--login", "root", "--for", duration,
                                  "--reason", "INC-7 restart the replica")
    assert result.returncode == 0, result.stderr
    request_id = int(re.match(r"Request (\d+) is pending\.", result.stdout).group(1))
    for approver in ("bob", "carol"):
        approval = clients[approver].run("approve", str(request_id), "-m", "ok")
        assert approval.returncode == 0, approval.stderr
    return request_id


def printed_ssh_command(cert_output: str) -> list[str]:
    """Return the ssh command `sshca cert` printed for db1, as argv."""
    lines = [line.strip() for line in cert_output.splitlines() if line.strip().startswith("ssh ")]
    assert len(lines) == 1, cert_output
    return shlex.split(lines[0])


def run_printed_ssh(command: list[str], sshd: Sshd, remote: str = "echo logged-in"):
    """Run the printed ssh command against the test sshd: same files, test port and host options."""
    assert command[0] == "ssh"
    # SSH_CLIENT_OPTIONS turn off the agent, ~/.ssh/config and known_hosts,
    # so only the -i key and the CertificateFile can log in.
    argv = ["ssh", *SSH_CLIENT_OPTIONS, "-p", str(sshd.port), "-o", "HostName=127.0.0.1",
            *command[1:], remote]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def signing_key_of(cert_path: Path) -> str:
    certificate = serialization.load_ssh_public_identity(cert_path.read_bytes())
    return fingerprint(certificate.signature_key())


def test_request_approve_cert_ssh(setup, agent, tmp_path):
    server, host, clients = setup
    alice = clients["alice"]
    request_id = approved(clients)
    key_dir = alice.home / ".ssh" / "sshca"
    key = key_dir / f"req-{request_id}"
    cert = key_dir / f"req-{request_id}-cert.pub"

    result = alice.run("cert", str(request_id), env=agent.env)

    assert result.returncode == 0, result.stderr
    assert f"Certificate for request {request_id} written to {cert}" in result.stdout
    assert "  principals: root@db1\n" in result.stdout
    assert re.search(r"  window: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC to .* UTC \(ends in \d+m", result.stdout)
    assert re.search(r"  ssh-agent:  key and certificate added for \d+s, until the window ends", result.stdout)
    command = printed_ssh_command(result.stdout)
    assert command == ["ssh", "-i", str(key), "-o", f"CertificateFile={cert}", "root@db1"]
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert cert.read_text().startswith("ssh-ed25519-cert-v01@openssh.com ")

    login = run_printed_ssh(command, host.sshd)

    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "logged-in"
    issued = json.loads(alice.run("show", str(request_id), "--json").stdout)["certificates"]
    assert len(issued) == 1
    host.sshd.wait_for_log(
        rf'Accepted certificate ID "user=alice request={request_id} serial={issued[0]["serial"]}"')

    # The agent got the key and the certificate for the seconds left in the
    # 10-minute window (less the time since approval).
    lifetimes = agent.lifetimes()
    assert set(lifetimes) == {"ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"}
    window_end = datetime.fromisoformat(issued[0]["valid_before"])
    seconds_left = (window_end - datetime.now(timezone.utc)).total_seconds()
    for lifetime in lifetimes.values():
        assert 0 < lifetime <= 600
        assert abs(lifetime - seconds_left) < 60, (lifetime, seconds_left)

    # ssh with only the agent (no -i, no CertificateFile) logs in too.
    agent_only = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", f"IdentityAgent={agent.socket}",
         "-p", str(host.sshd.port), "root@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert agent_only.returncode == 0, agent_only.stderr


def test_cert_removes_ended_grants(setup):
    _server, _host, clients = setup
    alice = clients["alice"]
    key_dir = alice.home / ".ssh" / "sshca"
    key_dir.mkdir(parents=True, mode=0o700)
    ended = write_ended_grant(key_dir, 999)
    request_id = approved(clients)

    result = alice.run("cert", str(request_id), "--no-agent")

    assert result.returncode == 0, result.stderr
    assert "Removed the expired key and certificate of request 999." in result.stdout
    assert sorted(p.name for p in key_dir.iterdir()) == [
        f"req-{request_id}", f"req-{request_id}-cert.pub", f"req-{request_id}.pub"]
    assert not ended.exists()


def write_ended_grant(key_dir: Path, request_id: int) -> Path:
    """Write req-<id> files as `sshca cert` would, with a certificate that ended an hour ago."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_dir / "old-ca")],
                   check=True)
    key = key_dir / f"req-{request_id}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(key_dir / "old-ca"), "-I", "old", "-n", "root@db1",
                    "-V", "20200101:20200102", str(key) + ".pub"], check=True)
    (key_dir / "old-ca").unlink()
    (key_dir / "old-ca.pub").unlink()
    return key


def test_cert_without_agent_prints_note(setup):
    _server, host, clients = setup
    request_id = approved(clients)

    result = clients["alice"].run("cert", str(request_id))

    assert result.returncode == 0, result.stderr
    assert "no ssh-agent is running (SSH_AUTH_SOCK is not set)" in result.stdout
    assert run_printed_ssh(printed_ssh_command(result.stdout), host.sshd).returncode == 0


def test_cert_with_own_key(setup, tmp_path):
    _server, host, clients = setup
    key = tmp_path / "my key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    request_id = approved(clients)

    result = clients["alice"].run("cert", str(request_id), "--key", str(key))

    assert result.returncode == 0, result.stderr
    cert = tmp_path / "my key-cert.pub"
    assert cert.exists()
    assert not (clients["alice"].home / ".ssh" / "sshca" / f"req-{request_id}").exists()
    login = run_printed_ssh(printed_ssh_command(result.stdout), host.sshd)
    assert login.returncode == 0, login.stderr


def test_cert_before_approval_refused(setup):
    _server, _host, clients = setup
    result = clients["alice"].run("request", "db1", "--login", "root", "--for", "10m",
                                  "--reason", "not yet approved")
    request_id = re.match(r"Request (\d+)", result.stdout).group(1)

    refused = clients["alice"].run("cert", request_id)

    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert f"request {request_id} is pending (0 of 2 approvals)" in refused.stderr
    assert not (clients["alice"].home / ".ssh" / "sshca").exists()


def test_revoked_grant_gets_no_certificate(setup):
    _server, _host, clients = setup
    request_id = approved(clients)
    assert clients["alice"].run("revoke", str(request_id), "-m", "done").returncode == 0

    result = clients["alice"].run("cert", str(request_id))

    assert result.returncode == 1
    assert f"request {request_id} is revoked" in result.stderr
    assert not (clients["alice"].home / ".ssh" / "sshca").exists()


# -- CA rotation -----------------------------------------------------------------------


def wait_for_signer(server, new_fingerprint: str, since: int) -> None:
    """Wait until new workers loaded ``new_fingerprint`` and the old workers exited.

    `sshca admin ca rotate` sends SIGHUP: gunicorn starts new workers, which
    load the new signing key, then stops the old ones.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = server.log_path.read_text(errors="replace")[since:].splitlines()
        loaded = sum(1 for line in lines if "policy.loaded" in line and new_fingerprint in line)
        exited = sum(1 for line in lines if "Worker exiting" in line)
        if loaded >= server.workers and exited >= server.workers:
            return
        time.sleep(0.2)
    raise AssertionError(f"the server did not switch to {new_fingerprint}:\n{server.log_tail()}")


def ca_fingerprints(server) -> dict[str, bool]:
    """Return {fingerprint: signing} of the CA keys /v1/ca serves."""
    return {key["fingerprint"]: key["signing"] for key in server.get("/v1/ca").json()["keys"]}


def test_ca_rotation_old_and_new_certificates(own_setup):
    server, host, clients = own_setup
    alice = clients["alice"]
    (old_ca,) = ca_fingerprints(server)

    first = approved(clients)
    first_output = alice.run("cert", str(first))
    assert first_output.returncode == 0, first_output.stderr
    first_cert = alice.home / ".ssh" / "sshca" / f"req-{first}-cert.pub"
    assert signing_key_of(first_cert) == old_ca

    log_offset = len(server.log_path.read_text(errors="replace"))
    rotated = server.admin("ca", "rotate")
    new_ca = rotated.stdout.strip()
    wait_for_signer(server, new_ca, log_offset)
    assert ca_fingerprints(server) == {old_ca: False, new_ca: True}
    host.render()
    assert len(host.trusted_ca_keys()) == 2

    second = approved(clients)
    second_output = alice.run("cert", str(second))
    assert second_output.returncode == 0, second_output.stderr
    second_cert = alice.home / ".ssh" / "sshca" / f"req-{second}-cert.pub"
    assert signing_key_of(second_cert) == new_ca

    # While both keys are trusted, both certificates log in.
    first_command = printed_ssh_command(first_output.stdout)
    second_command = printed_ssh_command(second_output.stdout)
    assert run_printed_ssh(first_command, host.sshd).returncode == 0
    assert run_printed_ssh(second_command, host.sshd).returncode == 0

    server.admin("ca", "retire", old_ca)
    assert ca_fingerprints(server) == {new_ca: True}
    # The host still trusts the old key until its files are rendered again.
    assert run_printed_ssh(first_command, host.sshd).returncode == 0

    host.render()

    assert len(host.trusted_ca_keys()) == 1
    refused = run_printed_ssh(first_command, host.sshd)
    assert refused.returncode == 255
    assert PERMISSION_DENIED in refused.stderr
    assert run_printed_ssh(second_command, host.sshd).returncode == 0


def test_refused_certificate_leaves_no_key(setup, tmp_path):
    server, _host, clients = setup
    server.add_user("hank", ["sre"])
    hank = Cli(tmp_path / "home-hank")
    hank.home.mkdir()
    hank.env.update({"SSHCA_SERVER": server.url, "SSHCA_TOKEN": server.token("hank")})
    created = hank.run("request", "db1", "--login", "root", "--for", "10m", "--reason", "x")
    request_id = re.match(r"Request (\d+)", created.stdout).group(1)
    for approver in ("bob", "carol"):
        assert clients[approver].run("approve", request_id).returncode == 0
    # Leaving the requester group after approval: the server checks again at certificate time.
    server.admin("user", "set-groups", "hank")

    result = hank.run("cert", request_id)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert list((hank.home / ".ssh" / "sshca").iterdir()) == []


def test_revoke_removes_local_key_and_agent_entry(setup, agent):
    _server, host, clients = setup
    alice = clients["alice"]
    request_id = approved(clients)
    fetched = alice.run("cert", str(request_id), env=agent.env)
    assert fetched.returncode == 0, fetched.stderr
    assert "ED25519-CERT" in agent.listed()
    command = printed_ssh_command(fetched.stdout)

    result = alice.run("revoke", str(request_id), "-m", "done early", env=agent.env)

    assert result.returncode == 0, result.stderr
    assert "removed from ssh-agent" in result.stdout
    assert agent.listed() == ""
    assert list((alice.home / ".ssh" / "sshca").iterdir()) == []
    assert "No such file" in run_printed_ssh(command, host.sshd).stderr


def test_cert_again_reuses_grant_key(setup):
    _server, host, clients = setup
    alice = clients["alice"]
    request_id = approved(clients)
    public_key = alice.home / ".ssh" / "sshca" / f"req-{request_id}.pub"
    cert = alice.home / ".ssh" / "sshca" / f"req-{request_id}-cert.pub"

    first = alice.run("cert", str(request_id))
    first_public, first_cert = public_key.read_text(), cert.read_text()
    second = alice.run("cert", str(request_id))

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert public_key.read_text() == first_public
    assert cert.read_text() != first_cert
    serials = [c["serial"] for c in json.loads(alice.run("show", str(request_id), "--json").stdout)["certificates"]]
    assert len(serials) == 2
    assert run_printed_ssh(printed_ssh_command(second.stdout), host.sshd).returncode == 0
