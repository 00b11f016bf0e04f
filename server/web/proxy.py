"""Trusted-proxy sign-in: the user name comes from a header set by an SSO proxy.

Off by default. It is on only when both ``trusted_proxies`` (addresses or
networks) and ``proxy_user_header`` are configured, and the header counts
only on a connection whose peer address is one of the trusted proxies. From
any other address the header is ignored, so a client cannot name itself.
The peer address is ``request.remote_addr``, the TCP peer as long as the app
does not rewrite it from X-Forwarded-For (werkzeug's ProxyFix with x_for).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxySettingError(ValueError):
    """The trusted-proxy settings are malformed; the message names the value."""


@dataclass(frozen=True)
class ProxySettings:
    """Parsed trusted-proxy settings; ``enabled`` is False unless both parts are set."""

    networks: tuple[IPNetwork, ...] = ()
    header: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.networks) and bool(self.header)

    def user_from(self, remote_addr: str | None, headers) -> str | None:
        """Return the user name the proxy sent, or None if the peer is not a trusted proxy.

        An empty or missing header also returns None.
        """
        if not self.enabled or not remote_addr:
            return None

        try:
            address = ipaddress.ip_address(remote_addr)
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not any(address in network for network in self.networks):
            return None

        name = headers.get(self.header, "").strip()
        return name or None


def parse_proxy_settings(networks: Iterable[str] | str | None, header: str | None) -> ProxySettings:
    """Parse ``trusted_proxies`` and ``proxy_user_header``.

    Raises ProxySettingError naming the entry that is not an address or network.
    """
    if networks is None:
        networks = ()
    if isinstance(networks, str):
        networks = [part for part in networks.replace(",", " ").split() if part]

    parsed = []
    for entry in networks:
        try:
            parsed.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ProxySettingError(
                f"invalid trusted_proxies entry {entry!r}: write an IP address such as '127.0.0.1' "
                f"or a network such as '10.0.0.0/24'"
            ) from None

    if header is not None and not isinstance(header, str):
        raise ProxySettingError(f"invalid proxy_user_header {header!r}: write a header name such as 'X-Remote-User'")
    header = (header or "").strip() or None
    return ProxySettings(networks=tuple(parsed), header=header)
