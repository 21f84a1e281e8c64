"""A gauge of the machine's speed for benches that report CPU as a share of a core.

The same code measured 4 % of a core one evening and 6.7 % another on this shared virtual
machine: the host's other tenants and its clock change what a CPU second buys. Every
figure of the daemon is mostly TLS handshakes, so the gauge is one: a full TLS 1.3 handshake,
client and server in this process over memory buffers (no network, no event loop), its CPU
time. Printed at the start and the end of a run, it says how fast the machine was.
"""

from __future__ import annotations

import ssl
import statistics
import time
from pathlib import Path

HOST = "localhost"


def _pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
    data = source.read()
    if data:
        sink.write(data)


def _one_handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    pending = [client, server]
    while pending:
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)


def handshake_ms(ca_file: Path, cert: Path, key: Path, count: int = 200, rounds: int = 5) -> float:
    """Median CPU ms of one full TLS handshake (both sides) over `rounds` batches of `count`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    per_batch = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(count):
            _one_handshake(client_ctx, server_ctx)
        per_batch.append((time.process_time() - began) * 1000 / count)
    return statistics.median(per_batch)


def describe(ms: float) -> str:
    """The gauge as the benches print it."""
    return (
        f"machine speed gauge: a full TLS 1.3 handshake, client and server in one process, "
        f"{ms:.2f} CPU ms (CPU shares scale with it)"
    )
