"""Moving one file body over a :class:`labnet.transport.channel.Channel`, in either direction.

The server's DOWNLOAD and the client's UPLOAD send a body the same way, and
the server's UPLOAD and the client's DOWNLOAD receive one the same way; the
two functions here are that shared code, so both ends stay byte-for-byte
alike.

Sending (:func:`send_body`): a raw body whose digest is already known goes
out by ``sendfile`` (zero-copy); anything else is read in ``CHUNK``-sized
pieces, hashed and encoded by the :class:`labnet.protocol.receiver.BodySender`.
Exactly the announced size is sent: bytes appended meanwhile are not, a file
that shrank fails.  The trailer follows.

Receiving (:func:`receive_body`): a raw body moves socket -> file by
``splice`` where the platform allows it (its bytes hashed back from the file
by a helper thread); a base64 body is read into one reused buffer and
decoded from there (``Receiver.feed_body``), hashed by this thread while
the decoded chunk is in its cache, and written by a helper thread.  Bytes
that arrived together with the reply or request line, and everything where
neither applies, come through the receiver as ``Data``.  The sans-IO
receiver checks the digest against the trailer in every case.

The *sink* a body is received into needs three methods: ``write(data)``,
``direct_fd()`` (flush, then the descriptor ``splice`` may write to at its
position) and ``wrote_directly(n)``.  ``labnet.server.store.Upload`` is one;
:class:`FileSink` wraps a plain binary file.

Must not import threading or multiprocessing, nor the server or client modules.
"""

from __future__ import annotations

import hashlib

from labnet.protocol.receiver import NEED_DATA, BodyEnd, BodySender, Data
from labnet.transport.channel import Channel
from labnet.transport.pipeline import ThreadedSHA256, ThreadedWriter

CHUNK = 3 * 64 * 1024  # file bytes per read: a multiple of 3 keeps base64 padding-free
# File bytes per read when many connections send at once (50 concurrent 100 MB base64 downloads from
# a 50-thread server peaked at 63.4 MB RSS with CHUNK and the read chunk alive during send()).
SMALL_CHUNK = 3 * 32 * 1024
BUFFER = 1 << 20  # wire bytes per read of a base64 body while a helper writes (fewer, larger steps)
SMALL_BUFFER = 128 * 1024  # ... and when no helper may run (many connections at once: 50 x 128 KiB, peak RSS < 64 MB)


def send_body(chan: Channel, f, size: int, sender: BodySender, progress=None, chunk: int = CHUNK) -> None:
    """Send ``size`` bytes of the open file ``f`` (from its start) as a body, then the trailer.

    ``progress(n)`` is called with file bytes as they go out.  ``chunk``: file
    bytes per read (a multiple of 3); a server with many connections at once
    passes ``SMALL_CHUNK`` (see there).
    """
    if sender.digest_known and sender.encoding == "raw":
        chan.sendfile(f, 0, size, progress=progress)  # zero-copy
        sender.sent_directly(size)
    else:
        left = size
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                break  # the file shrank: BodySender.finish() says so
            n = len(data)
            left -= n
            wire = sender.encode(data)
            del data  # only the wire bytes wait while send() blocks: one buffer per connection, not two
            chan.send(wire)
            if progress:
                progress(n)
    chan.send(sender.finish())


class FileSink:
    """A receiving sink around a binary file object (the client's temporary download file)."""

    def __init__(self, file):
        self.file = file

    def write(self, data) -> None:
        self.file.write(data)

    def direct_fd(self) -> int:
        self.file.flush()
        return self.file.fileno()

    def wrote_directly(self, n: int) -> None:
        pass  # the file object's position is not used after splice; the descriptor's moved


def receive_body(chan: Channel, sink, size: int, encoding: str, helpers: bool = True,
                 progress=None, on_closed=None) -> BodyEnd:
    """Receive a body of ``size`` file bytes into ``sink``; return its verified ``BodyEnd``.

    ``helpers``: whether helper threads may take part (the caller knows if
    cores are idle; see :mod:`labnet.transport.pipeline`).  A raw body is spliced
    into the file and hashed back by a helper; a base64 body is read into
    one reused buffer, decoded and hashed in this thread, and written by a
    helper.

    Errors
    ------
    ``PeerError`` from the receiver (bad encoding, digest mismatch, stalled
    peer); ``on_closed()`` is raised if the peer closed mid-body (default a
    ``ConnectionResetError``); storage errors from the sink pass through.
    Helper threads have stopped when this returns or raises.
    """
    rx = chan.rx
    if encoding == "raw":
        hasher = ThreadedSHA256(enabled=helpers)
        writer = None
    else:
        hasher = hashlib.sha256()  # in line: the decoded chunk is still in this core's cache
        writer = ThreadedWriter(sink.write, enabled=helpers)
    rx.start_body(size, encoding, hasher=hasher)
    try:
        event = _receive(chan, rx, sink, hasher, writer, progress, BUFFER if helpers else SMALL_BUFFER)
        if writer is not None:
            writer.finish()  # everything is in the file before the caller may publish it
    finally:
        if writer is not None:
            writer.close()
        if encoding == "raw":
            hasher.close()  # before the file closes: the helper may be reading it back
    if event is None:
        raise on_closed() if on_closed else ConnectionResetError("peer closed the connection mid-body")
    return event


def _receive(chan: Channel, rx, sink, hasher, writer, progress, buffer_size: int) -> BodyEnd | None:
    write = sink.write if writer is None else writer.write
    direct = writer is None  # raw: splice while the receiver allows it
    fd = -1

    def moved(offset: int, n: int) -> None:
        hasher.update_from_file(fd, offset, n)  # read back from the page cache and hashed
        sink.wrote_directly(n)
        if progress:
            progress(n)

    while True:
        if direct and rx.direct_room():
            fd = sink.direct_fd()
            direct = chan.splice_body(fd, moved)
            continue
        event = rx.next_event()  # what is buffered first (bytes that came with the line)
        if event is NEED_DATA:
            if writer is not None and rx.body_room():
                _receive_in_place(chan, rx, write, progress, buffer_size)
                continue
            event = chan.next_event()  # idle limit only: slow but steady is fine
        if isinstance(event, Data):
            write(event.data)
            if progress:
                progress(len(event.data))
        elif isinstance(event, BodyEnd):
            return event
        else:
            return None


def _receive_in_place(chan: Channel, rx, write, progress, size: int) -> None:
    """Read a base64 body into one reused buffer and decode it from there, until it ends or the
    peer closes: no copy of the wire bytes besides the kernel's and the decoder's."""
    buf = bytearray(max(size, 8))
    view = memoryview(buf)  # slices of it are what recv_into fills: no new objects per read
    kept = rx.take_partial_group()
    buf[: len(kept)] = kept
    kept = len(kept)
    try:
        while (room := rx.body_room()) > 0:
            n = chan.recv_into(view[kept : min(len(buf), room)])
            if n == 0:
                rx.receive_data(b"")  # the peer closed: next_event() reports the short body
                return
            data, used = rx.feed_body(buf, kept + n)
            kept = kept + n - used
            if kept:
                buf[:kept] = view[used : used + kept]
            if data:
                write(data)
                if progress:
                    progress(len(data))
    finally:
        if kept:
            rx.receive_data(bytes(view[:kept]))  # back to the receiver, which accounts for them
