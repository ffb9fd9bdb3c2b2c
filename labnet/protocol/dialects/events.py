"""The events and errors both student dialects share: requests as a server sees them, body framing, typed failures.

The parsers of ``course`` and ``sentinel`` speak like labnet's own receiver
(``labnet.protocol.receiver``): ``receive_data(bytes)`` then ``next_event()``
until :data:`NEED_DATA`.  File content always comes out as the receiver's
:class:`Data` (already decoded to file bytes); the rest is here:

* server side: :class:`Request` (the verb and name are known; for an upload
  the content follows as ``Data``) and :class:`RequestEnd`;
* both sides: :class:`Framing`, the bytes that go before and after a base64
  body the caller streams itself (with ``labnet.protocol.codec.Encoder``), so
  no message ever has to hold a whole file;
* errors, both ``PeerError`` (the peer broke its protocol), typed so that a
  caller can tell them apart: :class:`NotUnderstood` (the bytes are not the
  dialect at all: it carries the first bytes, for "reply not understood:
  b'...'") and :class:`EndedEarly` (the peer closed in the middle of a
  message: a truncation, not a malformed message).

Imports nothing of labnet but ``errors`` and ``protocol``; must not import
socket, threading, multiprocessing or os.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labnet.errors import Code, PeerError
from labnet.protocol.dialects.base64_segments import SegmentFindings
from labnet.protocol.receiver import CLOSED, NEED_DATA, Data

__all__ = ["CLOSED", "NEED_DATA", "Data", "Request", "RequestEnd", "Framing", "NotUnderstood", "EndedEarly",
           "OPS", "HEAD_SHOWN"]  # fmt: skip

OPS = ("list", "upload", "download", "delete", "unknown")  # what a request asks, whatever its verb
HEAD_SHOWN = 120  # bytes of a bad message quoted in an error: enough to recognise it, short enough to read


@dataclass(frozen=True)
class Request:
    """A server has read a request's verb and name; an upload's content follows as ``Data`` events.

    ``op``: one of :data:`OPS` (``unknown`` for a verb the profile does not
    name: its body, if any, is skipped and the request still ends with a
    :class:`RequestEnd`, so the server can answer in turn).  ``verb``: as the
    client wrote it.  ``name``: as the client wrote it (never lowercased), or
    ``None``.  ``args``: further words (``inline_length``: the number).
    ``declared_length``: the number an ``inline_length`` upload announced (not
    checked here: the profile's ``upload.length`` says what it counts).
    ``prompt_due``: the server must answer *now*, before the client sends the
    body: the ``sentinel`` prompt, or the ``course`` ``{"status": "READY"}``.
    """

    op: str
    verb: str
    name: str | None = None
    args: tuple[str, ...] = ()
    declared_length: int | None = None
    prompt_due: bool = False


@dataclass(frozen=True)
class RequestEnd:
    """The request is complete; for an upload, every ``Data`` event has been given.

    ``ended_by``: ``"terminator"`` (the profile's), ``"marker"`` (``sentinel``),
    ``"object"`` (a JSON request's closing brace), ``"silence"`` (the I/O layer
    called ``end_of_request()``) or ``"close"`` (the peer closed its side).
    ``findings``: what the base64 decoder saw (``SegmentFindings``), uploads
    only.  ``verb``/``name``: final values (a JSON request may give its name
    after its content).  ``members``: the other members of a JSON request.
    """

    op: str
    verb: str
    name: str | None
    ended_by: str
    findings: SegmentFindings | None = None
    members: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Framing:
    """The bytes around a base64 body that the caller streams itself.

    Send ``head``; if ``await_prompt``, wait for the peer's go-ahead (the
    ``sentinel`` prompt, a ``course`` ``{"status": "READY"}``); then the file
    as base64 (``labnet.protocol.codec.Encoder``: one continuous string, never
    block by block); then ``tail``.
    """

    head: bytes
    tail: bytes
    await_prompt: bool = False


def shown(head: bytes) -> str:
    """How a bad message is quoted in an error: its first bytes, as a bytes literal."""
    text = repr(bytes(head[:HEAD_SHOWN]))
    return text + ("..." if len(head) > HEAD_SHOWN else "")


class NotUnderstood(PeerError):
    """The peer's bytes are not the dialect expected (say, a reply that is not JSON); ``head``: its first bytes."""

    def __init__(self, what: str, head: bytes, detail: str = "", code: Code = Code.BAD_REQUEST):
        message = f"{what} not understood: {shown(head)}" + (f" ({detail})" if detail else "")
        super().__init__(message, code)
        self.head = bytes(head)
        self.detail = detail


class EndedEarly(PeerError):
    """The peer closed in the middle of a message: a truncated transfer, not a malformed one.

    ``received``: bytes the parser had received when the stream ended.
    """

    def __init__(self, message: str, received: int):
        super().__init__(message, Code.INTEGRITY)
        self.received = received
