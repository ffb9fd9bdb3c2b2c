"""labnet.measure.matrix_run: the plan, the pre-flight check, the CSV, and small real matrices (both server models)."""

from __future__ import annotations

import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from labnet.errors import UsageError
from labnet.measure import matrix_plan as plan
from labnet.measure import matrix_run as ex
from labnet.measure import matrix_table

ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------
# Unit: plan, estimate, CSV (no sockets)
# --------------------------------------------------------------------------


def test_full_plan_is_54_rows_per_server_model():
    cells = plan.plan_cells(quick=False)
    assert len(cells) == 108
    for model in ("thread", "process"):
        mine = [c for c in cells if c.server_model == model]
        assert [c.number for c in mine] == list(range(1, 55))
        assert {c.client_pool for c in mine} == {"thread"}
    first, last = cells[0], cells[53]
    assert (first.op, first.volume, first.clients, first.server_workers) == ("download", 10**7, 1, 1)
    assert (last.op, last.volume, last.clients, last.server_workers) == ("upload", 10**8, 50, 50)
    assert {c.volume for c in cells} == {10_000_000, 50_000_000, 100_000_000}  # MB = 10^6
    both = plan.plan_cells(quick=False, client_pools="thread,process")
    assert len(both) == 216


def test_subsets_keep_the_full_tables_numbers():
    cells = plan.plan_cells(quick=False, ops="upload", volumes="100MB", clients=[50], server_workers="1,50",
                          server_models="process")  # fmt: skip
    assert [(c.number, c.server_workers) for c in cells] == [(52, 1), (54, 50)]
    extra = plan.plan_cells(quick=False, volumes="1MB", clients=1, server_workers=1, ops="download",
                          server_models="thread")  # fmt: skip
    assert [c.number for c in extra] == [55]  # values outside the matrix are numbered after its own


def test_quick_plan_and_env(monkeypatch):
    monkeypatch.setenv("LABNET_QUICK", "1")
    quick = plan.plan_cells()
    assert len(quick) == 32 and max(c.volume for c in quick) <= 10**6 and max(c.clients for c in quick) <= 4
    monkeypatch.setenv("LABNET_QUICK", "0")
    assert len(plan.plan_cells()) == 108


@pytest.mark.parametrize("kwargs", [{"ops": "delete"}, {"volumes": "huge"}, {"clients": "0"},
                                    {"server_workers": "x"}, {"server_models": "fiber"}, {"client_pools": "gpu"},
                                    {"clients": ""}])  # fmt: skip
def test_bad_filters(kwargs):
    with pytest.raises(UsageError):
        plan.plan_cells(**kwargs)


def test_preflight_skips_with_a_reason(tmp_path):
    big = plan.Cell("process", "process", "download", 100 * 10**6, 50, 50, 54)
    assert plan.preflight(big, [tmp_path], memory=10**12, disk_free=10**12, fd_limit=65536) is None
    reason = plan.preflight(big, [tmp_path], memory=500 * 10**6, disk_free=10**12, fd_limit=65536)
    assert reason.startswith("needs about") and "memory" in reason and "MB = 10^6" in reason
    reason = plan.preflight(big, [tmp_path], memory=10**12, disk_free=10**9, fd_limit=65536)
    assert "disk" in reason
    reason = plan.preflight(big, [tmp_path], memory=10**12, disk_free=10**12, fd_limit=100)
    assert "file descriptors" in reason
    need = plan.estimate(big)
    assert need["disk"] >= 50 * 100 * 10**6


def fake_row(number, status="ok", **kw):
    cell = plan.Cell("thread", "thread", "upload", 10**6, 5, 1, number)
    row = ex.base_row(cell, "b64")
    row.update(status=status, clients_ok=5, clients_failed=0, server_measured=True, server_ok=5, server_failed=0,
               server_busy=0, time_mean_s=0.5, time_p50_s=0.4, time_p95_s=0.9, time_max_s=1.0,
               throughput_mean_Bps=2.5e6, digests_verified=5, digest_mismatches=0, cell_seconds=1.0)  # fmt: skip
    row.update(kw)
    row["client_workers"] = kw.get("client_workers", number)  # distinct keys
    return ex.finish_row(row)


def test_display_columns_use_the_assignments_names_and_mb():
    row = fake_row(3)
    assert list(matrix_table.display_columns(row)) == list(matrix_table.ETS_NAMES)
    assert row["Throughput per client"] == "2.50 MB/s"
    assert row["Volume"] == "1 MB"
    assert row["Jumlah worker client yang sukses dan gagal"] == "5 sukses / 0 gagal"
    assert row["Jumlah worker server yang sukses dan gagal"] == "5 sukses / 0 gagal"
    assert row["Waktu total per client"].startswith("0.500 s (p50 0.400, p95 0.900)")
    skipped = ex.finish_row({**ex.base_row(plan.Cell("thread", "thread", "upload", 10**6, 5, 1, 1), "b64"),
                              "status": "skipped", "note": "needs about 9 MB of disk"})  # fmt: skip
    assert skipped["Throughput per client"] == "-" and "needs about" in skipped[matrix_table.ETS_NAMES[7]]
    md = matrix_table.ets_table([row, skipped])
    assert "Nomor (No.)" in md and "Jumlah worker server yang sukses dan gagal" in md and "MB = 10^6 bytes" in md


