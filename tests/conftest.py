"""Shared fixtures: background servers of every model on port 0, temporary folders, orphan checks."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faultproxy import stop_servers  # noqa: E402

from labnet.measure.launcher import BackgroundServer  # noqa: E402

MODELS = ("thread", "process")


@pytest.fixture(params=MODELS)
def model(request) -> str:
    """Parametrizes a test over every server model."""
    return request.param


@pytest.fixture
def server_root(tmp_path) -> Path:
    root = tmp_path / "server_files"
    root.mkdir()
    return root


@pytest.fixture
def start_server(tmp_path):
    """``start_server(model, workers=..., **kw)`` -> a started BackgroundServer; all are stopped at teardown,
    and the test fails if any process of theirs is still alive afterwards."""
    started: list[BackgroundServer] = []

    def start(model: str = "thread", workers: int = 2, root=None, **kw) -> BackgroundServer:
        if root is None:
            root = tmp_path / f"server_files_{len(started)}"
            root.mkdir(exist_ok=True)
        srv = BackgroundServer(model, workers=workers, root=root, **kw)
        started.append(srv)
        return srv.start()

    yield start
    stop_servers(started)


@pytest.fixture
def server(start_server, model, server_root):
    """A running server of the parametrized model with 3 workers, serving ``server_root``."""
    return start_server(model, workers=3, root=server_root)


@pytest.fixture
def client_dirs(tmp_path):
    files, downloads = tmp_path / "client_files", tmp_path / "client_downloads"
    files.mkdir()
    downloads.mkdir()
    return files, downloads


@pytest.fixture
def inproc_server(tmp_path):
    """A server's connection handler in a thread of this process, so tests can watch (monkeypatch)
    what the I/O layer does: ``(address, store)``."""
    from labnet.config import ServerConfig
    from labnet.server.session import Flags, serve_connection
    from labnet.server.stats import Stats
    from labnet.server.store import FileStore

    store = FileStore(tmp_path / "srv")
    listener = socket.create_server(("127.0.0.1", 0))
    flags = Flags(lambda: False, lambda: False)
    config = ServerConfig(idle_timeout=10.0)

    def serve():
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            serve_connection(sock, store, Stats(), config, flags)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname(), store
    listener.close()


def pytest_configure(config):
    os.environ.setdefault("LABNET_QUICK", "1")
