"""Admission control (issue 5): when every worker is busy and the waiting list is full, a new
client is told ``ERR BUSY`` at once; otherwise it waits and is served.  The client reports
BUSY as its own category (``RemoteError`` with ``code == Code.BUSY``), and so does the CLI.

The 200-client test measures how long each client waits for its reply (listing or BUSY)
and prints the figures; it asserts only that every client got one, within generous
per-client socket timeouts, and that none hung or was reset.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time

import pytest
from faultproxy import folder_state, wait_for

from labnet.client import Client
from labnet.errors import Code, RemoteError

pytestmark = pytest.mark.timeout(90)


def test_busy_at_once_when_workers_and_waiting_list_are_full(start_server, model, client_dirs):
    files, _ = client_dirs
    (files / "a.txt").write_bytes(b"alpha")
    srv = start_server(model, workers=1, max_waiting=1, idle_timeout=30)
    holder = Client(*srv.address, timeout=10).connect()  # takes the only worker
    holder.upload(files / "a.txt")

    waiter: dict = {}

    def wait_in_line():
        try:
            c = Client(*srv.address, timeout=10, wait_timeout=20)
            c.connect()
            waiter["served_at"] = time.monotonic()
            waiter["list"] = c.list()
            c.quit()
        except Exception as exc:
            waiter["error"] = exc

    t = threading.Thread(target=wait_in_line, daemon=True)
    t.start()
    wait_for(lambda: holder.stats()["waiting"] == 1, 10, "the second client to be queued")

    t0 = time.monotonic()
    with pytest.raises(RemoteError) as info:
        Client(*srv.address, timeout=10, wait_timeout=20).connect()
    busy_after = time.monotonic() - t0
    assert info.value.code == Code.BUSY
    assert "busy" in info.value.message
    assert busy_after < 5, f"BUSY took {busy_after:.2f} s: it must come at once, not after a wait"

    cli = subprocess.run([sys.executable, "-m", "labnet", "list", "--host", srv.address[0],
                          "--port", str(srv.address[1]), "--timeout", "10"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert cli.returncode == 1
    assert "BUSY" in cli.stderr and "Traceback" not in cli.stderr, cli.stderr

    assert "served_at" not in waiter, "the queued client was served while the only worker was busy"
    snap = holder.stats()
    assert snap["busy"] == 2 and snap["waiting"] == 1
    released = time.monotonic()
    holder.quit()
    t.join(20)
    assert "error" not in waiter, waiter.get("error")
    assert waiter["list"] == [("a.txt", 5)]
    assert waiter["served_at"] >= released
    with Client(*srv.address, timeout=10) as c:
        assert c.list() == [("a.txt", 5)]
    assert folder_state(srv.root) == {"a.txt": b"alpha"}


N_CLIENTS = 200
PER_CLIENT_TIMEOUT = 20.0  # generous: a bound on hanging, not a performance target


@pytest.mark.timeout(120)
def test_200_simultaneous_clients_all_get_a_reply(start_server, model, client_dirs):
    files, _ = client_dirs
    (files / "x.bin").write_bytes(b"x" * 1000)
    srv = start_server(model, workers=5, max_waiting=10, idle_timeout=30)
    with Client(*srv.address, timeout=10) as c:
        c.upload(files / "x.bin")
    barrier = threading.Barrier(N_CLIENTS + 1, timeout=60)
    outcomes: list[tuple[str, float]] = [("not run", 0.0)] * N_CLIENTS

    def one(i: int) -> None:
        barrier.wait()
        t0 = time.monotonic()
        try:
            c = Client(*srv.address, timeout=PER_CLIENT_TIMEOUT, wait_timeout=PER_CLIENT_TIMEOUT)
            try:
                listing = c.list()
                kind = "listing" if listing == [("x.bin", 1000)] else f"wrong listing {listing!r}"
                c.quit()
            finally:
                c.close()
        except RemoteError as exc:
            kind = "busy" if exc.code == Code.BUSY else f"remote {exc.code}"
        except ConnectionResetError:
            kind = "reset"
        except TimeoutError:
            kind = "timeout"
        except Exception as exc:  # counted, reported below
            kind = f"other {type(exc).__name__}: {exc}"
        outcomes[i] = (kind, time.monotonic() - t0)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join(PER_CLIENT_TIMEOUT * 3)
    wall = time.monotonic() - start
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    kinds: dict[str, int] = {}
    for kind, _ in outcomes:
        kinds[kind] = kinds.get(kind, 0) + 1
    times = sorted(s for _, s in outcomes)
    busy_times = sorted(s for k, s in outcomes if k == "busy") or [0.0]
    print(f"\n[{model}] {N_CLIENTS} clients x LIST, 5 workers, max_waiting 10: {kinds}; "
          f"reply time p50 {statistics.median(times) * 1000:.0f} ms, "
          f"p95 {times[int(len(times) * 0.95)] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms "
          f"(BUSY max {busy_times[-1] * 1000:.0f} ms); all done in {wall:.2f} s")  # fmt: skip
    assert set(kinds) <= {"listing", "busy"}, kinds
    assert kinds.get("listing", 0) >= 5
    assert times[-1] < PER_CLIENT_TIMEOUT

    with Client(*srv.address, timeout=10) as c:
        assert c.list() == [("x.bin", 1000)]
        snap = c.stats()
    assert snap["busy"] == kinds.get("busy", 0)
    assert snap["verbs"]["LIST"]["ok"] == kinds["listing"] + 1
    assert snap["waiting"] == 0
    assert folder_state(srv.root) == {"x.bin": b"x" * 1000}
