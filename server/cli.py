"""The server-host commands: ``sshca admin ...``, ``sshca db ...`` and ``sshca serve``.

Commands other than ``admin init`` read the configuration from ``--config``
or SSHCA_CONFIG (see :mod:`server.config`). Exit codes: 0 success, 1 refused
or failed, 2 usage error.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import click

from ca.durations import parse_duration
from ca.errors import CAError
from ca.keys import KEY_TYPES
from server import admin as admin_ops
from server.config import ConfigError, load_config
from server.policy import PolicyError

CONTEXT = {"help_option_names": ["-h", "--help"]}
CONFIG_OPTION_HELP = "Server config file (default: $SSHCA_CONFIG)."


def _fail_cleanly(function):
    """Turn the domain errors of admin operations into a one-line message and exit status 1."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (admin_ops.AdminError, ConfigError, PolicyError, CAError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _config(ctx: click.Context):
    path = ctx.find_root().meta.get("sshca_config_path")
    if path is None and not os.environ.get("SSHCA_CONFIG"):
        raise click.UsageError("no configuration: pass --config DIR/sshca.toml or set SSHCA_CONFIG")
    return load_config(path)


def _config_option(function):
    def remember(ctx, param, value):
        if value is not None:
            ctx.find_root().meta["sshca_config_path"] = value
        return value

    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), expose_value=False,
        is_eager=True, callback=remember, help=CONFIG_OPTION_HELP,
    )(function)


# -- sshca admin ----------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@_config_option
def admin():
    """Set up the CA, users, groups and tokens on the server host."""


@admin.command("init", context_settings=CONTEXT)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True,
              help="Type of the CA key.")
@click.option("--passphrase-env", metavar="VAR",
              help="Read the CA key passphrase from this environment variable instead of generating "
              "a passphrase file.")
@click.option("--database-url", metavar="URL",
              help="Database URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in DIRECTORY).")
@_fail_cleanly
def init(directory, key_type, passphrase_env, database_url):
    """Create a data directory: config, encrypted CA key, database, sample policy and inventory.

    Refuses to overwrite an existing CA key.
    """
    config_path = admin_ops.init_data_dir(
        directory, key_type=key_type, passphrase_env=passphrase_env, database_url=database_url,
    )
    click.echo(f"Created {config_path.parent}:")
    click.echo(f"  config:    {config_path}")
    click.echo(f"  CA key:    {config_path.parent / 'ca' / 'ca.key'} (encrypted, mode 0600)")
    click.echo(f"  policy:    {config_path.parent / 'policy.toml'}")
    click.echo(f"  inventory: {config_path.parent / 'inventory.toml'}")
    click.echo(f"Next: export SSHCA_CONFIG={config_path}; sshca admin user add NAME --group G; sshca serve")


@admin.group("user", context_settings=CONTEXT)
@_config_option
def user():
    """Add, disable and change users."""


@user.command("add", context_settings=CONTEXT)
@click.argument("name")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="A group the user belongs to (repeatable).")
@click.option("--admin", "is_admin", is_flag=True, help="Let the user revoke keys and any grant.")
@click.option("--auditor", "is_auditor", is_flag=True, help="Let the user read the audit log and certificate list.")
@click.pass_context
@_fail_cleanly
def user_add(ctx, name, groups, is_admin, is_auditor):
    """Add user NAME."""
    admin_ops.add_user(_config(ctx), name, groups=groups, admin=is_admin, auditor=is_auditor)
    click.echo(f"Added user {name}" + (f" in {', '.join(groups)}" if groups else "") + ".", err=True)


@user.command("disable", context_settings=CONTEXT)
@click.argument("name")
@click.pass_context
@_fail_cleanly
def user_disable(ctx, name):
    """Disable user NAME: no requests, approvals or certificates any more."""
    admin_ops.set_user_disabled(_config(ctx), name, True)
    click.echo(f"Disabled user {name}.", err=True)


@user.command("enable", context_settings=CONTEXT)
@click.argument("name")
@click.pass_context
@_fail_cleanly
def user_enable(ctx, name):
    """Enable a disabled user NAME again."""
    admin_ops.set_user_disabled(_config(ctx), name, False)
    click.echo(f"Enabled user {name}.", err=True)


@user.command("set-groups", context_settings=CONTEXT)
@click.argument("name")
@click.argument("groups", nargs=-1, metavar="[GROUP]...")
@click.pass_context
@_fail_cleanly
def user_set_groups(ctx, name, groups):
    """Replace the groups of user NAME with GROUP... (none removes all)."""
    after = admin_ops.set_user_groups(_config(ctx), name, groups)
    click.echo(f"User {name} is now in: {', '.join(after) or 'no groups'}.", err=True)


