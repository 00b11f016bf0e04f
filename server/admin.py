"""Server-host administration: data directory, users, groups, tokens, CA keys, reload.

The ``sshca admin`` commands are thin wrappers around these functions; the
test harness calls them directly. Every change is written to the audit log
with the actor ``cli:<operating-system user>``.
"""

from __future__ import annotations

import getpass
import os
import secrets
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from ca.keys import generate_ca_key, load_ca_key, write_ca_key
from ca.principals import validate_group, validate_login
from hostconfig.inventory import load_inventory
from server import audit, db
from server.config import CONFIG_FILE_NAME, Config, load_config, load_session_key
from server.models import CAKeyRecord, Group, Token, User
from server.policy import load_policy
from server.service import hash_token, new_token


class AdminError(Exception):
    """An admin command that cannot be carried out. The message gives the reason and the fix."""


SAMPLE_INVENTORY = """\
# Hosts sshca grants access to. Each host lists its groups and the logins
# that exist on it; a request may only name a login listed for every
# requested host.

[[hosts]]
name = "db1.prod.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "db2.prod.example.com"
groups = ["prod-db"]
logins = ["deploy", "postgres"]

[[hosts]]
name = "web1.prod.example.com"
groups = ["prod-web"]
logins = ["deploy"]
"""

SAMPLE_POLICY = """\
# Who may request access to which hosts and logins, and who approves.
# Rules are tried in order; the first rule that covers every requested host
# and the login decides. Durations: "90s", "30m", "2h", "1d" or seconds.

[defaults]
max_duration = "8h"     # maximum grant any rule may give
request_ttl = "24h"     # a pending request expires after this
clock_skew = "60s"      # certificates start this much before the grant

[[rules]]
name = "sre-prod-db"
requesters = ["group:sre"]
hosts = ["group:prod-db"]
logins = ["deploy", "postgres"]
max_duration = "4h"
approvals = 2
approvers = ["group:dba-leads"]
extensions = ["permit-pty"]

[[rules]]
name = "sre-prod-web"
requesters = ["group:sre"]
hosts = ["group:prod-web"]
logins = ["deploy"]
max_duration = "2h"
approvals = 1
approvers = ["group:sre-leads"]
"""


def actor_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"[:64]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- data directory -------------------------------------------------------------


