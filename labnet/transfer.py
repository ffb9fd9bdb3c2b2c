"""Moving one file body over a :class:`labnet.channel.Channel`, in either direction.

The server's DOWNLOAD and the client's UPLOAD send a body the same way, and
the server's UPLOAD and the client's DOWNLOAD receive one the same way; the
two functions here are that shared code, so both ends stay byte-for-byte
alike.

Sending (:func:`send_body`): a raw body whose digest is already known goes
out by ``sendfile`` (zero-copy); anything else is read in ``CHUNK``-sized
pieces, hashed and encoded by the :class:`labnet.protocol.BodySender`.
Exactly the announced size is sent: bytes appended meanwhile are not, a file
that shrank fails.  The trailer follows.

Receiving (:func:`receive_body`): a raw body moves socket -> file by
``splice`` where the platform allows it (its bytes hashed back from the file
by the hasher); everything else, and bytes that arrived together with the
reply or request line, come through the receiver as ``Data``.  The sans-IO
receiver checks the digest against the trailer in every case.

The *sink* a body is received into needs three methods: ``write(data)``,
``direct_fd()`` (flush, then the descriptor ``splice`` may write to at its
position) and ``wrote_directly(n)``.  ``labnet.store.Upload`` is one;
:class:`FileSink` wraps a plain binary file.

Must not import threading or multiprocessing, nor the server or client modules.
"""

from __future__ import annotations

from .channel import Channel
from .protocol import BodyEnd, BodySender, Data

CHUNK = 3 * 64 * 1024  # file bytes per read: a multiple of 3 keeps base64 padding-free


def send_body(chan: Channel, f, size: int, sender: BodySender, progress=None) -> None:
    """Send ``size`` bytes of the open file ``f`` (from its start) as a body, then the trailer.

    ``progress(n)`` is called with file bytes as they go out.
    """
    if sender.digest_known and sender.encoding == "raw":
        chan.sendfile(f, 0, size, progress=progress)  # zero-copy
        sender.sent_directly(size)
    else:
        left = size
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break  # the file shrank: BodySender.finish() says so
            left -= len(chunk)
            chan.send(sender.encode(chunk))
            if progress:
                progress(len(chunk))
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


def receive_body(chan: Channel, sink, size: int, encoding: str, hasher, progress=None, on_closed=None) -> BodyEnd:
    """Receive a body of ``size`` file bytes into ``sink``; return its verified ``BodyEnd``.

    Errors
    ------
    ``PeerError`` from the receiver (bad encoding, digest mismatch, stalled
    peer); ``on_closed()`` is raised if the peer closed mid-body (default a
    ``ConnectionResetError``); storage errors from the sink pass through.
    """
    rx = chan.rx
    rx.start_body(size, encoding, hasher=hasher)
    direct = encoding == "raw" and hasattr(hasher, "update_from_file")
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
        event = chan.next_event()  # idle limit only: slow but steady is fine
        if isinstance(event, Data):
            sink.write(event.data)
            if progress:
                progress(len(event.data))
        elif isinstance(event, BodyEnd):
            return event
        else:
            raise (on_closed() if on_closed else ConnectionResetError("peer closed the connection mid-body"))
