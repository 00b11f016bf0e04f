"""``sshca hostconfig``: render and install the files a host needs to trust sshca."""

from __future__ import annotations

import ipaddress
import sys
import urllib.parse
from pathlib import Path

import click
import requests

from ca.durations import parse_duration
from ca.errors import CAError
from hostconfig.install import check_sshd_config, install_rendered, read_manifest
from hostconfig.inventory import load_inventory
from hostconfig.render import HostPaths, RenderError, SyncSettings, parse_ca_keys, render_host, write_rendered

FETCH_TIMEOUT_SECONDS = 30


@click.group()
def hostconfig():
    """Render and install the files a host needs to trust sshca.

    Render on any machine with the inventory, copy the output to the host,
    install it there as root, then enable the KRL timer:

    \b
      sshca hostconfig render db1.example.com --inventory inventory.toml \\
          --server https://sshca.example.com --out out/db1
      sshca hostconfig install out/db1
      systemctl daemon-reload && systemctl start sshca-krl-sync.service
      systemctl enable --now sshca-krl-sync.timer
    """


@hostconfig.command(short_help="Render a host's sshca files into a directory.")
@click.argument("host", required=False)
@click.option("--all", "all_hosts", is_flag=True,
              help="Render every inventory host, each into OUT/<host>.")
@click.option("--inventory", "inventory_path", required=True, type=click.Path(dir_okay=False),
              help="Inventory file (inventory.toml).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory; created if missing.")
@click.option("--server", required=True, metavar="URL",
              help="Base URL of the sshca server, e.g. https://sshca.example.com. The host's "
                   "sshca-krl-sync fetches SERVER/v1/krl; without --ca-keys, render "
                   "reads the CA keys from SERVER/v1/ca.")
@click.option("--ca-keys", "ca_keys_path", type=click.Path(dir_okay=False),
              help="File of trusted CA public keys, one per line as in authorized_keys. "
                   "When given, SERVER/v1/ca is not read.")
@click.option("--prefix", default="/", show_default=True, metavar="DIR",
              help="Directory the host's files live under: /etc/ssh, /usr/local/sbin and "
                   "/etc/systemd/system become PREFIX/etc/ssh and so on, and the rendered "
                   "files name those paths. Use it to run a separate sshd from a private tree.")
@click.option("--sshd-dir", default=None, metavar="DIR",
              help="sshd configuration directory on the host  [default: PREFIX/etc/ssh]. "
                   "The drop-in goes to SSHD_DIR/sshd_config.d/, the other files to "
                   "SSHD_DIR/sshca/.")
@click.option("--krl-max-age", default="1h", show_default=True, metavar="DURATION",
              help="Age of the host's KRL after which sshca-krl-sync logs an error "
                   "(90s, 30m, 2h, 1d or seconds).")
@click.option("--krl-interval", default="5m", show_default=True, metavar="DURATION",
              help="How often the systemd timer runs sshca-krl-sync.")
@click.option("--krl-ca-bundle", default="", metavar="FILE",
              help="CA certificate bundle on the host that curl checks the server's TLS "
                   "certificate against [default: the system's].")
def render(host, all_hosts, inventory_path, out, server, ca_keys_path, prefix, sshd_dir,
           krl_max_age, krl_interval, krl_ca_bundle):
    """Render the sshd drop-in, CA keys, principals, KRL and KRL sync for HOST.

    Writes into OUT: sshd_config.d/50-sshca.conf, sshca/user_ca.pub,
    sshca/auth_principals/<login>, sshca/revoked.krl, sshca/krl-probe.pub,
    sshca-krl-sync with its .service and .timer, and manifest.json, which
    records each file's path on the host for `sshca hostconfig install`.

    \b
    To run a separate sshd from a private tree ROOT (tests, demos), whose
    main config ROOT/etc/ssh/sshd_config has the line
    `Include ROOT/etc/ssh/sshd_config.d/*.conf`:
      sshca hostconfig render db1 ... --prefix ROOT --out OUT/db1
      sshca hostconfig install OUT/db1
      /usr/sbin/sshd -f ROOT/etc/ssh/sshd_config
    """
    if all_hosts == bool(host):
        raise click.UsageError("give either HOST or --all")
    _check_server_url(server)

    try:
        inventory = load_inventory(inventory_path)
        paths = HostPaths.under(prefix, sshd_dir)
        sync = SyncSettings(
            server=server,
            max_age=parse_duration(krl_max_age, field="krl-max-age"),
            interval=parse_duration(krl_interval, field="krl-interval"),
            ca_bundle=krl_ca_bundle,
        )
        ca_keys = _read_ca_keys(ca_keys_path, server)

        if all_hosts:
            for name in inventory.hosts:
                write_rendered(render_host(inventory, name, ca_keys=ca_keys, paths=paths,
                                           sync=sync), Path(out) / name)
                click.echo(f"rendered {name} into {Path(out) / name}")
        else:
            write_rendered(render_host(inventory, host, ca_keys=ca_keys, paths=paths, sync=sync),
                           out)
            click.echo(f"rendered {host} into {out}")
    except CAError as exc:
        raise click.ClickException(str(exc)) from None


