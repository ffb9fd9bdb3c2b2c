"""labnet matrix against any server: a student's command (supervised, restarted only when the pool size
changes), one run by hand, labnet's own next to it in one CSV; failures judged by the bytes.

Every test marks the processes it starts with a unique environment variable, which every server and
guard inherits; at the end no process carrying it may be alive (``procfind.processes_with_env``).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from procfind import no_process_outlives, processes_with_env, wait_for

from labnet.errors import UsageError
from labnet.measure import matrix_plan as plan
from labnet.measure import matrix_run as ex
from labnet.measure import matrix_table
from labnet.measure.matrix_servers import LogCounter
from labnet.measure.matrix_setup import fill_template, parse_server_cmd, server_setup
from labnet.measure.supervisor import probe_cgroup_memory, stop_all

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MARK = "LABNET_MATRIX_SERVERS_TEST"


def student(module: str, root: bool = True) -> str:
    """The command template of one of labnet's student-style servers."""
    return (f"{PY} -m labnet.notebook.students.{module} --port {{port}} --workers {{workers}}"
            + (" --root {root}" if root else ""))  # fmt: skip


@pytest.fixture(autouse=True)
def tagged(monkeypatch):
    """Marks every process the test starts; fails the test if one of them outlives it."""
    yield from no_process_outlives(monkeypatch, MARK, stop_all)


@pytest.fixture
def sel(tmp_path):
    """What every run here shares: quick, thread client pool, the course dialect, files in tmp_path."""
    return dict(quick=True, client_pools="thread", progress=False, files_dir=tmp_path / "files",
                downloads_dir=tmp_path / "dl", server_cwd=ROOT, dialect="course")  # fmt: skip


# --------------------------------------------------------------------------
# Unit: the flags, the template, the log counter, the CSV (no sockets)
# --------------------------------------------------------------------------


def test_the_setup_names_the_flag_that_is_wrong(tmp_path):
    with pytest.raises(UsageError, match="--server-port does not apply"):
        server_setup(server_port=7000)
    with pytest.raises(UsageError, match="--memory-limit does not apply"):
        server_setup(dialect="course", port=6666, server_workers="5", memory_limit="500MB")
    with pytest.raises(UsageError, match="give --port"):
        server_setup(dialect="course", server_workers="5")
    with pytest.raises(UsageError, match="give --server-workers"):
        server_setup(dialect="course", port=6666)
    with pytest.raises(UsageError, match="say which model"):
        server_setup(dialect="course", server_cmd="srv --port {port} --workers {workers}")
    with pytest.raises(UsageError, match=r"no \{port\}"):
        server_setup(dialect="course", server_cmd="srv --workers {workers}", server_models="thread")
    with pytest.raises(UsageError, match=r"unknown placeholder \{prot\}"):
        server_setup(dialect="course", server_cmd="srv --port {prot}", server_models="thread")
    with pytest.raises(UsageError, match="no --server-cmd serves it"):
        server_setup(dialect="course", server_cmd=["thread=srv {port} {workers}"], server_models="thread,process")
    with pytest.raises(UsageError, match="named groups"):
        server_setup(dialect="course", server_cmd="srv {port} {workers}", server_models="thread",
                     server_log_regex=r"ok=(\d+)")  # fmt: skip
    with pytest.raises(UsageError, match="--server-workers must be one value"):
        ex.run_matrix(tmp_path / "o", dialect="course", port=6666, server_workers="1,2", quick=True, progress=False)
    hand = server_setup(dialect="course", port=6666, server_workers="5")
    assert (hand.kind, hand.label, hand.shown_model, hand.workers_declared) == ("hand", "course", "unknown", True)
    own = server_setup()
    assert (own.kind, own.label, own.dialect) == ("labnet", "labnet", "labnet")


def test_commands_per_model_and_the_template():
    assert parse_server_cmd(["thread=a {port}", "process= b {port}"]) == {"thread": "a {port}", "process": "b {port}"}
    setup = server_setup(dialect="course", server_cmd=["thread=a {port} {workers}", "process=b {port} {workers}"])
    assert setup.plan_models == ("thread", "process") and setup.label == "course"
    plain = server_setup(dialect="course", server_cmd="srv {port} {workers} {model}")
    assert plain.commands == {"thread": "srv {port} {workers} {model}", "process": "srv {port} {workers} {model}"}
    filled = fill_template("srv --port {port} --root {root} --home ${HOME}", port=6666, root="/tmp/a b")
    assert filled == "srv --port 6666 --root '/tmp/a b' --home ${HOME}"  # quoted when needed; the shell's ${..} kept
    fixed = server_setup(dialect="course", server_cmd="srv --workers {workers}", server_port=7000,
                         server_models="thread")  # fmt: skip
    assert fixed.port == 7000 and not fixed.workers_declared


