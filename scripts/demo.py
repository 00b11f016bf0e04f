"""Run sshca's main job end to end on this machine, with real components.

The demo sets up a CA and a server on SQLite, two hosts (db1 and db2), each a
real OpenSSH sshd on its own loopback port configured only by
``sshca hostconfig render`` and ``install``, and four users. It then walks
through request, two approvals, certificate, a plain ``ssh`` login,
a refused login elsewhere, a refused self-approval, early revocation through
the KRL, and the auditor's view. Each step prints one line with the command
it ran and what happened.

It exits 0 when every step behaved as stated and 1 naming the first step
that did not. Everything it starts is stopped on exit, also on Ctrl-C.
"""

import argparse
import contextlib
import getpass
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests

SSHD = "/usr/sbin/sshd"
REASON = "INC-1234 fix stuck replication"


class StepFailed(Exception):
    """A demo step did not behave as the demo states."""

    def __init__(self, step, detail):
        super().__init__(f"step {step} failed: {detail}")
        self.step = step


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, process, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def secure_base_dir():
    """Create the demo folder in a place sshd accepts for host files.

    sshd (StrictModes, on by default) refuses an AuthorizedPrincipalsFile
    when a parent folder is group- or world-writable, so the demo's hosts
    cannot live under /tmp. /run is root-owned and mode 0755. The folder is
    made searchable (0755) like /etc/ssh; the server's data and the users'
    homes inside it are 0700.
    """
    base = Path(tempfile.mkdtemp(prefix="sshca-demo-", dir="/run"))
    base.chmod(0o755)
    return base


