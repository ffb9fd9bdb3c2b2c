"""Blocking-socket glue around the sans-IO :class:`labnet.protocol.Receiver`.

Servers and the client both talk through a :class:`Channel`: it reads from
the socket only when the receiver says ``NEED_DATA``, and every wait is cut
into short slices so that a shutdown request is noticed quickly and every
loop ends by itself.

Timeouts
--------
* ``deadline`` (absolute, ``time.monotonic()``): the event must arrive by
  then, however the bytes trickle in.  Servers use it for request lines.
* ``idle``: at most this long without *any* byte.  Used for bodies, so a
  transfer that keeps making progress is never cut off, however slow.
Either one expiring raises ``PeerError(TIMEOUT)``.  ``should_abort()``
returning true raises ``LocalError(SHUTDOWN)``.

This module holds no protocol knowledge and must not import threading or
multiprocessing.
"""

from __future__ import annotations

import os
import select
import socket
import time

from .errors import Code, LocalError, PeerError
from .protocol import NEED_DATA, Receiver

RECV_SIZE = 256 * 1024
SENDFILE_SLICE = 1 << 20  # bytes per sendfile() call: progress and aborts are noticed in between
POLL = 0.25  # seconds: how often a blocked wait checks should_abort()


def _never() -> bool:
    return False


class Channel:
    def __init__(self, sock: socket.socket, max_line: int, idle: float | None = 60.0, should_abort=_never):
        self.sock = sock
        self.rx = Receiver(max_line)
        self.idle = idle
        self.should_abort = should_abort
        self.bytes_read = 0
        self.bytes_sent = 0

    def _wait_slice(self, deadline: float | None, idle_deadline: float | None) -> float:
        now = time.monotonic()
        limit = min(d for d in (deadline, idle_deadline, now + POLL) if d is not None)
        if deadline is not None and now >= deadline:
            raise PeerError("request did not arrive in time", Code.TIMEOUT)
        if idle_deadline is not None and now >= idle_deadline:
            raise PeerError(f"no data for {self.idle:g} s", Code.TIMEOUT)
        return max(limit - now, 0.001)

    def next_event(self, deadline: float | None = None, stop=None):
        """Return the next protocol event, reading from the socket as needed.

        ``stop``: an extra callable that ends the wait like ``should_abort``
        (servers pass "shutting down" while waiting for a request line).
        """
        idle_deadline = None if self.idle is None else time.monotonic() + self.idle
        while True:
            event = self.rx.next_event()
            if event is not NEED_DATA:
                return event
            while True:
                if self.should_abort() or (stop is not None and stop()):
                    raise LocalError("server is shutting down", Code.SHUTDOWN)
                self.sock.settimeout(self._wait_slice(deadline, idle_deadline))
                try:
                    data = self.sock.recv(RECV_SIZE)
                except TimeoutError:
                    continue
                break
            self.bytes_read += len(data)
            self.rx.receive_data(data)
            if self.idle is not None:
                idle_deadline = time.monotonic() + self.idle

    def send(self, data) -> None:
        """Send all of ``data``; the idle limit applies to each stall, not the total."""
        view = memoryview(data)
        idle_deadline = None if self.idle is None else time.monotonic() + self.idle
        while view:
            if self.should_abort():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            self.sock.settimeout(self._wait_slice(None, idle_deadline))
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                continue
            view = view[sent:]
            self.bytes_sent += sent
            if self.idle is not None:
                idle_deadline = time.monotonic() + self.idle

    def sendfile(self, f, offset: int, count: int, progress=None) -> None:
        """Send ``count`` bytes of the open file ``f`` from ``offset`` with ``os.sendfile``.

        Zero-copy: the kernel moves the bytes from the page cache to the socket,
        they never enter Python.  The same idle limit and abort checks as
        :meth:`send`.  ``progress(n)`` is called after each slice.  A file that
        ends before ``offset + count`` raises ``PeerError`` (the body is then
        cut short: the caller must close the connection).
        """
        out_fd, in_fd = self.sock.fileno(), f.fileno()
        idle_deadline = None if self.idle is None else time.monotonic() + self.idle
        self.sock.settimeout(POLL)  # any timeout makes the descriptor non-blocking
        poller = None
        while count > 0:
            if self.should_abort():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            try:
                sent = os.sendfile(out_fd, in_fd, offset, min(count, SENDFILE_SLICE))
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(out_fd, select.POLLOUT)
                poller.poll(self._wait_slice(None, idle_deadline) * 1000)
                continue
            if sent == 0:
                raise PeerError(f"file changed while being sent: it ends {count} bytes early")
            offset += sent
            count -= sent
            self.bytes_sent += sent
            if progress is not None:
                progress(sent)
            if self.idle is not None:
                idle_deadline = time.monotonic() + self.idle

    def linger_close(self, max_bytes: int = 1 << 30, max_seconds: float = 2.0) -> None:
        """Close after our last reply, reading (and dropping) what the peer still sends.

        Closing with unread input makes the kernel send a reset, and the peer
        might then lose the ``ERR`` line we just sent.  Bounded in bytes and time.
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + max_seconds
            while max_bytes > 0 and time.monotonic() < end:
                self.sock.settimeout(max(end - time.monotonic(), 0.001))
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    break
                max_bytes -= len(data)
        except OSError:
            pass
        finally:
            self.sock.close()
