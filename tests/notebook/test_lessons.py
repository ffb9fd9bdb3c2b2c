"""The notebooks' helper modules: lessons_framing (01), lessons_encoding (02-encoding), lessons_pools (pools), envcheck (00), netinfo (06), dashboard (04) without a browser."""

from __future__ import annotations

import base64
import hashlib
import sys
import time

import pytest

from labnet.notebook import (
    envcheck,
    lessons_encoding,
    lessons_framing,
    lessons_grid,
    lessons_handoff,
    lessons_pools,
    netinfo,
)
from labnet.notebook.dashboard import Dashboard
from labnet.notebook.dashboard_view import LiveCounters, counters_html, summary_html
from labnet.protocol.console import parse_status_line, status_line
from labnet.server.stats import Stats

pytestmark = pytest.mark.timeout(120)


# -- 01-framing: delimiters, a split marker, length prefixes ----------------------------


def test_base64_and_json_never_carry_the_delimiters():
    alphabet = lessons_encoding.base64_alphabet()
    assert len(alphabet) == 65 and b"_" not in alphabet and b"\r" not in alphabet and b"\n" not in alphabet
    escaped = lessons_framing.json_escapes("a\r\n\r\nb")
    assert escaped["crlf_in_text"] == 1 and escaped["crlf_in_wire"] == 0 and escaped["round_trip"]
    rows = lessons_framing.marker_safety({"text": b"x __END__ y\r\n\r\nz", "bin": bytes(range(256)) * 40})
    assert rows[0]["end_marker_raw"] == 1 and rows[0]["crlf_raw"] == 1 and rows[0]["crlf_json_text"] == 0
    assert rows[1]["crlf_json_text"] is None
    assert all(r["end_marker_base64"] == 0 and r["crlf_base64"] == 0 for r in rows)


@pytest.mark.timeout(30)
def test_split_marker_live_seed_misses_it_labnet_finds_it():
    content = bytes(range(256)) * 20
    seed = lessons_framing.split_marker_live("seed", content, give_up=0.1)
    assert seed["sent"][1] == b"ND__" and seed["sent"][0].endswith(b"__E")
    assert not seed["received"].finished and seed["received"].data.endswith(b"__END__")
    ours = lessons_framing.split_marker_live("labnet", content)
    assert ours["received"].finished and ours["received"].data == content


@pytest.mark.parametrize("encoding", ["b64", "raw"])
@pytest.mark.parametrize("read_size", [1, 7, 4096])
def test_length_prefixed_receive_is_exact_however_split(encoding, read_size):
    content = b"__END__" + bytes(range(256)) * 10 + b"__END__"
    got = lessons_framing.length_prefixed_receive(content, encoding=encoding, read_size=read_size)
    assert got.finished and got.data == content


def test_stream_boundaries_keep_the_bytes():
    seen = lessons_framing.stream_boundaries((b"a", b"bc", b"def"), settle=0.05)
    assert b"".join(seen["received"]) == b"abcdef"


# -- 02-encoding: base64's size and cost, block-by-block truncation, SHA-256 --------------


def test_encoded_size_counts_the_encoder_output(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 4000 + b"x")  # 1,024,001 bytes: not a multiple of 3
    got = lessons_encoding.encoded_size(path, repeats=2)
    assert got["wire_bytes"] == len(base64.b64encode(path.read_bytes()))
    assert got["seconds"]["n"] == 2 and got["seconds"]["min"] <= got["seconds"]["median"] <= got["seconds"]["max"]


def test_seed_per_block_base64_keeps_only_the_first_block():
    assert lessons_encoding.seed_decode(lessons_encoding.seed_encode(b"abcd", chunk=2)) == b"ab"
    res = lessons_encoding.truncation_demo(size=3 * 10**6)
    assert res.truncated and res.received == lessons_encoding.SEED_CHUNK
    assert res.digest_caught_it
    assert res.labnet_decoder.startswith("refused") and "INTEGRITY" in res.labnet_decoder
    assert res.labnet_roundtrip_ok


def test_a_file_smaller_than_one_block_is_not_truncated():
    res = lessons_encoding.truncation_demo(size=1000)
    assert not res.truncated and not res.digest_caught_it


def test_codec_cost_reports_four_thirds():
    rows = lessons_encoding.codec_cost(size=300_000, repeats=2)
    assert rows[0]["backend"] == "raw (copy)" and rows[0]["wire_bytes"] == 300_000
    assert all(r["wire_bytes"] == 400_000 for r in rows[1:])
    assert all(r["encode_s"] > 0 and r["decode_s"] > 0 and r["encode_spread"]["n"] == 2 for r in rows)
    fig = lessons_encoding.plot_base64_cost(rows)
    assert len(fig.axes) == 2


