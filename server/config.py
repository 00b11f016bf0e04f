"""Server configuration: built-in defaults, then a TOML file, then ``SSHCA_*`` variables.

Every path may be relative. A relative path in the file is taken relative to
the file's directory, and one from the environment relative to the data
directory.
There is no built-in secret: the session key is generated into the data
directory on first start (see :func:`load_session_key`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from datetime import timedelta
from pathlib import Path

from ca.durations import parse_duration

CONFIG_FILE_NAME = "sshca.toml"

# Keys of the configuration file, each also settable as SSHCA_<KEY upper-case>.
PATH_KEYS = ("ca_key", "ca_passphrase_file", "policy", "inventory", "session_key_file", "pid_file")
DURATION_KEYS = ("max_certificate_lifetime", "clock_skew", "request_ttl")
STRING_KEYS = ("database_url", "ca_passphrase_env", "log_level")
INT_KEYS = ("min_rsa_bits",)
# Web page settings; the web package validates their values when it starts.
WEB_KEYS = ("trusted_proxies", "proxy_user_header", "web_session_lifetime")
ALL_KEYS = ("data_dir",) + PATH_KEYS + DURATION_KEYS + STRING_KEYS + INT_KEYS + WEB_KEYS

DEFAULT_DURATIONS = {
    "max_certificate_lifetime": "24h",
    "clock_skew": "60s",
    "request_ttl": "24h",
}


class ConfigError(ValueError):
    """An invalid configuration value; the message names the source, the key and the value."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Resolved server configuration (absolute paths, parsed durations)."""

    data_dir: Path
    database_url: str
    ca_key: Path
    ca_passphrase_file: Path | None
    ca_passphrase_env: str | None
    policy: Path
    inventory: Path
    session_key_file: Path
    pid_file: Path
    max_certificate_lifetime: timedelta
    clock_skew: timedelta
    request_ttl: timedelta
    min_rsa_bits: int = 2048
    log_level: str = "INFO"
    trusted_proxies: tuple[str, ...] | None = None  # addresses or networks allowed to send proxy_user_header
    proxy_user_header: str | None = None  # header naming the signed-in user, set by an SSO proxy
    web_session_lifetime: timedelta | None = None  # None: the web pages' default
    source: str = "defaults"

    def read_passphrase(self) -> bytes:
        """Read the CA key passphrase from the configured variable or file."""
        from ca.keys import read_passphrase

        if self.ca_passphrase_env:
            return read_passphrase(env=self.ca_passphrase_env)
        return read_passphrase(file=self.ca_passphrase_file)


def default_config_path(environ=None) -> Path | None:
    """Return the config file named by SSHCA_CONFIG, or None."""
    environ = os.environ if environ is None else environ
    value = environ.get("SSHCA_CONFIG")
    return Path(value) if value else None


def load_config(path: str | os.PathLike | None = None, *, environ=None, overrides=None) -> Config:
    """Build the configuration from defaults, then ``path``, then ``SSHCA_*`` variables, then ``overrides``.

    Raises ConfigError naming the file or variable and the key on an invalid value.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        path = default_config_path(environ)

    raw: dict[str, tuple[object, str, Path | None]] = {}
    if path is not None:
        path = Path(path).resolve()
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; create it with 'sshca admin init DIR' or fix SSHCA_CONFIG") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        for key, value in document.items():
            if key not in ALL_KEYS:
                raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(ALL_KEYS)}")
            raw[key] = (value, str(path), path.parent)

    for key in ALL_KEYS:
        variable = "SSHCA_" + key.upper()
        if variable in environ:
            raw[key] = (environ[variable], variable, None)

    for key, value in (overrides or {}).items():
        if key not in ALL_KEYS:
            raise ConfigError(f"unknown configuration key {key!r}")
        raw[key] = (value, "overrides", None)

    return _resolve(raw, path)


def _resolve(raw, path) -> Config:
    def string(key, default=None):
        if key not in raw:
            return default
        value, source, _ = raw[key]
        if not isinstance(value, str):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return value

    if "data_dir" in raw:
        value, source, base = raw["data_dir"]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: data_dir must be a non-empty path, got {value!r}")
        data_dir = _absolute(value, base)
    elif path is not None:
        data_dir = Path(path).parent
    else:
        data_dir = Path.cwd()

    def path_value(key, default_name):
        if key not in raw:
            return data_dir / default_name
        value, source, base = raw[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: {key} must be a non-empty path, got {value!r}")
        return _absolute(value, base or data_dir)

    def duration_value(key):
        value, source = DEFAULT_DURATIONS[key], "defaults"
        if key in raw:
            value, source, _ = raw[key]
        try:
            return parse_duration(value, field=key)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    min_rsa_bits = 2048
    if "min_rsa_bits" in raw:
        value, source, _ = raw["min_rsa_bits"]
        try:
            min_rsa_bits = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: min_rsa_bits must be a whole number such as 2048, got {value!r}") from None
        if isinstance(value, bool) or min_rsa_bits < 2048:
            raise ConfigError(f"{source}: min_rsa_bits must be at least 2048, got {value!r}")

    database_url = string("database_url") or f"sqlite:///{data_dir / 'sshca.db'}"
    passphrase_env = string("ca_passphrase_env") or None
    log_level = (string("log_level") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    trusted_proxies = None
    if "trusted_proxies" in raw:
        value, source, _ = raw["trusted_proxies"]
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
            raise ConfigError(
                f"{source}: trusted_proxies must be a list of addresses or networks such as "
                f"[\"10.0.0.5\", \"10.1.0.0/16\"], got {value!r}"
            )
        trusted_proxies = tuple(value)

    web_session_lifetime = None
    if "web_session_lifetime" in raw:
        value, source, _ = raw["web_session_lifetime"]
        try:
            web_session_lifetime = parse_duration(value, field="web_session_lifetime")
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    return Config(
        data_dir=data_dir,
        database_url=database_url,
        ca_key=path_value("ca_key", "ca/ca.key"),
        ca_passphrase_file=path_value("ca_passphrase_file", "ca/passphrase"),
        ca_passphrase_env=passphrase_env,
        policy=path_value("policy", "policy.toml"),
        inventory=path_value("inventory", "inventory.toml"),
        session_key_file=path_value("session_key_file", "session.key"),
        pid_file=path_value("pid_file", "sshca.pid"),
        max_certificate_lifetime=duration_value("max_certificate_lifetime"),
        clock_skew=duration_value("clock_skew"),
        request_ttl=duration_value("request_ttl"),
        min_rsa_bits=min_rsa_bits,
        log_level=log_level,
        trusted_proxies=trusted_proxies,
        proxy_user_header=string("proxy_user_header") or None,
        web_session_lifetime=web_session_lifetime,
        source=str(path) if path is not None else "defaults",
    )


def _absolute(value: str, base: Path | None) -> Path:
    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        candidate = (base or Path.cwd()) / candidate
    return candidate


def load_session_key(path: Path) -> bytes:
    """Return the Flask session key stored at ``path``, generating it on first use.

    The file is created with mode 0600 and contains 32 random bytes as hex.
    """
    if not path.exists():
        # Write a private temporary file, then link it into place: os.link
        # fails if the key already exists, so concurrent first starts agree on one key.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)

    key = path.read_text().strip()
    if len(key) != 64:
        raise ConfigError(f"session key file {path} does not hold 64 hex digits; delete it to generate a new one")
    return bytes.fromhex(key)
