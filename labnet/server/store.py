"""The server's file store: a flat folder where files appear whole or not at all.

Rules
-----
* Names follow :mod:`labnet.protocol.names`, in their NFC form (every method
  uses the name :func:`~labnet.protocol.names.check_name` returns); a name that
  still resolves outside the root (a symbolic link planted by hand) is refused
  with ``BAD_NAME``.
* The folder is written by others too (students, unzip, other programs), so
  only *regular files* are served: a regular file of the root, or a symbolic
  link that resolves to one (flat, under a valid name).  A folder, FIFO,
  UNIX socket, device, dangling link, link loop or link into a sub-folder is
  refused at once with ``NOT_FOUND`` saying what it is ("not a regular file
  (a FIFO)").  Nothing is opened before ``lstat`` says "regular file", and
  the open itself uses ``O_NONBLOCK | O_NOFOLLOW`` then ``fstat`` (an entry
  swapped in between cannot block a worker, nor be something unchecked).
* :meth:`FileStore.listing` (LIST) shows exactly what :meth:`open_read`
  serves, and counts as ``hidden`` every other entry but dot-names: names
  that break the rule (undecodable bytes, spaces, line breaks, bidi
  controls...) or are not in NFC, and entries that are not regular files.
  Such entries are never opened, replaced or deleted through labnet.
* DELETE removes only a regular file (not a link, not a FIFO); an UPLOAD
  replaces only a regular file or creates a new name, and publishing is a
  rename, which never follows or opens what it replaces.
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
import stat
import tempfile
from pathlib import Path
from typing import NamedTuple

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.names import check_name, is_canonical
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


class Listing(NamedTuple):
    """What LIST shows: the servable files, and how many other entries were left out."""

    files: list[tuple[str, int]]  # (name, size), sorted by name
    hidden: int  # entries that are not dot-names but that labnet will not serve


def _kind(mode: int) -> str:
    """What a non-regular entry is, in words for an error message."""
    for test, words in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a UNIX socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISLNK, "a symbolic link")):  # fmt: skip
        if test(mode):
            return words
    return "an entry of an unknown kind"


def _not_regular(name: str, what: str) -> PeerError:
    return PeerError(f"not a regular file ({what}): {name}", Code.NOT_FOUND)


class _Missing(PeerError):
    """Nothing under that name (it may have been removed a moment ago)."""


def _no_such_file(name: str) -> PeerError:
    return _Missing(f"no such file: {name}", Code.NOT_FOUND)


# Opening for download: O_NONBLOCK so that opening a FIFO swapped in at the last moment
# returns at once instead of waiting for a writer; O_NOFOLLOW so the entry that was
# checked is the one opened; O_NOCTTY so a terminal device never becomes ours.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


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
        """The path of the NFC form of ``name`` in the root; ``PeerError(BAD_NAME)`` if it
        breaks the name rule or resolves outside the root (a symbolic link planted by hand)."""
        name = check_name(name)
        path = self.root / name
        if os.path.islink(path):
            try:
                self._resolve_link(name, path)
            except PeerError as exc:
                if exc.code is Code.BAD_NAME:  # out of the root; other odd links are judged by the caller
                    raise
        return path

    def _resolve_link(self, name: str, path: Path) -> Path:
        """The file of the root that the link ``path`` leads to, or a ``PeerError`` saying
        why it leads nowhere labnet serves (``BAD_NAME`` when out of the root)."""
        try:
            real = Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            raise _not_regular(name, "a dangling symbolic link") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _not_regular(name, "a symbolic link loop") from None
            raise _storage_error(exc, f"cannot open {name}") from None
        if real.parent == self.root:
            # Flat and visible only: a link to a dot-file would hand out a temporary upload.
            if not is_canonical(real.name):
                raise _not_regular(name, "a symbolic link to a file labnet does not serve")
            return real
        if real == self.root:
            raise _not_regular(name, "a symbolic link to the server folder itself")
        if self.root in real.parents:
            raise _not_regular(name, "a symbolic link into a sub-folder")
        raise PeerError(f"name resolves outside the server folder: {name!r}", Code.BAD_NAME)

    def _servable(self, name: str) -> tuple[Path, os.stat_result]:
        """``(path, lstat)`` of the regular file of the root that ``name`` (checked) serves:
        the file itself, or the one its symbolic link leads to.  Nothing is opened."""
        path = self.root / name
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                path = self._resolve_link(name, path)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    raise _not_regular(name, f"a symbolic link to {_kind(st.st_mode)}")
        except FileNotFoundError:
            raise _no_such_file(name) from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot open {name}") from None
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(name, _kind(st.st_mode))
        return path, st

    # -- reading -----------------------------------------------------------

    def listing(self) -> Listing:
        """The servable files as ``(name, size)`` sorted by name, and the count of hidden entries.

        Listed: regular files, and symbolic links leading to one of them, whose
        names follow the name rule in their NFC form -- exactly what
        :meth:`open_read` serves.  Hidden (counted, never touched): every other
        entry except dot-names (hidden by convention, like ``ls``; labnet's own
        temporary files are among them).  Nothing is opened, so a FIFO or a
        device costs one ``lstat``.
        """
        files, hidden = [], 0
        try:
            names = [entry.name for entry in os.scandir(self.root)]
        except OSError as exc:  # the folder itself is gone or unreadable: an ERR line, not a dead connection
            raise _storage_error(exc, "cannot list the server folder") from None
        for name in names:  # undecodable bytes arrive as surrogates, which the rule refuses
            if name.startswith("."):
                continue
            if not is_canonical(name):
                hidden += 1
                continue
            try:
                _, st = self._servable(name)
            except _Missing:  # removed while listing: not there at all
                continue
            except (PeerError, LocalError):  # there, but not servable (or not readable)
                hidden += 1
                continue
            files.append((name, st.st_size))
        return Listing(sorted(files), hidden)

    def list(self) -> list[tuple[str, int]]:
        """The servable files as ``(name, size)``, sorted by name (see :meth:`listing`)."""
        return self.listing().files

    def open_read(self, name: str):
        """Open ``name`` for reading; returns ``(file, size)``. The size is fixed at open.

        Only a regular file (or a symbolic link to one in the root) is opened;
        anything else is refused at once with ``NOT_FOUND`` saying what it is,
        and the open itself cannot block (see ``_READ_FLAGS``).
        """
        name = check_name(name)
        path, _ = self._servable(name)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise _no_such_file(name) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # replaced by a symbolic link since it was checked
                raise _not_regular(name, "a symbolic link") from None
            raise _storage_error(exc, f"cannot open {name}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # replaced since it was checked: judge what we hold
                raise _not_regular(name, _kind(st.st_mode))
            os.set_blocking(fd, True)  # a regular file: plain blocking reads, sendfile and splice
            f = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        return f, st.st_size

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
        """Remove the regular file ``name``; anything else (a link, a FIFO, a folder) is refused
        with ``NOT_FOUND`` and left alone: labnet deletes only what it could have stored."""
        name = check_name(name)
        path, st = self._servable(name)
        if path != self.root / name:
            raise _not_regular(name, "a symbolic link; labnet deletes only regular files")
        try:
            path.unlink()  # never blocks, whatever the entry has become meanwhile
            self.digests.forget(st)  # the xattr went with the file
        except FileNotFoundError:
            raise _no_such_file(name) from None
        except OSError as exc:
            raise _storage_error(exc, f"cannot delete {name}") from None

    def check_upload(self, name: str, size: int) -> Path:
        """Refuse an upload before any body byte is read (bad name, too large, no room, the
        name held by something that is not a regular file); return the final path."""
        name = check_name(name)
        path = self.path_for(name)  # BAD_NAME for a link out of the root
        if size > self.max_upload:
            raise PeerError(f"{size} bytes is over this server's limit of {self.max_upload}", Code.TOO_LARGE)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            mode = None  # a new name
        except OSError as exc:
            raise _storage_error(exc, f"cannot store {name}") from None
        if mode is not None and stat.S_ISDIR(mode):
            raise PeerError(f"{name} is a folder on the server", Code.BAD_NAME)
        if mode is not None and not stat.S_ISREG(mode):
            # Someone else's FIFO, socket, device or link: publishing would replace it under them.
            raise PeerError(f"{name} is {_kind(mode)} on the server; only a regular file can be replaced",
                            Code.BAD_NAME)  # fmt: skip
        free = shutil.disk_usage(self.root).free
        if size > free:
            raise LocalError(f"not enough disk space: {size} bytes needed, {free} free", Code.STORAGE)
        return path

    def begin_upload(self, name: str, size: int | None) -> Upload:
        """Start an upload of ``size`` bytes, or of a size not known in advance (``None``: the students'
        dialects send base64 until a terminator or marker): then ``max_upload`` is enforced as the bytes
        are written (``Upload.write`` raises ``TOO_LARGE``), and the temporary file goes with the error."""
        path = self.check_upload(name, 0 if size is None else size)
        name = path.name  # the NFC form
        try:
            # The PID in the name lets a server remove the file of a worker process that died.
            fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX, dir=self.root)
            os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600; a published file is an ordinary file
        except OSError as exc:
            raise _storage_error(exc, f"cannot store {name}") from None
        limit = self.max_upload if size is None else None
        return Upload(name, path, Path(temp), os.fdopen(fd, "wb"), self.digests, limit=limit)

    def temp_files(self) -> list[Path]:
        return sorted(self.root.glob(TEMP_PREFIX + "*" + TEMP_SUFFIX))

    def remove_temp_files_of(self, pid: int) -> int:
        """Remove the temporary files of uploads that process ``pid`` had in flight (it died)."""
        removed = 0
        for path in self.root.glob(f"{TEMP_PREFIX}{int(pid)}-*{TEMP_SUFFIX}"):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

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

    def __init__(self, name: str, final: Path, temp: Path, file, digests: DigestCache | None = None,
                 limit: int | None = None):  # fmt: skip
        self.name = name
        self.limit = limit  # bytes :meth:`write` accepts in all (an upload of unknown size); None: no check
        self.digests = digests
        self.final = final
        self.temp = temp
        self._file = file
        self.written = 0
        self.done = False

    def write(self, data) -> None:
        if self.limit is not None and self.written + len(data) > self.limit:
            raise PeerError(f"upload of {self.name} is over this server's limit of {self.limit} bytes", Code.TOO_LARGE)
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
                    digests.forget(os.lstat(self.final))  # the version this one replaces (lstat: never follow)
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
