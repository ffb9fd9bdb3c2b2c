"""The server's file store: a flat folder where files appear whole or not at all.

Rules
-----
* Names follow :mod:`labnet.protocol.names`; a name that still resolves outside the
  root (a symbolic link planted by hand) is refused as well.
* An upload streams into a temporary file *inside the root* (so the final
  ``os.replace`` is an atomic rename on one file system), named
  ``.upload-<random>.part``: dot-names are never valid names, so temporary
  files are never listed nor downloadable.
* :meth:`Upload.commit` publishes with ``os.replace`` -- only called after the
  whole body arrived and its SHA-256 matched.  :meth:`Upload.abort` (also run
  by the context manager on any exception) removes the temporary file.  Two
  concurrent uploads of one name: the last to commit wins, whole.
* Temporary files left by a server that was killed outright are removed when
  a store is opened on the folder (one server per folder is assumed).

* Known digests (:mod:`labnet.transport.digests`): a committed upload's SHA-256 (the
  receiver computed it) is recorded in the file's ``user.labnet.sha256``
  extended attribute -- set on the temporary file, so it is published by the
  same atomic rename and removed with the file by delete or replace -- and in
  this process's memory.  Downloads of a file with a known digest skip hashing
  and, raw, go out by ``sendfile``.  A file placed in the folder by hand is
  hashed on its first download and remembered.  A stale digest (a file
  changed in place keeping its size and mtime) cannot hand out wrong data:
  the receiving client hashes what it gets and refuses the download with
  ``INTEGRITY``, keeping nothing.

Durability against power loss is *not* attempted (no fsync): the lab cares
about process crashes and disconnects, which the rename already covers.

This module must not import sockets or threads.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.names import check_name
from labnet.transport.digests import DigestCache

TEMP_PREFIX = ".upload-"
TEMP_SUFFIX = ".part"
FILE_MODE = 0o644  # mode of published files (temporary files start private)
DEFAULT_MAX_UPLOAD = 4 * 1024**3  # 4 GiB: generous for a lab, refuses absurd sizes


def _storage_error(exc: OSError, doing: str) -> LocalError:
    reason = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large for this file system",
        errno.EROFS: "file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }.get(exc.errno, exc.strerror or str(exc))
    return LocalError(f"{doing}: {reason}", Code.STORAGE)


class FileStore:
    def __init__(self, root, max_upload: int = DEFAULT_MAX_UPLOAD, clean_temp: bool = True):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_upload = max_upload
        self.digests = DigestCache(use_xattr=True)
        if clean_temp:
            self.remove_stale_temp_files()

    # -- names -------------------------------------------------------------

    def path_for(self, name: str) -> Path:
        """The path of ``name`` in the root; ``PeerError(BAD_NAME)`` if it escapes."""
        check_name(name)
        path = self.root / name
        # A symlink (or anything odd) that resolves elsewhere is not ours to serve.
        if path.resolve().parent != self.root:
            raise PeerError(f"name resolves outside the server folder: {name!r}", Code.BAD_NAME)
        return path

    # -- reading -----------------------------------------------------------

    def list(self) -> list[tuple[str, int]]:
        """Visible regular files as ``(name, size)``, sorted by name."""
        out = []
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    out.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:  # deleted while listing
                    continue
        return sorted(out)

    def open_read(self, name: str):
        """Open ``name`` for reading; returns ``(file, size)``. The size is fixed at open."""
        path = self.path_for(name)
        try:
            f = open(path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise PeerError(f"no such file: {name}", Code.NOT_FOUND) from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot open {name}") from None
        size = os.fstat(f.fileno()).st_size
        return f, size

    def known_digest(self, f) -> tuple[str | None, os.stat_result]:
        """``(sha256 or None, fstat)`` of the open file ``f`` as it is now."""
        st = os.fstat(f.fileno())
        return self.digests.lookup(f.fileno(), st), st

    def remember_digest(self, f, sha256: str, since: os.stat_result) -> None:
        """Record the digest a download computed, if the file is still the version of ``since``."""
        try:
            self.digests.record(f.fileno(), sha256, since=since)
        except OSError:
            pass

    # -- changing ----------------------------------------------------------

    def delete(self, name: str) -> None:
        path = self.path_for(name)
        try:
            if not path.is_file() or path.is_symlink():
                raise PeerError(f"no such file: {name}", Code.NOT_FOUND)
            st = path.stat()
            path.unlink()
            self.digests.forget(st)  # the xattr went with the file
        except FileNotFoundError:
            raise PeerError(f"no such file: {name}", Code.NOT_FOUND) from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot delete {name}") from None

    def check_upload(self, name: str, size: int) -> Path:
        """Refuse an upload before any body byte is read (bad name, too large, no room)."""
        path = self.path_for(name)
        if size > self.max_upload:
            raise PeerError(f"{size} bytes is over this server's limit of {self.max_upload}", Code.TOO_LARGE)
        if path.is_dir():
            raise PeerError(f"{name} is a folder on the server", Code.BAD_NAME)
        free = shutil.disk_usage(self.root).free
        if size > free:
            raise LocalError(f"not enough disk space: {size} bytes needed, {free} free", Code.STORAGE)
        return path

    def begin_upload(self, name: str, size: int) -> Upload:
        path = self.check_upload(name, size)
        try:
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=self.root)
            os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; a published file is an ordinary file
        except OSError as exc:
            raise _storage_error(exc, f"cannot store {name}") from None
        return Upload(name, path, Path(temp), os.fdopen(fd, "wb"), self.digests)

    def temp_files(self) -> list[Path]:
        return sorted(self.root.glob(TEMP_PREFIX + "*" + TEMP_SUFFIX))

    def remove_stale_temp_files(self) -> int:
        removed = 0
        for path in self.temp_files():
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed


class Upload:
    """One upload in progress.  Use as a context manager: leaving it by an exception aborts."""

    def __init__(self, name: str, final: Path, temp: Path, file, digests: DigestCache | None = None):
        self.name = name
        self.digests = digests
        self.final = final
        self.temp = temp
        self._file = file
        self.written = 0
        self.done = False

    def write(self, data) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _storage_error(exc, f"cannot store {self.name}") from None
        self.written += len(data)

    def direct_fd(self) -> int:
        """Flush buffered writes and return the file descriptor, for bytes written without
        :meth:`write` (``splice``, at the descriptor's position); report them with :meth:`wrote_directly`."""
        try:
            self._file.flush()
        except OSError as exc:
            raise _storage_error(exc, f"cannot store {self.name}") from None
        return self._file.fileno()

    def wrote_directly(self, count: int) -> None:
        self.written += count

    def commit(self, sha256: str | None = None) -> None:
        """Publish the file under its name (atomically replacing an older one).

        ``sha256``: the digest the receiver verified; it is recorded with the
        file (see :mod:`labnet.transport.digests`) before the rename makes it visible.
        """
        digests = self.digests if sha256 is not None else None
        try:
            self._file.flush()
            fd = self._file.fileno()
            if digests is not None:
                digests.record(fd, sha256)  # the xattr goes on the temporary file: published with it
                try:
                    digests.forget(os.stat(self.final))  # the version this one replaces
                except OSError:
                    pass
            os.replace(self.temp, self.final)
            self.done = True
            if digests is not None:
                digests.record(fd, sha256, xattr=False)  # memory: the rename changed the ctime
        except OSError as exc:
            self.abort()  # no-op once published
            raise _storage_error(exc, f"cannot store {self.name}") from None
        finally:
            try:
                self._file.close()
            except OSError:
                pass

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc) -> None:
        self.abort()  # no-op after commit
