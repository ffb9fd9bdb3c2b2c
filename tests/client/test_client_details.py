"""Client details: one silent retry when the server closed an idle connection under our request,
and published files (server and client side) that are ordinary 0644 files."""

from __future__ import annotations

import socket
import stat
import threading

import pytest

from labnet.client import Client
from labnet.errors import Code, RemoteError

pytestmark = pytest.mark.timeout(60)


class ScriptedServer:
    """Speaks just enough protocol: every connection is greeted, then gets the next scripted reply
    to its first request line and is closed."""

    def __init__(self, replies: list[bytes]):
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.address = self.listener.getsockname()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for reply in self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                conn.sendall(b"OK LABNET 1 READY\r\n")
                line = b""
                while not line.endswith(b"\n"):
                    data = conn.recv(1)
                    if not data:
                        break
                    line += data
                self.requests.append(line)
                conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def test_request_is_resent_once_when_the_idle_connection_was_closed_under_it():
    srv = ScriptedServer([b"ERR TIMEOUT closing idle connection after 60 s\r\n", b"OK 1 files\r\n3 a.txt\r\n"])
    try:
        c = Client(*srv.address, timeout=10)
        c.connect()  # an open, idle connection: the server's first one
        assert c.list() == [("a.txt", 3)]
        assert srv.requests == [b"LIST\r\n", b"LIST\r\n"]
        c.close()
    finally:
        srv.close()


@pytest.mark.slow
def test_timeout_on_a_fresh_connection_is_not_retried():
    srv = ScriptedServer([b"ERR TIMEOUT too slow\r\n", b"OK 0 files\r\n"])
    try:
        with pytest.raises(RemoteError) as err:
            Client(*srv.address, timeout=10).list()  # connects for this request: no retry
        assert err.value.code == Code.TIMEOUT
        assert srv.requests == [b"LIST\r\n"]
    finally:
        srv.close()


def test_uploaded_and_downloaded_files_are_ordinary_0644_files(server, server_root, client_dirs):
    files, downloads = client_dirs
    (files / "m.bin").write_bytes(b"mode")
    with Client(*server.address, timeout=10) as c:
        c.upload(files / "m.bin")
        c.download("m.bin", downloads)
    for path in (server_root / "m.bin", downloads / "m.bin"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