@hostconfig.command(short_help="Install rendered files and check them with sshd.")
@click.argument("rendered_dir", metavar="DIR", type=click.Path(exists=True, file_okay=False))
@click.option("--root", default="/", show_default=True, type=click.Path(file_okay=False),
              help="Root of the host's file system; each file goes to ROOT + its path on the "
                   "host. Give the mount point of an image being built; leave / on the host.")
@click.option("--sshd-config", default=None, type=click.Path(dir_okay=False),
              help="Main sshd config to check the drop-in with  [default: ROOT/SSHD_DIR/sshd_config].")
@click.option("--sshd", default="/usr/sbin/sshd", show_default=True, metavar="PATH",
              help="sshd binary that checks the configuration.")
def install(rendered_dir, root, sshd_config, sshd):
    """Install the files `sshca hostconfig render` wrote into DIR, then check them with sshd.

    Files are owned by root, mode 0644 (keys, principals, KRL, units) and
    0755 (sshca-krl-sync), each replaced by rename. An existing KRL is kept
    because sshca-krl-sync keeps it current, and principals files of logins
    that are no longer rendered are removed. Then `sshd -t` and `sshd -T`
    check the main config: it must Include the drop-in and nothing may
    override its settings. Exits 1 when a check fails.
    """
    try:
        manifest = read_manifest(rendered_dir)
        result = install_rendered(rendered_dir, root)
        for path in result.written:
            click.echo(f"installed {path}")
        for path in result.kept:
            click.echo(f"kept the existing {path}")
        for path in result.removed:
            click.echo(f"removed {path}")

        for note in check_sshd_config(manifest, root=root, sshd_config=sshd_config, sshd=sshd):
            click.echo(f"note: {note}", err=True)
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
    except PermissionError as exc:
        raise click.ClickException(f"{exc.filename}: permission denied; run install as root") \
            from None

    click.echo("sshd accepts the configuration. Next: reload sshd, then fetch the current KRL "
               "and keep it current with `systemctl daemon-reload && systemctl start "
               "sshca-krl-sync.service && systemctl enable --now sshca-krl-sync.timer`.")


def _check_server_url(server: str) -> None:
    parsed = urllib.parse.urlsplit(server)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise click.BadParameter(f"{server!r} is not an http:// or https:// URL",
                                 param_hint="--server")

    # A KRL carries no signature that sshd checks, so TLS is what stops a
    # machine on the path from serving an empty KRL.
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        click.echo(f"warning: hosts will fetch the KRL from {server} over plain HTTP, where "
                   "anyone on the network path can replace it; use https://", err=True)


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _read_ca_keys(ca_keys_path: str | None, server: str) -> list[str]:
    if ca_keys_path is not None:
        try:
            text = Path(ca_keys_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RenderError(f"failed to read the CA keys file {ca_keys_path}: {exc}",
                              field="ca_keys", value=ca_keys_path) from None
        return parse_ca_keys(text, ca_keys_path)

    url = f"{server.rstrip('/')}/v1/ca"
    try:
        response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS)
        response.raise_for_status()
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise RenderError(f"failed to fetch the CA keys from {url}: {exc}; check --server "
                          "or pass --ca-keys", field="server", value=server) from None

    return parse_ca_keys("\n".join(_ca_key_lines(body)), url)


def _ca_key_lines(body: object) -> list[str]:
    # /v1/ca returns {"keys": [{"public_key": "<type> <base64> [comment]", ...}]},
    # every trusted key, the signing one first.
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list):
        return []
    return [key["public_key"] for key in keys
            if isinstance(key, dict) and isinstance(key.get("public_key"), str)]


if __name__ == "__main__":
    sys.exit(hostconfig())
