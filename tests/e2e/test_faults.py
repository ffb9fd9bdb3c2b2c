"""Resource failures and limits (issue 5): size limit before any body byte; disk full (ENOSPC)
and a read-only folder give ``ERR STORAGE`` with a clear message, remove the temporary file,
leave the older version intact, and the server keeps serving downloads.

The small file system is a 1 MiB tmpfs mounted for the test (we are root on the lab
machines); where mounting is not permitted those tests skip and say why.  The file-size
limit test (``RLIMIT_FSIZE`` through ``prlimit``, giving EFBIG) needs no privileges.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess

import pytest
from faultproxy import Wire, folder_state, temp_files, wait_for

from labnet.client import Client
from labnet.errors import Code, RemoteError
from labnet.measure.launcher import BackgroundServer
from labnet.procutil import alive

pytestmark = pytest.mark.timeout(60)


def _failed(srv, verb: str) -> int:
    with Client(*srv.address, timeout=10, wait_timeout=10) as c:
        return c.stats()["verbs"][verb]["failed"]


# ----------------------------------------------------------------------------
# Size limit
# ----------------------------------------------------------------------------


def test_size_limit_is_checked_before_any_body_byte(start_server, model, client_dirs):
    files, _ = client_dirs
    srv = start_server(model, workers=1, max_upload=1000)
    with Wire(srv.address) as w:
        # Only the request line is sent: the refusal cannot depend on body bytes.
        w.send(b"UPLOAD big.bin 1001 raw\r\n")
        reply = w.line()
        assert reply.startswith("ERR TOO_LARGE ") and "1000" in reply, reply
        assert temp_files(srv.root) == []
        w.send(b"UPLOAD huge.bin 999999999999999 b64\r\n")
        assert w.line().startswith("ERR TOO_LARGE ")
        # The connection is still in sync: an upload at the limit works on it.
        body = os.urandom(1000)
        w.send(b"UPLOAD ok.bin 1000 raw\r\n")
        assert w.line() == "OK SEND 1000"
        w.send(body + f"SHA256 {hashlib.sha256(body).hexdigest()}\r\n".encode())
        assert w.line().startswith("OK STORED ok.bin 1000 ")
    (files / "big.bin").write_bytes(b"x" * 1001)
    with Client(*srv.address, timeout=10) as c:
        with pytest.raises(RemoteError) as info:
            c.upload(files / "big.bin")
        assert info.value.code == Code.TOO_LARGE
        assert c.list() == [("ok.bin", 1000)]  # same client connection, still usable
    assert folder_state(srv.root) == {"ok.bin": body}


# ----------------------------------------------------------------------------
# A tiny file system
# ----------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs, mounted for this test only and always unmounted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); not available here")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "labnet-tiny", str(mnt)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _fill(path) -> int:
    """Fill the file system holding ``path`` until ENOSPC; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    block, written = b"\0" * 65536, 0
    try:
        for _ in range(10_000):  # bounded: the file system is 1 MiB
            written += os.write(fd, block)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return written


def test_disk_full_during_upload(start_server, model, client_dirs, tiny_fs):
    files, downloads = client_dirs
    old, new = os.urandom(100_000), os.urandom(600_000)
    (files / "keep.bin").write_bytes(old)
    srv = start_server(model, workers=2, root=tiny_fs, idle_timeout=30)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "keep.bin")
    (files / "keep.bin").write_bytes(new)
    filler = tiny_fs / ".filler"  # a dot-name: never listed by the server
    filled = []

    def fill_after_first_chunk(n):
        if not filled:  # the body is under way and passed the free-space check: now the disk fills up
            filled.append(_fill(filler))

    with Client(*srv.address, timeout=10) as c:
        with pytest.raises(RemoteError) as info:
            c.upload(files / "keep.bin", progress=fill_after_first_chunk)
        assert filled and filled[0] > 0
        assert info.value.code == Code.STORAGE
        assert "disk full" in info.value.message, info.value.message

        wait_for(lambda: _failed(srv, "UPLOAD") == 1, 10, "the server to count the failed upload")
        assert temp_files(tiny_fs) == []
        # Still full, the server keeps serving: listing and downloads work, the old version is intact.
        assert c.list() == [("keep.bin", len(old))]
        c.download("keep.bin", downloads)
        assert (downloads / "keep.bin").read_bytes() == old
        # Refused before any body byte when the space is known to be missing.
        with pytest.raises(RemoteError) as info:
            c.upload(files / "keep.bin", name="other.bin")
        assert info.value.code == Code.STORAGE and "disk space" in info.value.message
        assert c.list() == [("keep.bin", len(old))]

    filler.unlink()
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "keep.bin", name="after.bin")  # space again: uploads work again
        assert c.list() == [("after.bin", len(new)), ("keep.bin", len(old))]
    assert folder_state(tiny_fs) == {"after.bin": new, "keep.bin": old}