class Demo:
    def __init__(self, base, verbose):
        self.base = base
        self.verbose = verbose
        self.login = getpass.getuser()
        self.bin_dir = Path(sys.executable).parent
        self.sshca = str(self.bin_dir / "sshca")
        self.data_dir = base / "server"
        self.config = self.data_dir / "sshca.toml"
        self.processes = []
        self.hosts = {}
        self.step_number = 0
        self.current = "0 (start)"

    # -- output and commands -------------------------------------------------

    def say(self, text):
        print(text, flush=True)

    def step(self, text):
        self.step_number += 1
        self.current = f"{self.step_number} ({text})"
        self.say(f"\n[{self.step_number}] {text}")

    def result(self, outcome):
        self.say(f"      -> {outcome}")

    def show(self, command, *, user=None, note=""):
        """Print ``command`` as run, with $DEMO for the demo folder and sshca for its path."""
        text = " ".join(shlex.quote(part) for part in command)
        text = text.replace(self.sshca, "sshca").replace(str(self.base), "$DEMO")
        who = f"[{user}] " if user else ""
        self.say(f"    {who}$ {text}{note}")

    def run(self, command, *, user=None, input_text=None, env=None, check=True, note=""):
        """Print and run one command; return the completed process.

        ``user`` selects the demo user whose HOME (and so sshca login) is used.
        With ``check``, a non-zero exit fails the current step.
        """
        self.show(command, user=user, note=note)
        full_env = dict(os.environ)
        full_env["SSHCA_CONFIG"] = str(self.config)
        full_env.pop("SSHCA_SERVER", None)
        full_env.pop("SSHCA_TOKEN", None)
        full_env.pop("SSH_AUTH_SOCK", None)
        if user is not None:
            home = self.base / "home" / user
            full_env["HOME"] = str(home)
            full_env["XDG_CONFIG_HOME"] = str(home / ".config")
            full_env.pop("SSHCA_CONFIG")
        if env:
            full_env.update(env)
        completed = subprocess.run(
            command,
            input=input_text,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=120,
        )
        if self.verbose:
            for line in (completed.stdout + completed.stderr).splitlines():
                self.say(f"      | {line}")
        if check and completed.returncode != 0:
            output = (completed.stderr or completed.stdout).strip().splitlines()
            last = output[-1] if output else "no output"
            raise StepFailed(self.current, f"{' '.join(command[:3])} ... exited {completed.returncode}: {last}")
        return completed

    def start(self, command, log_name, **kwargs):
        log = open(self.base / log_name, "wb")
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        log.close()
        self.processes.append(process)
        return process

    def stop_all(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # -- set-up ----------------------------------------------------------------

    def write_policy_and_inventory(self):
        (self.data_dir / "inventory.toml").write_text(textwrap.dedent(f"""\
            # Two demo hosts, each a real sshd on its own loopback port.
            [[hosts]]
            name = "db1"
            groups = ["prod-db"]
            logins = ["{self.login}"]

            [[hosts]]
            name = "db2"
            groups = ["prod-web"]
            logins = ["{self.login}"]
            """))
        (self.data_dir / "policy.toml").write_text(textwrap.dedent(f"""\
            [defaults]
            max_duration = "8h"
            request_ttl = "24h"
            clock_skew = "60s"

            # Engineers of group sre may ask for the production databases,
            # with two approvals from the database leads.
            [[rules]]
            name = "sre-prod-db"
            requesters = ["group:sre"]
            hosts = ["group:prod-db"]
            logins = ["{self.login}"]
            max_duration = "4h"
            approvals = 2
            approvers = ["group:dba-leads"]
            extensions = ["permit-pty"]

            # Database leads may ask too; another lead must approve.
            [[rules]]
            name = "dba-leads-prod-db"
            requesters = ["group:dba-leads"]
            hosts = ["group:prod-db"]
            logins = ["{self.login}"]
            max_duration = "1h"
            approvals = 1
            approvers = ["group:dba-leads"]
            extensions = ["permit-pty"]
            """))

    def set_up_server(self):
        self.step("admin creates the CA, the users and their tokens (SQLite)")
        command = [self.sshca, "admin", "init", str(self.data_dir)]
        self.run(command)
        self.write_policy_and_inventory()
        self.result(f"CA key, database, policy and inventory in {self.data_dir}")

        users = {
            "alice": ["--group", "sre"],
            "bob": ["--group", "dba-leads"],
            "carol": ["--group", "dba-leads"],
            "dave": ["--auditor"],
        }
        for name, options in users.items():
            self.run([self.sshca, "admin", "user", "add", name, *options])
        self.result("users alice (engineer, sre), bob and carol (approvers, dba-leads), dave (auditor)")

        self.tokens = {}
        for name in users:
            token = self.run([self.sshca, "admin", "token", "create", name]).stdout.strip()
            if not token or "\n" in token:
                raise StepFailed(self.current, f"token create printed {token!r} instead of one token")
            self.tokens[name] = token

        self.step("start the sshca service on 127.0.0.1")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [self.sshca, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "2"]
        self.show(command, note=" &")
        env = dict(os.environ, SSHCA_CONFIG=str(self.config))
        server = self.start(command, "server.log", env=env)
        wait_for_port(self.port, server, "sshca serve")
        health = requests.get(f"{self.url}/healthz", timeout=5)
        if health.status_code != 200:
            raise StepFailed(self.current, f"/healthz returned {health.status_code}")
        self.result(f"listening on {self.url}, /healthz OK")

        for name in users:
            home = self.base / "home" / name
            home.mkdir(parents=True, mode=0o700)
            self.run(
                [self.sshca, "login", "--server", self.url],
                user=name,
                input_text=self.tokens[name] + "\n",
                note="   (token on standard input)",
            )

    def set_up_host(self, name):
        root = self.base / "hosts" / name
        ssh_dir = root / "etc" / "ssh"
        ssh_dir.mkdir(parents=True, mode=0o755)
        host_key = ssh_dir / "ssh_host_ed25519_key"
        self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(host_key)])
        port = free_port()
        # The host's own sshd_config: what a loopback test host needs, plus
        # the Include that picks up the drop-in sshca renders.
        main_config = ssh_dir / "sshd_config"
        main_config.write_text(textwrap.dedent(f"""\
            Include {ssh_dir}/sshd_config.d/*.conf
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {host_key}
            PidFile {root}/sshd.pid
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            AuthorizedKeysFile none
            """))

        rendered = self.base / "rendered" / name
        render = [
            self.sshca, "hostconfig", "render", name,
            "--inventory", str(self.data_dir / "inventory.toml"),
            "--server", self.url,
            "--prefix", str(root),
            "--out", str(rendered),
        ]
        self.run(render)
        install = [self.sshca, "hostconfig", "install", str(rendered), "--sshd-config", str(main_config)]
        self.run(install)

        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        command = [SSHD, "-D", "-e", "-f", str(main_config)]
        self.show(command, note=" &")
        process = self.start(command, f"sshd-{name}.log")
        wait_for_port(port, process, f"sshd for {name}")
        self.hosts[name] = {"port": port, "root": root, "host_key": host_key}
        return port

    def set_up_hosts(self):
        self.step("render and install the sshd files of db1 and db2, start their sshd")
        for name in ("db1", "db2"):
            port = self.set_up_host(name)
            self.result(f"{name}: sshd configured only by the rendered files, listening on 127.0.0.1:{port}")

        known_hosts = self.base / "known_hosts"
        lines = []
        for name, host in self.hosts.items():
            public = Path(f"{host['host_key']}.pub").read_text().split()
            lines.append(f"{name} {public[0]} {public[1]}\n")
        known_hosts.write_text("".join(lines))

    # -- the job ---------------------------------------------------------------

    def request_access(self):
        self.step("alice requests db1 for 10 minutes; bob and carol approve")
        command = [
            self.sshca, "request", "db1", "--login", self.login, "--for", "10m", "--reason", REASON,
        ]
        output = self.run(command, user="alice").stdout
        match = re.search(r"request (\d+)", output, re.IGNORECASE)
        if match is None:
            raise StepFailed(self.current, f"no request id in the output of sshca request: {output!r}")
        self.request_id = match.group(1)
        self.result(f"request {self.request_id} is pending, 2 approvals needed")

        for approver in ("bob", "carol"):
            command = [self.sshca, "approve", self.request_id, "-m", "checked INC-1234"]
            output = self.run(command, user=approver).stdout.strip().splitlines()
            self.result(f"{approver}: {output[-1] if output else 'approved'}")

        state = self.api_get(f"/v1/requests/{self.request_id}", "alice")["state"]
        if state != "approved":
            raise StepFailed(self.current, f"request {self.request_id} is {state}, expected approved")
        self.result(f"request {self.request_id} is approved")

    def fetch_certificate(self):
        self.step("alice fetches her certificate")
        command = [self.sshca, "cert", self.request_id]
        self.run(command, user="alice")
        key_dir = self.base / "home" / "alice" / ".ssh" / "sshca"
        certificates = sorted(key_dir.glob("*-cert.pub"))
        if len(certificates) != 1:
            raise StepFailed(self.current, f"expected one certificate in {key_dir}, found {len(certificates)}")
        self.certificate = certificates[0]
        self.key = Path(str(self.certificate).removesuffix("-cert.pub"))
        listing = self.run(["ssh-keygen", "-L", "-f", str(self.certificate)]).stdout
        principals = re.search(r"Principals:\s*\n((?:\s+\S+\n)+)", listing)
        shown = ", ".join(principals.group(1).split()) if principals else "?"
        valid = re.search(r"Valid: (.*)", listing)
        self.result(f"{self.certificate.name}: principals {shown}; {valid.group(1) if valid else ''}")
        self.write_ssh_config()

    def write_ssh_config(self):
        """Write the ssh_config entries an engineer would keep in ~/.ssh/config."""
        self.ssh_config = self.base / "home" / "alice" / ".ssh" / "config"
        entries = []
        for name, host in self.hosts.items():
            entries.append(textwrap.dedent(f"""\
                Host {name}
                    HostName 127.0.0.1
                    Port {host['port']}
                    User {self.login}
                    HostKeyAlias {name}
                    IdentityFile {self.key}
                    CertificateFile {self.certificate}
                    IdentitiesOnly yes
                    IdentityAgent none
                    BatchMode yes
                    UserKnownHostsFile {self.base / 'known_hosts'}
                    StrictHostKeyChecking yes
                """))
        self.ssh_config.write_text("\n".join(entries))
        self.ssh_config.chmod(0o600)
        shown = str(self.ssh_config).replace(str(self.base), "$DEMO")
        self.result(f"wrote {shown}: Host db1 and db2 with IdentityFile {self.key.name}, "
                    f"CertificateFile {self.certificate.name}, IdentitiesOnly yes")

    def ssh(self, host, remote_command):
        command = ["ssh", "-F", str(self.ssh_config), host, remote_command]
        completed = self.run(command, user="alice", check=False)
        return command, completed

    def login_to_db1(self):
        self.step("alice runs plain ssh to db1")
        command, completed = self.ssh("db1", "hostname; id -un")
        lines = completed.stdout.split()
        if completed.returncode != 0 or not lines or lines[-1] != self.login:
            raise StepFailed(self.current, f"ssh to db1 failed: {completed.stderr.strip()}")
        self.result(f"logged in: {' / '.join(lines)}")

    def refused_on_db2(self):
        self.step("the same certificate is refused by db2")
        command, completed = self.ssh("db2", "true")
        if completed.returncode == 0:
            raise StepFailed(self.current, "db2 accepted a certificate issued for db1 only")
        self.result(f"refused: {completed.stderr.strip().splitlines()[-1]}")

    def self_approval_refused(self):
        self.step("bob requests access himself and tries to approve it")
        command = [self.sshca, "request", "db1", "--login", self.login, "--for", "30m", "--reason", "check backups"]
        output = self.run(command, user="bob").stdout
        match = re.search(r"request (\d+)", output, re.IGNORECASE)
        if match is None:
            raise StepFailed(self.current, f"no request id in the output of sshca request: {output!r}")
        own_id = match.group(1)
        self.result(f"request {own_id} is pending")

        command = [self.sshca, "approve", own_id, "-m", "looks fine to me"]
        completed = self.run(command, user="bob", check=False)
        if completed.returncode == 0:
            raise StepFailed(self.current, "bob approved his own request")
        message = (completed.stderr or completed.stdout).strip().splitlines()
        self.result(f"refused (exit {completed.returncode}): {message[-1] if message else ''}")

    def revoke_and_sync(self):
        self.step("alice ends her access early; db1 pulls the KRL and refuses her certificate")
        command = [self.sshca, "revoke", self.request_id, "-m", "replication fixed"]
        self.run(command, user="alice")
        self.result(f"request {self.request_id} revoked")

        sync = self.krl_sync_command("db1")
        completed = self.run(sync)
        self.result(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "KRL updated")

        command, completed = self.ssh("db1", "hostname; id -un")
        if completed.returncode == 0:
            raise StepFailed(self.current, "db1 still accepts the revoked certificate")
        self.result(f"refused: {completed.stderr.strip().splitlines()[-1]}")

    def krl_sync_command(self, name):
        scripts = list(self.hosts[name]["root"].rglob("sshca-krl-sync"))
        installed = [path for path in scripts if os.access(path, os.X_OK)]
        if not installed:
            raise StepFailed(self.current, f"no installed sshca-krl-sync under {self.hosts[name]['root']}")
        return [str(installed[0])]

    def auditor_view(self):
        self.step("dave the auditor lists certificates and events, and verifies the chain")
        command = [self.sshca, "audit", "certs"]
        output = self.run(command, user="dave").stdout
        self.result(f"{max(len(output.strip().splitlines()) - 1, 0)} certificate(s)")
        self.say(textwrap.indent(output.rstrip(), "      "))

        command = [self.sshca, "audit", "events"]
        output = self.run(command, user="dave").stdout
        self.result(f"{max(len(output.strip().splitlines()) - 1, 0)} event(s)")
        self.say(textwrap.indent(output.rstrip(), "      "))

        command = [self.sshca, "audit", "verify"]
        completed = self.run(command, user="dave")
        self.result(completed.stdout.strip().splitlines()[-1])

    def api_get(self, path, user):
        response = requests.get(
            self.url + path, headers={"Authorization": f"Bearer {self.tokens[user]}"}, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def run_all(self):
        self.set_up_server()
        self.set_up_hosts()
        self.request_access()
        self.fetch_certificate()
        self.login_to_db1()
        self.refused_on_db2()
        self.self_approval_refused()
        self.revoke_and_sync()
        self.auditor_view()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the demo folder after the run")
    parser.add_argument("--verbose", action="store_true", help="show the full output of every command")
    args = parser.parse_args()

    for tool in (SSHD, "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            print(f"demo: {tool} not found; run `make demo`, which installs openssh-server", file=sys.stderr)
            return 1

    if os.geteuid() != 0:
        print("demo: run it as root: it installs root-owned host files and starts sshd", file=sys.stderr)
        return 1

    base = secure_base_dir()
    demo = Demo(base, args.verbose)
    # SIGTERM ends the demo the same way Ctrl-C does, so the cleanup runs.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    failed = True
    try:
        print(f"sshca demo in DEMO={base}; sshca is {demo.sshca}")
        demo.run_all()
        failed = False
        print("\nDemo finished: every step behaved as stated.")
        return 0
    except StepFailed as error:
        print(f"\nDEMO FAILED at {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted; stopping what it started", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, subprocess.SubprocessError, requests.RequestException) as error:
        print(f"\nDEMO FAILED at step {demo.current}: {error}", file=sys.stderr)
        return 1
    finally:
        demo.stop_all()
        if failed or args.keep:
            print(f"logs and files kept in {base}", file=sys.stderr if failed else sys.stdout)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