def test_csv_round_trip_partial_line_and_last_row_wins(tmp_path):
    path = tmp_path / "ets.csv"
    matrix_table.prepare_csv(path)
    rows = [fake_row(1), fake_row(2, status="failed", clients_ok=4, clients_failed=1)]
    for row in rows:
        matrix_table.append_row(path, row)
    read = matrix_table.read_rows(path)
    assert [r["number"] for r in read.values()] == [1, 2]
    back = read[matrix_table.row_key(rows[1])]
    assert back["clients_failed"] == 1 and back["server_measured"] is True and back["time_p95_s"] == 0.9
    assert {k: back[k] for k in matrix_table.ETS_NAMES} == {k: rows[1][k] for k in matrix_table.ETS_NAMES}
    # a kill in the middle of a write leaves a partial line: it is ignored, then cut off before appending
    with open(path, "a") as f:
        f.write("7,upload,1 MB,5,")
    assert len(matrix_table.read_rows(path)) == 2
    matrix_table.prepare_csv(path)
    assert path.read_text().endswith("\n")
    matrix_table.append_row(path, fake_row(2, clients_ok=5, clients_failed=0))
    assert matrix_table.read_rows(path)[matrix_table.row_key(rows[1])]["clients_failed"] == 0  # the last row of a cell wins
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError):
        matrix_table.read_rows(other)


# --------------------------------------------------------------------------
# Integration: small matrices against real servers
# --------------------------------------------------------------------------


