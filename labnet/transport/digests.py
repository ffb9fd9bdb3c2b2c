"""Remembered SHA-256 digests of files, so that a sender need not hash a file again.

A sender must put the file's SHA-256 in the trailer after the body.  When it
already knows the digest it skips hashing, and a raw body can then leave by
``sendfile`` (zero-copy: the bytes never enter Python).  Where known digests
come from:

* the server, when it commits an upload: the receiver hashed every byte, so
  the published file's digest is known;
* any sender, after sending a file it had to hash on the way (a file placed
  in ``server_files`` by hand, a client file uploaded for the first time).

A digest belongs to one version of one file.  It is kept

* in memory, per process, keyed by ``(st_dev, st_ino, st_size, st_mtime_ns,
  st_ctime_ns)`` -- writing to a file changes its mtime and ctime, so a
  changed file simply misses;
* for the server also in an extended attribute of the file itself
  (``user.labnet.sha256``, value ``v1 <size> <mtime_ns> <hex>``), so every
  worker process of the process-pool server sees it, it moves with the file
  on the atomic rename and disappears with it on delete or replace.  It is
  used only while the file's size and mtime still match; file systems without
  user xattrs (or files the server may not change) just fall back to memory.

Staleness cannot corrupt anything.  Should a remembered digest ever be wrong
(say a file rewritten in place with the same size *and* its mtime set back),
the *receiver*, which hashes every byte it gets, sees the mismatch and
refuses the body with ``ERR INTEGRITY``: nothing is stored.  The client
forgets a digest the server refused; on the server, touching or re-uploading
the file clears it.

Pure bookkeeping: no sockets or threads here.
"""

from __future__ import annotations

import os
import string

XATTR_NAME = "user.labnet.sha256"
_XATTR_VERSION = "v1"
_HEX = frozenset(string.hexdigits.lower())


def _key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def same_version(a: os.stat_result, b: os.stat_result) -> bool:
    """True if two ``stat`` results show the same, unchanged version of one file."""
    return _key(a) == _key(b)


def _valid(hexdigest) -> bool:
    return isinstance(hexdigest, str) and len(hexdigest) == 64 and set(hexdigest) <= _HEX


class DigestCache:
    """Known SHA-256 digests of file versions (see the module doc).

    ``use_xattr``: also read and write the ``user.labnet.sha256`` attribute
    (the server; the client never writes to the user's files).
    ``max_entries`` bounds the in-memory table (oldest entries go first).
    """

    def __init__(self, use_xattr: bool = False, max_entries: int = 4096):
        self.use_xattr = use_xattr and hasattr(os, "getxattr")
        self.max_entries = max_entries
        self._memory: dict[tuple, str] = {}
        self.hits = self.misses = 0

    def lookup(self, fd: int, st: os.stat_result | None = None) -> str | None:
        """The digest of the open file ``fd`` as it is now (``st``: its ``fstat``), or None."""
        st = os.fstat(fd) if st is None else st
        found = self._memory.get(_key(st))
        if found is None and self.use_xattr:
            found = self._read_xattr(fd, st)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def record(self, fd: int, hexdigest: str, since: os.stat_result | None = None, xattr: bool = True) -> bool:
        """Remember that the open file ``fd``, as it is now, hashes to ``hexdigest``.

        ``since``: the file's ``fstat`` from before it was read to compute the
        digest; nothing is recorded (False) if the file changed since then.
        ``xattr=False``: memory only (say, again after a rename changed the ctime).
        """
        if not _valid(hexdigest):
            raise ValueError(f"not a SHA-256 hex digest: {hexdigest!r}")
        st = os.fstat(fd)
        if since is not None and not same_version(since, st):
            return False
        if self.use_xattr and xattr:
            value = f"{_XATTR_VERSION} {st.st_size} {st.st_mtime_ns} {hexdigest}".encode()
            try:
                os.setxattr(fd, XATTR_NAME, value)
            except OSError:  # no user xattrs here, not our file, read-only...: memory only
                pass
            st = os.fstat(fd)  # setting the attribute changed the ctime
        self._remember(st, hexdigest)
        return True

    def _remember(self, st: os.stat_result, hexdigest: str) -> None:
        memory = self._memory
        memory[_key(st)] = hexdigest
        while len(memory) > self.max_entries:
            try:
                del memory[next(iter(memory))]
            except (KeyError, RuntimeError, StopIteration):  # another thread got there first
                break

    def forget(self, st: os.stat_result) -> None:
        """Drop what is remembered for the file version ``st`` (memory; an xattr goes with its file)."""
        self._memory.pop(_key(st), None)

    @staticmethod
    def _read_xattr(fd: int, st: os.stat_result) -> str | None:
        try:
            value = os.getxattr(fd, XATTR_NAME).decode("ascii")
        except (OSError, UnicodeDecodeError):
            return None
        words = value.split(" ")
        if len(words) != 4 or words[0] != _XATTR_VERSION:
            return None
        if words[1] != str(st.st_size) or words[2] != str(st.st_mtime_ns) or not _valid(words[3]):
            return None
        return words[3]
