"""The labnet client: one connection, many requests, files streamed and verified.

>>> with Client("127.0.0.1", 8989) as c:
...     c.upload("client_files/10MB.bin")
...     c.download("10MB.bin", "client_downloads")

Rules
-----
* Nothing is held whole in memory: files move in chunks.
* A download lands in a temporary dot-file in ``dest_dir`` and is renamed to
  its final name only when every byte arrived and the SHA-256 matched; on any
  failure the temporary file is removed and no file appears.
* Failures raise typed exceptions (``labnet.errors``): ``RemoteError`` when
  the server answered ``ERR <CODE>`` (``.code`` holds it), ``PeerError``
  when the server broke the protocol or the digest did not match,
  ``OSError`` (refused, reset, timeout) from the network itself.
* ``progress`` is any callable taking a number of file bytes (``tqdm.update``
  fits) and is called as bytes move.
* If the server closed an idle connection, the next call reconnects.
* SHA-256 is computed in a helper thread (``labnet.transport.pipeline``) while this
  thread moves the bytes.  A file uploaded before and unchanged since (same
  device, inode, size, mtime and ctime) is not hashed again: its digest is
  remembered in this process, and a raw upload then goes out by ``sendfile``.
  A raw download moves socket -> file by ``splice`` (Linux, zero-copy) and
  is hashed back from the file, still verified before it is renamed.
  A remembered digest that were somehow stale cannot store wrong data: the
  server hashes what it receives and answers ``ERR INTEGRITY``, storing
  nothing; the client then forgets that digest, so a retry hashes afresh.

Must not import threading or multiprocessing (the hashing helper lives in
``labnet.transport.pipeline``).
"""

from __future__ import annotations

import os
import select
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from labnet.config import DEFAULT_HOST, DEFAULT_PORT, ENCODINGS
from labnet.errors import Code, LabnetError, PeerError, RemoteError, UsageError
from labnet.procutil import keep_buffers_warm
from labnet.protocol.codec import wire_length
from labnet.protocol.messages import (
    GREETING,
    DeletedReply,
    DownloadHeader,
    ListHeader,
    Request,
    SendReply,
    StoredReply,
    parse_listing_line,
    parse_queued,
    parse_reply,
    parse_stats,
)
from labnet.protocol.names import check_name
from labnet.protocol.receiver import CLOSED, MAX_REPLY_LINE, BodySender, Line
from labnet.transport.channel import Channel
from labnet.transport.digests import DigestCache
from labnet.transport.pipeline import ThreadedSHA256
from labnet.transport.transfer import FileSink, receive_body, send_body

# Digests of files this process uploaded, keyed by (device, inode, size, mtime, ctime): an
# unchanged file is not hashed again, and raw goes out by sendfile.  Memory only: the client
# never writes to the user's files.  See labnet.transport.digests.
UPLOAD_DIGESTS = DigestCache(use_xattr=False)


@dataclass
class TransferResult:
    """What one upload or download did.  ``bytes`` are file bytes (not wire bytes)."""

    op: str
    name: str
    bytes: int
    seconds: float
    sha256: str
    encoding: str
    wire_bytes: int
    path: str = ""  # the local file read or written

    @property
    def throughput(self) -> float:
        """File bytes per second."""
        return self.bytes / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["throughput"] = self.throughput
        return d


