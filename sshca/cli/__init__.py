"""Entry point of the ``sshca`` command.

Each part of sshca owns its subcommands. The engineer, approver and auditor
commands live in :mod:`sshca.cli.client` and talk to the server over HTTP
only. ``admin``, ``db`` and ``serve`` live in :mod:`server.cli` and run on
the server host, and ``hostconfig`` lives in :mod:`hostconfig.cli`. They
are imported only when used, so ``sshca request`` never loads Flask or
SQLAlchemy.

Exit codes: 0 success, 1 refused or failed, 2 usage error.
"""

import importlib

import click

# Subcommand name -> ("module:attribute" of its click command, one-line help).
# The help is kept here so that ``sshca --help`` imports no subcommand.
SUBCOMMANDS = {
    "login": ("sshca.cli.client:login", "Store the server URL and your API token."),
    "request": ("sshca.cli.client:request", "Request access to hosts as a login."),
    "list": ("sshca.cli.client:list_requests", "List requests you made or may act on."),
    "show": ("sshca.cli.client:show", "Show one request with approvals and certificates."),
    "cert": ("sshca.cli.client:cert", "Fetch the certificate of an approved request."),
    "approve": ("sshca.cli.client:approve", "Approve a pending request."),
    "deny": ("sshca.cli.client:deny", "Deny a pending request."),
    "cancel": ("sshca.cli.client:cancel", "Cancel your pending request."),
    "revoke": ("sshca.cli.client:revoke", "End an approved request's access early."),
    "extend": ("sshca.cli.client:extend", "Request more time on a request."),
    "audit": ("sshca.cli.client:audit", "List, export and verify the audit log."),
    "admin": ("server.cli:admin", "Set up the CA, users and tokens (server host)."),
    "db": ("server.cli:db", "Upgrade the database schema (server host)."),
    "serve": ("server.cli:serve", "Run the sshca service with gunicorn."),
    "hostconfig": ("hostconfig.cli:hostconfig", "Render and install host files."),
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx):
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx, name):
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target[0].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx, formatter):
        rows = [(name, SUBCOMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sshca")
def main():
    """Request, approve and use short-lived SSH certificates.

    Engineers request access and fetch certificates, approvers approve,
    auditors review the audit log; admins run the server and set up hosts.
    """