def init_data_dir(directory, *, key_type: str = "ed25519", passphrase_env: str | None = None,
                  database_url: str | None = None) -> Path:
    """Create a ready data directory and return the path of its config file.

    Writes sshca.toml, an encrypted CA key (0600) and its passphrase file
    (unless ``passphrase_env`` names a variable holding the passphrase), the
    session key, sample policy.toml and inventory.toml (kept if present) and
    a migrated database. Raises AdminError if a CA key already exists there.
    """
    directory = Path(directory).resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "ca").mkdir(mode=0o700, exist_ok=True)

    config_path = directory / CONFIG_FILE_NAME
    key_path = directory / "ca" / "ca.key"
    if key_path.exists():
        raise AdminError(f"a CA key already exists at {key_path}; sshca admin init never overwrites a CA key")

    if passphrase_env:
        passphrase = os.environ.get(passphrase_env, "").encode("utf-8")
        if not passphrase:
            raise AdminError(f"environment variable {passphrase_env} is not set or empty; set it to the CA key passphrase")
    else:
        passphrase = secrets.token_urlsafe(32).encode("ascii")
        passphrase_path = directory / "ca" / "passphrase"
        fd = os.open(passphrase_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(passphrase + b"\n")

    if not config_path.exists():
        lines = [
            "# sshca server configuration. Relative paths are relative to this file.",
            "# Every key can be overridden by an SSHCA_<KEY> environment variable.",
            'data_dir = "."',
        ]
        if database_url:
            lines.append(f"database_url = {_toml_string(database_url)}")
        else:
            lines.append('# database_url = "postgresql+psycopg://sshca@db.example.com/sshca"  (default: SQLite sshca.db here)')
        lines += [
            'ca_key = "ca/ca.key"',
            f"ca_passphrase_env = {_toml_string(passphrase_env)}" if passphrase_env else 'ca_passphrase_file = "ca/passphrase"',
            'policy = "policy.toml"',
            'inventory = "inventory.toml"',
            'max_certificate_lifetime = "24h"',
            'clock_skew = "60s"',
            'request_ttl = "24h"',
        ]
        config_path.write_text("\n".join(lines) + "\n")

    for name, text in (("policy.toml", SAMPLE_POLICY), ("inventory.toml", SAMPLE_INVENTORY)):
        path = directory / name
        if not path.exists():
            path.write_text(text)

    config = load_config(config_path)

    write_ca_key(key_path, generate_ca_key(key_type), passphrase, comment="sshca user CA")
    ca_key = load_ca_key(key_path, passphrase)
    load_session_key(config.session_key_file)
    db.upgrade(config.database_url)
    sqlite_file = directory / "sshca.db"
    if sqlite_file.exists():
        # Token hashes and the audit log are for the service account only.
        sqlite_file.chmod(0o600)

    with _write_session(config) as session:
        session.add(CAKeyRecord(
            fingerprint=ca_key.fingerprint, path="ca/ca.key", public_key=ca_key.public_line(),
            signing=True, created_at=utcnow(),
        ))
        audit.append_event(session, actor=actor_name(), action="ca.created", details={
            "fingerprint": ca_key.fingerprint, "key_type": ca_key.key_type,
        })
        session.commit()
    return config_path


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _write_session:
    """Context manager: a write session on the configured database, disposed afterwards."""

    def __init__(self, config: Config):
        self.database = db.Database(config.database_url)

    def __enter__(self):
        self.session = self.database.write()
        return self.session

    def __exit__(self, *exc_info):
        self.session.close()
        self.database.dispose()


def _user(session, name: str) -> User:
    user = session.execute(sa.select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise AdminError(f"user {name!r} not found; add it with 'sshca admin user add {name}'")
    return user


def _groups(session, names) -> list[Group]:
    groups = []
    for name in dict.fromkeys(names):
        validate_group(name)
        group = session.execute(sa.select(Group).where(Group.name == name)).scalar_one_or_none()
        if group is None:
            group = Group(name=name)
            session.add(group)
        groups.append(group)
    return groups


# -- users and groups -------------------------------------------------------------


def add_user(config: Config, name: str, *, groups=(), admin: bool = False, auditor: bool = False) -> None:
    validate_login(name)
    with _write_session(config) as session:
        if session.execute(sa.select(User.id).where(User.name == name)).first() is not None:
            raise AdminError(f"user {name!r} already exists; change groups with 'sshca admin user set-groups'")
        user = User(name=name, is_admin=admin, is_auditor=auditor, disabled=False, created_at=utcnow())
        user.groups = _groups(session, groups)
        session.add(user)
        session.flush()
        audit.append_event(session, actor=actor_name(), action="user.created", details={
            "user": name, "groups": sorted(group.name for group in user.groups), "admin": admin, "auditor": auditor,
        })
        session.commit()


def set_user_disabled(config: Config, name: str, disabled: bool) -> None:
    with _write_session(config) as session:
        user = _user(session, name)
        user.disabled = disabled
        audit.append_event(session, actor=actor_name(), action="user.disabled" if disabled else "user.enabled",
                           details={"user": name})
        session.commit()


def set_user_roles(config: Config, name: str, *, admin: bool | None = None, auditor: bool | None = None) -> None:
    with _write_session(config) as session:
        user = _user(session, name)
        if admin is not None:
            user.is_admin = admin
        if auditor is not None:
            user.is_auditor = auditor
        audit.append_event(session, actor=actor_name(), action="user.roles_changed",
                           details={"user": name, "admin": user.is_admin, "auditor": user.is_auditor})
        session.commit()


def set_user_groups(config: Config, name: str, groups) -> list[str]:
    """Replace the user's groups; return the new list."""
    with _write_session(config) as session:
        user = _user(session, name)
        before = sorted(group.name for group in user.groups)
        user.groups = _groups(session, groups)
        after = sorted(group.name for group in user.groups)
        audit.append_event(session, actor=actor_name(), action="user.groups_changed",
                           details={"user": name, "before": before, "after": after})
        session.commit()
        return after


def change_group(config: Config, group: str, users, *, add: bool) -> None:
    """Add ``users`` to ``group`` or remove them from it."""
    with _write_session(config) as session:
        for name in users:
            user = _user(session, name)
            before = sorted(g.name for g in user.groups)
            wanted = [g for g in before if g != group] + ([group] if add else [])
            user.groups = _groups(session, wanted)
            after = sorted(g.name for g in user.groups)
            audit.append_event(session, actor=actor_name(), action="user.groups_changed",
                               details={"user": name, "before": before, "after": after})
        session.commit()


def list_users(config: Config) -> list[dict]:
    with _write_session(config) as session:
        users = session.execute(sa.select(User).order_by(User.name)).scalars().all()
        return [
            {"name": user.name, "groups": [group.name for group in user.groups], "admin": user.is_admin,
             "auditor": user.is_auditor, "disabled": user.disabled}
            for user in users
        ]


# -- tokens -------------------------------------------------------------------------


def create_token(config: Config, name: str, *, expires: timedelta | None = None) -> tuple[int, str]:
    """Create an API token for user ``name``; return (token id, token). Only the hash is stored."""
    token = new_token()
    now = utcnow()
    with _write_session(config) as session:
        user = _user(session, name)
        row = Token(user_id=user.id, token_hash=hash_token(token), created_at=now,
                    expires_at=now + expires if expires else None)
        session.add(row)
        session.flush()
        audit.append_event(session, actor=actor_name(), action="token.created", details={
            "user": name, "token_id": row.id, "expires_at": audit.format_time(row.expires_at) if row.expires_at else None,
        })
        session.commit()
        return row.id, token


def revoke_tokens(config: Config, *, token_id: int | None = None, user: str | None = None) -> list[int]:
    """Revoke one token by id, or every active token of ``user``; return the revoked ids."""
    now = utcnow()
    with _write_session(config) as session:
        query = sa.select(Token).where(Token.revoked_at.is_(None))
        if token_id is not None:
            query = query.where(Token.id == token_id)
        if user is not None:
            query = query.where(Token.user_id == _user(session, user).id)
        rows = session.execute(query).scalars().all()
        if token_id is not None and not rows:
            raise AdminError(f"no active token with id {token_id}; list tokens with 'sshca admin token list'")
        for row in rows:
            row.revoked_at = now
            audit.append_event(session, actor=actor_name(), action="token.revoked",
                               details={"user": row.user.name, "token_id": row.id})
        session.commit()
        return [row.id for row in rows]


def list_tokens(config: Config, user: str | None = None) -> list[dict]:
    with _write_session(config) as session:
        query = sa.select(Token).order_by(Token.id)
        if user is not None:
            query = query.where(Token.user_id == _user(session, user).id)
        return [
            {"id": row.id, "user": row.user.name, "created_at": row.created_at, "expires_at": row.expires_at,
             "revoked_at": row.revoked_at}
            for row in session.execute(query).scalars().all()
        ]


# -- CA keys ------------------------------------------------------------------------


def _register_initial_key(session, config: Config) -> None:
    """Record the configured CA key if the database has no CA key yet (a key made outside init)."""
    if session.execute(sa.select(CAKeyRecord.id)).first() is not None:
        return
    ca_key = load_ca_key(config.ca_key, config.read_passphrase())
    session.add(CAKeyRecord(fingerprint=ca_key.fingerprint, path=str(config.ca_key), public_key=ca_key.public_line(),
                            signing=True, created_at=utcnow()))
    session.flush()


def rotate_ca(config: Config, *, key_type: str = "ed25519") -> str:
    """Create a new signing CA key; the previous keys stay trusted. Return the new fingerprint."""
    passphrase = config.read_passphrase()
    now = utcnow()
    relative = Path("ca") / f"ca-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(2)}.key"
    path = config.data_dir / relative
    write_ca_key(path, generate_ca_key(key_type), passphrase, comment="sshca user CA")
    ca_key = load_ca_key(path, passphrase)

    with _write_session(config) as session:
        _register_initial_key(session, config)
        previous = session.execute(sa.select(CAKeyRecord).where(CAKeyRecord.signing.is_(True))).scalars().all()
        for record in previous:
            record.signing = False
        session.add(CAKeyRecord(fingerprint=ca_key.fingerprint, path=str(relative), public_key=ca_key.public_line(),
                                signing=True, created_at=now))
        audit.append_event(session, actor=actor_name(), action="ca.rotated", details={
            "fingerprint": ca_key.fingerprint, "key_type": ca_key.key_type,
            "previous": [record.fingerprint for record in previous],
        })
        session.commit()
    return ca_key.fingerprint


def retire_ca(config: Config, key_id: str) -> str:
    """Stop trusting a CA key given by fingerprint or id; the signing key cannot be retired."""
    with _write_session(config) as session:
        _register_initial_key(session, config)
        query = sa.select(CAKeyRecord)
        if key_id.isascii() and key_id.isdigit():
            query = query.where(CAKeyRecord.id == int(key_id))
        else:
            query = query.where(CAKeyRecord.fingerprint == key_id)
        record = session.execute(query).scalar_one_or_none()
        if record is None:
            raise AdminError(f"no CA key {key_id!r}; list them with 'sshca admin ca list'")
        if record.signing:
            raise AdminError(f"CA key {record.fingerprint} signs new certificates; rotate first with 'sshca admin ca rotate'")
        if record.retired_at is not None:
            raise AdminError(f"CA key {record.fingerprint} is already retired")
        record.retired_at = utcnow()
        audit.append_event(session, actor=actor_name(), action="ca.retired", details={"fingerprint": record.fingerprint})
        session.commit()
        return record.fingerprint


def list_ca_keys(config: Config) -> list[dict]:
    with _write_session(config) as session:
        _register_initial_key(session, config)
        session.commit()
        return [
            {"id": record.id, "fingerprint": record.fingerprint, "signing": record.signing,
             "created_at": record.created_at, "retired_at": record.retired_at, "public_key": record.public_key}
            for record in session.execute(sa.select(CAKeyRecord).order_by(CAKeyRecord.id)).scalars().all()
        ]


def _is_sshca_process(pid: int) -> bool:
    """Tell whether ``pid`` runs sshca, so a stale pid file never gets another process signalled."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no readable /proc: trust the pid file
    return b"sshca" in command or b"gunicorn" in command


# -- policy reload ----------------------------------------------------------------------


def check_policy(config: Config):
    """Load the policy and inventory as the server would; return (policy, inventory) or raise their error."""
    policy = load_policy(
        config.policy, max_certificate_lifetime=config.max_certificate_lifetime,
        clock_skew=config.clock_skew, request_ttl=config.request_ttl,
    )
    inventory = load_inventory(config.inventory)
    policy.check_targets(inventory)
    return policy, inventory


def signal_reload(config: Config) -> int | None:
    """Send SIGHUP to the running ``sshca serve``; return its pid, or None when none runs.

    On SIGHUP gunicorn starts new workers, which load the policy, the
    inventory and the CA keys again, and stops the old ones gracefully.
    """
    try:
        pid = int(config.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _is_sshca_process(pid):
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return None
    return pid
