"""Render the files a host needs to trust sshca.

For one inventory host, :func:`render_host` builds:

- ``sshd_config.d/50-sshca.conf``: TrustedUserCAKeys, AuthorizedPrincipalsFile,
  RevokedKeys and ``LogLevel VERBOSE``, and nothing else;
- ``sshca/user_ca.pub``: every trusted CA public key;
- ``sshca/auth_principals/<login>`` for each login of the host;
- ``sshca/revoked.krl``: a valid empty KRL, because sshd rejects every key
  when RevokedKeys names a missing or unreadable file;
- ``sshca/krl-probe.pub``: a throwaway public key that sshca-krl-sync checks
  each downloaded KRL against;
- ``sshca-krl-sync`` and its systemd service and timer;
- ``manifest.json``: where each file goes on the host and with which mode,
  read by ``sshca hostconfig install``.

The output directory mirrors the sshd directory (``/etc/ssh`` by default)
for the first five. Every path written into a file is the final absolute
path on the host.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path, PurePosixPath

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca import krl, principals
from ca.errors import CAError
from ca.keys import ca_key_type, fingerprint
from hostconfig.inventory import Host, Inventory

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
DROPIN = "sshd_config.d/50-sshca.conf"
SCRIPT_NAME = "sshca-krl-sync"

# The OpenSSH names of the key types ca.keys can hold as a CA key.
CA_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521", "ssh-rsa")

# sshd_config splits arguments on white space and expands %-tokens in
# AuthorizedPrincipalsFile, and the script puts paths into shell words, so a
# host path is kept to characters that need no quoting anywhere.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


class RenderError(CAError):
    """Render options or inputs that cannot produce a working host configuration."""

    default_code = "render_error"


@dataclass(frozen=True)
class HostPaths:
    """Absolute paths on the host for every rendered file.

    ``prefix`` is prepended to the standard locations, so several sshd
    instances on one machine (tests, the demo) can each get their own tree.
    """

    sshd_dir: str = "/etc/ssh"
    sbin_dir: str = "/usr/local/sbin"
    systemd_dir: str = "/etc/systemd/system"

    @classmethod
    def under(cls, prefix: str = "/", sshd_dir: str | None = None) -> HostPaths:
        """Return the standard layout below ``prefix``, with an optional other sshd directory."""
        base = PurePosixPath(_check_path(prefix, "prefix"))
        paths = cls(
            sshd_dir=str(base / "etc/ssh") if sshd_dir is None else sshd_dir,
            sbin_dir=str(base / "usr/local/sbin"),
            systemd_dir=str(base / "etc/systemd/system"),
        )
        for name in ("sshd_dir", "sbin_dir", "systemd_dir"):
            _check_path(getattr(paths, name), name.replace("_", "-"))
        return paths

    @property
    def sshca_dir(self) -> str:
        return f"{self.sshd_dir}/sshca"

    @property
    def dropin(self) -> str:
        return f"{self.sshd_dir}/{DROPIN}"

    @property
    def user_ca(self) -> str:
        return f"{self.sshca_dir}/user_ca.pub"

    @property
    def principals_dir(self) -> str:
        return f"{self.sshca_dir}/auth_principals"

    @property
    def krl(self) -> str:
        return f"{self.sshca_dir}/revoked.krl"

    @property
    def probe(self) -> str:
        return f"{self.sshca_dir}/krl-probe.pub"

    @property
    def script(self) -> str:
        return f"{self.sbin_dir}/{SCRIPT_NAME}"


@dataclass(frozen=True)
class SyncSettings:
    """Settings baked into sshca-krl-sync and its timer."""

    server: str
    max_age: timedelta = timedelta(hours=1)
    interval: timedelta = timedelta(minutes=5)
    ca_bundle: str = ""


@dataclass(frozen=True)
class RenderedFile:
    """One rendered file: its path in the output directory, its path on the host, its mode."""

    source: str
    target: str
    mode: int
    content: bytes
    # Files that install writes only when the host has none yet (the KRL,
    # which sshca-krl-sync keeps newer than any rendered copy).
    keep_existing: bool = False


@dataclass(frozen=True)
class RenderedHost:
    host: str
    paths: HostPaths
    files: list[RenderedFile] = field(default_factory=list)


def _check_path(value: str, option: str) -> str:
    if not _SAFE_PATH.fullmatch(value) or "/../" in f"{value}/" or "/./" in f"{value}/":
        raise RenderError(
            f"invalid {option} {value!r}: use an absolute path of letters, digits and ._+-/",
            field=option, value=value)
    return value


def parse_ca_keys(text: str, source: str) -> list[str]:
    """Parse authorized_keys-style CA public key lines into canonical "type base64 comment" lines.

    Blank lines and ``#`` comments are skipped, and a key listed twice is kept
    once. Raises RenderError naming the source and line for anything that is
    not a plain public key (certificates included) and when no key is found.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        parts = line.split(None, 2)
        if parts[0].endswith("-cert-v01@openssh.com"):
            raise RenderError(
                f"{source}: line {number}: a certificate, not a CA public key; give the "
                "CA's public key line", field="ca_keys", value=line[:80])
        if parts[0] not in CA_KEY_TYPES:
            raise RenderError(
                f"{source}: line {number}: unsupported CA key type {parts[0][:40]!r}; "
                f"use one of {', '.join(CA_KEY_TYPES)}", field="ca_keys", value=line[:80])
        try:
            key = serialization.load_ssh_public_key(" ".join(parts[:2]).encode("ascii"))
            ca_key_type(key)
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise RenderError(
                f"{source}: line {number}: not an SSH public key of a supported CA type; "
                "expected '<type> <base64> [comment]'", field="ca_keys", value=line[:80]) from None

        key_fingerprint = fingerprint(key)
        if key_fingerprint in seen:
            continue
        seen.add(key_fingerprint)

        canonical = key.public_bytes(serialization.Encoding.OpenSSH,
                                     serialization.PublicFormat.OpenSSH).decode("ascii")
        comment = parts[2] if len(parts) > 2 else ""
        lines.append(f"{canonical} {comment}".rstrip())

    if not lines:
        raise RenderError(f"{source}: no CA public key found", field="ca_keys", value=source)
    return lines