class Client:
    """A connection to a labnet server.

    ``timeout``: seconds without progress before a transfer fails.
    ``wait_timeout``: how long to wait for a busy server to take the
    connection (the greeting); queueing behind a small pool is normal.
    ``should_abort``: optional callable checked at least every 0.25 s while
    waiting and before every chunk; when it returns true the call in
    progress raises ``LocalError(SHUTDOWN)`` (a stress run being cancelled
    or hitting its time limit).  It may be called from this thread only.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 60.0,
                 wait_timeout: float = 600.0, should_abort=None):  # fmt: skip
        self.host, self.port = host, port
        _tune_allocator_once()
        self.timeout, self.wait_timeout = timeout, wait_timeout
        self.should_abort = should_abort
        self._chan: Channel | None = None
        self.wait_seconds = 0.0  # connect until the server started on us
        self.connect_seconds = 0.0
        self.queue_position: int | None = None  # where the server queued our last connection (None: not queued)
        self.last_list_hidden = 0  # entries the server's last LIST left out (see list())

    # -- connection ------------------------------------------------------------

    def connect(self) -> Client:
        """Connect and wait for the greeting (or ``ERR BUSY``); idempotent."""
        if self._chan is not None and not self._peer_closed():
            return self
        self.close()
        t0 = time.perf_counter()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        t1 = time.perf_counter()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        chan = Channel(sock, MAX_REPLY_LINE, idle=self.timeout)
        if self.should_abort is not None:
            chan.should_abort = self.should_abort
        try:
            # A labnet server greets at once, or says at once that the connection is queued; then the
            # greeting may take as long as the queue (wait_timeout).  Silence is not a queue.
            first = min(self.timeout, self.wait_timeout)
            try:
                line = self._line(chan, deadline=time.monotonic() + first, idle=False)
            except PeerError as exc:
                if exc.code != Code.TIMEOUT:
                    raise
                raise TimeoutError(f"no labnet greeting from {self.host}:{self.port} within {first:g} s: is it a "
                                   f"labnet server? ('labnet probe --host {self.host} --port {self.port}' "
                                   "says which dialect it speaks)") from None  # fmt: skip
            position = parse_queued(line)
            if position is not None:
                self.queue_position = position
                line = self._line(chan, deadline=time.monotonic() + self.wait_timeout, idle=False)
            parse_reply(line)  # raises RemoteError for ERR BUSY / SHUTDOWN
            if line != GREETING:
                raise PeerError(f"not a labnet server (greeting {line[:60]!r}); 'labnet probe' says which "
                                "dialect it speaks")  # fmt: skip
        except BaseException:
            sock.close()
            raise
        self._chan = chan
        self.connect_seconds = t1 - t0
        self.wait_seconds = time.perf_counter() - t1
        return self

    def _peer_closed(self) -> bool:
        """True if the server already closed (or said something) while we were idle."""
        try:
            readable, _, _ = select.select([self._chan.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        if self._chan is not None:
            try:
                self._chan.sock.close()
            finally:
                self._chan = None

    def quit(self) -> None:
        """Say QUIT politely, then close."""
        if self._chan is not None:
            try:
                self._chan.send(Request("QUIT").to_line())
                self._reply()
            except (OSError, PeerError, RemoteError):
                pass
        self.close()

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.quit() if exc[0] is None else self.close()

    # -- plumbing --------------------------------------------------------------

    @staticmethod
    def _line(chan: Channel, deadline=None, idle=True) -> str:
        saved = chan.idle
        if not idle:
            chan.idle = None
        try:
            event = chan.next_event(deadline=deadline)
        except OSError as exc:
            raise _network_error(exc) from None
        finally:
            chan.idle = saved
        if event is CLOSED:
            raise ConnectionResetError("server closed the connection")
        if not isinstance(event, Line):
            raise PeerError(f"unexpected {type(event).__name__} from server")
        return event.text

    def _reply(self):
        return parse_reply(self._line(self._chan))

    def _request(self, request: Request):
        reused = self._chan is not None
        self.connect()
        try:
            self._chan.send(request.to_line())
        except OSError as exc:
            self._raise_server_reason(exc)
        try:
            return self._reply()
        except RemoteError as exc:
            # The server closed this idle connection just as we sent the request: it never read
            # it, so sending it again on a fresh connection is safe (whatever the verb).
            if not (reused and exc.code == Code.TIMEOUT):
                raise
        self.close()
        self.connect()
        self._chan.send(request.to_line())
        return self._reply()

    def _raise_server_reason(self, exc: OSError):
        """A send failed: the server probably said why (``ERR ...``) before closing."""
        try:
            line = self._line(self._chan, deadline=time.monotonic() + 2.0)
        except Exception:
            self.close()
            raise exc from None
        self.close()
        parse_reply(line)
        raise exc

    # -- requests --------------------------------------------------------------

    def list(self) -> list[tuple[str, int]]:
        """``[(name, size), ...]`` of the server's files: every one of them can be downloaded.

        Entries of the server's folder that it will not serve (a FIFO, a
        folder, a name that breaks the name rule...) are left out; their number
        is in ``self.last_list_hidden`` afterwards (0 from servers that do not say).
        """
        header = ListHeader.parse(self._request(Request("LIST")))
        files = [parse_listing_line(self._line(self._chan)) for _ in range(header.count)]
        self.last_list_hidden = header.hidden
        return files

    def stats(self) -> dict:
        return parse_stats(self._request(Request("STATS")))

    def delete(self, name: str) -> None:
        DeletedReply.parse(self._request(Request("DELETE", check_name(name))))

    def upload(self, path, name: str | None = None, encoding: str = "b64", progress=None) -> TransferResult:
        """Send the file at ``path``; the server stores it as ``name`` (default: its base name)."""
        path = Path(path)
        encoding = _check_encoding(encoding)
        name = check_name(name or path.name)
        with open_upload_source(path) as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            known = UPLOAD_DIGESTS.lookup(f.fileno(), st)
            t0 = time.perf_counter()
            reply = self._request(Request("UPLOAD", name, size, encoding))
            if SendReply.parse(reply).wire != wire_length(size, encoding):
                raise PeerError(f"unexpected reply to UPLOAD: {reply.text[:80]!r}")
            hasher = None if known is not None else ThreadedSHA256()
            sender = BodySender(size, encoding, sha256=known, hasher=hasher)
            try:
                send_body(self._chan, f, size, sender, progress)
            except OSError as exc:
                self._raise_server_reason(exc)
            except LabnetError:  # the file shrank, or should_abort: the server still expects body bytes
                self.close()
                raise
            finally:
                if hasher is not None:
                    hasher.close()
            try:
                reply = self._reply()
            except RemoteError as exc:
                if exc.code == Code.INTEGRITY and known is not None:
                    UPLOAD_DIGESTS.forget(st)  # stale after all: the next try hashes again
                # An ERR here may have been sent mid-body, and then the server is closing this
                # connection (possibly still draining what we sent): start afresh next time.
                self.close()
                raise
            seconds = time.perf_counter() - t0
            if hasher is not None:
                UPLOAD_DIGESTS.record(f.fileno(), sender.hexdigest(), since=st)
        if StoredReply.parse(reply).sha256 != sender.hexdigest():
            raise PeerError(f"server stored something else: {reply.text[:120]!r}", Code.INTEGRITY)
        return TransferResult("upload", name, size, seconds, sender.hexdigest(), encoding,
                              sender.wire_size, str(path))  # fmt: skip

    def download(self, name: str, dest_dir=".", encoding: str = "b64", progress=None,
                 save_as: str | None = None) -> TransferResult:  # fmt: skip
        """Fetch ``name`` into ``dest_dir`` (as ``save_as`` if given), verified before it appears."""
        encoding = _check_encoding(encoding)
        name = check_name(name)
        final = Path(dest_dir) / check_name(save_as or name)
        final.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        reply = self._request(Request("DOWNLOAD", name, encoding=encoding))
        header = DownloadHeader.parse(reply)
        size, wire = header.size, header.wire
        if header.encoding != encoding or not header.consistent:
            raise PeerError(f"unexpected reply to DOWNLOAD: {reply.text[:80]!r}")
        fd, temp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; the finished download is an ordinary file
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    event = receive_body(self._chan, FileSink(out), size, encoding, progress=progress,
                                         on_closed=_closed_mid_download)  # fmt: skip
                except OSError as exc:
                    raise _network_error(exc) from None
            os.replace(temp, final)  # the receiver checked the digest: only now does the file appear
        except BaseException:
            self.close()  # the stream is out of sync now
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        seconds = time.perf_counter() - t0
        return TransferResult("download", name, size, seconds, event.sha256, encoding, wire, str(final))


def open_upload_source(path: Path):
    """The file to upload, open for reading; ``UsageError`` (a bad argument, not a network error) if it cannot be."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _closed_mid_download() -> ConnectionResetError:
    return ConnectionResetError("server closed the connection during the download")


_allocator_tuned = []


def _tune_allocator_once() -> None:
    """Reuse freed chunk buffers in this process instead of faulting fresh pages in for each
    chunk (``procutil.keep_buffers_warm``: 98 -> 70 ms of CPU per 100 MB base64 received)."""
    if not _allocator_tuned:
        _allocator_tuned.append(keep_buffers_warm())


def _check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise UsageError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    return encoding


def _network_error(exc: OSError) -> OSError:
    if isinstance(exc, socket.timeout):
        return TimeoutError(f"no data from the server for too long: {exc}")
    return exc
