"""Refusing targets inside denied networks, so a bad catalogue entry cannot aim monitord inward.

Every probe resolves its target's host first and refuses it, without connecting, when any address
the name resolves to falls in a denied network (default: link-local and the cloud metadata
addresses). Refusing on *any* address rather than all of them is deliberate: a name that resolves
to both a public and a metadata address is exactly what a rebinding attack looks like.

The resolution here and the one aiohttp does when it connects are separate lookups. Sessions built
with `probes.make_session` also use `GuardedResolver`, which applies the same check inside aiohttp's
own lookup and so closes that gap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Iterable, Sequence
from functools import lru_cache

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

DEFAULT_DENIED_NETWORKS: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local, which includes 169.254.169.254 (AWS, GCP, Azure metadata)
    "fe80::/10",  # IPv6 link-local
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "fd00:ec2::254/128",  # AWS metadata over IPv6
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeniedTargetError(Exception):
    """The target resolves to an address inside a denied network; no connection was made."""


@lru_cache(maxsize=64)
def _networks(networks: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def denied_network(address: str, networks: Iterable[str] = DEFAULT_DENIED_NETWORKS) -> str | None:
    """Return the denied network that holds `address`, or None when the address is allowed.

    IPv4-mapped IPv6 addresses (``::ffff:169.254.169.254``) are checked as the IPv4 address they
    carry, since that is where a connection to them goes. A zone suffix (``fe80::1%eth0``) is
    ignored.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for net in _networks(tuple(networks)):
        if ip.version == net.version and ip in net:
            return str(net)
    return None


def refuse_denied(host: str, addresses: Iterable[str], networks: Iterable[str]) -> None:
    """Raise DeniedTargetError when any of `addresses` (what `host` resolved to) is denied."""
    for address in addresses:
        net = denied_network(address, networks)
        if net is not None:
            raise DeniedTargetError(
                f"refused: {host} resolves to {address}, inside denied network {net}"
            )


async def resolve_checked(
    host: str, port: int, networks: Sequence[str], timeout_s: float
) -> tuple[list[str], float]:
    """Resolve `host` and refuse it when it lands in a denied network.

    Returns the addresses and the lookup time in milliseconds. Raises DeniedTargetError, or
    OSError / TimeoutError when the name does not resolve.
    """
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=timeout_s
    )
    elapsed = (time.perf_counter() - start) * 1000
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refuse_denied(host, addresses, networks)
    return addresses, elapsed


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses names resolving into denied networks.

    It wraps aiohttp's default resolver, so the address aiohttp connects to is the one checked.
    """

    def __init__(self, networks: Sequence[str] = DEFAULT_DENIED_NETWORKS) -> None:
        """Wrap aiohttp's default resolver with the given deny list."""
        self._inner = aiohttp.DefaultResolver()
        self._networks = tuple(networks)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve like the default resolver, raising OSError for a denied address."""
        results = await self._inner.resolve(host, port, family)
        try:
            refuse_denied(host, (str(r["host"]) for r in results), self._networks)
        except DeniedTargetError as exc:
            # aiohttp turns an OSError from the resolver into ClientConnectorError, which the
            # probes already report as a failed connection.
            raise OSError(str(exc)) from None
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()