@user.command("set-roles", context_settings=CONTEXT)
@click.argument("name")
@click.option("--admin/--no-admin", "is_admin", default=None, help="Grant or remove the admin role.")
@click.option("--auditor/--no-auditor", "is_auditor", default=None, help="Grant or remove the auditor role.")
@click.pass_context
@_fail_cleanly
def user_set_roles(ctx, name, is_admin, is_auditor):
    """Change the admin and auditor roles of user NAME."""
    admin_ops.set_user_roles(_config(ctx), name, admin=is_admin, auditor=is_auditor)


@user.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_fail_cleanly
def user_list(ctx, as_json):
    """List users with their groups and roles."""
    users = admin_ops.list_users(_config(ctx))
    if as_json:
        click.echo(json.dumps(users, indent=2))
        return
    for item in users:
        roles = [role for role in ("admin", "auditor", "disabled") if item[role]]
        click.echo(f"{item['name']}\tgroups={','.join(item['groups']) or '-'}\t{' '.join(roles)}")


@admin.group("group", context_settings=CONTEXT)
@_config_option
def group():
    """Add users to groups or remove them."""


@group.command("add", context_settings=CONTEXT)
@click.argument("group_name", metavar="GROUP")
@click.argument("users", nargs=-1, required=True, metavar="USER...")
@click.pass_context
@_fail_cleanly
def group_add(ctx, group_name, users):
    """Add USER... to GROUP."""
    admin_ops.change_group(_config(ctx), group_name, users, add=True)


@group.command("remove", context_settings=CONTEXT)
@click.argument("group_name", metavar="GROUP")
@click.argument("users", nargs=-1, required=True, metavar="USER...")
@click.pass_context
@_fail_cleanly
def group_remove(ctx, group_name, users):
    """Remove USER... from GROUP."""
    admin_ops.change_group(_config(ctx), group_name, users, add=False)


@admin.group("token", context_settings=CONTEXT)
@_config_option
def token():
    """Create, list and revoke personal API tokens."""


@token.command("create", context_settings=CONTEXT)
@click.argument("name")
@click.option("--expires", metavar="DURATION", help="Lifetime such as 90d or 12h (default: no expiry).")
@click.pass_context
@_fail_cleanly
def token_create(ctx, name, expires):
    """Create an API token for user NAME and print only the token, once."""
    lifetime = parse_duration(expires, field="expires") if expires else None
    token_id, value = admin_ops.create_token(_config(ctx), name, expires=lifetime)
    click.echo(value)
    click.echo(f"Token {token_id} for {name}; it is shown only once.", err=True)


@token.command("revoke", context_settings=CONTEXT)
@click.argument("token_id", required=False, type=int, metavar="[ID]")
@click.option("--user", "user_name", metavar="NAME", help="Revoke every active token of this user.")
@click.pass_context
@_fail_cleanly
def token_revoke(ctx, token_id, user_name):
    """Revoke token ID (see 'token list'), or all tokens of --user NAME."""
    if (token_id is None) == (user_name is None):
        raise click.UsageError("give a token ID or --user NAME")
    revoked = admin_ops.revoke_tokens(_config(ctx), token_id=token_id, user=user_name)
    click.echo(f"Revoked {len(revoked)} token(s): {', '.join(map(str, revoked)) or 'none active'}.")


@token.command("list", context_settings=CONTEXT)
@click.argument("name", required=False)
@click.pass_context
@_fail_cleanly
def token_list(ctx, name):
    """List tokens (all, or those of user NAME); tokens themselves are never shown again."""
    now = datetime.now(timezone.utc)
    for item in admin_ops.list_tokens(_config(ctx), name):
        if item["revoked_at"]:
            state = "revoked"
        elif item["expires_at"] and item["expires_at"] <= now:
            state = "expired"
        else:
            state = "active"
        expires = item["expires_at"].isoformat() if item["expires_at"] else "never"
        click.echo(f"{item['id']}\t{item['user']}\t{state}\texpires={expires}")


@admin.group("ca", context_settings=CONTEXT)
@_config_option
def ca():
    """Rotate and retire CA keys."""


@ca.command("rotate", context_settings=CONTEXT)
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True,
              help="Type of the new CA key.")
