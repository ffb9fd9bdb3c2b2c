"""The file store (labnet.server.store): files appear whole or not at all, and only inside the root."""

from __future__ import annotations

import os
import threading

import pytest

from labnet.errors import Code, LocalError, PeerError
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


def test_list_shows_regular_files_only_sorted(store):
    put(store, "b.txt", b"bb")
    put(store, "a.txt", b"")
    (store.root / "sub").mkdir()
    (store.root / ".hidden").write_bytes(b"h")
    (store.root / "link").symlink_to(store.root / "a.txt")
    assert store.list() == [("a.txt", 0), ("b.txt", 2)]


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