def labnet_processes(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a test's own folder)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and marker in " ".join(p.info["cmdline"] or []):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_gone(marker: str, seconds: float = 15.0) -> list[int]:
    end = time.monotonic() + seconds
    left = labnet_processes(marker)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = labnet_processes(marker)
    return left


def check_rows(result, files: Path, root_marker: str):
    assert result.complete
    by_key = {matrix_table.row_key(r): r for r in result.rows}
    for cell in result.cells:
        row = by_key[cell.key]
        assert row["status"] == "ok", row
        assert row["clients_ok"] + row["clients_failed"] == cell.clients == row["client_workers"]
        assert row["clients_failed"] == 0
        assert row["server_measured"] is True
        assert (row["server_ok"], row["server_failed"]) == (cell.clients, 0)  # measured by STATS, not assumed
        assert row["digests_verified"] == cell.clients and row["digest_mismatches"] == 0
        assert row["server_peak_rss_max_bytes"] > 0
        assert row["server_processes"] == (1 if cell.server_model == "thread" else 1 + cell.server_workers)
        assert row["Nomor"] == str(cell.number)
    assert not wait_gone(root_marker), "server processes left behind"


@pytest.mark.timeout(90)
def test_small_matrix_both_models_every_row_checked(tmp_path):
    files, downloads, out = tmp_path / "files", tmp_path / "downloads", tmp_path / "out"
    seen = []
    result = ex.run_matrix(out, volumes="150KB", clients="3", server_workers="1,2", quick=True, files_dir=files,
                           downloads_dir=downloads, progress=False, on_row=seen.append)  # fmt: skip
    assert len(result.cells) == 8 and result.ran == 8 and len(seen) == 8
    check_rows(result, files, str(out))
    # one server per model and pool size, its cells run together (not one per cell)
    assert sorted(result.server_starts) == [("process", 1), ("process", 2), ("thread", 1), ("thread", 2)]
    assert [(r["server_model"], r["server_workers"]) for r in seen] == sorted(
        ((r["server_model"], r["server_workers"]) for r in seen), key=lambda k: (k[0] != "thread", k[1]))
    assert sorted(p.name for p in downloads.iterdir()) == []  # verified downloads are deleted
    text = (out / "ets.md").read_text()
    assert text.count("| download |") == 4 and text.count("| upload |") == 4 and "MB = 10^6 bytes" in text
    with open(out / "ets.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[: len(matrix_table.ETS_NAMES)] == list(matrix_table.ETS_NAMES)
    assert {p.name for p in out.glob("*.png")} == {"ets_throughput.png", "ets_time.png", "ets_counts.png"}
    assert not (out / ".server_files").exists()
    again = ex.run_matrix(out, volumes="150KB", clients="3", server_workers="1,2", quick=True, files_dir=files,
                          downloads_dir=downloads, progress=False, plots=False)  # fmt: skip
    assert (again.ran, again.resumed) == (0, 8)  # nothing is run twice


@pytest.mark.timeout(60)
def test_process_client_pool_cell(tmp_path):
    out = tmp_path / "out"
    result = ex.run_matrix(out, ops="download", volumes="100KB", clients="2", server_workers="2",
                           server_models="process", client_pools="process", quick=True, files_dir=tmp_path / "f",
                           downloads_dir=tmp_path / "d", progress=False)  # fmt: skip
    check_rows(result, tmp_path / "f", str(out))
    assert "throughput_process-clients" in result.plot_paths


@pytest.mark.timeout(60)
def test_preflight_skip_is_written_and_retried(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(plan, "mem_available", lambda: 1)
    result = ex.run_matrix(out, ops="upload", volumes="10KB", clients="2", server_workers="1", server_models="thread",
                           quick=True, files_dir=tmp_path / "f", downloads_dir=tmp_path / "d", progress=False,
                           plots=False)  # fmt: skip
    assert [r["status"] for r in result.rows] == ["skipped"] and result.skipped == 1
    assert "memory" in result.rows[0]["note"] and "dilewati" in result.rows[0][matrix_table.ETS_NAMES[7]]
    monkeypatch.undo()
    again = ex.run_matrix(out, ops="upload", volumes="10KB", clients="2", server_workers="1", server_models="thread",
                          quick=True, files_dir=tmp_path / "f", downloads_dir=tmp_path / "d", progress=False,
                          plots=False)  # fmt: skip
    assert again.ran == 1 and [r["status"] for r in again.rows] == ["ok"]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_table(tmp_path):
    """SIGKILL a `labnet matrix` half-way; the resumed run keeps finished rows and completes the same table."""
    out, files, downloads = tmp_path / "out", tmp_path / "files", tmp_path / "downloads"
    args = dict(volumes="50KB,100KB", clients="1,2", server_workers="1,2", server_models="thread",
                ops="upload")  # fmt: skip
    cmd = [sys.executable, "-m", "labnet", "matrix", "--quick", "--out", str(out), "--no-progress", "--no-plots",
           "--volumes", args["volumes"], "--clients", args["clients"], "--server-workers", args["server_workers"],
           "--models", args["server_models"], "--ops", args["ops"]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cells = plan.plan_cells(quick=True, **args)
    assert len(cells) == 8
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    csv_path = out / "ets.csv"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 3:  # header + 2 rows
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"matrix ended before it could be interrupted: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    # the killed run's server dies with it (parent-death signal / watchdog)
    assert not wait_gone(str(out)), "server outlived the killed matrix run"
    first = matrix_table.read_rows(csv_path)
    assert 2 <= len(first) < 8
    resumed = ex.run_matrix(out, quick=True, files_dir=files, downloads_dir=downloads, progress=False, plots=False,
                            **args)  # fmt: skip
    assert resumed.resumed == len(first) and resumed.ran == 8 - len(first)
    final = matrix_table.read_rows(csv_path)
    assert set(final) == {c.key for c in cells}
    for key, row in first.items():  # finished rows were not run again
        assert final[key]["finished_at"] == row["finished_at"] and final[key]["wall_s"] == row["wall_s"]
    check_rows(resumed, files, str(out))
    # the same table as an uninterrupted run: every row once, numbered as planned
    md = (out / "ets.md").read_text()
    numbers = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "Nomor" not in line]
    assert numbers == [str(c.number) for c in cells]
    assert hashlib.sha256(md.encode()).hexdigest() == hashlib.sha256(
        matrix_table.ets_table(list(matrix_table.read_rows(csv_path).values()), title="ETS: stress-test table").encode()).hexdigest()


@pytest.mark.timeout(60)
def test_cancel_ends_the_matrix_between_cells_and_resume_finishes(tmp_path):
    import threading

    out = tmp_path / "out"
    cancel = threading.Event()
    sel = dict(ops="download", volumes="10KB", clients="1", server_workers="1,2", server_models="thread", quick=True,
               files_dir=tmp_path / "f", downloads_dir=tmp_path / "d", progress=False, plots=False)  # fmt: skip
    first = ex.run_matrix(out, cancel=cancel, on_row=lambda row: cancel.set(), **sel)
    assert first.cancelled and first.ran == 1 and not first.complete
    assert (out / ".server_files").exists()  # kept for the resumed run
    second = ex.run_matrix(out, **sel)
    assert not second.cancelled and second.complete and (second.resumed, second.ran) == (1, 1)
    assert not (out / ".server_files").exists()


def test_cli_matrix_bad_filter_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "labnet", "matrix", "--quick", "--out", str(tmp_path / "o"),
                          "--volumes", "lots"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert out.returncode == 2 and "not a size" in out.stderr and "Traceback" not in out.stderr
