"""The sans-IO receiver: bytes in, events out (lines and length-prefixed bodies), and the body sender.

Nothing here touches a socket, a thread or a file.  Servers and the client
feed whatever ``recv()`` gave them to :meth:`Receiver.receive_data` and pull
events with :meth:`Receiver.next_event` until it says :data:`NEED_DATA` (in
the manner of h11).  Because the receiver never assumes that one ``recv()``
holds one message, a request split across reads, or several requests in one
read, parse the same way.  What the lines *say* (requests, replies) is
``labnet.protocol.messages``.

Bodies are length-prefixed (the receiver knows the byte count before the
first body byte) and followed by a ``SHA256`` trailer line that the receiver
checks: a body that is short, long, badly encoded or corrupted is an error,
never a silently different file.

Imports nothing of labnet but ``errors``, ``config`` and the protocol's own
``codec``; must not import socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from labnet.errors import Code, PeerError
from labnet.protocol.codec import Decoder, Encoder, wire_length

MAX_LINE = 4096  # bytes in one request line, CRLF included
MAX_REPLY_LINE = 65536  # a reply line (STATS) may be longer than a request


# --------------------------------------------------------------------------
# Events produced by the Receiver
# --------------------------------------------------------------------------


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")  # feed more bytes, then ask again
CLOSED = _Sentinel("CLOSED")  # the peer closed cleanly between messages


@dataclass(frozen=True)
class Line:
    """One complete line, CR/LF stripped, decoded as UTF-8."""

    text: str


@dataclass(frozen=True)
class Data:
    """A piece of a body, already decoded to file bytes."""

    data: bytes


@dataclass(frozen=True)
class BodyEnd:
    """The whole body arrived and its SHA-256 matched the trailer."""

    size: int
    sha256: str


_LINE, _BODY, _TRAILER, _BROKEN = "line", "body", "trailer", "broken"


class Receiver:
    """Split an incoming byte stream into lines and length-prefixed bodies.

    Errors
    ------
    ``PeerError`` for anything the peer got wrong.  After an error inside a
    body, a line longer than ``max_line``, or an end of stream in the middle of
    a line, the stream cannot be resynced:
    :attr:`broken` becomes true and the caller must close the connection.
    A bad but complete line (say, not UTF-8) leaves the receiver usable.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._parts: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._state = _LINE
        self._body_left = 0
        self._body_size = 0
        self._decoded = 0
        self._decoder: Decoder | None = None
        self._hash = None

    # -- feeding -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self._eof = True
            return
        self._parts.append(bytes(data))
        self._buffered += len(data)

    @property
    def broken(self) -> bool:
        return self._state == _BROKEN

    @property
    def in_body(self) -> bool:
        return self._state in (_BODY, _TRAILER)

    @property
    def body_received(self) -> int:
        """Decoded body bytes delivered so far in the current body."""
        return self._decoded

    def start_body(self, size: int, encoding: str, hasher=None) -> None:
        """Expect a body of ``size`` file bytes in ``encoding``, then a SHA256 trailer.

        ``hasher``: where the body's SHA-256 is computed -- any object with
        ``update(bytes)`` and ``hexdigest()`` that computes SHA-256 (default: a
        fresh ``hashlib.sha256()``).  The receiver feeds it every decoded body
        byte, in order, before handing the bytes out as ``Data``, and compares
        its ``hexdigest()`` with the trailer itself: the check stays here
        whoever does the hashing.  The I/O layer passes one that hashes in a
        helper thread (``labnet.transport.pipeline``), so hashing overlaps the socket and
        file work; this module stays free of threads.  ``update`` receives
        ``bytes`` objects, which nobody modifies later, so it may keep them for
        a while.
        """
        if self._state != _LINE:
            raise RuntimeError(f"start_body in state {self._state}")
        self._state = _BODY
        self._body_size = size
        self._body_left = wire_length(size, encoding)
        self._decoded = 0
        self._decoder = Decoder(encoding)
        self._hash = hashlib.sha256() if hasher is None else hasher

    def direct_room(self) -> int:
        """Raw body bytes the I/O layer may move itself now, bypassing :meth:`receive_data`.

        Non-zero only inside a *raw* body with nothing buffered here (bytes that
        arrived with earlier reads must come out as ``Data`` first, in order).
        The I/O layer may then move up to this many body bytes straight from
        the socket to the file (``splice``) and report them with
        :meth:`body_moved_directly`.  It must feed the *same* hasher given to
        :meth:`start_body` with exactly those bytes, in order (reading them
        back from the file); the trailer is still checked here, against that
        hasher's digest.
        """
        if self._state != _BODY or self._eof or self._parts or self._decoder.encoding != "raw":
            return 0
        return self._body_left

    def body_moved_directly(self, count: int) -> None:
        """``count`` raw body bytes were moved (and hashed) by the I/O layer: see :meth:`direct_room`."""
        if not 0 < count <= self.direct_room():
            raise RuntimeError(f"body_moved_directly({count}) with room {self.direct_room()}")
        self._body_left -= count
        self._decoded += count
        if self._body_left == 0:
            self._state = _TRAILER

    def body_room(self) -> int:
        """Wire bytes of the current body the I/O layer may read itself, into its own buffer.

        Non-zero only inside a body (any encoding) with nothing buffered here.
        The I/O layer may then read up to this many bytes into a buffer it
        reuses and hand them to :meth:`feed_body`, which decodes them in place:
        no copy of the wire bytes, unlike :meth:`receive_data`.
        """
        if self._state != _BODY or self._eof or self._parts:
            return 0
        return self._body_left

    def take_partial_group(self) -> bytes:
        """Give the I/O layer the body bytes received but not yet decoded (at most 4).

        :meth:`receive_data` input is decoded in whole base64 groups; the
        remainder waits here for the next read.  Before reading into its own
        buffer for :meth:`feed_body`, the I/O layer takes it back and puts it
        first in that buffer; it counts as not received until then.
        """
        if self._state != _BODY:
            return b""
        held = self._decoder.take_held()
        self._body_left += len(held)
        return held

    def feed_body(self, buf, end: int) -> tuple[bytes, int]:
        """Decode and hash body bytes ``buf[:end]`` the I/O layer read itself; see :meth:`body_room`.

        Returns ``(data, used)``: the decoded bytes -- already fed to the
        hasher, now the caller's to store -- and how many of the ``end`` wire
        bytes they took.  The rest (a base64 group not yet complete, at most 4
        bytes) must be offered again at the front of the next call, so
        ``end`` counts them again.  ``buf``: ``bytes`` or ``bytearray``.

        Errors
        ------
        ``PeerError`` (the receiver is then broken) for bad base64 or a body
        that decodes to more or fewer bytes than declared.  ``RuntimeError``
        if ``end`` exceeds :meth:`body_room`.
        """
        if not 0 < end <= self.body_room():
            raise RuntimeError(f"feed_body({end}) with room {self.body_room()}")
        try:
            data, used = self._decoder.decode_prefix(buf, end, final=end == self._body_left)
            self._take_body(used, data)
        except PeerError:
            self._state = _BROKEN
            raise
        return data, used

    def _take_body(self, wire: int, data: bytes) -> None:
        """Account for ``wire`` body bytes that decoded to ``data``; hash it; end the body when due."""
        self._body_left -= wire
        self._decoded += len(data)
        if self._decoded > self._body_size:
            raise PeerError("body decodes to more bytes than declared", Code.INTEGRITY)
        self._hash.update(data)
        if self._body_left == 0:
            if self._decoded != self._body_size:
                raise PeerError(
                    f"body decodes to {self._decoded} bytes, {self._body_size} declared",
                    Code.INTEGRITY,
                )
            self._state = _TRAILER

    # -- pulling -----------------------------------------------------------

    def next_event(self):
        """Return the next event: ``Line``, ``Data``, ``BodyEnd``, ``NEED_DATA`` or ``CLOSED``."""
        try:
            if self._state == _BODY:
                return self._next_body_event()
            if self._state in (_LINE, _TRAILER):
                return self._next_line_event()
        except PeerError:
            if self._state != _LINE:
                self._state = _BROKEN
            raise
        raise PeerError("connection is unusable after an earlier error")

    def _next_body_event(self):
        if self._body_left == 0:
            self._state = _TRAILER
            return self._next_line_event()
        if not self._parts:
            if self._eof:
                raise PeerError(
                    f"connection closed after {self._decoded} of {self._body_size} body bytes"
                )
            return NEED_DATA
        chunk = self._parts.pop(0)
        if len(chunk) > self._body_left:
            self._parts.insert(0, chunk[self._body_left :])
            chunk = chunk[: self._body_left]
        self._buffered -= len(chunk)
        data = self._decoder.decode(chunk, final=len(chunk) == self._body_left)
        self._take_body(len(chunk), data)
        return Data(data) if data else self.next_event()

    def _take_line(self) -> bytes | None:
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        buf = self._parts[0] if self._parts else b""
        end = buf.find(b"\n", 0, self.max_line)
        if end == -1:
            if len(buf) >= self.max_line:
                self._state = _BROKEN
                raise PeerError(f"line longer than {self.max_line} bytes")
            return None
        line, rest = buf[:end], buf[end + 1 :]
        self._parts = [rest] if rest else []
        self._buffered = len(rest)
        return line[:-1] if line.endswith(b"\r") else line

    def _next_line_event(self):
        raw = self._take_line()
        if raw is None:
            if self._eof:
                if self._state == _TRAILER:
                    raise PeerError("connection closed before the SHA256 trailer")
                if self._buffered:
                    # Nothing more can come: the stream is over (a caller that kept
                    # reading after this error would otherwise get it forever).
                    self._state = _BROKEN
                    raise PeerError("connection closed in the middle of a line")
                return CLOSED
            return NEED_DATA
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PeerError("line is not valid UTF-8") from None
        if self._state == _TRAILER:
            return self._check_trailer(text)
        return Line(text)

    def _check_trailer(self, text: str) -> BodyEnd:
        words = text.split()
        if len(words) != 2 or words[0].upper() != "SHA256" or len(words[1]) != 64:
            raise PeerError(f"expected 'SHA256 <64 hex digits>' after the body, got {text[:80]!r}")
        expected = words[1].lower()
        actual = self._hash.hexdigest()
        if expected != actual:
            raise PeerError(
                f"SHA-256 mismatch: body hashes to {actual[:16]}..., sender said {expected[:16]}...",
                Code.INTEGRITY,
            )
        self._state = _LINE
        return BodyEnd(self._body_size, actual)


