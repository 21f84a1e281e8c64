"""What ZAP may be pointed at: http(s) targets outside the denied networks, redirects
included, and the scope that keeps ZAP on the service."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urljoin, urlsplit

import aiohttp

from monitord import netguard
from monitord.errors import (
    ZapError,
    ZapTargetRefused,
)
from monitord.redact import mask_url, one_line
from monitord.textable import shortened


def scope_regex(target_url: str) -> str:
    """The include regex for a service URL: the URL itself and everything beneath it.

    A URL without a trailing slash must not also take in its siblings (`/svc` vs `/svc-old`),
    so only a path separator, query or fragment may follow it. ZAP matches context regexes
    against the whole URL (Java `matches()`), as `re.fullmatch` does here.
    """
    escaped = re.escape(target_url)
    if target_url.endswith("/"):
        return escaped + ".*"
    return escaped + "(?:[/?#].*)?"


# --------------------------------------------------------------------------------------------
# Targets: what ZAP may be pointed at
# --------------------------------------------------------------------------------------------

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
"""Redirects of the service URL followed by `check_target` (browsers stop at 20)."""


def _shown(url: str) -> str:
    """A catalogue URL as a message may quote it: secrets masked, one short printable line."""
    return one_line(shortened(mask_url(url), 120))


def target_problem(url: str, networks: Iterable[str]) -> str | None:
    """Why `url` may not be scanned, judged without looking anything up; None when it may.

    A scan target is an http(s) URL with a host; a host written as an address must not lie in
    a denied network. Names are checked when the scan starts (`check_target`).
    """
    if not url.strip():
        return "the service has no URL to scan"
    shown = _shown(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError:
        return f"{shown} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown} is not an http(s) URL; ZAP scans web services only"
    if not parts.hostname:
        return f"{shown} has no host"
    return _denied_address(url, parts.hostname, networks)


def _denied_address(url: str, host: str, networks: Iterable[str]) -> str | None:
    """Why `url` may not be scanned when its host is an address in a denied network."""
    try:
        network = netguard.denied_network(host, networks)
    except ValueError:  # a name, not an address: checked when it is resolved
        return None
    if network is None:
        return None
    return f"{_shown(url)}: {host} is inside denied network {network} (probes.denied_networks)"


def _next_hop(current: str, location: str) -> tuple[str, str] | None:
    """The URL a redirect leads to and its host, or None when ZAP would not follow it there."""
    try:
        following = urljoin(current, location.strip())
        parts = urlsplit(following)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None  # ZAP follows http(s) redirects only
    return following, parts.hostname


def _refused(url: str, refusal: Exception) -> ZapTargetRefused:
    """The error for `url`, whose host the deny list refused (`refusal` says how)."""
    said = str(refusal).removeprefix("refused: ")
    return ZapTargetRefused(f"{_shown(url)}: {said} (probes.denied_networks)")


async def _refuse_if_denied(
    url: str, networks: tuple[str, ...], timeout_s: float, first: bool
) -> bool:
    """Resolve the host of `url` and refuse it when it lands in a denied network.

    Returns False when the name does not resolve; for the service URL itself (`first`) that
    is an error instead, since its addresses cannot be checked.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        await netguard.resolve_checked(host, port, networks, timeout_s)
    except netguard.DeniedTargetError as exc:
        raise _refused(url, exc) from None
    except (OSError, TimeoutError) as exc:
        if first:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror
            raise ZapError(
                f"cannot check {_shown(url)} against probes.denied_networks: {host} does not "
                f"resolve ({one_line(reason or str(exc))})"
            ) from None
        return False
    return True


async def check_target(url: str, networks: Iterable[str], timeout_s: float) -> list[str]:
    """Refuse a target ZAP must not be pointed at, following the service URL's redirects.

    Raises `ZapTargetRefused` when `target_problem` says so, when the host resolves into a
    denied network, or when the URL redirects (within `MAX_REDIRECTS`) to such a place; a
    retryable `ZapError` when the host does not resolve. Returns notes on what could not be
    checked (the service did not answer): ZAP's own scope still keeps it on the service.
    """
    denied = tuple(networks)
    problem = target_problem(url, denied)
    if problem is not None:
        raise ZapTargetRefused(f"not scanned: {problem}")
    current = url.strip()
    # The guarded resolver also checks the address aiohttp itself connects to.
    connector = aiohttp.TCPConnector(
        resolver=netguard.GuardedResolver(denied), force_close=True, ssl=False
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        for hop in range(MAX_REDIRECTS + 1):
            via = "" if hop == 0 else f"{_shown(url)} redirects to "
            try:
                if not await _refuse_if_denied(current, denied, timeout_s, first=hop == 0):
                    return [f"{via}{_shown(current)}, which does not resolve"]
                location = await _redirect(session, current, timeout_s)
            except ZapTargetRefused as exc:
                raise ZapTargetRefused(f"not scanned: {via}{exc}") from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, netguard.DeniedResolution):
                    # The name resolved elsewhere a moment before: a rebinding attempt.
                    refused = _refused(current, exc.os_error)
                    raise ZapTargetRefused(f"not scanned: {via}{refused}") from None
                return [f"could not check where {_shown(current)} leads ({one_line(str(exc))})"]
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
                return [f"could not check where {_shown(current)} leads ({one_line(reason)})"]
            hop_to = None if location is None else _next_hop(current, location)
            if hop_to is None:
                return []
            current, host = hop_to
            problem = _denied_address(current, host, denied)
            if problem is not None:
                raise ZapTargetRefused(f"not scanned: {_shown(url)} redirects to {problem}")
    return [f"stopped following the redirects of {_shown(url)} after {MAX_REDIRECTS}"]


async def _redirect(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str | None:
    """Where `url` redirects to, or None when it answers otherwise; the body is not read."""
    async with session.get(
        url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as response:
        if response.status in _REDIRECT_STATUSES:
            return response.headers.get("Location")
        return None


# --------------------------------------------------------------------------------------------
# JSON nesting: Python's decoder recurses once per level, so depth is checked before decoding
# --------------------------------------------------------------------------------------------
