"""A client for the students' wire dialects (``course``, ``sentinel``): labnet talking to *their* servers.

>>> with StudentClient("course", host="127.0.0.1", port=6666) as c:
...     c.upload("client_files/10MB.bin")
...     c.download("10MB.bin", "client_downloads")

The sans-IO grammar of each dialect is ``labnet.protocol.dialects`` (a
``Profile`` names one server's variants); this module is only the blocking
socket around it, in the manner of ``labnet.client.native`` for labnet's own
protocol.  Like the students' own clients, it opens one connection per
request.

Rules
-----
* Streaming, whatever the dialect: an upload's base64 is produced from the
  file in 1 MiB pieces (``labnet.protocol.codec.Encoder``: one continuous
  string, never block by block); a download's base64 -- inside a JSON string
  or before an end marker that may arrive split across reads -- is decoded as
  it arrives (``SegmentDecoder``: ``=`` padding in the middle of the stream
  starts a new segment, so a block-by-block encoder's file arrives whole, and
  the result says so) into a temporary dot-file, renamed only when the
  server's reply said OK.  Memory stays constant with file size.
* This client does not judge success: it reports what moved (bytes, SHA-256
  of what was sent or received) and what the server said.  Whether a
  transfer *succeeded* is decided by comparing digests with the lab's own
  copy (``labnet.measure.verdicts``), never on the server's word.
* Failures are typed: ``RemoteError`` when the server refused in its own
  words (``.message`` holds them), ``NotUnderstood`` (``PeerError``) when the
  reply is not the dialect at all (with its first bytes), ``EndedEarly`` when
  the server closed in the middle of a reply, ``TimeoutError`` when nothing
  came for ``timeout`` seconds, ``ConnectionRefusedError`` when nothing
  listens.
* ``first_byte_seconds``: time from the request to the first reply byte --
  the only sign of when service started that these dialects give (they have
  no greeting); approximate, labelled so in reports.

Must not import threading or multiprocessing.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from labnet.client.native import open_upload_source
from labnet.config import DEFAULT_HOST, DEFAULT_PORT
from labnet.errors import Code, PeerError, RemoteError, UsageError
from labnet.protocol import codec
from labnet.protocol.dialects import course_reply, course_request, get_profile, sentinel
from labnet.protocol.dialects.events import CLOSED, NEED_DATA, Data, NotUnderstood
from labnet.protocol.names import check_name

READ_SIZE = 256 * 1024
FILE_PIECE = 1024 * 1024  # file bytes read and encoded per piece (the Encoder keeps whole 3-byte groups)


@dataclass
class DialectResult:
    """One transfer in a student dialect.  ``sha256``: of the file bytes sent or received."""

    op: str
    name: str
    bytes: int
    seconds: float
    sha256: str
    dialect: str
    wire_bytes: int
    path: str
    first_byte_seconds: float | None = None
    findings: str = ""  # what the base64 decoder noticed (block-by-block padding...), plain words
    server_said: str = ""  # the server's own words about it
    stored_name: str | None = None  # an upload the server stored under another name (it said so)

    @property
    def throughput(self) -> float:
        return self.bytes / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["throughput"] = self.throughput
        return d


class _Conversation:
    """One connection: send bytes, feed what comes back to a parser until it gives an event."""

    def __init__(self, host: str, port: int, timeout: float, time_limit: float | None = None):
        self.timeout = timeout
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.time_limit = time_limit
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sent_at = time.perf_counter()
        self.first_byte: float | None = None
        self.received = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_event(self, parser):
        """The parser's next event, reading as needed; ``TimeoutError`` after ``timeout`` s of silence."""
        while True:
            event = parser.next_event()
            if event is not NEED_DATA:
                return event
            wait = self.timeout
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                if left <= 0:  # a reply that trickles forever never trips the idle timeout
                    raise TimeoutError(f"the reply did not end within the time limit of {self.time_limit:g} s")
                wait = min(wait, left)
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise TimeoutError(f"the reply did not end within the time limit of {self.time_limit:g} s") from None
                raise TimeoutError(f"no reply from the server for {self.timeout:g} s") from None
            except ConnectionResetError:
                data = b""  # a reset ends the stream like a close; the parser says what was missing
            if data and self.first_byte is None:
                self.first_byte = time.perf_counter() - self.sent_at
            self.received += len(data)
            parser.receive_data(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class StudentClient:
    """Talk to a server in the ``course`` or ``sentinel`` dialect (``profile``: its variants)."""

    def __init__(self, dialect: str, profile=None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 timeout: float = 60.0, time_limit: float | None = None):  # fmt: skip
        if dialect not in ("course", "sentinel"):
            raise UsageError(f"StudentClient speaks course or sentinel, not {dialect!r} (labnet: labnet.Client)")
        self.dialect = dialect
        self.profile = get_profile(dialect, profile)
        self.host, self.port, self.timeout = host, port, timeout
        self.time_limit = time_limit  # seconds a whole request may take (None: only the idle timeout)

    def __enter__(self) -> StudentClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to close: every request has its own connection, closed when it ends."""

    def _open(self) -> _Conversation:
        return _Conversation(self.host, self.port, self.timeout, self.time_limit)

    # -- small requests ------------------------------------------------------------------

    def list(self) -> list[str]:
        conv = self._open()
        try:
            if self.dialect == "course":
                conv.send(course_request.list_request(self.profile))
                reply = conv.next_event(course_reply.ReplyParser(self.profile))
                if not reply.ok:
                    raise RemoteError(reply.message or f"status {reply.status!r}", Code.SERVER_ERROR)
                if reply.names is None:
                    raise NotUnderstood("LIST reply", repr(reply.members).encode()[:200], "no list in it")
                return list(reply.names)
            conv.send(sentinel.list_request(self.profile))
            event = conv.next_event(sentinel.TextReplyParser("list"))
            if isinstance(event, sentinel.Refused):
                raise RemoteError(event.text, Code.SERVER_ERROR)
            return list(event.names)
        finally:
            conv.close()

    def delete(self, name: str) -> str:
        if self.dialect != "course":
            raise UsageError("the sentinel dialect has no DELETE")
        conv = self._open()
        try:
            conv.send(course_request.delete_request(self.profile, check_name(name)))
            reply = conv.next_event(course_reply.ReplyParser(self.profile))
            if not reply.ok:
                raise RemoteError(reply.message or f"status {reply.status!r}", Code.SERVER_ERROR)
            return reply.message or ""
        finally:
            conv.close()

    # -- transfers -----------------------------------------------------------------------------

    def upload(self, path, name: str | None = None, progress=None) -> DialectResult:
        """Send the file at ``path`` as ``name``; returns what was sent and what the server said."""
        path = Path(path)
        name = check_name(name or path.name)
        with open_upload_source(path) as f:
            size = os.fstat(f.fileno()).st_size
            t0 = time.perf_counter()
            conv = self._open()
            try:
                if self.dialect == "course":
                    framing = course_request.upload_request(self.profile, name, size)
                else:
                    framing = sentinel.upload_request(self.profile, name)
                conv.send(framing.head)
                if framing.await_prompt:
                    self._await_prompt(conv)
                digest, wire = self._send_base64(conv, f, progress)
                conv.send(framing.tail)
                said, stored = self._upload_reply(conv)
            finally:
                conv.close()
        return DialectResult("upload", name, size, time.perf_counter() - t0, digest, self.dialect,
                             wire + len(framing.head) + len(framing.tail), str(path), conv.first_byte,
                             server_said=said, stored_name=stored)  # fmt: skip

    def _await_prompt(self, conv: _Conversation) -> None:
        if self.dialect == "course":
            reply = conv.next_event(course_reply.ReplyParser(self.profile))
            if reply.status != "READY" and not reply.ok:
                raise RemoteError(reply.message or f"status {reply.status!r} instead of READY", Code.SERVER_ERROR)
            return
        event = conv.next_event(sentinel.PromptWaiter(self.profile))
        if isinstance(event, sentinel.Refused):
            raise RemoteError(event.text, Code.SERVER_ERROR)

    @staticmethod
    def _send_base64(conv: _Conversation, f, progress) -> tuple[str, int]:
        encoder = codec.Encoder("b64")
        hasher = hashlib.sha256()
        wire = 0
        while True:
            piece = f.read(FILE_PIECE)
            if not piece:
                break
            hasher.update(piece)
            out = encoder.encode(piece)
            conv.send(out)
            wire += len(out)
            if progress is not None:
                progress(len(piece))
        out = encoder.finish()
        conv.send(out)
        return hasher.hexdigest(), wire + len(out)

    def _upload_reply(self, conv: _Conversation) -> tuple[str, str | None]:
        if self.dialect == "course":
            reply = conv.next_event(course_reply.ReplyParser(self.profile))
            if not reply.ok:
                raise RemoteError(reply.message or f"status {reply.status!r}", Code.SERVER_ERROR)
            return reply.message or "", reply.stored_name
        event = conv.next_event(sentinel.TextReplyParser("upload"))
        if isinstance(event, sentinel.Refused) or not event.ok:
            raise RemoteError(event.text, Code.SERVER_ERROR)
        return event.text, None

    def download(self, name: str, dest_dir=".", progress=None, save_as: str | None = None) -> DialectResult:
        """Fetch ``name`` into ``dest_dir`` (as ``save_as``); the file appears only after an OK reply."""
        name = check_name(name)
        final = Path(dest_dir) / check_name(save_as or name)
        final.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        conv = self._open()
        fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
        os.fchmod(fd, 0o644)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if self.dialect == "course":
                    conv.send(course_request.download_request(self.profile, name))
                    parser = course_reply.ReplyParser(self.profile, content=True)
                else:
                    conv.send(sentinel.download_request(self.profile, name))
                    parser = sentinel.DownloadParser(self.profile)
                while True:
                    event = conv.next_event(parser)
                    if isinstance(event, Data):
                        out.write(event.data)
                        hasher.update(event.data)
                        size += len(event.data)
                        if progress is not None:
                            progress(len(event.data))
                        continue
                    break
            said, findings = self._download_end(event)
            os.replace(temp, final)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        finally:
            conv.close()
        return DialectResult("download", name, size, time.perf_counter() - t0, hasher.hexdigest(), self.dialect,
                             conv.received, str(final), conv.first_byte, findings, said)  # fmt: skip

    def _download_end(self, event) -> tuple[str, str]:
        """``(server's words, decoder findings)`` of the event that ended a download; raise if refused."""
        if isinstance(event, course_reply.Reply):
            if not event.ok:
                raise RemoteError(event.message or f"status {event.status!r}", Code.NOT_FOUND)
            return event.message or "", event.findings.describe() if event.findings else ""
        if isinstance(event, sentinel.Refused):
            raise RemoteError(event.text, Code.NOT_FOUND)
        if isinstance(event, sentinel.DownloadEnd):
            return "", event.findings.describe()
        if event is CLOSED:
            raise PeerError("the server closed before the file ended", Code.INTEGRITY)
        raise PeerError(f"unexpected {type(event).__name__} from the server")
