"""Install rendered host files and check that sshd accepts and uses them.

``install_rendered`` copies each file of a rendered directory to ``root`` +
its target path. ``root`` is ``/`` on the host itself, or the mount point of
an image being built. Each file is owned by root, has the manifest's mode
and replaces the old one by rename from a temporary file in the same
directory. Then ``check_sshd_config`` runs ``sshd -t`` and checks that the
main config includes the drop-in and that sshd's effective settings are the
drop-in's.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ca.errors import CAError
from hostconfig.render import MANIFEST, MANIFEST_FORMAT

# sshd resolves a relative Include path against its compiled-in directory
# (SSHDIR, /etc/ssh on Debian and most builds).
SSHD_BUILTIN_DIR = "/etc/ssh"


class InstallError(CAError):
    """A rendered directory that cannot be installed, or an sshd configuration that rejects it."""

    default_code = "install_error"


@dataclass
class InstallResult:
    """Paths that install wrote, kept (an existing KRL) and removed (stale principals files)."""

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def read_manifest(rendered_dir: str | Path) -> dict:
    """Read and check ``manifest.json`` of a rendered directory.

    Raises InstallError when it is missing, of another format, or names a
    source outside the directory or a target that is not absolute.
    """
    rendered_dir = Path(rendered_dir)
    path = rendered_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InstallError(f"{path} not found: pass a directory written by "
                           "`sshca hostconfig render`", field="dir", value=str(rendered_dir)) from None
    except (OSError, ValueError) as exc:
        raise InstallError(f"failed to read {path}: {exc}", field="dir",
                           value=str(rendered_dir)) from None

    if manifest.get("format") != MANIFEST_FORMAT:
        raise InstallError(f"{path}: unsupported manifest format {manifest.get('format')!r}; "
                           "render the host again with this version of sshca",
                           field="dir", value=str(rendered_dir))

    for item in manifest["files"]:
        source = Path(item["source"])
        if source.is_absolute() or ".." in source.parts:
            raise InstallError(f"{path}: invalid source {item['source']!r}", field="dir",
                               value=item["source"])
        if not item["target"].startswith("/") or ".." in Path(item["target"]).parts:
            raise InstallError(f"{path}: invalid target {item['target']!r}", field="dir",
                               value=item["target"])
    return manifest


def install_rendered(rendered_dir: str | Path, root: str | Path = "/") -> InstallResult:
    """Copy the rendered files below ``root``, owned by root with the manifest's modes.

    The KRL is written only when the host has none, because the one on the
    host is kept current by sshca-krl-sync. Principals files of logins no
    longer rendered are removed, so a login dropped from the inventory stops
    working. Raises InstallError.
    """
    rendered_dir = Path(rendered_dir)
    manifest = read_manifest(rendered_dir)
    result = InstallResult()

    root_path = Path(root).resolve()
    if root_path != Path("/") and Path(manifest["sshd_dir"]).is_relative_to(root_path):
        raise InstallError(
            f"the rendered paths already start with {root_path} (render --prefix or "
            f"--sshd-dir), so --root {root} would place the files under {root_path} twice; "
            "install without --root", field="root", value=str(root))

    for directory in manifest["directories"]:
        _make_directory(_under(root, directory))

    for item in manifest["files"]:
        target = _under(root, item["target"])
        if item.get("keep_existing") and target.exists():
            result.kept.append(str(target))
            continue

        source = rendered_dir / item["source"]
        try:
            content = source.read_bytes()
        except OSError as exc:
            raise InstallError(f"failed to read {source}: {exc.strerror}; render the host again",
                               field="dir", value=str(source)) from None
        _make_directory(target.parent)
        _write_atomic(target, content, int(item["mode"], 8))
        result.written.append(str(target))

    principals_dir = _under(root, manifest["principals_dir"])
    wanted = {str(_under(root, item["target"])) for item in manifest["files"]}
    for entry in sorted(principals_dir.iterdir()):
        if str(entry) not in wanted and entry.is_file():
            entry.unlink()
            result.removed.append(str(entry))

    return result


def check_sshd_config(manifest: dict, *, root: str | Path = "/", sshd_config: str | Path | None = None,
                      sshd: str = "/usr/sbin/sshd") -> list[str]:
    """Check the installed drop-in with sshd; return notes about checks that could not run.

    With ``root`` "/", runs ``sshd -t`` and ``sshd -T`` on the main config
    (``sshd_config`` or ``<sshd_dir>/sshd_config``) and compares the effective
    TrustedUserCAKeys, AuthorizedPrincipalsFile, RevokedKeys and LogLevel
    with the drop-in. With another root, sshd would read the running host's
    files, so only the drop-in itself is checked with ``sshd -t``. Raises
    InstallError when sshd rejects the configuration, when the main config
    does not Include the drop-in, or when another file overrides a setting.
    """
    notes: list[str] = []
    dropin_target = manifest["dropin"]
    if sshd_config is None:
        sshd_config = _under(root, f"{manifest['sshd_dir']}/sshd_config")
    sshd_config = Path(sshd_config)

    _check_include(sshd_config, dropin_target, manifest["sshd_dir"])

    if Path(root).resolve() != Path("/"):
        _sshd_test_standalone(_under(root, dropin_target), sshd)
        notes.append(f"sshd -t checked only the drop-in, because {sshd_config} refers to paths "
                     f"outside {root}; run `sshd -t` on the host after it starts from the image")
        return notes

    _check_principals_path(Path(manifest["principals_dir"]))
    _run_sshd(sshd, "-t", "-f", str(sshd_config))
    # NOTE: sshd -T without -C skips Match blocks, so a Match block that
    # overrides these settings for some users or addresses is not detected.
    effective = _effective_settings(sshd, sshd_config)
    expected = _dropin_settings(Path(dropin_target).read_text(encoding="utf-8"))
    for keyword, value in expected.items():
        actual = effective.get(keyword.lower())
        if actual != value:
            raise InstallError(
                f"sshd uses {keyword} {actual!r}, not {value!r} from {dropin_target}: "
                f"another setting is read first (sshd keeps the first value it reads); "
                f"remove it from {sshd_config} or the lower-numbered drop-ins",
                field="sshd_config", value=str(sshd_config))
    return notes


def _check_include(sshd_config: Path, dropin: str, sshd_dir: str) -> None:
    try:
        text = sshd_config.read_text(encoding="utf-8")
    except OSError as exc:
        raise InstallError(f"failed to read the main sshd config {sshd_config}: {exc.strerror}; "
                           "pass its path with --sshd-config", field="sshd_config",
                           value=str(sshd_config)) from None

    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if not words or words[0].lower() != "include":
            continue
        for pattern in words[1:]:
            if not pattern.startswith("/"):
                pattern = f"{SSHD_BUILTIN_DIR}/{pattern}"
            if fnmatch.fnmatchcase(dropin, pattern):
                return

    raise InstallError(
        f"{sshd_config} does not include {dropin}, so sshd ignores it; add the line "
        f"`Include {sshd_dir}/sshd_config.d/*.conf` near the top of {sshd_config}",
        code="dropin_not_included", field="sshd_config", value=str(sshd_config))


def _check_principals_path(principals_dir: Path) -> None:
    # sshd opens AuthorizedPrincipalsFile with the login's user ID, and
    # StrictModes rejects it when the file or a parent directory is not
    # owned by root (or the login) or is writable by group or others.
    for directory in (principals_dir, *principals_dir.parents):
        info = directory.stat()
        if info.st_uid != 0 or info.st_mode & 0o022 or not info.st_mode & 0o001:
            raise InstallError(
                f"sshd cannot use the principals files below {directory} (owner uid "
                f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}): every directory above "
                "them must be owned by root, not writable by group or others, and searchable "
                f"by others; run `chown root: {directory} && chmod 755 {directory}`",
                code="insecure_directory", field="root", value=str(directory))


def _run_sshd(sshd: str, *args: str) -> str:
    try:
        completed = subprocess.run([sshd, *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise InstallError(f"sshd not found at {sshd}; pass its path with --sshd",
                           field="sshd", value=sshd) from None
    if completed.returncode != 0:
        raise InstallError(f"`{shlex.join([sshd, *args])}` failed: {completed.stderr.strip()}",
                           code="sshd_config_invalid", field="sshd_config", value=args[-1])
    return completed.stdout


def _sshd_test_standalone(dropin: Path, sshd: str) -> None:
    # sshd -t needs a host key, and the image's keys may not exist yet, so a
    # throwaway key is used.
    with tempfile.TemporaryDirectory(prefix="sshca-install-") as tmp:
        host_key = Path(tmp, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                       check=True, capture_output=True)
        config = Path(tmp, "sshd_config")
        config.write_text(f"HostKey {host_key}\n" + dropin.read_text(encoding="utf-8"),
                          encoding="utf-8")
        _run_sshd(sshd, "-t", "-f", str(config))


def _effective_settings(sshd: str, sshd_config: Path) -> dict[str, str]:
    settings = {}
    for line in _run_sshd(sshd, "-T", "-f", str(sshd_config)).splitlines():
        keyword, _, value = line.partition(" ")
        settings[keyword.lower()] = value
    return settings


def _dropin_settings(text: str) -> dict[str, str]:
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, value = line.partition(" ")
            settings[keyword] = value.strip()
    return settings


def _under(root: str | Path, target: str) -> Path:
    return Path(root) / target.lstrip("/")


def _make_directory(path: Path) -> None:
    # Directories sshd reads through must be root-owned and not writable by
    # group or others, or StrictModes rejects the principals files.
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o755)


def _write_atomic(target: Path, content: bytes, mode: int) -> None:
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as tmp:
            tmp.write(content)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chown(tmp_name, 0, 0)
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


__all__ = ["InstallError", "InstallResult", "check_sshd_config", "install_rendered",
           "read_manifest"]
