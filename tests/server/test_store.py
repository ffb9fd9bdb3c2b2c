"""The file store (labnet.server.store): files appear whole or not at all, and only inside the root;
of a folder others write to, only regular files with valid names are listed, opened, replaced or deleted."""

from __future__ import annotations

import os
import shutil
import stat
import threading

import pytest
from test_folder import CAFE_NFC, CAFE_NFD, ODD, ODD_IDS, Odd, make_odd_folder, promptly, snapshot

from labnet.errors import Code, LocalError, PeerError
from labnet.protocol.names import check_name
from labnet.server.store import TEMP_PREFIX, TEMP_SUFFIX, FileStore


@pytest.fixture
def store(tmp_path) -> FileStore:
    return FileStore(tmp_path / "root")


def entries(store: FileStore) -> list[str]:
    return sorted(os.listdir(store.root))


def put(store: FileStore, name: str, data: bytes) -> None:
    with store.begin_upload(name, len(data)) as up:
        up.write(data)
        up.commit()


def test_root_is_created_and_resolved(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    store = FileStore(tmp_path / "link")
    assert store.root == target.resolve()
    assert FileStore(tmp_path / "a" / "b").root.is_dir()


def test_publish_only_on_commit(store):
    up = store.begin_upload("f.txt", 5)
    up.write(b"hel")
    assert not (store.root / "f.txt").exists()
    assert store.list() == []
    assert len(store.temp_files()) == 1 and up.temp.exists()
    assert up.temp.name.startswith(TEMP_PREFIX) and up.temp.name.endswith(TEMP_SUFFIX)
    up.write(b"lo")
    assert up.written == 5
    up.commit()
    assert (store.root / "f.txt").read_bytes() == b"hello"
    assert store.temp_files() == []
    assert store.list() == [("f.txt", 5)]
    up.abort()  # after commit: a no-op, the file stays
    assert (store.root / "f.txt").exists()


def test_abort_removes_the_temporary_file(store):
    up = store.begin_upload("f.txt", 5)
    up.write(b"he")
    up.abort()
    up.abort()  # idempotent
    assert entries(store) == []


def test_exception_inside_the_context_aborts(store):
    with pytest.raises(RuntimeError), store.begin_upload("f.txt", 3) as up:
        up.write(b"ab")
        raise RuntimeError("connection lost")
    assert entries(store) == []


def test_leaving_the_context_without_commit_aborts(store):
    with store.begin_upload("f.txt", 3) as up:
        up.write(b"abc")
    assert entries(store) == []


def test_replace_keeps_the_old_file_until_the_new_one_is_complete(store):
    put(store, "f.txt", b"old content")
    with store.begin_upload("f.txt", 3) as up:
        up.write(b"new")
        assert (store.root / "f.txt").read_bytes() == b"old content"
        up.commit()
    assert (store.root / "f.txt").read_bytes() == b"new"
    with pytest.raises(OSError), store.begin_upload("f.txt", 3) as up:
        up.write(b"xy")
        raise OSError("disconnect")
    assert (store.root / "f.txt").read_bytes() == b"new"
    assert entries(store) == ["f.txt"]


def test_temp_files_are_never_listed_nor_downloadable_nor_deletable(store):
    up = store.begin_upload("f.txt", 1)
    temp_name = up.temp.name
    assert store.list() == []
    for op in (store.open_read, store.delete, store.path_for):
        with pytest.raises(PeerError) as info:
            op(temp_name)
        assert info.value.code is Code.BAD_NAME
    up.abort()


def test_stale_temp_files_are_removed_when_a_store_opens(tmp_path):
    root = tmp_path / "root"
    store = FileStore(root)
    up = store.begin_upload("f.txt", 1)  # a server killed mid-upload leaves this behind
    up.write(b"x")
    (root / "keep.txt").write_bytes(b"k")
    (root / ".other-dotfile").write_bytes(b"d")
    assert len(FileStore(root, clean_temp=False).temp_files()) == 1
    FileStore(root)
    assert sorted(os.listdir(root)) == [".other-dotfile", "keep.txt"]


def test_list_shows_servable_files_only_sorted(store):
    put(store, "b.txt", b"bb")
    put(store, "a.txt", b"")
    (store.root / "sub").mkdir()
    (store.root / ".hidden").write_bytes(b"h")
    (store.root / "link").symlink_to(store.root / "b.txt")  # a link to a file of the folder is served
    assert store.list() == [("a.txt", 0), ("b.txt", 2), ("link", 2)]
    assert store.listing() == ([("a.txt", 0), ("b.txt", 2), ("link", 2)], 1)  # the folder; not the dot-file


def test_open_read_and_missing_files(store):
    put(store, "f.bin", b"12345")
    f, size = store.open_read("f.bin")
    with f:
        assert size == 5 and f.read() == b"12345"
    for name in ("missing", "sub"):
        (store.root / "sub").mkdir(exist_ok=True)
        with pytest.raises(PeerError) as info:
            store.open_read(name)
        assert info.value.code is Code.NOT_FOUND


def test_delete(store):
    put(store, "f.bin", b"x")
    store.delete("f.bin")
    assert entries(store) == []
    (store.root / "sub").mkdir()
    for name in ("f.bin", "sub"):
        with pytest.raises(PeerError) as info:
            store.delete(name)
        assert info.value.code is Code.NOT_FOUND
    assert entries(store) == ["sub"]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", "a\\b", ".", "..", "a\x00b", "a\r\nb", ""])
def test_bad_names_are_refused_everywhere(store, name):
    for op in (store.open_read, store.delete, lambda n: store.begin_upload(n, 1)):
        with pytest.raises(PeerError) as info:
            op(name)
        assert info.value.code is Code.BAD_NAME
    assert entries(store) == []


def test_symlink_escaping_the_root_is_refused(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    (store.root / "evil").symlink_to(secret)
    (store.root / "evil_dir").symlink_to(tmp_path)
    for op in (store.open_read, store.delete, lambda n: store.begin_upload(n, 1)):
        with pytest.raises(PeerError) as info:
            op("evil")
        assert info.value.code is Code.BAD_NAME and "outside" in info.value.message
    assert store.list() == []
    assert secret.read_bytes() == b"top secret"
    assert (store.root / "evil").is_symlink()
    assert store.temp_files() == []


def test_upload_limits(tmp_path):
    store = FileStore(tmp_path / "root", max_upload=100)
    store.check_upload("ok", 100)
    with pytest.raises(PeerError) as info:
        store.begin_upload("big", 101)
    assert info.value.code is Code.TOO_LARGE
    (store.root / "folder").mkdir()
    with pytest.raises(PeerError) as info:
        store.begin_upload("folder", 1)
    assert info.value.code is Code.BAD_NAME
    huge = FileStore(tmp_path / "root", max_upload=10**18)
    with pytest.raises(LocalError) as info:
        huge.begin_upload("huge", 10**17)  # more than any test disk holds
    assert info.value.code is Code.STORAGE and "disk space" in info.value.message
    assert store.temp_files() == []


def test_write_error_is_a_storage_error_and_leaves_nothing(store):
    up = store.begin_upload("f.bin", 10)
    up._file.close()
    up._file = open("/dev/full", "wb", buffering=0)  # every write: ENOSPC
    with pytest.raises(LocalError) as info, up:
        up.write(b"0123456789")
    assert info.value.code is Code.STORAGE and "disk full" in info.value.message
    assert entries(store) == []


def test_commit_failure_is_a_storage_error_and_removes_the_temp_file(store):
    up = store.begin_upload("f.bin", 1)
    up.write(b"x")
    (store.root / "f.bin").mkdir()  # a folder appeared under the name meanwhile
    (store.root / "f.bin" / "inside").write_bytes(b"")
    with pytest.raises(LocalError) as info:
        up.commit()
    assert info.value.code is Code.STORAGE
    assert store.temp_files() == []


def test_interleaved_uploads_of_one_name_last_commit_wins_whole(store):
    a = store.begin_upload("f.bin", 6)
    b = store.begin_upload("f.bin", 6)
    a.write(b"AAA")
    b.write(b"BBB")
    a.write(b"AAA")
    b.write(b"BBB")
    b.commit()
    assert (store.root / "f.bin").read_bytes() == b"BBBBBB"
    a.commit()
    assert (store.root / "f.bin").read_bytes() == b"AAAAAA"
    assert entries(store) == ["f.bin"]


def test_concurrent_uploads_of_one_name_never_mix(store):
    """Many threads upload different contents under one name; readers only ever see one whole upload."""
    size, writers, rounds = 64 * 1024, 6, 5
    contents = {bytes([65 + i]) * size for i in range(writers)}
    seen: set[bytes] = set()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for _ in range(rounds):
                with store.begin_upload("shared.bin", size) as up:
                    for _ in range(0, size, 4096):
                        up.write(bytes([65 + i]) * 4096)
                    up.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        while not stop.is_set():
            try:
                f, n = store.open_read("shared.bin")
            except PeerError:
                continue
            with f:
                seen.add(f.read())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    r.join(60)
    assert not errors
    assert (store.root / "shared.bin").read_bytes() in contents
    assert seen and seen <= contents  # never a mix, never a partial file
    assert entries(store) == ["shared.bin"]


# --------------------------------------------------------------------------
# A folder written by others too (issue 10, family 2): every kind of entry and
# every odd name the file system allows.  The folder (ODD, make_odd_folder) is
# defined in tests/server/test_folder.py, which serves it over the wire.
# --------------------------------------------------------------------------


@pytest.fixture
def odd(tmp_path):
    """``(store, made)``: a store on a folder holding every entry of ``ODD`` that could be made."""
    root = tmp_path / "root"
    root.mkdir()
    made = make_odd_folder(root)
    return FileStore(root), made


def _made(odd, entry: Odd) -> Odd:
    if entry not in odd[1]:
        pytest.skip(f"cannot make a {entry.make} here (mknod needs privileges)")
    return entry


def test_listing_of_an_odd_folder_shows_what_is_served_and_counts_the_rest(odd):
    store, made = odd
    listing = store.listing()
    assert listing.files == sorted((o.request, len(o.data)) for o in made if o.listed)
    assert listing.hidden == sum(o.counted for o in made) > 20
    assert store.list() == listing.files


@pytest.mark.parametrize("entry", ODD, ids=ODD_IDS)
def test_open_read_serves_or_refuses_each_entry_at_once(odd, entry):
    store, _ = odd
    _made(odd, entry)
    if entry.error is None:
        f, size = promptly(lambda: store.open_read(entry.request), store.root)
        with f:
            assert (f.read(), size) == (entry.data, len(entry.data))
            assert os.get_blocking(f.fileno())  # O_NONBLOCK served the open only
        return
    with pytest.raises(PeerError) as info:
        promptly(lambda: store.open_read(entry.request), store.root)
    assert info.value.code is entry.error[0]
    assert entry.error[1] in info.value.message


@pytest.mark.parametrize("entry", ODD, ids=ODD_IDS)
def test_delete_removes_only_a_regular_file_with_a_valid_name(odd, entry):
    store, _ = odd
    _made(odd, entry)
    before = snapshot(store.root)
    if entry.make == "file" and entry.error is None:
        promptly(lambda: store.delete(entry.request), store.root)
        gone = os.fsencode(check_name(entry.request))  # the NFC spelling is the one name
        assert snapshot(store.root) == {n: v for n, v in before.items() if n != gone}
        return
    expected = (Code.NOT_FOUND, "symbolic link") if entry.listed else entry.error
    with pytest.raises(PeerError) as info:
        promptly(lambda: store.delete(entry.request), store.root)
    assert info.value.code is expected[0] and expected[1] in info.value.message
    assert snapshot(store.root) == before  # never touched


UPLOAD_REFUSED = {"fifo": "a FIFO", "socket": "a UNIX socket", "chardev": "a character device",
                  "blockdev": "a block device", "folder": "a folder", "link": "a symbolic link"}  # fmt: skip


@pytest.mark.parametrize("entry", ODD, ids=ODD_IDS)
def test_upload_replaces_only_a_regular_file_and_publishes_the_nfc_name(odd, entry):
    store, _ = odd
    _made(odd, entry)
    before = snapshot(store.root)
    if entry.error is not None and entry.error[0] is Code.BAD_NAME:
        refused = entry.error
    elif entry.make in UPLOAD_REFUSED:
        refused = (Code.BAD_NAME, UPLOAD_REFUSED[entry.make])
    else:
        refused = None
    if refused is not None:
        with pytest.raises(PeerError) as info:
            store.begin_upload(entry.request, 3)
        assert info.value.code is refused[0] and refused[1] in info.value.message
        assert snapshot(store.root) == before
        return
    put(store, entry.request, b"new")
    name = check_name(entry.request)
    assert (store.root / name).read_bytes() == b"new" and not (store.root / name).is_symlink()
    after = snapshot(store.root)
    assert {n: v for n, v in after.items() if n != os.fsencode(name)} == {
        n: v for n, v in before.items() if n != os.fsencode(name)}  # fmt: skip
    assert (name, 3) in store.list()


def test_a_fifo_made_under_the_name_during_an_upload_is_replaced_not_opened(store):
    up = store.begin_upload("late.bin", 3)
    up.write(b"abc")
    os.mkfifo(store.root / "late.bin")  # another program, between the check and the publish
    promptly(up.commit, store.root)
    assert (store.root / "late.bin").read_bytes() == b"abc"
    assert store.temp_files() == []


@pytest.mark.parametrize("swap", ["fifo", "symlink"])
def test_open_read_judges_what_it_opened_not_what_it_looked_at(store, monkeypatch, swap, tmp_path):
    """Another program replaces the file between the store's look (lstat) and its open: the
    open must neither block (a FIFO) nor follow (a link), and must refuse what it got."""
    put(store, "f.bin", b"data")
    path = store.root / "f.bin"
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    real_lstat = os.lstat

    def lstat_then_swap(p, *a, **kw):
        st = real_lstat(p, *a, **kw)
        if os.fspath(p) == os.fspath(path) and stat.S_ISREG(st.st_mode):
            stand_in = store.root / ".swap"
            os.mkfifo(stand_in) if swap == "fifo" else os.symlink(tmp_path / "secret.txt", stand_in)
            os.replace(stand_in, path)
        return st

    monkeypatch.setattr(os, "lstat", lstat_then_swap)
    with pytest.raises(PeerError) as info:
        promptly(lambda: store.open_read("f.bin"), store.root)
    monkeypatch.undo()
    assert info.value.code is Code.NOT_FOUND
    assert ("a FIFO" if swap == "fifo" else "a symbolic link") in info.value.message


def test_a_decomposed_request_reaches_the_composed_file_only(store):
    (store.root / CAFE_NFD).write_bytes(b"decomposed, by hand")
    with pytest.raises(PeerError) as info:
        store.open_read(CAFE_NFD)
    assert info.value.code is Code.NOT_FOUND  # asked as NFC: the NFD entry is another name
    put(store, CAFE_NFD, b"uploaded")  # stored under the NFC spelling
    assert sorted(os.listdir(store.root)) == sorted([CAFE_NFC, CAFE_NFD])
    assert (store.root / CAFE_NFD).read_bytes() == b"decomposed, by hand"  # never touched
    assert store.listing() == ([(CAFE_NFC, 8)], 1)
    assert store.path_for(CAFE_NFD) == store.root / CAFE_NFC
    f, size = store.open_read(CAFE_NFD)
    with f:
        assert f.read() == b"uploaded"


def test_listing_a_folder_that_is_gone_is_a_storage_error(store):
    shutil.rmtree(store.root)
    with pytest.raises(LocalError) as info:
        store.listing()
    assert info.value.code is Code.STORAGE
