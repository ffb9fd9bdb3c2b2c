"""An incremental scanner for one JSON object arriving in pieces: chosen string members stream out, the rest stays small.

A ``course`` reply carries a whole file as one base64 string inside a JSON
object (``{"status": "OK", "data_namafile": ..., "data_file": "<100 MB>"}``),
and some upload requests do the same.  ``json.loads`` would need all of it in
memory, several times over.  :class:`ObjectScanner` walks the top-level
object as it arrives and:

* streams the string values at the *paths* it is told to stream (a member,
  ``("data_file",)``, or an element of an array member, ``("params", 1)``) as
  :class:`StringPiece` events, JSON escapes (``\\/``, ``\\u002f``...) already
  undone, then :class:`StringEnd`;
* collects every other member small (at most ``max_small`` bytes in all,
  else ``PeerError(TOO_LARGE)``) and hands it out parsed by ``json.loads`` as
  a :class:`Member`, keys in any order;
* ends with :class:`ObjectEnd` at the closing brace; the bytes after it are
  :meth:`ObjectScanner.unused_data`.

Only the top-level object and the arrays that hold a streamed path are
walked here; nested values are scanned for their end only and then parsed
by ``json.loads``.  A streamed string is searched with ``bytes.find`` (C
speed); its escapes are undone by ``json.loads`` on the escaped run, never
character by character.  Leniency: control characters inside a *streamed*
string are not refused (the base64 decoder behind it treats CR/LF as
whitespace); everywhere else the JSON must be valid.

Errors: :class:`~labnet.protocol.dialects.events.NotUnderstood` when the
bytes are not a JSON object (it carries the first bytes received),
:class:`~labnet.protocol.dialects.events.EndedEarly` when the stream ends
inside the object.

Imports nothing of labnet but ``errors`` and ``protocol``; must not import
socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from labnet.errors import Code, PeerError
from labnet.protocol.dialects.buffers import InputBuffer
from labnet.protocol.dialects.events import NEED_DATA, EndedEarly, NotUnderstood

MAX_SMALL = 1 << 20  # bytes of all non-streamed members together: a LIST of thousands of names fits
MAX_KEY = 1024
HEAD_KEPT = 256  # first bytes of the stream, kept for error messages

_JSON_BLANKS = re.compile(rb"[ \t\r\n]*")
_STRING_RUN = re.compile(rb'[^"\\]*')  # the part of a JSON string before its next quote or escape
_QUOTE, _BACKSLASH = 0x22, 0x5C


@dataclass(frozen=True)
class Member:
    """A collected (small) value: ``path`` is ``(key,)`` or ``(key, index)`` inside a walked array."""

    path: tuple
    value: object


@dataclass(frozen=True)
class StringPiece:
    """Part of a streamed string, escapes undone (UTF-8 bytes)."""

    path: tuple
    text: bytes


@dataclass(frozen=True)
class StringEnd:
    """A streamed string ended; ``length``: its bytes, escapes undone."""

    path: tuple
    length: int


@dataclass(frozen=True)
class ObjectEnd:
    """The top-level object closed; what followed it is :meth:`ObjectScanner.unused_data`."""


_START, _KEY_OR_CLOSE, _KEY, _KEY_TEXT, _COLON, _VALUE = "start", "key_or_close", "key", "key_text", "colon", "value"
_STREAM, _SMALL, _AFTER, _ELEM_OR_CLOSE, _AFTER_ELEM, _DONE = "stream", "small", "after", "elem", "after_elem", "done"
_WAITING_FOR = {_START: "the opening '{'", _STREAM: "the end of a string", _SMALL: "the end of a value"}


def _escaped(data: bytes, lo: int, quote: int) -> bool:
    """Is the quote at ``quote`` escaped, i.e. preceded by an odd run of backslashes (from ``lo`` on)?"""
    run = 0
    while quote - run - 1 >= lo and data[quote - run - 1] == _BACKSLASH:
        run += 1
    return run % 2 == 1


def _incomplete_escape(seg: bytes) -> int:
    """How many bytes at the end of ``seg`` must wait for the next piece: an escape cut short (at most 13)."""
    hold = (len(seg) - len(seg.rstrip(b"\\"))) % 2  # a lone backslash: its escaped character is still to come
    # A \uXXXX escape cut short, and before it a high surrogate whose low half may be that escape: wait for both.
    for _ in range(2):
        rest = seg[: len(seg) - hold]
        k = rest.rfind(b"\\u", max(0, len(rest) - 6))
        if k == -1 or (k - len(rest[:k].rstrip(b"\\"))) % 2:
            break
        if len(rest) - k < 6 or rest[k + 2 : k + 4].lower() in (b"d8", b"d9", b"da", b"db"):
            hold += len(rest) - k
        else:
            break
    return hold


class ObjectScanner:
    """Walk one JSON object fed in pieces (``receive_data``; ``b""`` = the peer closed), event by event.

    ``stream_paths``: the paths whose *string* values are streamed (a value
    of another type there is collected like any other).  The owner may
    change this set between events (say, stop streaming the content once the
    status says ERROR: it is then an error text, collected small).
    ``what``: ``"reply"`` or ``"request"``, for messages.
    :attr:`buffered`: bytes received and not yet scanned (a piece at most,
    plus an escape or a value cut in two); :attr:`small_size`: bytes held for
    collected members.
    """

    def __init__(self, stream_paths=(), max_small: int = MAX_SMALL, what: str = "reply"):
        self.stream_paths = set(stream_paths)
        self.max_small = max_small
        self.what = what
        self._in = InputBuffer()
        self._head = b""
        self._state = _START
        self._pending: list = []
        self._key = bytearray()
        self._path: tuple = ()
        self._array: str | None = None  # the member whose array is being walked
        self._index = 0
        self._small = bytearray()
        self._depth = 0
        self._in_string = False
        self._streamed = 0
        self.small_size = 0

    # -- feeding and state ---------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if len(self._head) < HEAD_KEPT and data:
            self._head += bytes(data[: HEAD_KEPT - len(self._head)])
        self._in.append(data)

    @property
    def buffered(self) -> int:
        return len(self._in)

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def head(self) -> bytes:
        """The first bytes received (at most 256), for error messages."""
        return self._head

    def unused_data(self) -> bytes:
        """After :class:`ObjectEnd`: the bytes that came after the object (the next message's, or CR/LF)."""
        return self._in.take_all()

    # -- events ----------------------------------------------------------------

    def next_event(self):
        """The next :class:`Member`, :class:`StringPiece`, :class:`StringEnd`, :class:`ObjectEnd` or ``NEED_DATA``."""
        if self._pending:
            return self._pending.pop(0)
        while self._state != _DONE:
            event = self._step()
            if event is None:
                continue
            if event is NEED_DATA and self._in.eof:
                raise self._ended_early()
            return event
        return NEED_DATA

    def _ended_early(self) -> EndedEarly:
        got = self._in.received
        if got == 0 or self._state == _START and not self._in:
            return EndedEarly(f"connection closed before any {self.what}", got)
        where = _WAITING_FOR.get(self._state, "the end of the object")
        return EndedEarly(f"connection closed in the middle of the JSON {self.what}, after {got} bytes, "
                          f"waiting for {where}", got)  # fmt: skip

    def _bad(self, detail: str) -> NotUnderstood:
        return NotUnderstood(self.what, self._head, detail)

    def _next_byte(self) -> int | None:
        """Skip JSON whitespace; the next byte (not consumed), or None if none has arrived."""
        self._in.start = _JSON_BLANKS.match(self._in.data, self._in.start).end()
        return self._in.data[self._in.start] if self._in else None

    def _step(self):
        state = self._state
        if state == _STREAM:
            return self._stream()
        if state == _SMALL:
            return self._collect()
        if state == _KEY_TEXT:
            return self._key_text()
        c = self._next_byte()
        if c is None:
            return NEED_DATA
        self._in.skip(1)
        if state == _START:
            if c != ord("{"):
                raise self._bad("it does not start with '{'")
            self._state = _KEY_OR_CLOSE
        elif state in (_KEY_OR_CLOSE, _KEY):
            if c == ord("}") and state == _KEY_OR_CLOSE:
                self._state = _DONE
                return ObjectEnd()
            if c != _QUOTE:
                raise self._bad(f"expected a member name, found {bytes([c])!r}")
            self._key = bytearray()
            self._state = _KEY_TEXT
        elif state == _COLON:
            if c != ord(":"):
                raise self._bad(f"expected ':' after a member name, found {bytes([c])!r}")
            self._state = _VALUE
        elif state == _VALUE:
            self._in.start -= 1  # the value's first byte belongs to the value
            self._begin_value(c)
        elif state in (_AFTER, _AFTER_ELEM):
            close = ord("}") if state == _AFTER else ord("]")
            if c == ord(","):
                if state == _AFTER:
                    self._state = _KEY
                else:
                    self._index += 1
                    self._path = (self._array, self._index)
                    self._state = _VALUE
            elif c == close and state == _AFTER:
                self._state = _DONE
                return ObjectEnd()
            elif c == close:
                self._array = None
                self._state = _AFTER
            else:
                raise self._bad(f"expected ',' or {chr(close)!r}, found {bytes([c])!r}")
        elif state == _ELEM_OR_CLOSE:
            if c == ord("]"):
                self._array = None
                self._state = _AFTER
            else:
                self._in.start -= 1
                self._path = (self._array, 0)
                self._state = _VALUE
        return None

    def _begin_value(self, c: int) -> None:
        path = self._path
        if c == _QUOTE and path in self.stream_paths:
            self._in.skip(1)
            self._streamed = 0
            self._state = _STREAM
        elif c == ord("[") and len(path) == 1 and any(len(p) == 2 and p[0] == path[0] for p in self.stream_paths):
            self._in.skip(1)
            self._array, self._index = path[0], 0
            self._state = _ELEM_OR_CLOSE
        else:
            self._small = bytearray()
            self._depth = 0
            self._in_string = False
            self._state = _SMALL

    def _value_done(self):
        self._state = _AFTER_ELEM if self._array is not None else _AFTER

    # -- member names ----------------------------------------------------------

    def _key_text(self):
        closed = self._scan_string(self._key)
        if len(self._key) > MAX_KEY:
            raise self._bad(f"a member name is longer than {MAX_KEY} bytes")
        if not closed:
            return NEED_DATA
        try:
            key = json.loads(b'"' + bytes(self._key) + b'"')
        except ValueError:
            raise self._bad(f"bad member name {bytes(self._key[:40])!r}") from None
        self._path = (key,)
        self._state = _COLON
        return None

    def _scan_string(self, sink: bytearray) -> bool:
        """Copy string bytes (escapes kept) into ``sink`` up to the closing quote; True once it is consumed."""
        data, i, size = self._in.data, self._in.start, len(self._in.data)
        begin = i
        while True:
            j = _STRING_RUN.match(data, i).end()
            if j >= size:
                sink += data[begin:size]
                self._in.start = size
                return False
            if data[j] == _QUOTE:
                sink += data[begin:j]
                self._in.start = j + 1
                return True
            if j + 1 >= size:  # a backslash cut from what it escapes: wait for the next piece
                sink += data[begin:j]
                self._in.start = j
                return False
            i = j + 2

    # -- small values ------------------------------------------------------------

    def _collect(self):
        data, i, size = self._in.data, self._in.start, len(self._in.data)
        begin, end = i, None
        while i < size:
            if self._in_string:
                j = _STRING_RUN.match(data, i).end()
                if j >= size:
                    i = size
                    break
                if data[j] == _BACKSLASH:
                    if j + 1 >= size:
                        i = j
                        break
                    i = j + 2
                    continue
                self._in_string = False
                i = j + 1
                if self._depth == 0:
                    end = i
                    break
                continue
            c = data[i]
            if c == _QUOTE:
                self._in_string = True
            elif c in b"[{":
                self._depth += 1
            elif c in b"]}":
                if self._depth == 0:  # a number or literal, ended by its container's close
                    end = i
                    break
                self._depth -= 1
                if self._depth == 0:
                    end = i + 1
                    break
            elif self._depth == 0 and c in b", \t\r\n":
                end = i
                break
            i += 1
        stop = i if end is None else end
        self._small += data[begin:stop]
        self.small_size += stop - begin
        self._in.start = stop
        if self.small_size > self.max_small:
            raise PeerError(f"{self.what} member {'.'.join(map(str, self._path))} makes the small members longer "
                            f"than {self.max_small} bytes", Code.TOO_LARGE)  # fmt: skip
        if end is None:
            return NEED_DATA
        try:
            value = json.loads(bytes(self._small))
        except ValueError:
            raise self._bad(f"bad value {bytes(self._small[:40])!r} for {self._path[0]!r}") from None
        self._small = bytearray()
        self._value_done()
        return Member(self._path, value)

    # -- streamed strings ----------------------------------------------------------

    def _stream(self):
        data, i, size = self._in.data, self._in.start, len(self._in.data)
        quote = data.find(b'"', i)
        while quote != -1 and _escaped(data, i, quote):
            quote = data.find(b'"', quote + 1)
        end = size if quote == -1 else quote
        seg = data if i == 0 and end == size else data[i:end]
        if b"\\" in seg:
            if quote == -1:
                cut = _incomplete_escape(seg)
                if cut:
                    seg, end = seg[:-cut], end - cut
            try:
                seg = json.loads(b'"' + seg + b'"', strict=False).encode("utf-8", "surrogatepass")
            except ValueError:
                raise self._bad(f"bad escape in the string {self._path[0]!r}") from None
        self._in.start = end if quote == -1 else end + 1
        self._streamed += len(seg)
        if quote != -1:
            self._value_done()
            ending = StringEnd(self._path, self._streamed)
            if not seg:
                return ending
            self._pending.append(ending)
        return StringPiece(self._path, seg) if seg else NEED_DATA