def test_read_only_folder(start_server, model, client_dirs, tiny_fs):
    files, downloads = client_dirs
    old = os.urandom(50_000)
    (files / "keep.bin").write_bytes(old)
    srv = start_server(model, workers=2, root=tiny_fs, idle_timeout=30)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "keep.bin")
    (files / "keep.bin").write_bytes(os.urandom(60_000))
    r = subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {r.stderr.strip()}")
    try:
        with Client(*srv.address, timeout=10) as c:
            with pytest.raises(RemoteError) as info:
                c.upload(files / "keep.bin")
            assert info.value.code == Code.STORAGE
            assert "read-only" in info.value.message, info.value.message
            with pytest.raises(RemoteError) as info:
                c.delete("keep.bin")
            assert info.value.code == Code.STORAGE and "read-only" in info.value.message
            c.download("keep.bin", downloads)  # reading still works
            assert (downloads / "keep.bin").read_bytes() == old
            assert c.list() == [("keep.bin", len(old))]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], capture_output=True, timeout=30)
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == [("keep.bin", len(old))]
    assert folder_state(tiny_fs) == {"keep.bin": old}


# ----------------------------------------------------------------------------
# A file-size limit (EFBIG), no privileges needed
# ----------------------------------------------------------------------------


class _LimitedServer(BackgroundServer):
    """A background server started under ``prlimit --fsize=N`` (prlimit execs: same PID)."""

    def __init__(self, *args, fsize: int, **kw):
        super().__init__(*args, **kw)
        self.fsize = fsize

    def command(self) -> list[str]:
        return ["prlimit", f"--fsize={self.fsize}", "--", *super().command()]


def test_file_size_limit_during_upload(model, client_dirs, tmp_path):
    if shutil.which("prlimit") is None:
        pytest.skip("prlimit(1) is not installed: cannot start a server under RLIMIT_FSIZE")
    files, downloads = client_dirs
    root = tmp_path / "server_files"
    root.mkdir()
    old = os.urandom(100_000)
    (files / "keep.bin").write_bytes(old)
    (files / "big.bin").write_bytes(os.urandom(500_000))
    srv = _LimitedServer(model, workers=2, root=root, idle_timeout=30, fsize=200_000)
    try:
        srv.start()
        pids = srv.pids()
        with Client(*srv.address, timeout=10) as c:
            c.upload(files / "keep.bin")
            with pytest.raises(RemoteError) as info:
                c.upload(files / "big.bin", name="keep.bin")
            assert info.value.code == Code.STORAGE
            assert "too large" in info.value.message, info.value.message
        wait_for(lambda: _failed(srv, "UPLOAD") == 1, 10, "the server to count the failed upload")
        assert temp_files(root) == []
        with Client(*srv.address, timeout=10) as c:
            assert c.list() == [("keep.bin", len(old))]
            c.download("keep.bin", downloads)
        assert (downloads / "keep.bin").read_bytes() == old
        assert folder_state(root) == {"keep.bin": old}
    finally:
        srv.stop()
    assert not [p for p in pids if alive(p)]
