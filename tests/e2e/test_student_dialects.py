"""labnet measuring students' servers in their own dialects: probe, stress, verdicts from the bytes.

The servers are the shared student-style examples in ``labnet.notebook.students`` (correct ones and
ones with one deliberate bug each), started as subprocesses on port 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labnet import stress
from labnet.client import StudentClient
from labnet.measure.probe import probe

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]


class StudentServer:
    def __init__(self, module: str, root: Path, workers: int = 3):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.log = root.parent / f"{module}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", f"labnet.notebook.students.{module}", "--port", "0",
                                      "--workers", str(workers), "--root", str(root), "--backlog", "64"],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        end = time.monotonic() + 20
        while time.monotonic() < end:
            m = re.search(r"listening on ([\d.]+):(\d+)", self.log.read_text(errors="replace"))
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                return
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.02)
        raise AssertionError("student server did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def student(tmp_path):
    started = []

    def start(module: str, workers: int = 3) -> StudentServer:
        srv = StudentServer(module, tmp_path / f"root{len(started)}", workers)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()
        assert srv.proc.poll() is not None


@pytest.mark.parametrize("module, dialect", [("course_thread_server", "course"),
                                             ("course_process_server", "course"),
                                             ("sentinel_server", "sentinel")])  # fmt: skip
def test_probe_passes_a_correct_server(student, module, dialect):
    srv = student(module)
    result = probe(dialect, srv.host, srv.port, timeout=20, server_root=srv.root)
    assert result.ok, result.format()


def test_probe_names_the_dialect_a_server_really_speaks(student):
    srv = student("course_thread_server")
    result = probe("labnet", srv.host, srv.port, timeout=10)
    assert not result.ok
    assert "try --dialect course" in result.steps[0].detail


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_stress_against_a_correct_course_server(student, tmp_path, pool):
    srv = student("course_thread_server")
    common = dict(host=srv.host, port=srv.port, dialect="course", progress=False, files_dir=tmp_path / "files",
                  downloads_dir=tmp_path / "dl", time_limit=60, timeout=20)  # fmt: skip
    up = stress.run("upload", "300KB", 3, pool, server_root=srv.root, **common)
    assert up.summary["ok"] == 3, up.format()
    assert sorted(p.name for p in srv.root.glob("w*_300kb.bin")) == ["w00_300kb.bin", "w01_300kb.bin", "w02_300kb.bin"]
    down = stress.run("download", "300KB", 3, pool, **common)
    assert down.summary["ok"] == 3, down.format()
    assert all(r.timing.startswith("first reply byte") for r in down.records)


def test_a_truncating_server_is_never_counted_as_success(student, tmp_path):
    srv = student("course_truncating_server")
    result = stress.run("upload", "2MB", 3, "thread", host=srv.host, port=srv.port, dialect="course",
                        server_root=srv.root, progress=False, files_dir=tmp_path / "files",
                        downloads_dir=tmp_path / "dl", time_limit=60, timeout=20)  # fmt: skip
    # the server answers OK for what it cut short; labnet compares the stored bytes
    assert result.summary["ok"] < 3 or all(
        (srv.root / f"w{i:02d}_2mb.bin").stat().st_size == 2_000_000 for i in range(3))
    for r in result.records:
        if not r.ok:
            stored = srv.root / f"w{r.worker:02d}_2mb.bin"
            if stored.exists():  # the server kept a file: its bytes decide
                assert r.category in ("truncated", "corrupted"), (r.category, r.message)
            else:
                assert r.category in ("server_error", "reset", "closed_early"), (r.category, r.message)
        else:
            assert (srv.root / f"w{r.worker:02d}_2mb.bin").stat().st_size == 2_000_000


@pytest.mark.parametrize("module, category", [("course_noreply_server", ("closed_early", "no_reply", "reset")),
                                              ("course_notjson_server", ("not_understood",))])  # fmt: skip
def test_broken_servers_get_their_category(student, tmp_path, module, category):
    srv = student(module)
    (srv.root / "300kb.bin").write_bytes(os.urandom(300_000))
    result = stress.run("download", "300KB", 2, "thread", host=srv.host, port=srv.port, dialect="course",
                        server_root=srv.root, progress=False, files_dir=tmp_path / "files",
                        downloads_dir=tmp_path / "dl", time_limit=30, timeout=5)  # fmt: skip
    assert result.summary["ok"] == 0
    assert {r.category for r in result.records} <= set(category), [(r.category, r.message) for r in result.records]


def test_a_reply_that_never_ends_times_out(student, tmp_path):
    srv = student("course_endless_server")
    (srv.root / "f.bin").write_bytes(os.urandom(10_000))
    with pytest.raises(TimeoutError, match="time limit"):
        StudentClient("course", host=srv.host, port=srv.port, timeout=1.0, time_limit=3.0).download("f.bin", tmp_path)
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "f.bin").exists()


def test_nothing_listening_is_said_plainly(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = probe("course", "127.0.0.1", port, timeout=5)
    assert not result.ok and result.steps[0].category == "refused"
    assert "nothing listens" in result.steps[0].detail


def test_block_by_block_base64_arrives_whole_and_is_reported(student, tmp_path):
    srv = student("sentinel_blockpad_server")
    size = 2_500_000  # three 1 MiB blocks, each padded: '=' in the middle of the stream
    (srv.root / "2500kb.bin").write_bytes(os.urandom(size))
    result = stress.run("download", size, 2, "thread", host=srv.host, port=srv.port, dialect="sentinel",
                        name="2500kb.bin", files_dir=srv.root, progress=False, downloads_dir=tmp_path / "dl",
                        time_limit=60, timeout=20)  # fmt: skip
    assert result.summary["ok"] == 2, result.format()
    assert all("padding in the middle" in r.findings for r in result.records)
    assert "padding in the middle" in result.summary["server_note"]


def test_a_lowercasing_server_corrupts_uploads_and_is_caught(student, tmp_path):
    srv = student("course_lowercase_server")
    result = stress.run("upload", "300KB", 2, "thread", host=srv.host, port=srv.port, dialect="course",
                        server_root=srv.root, progress=False, files_dir=tmp_path / "files",
                        downloads_dir=tmp_path / "dl", time_limit=60, timeout=20)  # fmt: skip
    assert result.summary["ok"] == 0
    assert {r.category for r in result.records} <= {"corrupted", "truncated", "server_error"}, \
        [(r.category, r.message) for r in result.records]
