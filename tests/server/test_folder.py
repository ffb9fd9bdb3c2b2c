"""A server's folder written by others too (issue 10, family 2), served by both server models.

The folder is made by ``make_odd_folder`` below (the store's unit tests in
``test_store.py`` use it too): regular files under every odd name the file
system allows (bytes that are not UTF-8, line breaks, spaces, tabs, a leading
dash, the decomposed spelling of a name, a text-direction override,
invisible-only names), a FIFO, a UNIX socket, character and block
devices (when this process may mknod), a folder, and symbolic links of every
sort (to a file inside, out of the folder, dangling, in a loop, to a folder, to
the FIFO, to a dot-file, into a sub-folder).  Checked against a live server:

* LIST on a raw socket is well-formed: the count in its header is the number of
  lines that follow, and the next reply on the connection is in step;
* ``Client.list()`` shows exactly the servable files, every one downloadable
  with its digest verified, and ``last_list_hidden`` counts the rest;
* a download of every odd entry works or fails at once with the documented
  error, and the connection goes on serving (a FIFO never blocks a worker);
* uploads and deletes never touch what labnet does not serve, and a name is
  stored under its NFC spelling;
* afterwards the server stops on SIGTERM by itself (exit status 0, not killed),
  and the fixture checks that none of its processes is left.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultproxy import Wire, upload_by_hand

from labnet.errors import Code, PeerError, RemoteError
from labnet.protocol.names import is_canonical, name_problem

HEADER = re.compile(r"OK (\d+) files(?: (\d+) hidden)?")


# --------------------------------------------------------------------------
# The odd folder (also used by the store's unit tests, tests/server/test_store.py)
# --------------------------------------------------------------------------

IO_LIMIT = 10.0  # a bound on an operation that must not block at all (a stuck open() never returns)
PLAIN = b"plain file\n"
COMPOSED = b"cafe, composed\n"
CAFE_NFC = "caf\u00e9.txt"
CAFE_NFD = "cafe\u0301.txt"  # looks the same as CAFE_NFC in any listing


@dataclass(frozen=True)
class Odd:
    """One entry of an odd folder and what labnet must make of it.

    ``disk``: its name as created (bytes when not UTF-8); ``make``: ``file``, ``fifo``,
    ``socket``, ``chardev``, ``blockdev``, ``folder`` or ``link`` (to ``target``);
    ``listed``: shown by LIST (otherwise counted as hidden, unless a dot-name);
    ``data``: what a download of the name returns, or ``error``: ``(code, words of the message)``.
    """

    disk: str | bytes
    make: str = "file"
    listed: bool = False
    data: bytes | None = None
    error: tuple[Code, str] | None = None
    target: str = ""

    @property
    def request(self) -> str:
        """The name as a ``str`` (undecodable bytes become surrogates, as os.listdir spells them)."""
        return os.fsdecode(self.disk)

    @property
    def counted(self) -> bool:
        return not self.listed and not self.request.startswith(".")

    @property
    def id(self) -> str:
        return ascii(self.request).strip("'")


def _bad(words: str) -> tuple[Code, str]:
    return (Code.BAD_NAME, words)


def _not_regular(what: str) -> tuple[Code, str]:
    return (Code.NOT_FOUND, f"not a regular file ({what})")


ODD = [
    Odd("plain.txt", listed=True, data=PLAIN),
    Odd("-dash.txt", listed=True, data=b"-"),  # a leading dash is harmless: names never reach a shell
    Odd(CAFE_NFC, listed=True, data=COMPOSED),
    Odd(CAFE_NFD, data=COMPOSED),  # asking for either spelling gets the one (NFC) file
    Odd("e\u0301te\u0301.txt", error=(Code.NOT_FOUND, "no such file")),  # decomposed, no composed twin
    Odd(b"latin1-\xe9.txt", error=_bad("surrogate")),
    Odd(b"\xff\xfe", error=_bad("surrogate")),
    Odd("new\nline.txt", error=_bad("whitespace")),
    Odd("carriage\rreturn.txt", error=_bad("whitespace")),
    Odd("two words.txt", error=_bad("whitespace")),
    Odd("tab\there.txt", error=_bad("whitespace")),
    Odd("trailing-space ", error=_bad("whitespace")),
    Odd("photo\u202egpj.exe", error=_bad("format")),
    Odd("zero\u200bwidth.txt", error=_bad("format")),
    Odd("\u3164", error=_bad("blank-looking")),
    Odd("\u0301", error=_bad("combining mark")),
    Odd("\ue000.txt", error=_bad("private-use")),
    Odd(".dotfile", error=_bad("dot")),
    Odd("fifo", "fifo", error=_not_regular("a FIFO")),
    Odd("socket", "socket", error=_not_regular("a UNIX socket")),
    Odd("chardev", "chardev", error=_not_regular("a character device")),
    Odd("blockdev", "blockdev", error=_not_regular("a block device")),
    Odd("folder", "folder", error=_not_regular("a folder")),
    Odd("link-in", "link", target="plain.txt", listed=True, data=PLAIN),
    Odd("link-out", "link", target="../outside/secret.txt", error=_bad("outside")),
    Odd("link-dangling", "link", target="missing.txt", error=_not_regular("a dangling symbolic link")),
    Odd("loop-a", "link", target="loop-b", error=_not_regular("a symbolic link loop")),
    Odd("loop-b", "link", target="loop-a", error=_not_regular("a symbolic link loop")),
    Odd("link-folder", "link", target="folder", error=_not_regular("a symbolic link to a folder")),
    Odd("link-fifo", "link", target="fifo", error=_not_regular("a symbolic link to a FIFO")),
    Odd("link-dot", "link", target=".dotfile", error=(Code.NOT_FOUND, "does not serve")),
    Odd("link-bad-name", "link", target="two words.txt", error=(Code.NOT_FOUND, "does not serve")),
    Odd("link-sub", "link", target="folder/inner.txt", error=(Code.NOT_FOUND, "sub-folder")),
    Odd("link-root", "link", target=".", error=(Code.NOT_FOUND, "server folder itself")),
]
ODD_IDS = [o.id for o in ODD]
FIFOS = ("fifo",)
DEVICES = {"chardev": (stat.S_IFCHR, os.makedev(1, 3)), "blockdev": (stat.S_IFBLK, os.makedev(7, 0))}


def make_odd_folder(root: Path) -> list[Odd]:
    """Fill ``root`` (an empty folder; ``root/../outside`` is made too) with the entries of
    ``ODD``; returns those made (devices need the right to mknod: root, usually)."""
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.txt").write_bytes(b"top secret")
    made = []
    for o in ODD:
        path = os.path.join(os.fsencode(root), os.fsencode(o.disk))
        if o.make == "file":
            with open(path, "wb") as f:
                f.write(o.data if o.listed and o.data is not None else b"odd: " + os.fsencode(o.disk))
        elif o.make == "fifo":
            os.mkfifo(path)
        elif o.make == "socket":
            os.mknod(path, stat.S_IFSOCK | 0o600)  # what bind() leaves behind, without a path-length limit
        elif o.make in DEVICES:
            kind, dev = DEVICES[o.make]
            try:
                os.mknod(path, kind | 0o600, dev)
            except PermissionError:
                continue
        elif o.make == "folder":
            os.mkdir(path)
            (root / o.request / "inner.txt").write_bytes(b"inner")
        else:
            os.symlink(o.target, path)
        made.append(o)
    (root / CAFE_NFC).write_bytes(COMPOSED)  # the regular file behind both spellings
    return made


def snapshot(root: Path) -> dict[bytes, tuple[int, int]]:
    """Every entry of ``root`` (bytes names) with its inode and type: what "never touched" means."""
    return {n: (os.lstat(os.path.join(os.fsencode(root), n)).st_ino,
                stat.S_IFMT(os.lstat(os.path.join(os.fsencode(root), n)).st_mode))
            for n in os.listdir(os.fsencode(root))}  # fmt: skip


def promptly(fn, root: Path):
    """``fn()``'s result (or its exception), run in a helper thread; fails the test if it is still
    running after IO_LIMIT s -- blocked in open() on a FIFO --, after opening the FIFOs of
    ``root`` for writing so that the stuck thread can end."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(IO_LIMIT)
    if thread.is_alive():
        for fifo in FIFOS:
            try:
                os.close(os.open(root / fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer: open() returns
            except OSError:
                pass
        thread.join(IO_LIMIT)
        pytest.fail(f"still blocked after {IO_LIMIT:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# --------------------------------------------------------------------------
# Served by a live server
# --------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def odd_server(start_server, model, server_root):
    """``(server, made)``: a running server of each model on a folder full of odd entries."""
    made = make_odd_folder(server_root)
    return start_server(model, workers=2, root=server_root), made


def servable(made: list[Odd]) -> list[tuple[str, int]]:
    return sorted((o.request, len(o.data)) for o in made if o.listed)


def hidden_count(made: list[Odd]) -> int:
    return sum(o.counted for o in made)


def test_list_on_the_wire_is_well_formed_and_keeps_the_stream_in_step(odd_server):
    srv, made = odd_server
    with Wire(srv.address, timeout=IO_LIMIT) as w:
        w.send(b"LIST\r\nDOWNLOAD plain.txt raw\r\nQUIT\r\n")  # pipelined: an extra LIST line would show
        header = HEADER.fullmatch(w.line())
        assert header, "LIST must answer with its header, whatever the folder holds"
        lines = [w.line() for _ in range(int(header[1]))]
        for line in lines:
            size, _, name = line.partition(" ")
            assert size.isdigit() and is_canonical(name), line
        assert [(line.partition(" ")[2], int(line.partition(" ")[0])) for line in lines] == servable(made)
        assert int(header[2] or 0) == hidden_count(made)
        assert w.line() == f"OK {len(PLAIN)} raw {len(PLAIN)}"  # the next reply: still in step
        assert w.read_exact(len(PLAIN)) == PLAIN
        assert w.line() == f"SHA256 {sha(PLAIN)}"
        assert w.line() == "OK BYE"
        assert w.read_to_eof() == b""


def test_client_list_shows_what_can_be_downloaded_and_counts_the_rest(odd_server, tmp_path):
    srv, made = odd_server
    with srv.client(timeout=IO_LIMIT) as c:
        files = c.list()
        assert files == servable(made)
        assert c.last_list_hidden == hidden_count(made)
        for name, size in files:  # the promise of LIST: everything listed can be downloaded
            result = c.download(name, tmp_path / "down", encoding="raw")
            expected = next(o.data for o in made if o.request == name)
            assert result.bytes == size and result.sha256 == sha(expected)
            assert (tmp_path / "down" / name).read_bytes() == expected
        assert c.list() == files


UNTYPABLE = "untypable"


def wire_outcome(o: Odd):
    """What the server answers to ``DOWNLOAD <name> raw`` typed on a raw connection: ``None``
    (served), ``(code, words)``, or UNTYPABLE (a line break would end the request line there)."""
    if "\n" in o.request:
        return UNTYPABLE
    if isinstance(o.disk, bytes):
        return (Code.BAD_REQUEST, "UTF-8")  # the request line itself is refused
    if " " in o.request:
        return (Code.BAD_REQUEST, "usage")  # a space makes two words
    return o.error


def test_downloading_every_odd_entry_works_or_fails_at_once(odd_server):
    srv, made = odd_server
    wrong = []
    with Wire(srv.address, timeout=IO_LIMIT) as w:  # a blocked worker would time this out
        for o in made:
            expected = wire_outcome(o)
            if expected == UNTYPABLE:
                continue
            name = o.disk if isinstance(o.disk, bytes) else o.request.encode()
            w.send(b"DOWNLOAD " + name + b" raw\r\n")
            reply = w.line()
            if expected is None:  # served
                ok = reply == f"OK {len(o.data)} raw {len(o.data)}"
                ok = ok and w.read_exact(len(o.data)) == o.data and w.line() == f"SHA256 {sha(o.data)}"
            else:
                ok = reply.startswith(f"ERR {expected[0].value} ") and expected[1] in reply
            if not ok:
                wrong.append((o.id, expected, reply))
        w.send(b"DOWNLOAD plain.txt raw\r\n")  # the same connection, after every refusal
        assert w.line() == f"OK {len(PLAIN)} raw {len(PLAIN)}"
    assert not wrong


def test_the_client_gets_each_odd_entry_or_a_typed_error(odd_server, tmp_path):
    srv, made = odd_server
    dest = tmp_path / "down"
    with srv.client(timeout=IO_LIMIT) as c:
        for o in made:
            if name_problem(o.request) is not None:  # refused before anything is sent
                with pytest.raises(PeerError) as local:
                    c.download(o.request, dest)
                assert local.value.code is Code.BAD_NAME
                continue
            if o.error is None:
                result = c.download(o.request, dest)
                assert Path(result.path).read_bytes() == o.data
                assert result.sha256 == sha(o.data)
                continue
            with pytest.raises(RemoteError) as remote:
                c.download(o.request, dest)
            assert remote.value.code is o.error[0] and o.error[1] in remote.value.message, o.id
        assert c.list() == servable(made)  # the connection and the server go on
    assert sorted(p.name for p in dest.iterdir()) == sorted({CAFE_NFC, "plain.txt", "-dash.txt", "link-in"})


def test_a_fifo_download_returns_at_once_and_the_server_still_stops_by_itself(odd_server):
    srv, _ = odd_server
    with Wire(srv.address, timeout=IO_LIMIT) as w, Wire(srv.address, timeout=IO_LIMIT) as other:
        w.send(b"DOWNLOAD fifo raw\r\nDOWNLOAD link-fifo\r\nDOWNLOAD fifo\r\n")
        assert w.line().startswith("ERR NOT_FOUND not a regular file (a FIFO)")
        assert w.line().startswith("ERR NOT_FOUND not a regular file (a symbolic link to a FIFO)")
        assert w.line().startswith("ERR NOT_FOUND not a regular file (a FIFO)")
        other.send(b"DOWNLOAD fifo raw\r\n")  # both workers: neither is stuck
        assert other.line().startswith("ERR NOT_FOUND ")
    assert srv.stop() == 0, srv.log()[-2000:]  # exited on SIGTERM by itself (a kill gives -9)
    assert not srv.running


def test_uploads_and_deletes_leave_what_labnet_does_not_serve_alone(odd_server, server_root, tmp_path):
    srv, made = odd_server
    src = tmp_path / "new.bin"
    src.write_bytes(b"new")
    names = {o.request for o in made}
    before = snapshot(server_root)
    with srv.client(timeout=IO_LIMIT) as c:
        for name in ("fifo", "socket", "folder", "link-in", "link-fifo", "link-dangling", "loop-a"):
            with pytest.raises(RemoteError) as info:
                c.upload(src, name=name)
            assert info.value.code is Code.BAD_NAME, name
            with pytest.raises(RemoteError) as info:
                c.delete(name)
            assert info.value.code is Code.NOT_FOUND, name
        for name in ("chardev", "blockdev"):
            if name in names:
                with pytest.raises(RemoteError) as info:
                    c.delete(name)
                assert info.value.code is Code.NOT_FOUND
        with pytest.raises(RemoteError) as info:
            c.delete("link-out")
        assert info.value.code is Code.BAD_NAME and "outside" in info.value.message
        assert snapshot(server_root) == before  # nothing touched
        # One name, one file: the decomposed spelling replaces the composed file, wherever it is spelt.
        assert c.upload(src, name=CAFE_NFD).name == CAFE_NFC
    assert upload_by_hand(srv.address, CAFE_NFD, 3, "raw", b"NFD", sha(b"NFD"), 0) == \
        f"OK STORED {CAFE_NFC} 3 {sha(b'NFD')}\r\n".encode()  # fmt: skip
    assert (server_root / CAFE_NFC).read_bytes() == b"NFD"
    assert (server_root / CAFE_NFD).read_bytes() == b"odd: " + os.fsencode(CAFE_NFD)  # never touched
    with srv.client(timeout=IO_LIMIT) as c:
        assert (CAFE_NFC, 3) in c.list() and CAFE_NFD not in dict(c.list())
