"""Blocking-socket glue around the sans-IO :class:`labnet.protocol.receiver.Receiver`.

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

Idle means idle on the *peer's* side: it sends us nothing and reads nothing
of what we sent.  Our ``send()`` returning only means the bytes are in our
kernel's buffer; a slow reader may need seconds more for them before it can
send its next request.  So while a server waits after a reply
(``next_event(watch_output=True)``), each sign that the peer consumed more
of our output (:class:`PeerReading`) starts both clocks over.

This module holds no protocol knowledge and must not import threading or
multiprocessing.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.receiver import NEED_DATA, Receiver

RECV_SIZE = 256 * 1024
SENDFILE_SLICE = 1 << 20  # bytes per sendfile() call: progress and aborts are noticed in between
POLL = 0.25  # seconds: how often a blocked wait checks should_abort()
PIPE_SIZE = 1 << 20  # splice pipe capacity asked for (F_SETPIPE_SZ); the kernel may give less
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
SPLICE = hasattr(os, "splice") and fcntl is not None  # Linux, Python >= 3.10
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux
# Offsets in struct tcp_info (linux/tcp.h); the kernel copies no more than it has (snd_wnd: 5.4+).
_TCPI_LAST_ACK_RECV, _TCPI_BYTES_ACKED, _TCPI_SND_WND, _TCPI_LEN = 56, 120, 228, 232


def _never() -> bool:
    return False


class PeerReading:
    """Watches the peer consume what we sent, as far as TCP lets us see it (Linux ``TCP_INFO``).

    A peer's reading leaves a trace on our side only in its acknowledgements: the bytes of
    ours its kernel acknowledged (``tcpi_bytes_acked``: it took more) plus the receive window
    it advertises (``tcpi_snd_wnd``: it reopens when the application reads).  Their sum, the
    right edge of what the peer will accept, moves on only when the peer consumes our bytes:
    not when it answers our zero-window probes (a stalled reader), nor when it sends.

    What no one on our side can see: once the window it advertises has grown back to its cap,
    the peer reads the rest of its buffer without sending a packet.  Measured on loopback, a
    client reading 64 KiB every 20 ms, time from its last visible read to its next request:
    ~25 ms with the default receive buffer, ~0.19 s with ``SO_RCVBUF`` 512 KiB, 0.8-1.6 s with
    4 MiB (the kernel doubles both; the window stopped growing at ~0.65 MB with ~7 MB unread).
    The idle limit is the allowance for that last stretch.

    ``deadline`` (absolute, optional) is moved with the idle clock: at each sign of reading
    it becomes that moment plus the span it had when given.
    """

    def __init__(self, sock: socket.socket, deadline: float | None = None):
        self.sock = sock
        self.deadline = deadline
        self._span = None if deadline is None else deadline - time.monotonic()
        seen = self._look()
        self._edge = None if seen is None else seen[0]

    def _look(self) -> tuple[int, float] | None:
        """``(right edge, when the peer's last packet came)``, or None where TCP_INFO is missing."""
        if _TCP_INFO is None:
            return None
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCPI_LEN)
        except OSError:
            return None
        if len(info) < _TCPI_BYTES_ACKED + 8:  # before Linux 4.1
            return None
        edge = struct.unpack_from("=Q", info, _TCPI_BYTES_ACKED)[0]
        if len(info) >= _TCPI_SND_WND + 4:
            edge += struct.unpack_from("=I", info, _TCPI_SND_WND)[0]
        ago = struct.unpack_from("=I", info, _TCPI_LAST_ACK_RECV)[0] / 1000
        return edge, time.monotonic() - ago

    def moved(self) -> float | None:
        """If the peer consumed more of our output since the last look: when (its last packet,
        a past ``time.monotonic()``; ``deadline`` is moved accordingly).  Otherwise None."""
        seen = self._look()
        if seen is None or seen[0] == self._edge:
            return None
        self._edge, when = seen
        if self._span is not None:
            self.deadline = max(self.deadline, when + self._span)
        return when


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

    def next_event(self, deadline: float | None = None, stop=None, watch_output: bool = False):
        """Return the next protocol event, reading from the socket as needed.

        ``stop``: an extra callable that ends the wait like ``should_abort``
        (servers pass "shutting down" while waiting for a request line).
        ``watch_output``: the peer may still be reading what we sent last (a
        download reply in kernel buffers) and will not send before it has: each
        time it is seen consuming more of it, the idle limit and ``deadline``
        start over from then (:class:`PeerReading`).  Bytes it sends do not
        move ``deadline``: a request line trickled in never completes late.
        """
        reading = None
        while True:
            event = self.rx.next_event()
            if event is not NEED_DATA:
                return event
            if watch_output and reading is None:  # not for a request already buffered (pipelined)
                reading = PeerReading(self.sock, deadline)
            self.rx.receive_data(self._recv_waiting(self.sock.recv, RECV_SIZE, deadline, stop, reading))

    def recv_into(self, view) -> int:
        """Read into ``view`` (at least one byte, or 0 when the peer closed), bypassing the receiver.

        For body bytes the receiver allows the caller to read itself
        (:meth:`Receiver.body_room`); the same idle limit and abort checks as
        :meth:`next_event`.  Bytes already waiting are taken by one
        non-blocking ``recv`` (see :meth:`_nonblocking`); only when none are
        does it wait, in slices.
        """
        if not self.should_abort():
            self._nonblocking()
            try:
                n = self.sock.recv_into(view)
            except BlockingIOError:
                pass
            else:
                self.bytes_read += n
                return n
        return self._recv_waiting(self.sock.recv_into, view)

    def _nonblocking(self) -> None:
        """Put the socket in non-blocking mode unless it is already (``gettimeout`` costs no system call).

        Why: with a timeout set, every ``recv``/``send`` is a ``poll`` and then the call (and setting
        the timeout one ``ioctl`` more), and each of those system calls releases and retakes the GIL.
        Measured on the 2-core VM, 50 concurrent base64 uploads to a 50-thread server: per body chunk
        1 ``recvfrom``, 1 ``poll``, 1 ``ioctl``, 1 ``write`` and ~60 ``futex`` calls (GIL hand-offs
        among 50 threads; ``strace -c -f``).  Bytes that are already there need only the call itself.
        """
        if self.sock.gettimeout() != 0.0:
            self.sock.settimeout(0.0)

    def _recv_waiting(self, recv, arg, deadline: float | None = None, stop=None, reading: PeerReading | None = None):
        """``recv(arg)`` once data is there, in short slices that notice ``should_abort``/``stop``
        (and, with ``reading``, the peer reading our output: see :meth:`next_event`)."""
        idle_deadline = None if self.idle is None else time.monotonic() + self.idle
        while True:
            if self.should_abort() or (stop is not None and stop()):
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            if reading is not None:
                deadline = reading.deadline
            self.sock.settimeout(self._wait_slice(deadline, idle_deadline))
            try:
                got = recv(arg)
            except TimeoutError:
                if reading is not None and (when := reading.moved()) is not None and idle_deadline is not None:
                    idle_deadline = max(idle_deadline, when + self.idle)
                continue
            self.bytes_read += got if type(got) is int else len(got)
            return got

    def send(self, data) -> None:
        """Send all of ``data``; the idle limit applies to each stall, not the total.

        Non-blocking sends while the socket takes bytes (see :meth:`_nonblocking`); when it
        takes none, a ``poll`` in slices waits until it does.
        """
        view = memoryview(data)
        stalled, stall_end, poller = False, None, None  # stall_end: the idle deadline of the current stall
        while view:
            if self.should_abort():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            self._nonblocking()
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                if not stalled:
                    stalled = True
                    stall_end = None if self.idle is None else time.monotonic() + self.idle
                if poller is None:
                    poller = select.poll()
                    poller.register(self.sock.fileno(), select.POLLOUT)
                poller.poll(self._wait_slice(None, stall_end) * 1000)
                continue
            view = view[sent:]
            self.bytes_sent += sent
            stalled = False

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

    def splice_body(self, fd: int, moved) -> bool:
        """Move raw body bytes socket -> pipe -> file ``fd`` with ``os.splice``, zero-copy.

        Only while the receiver allows it (:meth:`Receiver.direct_room`: a raw
        body, nothing buffered): bytes it already holds must first come out of
        :meth:`next_event` as ``Data``.  Writes at ``fd``'s current position
        (a buffered file object must be flushed first) and advances it.  After
        each piece, ``moved(offset, n)`` is called -- it must hash those ``n``
        bytes, read back from ``fd`` at ``offset`` -- and then the receiver is
        told.  Returns False, having moved nothing, where splice is not
        available (not Linux, or ``EINVAL`` from the socket or file); the
        caller then goes on with :meth:`next_event`.  Also returns when the
        body is complete or the peer closed (the next :meth:`next_event`
        reports either).  A failed file write raises ``LocalError(STORAGE)``.
        """
        if not SPLICE or self.rx.direct_room() == 0:
            return SPLICE
        try:
            r, w = os.pipe()
        except OSError:
            return False
        try:
            try:
                fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:  # over /proc/sys/fs/pipe-max-size: keep the default
                pass
            pipe_size = fcntl.fcntl(w, _F_GETPIPE_SZ)
            return self._splice_loop(fd, moved, r, w, pipe_size)
        finally:
            os.close(r)
            os.close(w)

    def _splice_loop(self, fd: int, moved, r: int, w: int, pipe_size: int) -> bool:
        sock_fd = self.sock.fileno()
        self.sock.settimeout(POLL)  # any timeout makes the socket non-blocking
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        idle_deadline = None if self.idle is None else time.monotonic() + self.idle
        first, poller = True, None
        while (room := self.rx.direct_room()) > 0:
            if self.should_abort():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            try:
                n = os.splice(sock_fd, w, min(room, pipe_size), flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                if poller is None:
                    poller = select.poll()
                    poller.register(sock_fd, select.POLLIN)
                poller.poll(self._wait_slice(None, idle_deadline) * 1000)
                continue
            except OSError as exc:
                if first and exc.errno == errno.EINVAL:
                    return False  # this socket cannot splice: nothing was moved
                raise
            if n == 0:  # the peer closed: next_event() reports the short body
                self.rx.receive_data(b"")
                return True
            try:
                self._drain_pipe(r, fd, n)
            except OSError as exc:
                raise LocalError(f"cannot write the body: {exc.strerror or exc}", Code.STORAGE) from None
            first = False
            moved(pos, n)
            pos += n
            self.bytes_read += n
            self.rx.body_moved_directly(n)
            if self.idle is not None:
                idle_deadline = time.monotonic() + self.idle
        return True

    def _drain_pipe(self, r: int, fd: int, n: int) -> None:
        """Write the ``n`` bytes waiting in the pipe to ``fd`` (splice; plain read+write if the
        file system cannot splice)."""
        while n > 0:
            try:
                m = os.splice(r, fd, n, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                m = _write_all(fd, os.read(r, n))
            if m <= 0:
                raise OSError(errno.EIO, "splice to the file wrote nothing")
            n -= m

    def linger_close(self, max_bytes: int = 1 << 30, max_seconds: float = 2.0) -> None:
        """Close after our last reply, reading (and dropping) what the peer still sends.

        Closing with unread input makes the kernel send a reset, and the peer
        might then lose the last reply we sent (an ``ERR`` line, ``OK BYE``).
        Bounded in bytes and time.
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


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)
