"""One connection in a student dialect (``course``, ``sentinel``): the shared loop under the two dialect sessions.

``labnet.server.session.serve_connection`` hands a connection here when the
server speaks a student dialect (``ServerConfig.dialect``), so both server
models serve the dialects with no change of their own.  This module holds
what both dialects share; the grammar of each is in
``labnet.server.course_session`` and ``labnet.server.sentinel_session``
(which get a :class:`DialectConnection` and import nothing from here).

:class:`DialectConnection` is the socket as the dialect sessions see it:

* :meth:`~DialectConnection.recv` reads with the idle limit
  (``idle_timeout``: no byte for that long is a ``TIMEOUT``), in short
  slices that notice an abort (shutdown past its grace period) and, between
  requests, a stop; it returns ``None`` after a *silence* of the given
  length, which is how a request with no terminator ends
  (``course_request.REQUEST_SILENCE``, 0.2 s: it adds to such requests' times);
* :meth:`~DialectConnection.send` sends with the same limits; every byte in
  and out is counted in the server's ``bytes_in`` / ``bytes_out`` counters
  (wire bytes: the dialects carry base64, so 4/3 of the file) and in the
  connection log;
* :meth:`~DialectConnection.begin` / :meth:`~DialectConnection.finish` count
  a request as the labnet dialect does (``LIST``, ``UPLOAD``, ``DOWNLOAD``,
  ``DELETE`` ok / failed; a request not understood is ``INVALID``) and note
  it in the connection log (``labnet.server.connlog``).

Rules: the socket is always closed on return and nothing here raises; after
an error in the middle of a request's bytes the socket is closed by
draining first (bounded), so that the error reply is not destroyed by a
reset.  Profiles are resolved here, in the worker, from the name or path in
the config (a spawned worker gets the config only), once per process.

Must not import threading or multiprocessing; must not import
``labnet.server.session`` (it imports this).
"""

from __future__ import annotations

import functools
import logging
import socket
import time

from labnet.config import ServerConfig
from labnet.errors import Code, LabnetError, LocalError, PeerError
from labnet.protocol.codec import Encoder
from labnet.protocol.dialects import get_profile
from labnet.protocol.dialects.profile import Profile
from labnet.server import course_session, sentinel_session
from labnet.server.connlog import ConnectionRecord
from labnet.server.stats import Stats
from labnet.server.store import FileStore

FILE_PIECE = 3 * 256 * 1024  # file bytes read per download piece: whole 3-byte groups, 1 MiB of base64

log = logging.getLogger("labnet.server")

RECV_SIZE = 256 * 1024  # bytes per recv(): a few pieces of this are all a connection ever holds
POLL = 0.25  # seconds: how often a blocked wait looks at the shutdown flags
LINGER_SECONDS = 2.0  # draining after an error reply, at most (0.25 s once the server is aborting)
LINGER_BYTES = 64 * 1024 * 1024
VERB_KEYS = {"list": "LIST", "upload": "UPLOAD", "download": "DOWNLOAD", "delete": "DELETE"}  # the counters' rows
SESSIONS = {"course": course_session.serve, "sentinel": sentinel_session.serve}


