"""Notebook 08's helpers (``labnet.notebook.own_server``): servers started safely and stopped whole, raw wire bytes."""

from __future__ import annotations

import shlex
import sys

import pytest

from labnet.client import StudentClient
from labnet.errors import UsageError
from labnet.measure.supervisor import ServerDidNotStart
from labnet.notebook import own_server
from labnet.procutil import alive

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    assert own_server.stop_all() == []


def test_a_student_example_starts_on_a_free_port_and_stop_all_leaves_nothing():
    sup, host, port, root = own_server.start_student("course_thread_server", workers=2)
    assert root.is_dir() and port > 0
    (root / "a.bin").write_bytes(b"abc")
    assert StudentClient("course", host=host, port=port, timeout=10).list() == ["a.bin"]
    pids = sup.pids()
    assert pids
    assert own_server.stop_all() == []
    assert not any(alive(pid) for pid in pids) and sup.result is not None
    assert not root.exists()  # its temporary folder is removed too
    assert own_server.started()[-1].supervised is sup


def test_an_unknown_example_is_refused():
    with pytest.raises(UsageError, match="no student example"):
        own_server.start_student("../../evil")


def test_a_command_gets_its_port_and_root_and_the_wire_comes_back_raw():
    module = "labnet.notebook.students.sentinel_server"
    command = f"{shlex.quote(sys.executable)} -m {module} --port {{port}} --root {{root}} --workers 1"
    mine = own_server.start_command(command, cwd=own_server.PROJECT)
    assert mine.root is not None and mine.root.is_dir()
    assert own_server.fetch_wire(mine.host, mine.port, b"LIST") == b"No files found."
    (mine.root / "x.bin").write_bytes(b"hello")
    assert own_server.fetch_wire(mine.host, mine.port, b"DOWNLOAD x.bin") == b"aGVsbG8=__END__"


def test_a_command_without_root_keeps_its_own_folder(tmp_path):
    module = "labnet.notebook.students.course_thread_server"
    mine = own_server.start_command(f"{shlex.quote(sys.executable)} -m {module} --port {{port}} --root files_here",
                                    cwd=tmp_path)  # fmt: skip
    assert mine.root is None  # its folder is its own business: uploads are then checked by downloading back
    assert StudentClient("course", host=mine.host, port=mine.port, timeout=10).list() == []
    assert (tmp_path / "files_here").is_dir()


def test_a_command_that_ends_before_listening_is_reported_and_stopped():
    with pytest.raises(ServerDidNotStart, match="exited with status 3"):
        own_server.start_command("echo starting; exit 3", timeout=10)


def test_the_truncating_server_answers_ok_to_a_slow_upload_it_cut_short():
    sup, host, port, root = own_server.start_student("course_truncating_server", workers=1)
    data = bytes(range(256)) * 40
    reply, sent = own_server.paced_upload(host, port, "slow.bin", data)
    assert b'"status": "OK"' in reply and sent == 4000
    kept = (root / "slow.bin").read_bytes()
    assert len(kept) == 3000 and data.startswith(kept)
