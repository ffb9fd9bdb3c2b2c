"""The ``sentinel`` dialect (the seed's protocol), both directions: prompt, base64 stream, end marker, close.

On the wire (dialects.md, section 4), plain text, one request per connection::

    upload    C: UPLOAD <name>            (one send, no terminator; the client waits)
              S: READY                    (the seed's client compares the whole reply to these bytes)
              C: <base64 ...>__END__
              S: Upload successful        (or "Error during upload: <text>"), then close
    download  C: DOWNLOAD <name>
              S: <base64 ...>__END__      then close (or "File not found" / "Filename not provided", no marker)
    list      C: LIST
              S: name1\\nname2\\n...        (or "No files found."), then close
    unknown   S: Unknown command

The profile names the three verbs, the prompt and the marker.

Client side: :func:`list_request`, :func:`download_request`,
:func:`upload_request` (a ``Framing``: head, prompt, streamed base64, the
marker); :class:`PromptWaiter` checks the prompt; :class:`DownloadParser`
streams the base64 to the marker as ``Data``; :class:`TextReplyParser`
reads a LIST or upload reply up to the close.

The marker is found even when it is cut across two reads at any position,
and a beginning of it is never taken for data: at most ``len(marker) - 1``
bytes wait (``buffers.split_at_marker``).  An error text comes *instead* of
the data, without a marker, and the server closes: so the first
:data:`REFUSAL_WINDOW` bytes of a download are held until it is clear they
are base64 (more bytes came, or the marker after base64 only); a short text
that ends with the close is a :class:`Refused`, never file bytes (unless it
is all base64 characters: then it is a truncated file, ``EndedEarly``).

Server side: :class:`RequestParser` reads the request word and name (ended by
a newline, by the close, or by ``end_of_request()`` after a silence -- the
seed's clients send no terminator), says when the prompt is due, and
streams the upload's base64 to the marker as ``Data``; the builders write
the replies.

Imports nothing of labnet but ``errors`` and ``protocol``; must not import
socket, threading, multiprocessing or os.
"""

from __future__ import annotations

from dataclasses import dataclass

from labnet.errors import Code, PeerError, UsageError
from labnet.protocol.dialects.base64_segments import ALPHABET, SegmentDecoder, SegmentFindings
from labnet.protocol.dialects.buffers import WHITESPACE, InputBuffer, split_at_marker
from labnet.protocol.dialects.events import (
    CLOSED,
    NEED_DATA,
    Data,
    EndedEarly,
    Framing,
    NotUnderstood,
    Request,
    RequestEnd,
)
from labnet.protocol.dialects.profile import Profile

NOT_FOUND = "File not found"
NO_NAME = "Filename not provided"
UNKNOWN = "Unknown command"
NO_FILES = "No files found."
UPLOAD_OK = "Upload successful"
UPLOAD_FAILED = "Error during upload: "
KNOWN_REFUSALS = (NOT_FOUND, NO_NAME, UNKNOWN)
REFUSAL_WINDOW = 256  # a download's first bytes, held until they are surely base64 and not an error text
MAX_TEXT = 1 << 20  # a LIST or upload reply, a request line (MAX_LINE): bounded like everything else
MAX_LINE = 4096


@dataclass(frozen=True)
class Prompt:
    """The server's go-ahead arrived; ``extra``: whitespace it sent after it (then a strict client would fail)."""

    extra: bytes = b""

    @property
    def exact(self) -> bool:
        return not self.extra


@dataclass(frozen=True)
class Refused:
    """The server answered with a text instead of what was asked, and closed; ``known``: one of the seed's texts."""

    text: str

    @property
    def known(self) -> bool:
        return self.text.strip() in KNOWN_REFUSALS


@dataclass(frozen=True)
class DownloadEnd:
    """The marker came: every ``Data`` event of the file has been given."""

    size: int
    findings: SegmentFindings


@dataclass(frozen=True)
class Listing:
    names: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class UploadResult:
    """``ok``: the text speaks of success and not of an error (a verifier still compares the bytes)."""

    ok: bool
    text: str


# -- client side: requests -------------------------------------------------------------------------


def _request(profile: Profile, op: str, name: str | None) -> bytes:
    verb = profile.verb_for(op)
    if name is None:
        return verb.encode("ascii")
    if not name or any(ch.isspace() for ch in name) or not name.isprintable():
        raise UsageError(f"a sentinel request cannot carry the name {name!r}: it must be one printable word")
    return f"{verb} {name}".encode()


def list_request(profile: Profile) -> bytes:
    return _request(profile, "list", None)


def download_request(profile: Profile, name: str) -> bytes:
    return _request(profile, "download", name)


def upload_request(profile: Profile, name: str) -> Framing:
    """Send ``head``, wait for the prompt (:class:`PromptWaiter`), send the base64, then ``tail`` (the marker)."""
    return Framing(_request(profile, "upload", name), profile.marker.encode("ascii"), await_prompt=True)


