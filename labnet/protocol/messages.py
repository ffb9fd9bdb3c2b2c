"""labnet's wire grammar, both directions: what a request line and every reply line say.

The receiver (``labnet.protocol.receiver``) cuts the byte stream into lines and
bodies; this module gives those lines their meaning and writes them.  Servers
*write* replies with the builders below and *parse* requests; the client
writes requests and parses replies with the same module, so one word order
lives in one place.  Conversation (full grammar and a session typed through
``nc`` in docs/protocol.md)::

    S: OK LABNET 1 READY                      greeting, when a worker takes the connection
    C: UPLOAD report.pdf 1234 b64
    S: OK SEND 1648                           wire bytes the server now expects
    C: <1648 bytes of base64>SHA256 <64 hex>
    S: OK STORED report.pdf 1234 <64 hex>
    C: DOWNLOAD report.pdf raw
    S: OK 1234 raw 1234
    S: <1234 bytes>SHA256 <64 hex>
    C: LIST
    S: OK 2 files 1 hidden                    1 entry of the folder not listed (see ListHeader)
    S: 0 empty.txt
    S: 1234 report.pdf

Every reply line starts with ``OK`` or ``ERR <CODE> <message>``; an ``ERR``
parses into ``RemoteError`` on the client, anything else unexpected into
``PeerError``.

Imports nothing of labnet but ``errors``, ``config`` and the protocol's own
``codec`` and ``names``; must not import socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from labnet.config import DEFAULT_ENCODING, ENCODINGS
from labnet.errors import Code, PeerError, RemoteError
from labnet.protocol.codec import wire_length
from labnet.protocol.names import check_name, is_canonical

MAX_SIZE_DIGITS = 18  # sizes up to 10**18 - 1 bytes parse; limits come later
VERBS = ("LIST", "UPLOAD", "DOWNLOAD", "DELETE", "STATS", "QUIT")
GREETING = "OK LABNET 1 READY"
GREETING_LINE = GREETING.encode() + b"\r\n"
# Sent at once to a connection that must wait for a worker (every worker busy), before the
# greeting: a client can tell a queue (wait) from a silent or foreign server (give up).
QUEUED_PREFIX = "OK LABNET 1 QUEUED"


def queued_line(position: int) -> bytes:
    """``OK LABNET 1 QUEUED <position>``: this connection waits; ``position`` 1 is next in line."""
    return f"{QUEUED_PREFIX} {int(position)}\r\n".encode()


def parse_queued(text: str) -> int | None:
    """The position in a queued line, None if ``text`` is not one."""
    if not text.startswith(QUEUED_PREFIX + " "):
        return None
    word = text[len(QUEUED_PREFIX) + 1:]
    return int(word) if word.isdigit() else None


# --------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    verb: str
    name: str | None = None
    size: int | None = None
    encoding: str = DEFAULT_ENCODING

    def to_line(self) -> bytes:
        words = [self.verb]
        if self.name is not None:
            words.append(self.name)
        if self.size is not None:
            words.append(str(self.size))
        if self.verb in ("UPLOAD", "DOWNLOAD"):
            words.append(self.encoding)
        return (" ".join(words) + "\r\n").encode("utf-8")


def parse_size(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise PeerError(f"size must be a whole number of bytes, got {text[:40]!r}")
    if len(text) > MAX_SIZE_DIGITS:
        raise PeerError(f"size {text[:40]}... is absurdly large", Code.TOO_LARGE)
    return int(text)


def parse_encoding(text: str) -> str:
    enc = text.lower()
    if enc not in ENCODINGS:
        raise PeerError(f"encoding must be b64 or raw, got {text[:40]!r}")
    return enc


_ARITY = {"LIST": (0, 0), "STATS": (0, 0), "QUIT": (0, 0), "DELETE": (1, 1),
          "DOWNLOAD": (1, 2), "UPLOAD": (2, 3)}  # fmt: skip


def parse_request(text: str) -> Request:
    """Parse one request line (without CRLF); raise ``PeerError`` when it is malformed."""
    words = text.split(" ")
    if not text.strip():
        raise PeerError("empty request line")
    verb = words[0].upper()
    if verb not in _ARITY:
        raise PeerError(f"unknown verb {words[0][:40]!r}; verbs are {' '.join(VERBS)}")
    args = words[1:]
    lo, hi = _ARITY[verb]
    if not lo <= len(args) <= hi or any(a == "" for a in args):
        usage = {"UPLOAD": "UPLOAD <name> <size> [b64|raw]", "DOWNLOAD": "DOWNLOAD <name> [b64|raw]",
                 "DELETE": "DELETE <name>"}.get(verb, verb)  # fmt: skip
        raise PeerError(f"usage: {usage} (single spaces between words)")
    if verb in ("LIST", "STATS", "QUIT"):
        return Request(verb)
    name = check_name(args[0])  # the NFC form: the store, the replies and the counters use this spelling
    if verb == "DELETE":
        return Request(verb, name)
    if verb == "DOWNLOAD":
        return Request(verb, name, encoding=parse_encoding(args[1]) if len(args) > 1 else DEFAULT_ENCODING)
    size = parse_size(args[1])
    encoding = parse_encoding(args[2]) if len(args) > 2 else DEFAULT_ENCODING
    return Request(verb, name, size, encoding)


# --------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------


def ok(*words) -> bytes:
    return (" ".join(["OK", *map(str, words)]) + "\r\n").encode("utf-8")


def err(code: Code, message: str) -> bytes:
    clean = " ".join(str(message).split())[:300] or "error"
    return f"ERR {Code(code).value} {clean}\r\n".encode("utf-8", "replace")


def stats_reply(stats: dict) -> bytes:
    return ok(json.dumps(stats, separators=(",", ":"), sort_keys=True))


@dataclass(frozen=True)
class Reply:
    words: tuple[str, ...]  # the words after OK
    text: str

    def word(self, i: int) -> str:
        try:
            return self.words[i]
        except IndexError:
            raise PeerError(f"reply too short: {self.text[:80]!r}") from None

    def int_word(self, i: int) -> int:
        w = self.word(i)
        if not w.isdigit():
            raise PeerError(f"expected a number in reply {self.text[:80]!r}")
        return int(w)


def parse_reply(text: str) -> Reply:
    """Parse a reply line; raise ``RemoteError`` for ``ERR``, ``PeerError`` for garbage."""
    if text == "OK" or text.startswith("OK "):
        return Reply(tuple(text.split(" ")[1:]), text)
    if text.startswith("ERR "):
        _, _, rest = text.partition(" ")
        code, _, message = rest.partition(" ")
        try:
            code = Code(code)
        except ValueError:
            raise PeerError(f"server sent an unknown error code: {text[:120]!r}") from None
        raise RemoteError(message or code.value, code)
    raise PeerError(f"malformed reply from server: {text[:120]!r}")


def parse_stats(reply: Reply) -> dict:
    try:
        return json.loads(reply.text[3:])
    except ValueError:
        raise PeerError("STATS reply is not JSON") from None


def parse_listing_line(text: str) -> tuple[str, int]:
    size, _, name = text.partition(" ")
    if not size.isdigit() or not name:
        raise PeerError(f"malformed LIST line: {text[:120]!r}")
    return name, int(size)


# --------------------------------------------------------------------------
# Typed replies: one class per reply shape, written by the server
# (``to_line``) and read back by the client (``parse``) -- the word order
# of each reply is written once, here.
# --------------------------------------------------------------------------


def _expect(reply: Reply, first: str, what: str) -> None:
    if reply.word(0) != first:
        raise PeerError(f"unexpected reply to {what}: {reply.text[:80]!r}")


@dataclass(frozen=True)
class ListHeader:
    """``OK <n> files`` or ``OK <n> files <h> hidden``, followed by n :func:`listing_line` lines.

    ``hidden`` counts the folder's entries that are not listed because labnet
    would not serve them (a name that breaks the name rule or is not in NFC,
    a FIFO, a socket, a device, a folder, a symbolic link that leads nowhere
    servable); dot-names are neither listed nor counted.  The words are only
    written when ``hidden`` is not 0, and a reader that takes just the first
    number (an older client) still reads the listing right.
    """

    count: int
    hidden: int = 0

    def to_line(self) -> bytes:
        if self.hidden:
            return ok(self.count, "files", self.hidden, "hidden")
        return ok(self.count, "files")

    @classmethod
    def parse(cls, reply: Reply) -> ListHeader:
        count = reply.int_word(0)
        if reply.word(1) != "files":
            raise PeerError(f"unexpected reply to LIST: {reply.text[:80]!r}")
        # Words after "files" that are not "<h> hidden" are ignored, so a later server may add more.
        hidden = reply.int_word(2) if len(reply.words) >= 4 and reply.words[3] == "hidden" else 0
        return cls(count, hidden)


def listing_line(name: str, size: int) -> bytes:
    """One line of a LIST reply: ``<size> <name>``."""
    return f"{size} {name}\r\n".encode()


def list_reply(files, hidden: int = 0) -> bytes:
    """The whole LIST reply for ``[(name, size), ...]`` and ``hidden`` unlisted entries.

    Whatever the caller passes, the reply is well-formed: an entry whose name
    could not be requested back as it is (see :func:`labnet.protocol.names.is_canonical`:
    a space, a line break or undecodable bytes would put the lines out of step)
    or whose size is not a byte count is counted as hidden instead of listed.
    """
    shown = []
    for name, size in files:
        if is_canonical(name) and isinstance(size, int) and size >= 0:
            shown.append((name, size))
        else:
            hidden += 1
    return ListHeader(len(shown), hidden).to_line() + b"".join(listing_line(n, s) for n, s in shown)


@dataclass(frozen=True)
class SendReply:
    """``OK SEND <wire bytes>``: the server is ready for an upload body of that many bytes."""

    wire: int

    def to_line(self) -> bytes:
        return ok("SEND", self.wire)

    @classmethod
    def parse(cls, reply: Reply) -> SendReply:
        _expect(reply, "SEND", "UPLOAD")
        return cls(reply.int_word(1))


@dataclass(frozen=True)
class StoredReply:
    """``OK STORED <name> <size> <sha256>``: the upload was verified and published."""

    name: str
    size: int
    sha256: str

    def to_line(self) -> bytes:
        return ok("STORED", self.name, self.size, self.sha256)

    @classmethod
    def parse(cls, reply: Reply) -> StoredReply:
        _expect(reply, "STORED", "UPLOAD")
        return cls(reply.word(1), reply.int_word(2), reply.word(3))


@dataclass(frozen=True)
class DownloadHeader:
    """``OK <size> <encoding> <wire bytes>``: a download body of ``wire`` bytes follows."""

    size: int
    encoding: str
    wire: int

    @classmethod
    def for_file(cls, size: int, encoding: str) -> DownloadHeader:
        return cls(size, encoding, wire_length(size, encoding))

    def to_line(self) -> bytes:
        return ok(self.size, self.encoding, self.wire)

    @classmethod
    def parse(cls, reply: Reply) -> DownloadHeader:
        return cls(reply.int_word(0), reply.word(1), reply.int_word(2))

    @property
    def consistent(self) -> bool:
        """The wire length is what ``size`` bytes take in ``encoding``."""
        return self.encoding in ENCODINGS and self.wire == wire_length(self.size, self.encoding)


@dataclass(frozen=True)
class DeletedReply:
    """``OK DELETED <name>``."""

    name: str

    def to_line(self) -> bytes:
        return ok("DELETED", self.name)

    @classmethod
    def parse(cls, reply: Reply) -> DeletedReply:
        _expect(reply, "DELETED", "DELETE")
        return cls(reply.word(1))


BYE = ok("BYE")  # the reply to QUIT
