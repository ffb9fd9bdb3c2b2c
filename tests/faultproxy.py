"""Fault injection for the reliability tests: a user-space TCP proxy and raw-wire helpers.

Kernel traffic shaping (netem) is not available on the lab machines, so latency,
throttling and resets in the middle of a stream are made here, in user space:

* :class:`FaultProxy` listens on 127.0.0.1:0 and forwards every connection to a
  target, optionally throttled per direction (bytes per second), and optionally
  cut -- cleanly (FIN) or by a TCP reset (RST, ``SO_LINGER`` 0) -- after a given
  number of bytes in one direction.
* :class:`Wire` is a raw socket speaking the protocol by hand, for faults a
  well-behaved :class:`labnet.client.Client` never makes (stopping at 50 % of a
  body, resetting, trickling a request line byte by byte).
* :func:`wait_for` is the bounded poll every test uses instead of a fixed sleep;
  :func:`upload_by_hand` sends body bytes in the request line's packet.

Every loop here is bounded (socket timeouts, deadlines) and :meth:`FaultProxy.close`
joins its threads, so nothing outlives a test.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

from labnet.procutil import alive
from labnet.server.store import TEMP_PREFIX, TEMP_SUFFIX

POLL = 0.05


def wait_for(predicate, timeout: float, what: str = "condition", interval: float = POLL):
    """Poll ``predicate`` until it returns a truthy value (returned) or ``timeout`` passes (AssertionError)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def reset_close(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset instead of a FIN (SO_LINGER on, 0 seconds)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def folder_state(root) -> dict[str, bytes]:
    """Every entry of a server folder, temp files included, as ``{name: content}``."""
    out = {}
    for p in sorted(Path(root).iterdir()):
        out[p.name] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def temp_files(root) -> list[str]:
    return sorted(p.name for p in Path(root).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))


def stop_servers(servers) -> None:
    """Stop every server a test started (anything with ``pids()`` and ``stop()``); fail if any of
    their processes is still alive afterwards."""
    pids = set()
    for srv in servers:
        pids.update(srv.pids())
        srv.stop()
    left = [p for p in pids if alive(p)]
    assert not left, f"server processes left behind: {left}"


def upload_by_hand(address, name: str, size: int, encoding: str, wire: bytes, digest: str, first: int) -> bytes:
    """One UPLOAD with the first ``first`` wire bytes in the same send as the request line
    (so they reach the server in its read of the line); returns the final reply line."""
    with socket.create_connection(address, timeout=10) as s:
        f = s.makefile("rb")
        greeting = f.readline()
        while greeting.startswith(b"OK LABNET 1 QUEUED"):
            greeting = f.readline()
        assert greeting.startswith(b"OK LABNET 1 READY")
        s.sendall(f"UPLOAD {name} {size} {encoding}\r\n".encode() + wire[:first])
        assert f.readline() == f"OK SEND {len(wire)}\r\n".encode()
        s.sendall(wire[first:] + f"SHA256 {digest}\r\n".encode())
        return f.readline()


# ----------------------------------------------------------------------------
# A raw protocol connection
# ----------------------------------------------------------------------------


