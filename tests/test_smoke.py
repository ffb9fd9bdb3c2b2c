"""A first end-to-end check per server model; the detailed suites live in the other test files."""

import hashlib

import pytest

from labnet.client import Client

pytestmark = pytest.mark.timeout(60)


def test_upload_list_download_roundtrip(server, client_dirs):
    files, downloads = client_dirs
    src = files / "hello.bin"
    src.write_bytes(b"hello labnet" * 1000)
    with Client(*server.address, timeout=10) as c:
        up = c.upload(src)
        assert (up.name, up.bytes) == ("hello.bin", 12000)
        assert c.list() == [("hello.bin", 12000)]
        down = c.download("hello.bin", downloads)
    assert (downloads / "hello.bin").read_bytes() == src.read_bytes()
    assert up.sha256 == down.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