def test_integrity_cost_hashes_the_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"labnet" * 5000)
    cost = lessons_encoding.integrity_cost(path, repeats=1)
    assert cost["bytes"] == 30_000 and cost["sha256"] == hashlib.sha256(b"labnet" * 5000).hexdigest()
    assert cost["MBps"] > 0 and cost["decode_MBps"] > 0
    assert cost["decoder"] in ("pybase64", "binascii")


def test_transfer_cost_through_a_server(start_server, tmp_path):
    srv = start_server("thread", workers=1)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 30_001)
    rows = lessons_encoding.transfer_cost(srv.address, path, repeats=2)
    assert {(r["encoding"], r["op"]) for r in rows} == {("raw", "upload"), ("raw", "download"),
                                                         ("b64", "upload"), ("b64", "download")}  # fmt: skip
    for r in rows:
        assert r["bytes"] == 30_001 and r["spread"]["n"] == 2
        assert r["wire_bytes"] == (30_001 if r["encoding"] == "raw" else 4 * -(-30_001 // 3))
        assert r["sha256"] == hashlib.sha256(b"x" * 30_001).hexdigest()
    assert len(lessons_encoding.plot_base64_cost(lessons_encoding.codec_cost(3000, 1), rows).axes) == 3


# -- 02/03: pools ---------------------------------------------------------------------


def test_worker_functions_run_in_a_spawned_pool_and_notebook_ones_do_not():
    assert lessons_pools.try_in_pool(lessons_pools.square, 6, "spawn").result == 36
    bad = lessons_pools.try_in_pool(lambda x: x, 1, "spawn")  # a lambda cannot be pickled by reference
    assert not bad.ok and bad.error


def _only_in_this_process(x):
    return x


def test_a_spawned_childs_traceback_is_captured_with_its_reason(monkeypatch):
    # the notebook's case: a function the parent finds in __main__ and a spawned child does not
    _only_in_this_process.__module__, _only_in_this_process.__qualname__ = "__main__", "only_in_parent"
    monkeypatch.setattr(sys.modules["__main__"], "only_in_parent", _only_in_this_process, raising=False)
    got = lessons_pools.try_in_pool(_only_in_this_process, 1, "spawn")
    assert not got.ok and "BrokenProcessPool" in got.error
    assert got.reason.startswith("AttributeError") and "only_in_parent" in got.reason, got.child_stderr
    assert lessons_pools.try_in_pool(lessons_pools.square, 3, "spawn").child_stderr == ""


@pytest.mark.timeout(120)
def test_students_handoff_closing_after_submit_fails_in_the_feeder_thread():
    got = lessons_handoff.students_handoff(20)
    bad, good = got["close_after_submit"], got["close_when_done"]
    assert bad["trials"] == good["trials"] == 20
    assert bad["failed"] > 0 and bad["served"] + bad["failed"] == 20  # a race, lost more often than not
    assert set(bad["errors"]) == {"OSError: [Errno 9] Bad file descriptor"}
    assert bad["first_error"]["entry"].endswith("queues.py, _feed")
    assert bad["first_error"]["raised_in"].endswith("resource_sharer.py, __init__")
    assert good["served"] == 20 and not good["errors"] and good["stderr"] == ""


def test_start_times_interleave_and_summarise():
    got = lessons_pools.start_times(("fork",), workers=1, repeats=2)
    assert got["fork"]["n"] == 2 and got["fork"]["min"] <= got["fork"]["median"] <= got["fork"]["max"]


def test_grid_summary_and_median_runs():
    runs = []
    for rep, t in enumerate((0.3, 0.1, 0.2)):
        r = _Res([_Rec(0, 0.0, t)], time_mean=t, wait_mean=0.0, throughput_mean=1e6 / t, ok=1, failed=0,
                 server_ok=1)  # fmt: skip
        r.config.update(server_workers=1, repeat=rep)
        runs.append(r)
    (row,) = lessons_grid.grid_summary(runs)
    assert row["repeats"] == 3 and row["ok"] == 3 and row["server_ok"] == 3
    assert (row["time"]["median"], row["time"]["min"], row["time"]["max"]) == (0.2, 0.1, 0.3)
    assert [r.summary["time_mean"] for r in lessons_grid.median_runs(runs)] == [0.2]


def test_gil_demo_shapes():
    rows = lessons_pools.gil_demo(tasks=2, workers=2, cpu_n=10_000, io_s=0.05)
    assert {(r["work"].split()[0], r["pool"]) for r in rows} == {("CPU-bound", "thread"), ("CPU-bound", "process"),
                                                                  ("I/O-bound", "thread"), ("I/O-bound", "process")}  # fmt: skip
    io_thread = next(r for r in rows if r["work"].startswith("I/O") and r["pool"] == "thread")
    assert io_thread["speedup"] > 1.3
    assert len(lessons_pools.plot_gil(rows).axes) == 1


class _Rec:
    def __init__(self, worker, wait, total, ok=True):
        self.worker, self.wait_seconds, self.total_seconds, self.ok = worker, wait, total, ok
        self.transfer_seconds = total - wait


class _Res:
    def __init__(self, records, **summary):
        self.records = records
        self.summary = {"op": "download", "size_label": "1MB", "clients": len(records), **summary}
        self.config = {}


def test_served_one_at_a_time():
    staircase = _Res([_Rec(0, 0.0, 1.0), _Rec(1, 1.01, 2.0), _Rec(2, 2.02, 3.0)], wall_seconds=3.0)
    overlapping = _Res([_Rec(0, 0.0, 1.0), _Rec(1, 0.0, 1.0)], wall_seconds=1.0)
    assert lessons_pools.served_one_at_a_time(staircase)
    assert not lessons_pools.served_one_at_a_time(overlapping)


def test_queueing_plots():
    runs = []
    for workers in (1, 2):
        for clients in (1, 3):
            r = _Res([_Rec(i, 0.1 * i, 0.1 * i + 0.1) for i in range(clients)], wait_mean=0.1, transfer_mean=0.1)
            r.config["server_workers"] = workers
            runs.append(r)
    assert len(lessons_pools.plot_queueing(runs).axes) == 2
    assert len(lessons_pools.plot_timelines(runs[:2]).axes) == 2


def test_seed_style_vs_streamed_encode(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        seed = lessons_pools.seed_style_encode(path, pool)
    ours = lessons_pools.streamed_encode(path)
    assert seed["bytes"] == ours["bytes"] == 256_000
    # pickled sizes (measured): the file there and its base64 back, each with a few bytes of pickle framing
    assert 0 <= seed["bytes_crossing_processes"] - (256_000 + 4 * -(-256_000 // 3)) < 100
    assert ours["bytes_crossing_processes"] == 0
    # peak Python memory (tracemalloc): the seed's design holds at least the file and its base64 at once
    assert seed["held_in_memory"] >= 256_000 * 7 / 3 and ours["held_in_memory"] < 10**6  # two chunks, any file size
    assert len(lessons_pools.plot_designs([seed, ours]).axes) == 2


# -- 00: environment check ----------------------------------------------------------------


def test_environment_report_finds_what_the_suite_itself_uses():
    report = envcheck.environment_report()
    names = [c.name for c in report.checks]
    assert names[:3] == ["Python", "CPU cores", "Memory"] and "tqdm" in names
    assert not report.missing, str(report)
    assert "<table>" in report._repr_html_() and "Everything the lab needs" in str(report)


def test_environment_report_says_what_is_missing():
    checks = [envcheck.Check("thing", "not installed", "missing", "install it"), envcheck.Check("other", "1.0", "ok")]
    text = envcheck.report_text(checks)
    assert "[MISS] thing" in text and "Missing: thing" in text
    assert "Missing: thing" in envcheck.Report(checks)._repr_html_()


def test_lab_sizes_follow_quick_mode(monkeypatch):
    monkeypatch.setenv("LABNET_QUICK", "1")
    quick = envcheck.lab_sizes()
    monkeypatch.setenv("LABNET_QUICK", "0")
    assert envcheck.lab_sizes() == ("10MB", "50MB", "100MB")
    assert envcheck.lab_bytes() == 160 * 10**6
    assert all(envcheck.parse_size(s) < 10**7 for s in quick)


# -- 06: network helpers ---------------------------------------------------------------------


def test_link_ceiling():
    one = netinfo.link_ceiling(1000, 1, 10**8, "raw")
    assert one["seconds_per_client"] == pytest.approx(0.8)
    assert netinfo.link_ceiling(1000, 10, 10**8, "raw")["seconds_per_client"] == pytest.approx(8.0)
    assert netinfo.link_ceiling(1000, 1, 3 * 10**6, "b64")["seconds_per_client"] == pytest.approx(4e6 * 8 / 1e9)


def test_probe(start_server):
    srv = start_server("thread", workers=1)
    ok = netinfo.probe(*srv.address, rounds=2)
    assert ok.ok and ok.rtt_ms > 0 and ok.files == 0
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    bad = netinfo.probe("127.0.0.1", free, timeout=2)
    assert not bad.ok and "refused" in bad.error.lower()
    assert "127.0.0.1" in netinfo.local_addresses()
    assert netinfo.is_loopback("127.0.0.1") and not netinfo.is_loopback("192.0.2.1")


# -- 04: dashboard pieces (no browser) ---------------------------------------------------------


def test_status_line_round_trip():
    stats = Stats()
    stats.count("UPLOAD", ok=True)
    stats.count("DOWNLOAD", ok=True)
    stats.count("DOWNLOAD", ok=False)
    stats.add("bytes_in", 2_500_000)
    stats.add("waiting", 3)
    stats.add("active", 2)
    snap = stats.snapshot()
    parsed = parse_status_line(status_line(snap))
    assert parsed is not None, "labnet.protocol.console.status_line changed: update labnet.protocol.console._STATUS_RE"
    for key in ("ok", "failed", "active", "waiting", "busy"):
        assert parsed[key] == snap[key], key
    assert parsed["verbs"]["DOWNLOAD"] == {"ok": 1, "failed": 1}
    assert parsed["bytes_in"] == 2_500_000
    assert parse_status_line("labnet server ready on 127.0.0.1:1") is None


def test_live_counters_read_without_a_status_line_or_a_worker(start_server):
    """The live view reads the counters listener: no status line needed (status_every=0), no worker taken."""
    import time

    srv = start_server("thread", workers=1, status_every=0)
    (srv.root / "f.bin").write_bytes(b"x" * 1000)
    holder = srv.client(timeout=10)
    with LiveCounters(srv, every=0.05) as live:
        holder.connect()  # the only worker is taken: STATS could not be answered now
        holder.download("f.bin", srv.root.parent / "dl")
        end = time.monotonic() + 10
        while live.peak["active"] < 1 and time.monotonic() < end:
            time.sleep(0.02)
        assert live.peak["active"] == 1
        assert "live" in live.widget.value
    holder.close()
    assert live.final["verbs"]["DOWNLOAD"]["ok"] == 1


def test_html_pieces():
    assert "no server yet" in counters_html(None)
    summary = {"op": "upload", "size_label": "1MB", "clients": 3, "pool": "thread", "encoding": "raw", "ok": 3,
               "failed": 0, "failures": {}, "server_measured": True, "server_ok": 3, "server_failed": 0,
               "time_mean": 0.1, "time_p50": 0.1, "time_p95": 0.2, "time_max": 0.2, "wait_mean": 0.0,
               "transfer_mean": 0.1, "throughput_mean": 1e7, "throughput_aggregate": 3e7, "wall_seconds": 0.2,
               "cancelled": False}  # fmt: skip
    html = summary_html(summary, "thread pool × 2")
    assert "data-ok='3'" in html and "data-server-ok='3'" in html and "10.00 MB/s" in html


def test_dashboard_runs_without_a_browser(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("server_files", "client_files", "client_downloads"):
        (tmp_path / d).mkdir()
    dash = Dashboard(root=tmp_path / "server_files", poll_every=0.1)
    try:
        res = dash.run_blocking(timeout=90, op="upload", volume="200KB", clients=3, server_workers=2,
                                server_model="thread", client_pool="thread", encoding="raw")  # fmt: skip
        assert res.ok and res.summary["ok"] == 3 and res.summary["server_ok"] == 3
        assert dash.progress.value == 1.0 and "<b>100%</b>" in dash.progress_label.value
        assert bytes(dash.plot.value).startswith(b"\x89PNG")
        stored = tmp_path / "server_files" / "200KB.bin"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == res.summary["digest"]
        first_server = dash.server
        # same settings: the server is reused; other settings: a new one
        dash.run_blocking(timeout=90)
        assert dash.server is first_server and len(dash.results) == 2
        dash.run_blocking(timeout=90, server_workers=1, op="download")
        assert dash.server is not first_server and not first_server.running
        assert dash.results[-1].summary["server_ok"] == 3
    finally:
        dash.shutdown()
    assert not dash.server.running and not dash.running


def test_dashboard_stop_cancels_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("server_files", "client_files", "client_downloads"):
        (tmp_path / d).mkdir()
    dash = Dashboard(root=tmp_path / "server_files")
    try:
        # 1 server worker, 8 clients of 50 MB one after the other: long enough to stop in the middle
        dash.configure(op="upload", volume="50MB", clients=8, server_workers=1, encoding="raw")
        dash.run()
        end = time.monotonic() + 60
        while dash.progress.value == 0 and not dash.done.is_set() and time.monotonic() < end:
            time.sleep(0.01)  # until the first bytes move
        dash.stop()
        assert dash.wait(60)
        res = dash.result
        assert res.summary["cancelled"] and res.summary["ok"] + res.summary["failed"] == 8
        assert res.summary["failures"].get("cancelled", 0) >= 1
        assert dash.progress.bar_style == "warning" and not dash.running
    finally:
        dash.shutdown()