def render_host(inventory: Inventory, host_name: str, *, ca_keys: list[str],
                paths: HostPaths, sync: SyncSettings) -> RenderedHost:
    """Build every file for ``host_name``.

    Raises RenderError for a host missing from the inventory or an empty CA
    key list, and KRLError when the empty KRL cannot be built.
    """
    host = inventory.hosts.get(host_name)
    if host is None:
        raise RenderError(
            f"host {host_name!r} is not in the inventory {inventory.source}; "
            "add it there or check the name", field="host", value=host_name)
    if not ca_keys:
        raise RenderError("no CA public key to trust; pass --ca-keys or --server",
                          field="ca_keys", value=[])

    files = [
        RenderedFile(DROPIN, paths.dropin, 0o644, _render_dropin(host, paths)),
        RenderedFile("sshca/user_ca.pub", paths.user_ca, 0o644,
                     "".join(f"{line}\n" for line in ca_keys).encode("ascii")),
        RenderedFile("sshca/revoked.krl", paths.krl, 0o644,
                     krl.build_krl(serials=[], public_keys=[], ca_public_keys=ca_keys),
                     keep_existing=True),
        RenderedFile("sshca/krl-probe.pub", paths.probe, 0o644, _probe_key()),
    ]
    for login in host.logins:
        lines = principals.host_principals(host.name, host.groups, login)
        files.append(RenderedFile(
            f"sshca/auth_principals/{login}", f"{paths.principals_dir}/{login}", 0o644,
            "".join(f"{line}\n" for line in lines).encode("ascii")))

    files += [
        RenderedFile(SCRIPT_NAME, paths.script, 0o755, _render_script(paths, sync)),
        RenderedFile(f"{SCRIPT_NAME}.service", f"{paths.systemd_dir}/{SCRIPT_NAME}.service",
                     0o644, _render_template(f"{SCRIPT_NAME}.service", {
                         "SCRIPT": paths.script, "KRL_DIR": paths.sshca_dir})),
        RenderedFile(f"{SCRIPT_NAME}.timer", f"{paths.systemd_dir}/{SCRIPT_NAME}.timer",
                     0o644, _render_template(f"{SCRIPT_NAME}.timer", {
                         "INTERVAL": _systemd_span(sync.interval),
                         "DELAY": _systemd_span(min(sync.interval / 5, timedelta(minutes=1)))})),
    ]
    return RenderedHost(host=host.name, paths=paths, files=files)


