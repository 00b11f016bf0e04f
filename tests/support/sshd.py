"""A real OpenSSH sshd on 127.0.0.1 for tests, with OpenSSH-client and paramiko helpers.

``Sshd`` runs ``/usr/sbin/sshd -D -e`` on a free loopback port, either from a
configuration it generates (trusted CA keys, AuthorizedPrincipalsFile per
login and a KRL, all in its own directory) or from an sshd_config the caller
provides. The fixtures ``sshd``, ``sshd_factory`` and ``sshd_module_factory``
start instances and stop them afterwards; a test that fails shows the sshd log.

sshd's StrictModes checks that the AuthorizedPrincipalsFile and every parent
directory are not writable by group or others, and /tmp (mode 1777) fails
that check. So each instance lives in a fresh directory under a parent that
passes it (/run when running as root), created by ``make_secure_dir``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import paramiko
import pytest

SSHD_BINARY = "/usr/sbin/sshd"
DEFAULT_HOSTNAME = "db1.test.example"
START_TIMEOUT_SECONDS = 15.0
COMMAND_TIMEOUT_SECONDS = 30.0

# The OpenSSH client options every test connection uses: no agent, no user
# configuration, no known_hosts, only the given key and certificate.
SSH_CLIENT_OPTIONS = (
    "-F", "/dev/null",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "IdentitiesOnly=yes",
    "-o", "IdentityAgent=none",
    "-o", "PasswordAuthentication=no",
    "-o", "KbdInteractiveAuthentication=no",
    "-o", "ConnectTimeout=10",
    "-o", "LogLevel=ERROR",
)


def current_login() -> str:
    """Return the login of the user running the tests (root in CI)."""
    return pwd.getpwuid(os.getuid()).pw_name


def _is_secure_dir(path: Path) -> bool:
    """Tell whether sshd's StrictModes accepts ``path`` and all its parents."""
    uid = os.getuid()
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid not in (0, uid) or info.st_mode & 0o022:
            return False
    return True


def _secure_parent() -> Path:
    candidates = []
    if os.environ.get("SSHCA_TEST_SECURE_DIR"):
        candidates.append(Path(os.environ["SSHCA_TEST_SECURE_DIR"]))
    candidates += [Path("/run"), Path.home()]

    for candidate in candidates:
        if candidate.is_dir() and os.access(candidate, os.W_OK) and _is_secure_dir(candidate.resolve()):
            return candidate.resolve()

    raise RuntimeError(
        "no directory for the sshd test files passes sshd's StrictModes check "
        f"(tried {', '.join(map(str, candidates))}); set SSHCA_TEST_SECURE_DIR to a writable "
        "directory whose parents are owned by root or you and not group- or world-writable"
    )


