"""Workers that die (process model) and handlers that go wrong (thread model).

A process-pool worker is killed -- at random instants over many runs, and at chosen instants
through the documented test hook ``LABNET_TEST_KILL_AT`` (labnet.server.stats) -- and the server
must notice at once, log, replace the worker, count the lost connection as ``died``, remove the
worker's temporary file, keep serving, and stop on SIGTERM within its grace period.  The counters
are read from the counters listener, which needs no worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import socket
import threading
import time

import pytest

from labnet import Client
from labnet.config import ServerConfig
from labnet.server import thread_pool
from labnet.server.store import TEMP_PREFIX, TEMP_SUFFIX
from labnet.server.thread_pool import ThreadPoolServer

pytestmark = pytest.mark.timeout(120)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pids(srv) -> set[int]:
    return set(srv.pids()) - {srv.proc.pid}


def temp_files(root) -> list:
    return sorted(root.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))


def upload_paused(address, name: str, size: int, sent: int) -> socket.socket:
    """An upload that stops after ``sent`` raw body bytes; returns the open socket."""
    s = socket.create_connection(address, timeout=10)
    f = s.makefile("rb")
    greeting = f.readline()
    while greeting.startswith(b"OK LABNET 1 QUEUED"):
        greeting = f.readline()
    assert greeting.startswith(b"OK LABNET 1 READY")
    s.sendall(f"UPLOAD {name} {size} raw\r\n".encode())
    assert f.readline().startswith(b"OK SEND")
    s.sendall(os.urandom(sent))
    return s


def round_trip(srv, tmp_path, name: str = "after.bin", size: int = 300_000) -> None:
    """A verified upload and download: the server still serves."""
    data = os.urandom(size)
    src = tmp_path / name
    src.write_bytes(data)
    with srv.client(timeout=20) as c:
        c.upload(src, name=name)
        c.download(name, tmp_path / "dl")
    assert hashlib.sha256((tmp_path / "dl" / name).read_bytes()).digest() == hashlib.sha256(data).digest()


# -- random deaths ------------------------------------------------------------------


@pytest.mark.slow
def test_workers_killed_at_random_points_are_noticed_replaced_and_cleaned(start_server, tmp_path):
    seed = int(os.environ.get("LABNET_TEST_SEED", random.randrange(1 << 30)))
    print(f"random seed {seed} (set LABNET_TEST_SEED to repeat)")
    rng = random.Random(seed)
    srv = start_server("process", workers=3, status_every=0)
    root = srv.root
    kills = 0
    for run in range(6):  # bounded: 6 kills, each waited for
        pids = worker_pids(srv)
        size = 4_000_000
        sent = rng.randrange(0, size // 2)
        sock = upload_paused(srv.address, f"victim{run}.bin", size, sent)
        try:
            # the worker serving this upload is the one with an active connection: find it by its
            # temporary file's PID (names carry it), then kill it at this random point
            tmp = wait_until(lambda: temp_files(root), what="the upload's temporary file")
            victim = int(tmp[0].name[len(TEMP_PREFIX):].split("-")[0])
            assert victim in pids
            time.sleep(rng.random() * 0.05)  # a random instant, not a fixed one: no result depends on it
            os.kill(victim, signal.SIGKILL)
            kills += 1
            # noticed and replaced: a new worker PID, the same pool size, the temp file gone
            gone = victim
            wait_until(lambda: gone not in worker_pids(srv) and len(worker_pids(srv)) == 3, what="replacement")  # noqa: B023
            wait_until(lambda: not temp_files(root), what="the dead worker's temporary file to go")
            expected = kills
            snap = wait_until(lambda: (lambda s: s if s["worker_deaths"] == expected else None)(srv.counters()),  # noqa: B023
                              what="the death to be counted")  # fmt: skip
            assert snap["died"] == kills and snap["active"] == 0
        finally:
            sock.close()
    snap = srv.counters()
    assert snap["verbs"]["UPLOAD"]["failed"] == kills
    assert "killed by SIGKILL" in srv.log()
    round_trip(srv, tmp_path)
    assert not list(root.glob("victim*"))  # nothing partial was ever published


# -- chosen points (the test hook) -----------------------------------------------------


@pytest.mark.parametrize("point, op", [
    ("request:UPLOAD@1", "upload"),       # as soon as it starts serving an upload
    ("add:bytes_in@2", "upload"),         # mid-upload, while updating the counters
    ("add:bytes_out@2", "download"),      # mid-download, while updating the counters
    ("request:LIST@1", "list"),           # mid-request
])  # fmt: skip
def test_a_worker_dying_at_a_chosen_point_blocks_nobody(start_server, tmp_path, point, op):
    env = dict(os.environ, LABNET_TEST_KILL_AT=point, LABNET_TEST_KILL_ONCE=str(tmp_path / "killed-once"))
    srv = start_server("process", workers=2, status_every=0, env=env, grace=3.0)
    seeded = srv.root / "seed.bin"
    seeded.write_bytes(os.urandom(3_000_000))
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(3_000_000))
    before = worker_pids(srv)
    with pytest.raises((OSError, Exception)):
        with srv.client(timeout=20) as c:
            if op == "upload":
                c.upload(src, name="up.bin")
            elif op == "download":
                c.download("seed.bin", tmp_path / "dl")
            else:
                c.list()
    snap = wait_until(lambda: (lambda s: s if s["worker_deaths"] >= 1 else None)(srv.counters()), what="death")
    assert snap["died"] >= 1 and snap["active"] == 0
    wait_until(lambda: len(worker_pids(srv)) == 2 and worker_pids(srv) != before, what="replacement")
    # nobody is blocked: the other worker, the replacement and the parent serve on, counters included
    round_trip(srv, tmp_path)
    with srv.client(timeout=20) as c:
        assert c.stats()["worker_deaths"] >= 1
    assert not temp_files(srv.root) and not (srv.root / "up.bin").exists() or op != "upload"
    # and SIGTERM still ends the server within its grace period (plus a second)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=srv.grace + 5)
    assert time.monotonic() - t0 < srv.grace + 1.5


def test_sigterm_after_every_worker_died_does_not_wait_for_them(start_server):
    srv = start_server("process", workers=2, status_every=0, grace=20.0)
    sock = upload_paused(srv.address, "held.bin", 1_000_000, 1000)
    try:
        wait_until(lambda: srv.counters()["active"] == 1, what="the held connection")
        srv.proc.send_signal(signal.SIGTERM)  # stopping: the grace period starts, no replacements now
        wait_until(lambda: "SIGTERM: stopping" in srv.log(), what="the server to take the signal")
        for pid in worker_pids(srv):
            os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        srv.proc.wait(timeout=15)
        assert time.monotonic() - t0 < 5, "shutdown waited for dead workers"
    finally:
        sock.close()
    assert "not replaced: the server is stopping" in srv.log(), srv.log()


def test_counters_are_read_without_a_worker(start_server):
    srv = start_server("process", workers=1, status_every=0)
    sock = upload_paused(srv.address, "busy.bin", 1_000_000, 10)  # the only worker is taken
    try:
        snap = wait_until(lambda: (lambda s: s if s["active"] == 1 else None)(srv.counters()), what="active")
        assert snap["model"] == "process" and snap["workers"] == 1
        assert snap["verbs"]["UPLOAD"] == {"ok": 0, "failed": 0}
    finally:
        sock.close()


# -- thread model -----------------------------------------------------------------------


class Escape(BaseException):
    """Not an Exception: serve_connection does not catch it."""


def inproc_thread_server(tmp_path, **kw) -> ThreadPoolServer:
    config = ServerConfig(model="thread", workers=2, port=0, root=str(tmp_path / "root"), status_every=0,
                          counters_port=None, **kw)  # fmt: skip
    server = ThreadPoolServer(config)
    server.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_an_exception_escaping_a_handler_does_not_shrink_the_pool(tmp_path, monkeypatch, caplog):
    real = thread_pool.serve_connection
    calls = []

    def flaky(sock, *args):
        calls.append(1)
        if len(calls) <= 3:
            sock.close()
            raise Escape("boom")
        return real(sock, *args)

    monkeypatch.setattr(thread_pool, "serve_connection", flaky)
    server = inproc_thread_server(tmp_path)
    try:
        with caplog.at_level(logging.ERROR, logger="labnet.server"):
            for _ in range(3):  # more escapes than there are threads
                with socket.create_connection(server.address, timeout=5) as s:
                    assert s.recv(100) == b""
            # both threads still serve: two clients at once get greeted
            a, b = Client(*server.address, timeout=10), Client(*server.address, timeout=10)
            with a, b:
                a.connect(), b.connect()
                assert a.list() == [] and b.list() == []
        assert server.handler_errors == 3
        assert "a connection handler raised" in caplog.text
    finally:
        server.request_stop()
        server.shutdown()


def test_a_handler_stuck_past_every_deadline_is_reported_and_replaced(tmp_path, monkeypatch, caplog):
    release = threading.Event()
    real = thread_pool.serve_connection

    def stuck_once(sock, *args):
        if not release.is_set() and not getattr(stuck_once, "done", False):
            stuck_once.done = True
            release.wait(60)  # a handler blocked where no deadline reaches (a bug)
            sock.close()
            return None
        return real(sock, *args)

    monkeypatch.setattr(thread_pool, "serve_connection", stuck_once)
    monkeypatch.setattr(thread_pool, "STUCK_MARGIN", 0.5)
    monkeypatch.setattr(thread_pool, "WATCH_EVERY", 0.1)
    server = inproc_thread_server(tmp_path, idle_timeout=0.5, grace=0.5)
    try:
        with caplog.at_level(logging.ERROR, logger="labnet.server"):
            blocked = socket.create_connection(server.address, timeout=5)
            wait_until(lambda: server.stats.get("stuck") == 1, what="the stuck handler to be reported")
            assert "BUG: handler thread" in caplog.text and "stuck_once" in caplog.text  # with its stack
            assert server.replacements == 1
            # the pool serves on with its full size: two clients at once
            a, b = Client(*server.address, timeout=10), Client(*server.address, timeout=10)
            with a, b:
                a.connect(), b.connect()
                assert a.list() == [] and b.list() == []
        blocked.close()
    finally:
        release.set()
        server.request_stop()
        server.shutdown()
