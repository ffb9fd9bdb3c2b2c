"""labnet grade over a whole small class (slow): a good submission with its client, a truncating server, a
server that never starts, one over its memory limit; in namespaces and on loopback; Ctrl-C and resume;
a submission over its time budget.  Helpers and the no-process-left fixture come from test_grade.py.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
from procfind import processes_with_env
from test_grade import MARK, NETNS_OK, PY, needs_netns, submission, tagged, wait_for  # noqa: F401 (fixture)

from labnet.measure import grade, netns

pytestmark = pytest.mark.slow
CLAIM_OK = "1,upload,3 MB,4,2,0.1 s,20 MB/s,4 sukses / 0 gagal,4 sukses / 0 gagal\n"


def the_class(subs):
    submission(subs, "s1_good", "course_thread_server", client="seed_style_client", table=CLAIM_OK)
    submission(subs, "s2_truncating", "course_truncating_server", table=CLAIM_OK)
    submission(subs, "s3_never_starts", "exits_on_start")
    submission(subs, "s4_memory_hog", "course_memhog_server", memory="150MB")


def read_table(out):
    return {r["folder"]: r for r in csv.DictReader((out / "class.csv").open(encoding="utf-8"))}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("use_netns", [pytest.param(True, marks=needs_netns), False], ids=["netns", "loopback"])
def test_a_class_gets_the_right_verdicts(tmp_path, use_netns, tagged):  # noqa: F811
    subs, out = tmp_path / "subs", tmp_path / "out"
    the_class(subs)
    summary = grade.grade_class(subs, out, select="upload:3MB:4:2", use_netns=use_netns, say=lambda m: None)
    assert sorted(summary.graded) == ["s1_good", "s2_truncating", "s3_never_starts", "s4_memory_hog"]
    table = read_table(out)
    good, trunc, dead, hog = (table[k] for k in sorted(table))
    assert {r["isolation"] for r in table.values()} == {"netns labnet-grade-*" if use_netns else "loopback"}
    assert (good["status"], good["probe"], good["rows_ok"], good["failures"]) == ("graded", "7/7 passed", "1/1", "-")
    assert good["contradicted"] == "0" and float(good["labnet_throughput_MBps"]) > 0
    assert good["client_rows_ok"] == "1/1 ok", good  # the seed-style client against labnet's server
    if trunc["rows_ok"] == "1/1":  # every upload happened to arrive in one piece: then nothing is contradicted
        assert trunc["contradicted"] == "0" and trunc["truncated"] == "0"
    else:
        assert int(trunc["truncated"]) >= 1 and trunc["contradicted"] == "1", trunc
    assert dead["rows_ok"] == "0/1" and "did_not_start" in dead["failures"]
    assert dead["probe"].startswith("failed: the server exited with status 1") and "NameError" in dead["probe"]
    assert hog["rows_ok"] == "0/1" and "out_of_memory" in hog["failures"] and float(hog["peak_memory_MB"]) > 150
    assert "memory limit" in hog["notes"]
    page = (out / "class.html").read_text()
    assert page.count("<tr") == 5 and "data:image/png;base64," in page  # theirs beside labnet's, drawn
    assert not [n for n in netns.list_names() if netns.owner_pid(n) == os.getpid()]


@pytest.mark.timeout(300)
def test_ctrl_c_keeps_finished_results_leaves_nothing_running_and_the_rerun_resumes(tmp_path, tagged):  # noqa: F811
    subs, out = tmp_path / "subs", tmp_path / "out"
    submission(subs, "a_first", "course_thread_server")
    submission(subs, "b_second", "course_thread_server")
    argv = [PY, "-m", "labnet", "grade", str(subs), "--out", str(out), "--select", "upload:3MB:4:2,download:3MB:4:2"]
    # SIGINT back to its default: a run started in the background by a shell inherits it ignored
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    second = out / "submissions" / "b_second"
    try:
        assert wait_for(lambda: (second / "probe-server.log").exists(), timeout=120), "never reached b_second"
        assert (out / "submissions" / "a_first" / "result.json").is_file()
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 130 and "finished submissions are kept" in err, err
    assert wait_for(lambda: not processes_with_env(MARK, tagged)), processes_with_env(MARK, tagged)
    assert not (second / "result.json").exists()
    assert not [n for n in netns.list_names() if netns.owner_pid(n) == run.pid]
    again = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "a_first: finished before (graded), skipped" in again.stdout and "b_second: graded" in again.stdout


@pytest.mark.timeout(120)
def test_a_submission_over_its_budget_is_stopped_and_said(tmp_path, tagged):  # noqa: F811
    subs = tmp_path / "subs"
    submission(subs, "slow", "never_listens", budget=3)
    summary = grade.grade_class(subs, tmp_path / "out", select="upload:200KB:1:1", say=lambda m: None)
    assert summary.graded == ["slow"]
    saved = json.loads((tmp_path / "out" / "submissions" / "slow" / "result.json").read_text())
    assert saved["status"] == "over_budget" and "time budget of 3 s" in " ".join(saved["notes"])
    assert read_table(tmp_path / "out")["slow"]["status"] == "over_budget"


@needs_netns
@pytest.mark.timeout(120)
def test_a_server_binding_every_address_is_reachable_only_inside_its_namespace(tmp_path):
    with netns.Namespace() as ns:
        server = subprocess.Popen(ns.exec_argv([PY, "-m", "labnet.notebook.students.course_thread_server",
                                                "--host", "0.0.0.0", "--port", "0", "--root", str(tmp_path)]),
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            port = int(server.stdout.readline().rsplit(":", 1)[1])
            reach = "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2).close()"
            inside = subprocess.run(ns.exec_argv([PY, "-c", reach, str(port)]), capture_output=True)
            outside = subprocess.run([sys.executable, "-c", reach, str(port)], capture_output=True)
            assert inside.returncode == 0 and outside.returncode != 0
        finally:
            server.terminate()
            server.wait(10)