def make_secure_dir(prefix: str = "sshca-test-") -> Path:
    """Create a fresh directory (mode 0700) that sshd's StrictModes accepts.

    The caller removes it (``shutil.rmtree``) when done.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_secure_parent()))


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _sshd_supports(option: str) -> bool:
    """Tell whether this sshd accepts a configuration option ("Keyword=value")."""
    with tempfile.TemporaryDirectory(prefix="sshca-sshd-probe-") as tmp:
        host_key = Path(tmp) / "host_key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
            check=True,
            capture_output=True,
        )
        result = subprocess.run(
            [SSHD_BINARY, "-t", "-f", "/dev/null", "-h", str(host_key), "-o", option],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
            check=False,
        )
    return result.returncode == 0


def base_config_lines(*, log_level: str = "VERBOSE") -> list[str]:
    """Return the sshd_config lines a test sshd needs besides the CA, principals and KRL settings.

    A caller that writes its own sshd_config starts from these lines, so that
    root can log in with a certificate and nothing else.
    """
    lines = [
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile none",
        "StrictModes yes",
        f"LogLevel {log_level}",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 100:30:200",
    ]
    # OpenSSH 9.8 and later penalise addresses with failed logins, which
    # would slow down the refusal tests that all come from 127.0.0.1.
    if _sshd_supports("PerSourcePenalties=no"):
        lines.append("PerSourcePenalties no")
    return lines


def write_empty_krl(path: Path) -> None:
    """Write a valid KRL that revokes nothing (sshd refuses every key if RevokedKeys is missing)."""
    subprocess.run(["ssh-keygen", "-q", "-k", "-f", str(path)], check=True, capture_output=True)


class Sshd:
    """One sshd process on 127.0.0.1.

    With ``config_path`` None, ``start`` writes ``sshd_config`` in
    ``root_dir`` that trusts the CA keys in ``trusted_user_ca_keys``, reads
    principals from ``principals/<login>`` and revoked keys from
    ``revoked.krl``. ``extra_config`` lines are appended to it. Change those
    files with ``trust_ca_keys``, ``set_principals`` and ``set_krl`` at any
    time: sshd reads them again for each login.

    With ``config_path`` given, sshd runs from that file as is (it may
    Include other files), except that the port, listen address, PID file and
    an extra host key are forced on the command line. That file must not set
    ListenAddress; ``base_config_lines`` gives the other lines it needs.

    ``root_dir`` None creates a directory with ``make_secure_dir`` that
    ``stop`` removes again.
    """

    def __init__(
        self,
        root_dir: Path | None = None,
        *,
        config_path: Path | None = None,
        extra_config: Iterable[str] = (),
        hostname: str = DEFAULT_HOSTNAME,
        log_level: str = "VERBOSE",
    ) -> None:
        self._owns_root_dir = root_dir is None
        self.root_dir = Path(root_dir) if root_dir is not None else make_secure_dir("sshca-sshd-")
        self.config_path = Path(config_path) if config_path is not None else self.root_dir / "sshd_config"
        self._generated_config = config_path is None
        self.extra_config = list(extra_config)
        self.hostname = hostname
        self.log_level = log_level

        self.host_key_path = self.root_dir / "ssh_host_ed25519_key"
        self.trusted_ca_path = self.root_dir / "trusted_user_ca_keys"
        self.principals_dir = self.root_dir / "principals"
        self.krl_path = self.root_dir / "revoked.krl"
        self.log_path = self.root_dir / "sshd.log"

        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    # -- lifecycle -----------------------------------------------------

    def generate_host_key(self) -> Path:
        """Create the Ed25519 host key in root_dir unless it exists; return its path."""
        if not self.host_key_path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshd-test-host",
                 "-f", str(self.host_key_path)],
                check=True,
                capture_output=True,
            )
        return self.host_key_path

    def start(self) -> Sshd:
        """Start sshd and wait until its port accepts connections. Returns self."""
        if self._process is not None:
            raise RuntimeError("sshd is already running")

        # sshd's privilege separation needs this directory.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        self.generate_host_key()

        if self._generated_config:
            self._write_generated_files()

        # A port from free_port() can be taken by another process before sshd
        # binds it, so try a few times.
        last_error = ""
        for _attempt in range(5):
            self.port = free_port()
            self._launch()
            try:
                self._wait_until_listening()
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self._terminate()
                if "Address already in use" not in self.log_text():
                    break

        raise RuntimeError(f"sshd did not start: {last_error}\n--- sshd log ---\n{self.log_text()}")

    def stop(self) -> None:
        """Stop sshd and, if this instance created its directory, remove it."""
        self._terminate()
        if self._owns_root_dir:
            shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _launch(self) -> None:
        command = [
            SSHD_BINARY, "-D", "-e",
            "-f", str(self.config_path),
            "-h", str(self.host_key_path),
            # -p makes sshd ignore Port lines in the configuration file.
            "-p", str(self.port),
            "-o", f"ListenAddress=127.0.0.1:{self.port}",
            "-o", f"PidFile={self.root_dir / 'sshd.pid'}",
        ]
        # The log is appended to, so a retry keeps the earlier attempt's lines.
        self._log_file = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
        )

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"sshd exited with status {self._process.returncode}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on port {self.port} within {START_TIMEOUT_SECONDS} s")

    def _terminate(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- generated configuration ----------------------------------------

    def _write_generated_files(self) -> None:
        self.principals_dir.mkdir(mode=0o755, exist_ok=True)
        if not self.trusted_ca_path.exists():
            self.trusted_ca_path.write_text("")
        if not self.krl_path.exists():
            write_empty_krl(self.krl_path)

        lines = [
            *base_config_lines(log_level=self.log_level),
            f"TrustedUserCAKeys {self.trusted_ca_path}",
            f"AuthorizedPrincipalsFile {self.principals_dir}/%u",
            f"RevokedKeys {self.krl_path}",
        ]
        lines += self.extra_config

        self.config_path.write_text("\n".join(lines) + "\n")

    def trust_ca_keys(self, public_lines: Iterable[str]) -> None:
        """Replace the trusted user CA keys (authorized_keys lines)."""
        self.trusted_ca_path.write_text("".join(f"{line.strip()}\n" for line in public_lines))

    def set_principals(self, login: str, principals: Iterable[str]) -> None:
        """Replace the AuthorizedPrincipalsFile of ``login``."""
        path = self.principals_dir / login
        path.write_text("".join(f"{principal}\n" for principal in principals))
        path.chmod(0o644)

    def set_krl(self, data: bytes) -> None:
        """Replace the KRL that sshd reads for every login."""
        tmp = self.krl_path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.krl_path)

    # -- logs ------------------------------------------------------------

    def log_text(self) -> str:
        """Return everything sshd has logged so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_offset(self) -> int:
        """Return the current length of the log, to pass as ``since`` to wait_for_log."""
        return len(self.log_text())

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, since: int = 0) -> re.Match[str]:
        """Wait until the log after offset ``since`` matches the regular expression ``pattern``.

        Returns the match. Raises AssertionError, showing the log, after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log_text()[since:])
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"sshd log has no match for {pattern!r} after offset {since}:\n{self.log_text()[since:]}"
                )
            time.sleep(0.05)

    # -- clients -----------------------------------------------------------

    def host_public_key(self) -> paramiko.PKey:
        """Return the host key, so that clients can check it."""
        return paramiko.PKey.from_path(self.host_key_path)

    def ssh(
        self,
        key_path: Path,
        cert_path: Path | None = None,
        command: str = "true",
        login: str | None = None,
        *,
        extra_options: Iterable[str] = (),
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` over the OpenSSH client with a key and certificate.

        Returns the completed process: exit status 255 and "Permission
        denied" in stderr mean sshd refused the login.
        """
        arguments = ["ssh", *SSH_CLIENT_OPTIONS, "-p", str(self.port), "-i", str(key_path)]
        if cert_path is not None:
            arguments += ["-o", f"CertificateFile={cert_path}"]
        arguments += list(extra_options)
        arguments += [f"{login or current_login()}@127.0.0.1", command]
        return subprocess.run(
            arguments,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def paramiko_exec(
        self,
        key_path: Path,
        cert_path: Path | None = None,
        command: str = "true",
        login: str | None = None,
        *,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> tuple[int, str, str]:
        """Run ``command`` over paramiko and return (exit status, stdout, stderr).

        The host key is checked against this sshd's key. Raises
        paramiko.AuthenticationException when sshd refuses the login.
        """
        key = paramiko.PKey.from_path(key_path)
        if cert_path is not None:
            key.load_certificate(str(cert_path))

        client = paramiko.SSHClient()
        host_key = self.host_public_key()
        client.get_host_keys().add(f"[127.0.0.1]:{self.port}", host_key.get_name(), host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                "127.0.0.1",
                port=self.port,
                username=login or current_login(),
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
            stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
            stdin.close()
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            status = stdout.channel.recv_exit_status()
            return status, out, err
        finally:
            client.close()


def _show_logs(instances: list[Sshd]) -> None:
    # Printed during teardown: pytest shows it only when the test failed.
    for instance in instances:
        print(f"--- sshd log ({instance.log_path}) ---\n{instance.log_text()}")


@contextlib.contextmanager
def _factory() -> Iterator:
    instances: list[Sshd] = []

    def start(root_dir: Path | None = None, **kwargs: object) -> Sshd:
        instance = Sshd(root_dir, **kwargs)
        instances.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        _show_logs(instances)
        for instance in instances:
            instance.stop()


@pytest.fixture
def sshd_factory():
    """Start Sshd instances, taking the Sshd arguments; all are stopped after the test."""
    with _factory() as start:
        yield start


@pytest.fixture(scope="module")
def sshd_module_factory():
    """Like sshd_factory, but the instances live until the end of the test module."""
    with _factory() as start:
        yield start


@pytest.fixture
def sshd(sshd_factory) -> Sshd:
    """A started sshd with the generated configuration, trusting no CA yet."""
    return sshd_factory()


@pytest.fixture
def secure_dir() -> Iterator[Path]:
    """A fresh directory that passes sshd's StrictModes check, removed afterwards."""
    path = make_secure_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