@functools.lru_cache(maxsize=8)
def resolve_profile(dialect: str, profile: str | None) -> Profile:
    """The profile a server of ``dialect`` speaks (``profile``: a built-in name, a TOML path, or None)."""
    return get_profile(dialect, profile)


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DialectConnection:
    """A connection as a dialect session sees it: I/O with limits, and request bookkeeping."""

    def __init__(self, sock: socket.socket, store: FileStore, stats: Stats, config: ServerConfig, flags,
                 profile: Profile, record: ConnectionRecord):  # fmt: skip
        self.sock = sock
        self.store = store
        self.stats = stats
        self.config = config
        self.flags = flags
        self.profile = profile
        self.record = record
        self.idle = config.idle_timeout
        self.bytes_in = 0
        self.bytes_out = 0
        self._verb: str | None = None  # the counters' row of the request in progress

    # -- I/O -------------------------------------------------------------------------

    def recv(self, silence: float | None = None, between: bool = False) -> bytes | None:
        """The next bytes (``b""``: the peer closed), or ``None`` after ``silence`` seconds without any.

        ``between``: no request is in progress, so a server that is stopping ends the wait
        (``LocalError(SHUTDOWN)``), as an aborting one always does.  ``PeerError(TIMEOUT)``
        after ``idle_timeout`` seconds without a byte.
        """
        now = time.monotonic()
        idle_end = now + self.idle
        silence_end = None if silence is None else now + silence
        while True:
            if self.flags.aborting() or between and self.flags.stopping():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            now = time.monotonic()
            if silence_end is not None and now >= silence_end:
                return None
            if now >= idle_end:
                raise PeerError(f"no data for {self.idle:g} s", Code.TIMEOUT)
            wait = min(POLL, idle_end - now, POLL if silence_end is None else silence_end - now)
            self.sock.settimeout(max(wait, 0.001))
            try:
                data = self.sock.recv(RECV_SIZE)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                self.bytes_in += len(data)
                self.stats.add("bytes_in", len(data))
            return data

    def send(self, data) -> None:
        """Send all of ``data``; the idle limit applies to each stall; an abort ends it."""
        view = memoryview(data)
        idle_end = time.monotonic() + self.idle
        while view:
            if self.flags.aborting():
                raise LocalError("server is shutting down", Code.SHUTDOWN)
            now = time.monotonic()
            if now >= idle_end:
                raise PeerError(f"the client read nothing for {self.idle:g} s", Code.TIMEOUT)
            self.sock.settimeout(max(min(POLL, idle_end - now), 0.001))
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                continue
            view = view[sent:]
            self.bytes_out += sent
            self.stats.add("bytes_out", sent)
            idle_end = time.monotonic() + self.idle

    def send_file_base64(self, f, tail: bytes) -> tuple[int, Exception | None]:
        """Send the open file ``f`` as one base64 string, then ``tail``: ``(file bytes sent, None)``, or the
        bytes sent before the failure that stopped it.  Pieces of whole 3-byte groups, so no padding but at
        the very end: a client that decodes with ``base64.b64decode`` gets the whole file."""
        encoder = Encoder("b64")
        sent = 0
        try:
            while True:
                piece = f.read(FILE_PIECE)
                if not piece:
                    break
                sent += len(piece)
                self.send(encoder.encode(piece))
            self.send(encoder.finish() + tail)
        except (PeerError, LocalError, OSError) as exc:
            return sent, exc
        return sent, None

    def send_quietly(self, data: bytes) -> None:
        """A best-effort reply (an error): bounded by a short timeout, never raises, ignores the abort flag."""
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(data)
            self.bytes_out += len(data)
            self.stats.add("bytes_out", len(data))
        except OSError:
            pass

    def linger_close(self) -> None:
        """Close after our last reply, reading and dropping what the peer still sends (bounded)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            end = time.monotonic() + (0.25 if self.flags.aborting() else LINGER_SECONDS)
            left = LINGER_BYTES
            while left > 0 and time.monotonic() < end:
                self.sock.settimeout(max(end - time.monotonic(), 0.001))
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    break
                left -= len(data)
                self.bytes_in += len(data)
        except OSError:
            pass
        finally:
            self.sock.close()

    # -- requests ------------------------------------------------------------------------

    def begin(self, op: str, verb: str, name: str | None) -> None:
        """A request starts: counted as its verb's request (``INVALID`` if not understood), logged."""
        self._verb = VERB_KEYS.get(op, "INVALID")
        self.stats.request_started(self._verb)
        self.record.begin(op if op in VERB_KEYS else None, verb, name)

    def finish(self, ok: bool, size: int | None = None, error: str | None = None, ended_by: str | None = None,
               findings=None) -> None:  # fmt: skip
        """The request in progress ended (a no-op if none): its counter, its log entry."""
        if self._verb is None:
            return
        self.stats.count(self._verb, ok=ok)
        if error is not None and error.startswith("no data for"):
            self.stats.add("timeouts")
        self._verb = None
        padded = None if findings is None else findings.padded_midstream
        self.record.finish(ok, size, error, ended_by, padded)

    @property
    def in_request(self) -> bool:
        return self._verb is not None


def serve_dialect_connection(sock: socket.socket, store: FileStore, stats: Stats, config: ServerConfig, flags,
                             accepted: float | None = None) -> None:  # fmt: skip
    """Serve one connection in ``config.dialect`` until it ends; the socket is closed on return."""
    record = ConnectionRecord(config.dialect, _peer(sock), accepted, config.connection_log)
    conn = None
    linger = False
    stats.add("active", 1)
    try:
        profile = resolve_profile(config.dialect, config.profile)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = DialectConnection(sock, store, stats, config, flags, profile, record)
        linger = SESSIONS[config.dialect](conn)
    except (OSError, LabnetError) as exc:
        log.info("connection ended: %s", exc)
    except Exception:  # a bug: log it, keep the worker alive
        log.exception("unexpected error while serving a %s connection", config.dialect)
    finally:
        stats.add("active", -1)
        if conn is not None:
            if conn.in_request:  # ended by an exception: still counted and logged
                conn.finish(False, error="connection ended during the request", ended_by="error")
            if linger:
                conn.linger_close()
            else:
                sock.close()
            record.close(conn.bytes_in, conn.bytes_out)
        else:
            sock.close()
            record.close(0, 0)