def test_the_log_counter_counts_lines_or_takes_totals(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("listening on 127.0.0.1:1\nrequest ok\nrequest failed\nrequest ok\nhalf a li")
    counter = LogCounter(server_setup(dialect="course", server_cmd="s {port} {workers}", server_models="thread",
                                      server_log_regex=r"request (?:(?P<ok>ok)|(?P<failed>failed))").log_regex, log)
    assert counter.counts() == (2, 1)
    with open(log, "a") as f:
        f.write("ne\nrequest ok\n")
    assert counter.counts() == (3, 1)  # only new lines are read; the half line counted once complete
    totals = LogCounter(re.compile(r"served ok=(?P<ok>\d+) failed=(?P<failed>\d+)"), log)
    log.write_text("served ok=4 failed=0\nserved ok=9 failed=2\n")
    assert totals.counts() == (9, 2)  # a number sets the count


def test_verdict_is_the_most_serious_category():
    row = {"status": "failed", "failures": "reset=3;truncated=1;server_error=2"}
    assert matrix_table.cell_verdict(row) == "truncated"
    assert matrix_table.cell_verdict({"status": "ok", "failures": ""}) == "ok"
    assert matrix_table.cell_verdict({"status": "failed", "failures": "", "digest_mismatches": 1}) == "integrity"
    assert matrix_table.cell_verdict({"status": "skipped"}) == "skipped"
    assert matrix_table.most_serious(["timeout", "out_of_memory", "reset"]) == "out_of_memory"


def test_an_old_csv_reads_as_labnets_rows_and_is_upgraded(tmp_path):
    old_fields = [f for f in matrix_table.CSV_FIELDS if f not in matrix_table.ADDED_FIELDS]
    path = tmp_path / "ets.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_fields, lineterminator="\n")
        writer.writeheader()
        cell = plan.plan_cells(quick=True, ops="upload", volumes="100KB", clients=2, server_workers=1,
                             server_models="thread")[0]  # fmt: skip
        row = ex.finish_row({**ex.base_row(cell, "b64"), "status": "failed", "failures": "reset=1;timeout=1",
                              "clients_ok": 1, "clients_failed": 1})  # fmt: skip
        writer.writerow({k: matrix_table._to_csv_value(row[k]) for k in old_fields})
    [back] = matrix_table.read_rows(path).values()
    assert (back["label"], back["dialect"], back["verdict"]) == ("labnet", "labnet", "reset")  # reset is more serious than timeout
    assert matrix_table.row_key(back) == cell.key
    matrix_table.prepare_csv(path)  # rewritten with today's header, the row kept
    assert next(csv.reader(open(path))) == list(matrix_table.CSV_FIELDS)
    assert list(matrix_table.read_rows(path)) == [cell.key]


# --------------------------------------------------------------------------
# Integration: students' servers started by labnet
# --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_students_server_is_started_once_per_pool_size_and_measured(tmp_path, sel, tagged):
    out = tmp_path / "out"
    result = ex.run_matrix(out, ops="upload,download", volumes="200KB", clients="2", server_workers="1,2",
                           server_models="thread", label="student", server_cmd=student("course_thread_server"),
                           **sel)  # fmt: skip
    assert result.complete and result.ran == 4
    assert result.server_starts == [("thread", 1), ("thread", 2)]  # not once per cell: once per pool size
    assert len(list((out / "server-logs").glob("student_thread_x*.log"))) == 2
    for row in result.rows:
        assert (row["status"], row["verdict"], row["label"], row["dialect"]) == ("ok", "ok", "student", "course")
        assert row["clients_ok"] == 2 and row["digests_verified"] == 2 and row["digest_mismatches"] == 0
        assert row["server_measured"] is False  # a course server has no STATS: not measured, and not a failure
        assert row["Jumlah worker server yang sukses dan gagal"] == "tidak terukur (not measured)"
        assert row["server_peak_tree_rss_bytes"] > 0 and row["server_workers_declared"] is None
        assert row["memory_mechanism"] is None
    assert wait_for(lambda: not processes_with_env(MARK, tagged)), "a server outlived the run"
    again = ex.run_matrix(out, ops="upload,download", volumes="200KB", clients="2", server_workers="1,2",
                          server_models="thread", label="student", server_cmd=student("course_thread_server"),
                          plots=False, **sel)  # fmt: skip
    assert (again.ran, again.resumed, again.server_starts) == (0, 4, [])  # nothing to do: no server started


@pytest.mark.timeout(60)
def test_a_truncating_server_is_never_counted_ok(tmp_path, sel):
    root = tmp_path / "student_files"
    root.mkdir()
    volume = 3_000_000  # several MB from several clients at once: the server's short recv() comes early
    # 4 x 10 MB: the whole-file server holds ~130 MB for long enough that the watchdog sees it even on a fast,
    # quiet machine (with 3 MB files a burst of uploads could come and go between two samples)
    result = ex.run_matrix(tmp_path / "out", ops="upload", volumes="10MB", clients="4", server_workers="2",
                           server_models="thread", server_root=root, server_cmd=student("course_truncating_server"),
                           plots=False, **sel)  # fmt: skip
    [row] = result.rows
    stored = sorted(root.glob("w*_3mb.bin"))
    if row["status"] == "ok":  # then what it stored was whole, each file hashed (and removed once verified)
        assert row["digests_verified"] == 4 and row["verdict"] == "ok" and not stored
    else:
        assert row["verdict"] == "truncated", row
        failures = matrix_table.parse_failures(row["failures"])
        assert set(failures) <= {"truncated", "corrupted", "server_error", "reset", "closed_early"}, failures
        assert row["clients_ok"] + sum(failures.values()) == 4
        assert row["digest_mismatches"] >= failures.get("truncated", 0) + failures.get("corrupted", 0)
        assert all(p.stat().st_size < volume for p in stored), [p.stat().st_size for p in stored]  # kept to look at
        assert "kept to look at" in row["note"]


@pytest.mark.timeout(60)
def test_a_server_that_exits_at_once_fails_its_cells_with_its_last_lines(tmp_path, sel):
    out = tmp_path / "out"
    kw = dict(ops="upload", volumes="100KB", clients="1", server_workers="1,2", server_models="thread",
              server_cmd=student("exits_on_start"), plots=False, **sel)  # fmt: skip
    result = ex.run_matrix(out, **kw)
    assert [r["status"] for r in result.rows] == ["failed", "failed"] and result.server_starts == []
    for row in result.rows:
        assert row["verdict"] == "did_not_start" and row["failures"] == "did_not_start=1"
        assert "exited with status 1" in row["note"] and "NameError" in row["note"]  # the tail of its output
        assert len(row["note"]) < 3000 and "\n" not in row["note"]
        assert row["clients_ok"] == 0 and row["clients_failed"] == 1
    again = ex.run_matrix(out, **kw)  # nothing was measured: the next run tries again (the student fixed it?)
    assert again.ran == 2 and again.resumed == 0


@pytest.mark.timeout(60)
def test_a_server_over_its_memory_limit_is_stopped_and_said(tmp_path, sel):
    cgroup, _ = probe_cgroup_memory()
    # 4 x 10 MB: the whole-file server holds ~130 MB for long enough that the watchdog sees it even on a fast,
    # quiet machine (with 3 MB files a burst of uploads could come and go between two samples)
    result = ex.run_matrix(tmp_path / "out", ops="upload", volumes="10MB", clients="4", server_workers="2",
                           server_models="thread", memory_limit="30MB", server_cmd=student("course_thread_server"),
                           plots=False, **sel)  # course_thread_server holds whole files (and their base64) in memory
    [row] = result.rows
    assert row["status"] == "failed" and row["verdict"] == "out_of_memory", row
    assert row["memory_mechanism"] == ("cgroup" if cgroup else "watchdog")
    assert set(matrix_table.parse_failures(row["failures"])) <= {"out_of_memory"}
    assert "memory limit of 30 MB" in row["note"] and f"killed by the {row['memory_mechanism']}" in row["note"]
    assert row["server_peak_tree_rss_bytes"] > 30 * 10**6


SERVER_THAT_LOGS = """
    import labnet.notebook.students.course_thread_server as srv
    answer = srv.handle
    def handle(root, request):
        reply = answer(root, request)
        print("request", "ok" if reply["status"] == "OK" else "failed")  # no flush: labnet sets PYTHONUNBUFFERED
        return reply
    srv.handle = handle
    srv.main()
"""


@pytest.mark.timeout(60)
def test_server_counts_from_its_output_and_a_fixed_port(tmp_path, sel):
    script = tmp_path / "my_server.py"
    script.write_text(textwrap.dedent(SERVER_THAT_LOGS))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = ex.run_matrix(tmp_path / "out", ops="upload", volumes="100KB", clients="3", server_workers="1,2",
                           server_models="thread", server_port=port, plots=False,
                           server_cmd=f"{PY} {script} --port {port} --workers {{workers}} --root {{root}}",
                           server_log_regex=r"request (?:(?P<ok>ok)|(?P<failed>failed))",
                           server_env={**os.environ, "PYTHONPATH": str(ROOT)}, **sel)  # fmt: skip
    assert result.server_starts == [("thread", 1), ("thread", 2)]  # the same port twice
    for row in result.rows:
        assert row["status"] == "ok" and row["server_measured"] is True
        assert (row["server_ok"], row["server_failed"]) == (3, 0), row["note"]
        assert row["Jumlah worker server yang sukses dan gagal"] == "3 sukses / 0 gagal"


FAILS_TO_BIND_ONCE = """
    import sys
    from pathlib import Path
    first = Path(sys.argv.pop(1))
    if not first.exists():  # as a server without SO_REUSEADDR does while TIME_WAIT holds its port
        first.touch()
        sys.exit("OSError: [Errno 98] Address already in use")
    import labnet.notebook.students.course_thread_server as srv
    srv.main()
"""


@pytest.mark.timeout(60)
def test_a_fixed_port_still_held_is_waited_for_then_the_server_starts(tmp_path, sel, monkeypatch):
    from labnet.measure import matrix_servers

    waits = []
    monkeypatch.setattr(matrix_servers, "_busy", lambda host, port: True)  # TIME_WAIT, as the kernel would say
    monkeypatch.setattr(matrix_servers, "wait_port_free", lambda host, port, timeout, on_wait: waits.append(port) or 1.5)
    script = tmp_path / "srv.py"
    script.write_text(textwrap.dedent(FAILS_TO_BIND_ONCE))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = ex.run_matrix(tmp_path / "out", ops="upload", volumes="100KB", clients="1", server_workers="1",
                           server_models="thread", server_port=port, plots=False,
                           server_cmd=f"{PY} {script} {tmp_path / 'first'} --port {{port}} --workers {{workers}} "
                                      "--root {root}",
                           server_env={**os.environ, "PYTHONPATH": str(ROOT)}, **sel)  # fmt: skip
    [row] = result.rows
    assert waits == [port] and result.server_starts == [("thread", 1)]
    assert row["status"] == "ok" and f"waited 1.5 s for port {port}" in row["note"]
    assert row["server_measured"] is False and "Address already in use" in next((tmp_path / "out" / "server-logs")
                                                                                  .glob("*.log")).read_text()


@pytest.mark.timeout(60)
def test_a_server_run_by_hand_is_measured_with_its_declared_pool(tmp_path, sel):
    root = tmp_path / "hand"
    root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PY, "-m", "labnet.notebook.students.course_thread_server", "--port", str(port),
                             "--workers", "2", "--root", str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("listening on")
        sel.pop("server_cwd")
        result = ex.run_matrix(tmp_path / "out", ops="download", volumes="100KB", clients="2", server_workers="2",
                               port=port, server_root=root, plots=False, **sel)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
    [row] = result.rows
    assert (row["status"], row["server_model"], row["Jumlah server worker pool"]) == ("ok", "unknown", "2 (declared)")
    assert row["server_workers_declared"] == 2 and row["server_peak_tree_rss_bytes"] is None
    assert result.server_starts == []


# --------------------------------------------------------------------------
# A killed run, and two servers in one CSV
# --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_killed_run_resumes_and_leaves_no_students_server(tmp_path, sel, tagged):
    out = tmp_path / "out"
    args = dict(ops="upload", volumes="100KB,1MB", clients="1,2", server_workers="1,2", server_models="thread")
    cmd = [PY, "-m", "labnet", "matrix", "--quick", "--out", str(out), "--no-progress", "--no-plots",
           "--dialect", "course", "--server-cwd", str(ROOT), "--client-pools", "thread",
           "--server-cmd", student("course_thread_server"), "--ops", args["ops"], "--volumes", args["volumes"],
           "--clients", args["clients"], "--server-workers", args["server_workers"], "--models", "thread"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    csv_path = out / "ets.csv"

    def a_row_and_a_server():
        written = csv_path.exists() and len(csv_path.read_text().splitlines()) >= 2
        return written and any("course_thread_server" in c for _, c in processes_with_env(MARK, tagged))

    try:
        assert wait_for(lambda: a_row_and_a_server() or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, f"the matrix ended before it could be killed: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)  # in the middle of a cell: its server is running
    finally:
        proc.kill()
        proc.wait(10)
    assert wait_for(lambda: not processes_with_env(MARK, tagged)), processes_with_env(MARK, tagged)
    first = matrix_table.read_rows(csv_path)
    assert 1 <= len(first) < 8
    resumed = ex.run_matrix(out, server_cmd=student("course_thread_server"), plots=False, **args, **sel)
    assert (resumed.resumed, resumed.ran) == (len(first), 8 - len(first)) and resumed.complete
    final = matrix_table.read_rows(csv_path)
    for key, row in first.items():  # finished rows were not run again
        assert final[key]["finished_at"] == row["finished_at"] and final[key]["wall_s"] == row["wall_s"]
    assert all(r["status"] == "ok" for r in final.values())


@pytest.mark.timeout(60)
def test_labnets_server_and_a_students_side_by_side_in_one_csv(tmp_path, sel):
    out = tmp_path / "out"
    common = dict(ops="upload", volumes="100KB", clients="2", server_workers="1", server_models="thread",
                  quick=True, client_pools="thread", progress=False, files_dir=sel["files_dir"],
                  downloads_dir=sel["downloads_dir"])  # fmt: skip
    mine = ex.run_matrix(out, **common)
    theirs = ex.run_matrix(out, label="student", dialect="course", server_cmd=student("course_thread_server"),
                           server_cwd=ROOT, **common)  # fmt: skip
    assert (mine.label, theirs.label, theirs.resumed) == ("labnet", "student", 0)  # another label: not resumed
    rows = matrix_table.read_rows(out / "ets.csv")
    assert sorted((r["label"], r["dialect"], r["status"]) for r in rows.values()) == [
        ("labnet", "labnet", "ok"), ("student", "course", "ok")]
    labnet_row = next(r for r in rows.values() if r["label"] == "labnet")
    assert labnet_row["server_peak_rss_max_bytes"] > 0 and labnet_row["server_peak_tree_rss_bytes"] > 0
    assert {"by_label", "throughput_labnet", "throughput_student"} <= set(theirs.plot_paths)
    assert "throughput" not in theirs.plot_paths and not (out / "ets_throughput.png").exists()  # not one label's
    assert theirs.plot_paths["by_label"].read_bytes()[:4] == b"\x89PNG"
    md = (out / "ets.md").read_text()
    assert "## Server thread pool" in md and "## student (course dialect): Server thread pool" in md


@pytest.mark.timeout(60)
def test_labnets_server_serves_its_pool_sizes_cells_and_each_cell_gets_its_own_peak(tmp_path, monkeypatch):
    """OwnServers keeps one server per model and pool size; before each cell every server process's
    VmHWM starts over, a cell that broke off stops its server, ``close()`` stops the last one."""
    from labnet.measure import matrix_servers
    from labnet.measure.matrix_servers import OwnServers
    from labnet.procutil import alive

    real_reset = matrix_servers.reset_peak_rss

    cell = plan.Cell(op="download", volume=100_000, clients=2, server_workers=2, server_model="process",
                     client_pool="thread", number=1)  # fmt: skip
    with OwnServers(root=tmp_path / "srv") as servers:
        first = servers.lease(cell)
        pids = first.server.pids()
        assert len(pids) == 3  # the parent and 2 workers
        first.finish([])
        first.release()
        assert all(alive(p) for p in pids)  # kept for the next cell of this pool size
        reset = []
        monkeypatch.setattr(matrix_servers, "reset_peak_rss", lambda pid: reset.append(pid) or real_reset(pid))
        second = servers.lease(cell)
        assert second.server is first.server and servers.starts == [("process", 2)]
        assert sorted(reset) == sorted(pids)  # every process's peak starts over for this cell
        second.release()  # never finished: the cell broke off, so its server is stopped
        assert not first.server.running
        third = servers.lease(cell)
        assert third.server is not first.server and servers.starts == [("process", 2), ("process", 2)]
        third.finish([])
        third.release()
        other = servers.lease(plan.Cell(op="download", volume=100_000, clients=2, server_workers=1,
                                        server_model="thread", client_pool="thread", number=2))  # fmt: skip
        assert not third.server.running and other.server.running  # another pool size: the old one stops
        other.finish([])
        other.release()
    assert not other.server.running  # close() stopped it


def test_a_processs_peak_rss_can_start_over():
    """The mechanism behind a reused server's per-cell peak: after a 60 MB peak, VmHWM falls back."""
    from labnet.procutil import peak_rss_bytes, reset_peak_rss, rss_bytes

    big = bytearray(60_000_000)
    big[::4096] = b"x" * len(big[::4096])  # touch every page
    high = peak_rss_bytes(os.getpid())
    del big
    assert reset_peak_rss(os.getpid())
    assert peak_rss_bytes(os.getpid()) < high - 40_000_000 and peak_rss_bytes(os.getpid()) >= rss_bytes(os.getpid()) / 2
    assert not reset_peak_rss(2**22 + 12345)  # no such process: says so
