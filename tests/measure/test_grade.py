"""labnet grade: manifests checked and written, rows selected, claims judged, the class table, namespaces,
and one small class graded and resumed (the rest of the class is in test_grade_slow.py).

Submissions are made in tmp_path by :func:`submission`, pointing at labnet's student-style servers and
clients (labnet/notebook/students/).  Every test marks the processes it starts with an environment
variable (inherited inside a namespace too); none may outlive the test.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from procfind import no_process_outlives, processes_with_env, wait_for  # noqa: F401 (test_grade_slow imports wait_for)

from labnet import cli
from labnet.errors import UsageError
from labnet.measure import client_matrix, grade, grade_manifest, grade_report, netns
from labnet.measure.supervisor import stop_all

PY = sys.executable
MARK = "LABNET_GRADE_TEST"
ETS_HEADER = ("Nomor,Operasi,Volume,Jumlah client worker pool,Jumlah server worker pool,Waktu total per client,"
              "Throughput per client,Jumlah worker client yang sukses dan gagal,"
              "Jumlah worker server yang sukses dan gagal\n")  # fmt: skip


def server_cmd(module: str) -> str:
    return f"{PY} -m labnet.notebook.students.{module} --port {{port}} --workers {{workers}} --root {{root}}"


def submission(root: Path, name: str, server: str | None, *, client: str | None = None, table: str | None = None,
               memory: str = "300MB", budget: int = 120, extra: str = "") -> Path:  # fmt: skip
    """A submission folder with its labnet.toml (and its table as ets.csv when ``table`` is given)."""
    folder = root / name
    folder.mkdir(parents=True)
    text = f'dialect = "course"\n[student]\nid = "{name}"\nname = "Student {name}"\n'
    if server:
        text += f'[server]\nthread = "{server_cmd(server)}"\n'
    if client:
        text += (f'[client]\ncommand = "{PY} -m labnet.notebook.students.{client} {{op}} {{volume}} {{clients}} '
                 '{pool}"\nenv = { SERVER_PROTOCOL = "course" }\n')  # fmt: skip
    if table:
        (folder / "ets.csv").write_text(ETS_HEADER + table, encoding="utf-8")
        text += '[table]\ncsv = "ets.csv"\n'
    text += f'[limits]\nmemory = "{memory}"\ntime_budget = {budget}\n' + extra
    (folder / "labnet.toml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def tagged(monkeypatch):
    """Marks every process the test starts; fails the test if one of them outlives it."""
    yield from no_process_outlives(monkeypatch, MARK, stop_all)


NETNS_OK, NETNS_WHY = netns.can_create()
needs_netns = pytest.mark.skipif(not NETNS_OK, reason=f"no network namespaces here: {NETNS_WHY}")


# --------------------------------------------------------------------------
# Unit: manifest, selection, claims, class table (no sockets)
# --------------------------------------------------------------------------


def test_init_writes_a_manifest_that_checks_clean_and_never_overwrites(tmp_path, capsys):
    assert cli.main(["grade", "--init", str(tmp_path / "s1")]) == 0
    manifest, problems = grade_manifest.load_manifest(tmp_path / "s1")
    assert problems == [] and manifest.dialect == "course" and set(manifest.server_commands) == {"thread", "process"}
    assert "{op}" in manifest.client_command and manifest.table_path is None
    assert cli.main(["grade", "--init", str(tmp_path / "s1")]) == 2
    assert "exists already" in capsys.readouterr().err


def test_check_names_every_problem_as_file_field_problem(tmp_path, capsys):
    submission(tmp_path, "good", "course_thread_server")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ets.csv").write_text("Nomor,Operasi\n1,upload\n")
    (bad / "labnet.toml").write_text('dialect = "telnet"\nprofile = "nope.toml"\n[student]\nname = "x"\n'
                                     '[server]\nthread = "srv --port {prot}"\nprocess = "srv --workers {workers}"\n'
                                     '[client]\ncommand = "cli {op} {size}"\n[table]\ncsv = "ets.csv"\n'
                                     '[limits]\nmemory = "lots"\ntime_budget = -1\ncolour = "red"\n')  # fmt: skip
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "labnet.toml").write_text("dialect = \n")
    assert cli.main(["grade", "--check", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    manifest = str(bad / "labnet.toml")
    expected = ["student.id", "dialect", "profile", "server.thread", "server.process", "client.command", "table.csv",
                "limits.memory", "limits.time_budget", "limits.colour"]
    for field in expected:
        assert any(line.startswith(f"{manifest}:{field}: ") for line in out), (field, out)
    assert any("unknown placeholder {prot}" in line for line in out)
    assert any("unknown placeholder {size}" in line for line in out)
    assert any(line.startswith(str(tmp_path / "broken" / "labnet.toml")) and "not valid TOML" in line for line in out)
    assert not any(str(tmp_path / "good") in line for line in out)
    with pytest.raises(UsageError):
        grade.check_class(tmp_path / "missing-folder")


def test_the_manifest_knows_the_client_placeholders_of_client_matrix():
    assert grade_manifest.CLIENT_PLACEHOLDERS == client_matrix.CLIENT_PLACEHOLDERS


def test_select_takes_quick_ets_numbers_and_explicit_rows():
    quick = grade.parse_select(None)
    assert [s.op for s in quick] == ["download", "upload"] and all(s.quick for s in quick)
    [first, last] = grade.parse_select("1,54")
    assert (first.op, first.volume, first.clients, first.server_workers) == ("download", 10**7, 1, 1)
    assert (last.op, last.volume, last.clients, last.server_workers) == ("upload", 10**8, 50, 50)
    [row] = grade.parse_select("upload:200KB:2:3, upload:200KB:2:3")
    assert (row.op, row.volume, row.clients, row.server_workers, row.quick) == ("upload", 200_000, 2, 3, False)
    for wrong in ("55", "upload:1MB:2", "sideways:1MB:2:2", "upload:1MB:x:2", " , "):
        with pytest.raises(UsageError):
            grade.parse_select(wrong)


def test_a_submitted_table_is_read_in_the_assignments_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(ETS_HEADER.replace(",", ";") + "1;Upload;1 MB;4;2;1 s;2,5 MB/s;4 sukses / 0 gagal;4/0\n"
                    "2;download;10;1;1;1 s;850 KB/s;1 sukses, 1 gagal;-\n3;?;1 MB;x;2;;;;\n")  # fmt: skip
    claims, problems = grade_manifest.read_claims(path)
    assert len(claims) == 2 and len(problems) == 1 and "line 4" in problems[0]
    up, down = claims
    assert (up.op, up.volume, up.clients, up.server_workers, up.clients_ok, up.clients_failed) == \
        ("upload", 10**6, 4, 2, 4, 0)  # fmt: skip
    assert up.throughput_Bps == 2.5e6 and (up.server_ok, up.server_failed) == (4, 0)
    assert (down.volume, down.throughput_Bps, down.clients_failed, down.server_failed) == (10**7, 850e3, 1, None)
    assert grade_manifest.parse_throughput("3200000 bytes/s") == 3.2e6
    assert grade_manifest.parse_throughput("1.5 MiB/s") == 1.5 * 2**20


def _row(**kw) -> dict:
    row = dict(label="student", server_model="thread", client_pool="thread", op="upload", volume_bytes=10**6,
               client_workers=4, server_workers=2, status="ok", verdict="ok", failures="", clients_ok=4,
               clients_failed=0, throughput_mean_Bps=2e6, digest_mismatches=0, server_peak_tree_rss_bytes=40 * 10**6)
    row.update(kw)
    return row


def test_claims_are_contradicted_only_by_digests_and_else_flagged_for_review(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(ETS_HEADER + "1,upload,1 MB,4,2,1 s,2 MB/s,4 sukses / 0 gagal,-\n"
                    "2,download,1 MB,4,2,1 s,2 MB/s,4 sukses / 0 gagal,-\n"
                    "3,upload,1 MB,1,1,1 s,50 MB/s,1 sukses / 0 gagal,-\n"
                    "4,download,1 MB,1,1,1 s,2.5 MB/s,1 sukses / 0 gagal,-\n"
                    "5,upload,100 MB,50,50,1 s,1 MB/s,50 sukses / 0 gagal,-\n")  # fmt: skip
    rows = [_row(status="failed", verdict="truncated", failures="truncated=3", clients_ok=1, clients_failed=3),
            _row(op="download", status="failed", verdict="reset", failures="reset=1", clients_ok=3, clients_failed=1),
            _row(client_workers=1, server_workers=1),
            _row(op="download", client_workers=1, server_workers=1)]
    out = grade_report.check_claims(path, rows)
    assert [c["line"] for c in out["contradicted"]] == [2] and "truncated=3" in out["contradicted"][0]["measured"]
    assert [c["line"] for c in out["review"]] == [3, 4]  # a reset is not proof; 50 MB/s is 25x what was measured
    assert "other machines differ" in out["review"][1]["why"]
    assert (out["consistent"], out["not_measured"], out["claims"]) == (1, 1, 5)


def test_the_class_table_has_a_line_per_student_in_csv_markdown_and_html(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(ETS_HEADER + "1,upload,1 MB,4,2,1 s,2 MB/s,4 sukses / 0 gagal,-\n")
    results = [
        {"folder": "a", "student_id": "A1", "student_name": "Ana", "status": "graded", "isolation": "loopback",
         "probe": {"ok": True, "passed": 7, "required": 7, "error": "", "peak_rss_bytes": 30 * 10**6},
         "student_rows": [_row(status="failed", failures="truncated=3;reset=1", clients_ok=0, clients_failed=4)],
         "labnet_rows": [_row(label="labnet", throughput_mean_Bps=50e6)],
         "client": {"rows": [_row(label="client", failures="truncated=2", status="failed")], "note": ""},
         "claims": grade_report.check_claims(table, [_row(status="failed", failures="truncated=3")])},
        {"folder": "b", "student_id": "B2", "status": "over_budget", "notes": ["stopped after 60 s"]},
    ]
    paths = grade_report.write_class_table(results, tmp_path, isolation="loopback")
    a, b = list(csv.DictReader(paths["csv"].open()))
    assert (a["probe"], a["rows_ok"], a["truncated"], a["failures"]) == ("7/7 passed", "0/1", "3", "reset=1; truncated=3")
    assert (a["labnet_throughput_MBps"], a["contradicted"], a["peak_memory_MB"]) == ("50.0", "1", "40.0")
    assert a["client_rows_ok"] == "0/1 ok (truncated=2)"
    assert (b["status"], b["rows_ok"], b["client_rows_ok"]) == ("over_budget", "-", "not measured")
    assert "stopped after 60 s" in b["notes"]
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "| A1 | Ana | graded | 7/7 passed |" in md and "claim contradicted" in md
    assert page.count("<tr") == 3 and "<svg" in page and "claim contradicted" in page


# --------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------


@needs_netns
@pytest.mark.timeout(60)
def test_stale_namespaces_of_dead_runs_are_removed_with_what_runs_inside(tmp_path):
    dead = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = netns.create(f"{netns.PREFIX}{int(dead.stdout)}-1")
    mine = netns.create(netns.new_name())
    sleeper = subprocess.Popen(netns.exec_argv(stale, [PY, "-c", "import time; time.sleep(60)"]))
    try:
        assert wait_for(lambda: netns.pids_in(stale)), "the sleeper never entered the namespace"
        inside = subprocess.run(netns.exec_argv(mine, ["ip", "-o", "link"]), capture_output=True, text=True)
        assert [line.split(":")[1].strip() for line in inside.stdout.splitlines()] == ["lo"]  # nothing but lo
        assert netns.remove_stale() == [stale]
        assert sleeper.wait(10) == -signal.SIGKILL
        assert stale not in netns.list_names() and mine in netns.list_names()  # a live run's stays
    finally:
        sleeper.kill()
        netns.delete(stale)
        netns.delete(mine)
    assert mine not in netns.list_names()


def test_namespace_names_carry_the_runs_pid():
    name = netns.new_name()
    assert name.startswith(netns.PREFIX) and netns.owner_pid(name) == os.getpid()
    assert netns.owner_pid("labnet-grade-x-1") is None and netns.owner_pid("other-12-1") is None


# --------------------------------------------------------------------------
# Integration: a small class, graded, resumed
# --------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_class_is_graded_then_resumed_without_grading_again(tmp_path, tagged):
    subs = tmp_path / "subs"
    submission(subs, "s01", "course_thread_server", table="1,upload,200 KB,2,2,0.1 s,1 MB/s,2 sukses / 0 gagal,-\n")
    (subs / "no_manifest").mkdir()
    said = []
    summary = grade.grade_class(subs, tmp_path / "out", select="upload:200KB:2:2", say=said.append)
    assert summary.graded == ["s01"] and summary.skipped == []
    assert any("no labnet.toml" in s for s in said)
    saved = json.loads((tmp_path / "out" / "submissions" / "s01" / "result.json").read_text())
    assert saved["status"] == "graded" and saved["probe"]["ok"], saved.get("probe")
    [theirs] = saved["student_rows"]
    [ours] = saved["labnet_rows"]
    assert (theirs["status"], theirs["digests_verified"], ours["status"]) == ("ok", 2, "ok")
    assert saved["isolation"] == ("netns labnet-grade-*" if NETNS_OK else "loopback")
    assert not (tmp_path / "out" / "submissions" / "s01" / "scratch").exists()
    [line] = [r for r in summary.results]
    assert grade_report.class_row(line)["rows_ok"] == "1/1"
    assert not [n for n in netns.list_names() if netns.owner_pid(n) == os.getpid()]
    again = grade.grade_class(subs, tmp_path / "out", select="upload:200KB:2:2", say=said.append)
    assert again.graded == [] and again.skipped == ["s01"]
    assert any("finished before" in s and "--fresh" in s for s in said)
    assert (tmp_path / "out" / "class.html").is_file()


def test_the_readme_manifest_example_checks_clean(tmp_path):
    """The manifest instructors copy from the README's "Grading a class" stays valid."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    examples = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[student]" in b]
    assert len(examples) == 1
    (tmp_path / "labnet.toml").write_text(examples[0], encoding="utf-8")
    for name in re.findall(r'"[^"]*?([\w./-]+\.(?:csv|toml|py))', examples[0]):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        # files the example names exist in a real submission (a table has the assignment's header)
        (tmp_path / name).write_text(ETS_HEADER if name.endswith(".csv") else "", encoding="utf-8")
    manifest, problems = grade_manifest.load_manifest(tmp_path)
    assert manifest is not None and problems == [], problems