# -- client side: replies ----------------------------------------------------------------------------


class _TextCollector:
    """Bytes up to the peer's close, bounded (the replies that end with the connection)."""

    def __init__(self, limit: int, what: str):
        self._in = InputBuffer()
        self._limit = limit
        self._what = what
        self._given = False

    def receive_data(self, data: bytes) -> None:
        self._in.append(data)
        if len(self._in) > self._limit:
            raise PeerError(f"{self._what} longer than {self._limit} bytes", Code.TOO_LARGE)

    @property
    def buffered(self) -> int:
        return len(self._in)

    def _text(self) -> str | None:
        """The whole text once the peer has closed, else None."""
        if not self._in.eof:
            return None
        return self._in.peek().decode("utf-8", "replace")


class PromptWaiter(_TextCollector):
    """Wait for the upload prompt: ``Prompt``, or ``Refused`` (the server sent a text and closed)."""

    def __init__(self, profile: Profile):
        super().__init__(MAX_LINE, "the answer to an upload request")
        self._prompt = profile.prompt.encode("ascii")

    def next_event(self):
        if self._given:
            return CLOSED if self._in.eof else NEED_DATA
        got = self._in.peek()
        if got.startswith(self._prompt):
            extra = got[len(self._prompt) :]
            if extra.strip(WHITESPACE):
                raise NotUnderstood("prompt", got, f"expected exactly {self._prompt!r}")
            self._given = True
            return Prompt(extra)
        text = self._text()
        if text is None:
            return NEED_DATA  # a beginning of the prompt, or a text that will end with the close
        if not got:
            raise EndedEarly("connection closed before the upload prompt", 0)
        self._given = True
        return Refused(text)


class TextReplyParser(_TextCollector):
    """A LIST reply (``kind="list"``: :class:`Listing`) or an upload's (``"upload"``: :class:`UploadResult`).

    Both end with the server's close; ``Refused`` for one of the seed's error
    texts (``Unknown command``...).
    """

    def __init__(self, kind: str):
        if kind not in ("list", "upload"):
            raise ValueError(f"kind must be 'list' or 'upload', not {kind!r}")
        super().__init__(MAX_TEXT, f"the {kind} reply")
        self.kind = kind

    def next_event(self):
        if self._given:
            return CLOSED
        text = self._text()
        if text is None:
            return NEED_DATA
        self._given = True
        words = text.strip()
        if words in KNOWN_REFUSALS:
            return Refused(text)
        if self.kind == "upload":
            if not words:
                raise EndedEarly("connection closed without an answer to the upload", self._in.received)
            low = words.lower()
            return UploadResult("success" in low and not low.startswith("error"), text)
        names = () if words == NO_FILES else tuple(line.strip() for line in text.splitlines() if line.strip())
        return Listing(names, text)


class DownloadParser:
    """A download: base64 up to the marker as ``Data``, then :class:`DownloadEnd`, then ``CLOSED``; or ``Refused``.

    :attr:`buffered`: bytes held (the refusal window at the start, then at
    most ``len(marker) - 1`` bytes plus the decoder's partial group).
    Errors: ``EndedEarly`` (closed before the marker, after data), bad
    base64 (``INTEGRITY``), data after the marker.
    """

    def __init__(self, profile: Profile, window: int = REFUSAL_WINDOW):
        self._marker = profile.marker.encode("ascii")
        self._window = window
        self._in = InputBuffer()
        self._decoder = SegmentDecoder()
        self._peeking = True
        self._ended = False
        self._pending: list = []

    def receive_data(self, data: bytes) -> None:
        self._in.append(data)

    @property
    def buffered(self) -> int:
        return len(self._in) + self._decoder.buffered

    def next_event(self):
        if self._pending:
            return self._pending.pop(0)
        if self._ended:
            self._in.skip_whitespace()
            if self._in:
                raise PeerError(f"data after the end marker: {self._in.peek(40)!r}")
            return CLOSED if self._in.eof else NEED_DATA
        if self._peeking:
            event = self._peek()
            if event is not None:
                return event
        safe, at = split_at_marker(self._in, self._marker)
        if at == -1 and self._in.eof:
            got = self._in.received
            raise EndedEarly(f"connection closed before the end marker {self._marker.decode()!r}, after {got} bytes "
                             f"({self._decoder.decoded} file bytes decoded)", got)  # fmt: skip
        data = self._decoder.feed(self._in.take(safe)) if safe else b""
        if at != -1:
            self._in.skip(len(self._marker))
            data += self._decoder.finish()
            self._ended = True
            end = DownloadEnd(self._decoder.decoded, self._decoder.findings())
            if not data:
                return end
            self._pending.append(end)
        return Data(data) if data else NEED_DATA

    def _peek(self):
        """While the first bytes might be an error text: decide, or wait (None: decided, go on as data)."""
        at = self._in.find(self._marker, 0, self._window + len(self._marker))
        if at != -1:
            head = self._in.peek(at)
            if not _base64_only(head):  # a text, followed by the marker anyway
                self._in.skip(at + len(self._marker))
                self._ended = True
                return Refused(head.decode("utf-8", "replace"))
        elif self._in.eof:
            got = self._in.peek()
            if _base64_only(got):  # base64 cut short, or nothing at all
                raise EndedEarly(f"connection closed before the end marker, after {len(got)} bytes: {got[:40]!r}",
                                 len(got))  # fmt: skip
            self._ended = True
            return Refused(self._in.take_all().decode("utf-8", "replace"))
        elif len(self._in) <= self._window:
            return NEED_DATA
        self._peeking = False
        return None


