"""Shared counters (labnet.server.stats): snapshot arithmetic, exact across threads and processes."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from labnet.protocol.console import status_line
from labnet.server.stats import COUNTERS, GAUGES, VERB_KEYS, Stats


def test_fresh_snapshot_is_all_zero():
    snap = Stats().snapshot()
    assert set(snap["verbs"]) == set(VERB_KEYS)
    assert all(c == {"ok": 0, "failed": 0} for c in snap["verbs"].values())
    assert snap["ok"] == snap["failed"] == 0
    for name in GAUGES + COUNTERS:
        assert snap[name] == 0
    assert snap["uptime"] >= 0


def test_snapshot_arithmetic():
    s = Stats()
    for verb, good, bad in [("LIST", 3, 1), ("UPLOAD", 2, 5), ("DOWNLOAD", 7, 0), ("DELETE", 0, 2), ("STATS", 1, 0),
                            ("QUIT", 4, 0)]:  # fmt: skip
        for _ in range(good):
            s.count(verb, ok=True)
        for _ in range(bad):
            s.count(verb, ok=False)
    s.count("HELLO", ok=False)  # unknown verbs count as INVALID
    s.count("", ok=False)
    s.add("bytes_in", 1000)
    s.add("bytes_in", 234)
    s.add("bytes_out", 5)
    s.add("active", 3)
    s.add("active", -1)
    s.add("waiting", 2)
    s.add("connections", 9)
    snap = s.snapshot()
    v = snap["verbs"]
    assert v["LIST"] == {"ok": 3, "failed": 1}
    assert v["UPLOAD"] == {"ok": 2, "failed": 5}
    assert v["INVALID"] == {"ok": 0, "failed": 2}
    assert snap["ok"] == 3 + 2 + 7 + 0 + 1 + 4
    assert snap["failed"] == 1 + 5 + 0 + 2 + 0 + 0 + 2
    assert snap["ok"] == sum(c["ok"] for c in v.values())
    assert snap["failed"] == sum(c["failed"] for c in v.values())
    assert (snap["bytes_in"], snap["bytes_out"]) == (1234, 5)
    assert (snap["active"], snap["waiting"], snap["connections"], snap["busy"], snap["timeouts"]) == (2, 2, 9, 0, 0)
    assert s.get("bytes_in") == 1234
    with pytest.raises(KeyError):
        s.add("nonsense")


def test_snapshot_is_a_copy():
    s = Stats()
    snap = s.snapshot()
    s.count("LIST", ok=True)
    assert snap["ok"] == 0 and s.snapshot()["ok"] == 1


def test_status_line():
    s = Stats()
    s.count("UPLOAD", ok=True)
    s.count("DOWNLOAD", ok=False)
    s.add("bytes_in", 12_345_678)
    line = status_line(s.snapshot())
    assert line.startswith("[labnet] ok=1 failed=1")
    assert "upload 1/0" in line and "download 0/1" in line and "in=12.3MB" in line
    assert "\n" not in line


def _hammer(stats: Stats, n: int) -> None:
    for _ in range(n):
        stats.count("UPLOAD", ok=True)
        stats.add("bytes_in", 3)
        stats.add("active", 1)
        stats.add("active", -1)


def test_exact_across_threads():
    s = Stats()
    threads = [threading.Thread(target=_hammer, args=(s, 5000)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = s.snapshot()
    assert snap["verbs"]["UPLOAD"]["ok"] == 40_000
    assert snap["bytes_in"] == 120_000
    assert snap["active"] == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exact_across_processes(method):
    ctx = multiprocessing.get_context(method)
    n, procs = (5000, 4) if method == "fork" else (2000, 2)
    s = Stats(mp_context=ctx, slots=procs + 1)  # row 0 for this process, one row per worker
    workers = [ctx.Process(target=_hammer, args=(s.writer(k + 1), n)) for k in range(procs)]
    for w in workers:
        w.start()
    _hammer(s, n)  # the parent updates at the same time
    for w in workers:
        w.join(50)
    assert all(w.exitcode == 0 for w in workers)
    snap = s.snapshot()
    assert snap["verbs"]["UPLOAD"]["ok"] == n * (procs + 1)
    assert snap["bytes_in"] == 3 * n * (procs + 1)
    assert snap["active"] == 0
