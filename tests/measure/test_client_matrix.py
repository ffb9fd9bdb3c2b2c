"""labnet matrix --client-cmd: a student's client against labnet's server, judged by the bytes.

Unit tests of :mod:`labnet.measure.client_verify` on hand-written connection logs and outputs (no
sockets), then real cells: the student-style clients of ``labnet.notebook.students`` (the seed's
``client_pool.py`` and the course's reference client, written again) against labnet's server in the
``sentinel`` and ``course`` dialects, and one client per fault (truncating, crashing, usage, hanging).
Every process a test starts carries a unique environment variable; none may outlive the test.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
from procfind import no_process_outlives, processes_with_env

from labnet.cli import main as labnet_main
from labnet.errors import UsageError
from labnet.measure import client_verify as cv
from labnet.measure.client_matrix import run_client_matrix
from labnet.measure.matrix_setup import free_port
from labnet.measure.supervisor import stop_all

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
STUDENTS = "labnet.notebook.students"
SEED = f"{PY} -m {STUDENTS}.seed_style_client {{op}} {{volume}} {{clients}} {{pool}}"
MARK = "LABNET_CLIENT_MATRIX_TEST"
KB100 = 100_000


def faulty(mode: str, protocol: str = "sentinel") -> str:
    return f"{PY} -m {STUDENTS}.faulty_client {mode} {{op}} {{volume}} {{clients}} {{pool}} --protocol {protocol}"


@pytest.fixture(autouse=True)
def tagged(monkeypatch):
    """Marks every process the test starts; fails the test if one of them outlives it."""
    yield from no_process_outlives(monkeypatch, MARK, stop_all)


def run(tmp_path, command, dialect="sentinel", **kw):
    opts = dict(volumes="100KB", clients="3", server_workers="2", server_models="thread", quick=True,
                time_limit=30, progress=False, lab_files=tmp_path / "lab")  # fmt: skip
    opts.update(kw)
    return run_client_matrix(tmp_path / "out", command=command, dialect=dialect, **opts)


CLIENT_MODULES = ("reference_style_client", "seed_style_client", "faulty_client")


@pytest.mark.parametrize("name", CLIENT_MODULES)
def test_the_student_style_clients_are_standalone_student_code(name):
    path = ROOT / "labnet" / "notebook" / "students" / f"{name}.py"
    text = path.read_text()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree)
    assert doc and ("``course``" in doc or "``sentinel``" in doc) and "SERVER_HOST" in doc and "SERVER_PORT" in doc
    assert f"python -m labnet.notebook.students.{name} " in doc
    assert (text.count("# BUG (deliberate)") > 0) == (name == "faulty_client")
    for node in ast.walk(tree):
        mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
        assert all(m.split(".")[0] in sys.stdlib_module_names for m in mods), f"{name} imports {mods}"
    assert text.count("\n") < 210


# --------------------------------------------------------------------------
# Pure: logs, claims, judging
# --------------------------------------------------------------------------


def conn(op, ok=True, size=KB100, accepted=100.0, started=100.5, closed=102.0, name="test_100kb.txt", padded=False):
    requests = [] if op is None else [{"op": op, "verb": op.upper(), "name": name, "ok": ok, "size": size,
                                       "error": None if ok else "connection ended during the request",
                                       "ended_by": "marker", "padded_midstream": padded}]  # fmt: skip
    return {"kind": "connection", "dialect": "sentinel", "peer": "127.0.0.1:1", "pid": 1, "accepted": accepted,
            "started": started, "closed": closed, "bytes_in": 10, "bytes_out": 10, "requests": requests}  # fmt: skip


def test_connection_log_reader_skips_a_partial_last_line_and_junk(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(conn("upload")) + "\n[1, 2]\nnot json\n" + json.dumps(conn("list"))[:30])
    assert [e["requests"][0]["op"] for e in cv.read_connection_log(path)] == ["upload"]
    assert cv.read_connection_log(tmp_path / "none.jsonl") == []


def test_server_view_times_whole_transfers_and_idle_connections():
    view = cv.server_view([conn("upload"), conn("upload", size=16384, closed=100.5), conn(None), conn("list")],
                          "upload", KB100)  # fmt: skip
    assert len(view.transfers) == 2 and view.idle_connections == 1 and view.connections == 4
    whole = view.whole
    assert len(whole) == 1 and whole[0].seconds == pytest.approx(2.0) and whole[0].wait == pytest.approx(0.5)


SEED_OUTPUT = """Starting stress test: upload test_10mb.txt | Workers: 3 | Mode: thread
[OK] Time: 0.50s | Throughput: 2000000.00 B/s | Msg: Upload successful
[FAIL] Time: 0.10s | Throughput: 0.00 B/s | Msg: [Errno 111] Connection refused
[OK] Time: 1.50s | Throughput: 1000000.00 B/s | Msg: Upload successful
--- Summary ---
Success count     : 2
Fail count        : 1
"""


def test_the_seed_s_printed_figures_are_read():
    claims = cv.client_claims(SEED_OUTPUT, cv.compile_claims(cv.SEED_CLAIMS))
    assert (claims.ok, claims.failed) == (2, 1)
    assert claims.times == [0.5, 1.5] and claims.throughputs == [2e6, 1e6]  # the failed worker's are left out


def test_a_claims_regex_needs_a_named_group():
    with pytest.raises(UsageError, match="named group"):
        cv.compile_claims(r"OK (\d+)")
    with pytest.raises(UsageError, match="not a regular expression"):
        cv.compile_claims(r"(?P<ok>")


def _judge(files, entries, op="upload", clients=3, claims=None, **kw):
    args = dict(returncode=0, timed_out=False, tail="", shown_folder="srv", file_name="test_100kb.txt")
    args.update(kw)
    return cv.judge(op=op, clients=clients, volume=KB100, files=files, view=cv.server_view(entries, op, KB100),
                    claims=claims or cv.ClientClaims(ok=clients, failed=0), **args)  # fmt: skip


def test_one_shared_truncated_upload_fails_every_worker_and_says_the_client_claimed_otherwise(tmp_path):
    stored = tmp_path / "test_100kb.txt"
    stored.write_bytes(b"x" * 16384)
    files = [cv.check_file(stored, "0" * 64, KB100)]
    row = _judge(files, [conn("upload", size=16384)] * 3)
    assert (row["status"], row["clients_ok"], row["clients_failed"], row["failures"]) == ("failed", 0, 3, "truncated=3")
    assert row["note"].startswith("client reported 3 ok, 3 uploads truncated")
    assert "per-worker verification impossible" in row["note"] and "16384 of 100000 bytes" in row["note"]
    assert row["per_worker_verified"] is False and row["time_mean_s"] is None


def test_a_shared_file_that_matches_verifies_the_whole_transfers_the_server_logged(tmp_path):
    stored = tmp_path / "test_100kb.txt"
    stored.write_bytes(b"y" * KB100)
    files = [cv.check_file(stored, cv.sha256_of(stored), KB100)]
    row = _judge(files, [conn("upload"), conn("upload"), conn("upload", ok=False, size=None)])
    assert (row["clients_ok"], row["failures"], row["server_ok"], row["server_failed"]) == (2, "incomplete=1", 2, 1)
    assert row["note"].startswith("client reported 3 ok, 2 verified")
    assert row["throughput_mean_Bps"] == pytest.approx(KB100 / 2.0)


def test_files_of_their_own_are_verified_one_by_one(tmp_path):
    files = []
    for i, content in enumerate((b"z" * KB100, b"z" * KB100, b"w" * KB100)):
        (tmp_path / f"w{i}.bin").write_bytes(content)
        files.append(cv.check_file(tmp_path / f"w{i}.bin", cv.sha256_of(tmp_path / "w0.bin"), KB100))
    entries = [conn("download", name=None)] * 3
    row = _judge(files, entries, op="download")
    assert row["per_worker_verified"] is True
    assert (row["clients_ok"], row["failures"], row["digest_mismatches"]) == (2, "corrupted=1", 1)
    assert "same size, other bytes" in row["note"]


def test_no_transfer_is_a_failure_with_the_output_never_an_empty_success():
    row = _judge([], [], returncode=2, tail="Usage: client.py op volume", claims=cv.ClientClaims())
    assert (row["status"], row["failures"], row["clients_ok"]) == ("failed", "no_transfer=3", 0)
    assert "exited with status 2 without any upload" in row["note"] and "Usage: client.py" in row["note"]
    hung = _judge([], [conn(None)], timed_out=True, returncode=-9, claims=cv.ClientClaims())
    assert hung["failures"] == "timeout=3" and "1 connection sent nothing" in hung["note"]


# --------------------------------------------------------------------------
# Real cells: the student-style clients against labnet's server
# --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_seed_s_client_gets_whole_files_in_the_sentinel_dialect(tmp_path):
    result = run(tmp_path, SEED)
    assert [r["op"] for r in result.rows] == ["download", "upload"]
    for row in result.rows:
        assert (row["status"], row["verdict"], row["clients_ok"], row["client_reported_ok"]) == ("ok", "ok", 3, 3), \
            row["note"]
        assert row["digests_verified"] == 1 and row["per_worker_verified"] is False
        assert row["server_ok"] == 3 and row["time_mean_s"] > 0 and row["client_time_mean_s"] is not None
        assert "per-worker verification impossible" in row["note"]
    assert "base64 padding mid-stream" in result.rows[1]["note"]  # block by block, stored whole
    again = run(tmp_path, SEED)  # resumed from ets.csv, with what the CSV has no column for
    assert again.ran == 0 and again.resumed == 2 and again.rows[0]["client_reported_ok"] == 3


@pytest.mark.timeout(90)
def test_the_seed_s_client_and_the_course_reference_client_in_the_course_dialect(tmp_path):
    seed = run(tmp_path, SEED + " --protocol course", dialect="course", ops="upload")  # its download: the slow test
    assert [(r["op"], r["status"], r["clients_ok"]) for r in seed.rows] == [("upload", "ok", 3)], seed.rows[0]["note"]
    assert "base64 padding mid-stream" in seed.rows[0]["note"]
    ref = run_client_matrix(tmp_path / "ref", command=f"{PY} -m {STUDENTS}.reference_style_client get {{file}}",
                            dialect="course", client_downloads=".", ops="download", volumes="100KB", clients="1",
                            server_workers="1", server_models="thread", quick=True, time_limit=30, progress=False,
                            lab_files=tmp_path / "lab")  # fmt: skip
    (row,) = ref.rows
    assert (row["status"], row["clients_ok"], row["digests_verified"], row["per_worker_verified"]) == ("ok", 1, 1, True), \
        row["note"]


@pytest.mark.timeout(60)
def test_a_truncating_client_is_flagged_against_its_own_claim(tmp_path):
    (row,) = run(tmp_path, faulty("truncating"), ops="upload").rows
    assert (row["status"], row["verdict"], row["clients_ok"], row["client_reported_ok"]) == ("failed", "truncated", 0, 3), \
        row["note"]
    assert row["note"].startswith("client reported 3 ok, 3 uploads truncated")
    assert "client reported 3 ok" in row["Jumlah worker client yang sukses dan gagal"]


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode, status, said", [("crashing", 1, "KeyError: 'SERVER_ADRESS'"),
                                                ("usage", 2, "Usage: python3 faulty_client.py")])  # fmt: skip
def test_a_client_that_never_transfers_fails_with_its_output(tmp_path, mode, status, said):
    (row,) = run(tmp_path, faulty(mode), ops="upload").rows
    assert (row["status"], row["verdict"], row["clients_ok"], row["client_exit"]) == ("failed", "no_transfer", 0, status), \
        row["note"]
    assert f"exited with status {status} without any upload" in row["note"] and said in row["note"]


@pytest.mark.timeout(60)
def test_a_hanging_client_is_killed_at_the_time_limit_and_nothing_is_left(tmp_path, tagged):
    (row,) = run(tmp_path, faulty("hanging"), ops="download", client_pools="process", time_limit=3).rows
    assert (row["status"], row["verdict"], row["client_timed_out"]) == ("failed", "timeout", True), row["note"]
    assert "killed" in row["note"] and "sent nothing" in row["note"]
    assert processes_with_env(MARK, tagged) == []  # the client's pool processes too, at once


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_the_command_line_and_a_client_whose_address_is_a_constant(tmp_path, capsys):
    port = free_port()
    constant = f"env SERVER_HOST=127.0.0.1 SERVER_PORT={port} {SEED}"  # as if written in the client's file
    argv = ["matrix", "--client-cmd", constant, "--dialect", "sentinel", "--server-port", str(port), "--quick",
            "--ops", "upload", "--volumes", "100KB", "--clients", "1", "--server-workers", "1", "--models", "thread",
            "--no-progress", "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    assert labnet_main(argv) == 0  # labnet's server listened on the port the client knows
    summary = json.loads(capsys.readouterr().out)
    assert summary["verdicts"] == {"ok": 1} and summary["label"] == "client"
    assert labnet_main(["matrix", "--client-cmd", SEED, "--out", str(tmp_path / "x")]) == 2
    assert "needs --dialect" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Slow: more combinations
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("dialect", ["sentinel", "course"])
def test_process_pools_on_both_sides_and_a_truncating_download(tmp_path, dialect):
    protocol = f" --protocol {dialect}"
    good = run(tmp_path / "good", SEED + protocol, dialect=dialect, volumes="1MB", clients="4",
               client_pools="process", server_models="process")  # fmt: skip
    assert [(r["status"], r["clients_ok"]) for r in good.rows] == [("ok", 4), ("ok", 4)]
    (row,) = run(tmp_path / "bad", faulty("truncating", dialect), dialect=dialect, ops="download").rows
    assert (row["verdict"], row["clients_ok"], row["client_reported_ok"]) == ("truncated", 0, 3)
    assert row["note"].startswith("client reported 3 ok, 3 downloads truncated")
