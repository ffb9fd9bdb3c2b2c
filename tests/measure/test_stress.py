"""labnet.measure.stress: the summary maths without sockets, then real runs against both server models."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import psutil
import pytest

from labnet.config import parse_size
from labnet.errors import Code, LocalError, PeerError, RemoteError, UsageError
from labnet.measure import stress, stress_report
from labnet.measure.stress_report import WorkerRecord, classify, percentile, server_counts, summarize

# --------------------------------------------------------------------------
# Unit: maths and classification (no sockets)
# --------------------------------------------------------------------------


def rec(worker, ok=True, total=1.0, size=10**6, wait=0.0, category=""):
    return WorkerRecord(worker=worker, op="upload", ok=ok, category=category, total_seconds=total,
                        transfer_seconds=total - wait, wait_seconds=wait, bytes=size if ok else 0, size=size,
                        throughput=size / total if ok else 0.0)  # fmt: skip


def test_percentile_interpolates_like_numpy():
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1 and percentile([4, 1, 3, 2], 100) == 4
    assert percentile(range(1, 101), 95) == pytest.approx(95.05)
    with pytest.raises(ValueError):
        percentile([1], 101)


def test_mb_is_ten_to_the_sixth():
    assert parse_size("10MB") == 10_000_000
    assert parse_size("100MB") == 100 * 10**6
    s = summarize([rec(0, total=2.0, size=10_000_000)], op="upload", size=10_000_000, clients=1, wall_seconds=2.0)
    assert s["throughput_mean"] == 5_000_000
    assert s["throughput_mean_MBps"] == 5.0
    assert s["size_label"] == "10MB"


def test_summary_counts_times_and_throughput():
    records = [rec(0, total=1.0), rec(1, total=2.0), rec(2, total=4.0, wait=1.0),
               rec(3, ok=False, total=9.0, category="timeout"), rec(4, ok=False, total=0.1, category="refused"),
               rec(5, ok=False, category="timeout")]  # fmt: skip
    s = summarize(records, op="upload", size=10**6, clients=6, wall_seconds=4.0)
    assert s["ok"] + s["failed"] == 6
    assert (s["ok"], s["failed"]) == (3, 3)
    assert s["failures"] == {"timeout": 2, "refused": 1}
    # times are over the successful clients only
    assert s["time_mean"] == pytest.approx(7 / 3)
    assert s["time_p50"] == 2.0
    assert s["time_p95"] == pytest.approx(2.0 + 0.9 * 2.0)
    assert s["time_max"] == 4.0
    assert s["wait_mean"] == pytest.approx(1 / 3)
    # throughput per client = file bytes / that client's total seconds, then the mean
    assert s["throughput_mean"] == pytest.approx((1e6 / 1 + 1e6 / 2 + 1e6 / 4) / 3)
    # aggregate = all delivered bytes / wall time
    assert s["throughput_aggregate"] == pytest.approx(3e6 / 4.0)
    assert s["bytes_ok"] == 3 * 10**6
    assert s["server_measured"] is False and s["server_ok"] is None


def test_summary_with_no_success_has_no_made_up_numbers():
    s = summarize([rec(0, ok=False, category="refused")], op="download", size=5, clients=1, wall_seconds=0.1)
    assert (s["ok"], s["failed"]) == (0, 1)
    for key in ("time_mean", "time_p50", "time_p95", "time_max", "throughput_mean"):
        assert s[key] is None
    assert s["throughput_aggregate"] == 0.0


def snap(op_ok, op_failed, busy=0, verb="UPLOAD"):
    verbs = {v: {"ok": 0, "failed": 0} for v in ("LIST", "UPLOAD", "DOWNLOAD", "DELETE", "STATS", "QUIT", "INVALID")}
    verbs[verb] = {"ok": op_ok, "failed": op_failed}
    verbs["STATS"] = {"ok": 99, "failed": 0}  # must not leak into the run's counts
    return {"verbs": verbs, "busy": busy, "timeouts": 0}


def test_server_counts_are_differences_or_unmeasured():
    c = server_counts(snap(10, 2, busy=1), snap(15, 3, busy=4), "upload")
    assert c == {"measured": True, "ok": 5, "failed": 1, "busy": 3, "timeouts": 0}
    c = server_counts(snap(0, 0, verb="DOWNLOAD"), snap(7, 0, verb="DOWNLOAD"), "download")
    assert (c["ok"], c["failed"]) == (7, 0)
    assert server_counts(None, snap(1, 1), "upload") == {"measured": False, "ok": None, "failed": None,
                                                         "busy": None, "timeouts": None}  # fmt: skip
    s = summarize([rec(0)], op="upload", size=10**6, clients=1, wall_seconds=1.0,
                  server=server_counts(snap(0, 0), snap(1, 0), "upload"))  # fmt: skip
    assert (s["server_measured"], s["server_ok"], s["server_failed"]) == (True, 1, 0)


@pytest.mark.parametrize(
    "exc, category, code",
    [
        (ConnectionRefusedError(111, "refused"), "refused", ""),
        (TimeoutError("slow"), "timeout", ""),
        (ConnectionResetError(104, "reset"), "reset", ""),
        (BrokenPipeError(32, "pipe"), "reset", ""),
        (PeerError("bad reply"), "protocol", ""),
        (PeerError("mismatch", Code.INTEGRITY), "integrity", ""),
        (PeerError("no data", Code.TIMEOUT), "timeout", ""),
        (RemoteError("busy", Code.BUSY), "busy", "BUSY"),
        (RemoteError("nope", Code.NOT_FOUND), "server_error", "NOT_FOUND"),
        (RemoteError("disk", Code.STORAGE), "server_error", "STORAGE"),
        (RemoteError("bad", Code.INTEGRITY), "integrity", "INTEGRITY"),
        (LocalError("stop", Code.SHUTDOWN), "cancelled", ""),
        (UsageError("no file"), "client_error", ""),
        (OSError(28, "No space left on device"), "client_error", ""),
        (ValueError("bug"), "error", ""),
    ],
)
def test_classify(exc, category, code):
    got = classify(exc)
    assert got[0] == category and got[1] == code and got[0] in stress_report.CATEGORIES
    assert got[2]


def test_result_table_json_csv():
    records = [rec(0), rec(1, ok=False, category="busy")]
    s = summarize(records, op="upload", size=10**6, clients=2, wall_seconds=1.0)
    result = stress.StressResult(records, s)
    assert not result.ok
    table = result.table()
    assert [row["worker"] for row in table] == [0, 1] and set(table[0]) == set(stress_report.RECORD_FIELDS)
    assert json.loads(result.to_json())["summary"]["failed"] == 1
    lines = result.to_csv().splitlines()
    assert lines[0].split(",") == list(stress_report.RECORD_FIELDS) and len(lines) == 3
    assert "MB = 10^6" in result.format()


def test_bad_arguments_are_usage_errors(tmp_path):
    for kwargs in ({"op": "delete"}, {"pool": "fiber"}, {"clients": 0}, {"size": "ten"}, {"encoding": "hex"}):
        args = {"op": "upload", "size": "1KB", "clients": 1, "pool": "thread", **kwargs}
        with pytest.raises(UsageError):
            stress.run(args.pop("op"), args.pop("size"), args.pop("clients"), port=1, files_dir=tmp_path,
                       progress=False, **args)  # fmt: skip


# --------------------------------------------------------------------------
# Integration: real servers
# --------------------------------------------------------------------------

networked = pytest.mark.timeout(60)


def children() -> set[int]:
    """Live child processes of this test process, except multiprocessing's resource tracker and fork server."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
            infrastructure = "resource_tracker" in cmd or ("forkserver" in cmd and p.ppid() == os.getpid())
            if p.status() != psutil.STATUS_ZOMBIE and not infrastructure:  # forked workers do count
                out.add(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@networked
@pytest.mark.parametrize("pool", ["thread", "process"])
@pytest.mark.parametrize("op", ["upload", "download"])
def test_run_against_both_server_models(start_server, model, pool, op, client_dirs, tmp_path):
    files, downloads = client_dirs
    root = tmp_path / "root"
    srv = start_server(model, workers=2, root=root)
    before = children()
    seen, finished = [], []
    result = stress.run(op, "300KB", 3, pool, *srv.address, files_dir=files, downloads_dir=downloads,
                        progress=lambda n: seen.append(n), on_record=finished.append, timeout=20, time_limit=40)  # fmt: skip
    s = result.summary
    assert (s["ok"], s["failed"]) == (3, 0), result.format()
    assert s["ok"] + s["failed"] == 3 == len(result.records)
    assert s["server_measured"] and (s["server_ok"], s["server_failed"], s["server_busy"]) == (3, 0, 0)
    assert sum(seen) == 3 * 300_000  # every byte reached the one progress callback
    assert sorted(r.worker for r in finished) == [0, 1, 2]
    source = files / "300KB.bin"
    for r in result.records:
        assert r.ok and r.bytes == 300_000 and r.sha256 == sha(source)
        assert r.total_seconds >= r.transfer_seconds > 0 and r.wait_seconds >= 0
        assert r.throughput == pytest.approx(r.bytes / r.total_seconds)
    if op == "download":  # one file per worker, each verified
        names = sorted(p.name for p in downloads.iterdir())
        assert names == ["w00-300KB.bin", "w01-300KB.bin", "w02-300KB.bin"]
        assert all(sha(downloads / n) == sha(source) for n in names)
    else:
        assert sha(root / "300KB.bin") == sha(source)
    assert children() <= before, "client worker processes left behind"


@networked
def test_download_digest_mismatch_is_integrity(start_server, client_dirs, tmp_path):
    files, downloads = client_dirs
    srv = start_server("thread", workers=2, root=tmp_path / "root")
    result = stress.run("download", "10KB", 2, "thread", *srv.address, files_dir=files, downloads_dir=downloads,
                        expected_sha256="0" * 64, progress=False)  # fmt: skip
    assert [r.category for r in result.records] == ["integrity", "integrity"]
    assert result.summary["failures"] == {"integrity": 2}


@networked
def test_missing_upload_file_is_created_and_keep_downloads_false(start_server, client_dirs, tmp_path):
    files, downloads = client_dirs
    srv = start_server("thread", workers=2, root=tmp_path / "root")
    result = stress.run("download", "20KB", 2, "thread", *srv.address, files_dir=files, downloads_dir=downloads,
                        keep_downloads=False, progress=False)  # fmt: skip
    assert (files / "20KB.bin").stat().st_size == 20_000
    assert result.ok and result.summary["digest_reference"] == "expected"
    assert list(downloads.iterdir()) == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@networked
def test_refused_when_nobody_listens(client_dirs):
    files, downloads = client_dirs
    result = stress.run("upload", "1KB", 2, "thread", "127.0.0.1", closed_port(), files_dir=files,
                        downloads_dir=downloads, progress=False)  # fmt: skip
    assert [r.category for r in result.records] == ["refused", "refused"]
    assert not result.summary["server_measured"] and "STATS" in result.summary["server_note"]


class FakeServer:
    """A loopback listener with scripted behaviour, to produce each failure category on purpose."""

    def __init__(self, behaviour: str, expect: int = 0, on_all=None):
        self.behaviour, self.expect, self.on_all = behaviour, expect, on_all
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.address = self.sock.getsockname()[:2]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            if self.behaviour == "busy":
                conn.sendall(b"ERR BUSY all workers busy\r\n")
                conn.close()
            elif self.behaviour == "garbage":
                conn.sendall(b"HELLO I AM NOT LABNET\r\n")
            elif self.behaviour == "close":
                conn.close()
            elif self.behaviour == "bad-digest":
                threading.Thread(target=self._bad_download, args=(conn,), daemon=True).start()
            if self.expect and len(self.conns) == self.expect and self.on_all:
                self.on_all()

    def _bad_download(self, conn):
        """Greets, lists one 3-byte file, and sends it with a wrong SHA-256 trailer."""
        conn.settimeout(10)
        conn.sendall(b"OK LABNET 1 READY\r\n")
        f = conn.makefile("rb")
        for line in f:
            verb = line.split()[0].upper() if line.split() else b""
            if verb == b"LIST":
                conn.sendall(b"OK 1 files\r\n3 x.bin\r\n")
            elif verb == b"DOWNLOAD":
                conn.sendall(b"OK 3 raw 3\r\nabcSHA256 " + b"0" * 64 + b"\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"OK BYE\r\n")
                break
        conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def fake():
    made = []

    def make(behaviour, **kw):
        f = FakeServer(behaviour, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


@networked
@pytest.mark.parametrize("behaviour, category", [("busy", "busy"), ("garbage", "protocol"), ("close", "reset")])
def test_failure_categories(fake, client_dirs, behaviour, category):
    files, downloads = client_dirs
    srv = fake(behaviour)
    result = stress.run("upload", "1KB", 2, "thread", *srv.address, files_dir=files, downloads_dir=downloads,
                        progress=False, server_stats=False, timeout=5, time_limit=10)  # fmt: skip
    assert [r.category for r in result.records] == [category, category], result.format()
    if category == "busy":
        assert all(r.code == "BUSY" for r in result.records)


@networked
def test_wrong_trailer_digest_is_integrity(fake, client_dirs):
    files, downloads = client_dirs
    srv = fake("bad-digest")
    (files / "x.bin").write_bytes(b"abc")
    result = stress.run("download", 3, 2, "thread", *srv.address, name="x.bin", encoding="raw", files_dir=files,
                        downloads_dir=downloads, progress=False, server_stats=False, timeout=5, time_limit=10)  # fmt: skip
    assert [r.category for r in result.records] == ["integrity", "integrity"], result.format()
    assert list(downloads.iterdir()) == []  # nothing unverified appears


@networked
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_time_limit_ends_a_server_that_never_answers(fake, client_dirs, pool):
    files, downloads = client_dirs
    srv = fake("silent")
    before = children()
    result = stress.run("upload", "1KB", 2, pool, *srv.address, files_dir=files, downloads_dir=downloads,
                        progress=False, server_stats=False, timeout=30, time_limit=1.0)  # fmt: skip
    assert [r.category for r in result.records] == ["timeout", "timeout"], result.format()
    assert children() <= before


@networked
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_cancel_event_ends_the_run_cleanly(fake, client_dirs, pool):
    files, downloads = client_dirs
    cancel = threading.Event()
    srv = fake("silent", expect=3, on_all=cancel.set)  # cancel once every worker is connected
    before = children()
    result = stress.run("upload", "1KB", 3, pool, *srv.address, files_dir=files, downloads_dir=downloads,
                        progress=False, server_stats=False, timeout=30, time_limit=50, cancel=cancel)  # fmt: skip
    assert [r.category for r in result.records] == ["cancelled"] * 3
    assert result.summary["cancelled"] and result.summary["ok"] + result.summary["failed"] == 3
    assert children() <= before


@networked
def test_keyboard_interrupt_leaves_no_worker_process(fake, client_dirs):
    files, downloads = client_dirs
    srv = fake("silent", expect=3, on_all=lambda: os.kill(os.getpid(), signal.SIGINT))
    before = children()
    # A suite started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    # leaves it so: Ctrl-C is what this test is about, so it gets Python's own handler for its duration.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            stress.run("upload", "1KB", 3, "process", *srv.address, files_dir=files, downloads_dir=downloads,
                       progress=False, server_stats=False, timeout=30, time_limit=50)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert children() <= before, "worker processes left behind after KeyboardInterrupt"


@networked
def test_cli_seed_form_json_and_csv(start_server, client_dirs, tmp_path):
    files, downloads = client_dirs
    srv = start_server("process", workers=2, root=tmp_path / "root")
    base = [sys.executable, "-m", "labnet", "stress"]
    common = ["--port", str(srv.port), "--files", str(files), "--dest", str(downloads), "--no-progress"]
    out = subprocess.run(base + ["upload", "50KB", "3", "thread", "--json"] + common, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["summary"]["ok"] == 3 and data["summary"]["server_ok"] == 3 and len(data["records"]) == 3
    out = subprocess.run(base + ["download", "50KB", "2", "--csv"] + common, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("worker,op,ok") and len(lines) == 3
    out = subprocess.run(base + ["upload", "50KB", "2"] + common, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "server (STATS before/after): 2 ok, 0 failed" in out.stdout
    out = subprocess.run(base + ["upload", "ten", "2"] + common, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "not a size" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(base + ["upload", "1KB", "2", "--port", str(closed_port()), "--files", str(files),
                                "--no-progress"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "refused" in out.stdout


@networked
def test_forkserver_start_method(start_server, client_dirs, tmp_path):
    files, downloads = client_dirs
    srv = start_server("thread", workers=2, root=tmp_path / "root")
    before = children()
    result = stress.run("upload", "20KB", 2, "process", *srv.address, files_dir=files, downloads_dir=downloads,
                        progress=False, start_method="forkserver")  # fmt: skip
    assert result.ok and result.config["start_method"] == "forkserver", result.format()
    assert children() <= before


def test_summary_counts_the_clients_told_to_wait_in_line():
    records = [WorkerRecord(worker=i, op="download", ok=True, size=10, bytes=10, total_seconds=1.0, throughput=10.0,
                            queue_position=p) for i, p in enumerate([0, 1, 2, 0])]  # fmt: skip
    s = summarize(records, op="download", size=10, clients=4, wall_seconds=1.0)
    assert (s["queued"], s["queue_longest"]) == (2, 2)
    assert "queued: 2 of 4 clients were told to wait in line (the longest line: 2)" in stress_report.format_summary(s)
