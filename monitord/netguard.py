"""Refusing targets inside denied networks, so a bad catalogue entry cannot aim monitord inward.

Every probe resolves its target's host first and refuses it, without connecting, when any address
the name resolves to falls in a denied network (default: link-local and the cloud metadata
addresses). Refusing on *any* address rather than all of them is deliberate: a name that resolves
to both a public and a metadata address is exactly what a rebinding attack looks like. An IPv6
address that carries an IPv4 one (NAT64, 6to4, IPv4-mapped or -compatible, Teredo) is refused when
that IPv4 address is, since that is where its packets end up.

The resolution here and the one aiohttp does when it connects are separate lookups. Sessions built
with `probes.make_session` also use `GuardedResolver`, which applies the same check inside aiohttp's
own lookup and so closes that gap. Blocking clients that resolve names themselves (apprise, through
requests and smtplib) are run inside `lookups_checked`, which applies it to their own lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
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


class DeniedResolution(OSError):
    """`GuardedResolver`'s refusal: an OSError, as aiohttp expects of a resolver, that aiohttp
    keeps as the `os_error` of the ClientConnectorError it raises, so a caller can tell a refusal
    from a name that does not resolve."""


@lru_cache(maxsize=64)
def _networks(networks: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


_NAT64 = (
    ipaddress.IPv6Network("64:ff9b::/96"),  # RFC 6052, the well-known prefix
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215, local use; deployed as /96 prefixes
)


def embedded_ipv4(address: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and delivers its packets to, if it has one.

    IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``), NAT64 (the IPv4 address
    in the last 32 bits), 6to4 (``2002:AABB:CCDD::``) and Teredo (the client's address). A zone
    suffix is ignored; an IPv4 address carries none.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # :: and ::1 are not IPv4-compatible addresses
        return ipaddress.IPv4Address(int(ip))
    return None


def denied_network(address: str, networks: Iterable[str] = DEFAULT_DENIED_NETWORKS) -> str | None:
    """Return the denied network that holds `address`, or None when the address is allowed.

    An IPv6 address that carries an IPv4 address (see `embedded_ipv4`) is denied when either
    is, since a connection to it ends up at that IPv4 address. A zone suffix (``fe80::1%eth0``)
    is ignored.
    """
    return _denied(address, tuple(networks))


@lru_cache(maxsize=4096)
def _denied(address: str, networks: tuple[str, ...]) -> str | None:
    # Cached: every probe of a round checks the addresses its service resolved to, which are
    # the same round after round.
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    carried = embedded_ipv4(address)
    if carried is not None:
        candidates.append(carried)
    for net in _networks(networks):
        for candidate in candidates:
            if candidate.version == net.version and candidate in net:
                return str(net)
    return None


def refuse_denied(host: str, addresses: Iterable[str], networks: Iterable[str]) -> None:
    """Raise DeniedTargetError when any of `addresses` (what `host` resolved to) is denied."""
    for address in addresses:
        net = denied_network(address, networks)
        if net is not None:
            carried = embedded_ipv4(address)
            via = f" (which carries {carried})" if carried is not None else ""
            raise DeniedTargetError(
                f"refused: {host} resolves to {address}{via}, inside denied network {net}"
            )


async def resolve_checked(
    host: str, port: int, networks: Sequence[str], timeout_s: float | None
) -> tuple[list[str], float]:
    """Resolve `host` and refuse it when it lands in a denied network, within `timeout_s`
    (None: the caller's own timeout bounds it).

    Returns the addresses and the lookup time in milliseconds. Raises DeniedTargetError, or
    OSError / TimeoutError when the name does not resolve.
    """
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):  # not wait_for: no task of its own each lookup
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    elapsed = (time.perf_counter() - start) * 1000
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refuse_denied(host, addresses, networks)
    return addresses, elapsed


_lookup_check: contextvars.ContextVar[tuple[tuple[str, ...], list[str]] | None] = (
    contextvars.ContextVar("lookup_check", default=None)
)
_wrapped_getaddrinfo = socket.getaddrinfo


def _getaddrinfo_checked(host: object, port: object, *args: object, **kwargs: object) -> object:
    """socket.getaddrinfo, refusing denied addresses inside `lookups_checked`."""
    infos = _wrapped_getaddrinfo(host, port, *args, **kwargs)  # type: ignore[arg-type]
    check = _lookup_check.get()
    if check is not None and host is not None:
        networks, refusals = check
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            refuse_denied(name, (str(info[4][0]) for info in infos), networks)
        except DeniedTargetError as exc:
            refusals.append(str(exc))
            raise DeniedResolution(str(exc)) from None
    return infos


@contextlib.contextmanager
def lookups_checked(networks: Sequence[str]) -> Iterator[list[str]]:
    """Within the block, a blocking name lookup (socket.getaddrinfo) landing in a denied network
    fails with DeniedResolution, an OSError, which blocking clients report as a failed
    connection; the list yielded gathers what was refused, for the caller to say it. It holds on
    this thread and in `asyncio.to_thread` calls made from it, which carry the context along;
    other threads and the event loop's own lookups are not affected.

    For clients that resolve names themselves, such as apprise through requests and smtplib: a
    check made before them is a separate lookup, and a name whose DNS its owner controls can
    answer the check with an allowed address and the client's own lookup with a denied one.
    """
    global _wrapped_getaddrinfo
    if socket.getaddrinfo is not _getaddrinfo_checked:
        _wrapped_getaddrinfo = socket.getaddrinfo
        socket.getaddrinfo = _getaddrinfo_checked  # type: ignore[assignment]
    refusals: list[str] = []
    token = _lookup_check.set((tuple(networks), refusals))
    try:
        yield refusals
    finally:
        _lookup_check.reset(token)


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
            raise DeniedResolution(str(exc)) from None
        return results

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()
