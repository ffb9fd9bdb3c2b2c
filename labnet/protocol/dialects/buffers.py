"""Bytes waiting to be parsed: the input buffer every dialect parser reads from, and the end-marker search.

Every parser of the students' dialects is fed whatever ``recv()`` returned,
in pieces of any size, and must parse a stream split anywhere the same way
as in one piece.  :class:`InputBuffer` keeps the bytes not yet consumed
(with no copy in the common case where a parser consumes everything it was
given) and remembers whether the peer closed; :func:`split_at_marker` finds
an end marker such as ``__END__`` or ``\\r\\n\\r\\n`` in it, even when the
marker is cut across two reads, while telling the caller how many bytes are
certainly *before* the marker (so they can be handed on at once, and at most
``len(marker) - 1`` bytes wait for the next read).

Pure computation: must not import socket, threading, multiprocessing or os,
and imports nothing of labnet.
"""

from __future__ import annotations

import re

WHITESPACE = b" \t\r\n\v\f"  # ASCII whitespace, as bytes.split() and str.strip() know it
_BLANKS = re.compile(rb"[ \t\r\n\v\f]*")  # a run of it, skipped at C speed


class InputBuffer:
    """The bytes received and not consumed yet, plus whether the peer has closed.

    ``data[start:]`` is the unconsumed part: parsers search it in place with
    :meth:`find` (no copy) and consume it with :meth:`take` or :meth:`skip`.
    Received pieces are joined only when unconsumed bytes remain (a marker
    or an escape cut in two, a head still incomplete): those remainders are
    small, so a stream consumed piece by piece is never copied twice.
    """

    def __init__(self) -> None:
        self.data = b""
        self.start = 0
        self.eof = False
        self.received = 0  # bytes received in all, for messages ("closed after N bytes")

    def append(self, data) -> None:
        """Add a piece from the peer; ``b""`` means the peer closed its side."""
        if not data:
            self.eof = True
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        self.received += len(data)
        if self.start >= len(self.data):
            self.data, self.start = data, 0
        else:
            self.data, self.start = self.data[self.start :] + data, 0

    def __len__(self) -> int:
        return len(self.data) - self.start

    def find(self, sub: bytes, begin: int = 0, end: int | None = None) -> int:
        """Index of ``sub`` in the unconsumed bytes (relative to them), or -1."""
        stop = len(self.data) if end is None else min(len(self.data), self.start + end)
        at = self.data.find(sub, self.start + begin, stop)
        return -1 if at == -1 else at - self.start

    def peek(self, count: int | None = None) -> bytes:
        """A copy of the first ``count`` unconsumed bytes (all of them when ``None``), not consumed."""
        stop = len(self.data) if count is None else min(len(self.data), self.start + count)
        if self.start == 0 and stop == len(self.data):
            return self.data
        return self.data[self.start : stop]

    def take(self, count: int) -> bytes:
        """Consume and return the first ``count`` unconsumed bytes."""
        piece = self.peek(count)
        self.start += len(piece)
        return piece

    def skip(self, count: int) -> None:
        self.start = min(len(self.data), self.start + count)

    def skip_whitespace(self) -> None:
        """Consume leading ASCII whitespace (the CR/LF a previous message left behind)."""
        self.start = _BLANKS.match(self.data, self.start).end()

    def take_all(self) -> bytes:
        return self.take(len(self))


def split_at_marker(buf: InputBuffer, marker: bytes) -> tuple[int, int]:
    """Where ``marker`` is in ``buf``: ``(safe, at)``, both relative to the unconsumed bytes.

    ``at`` is the marker's index, or -1 when it is not there (yet).  ``safe``
    counts the bytes that certainly come before the marker: all of them up to
    ``at``, or, when the marker is not there, all but the longest tail that is
    a beginning of the marker (``__EN`` may become ``__END__`` with the next
    read, so it waits; ``__X`` cannot, so it does not).  Nothing that could be
    part of the marker is ever given out as data, and at most
    ``len(marker) - 1`` bytes wait.
    """
    at = buf.find(marker)
    if at != -1:
        return at, at
    size = len(buf)
    for keep in range(min(len(marker) - 1, size), 0, -1):
        if buf.data.endswith(marker[:keep]):
            return size - keep, -1
    return size, -1
