"""SHA-256 and file writes in a helper thread, so they overlap the socket work.

Two helpers with one shape: :class:`ThreadedSHA256` (hashing) and
:class:`ThreadedWriter` (writing decoded base64 bodies to the file, so the
receiving thread can hash each chunk while it is still in its core's cache).
What follows is said of hashing; the same bounds and rules hold for both,
and they share the per-process limit on helpers.

Both ends of a transfer hash every file byte (the receiver to check the
trailer, the sender to write it).  Hashing costs about as much CPU as moving
the bytes through the socket and the file together, and done in line it
simply adds to them.  :class:`ThreadedSHA256` has the same two methods as
``hashlib.sha256()`` -- ``update`` and ``hexdigest`` -- but ``update`` only
queues the chunk; a helper thread hashes it while the calling thread goes on
receiving and writing (or reading and sending).  ``hashlib`` releases the GIL
for buffers over 2 KiB, so the two threads really run at the same time on two
cores.

Bounded: the queue holds at most ``depth`` chunks; a caller that gets ahead of
the hashing waits in ``update``.  So one transfer holds at most ``depth + 2``
chunks (the queued ones, the one being hashed, the one in the caller's hands),
a few MiB at most, whatever the file size (plus a 1 MiB read-back buffer;
128 KiB when hashing back in line, where many connections may each hold one).

Only when a core is free: a helper pays off only if it gets a core of its own.
When every core is already busy (say 50 concurrent uploads on 2 cores), it
only adds thread switches and moves each chunk between CPU caches -- measured:
50 concurrent 100 MB uploads took 17 s instead of 9 s.  So a process runs at
most ``cpu_count - 1`` helpers at a time (at least one), and the caller can
say ``enabled=False`` when it knows the machine is busy (the servers do when
more connections are active than there are CPUs); a hasher that gets no
helper hashes in line, exactly like ``hashlib``.  Checked again with
``/proc/<pid>/status`` during 50 concurrent 100 MB base64 uploads to a
50-thread server: 53 threads (50 workers, the accept loop, the stuck-handler
watchdog, the parent-PID watchdog), 54 for a moment at the start or the end
(a helper, while fewer than two connections are active): never a helper per
connection.

Small bodies never start a thread: chunks are hashed in line until one of at
least ``min_threaded`` bytes comes along (order is kept: after the helper
starts, every chunk goes through the queue).

Bodies that never entered Python (raw bodies ``splice``-d from the socket to
the file) are hashed with :meth:`ThreadedSHA256.update_from_file`: the helper
reads the range back from the file (page cache) through one reused buffer,
in order with the other chunks; the queue bound still holds (an item names
at most one pipe-full, 1 MiB).

Chunks must be ``bytes`` (or anything nobody modifies afterwards): the helper
reads them after ``update`` has returned.  Always end with :meth:`hexdigest`
or :meth:`close` (both idempotent; use ``try/finally``), or a helper thread
would wait for chunks forever.

The protocol core (``labnet.protocol``) stays free of threads: the I/O layer
passes an instance of this class as the ``hasher`` of
``Receiver.start_body`` / ``BodySender``, and the core still compares the
digest with the trailer.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading

DEPTH = 2  # chunks waiting for the helper
READ_BACK = 1 << 20  # bytes per pread when hashing data back from a file (fits a core's L2)
# ... when hashing back in line (no helper: many connections at once).  Measured: 50 concurrent raw
# 100 MB uploads to a 50-thread server peaked at 86.8 MB RSS with a 1 MiB buffer per connection.
INLINE_READ_BACK = 128 * 1024
MIN_THREADED = 64 * 1024  # smaller chunks are hashed in line until a big one starts the helper
_STOP = None
MAX_HELPERS = max(1, (os.cpu_count() or 1) - 1)  # helper threads per process, at most

_helpers = 0
_helpers_lock = threading.Lock()


def _claim_helper() -> bool:
    global _helpers
    with _helpers_lock:
        if _helpers >= MAX_HELPERS:
            return False
        _helpers += 1
        return True


def _release_helper() -> None:
    global _helpers
    with _helpers_lock:
        _helpers -= 1


def helpers_running() -> int:
    """Helper threads running in this process now."""
    return _helpers


class _Helped:
    """What both helpers share: a lazily started helper thread behind a bounded queue.

    A subclass names its thread (``NAME``), does one item's work in
    :meth:`_work` (in the helper) and calls :meth:`_hand` with each item:
    it goes to the helper if one runs or can start now, else the caller does
    the work itself, in line.  Items are taken in order either way.
    """

    NAME = "labnet-helper"

    def __init__(self, depth: int, min_threaded: int | None, enabled: bool):
        self._enabled = enabled
        self._depth = depth
        self._min_threaded = MIN_THREADED if min_threaded is None else min_threaded
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self.max_queued = 0  # the most items ever waiting (tests check the bound)

    @property
    def threaded(self) -> bool:
        """True once the helper thread was started."""
        return self._queue is not None

    def _hand(self, item, nbytes: int) -> None:
        q = self._queue
        if q is None:
            if nbytes < self._min_threaded or not self._start():
                self._work(item)
                return
            q = self._queue
        q.put(item)  # blocks while the queue is full: memory stays bounded
        self.max_queued = max(self.max_queued, q.qsize())

    def _start(self) -> bool:
        """Start the helper thread; False (work in line) when not allowed (``enabled=False``,
        ``MAX_HELPERS`` already running) or not possible (no thread could start)."""
        if not self._enabled or not _claim_helper():
            return False
        q = queue.Queue(self._depth)
        thread = threading.Thread(target=self._run, args=(q,), name=self.NAME, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # can't start a new thread: work in line
            _release_helper()
            return False
        self._queue, self._thread = q, thread
        return True

    def _run(self, q: queue.Queue) -> None:
        work = self._work
        while (item := q.get()) is not _STOP:
            work(item)

    def _work(self, item) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the helper after it dealt with what is queued (idempotent); raises nothing."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
            _release_helper()


class ThreadedSHA256(_Helped):
    NAME = "labnet-sha256"

    def __init__(self, depth: int = DEPTH, min_threaded: int | None = None, enabled: bool = True):
        super().__init__(depth, min_threaded, enabled)
        self._sha = hashlib.sha256()
        self._hex: str | None = None
        self._buf: bytearray | None = None  # read-back buffer for update_from_file
        self._error: OSError | None = None

    def update(self, data) -> None:
        if self._hex is not None:
            raise RuntimeError("update() after hexdigest()")
        self._hand(data, len(data))

    def update_from_file(self, fd: int, offset: int, count: int) -> None:
        """Hash ``count`` bytes of the open file ``fd`` from ``offset`` (bytes just written there).

        For bodies moved into the file without entering Python (``splice``):
        the helper reads them back (``pread``, from the page cache) in order
        with the other chunks, through one reused buffer.  ``fd`` must stay
        open until :meth:`close` or :meth:`hexdigest` returned.  A read error
        or a file shorter than ``offset + count`` makes :meth:`hexdigest`
        raise ``OSError``: the digest can never match by accident.
        """
        if self._hex is not None:
            raise RuntimeError("update_from_file() after hexdigest()")
        if count > 0:
            self._hand((fd, offset, count), count)

    def _work(self, item) -> None:
        if type(item) is tuple:
            self._hash_file(*item)
        else:
            self._sha.update(item)

    def _hash_file(self, fd: int, offset: int, count: int) -> None:
        if self._error is not None:
            return
        buf = self._buf
        if buf is None:
            buf = self._buf = bytearray(READ_BACK if self.threaded else INLINE_READ_BACK)
        view = memoryview(buf)
        step = len(buf)
        update = self._sha.update
        try:
            while count > 0:
                n = os.preadv(fd, [view[: min(count, step)]], offset)
                if n <= 0:
                    raise OSError(f"file ends {count} bytes before the data being hashed")
                update(view[:n])
                offset += n
                count -= n
        except OSError as exc:
            self._error = exc

    def hexdigest(self) -> str:
        if self._hex is None:
            self.close()
            if self._error is not None:
                raise OSError(f"could not read back the data to hash: {self._error}")
            self._hex = self._sha.hexdigest()
        return self._hex


class ThreadedWriter(_Helped):
    """Write chunks to a sink in a helper thread, so writing overlaps receiving and hashing.

    Used for base64 bodies, where the receiving thread decodes and hashes each
    chunk itself while it is still in that core's cache (hashing is the
    costliest step: done where the bytes are, it costs least), and hands the
    decoded chunk to the helper to write.  The same
    rules as :class:`ThreadedSHA256`: at most ``depth`` chunks queued, at
    most ``MAX_HELPERS`` helpers per process, small chunks and
    ``enabled=False`` write in line, chunks must be ``bytes``.

    Errors
    ------
    An exception from ``write`` in the helper (a full disk, say) is kept;
    the helper drops what is queued after it, and the next :meth:`write` or
    :meth:`finish` raises it in the caller's thread.  Always end with
    :meth:`finish` (all written, or raise) or :meth:`close` (stop; use
    ``try/finally``): both wait for the helper.
    """

    NAME = "labnet-writer"

    def __init__(self, write, depth: int = DEPTH, min_threaded: int | None = None, enabled: bool = True):
        super().__init__(depth, min_threaded, enabled)
        self._write = write
        self._error: BaseException | None = None

    def write(self, data) -> None:
        if self._error is not None:
            raise self._error
        self._hand(data, len(data))

    def _work(self, item) -> None:
        if self._error is None:  # after an error, what is still queued is dropped
            try:
                self._write(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                if not self.threaded:
                    raise
                self._error = exc

    def finish(self) -> None:
        """Wait until every chunk is written; raise the helper's error if there was one."""
        self.close()
        if self._error is not None:
            raise self._error
