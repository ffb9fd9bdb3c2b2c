"""A queued connection is told so at once; a silent or foreign server is not mistaken for a queue."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from labnet import Client

pytestmark = pytest.mark.timeout(60)


def read_line(sock) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        data = sock.recv(1)
        if not data:
            break
        buf += data
    return buf


def test_a_queued_connection_hears_it_at_once_then_gets_its_greeting(start_server, model):
    srv = start_server(model, workers=1, status_every=0)
    holder = Client(*srv.address, timeout=20)
    holder.connect()  # the only worker is now taken
    try:
        with socket.create_connection(srv.address, timeout=10) as s:
            t0 = time.monotonic()
            assert read_line(s) == b"OK LABNET 1 QUEUED 1\r\n"
            assert time.monotonic() - t0 < 5  # at once, not when a worker frees (never, here)
            threading.Timer(0.3, holder.close).start()  # the worker frees: the greeting follows
            assert read_line(s) == b"OK LABNET 1 READY\r\n"
    finally:
        holder.close()


def test_the_client_waits_out_a_queue_but_not_a_silent_server(start_server):
    srv = start_server("thread", workers=1, status_every=0)
    holder = Client(*srv.address, timeout=20)
    holder.connect()
    threading.Timer(1.5, holder.close).start()
    queued = Client(*srv.address, timeout=0.5, wait_timeout=20)  # shorter timeout than the queue wait
    with queued:
        queued.connect()
        assert queued.queue_position == 1 and queued.list() == []

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never says a word
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no labnet greeting .*labnet probe"):
            Client(*silent.getsockname()[:2], timeout=1.0).connect()
        assert time.monotonic() - t0 < 10