def write_rendered(rendered: RenderedHost, out: str | Path) -> None:
    """Write the rendered files and manifest.json into ``out``, created if missing.

    Files already in ``out`` are replaced, and an old ``auth_principals``
    entry for a login the host no longer has is removed, so install never
    copies it back.
    """
    out = Path(out)
    principals_dir = out / "sshca/auth_principals"
    if principals_dir.is_dir():
        wanted = {Path(item.source).name for item in rendered.files
                  if item.source.startswith("sshca/auth_principals/")}
        for stale in principals_dir.iterdir():
            if stale.name not in wanted:
                stale.unlink()

    for item in rendered.files:
        path = out / item.source
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.content)
        os.chmod(path, item.mode)

    manifest = {
        "format": MANIFEST_FORMAT,
        "host": rendered.host,
        "sshd_dir": rendered.paths.sshd_dir,
        "dropin": rendered.paths.dropin,
        "principals_dir": rendered.paths.principals_dir,
        "directories": [rendered.paths.sshca_dir, rendered.paths.principals_dir],
        "files": [
            {"source": item.source, "target": item.target, "mode": f"{item.mode:04o}",
             "keep_existing": item.keep_existing}
            for item in rendered.files
        ],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _render_dropin(host: Host, paths: HostPaths) -> bytes:
    # sshd keeps the first value it reads for most keywords, so a value set
    # earlier (in the main file before its Include, or in a lower-numbered
    # drop-in) wins over this file. install checks the effective values.
    text = (
        f"# sshca trust for host {host.name}, written by `sshca hostconfig render`.\n"
        "# Do not edit: render again and install instead.\n"
        f"TrustedUserCAKeys {paths.user_ca}\n"
        f"AuthorizedPrincipalsFile {paths.principals_dir}/%u\n"
        f"RevokedKeys {paths.krl}\n"
        "# VERBOSE logs the key ID and serial of each certificate login.\n"
        "LogLevel VERBOSE\n"
    )
    return text.encode("ascii")


def _render_script(paths: HostPaths, sync: SyncSettings) -> bytes:
    return _render_template("sshca-krl-sync.sh", {
        "SERVER": _shell_default(sync.server, "server"),
        "KRL": paths.krl,
        "PROBE": paths.probe,
        "MAX_AGE": str(int(sync.max_age.total_seconds())),
        "CA_BUNDLE": _shell_default(sync.ca_bundle, "krl-ca-bundle"),
    })


def _shell_default(value: str, option: str) -> str:
    # The value sits inside "${NAME:=...}", where quoting would become part
    # of the value; reject what would need it.
    if re.search(r"[\s\"'`$\\}]", value):
        raise RenderError(f"invalid value {value!r} for the sync script: it must not contain "
                          "white space, quotes, '$', '\\' or '}'", field=option, value=value)
    return value


def _render_template(name: str, values: dict[str, str]) -> bytes:
    text = resources.files("hostconfig").joinpath(f"templates/{name}").read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text.encode("utf-8")


def _systemd_span(span: timedelta) -> str:
    return f"{max(int(span.total_seconds()), 1)}s"


def _probe_key() -> bytes:
    # The private half is discarded, so no certificate exists for this key
    # and no genuine KRL lists it.
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line + b" sshca-krl-probe\n"


__all__ = ["HostPaths", "RenderError", "RenderedFile", "RenderedHost", "SyncSettings",
           "parse_ca_keys", "render_host", "write_rendered"]