def _base64_only(head: bytes) -> bool:
    """Could these first bytes be base64 data?  (An error text has spaces; a final newline is forgiven.)"""
    return not head.rstrip(WHITESPACE).translate(None, ALPHABET + b"=")


# -- server side -----------------------------------------------------------------------------------------

_LINE, _BODY = "line", "body"


class RequestParser:
    """Parse a ``sentinel`` request: :class:`Request`, then for an upload ``Data`` events, then :class:`RequestEnd`.

    The request line ends at a newline, the peer's close, or
    :meth:`end_of_request` (the seed's clients send no terminator: call it
    after a silence, or after the first read as the seed's server does).
    For an upload, ``Request.prompt_due`` is set: send :func:`prompt`, then
    the body is read up to the marker (with no name, the seed answers
    :data:`NO_NAME` instead and closes).  ``CLOSED`` when the peer closed
    between requests.  :attr:`buffered` as in :class:`DownloadParser`.
    """

    def __init__(self, profile: Profile):
        self.profile = profile
        self._marker = profile.marker.encode("ascii")
        self._in = InputBuffer()
        self._state = _LINE
        self._silence = False
        self._request: Request | None = None
        self._decoder: SegmentDecoder | None = None
        self._pending: list = []

    def receive_data(self, data: bytes) -> None:
        self._in.append(data)

    def end_of_request(self) -> bool:
        """A silence: it ends a request line, never an upload body (that ends at the marker)."""
        if self._state != _LINE or not self._in:
            return False
        self._silence = True
        return True

    @property
    def buffered(self) -> int:
        return len(self._in) + (self._decoder.buffered if self._decoder else 0)

    def next_event(self):
        if self._pending:
            return self._pending.pop(0)
        if self._state == _BODY:
            return self._body()
        self._in.skip_whitespace()
        if not self._in:
            self._silence = False
            return CLOSED if self._in.eof else NEED_DATA
        end = self._in.find(b"\n", 0, MAX_LINE)
        if end == -1 and not (self._silence or self._in.eof):
            if len(self._in) > MAX_LINE:
                raise PeerError(f"request longer than {MAX_LINE} bytes", Code.TOO_LARGE)
            return NEED_DATA
        line = self._in.take(len(self._in) if end == -1 else end + 1)
        self._silence = False
        words = line.split()
        verb = words[0].decode("ascii", "replace")
        name = words[1].decode("utf-8", "replace") if len(words) > 1 else None
        op = self.profile.op_of(verb)
        if op == "upload":
            self._request = Request(op, verb, name, prompt_due=True)
            self._state, self._decoder = _BODY, SegmentDecoder()
        else:
            self._request = Request(op, verb, name, tuple(w.decode("utf-8", "replace") for w in words[2:]))
            self._pending.append(RequestEnd(op, verb, name, "terminator" if end != -1 else "silence"))
        return self._request

    def _body(self):
        safe, at = split_at_marker(self._in, self._marker)
        if at == -1 and self._in.eof:
            raise EndedEarly(f"connection closed before the end marker, after {self._decoder.decoded} file bytes",
                             self._in.received)  # fmt: skip
        data = self._decoder.feed(self._in.take(safe)) if safe else b""
        if at == -1:
            return Data(data) if data else NEED_DATA
        self._in.skip(len(self._marker))
        data += self._decoder.finish()
        req = self._request
        end = RequestEnd(req.op, req.verb, req.name, "marker", self._decoder.findings())
        self._state, self._decoder = _LINE, None
        if not data:
            return end
        self._pending.append(end)
        return Data(data)


# -- server side: replies ------------------------------------------------------------------------------


def prompt(profile: Profile) -> bytes:
    return profile.prompt.encode("ascii")


def download_tail(profile: Profile) -> bytes:
    """What follows a download's base64 (then the server closes)."""
    return profile.marker.encode("ascii")


def list_reply(names) -> bytes:
    names = list(names)
    return ("".join(f"{n}\n" for n in names) if names else NO_FILES).encode("utf-8")


def upload_reply(error: str | None = None) -> bytes:
    return (UPLOAD_OK if error is None else UPLOAD_FAILED + error).encode("utf-8")


def refusal(text: str) -> bytes:
    """One of :data:`KNOWN_REFUSALS` (or any text): sent instead of data, then the server closes."""
    return text.encode("utf-8")
