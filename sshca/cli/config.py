"""The engineer CLI's settings: the server URL and the API token.

They live in ``$XDG_CONFIG_HOME/sshca/config.toml`` (by default
``~/.config/sshca/config.toml``), mode 0600 because the token is a
credential. ``SSHCA_SERVER`` and ``SSHCA_TOKEN`` override the file.
"""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import tomli_w

from sshca.cli.errors import CommandError

SERVER_ENV = "SSHCA_SERVER"
TOKEN_ENV = "SSHCA_TOKEN"


@dataclass(frozen=True)
class Settings:
    """The sshca server URL and the API token sent to it."""

    server: str
    token: str | None

    def __repr__(self):
        # The token is a credential: keep it out of tracebacks and debug output.
        token = "set" if self.token else "missing"
        return f"Settings(server={self.server!r}, token={token})"


def config_path() -> Path:
    """Return the config file path, following the XDG base directory rules."""
    base = os.environ.get("XDG_CONFIG_HOME")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "sshca" / "config.toml"


def normalize_server_url(url: str) -> str:
    """Check that ``url`` is an http(s) URL and return it without a trailing slash.

    Raises CommandError naming the value when it is not.
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CommandError(
            f"invalid server URL {url!r}: use http://HOST:PORT or https://HOST"
        )
    if parts.query or parts.fragment:
        raise CommandError(
            f"invalid server URL {url!r}: remove the query string and fragment"
        )
    return url.rstrip("/")


def read_config(path: Path | None = None) -> dict:
    """Read the config file; return {} when it does not exist.

    Raises CommandError when the file cannot be read or is not valid TOML.
    """
    path = path or config_path()
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}; check its permissions")
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(
            f"invalid TOML in {path} ({exc}); fix the file or run `sshca login` again"
        )


def write_config(data: dict, path: Path | None = None) -> Path:
    """Write ``data`` to the config file atomically, mode 0600, and return its path.

    The temporary file is created 0600 with O_EXCL, so the token is never
    readable by others, not even for a moment, and a crash leaves the old
    file in place.
    """
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def load_settings(*, require_token: bool = True) -> Settings:
    """Return the settings from the environment and the config file.

    Environment variables win over the file. The stored token is used only
    with the stored server URL, so setting SSHCA_SERVER alone never sends it
    to another server. Raises CommandError, naming ``sshca login`` as the
    fix, when the server URL or the token is missing.
    """
    env_server = os.environ.get(SERVER_ENV)
    env_token = os.environ.get(TOKEN_ENV)
    data = read_config() if not (env_server and env_token) else {}

    server = env_server or data.get("server")
    if not server:
        raise CommandError(
            "no sshca server configured: run `sshca login --server URL` "
            f"or set {SERVER_ENV}"
        )
    server = normalize_server_url(str(server))

    token = env_token
    if not token and data.get("token") and data.get("server"):
        if normalize_server_url(str(data["server"])) == server:
            token = str(data["token"])
    if require_token and not token:
        raise CommandError(
            f"no API token for {server}: run `sshca login --server {server}` "
            f"or set {TOKEN_ENV}"
        )
    return Settings(server=server, token=token)