class Wire:
    """A raw TCP connection to a labnet server, driven byte by byte by a test."""

    def __init__(self, address, timeout: float = 10.0, greet: bool = True, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # a fixed small receive buffer (no autotuning): the server cannot run far ahead
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buf = b""
        self.greeting = self.line() if greet else None
        while greet and self.greeting.startswith("OK LABNET 1 QUEUED"):  # the worker was not free yet
            self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        """The next reply line (CRLF stripped); ``""`` if the server closed first."""
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                rest, self.buf = self.buf, b""
                return rest.decode("utf-8", "replace")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(min(1 << 20, n - len(self.buf)))
            if not data:
                break
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, limit: int = 1 << 24) -> bytes:
        """Everything until the server closes (bounded in bytes; the socket timeout bounds the time)."""
        out, self.buf = self.buf, b""
        while len(out) < limit:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out += data
        return out

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        reset_close(self.sock)

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------
# The proxy
# ----------------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1:0 that forwards to ``target`` with injected faults.

    ``up_rate`` / ``down_rate``: bytes per second client->server / server->client
    (``None``: as fast as possible).  ``cut_up_after`` / ``cut_down_after``: after
    that many bytes in that direction, end the connection on both sides, with a
    reset (``cut_mode="reset"``) or a clean close (``"close"``).  ``bufsize``: small
    kernel buffers on the proxy's sockets, so a throttled direction really holds
    the sender back instead of disappearing into megabytes of socket buffers.
    """

    def __init__(self, target, up_rate: float | None = None, down_rate: float | None = None,
                 cut_up_after: int | None = None, cut_down_after: int | None = None,
                 cut_mode: str = "reset", slice_bytes: int = 16384, bufsize: int | None = None):  # fmt: skip
        self.target = target
        self.rates = {"up": up_rate, "down": down_rate}
        self.cuts = {"up": cut_up_after, "down": cut_down_after}
        self.cut_mode = cut_mode
        self.slice_bytes = slice_bytes
        self.bufsize = bufsize
        self.forwarded = {"up": 0, "down": 0}
        self.connections = 0
        self.cut_count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(POLL * 2)
        self.address = self.listener.getsockname()
        self._spawn(self._accept_loop, "proxy-accept")

    def _spawn(self, fn, name, *args) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if self.bufsize:
                    for s in (client, upstream):
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.bufsize)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.bufsize)
                upstream.settimeout(5)
                upstream.connect(self.target)
                for s in (client, upstream):
                    s.settimeout(POLL * 2)
            except OSError:
                upstream.close()
                reset_close(client)
                continue
            with self._lock:
                self.connections += 1
                self._socks += [client, upstream]
            pair = {"done": threading.Event()}
            self._spawn(self._pump, "proxy-up", client, upstream, "up", pair)
            self._spawn(self._pump, "proxy-down", upstream, client, "down", pair)

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, pair: dict) -> None:
        rate, cut = self.rates[direction], self.cuts[direction]
        moved = 0
        credit, last = 0.0, time.monotonic()
        try:
            while not self._stop.is_set() and not pair["done"].is_set():
                want = self.slice_bytes if rate is None else max(1, min(self.slice_bytes, int(rate * 0.05)))
                if cut is not None:
                    want = min(want, cut - moved)
                    if want <= 0:
                        self._cut(src, dst, pair)
                        return
                try:
                    data = src.recv(want)
                except TimeoutError:
                    continue
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                self._send_all(dst, data, pair)
                moved += len(data)
                with self._lock:
                    self.forwarded[direction] += len(data)
                if rate is not None:  # throttle: a token bucket holding at most 0.1 s of credit
                    now = time.monotonic()
                    credit = min(credit + (now - last) * rate, rate * 0.1) - len(data)
                    last = now
                    if credit < 0:
                        self._stop.wait(min(-credit / rate, 1.0))
        except OSError:
            pair["done"].set()
            for s in (src, dst):
                reset_close(s)

    def _send_all(self, sock: socket.socket, data: bytes, pair: dict) -> None:
        # Both pumps of a connection share its sockets, so the timeout is one short value set
        # once (a thread blocked in a long wait would keep a closed socket alive, delaying a reset).
        view, end = memoryview(data), time.monotonic() + 10.0
        while view:
            if self._stop.is_set() or pair["done"].is_set():
                raise ConnectionAbortedError("proxy connection ended")
            try:
                view = view[sock.send(view):]
            except TimeoutError:
                if time.monotonic() > end:
                    raise
                continue

    def _cut(self, src, dst, pair) -> None:
        with self._lock:
            self.cut_count += 1
        pair["done"].set()
        for s in (src, dst):
            if self.cut_mode == "reset":
                reset_close(s)
            else:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        for t in threads:
            t.join(5.0)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
