"""Notebook 07 (lab network): this machine's addresses, a reachability probe, link ceilings.

Nothing here sends a packet anywhere except :func:`probe`, which talks to the
labnet server you name.  :func:`primary_address` uses the usual trick of
``connect()`` on a UDP socket: it asks the kernel which source address it
would use, and sends nothing.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from labnet.client import Client
from labnet.config import LOOPBACK_HOSTS
from labnet.protocol.codec import wire_length

LOOPBACK = LOOPBACK_HOSTS


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def primary_address() -> str | None:
    """The address other machines would most likely use to reach this one (None if offline)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.1", 9))  # TEST-NET-2: only a routing decision, no packet is sent
        addr = s.getsockname()[0]
        return None if addr.startswith("0.") else addr
    except OSError:
        return None
    finally:
        s.close()


def local_addresses() -> list[str]:
    """IPv4 addresses of this machine that we can find without extra tools."""
    found = {"127.0.0.1"}
    primary = primary_address()
    if primary:
        found.add(primary)
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    return sorted(found, key=lambda a: (a.startswith("127."), a))


@dataclass
class Probe:
    host: str
    port: int
    ok: bool
    connect_ms: float = 0.0
    greeting_ms: float = 0.0  # connect until a worker took us (queueing shows here)
    rtt_ms: float = 0.0  # one small request/reply (LIST) on the open connection
    files: int = 0
    error: str = ""


def probe(host: str, port: int, timeout: float = 5.0, rounds: int = 5) -> Probe:
    """Connect to a labnet server and time the connection, the greeting and a LIST round trip."""
    c = Client(host, port, timeout=timeout, wait_timeout=timeout)
    try:
        t0 = time.perf_counter()
        c.connect()
        connect = c.connect_seconds
        greeting = time.perf_counter() - t0
        best = float("inf")
        files = 0
        for _ in range(max(1, rounds)):
            t1 = time.perf_counter()
            files = len(c.list())
            best = min(best, time.perf_counter() - t1)
        c.quit()
        return Probe(host, port, True, connect * 1e3, greeting * 1e3, best * 1e3, files)
    except Exception as exc:  # the point is to report, not to raise
        c.close()
        return Probe(host, port, False, error=f"{type(exc).__name__}: {exc}")


def link_ceiling(link_mbit: float, clients: int, size: int, encoding: str = "b64") -> dict:
    """What a shared link allows at best: every client gets ``link / clients``.

    Returns seconds per client and file-throughput per client in MB/s
    (MB = 10^6 bytes), ignoring TCP/IP headers (a few %) and the server's own limits.
    """
    link_bytes = link_mbit * 1e6 / 8
    wire = wire_length(size, encoding)
    seconds = wire * clients / link_bytes
    return {"link": f"{link_mbit:g} Mbit/s", "clients": clients, "size_MB": size / 1e6, "encoding": encoding,
            "seconds_per_client": seconds, "MBps_per_client": size / 1e6 / seconds}  # fmt: skip