class BodySender:
    """Turn file chunks into wire bytes, hashing them; :meth:`finish` adds the trailer.

    ``sha256``: the file's digest when the sender already knows it (a digest
    remembered from an earlier transfer, see ``labnet.transport.digests``); the chunks are
    then not hashed again, and raw bodies may leave by other means than
    :meth:`encode` (``sendfile``: report them with :meth:`sent_directly`).  A
    stale digest cannot slip through: the *receiver* hashes what arrives and
    refuses the body (``INTEGRITY``) if it does not match the trailer.
    ``hasher``: otherwise, where to hash (as in :meth:`Receiver.start_body`;
    default ``hashlib.sha256()``).
    """

    def __init__(self, size: int, encoding: str, sha256: str | None = None, hasher=None):
        self.size = size
        self.encoding = encoding
        self.wire_size = wire_length(size, encoding)
        self._encoder = Encoder(encoding)
        self._known = sha256
        self._hash = None if sha256 is not None else hashlib.sha256() if hasher is None else hasher
        self.sent = 0

    @property
    def digest_known(self) -> bool:
        return self._known is not None

    def encode(self, chunk) -> bytes:
        if self._hash is not None:
            self._hash.update(chunk)
        self.sent += len(chunk)
        return self._encoder.encode(chunk)

    def sent_directly(self, count: int) -> None:
        """``count`` raw file bytes went out without :meth:`encode` (``sendfile``)."""
        if self.encoding != "raw" or self._known is None:
            raise RuntimeError("only raw bodies with a known digest may bypass encode()")
        self.sent += count

    def finish(self) -> bytes:
        if self.sent != self.size:
            raise PeerError(f"file changed while being sent: {self.sent} of {self.size} bytes")
        return self._encoder.finish() + f"SHA256 {self.hexdigest()}\r\n".encode()

    def hexdigest(self) -> str:
        return self._known if self._known is not None else self._hash.hexdigest()
