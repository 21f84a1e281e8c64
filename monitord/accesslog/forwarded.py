"""Who the client of an edge log line is: `$remote_addr`, unless a trusted proxy sent the line.

nginx is the edge (see the access-log spec): whatever `$http_x_forwarded_for` holds, the client
wrote it, so trusting it would let anyone choose the address the per-IP rules (scanner probing,
credential stuffing, floods) count against, and so dodge them or frame someone else. As nginx's
realip module does (`set_real_ip_from` with `real_ip_recursive on`), the client is
`$remote_addr`; only when that is one of `[logs] trusted_proxies` is X-Forwarded-For read, from
the right, and the client is the first address that is not a trusted proxy. A hop that is not an
address ends the walk: the last trusted proxy before it is the client. With no trusted proxies
(the default) X-Forwarded-For is never read.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Codes = np.ndarray[Any, np.dtype[np.int32]]


@lru_cache(maxsize=16)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> Address | None:
    # An IPv4-mapped IPv6 address (::ffff:10.0.0.1) is its IPv4 address, as in netguard.
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(text: str, proxies: tuple[Network, ...]) -> bool:
    ip = _address(text)
    return ip is not None and any(ip.version == n.version and ip in n for n in proxies)


def client(addr: str, xff: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The client of a line from `addr` ($remote_addr) with X-Forwarded-For `xff` (None when
    the line has none), given the CIDRs of `[logs] trusted_proxies`."""
    proxies = _networks(trusted_proxies)
    if xff is None or not _trusted(addr, proxies):
        return addr
    found = addr
    for hop in reversed(xff.split(",")):
        hop = hop.strip()
        if not hop:
            continue
        if _address(hop) is None:
            break
        found = hop
        if not _trusted(hop, proxies):
            break
    return found


def clients(
    addr: tuple[Codes, pa.Array],
    xff: tuple[Codes, pa.Array],
    trusted_proxies: tuple[str, ...],
) -> tuple[Codes, pa.Array]:
    """The client of every row, from the rows' $remote_addr and X-Forwarded-For, each as codes
    into values (-1: null). Returns codes into values that may repeat and go unused.

    Rows from an untrusted address keep it (the codes are `addr`'s); for the others, each
    distinct (address, X-Forwarded-For) pair is walked once.
    """
    addr_codes, addr_values = addr
    if not trusted_proxies:
        return addr_codes, addr_values
    proxies = _networks(trusted_proxies)
    from_proxy = [a is not None and _trusted(a, proxies) for a in addr_values.to_pylist()]
    rows = np.flatnonzero(np.append(np.array(from_proxy, np.bool_), False)[addr_codes])
    if len(rows) == 0:
        return addr_codes, addr_values
    xff_codes, xff_values = xff
    width = len(xff_values) + 1
    pairs, which = np.unique(
        addr_codes[rows].astype(np.int64) * width + xff_codes[rows] + 1, return_inverse=True
    )
    addrs, hops = addr_values.to_pylist(), [None, *xff_values.to_pylist()]
    found = [client(addrs[p // width], hops[p % width], trusted_proxies) for p in pairs.tolist()]
    codes = addr_codes.copy()
    codes[rows] = len(addr_values) + which.reshape(-1)
    return codes, pa.concat_arrays([addr_values.cast(pa.string()), pa.array(found, pa.string())])


def client_column(addr: pa.Array, xff: pa.Array, trusted_proxies: tuple[str, ...]) -> pa.Array:
    """`clients` of plain string columns, as a plain string column."""
    if not trusted_proxies:
        return addr
    codes, values = clients(_encoded(addr), _encoded(xff), trusted_proxies)
    return values.take(pa.array(codes, mask=codes < 0))


def _encoded(col: pa.Array) -> tuple[Codes, pa.Array]:
    enc = pc.dictionary_encode(col)
    codes = pc.fill_null(enc.indices, -1).to_numpy().astype(np.int32)
    return codes, enc.dictionary