@click.pass_context
@_fail_cleanly
def ca_rotate(ctx, key_type):
    """Create a new signing key; the old keys stay trusted until retired."""
    config = _config(ctx)
    fingerprint = admin_ops.rotate_ca(config, key_type=key_type)
    pid = admin_ops.signal_reload(config)
    click.echo(fingerprint)
    note = f"told the server (pid {pid}) to reload" if pid else "no running server found; it signs with it from the next start"
    click.echo(f"New signing CA key {fingerprint}; {note}. Install the new key on hosts before retiring the old one.", err=True)


@ca.command("retire", context_settings=CONTEXT)
@click.argument("key_id", metavar="KEYID")
@click.pass_context
@_fail_cleanly
def ca_retire(ctx, key_id):
    """Stop trusting CA key KEYID (a fingerprint SHA256:... or an id from 'ca list')."""
    config = _config(ctx)
    fingerprint = admin_ops.retire_ca(config, key_id)
    admin_ops.signal_reload(config)
    click.echo(f"Retired CA key {fingerprint}.", err=True)


@ca.command("list", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def ca_list(ctx):
    """List CA keys: the signing one, trusted ones and retired ones."""
    for item in admin_ops.list_ca_keys(_config(ctx)):
        state = "trusted"
        if item["signing"]:
            state = "signing"
        elif item["retired_at"]:
            state = "retired"
        click.echo(f"{item['id']}\t{item['fingerprint']}\t{state}")


@admin.group("policy", context_settings=CONTEXT)
@_config_option
def policy():
    """Check and reload the policy and inventory files."""


@policy.command("check", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def policy_check(ctx):
    """Validate the policy and inventory files without reloading."""
    loaded_policy, inventory = admin_ops.check_policy(_config(ctx))
    click.echo(f"policy {loaded_policy.sha256} ({len(loaded_policy.rules)} rules), "
               f"inventory {inventory.sha256} ({len(inventory.hosts)} hosts): valid")


@policy.command("reload", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def policy_reload(ctx):
    """Validate the policy and inventory, then make the running server load them (SIGHUP)."""
    config = _config(ctx)
    loaded_policy, inventory = admin_ops.check_policy(config)
    pid = admin_ops.signal_reload(config)
    if pid is None:
        click.echo(f"policy and inventory are valid; no running server found (pid file {config.pid_file}), "
                   "the next start loads them")
        return
    click.echo(f"policy {loaded_policy.sha256[:12]} and inventory {inventory.sha256[:12]} are valid; "
               f"told the server (pid {pid}) to reload")


# -- sshca db --------------------------------------------------------------------------


@click.group(context_settings=CONTEXT)
@_config_option
def db():
    """Manage the database schema."""


@db.command("upgrade", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def db_upgrade(ctx):
    """Migrate the database to the current schema."""
    from server import db as database

    config = _config(ctx)
    database.upgrade(config.database_url)
    click.echo(f"database at revision {database.current_revision(config.database_url)}")


@db.command("current", context_settings=CONTEXT)
@click.pass_context
@_fail_cleanly
def db_current(ctx):
    """Print the database's schema revision."""
    from server import db as database

    click.echo(database.current_revision(_config(ctx).database_url) or "none")


# -- sshca serve -------------------------------------------------------------------------


def _default_workers() -> int:
    return 2 * (os.cpu_count() or 1) + 1


@click.command(context_settings=CONTEXT)
@_config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Worker processes (default: 2 x CPUs + 1).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Threads per worker process.")
@click.option("--timeout", type=click.IntRange(1, 3600), default=120, show_default=True,
              help="Seconds a request may take before its worker is restarted; a full audit "
                   "verification reads every event (about 45 s for a million on SQLite).")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.pass_context
@_fail_cleanly
def serve(ctx, host, port, workers, threads, timeout, certfile, keyfile):
    """Run the sshca service with gunicorn. SIGHUP reloads policy, inventory and CA keys."""
    from server.wsgi import run

    config = _config(ctx)
    admin_ops.check_policy(config)
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers or _default_workers(),
        "threads": threads,
        "timeout": timeout,
        "pidfile": str(config.pid_file),
        "certfile": certfile,
        "keyfile": keyfile,
    }
    run(config, {key: value for key, value in options.items() if value is not None})


def _add_config_option(command: click.Command) -> None:
    """Accept --config on every subcommand too, so it may follow the command name."""
    if not any(param.name == "config_path" for param in command.params):
        _config_option(command)
    if isinstance(command, click.Group):
        for child in command.commands.values():
            _add_config_option(child)


_add_config_option(admin)
_add_config_option(db)
