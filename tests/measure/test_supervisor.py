"""labnet.measure.supervisor: students' commands killed whole, whatever happens, and measured.

Every test runs with a unique environment marker, which every process it starts inherits; at the
end of each test no process carrying it may be alive (``procfind.processes_with_env``).
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from procfind import processes_with_env

from labnet.errors import LabnetError, UsageError
from labnet.measure import supervisor
from labnet.measure.supervisor import (
    PortNotFree,
    ServerDidNotStart,
    Supervised,
    SupervisorError,
    probe_cgroup_memory,
    stop_all,
    wait_port_free,
)
from labnet.procutil import alive

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
MARK = "LABNET_SUPERVISOR_TEST"
CGROUP_PARENT, CGROUP_WHY = probe_cgroup_memory()


@pytest.fixture(autouse=True)
def no_process_left(monkeypatch, tmp_path):
    """Marks every process the test starts; fails the test if any of them outlives it.  Logs (kept
    for the student by default) go to the test's own folder."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(MARK, tag)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield tag
    stop_all()
    left = wait_for(lambda: not processes_with_env(MARK, tag), timeout=10, fail=False)
    found = processes_with_env(MARK, tag)
    for pid, _ in found:
        os.kill(pid, signal.SIGKILL)
    assert left and not found, f"processes left behind: {found}"


def wait_for(predicate, timeout: float = 10.0, fail: bool = True):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            if fail:
                raise AssertionError(f"not true after {timeout} s: {predicate}")
            return value
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def all_gone(pids) -> bool:
    return not [p for p in pids if alive(p)]


# A "student" server: listens on argv[1], forks two children (os.fork, or a process pool), and
# logs every connection with the bytes it received before EOF.
SERVER = """
    import os, socket, sys, time
    port, kind = int(sys.argv[1]), sys.argv[2]
    if kind == "fork":
        for _ in range(2):
            if os.fork() == 0:
                while True:
                    time.sleep(1)
    else:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(2)
        jobs = [pool.submit(time.sleep, 600) for _ in range(2)]
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    print("listening on", port, flush=True)
    while True:
        c, _ = s.accept()
        data = c.recv(100)
        print("connection: got", len(data), "bytes", flush=True)
        c.close()
"""

SLEEPER = """
    import time
    print("sleeping", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["fork", "pool"])
def test_a_server_and_its_children_are_killed_whole(tmp_path, kind):
    port = free_port()
    with Supervised([PY, script(tmp_path, "srv.py", SERVER), str(port), kind], cwd=tmp_path) as sup:
        sup.wait_listening("127.0.0.1", port, timeout=20)
        pids = wait_for(lambda: len(sup.pids()) >= 3 and sup.pids())
        assert sup.pid == pids[0] and os.getpgid(sup.pid) == sup.pid != os.getpgid(0)  # a group of its own
        assert sup.guard.pid not in pids
    result = sup.result
    assert all_gone(pids) and not alive(sup.guard.pid)
    assert result.returncode == -signal.SIGTERM and not result.timed_out and not result.memory_exceeded
    assert set(pids) <= result.pids_seen and result.peak_tree_rss > 1_000_000
    # the readiness probe sent nothing and closed at once
    assert "connection: got 0 bytes" in result.tail and "listening on" in result.tail
    assert sup.stop() is result  # idempotent


def test_a_shell_template_with_background_jobs_is_killed_whole(tmp_path):
    a, b = script(tmp_path, "a.py", SLEEPER), script(tmp_path, "b.py", SLEEPER)
    with Supervised(f"{PY} {a} & {PY} {b}; wait", cwd=tmp_path) as sup:
        pids = wait_for(lambda: len(sup.pids()) >= 3 and sup.pids())  # sh and two pythons
        wait_for(lambda: sup.tail().count("sleeping") == 2)
    assert all_gone(pids) and sup.result.returncode is not None


DAEMON = """
    import os, sys, time
    if os.fork() == 0:          # the classic daemon double fork, out of the group and the session
        os.setsid()
        if os.fork() == 0:
            open(sys.argv[1], "w").write(str(os.getpid()))
            while True:
                time.sleep(1)
        os._exit(0)
    if sys.argv[2] == "stay":
        time.sleep(600)
"""


def test_a_descendant_that_escaped_its_group_is_killed_too(tmp_path):
    pidfile = tmp_path / "daemon.pid"
    with Supervised([PY, script(tmp_path, "d.py", DAEMON), pidfile, "stay"]) as sup:
        daemon = int(wait_for(lambda: pidfile.exists() and pidfile.read_text()))
        assert os.getpgid(daemon) != sup.pid and daemon in sup.pids()  # the guard is its subreaper
    assert all_gone([daemon])


def test_what_a_command_leaves_running_when_it_ends_is_stopped_and_said(tmp_path):
    pidfile = tmp_path / "daemon.pid"
    sup = Supervised([PY, script(tmp_path, "d.py", DAEMON), pidfile, "go"]).start()
    result = sup.wait(timeout=20)
    assert result.returncode == 0 and not result.timed_out
    assert all_gone([int(pidfile.read_text())])
    assert "left 1 process(es) running; they were stopped" in result.tail


def test_a_server_that_exits_at_once_raises_with_its_status_and_tail(tmp_path):
    bad = script(tmp_path, "bad.py", "import sys\nsys.exit('boom: port 80 needs root')\n")
    with Supervised([PY, bad]) as sup:
        with pytest.raises(ServerDidNotStart) as err:
            sup.wait_listening("127.0.0.1", free_port(), timeout=20)
    assert isinstance(err.value, LabnetError)
    assert err.value.returncode == 1 and "boom: port 80 needs root" in err.value.tail
    assert "exited with status 1" in str(err.value) and "boom" in str(err.value)
    assert sup.result.returncode == 1 and "boom" in sup.result.describe()


def test_a_server_that_never_listens_fails_within_the_timeout(tmp_path):
    with Supervised([PY, script(tmp_path, "s.py", SLEEPER)]) as sup:
        wait_for(lambda: "sleeping" in sup.tail())
        t0 = time.monotonic()
        with pytest.raises(ServerDidNotStart) as err:
            sup.wait_listening("127.0.0.1", free_port(), timeout=0.5)
        assert time.monotonic() - t0 < 5
        assert err.value.returncode is None and "still running" in str(err.value)
        assert "sleeping" in err.value.tail


def test_a_port_answered_by_another_process_is_not_ready(tmp_path):
    stranger = socket.create_server(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    try:
        with Supervised([PY, script(tmp_path, "s.py", SLEEPER)]) as sup:
            with pytest.raises(ServerDidNotStart):
                sup.wait_listening("127.0.0.1", port, timeout=0.5)
    finally:
        stranger.close()


def test_a_command_that_cannot_run_says_so(tmp_path):
    result = Supervised([str(tmp_path / "no-such-program")]).start().wait(timeout=20)
    assert result.returncode == 127 and "cannot run" in result.tail


def test_a_hanging_client_is_stopped_at_its_time_limit(tmp_path):
    sup = Supervised([PY, script(tmp_path, "s.py", SLEEPER)]).start()
    pids = wait_for(sup.pids)
    t0 = time.monotonic()
    result = sup.wait(timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert result.timed_out and result.returncode == -signal.SIGTERM and all_gone(pids)
    assert "time limit" in result.describe()


def test_a_client_that_ends_reports_its_status(tmp_path):
    result = Supervised([PY, "-c", "print('done'); raise SystemExit(3)"]).start().wait(timeout=20)
    assert (result.returncode, result.timed_out, result.tail) == (3, False, "done")
    assert result.describe().startswith("the command exited with status 3")


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    stubborn = script(tmp_path, "st.py", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
    """)
    sup = Supervised([PY, stubborn], grace=0.3).start()
    wait_for(lambda: "ready" in sup.tail())
    t0 = time.monotonic()
    assert sup.stop().returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 5


def test_sigint_is_relayed_to_the_command_group(tmp_path):
    polite = script(tmp_path, "p.py", """
        import time
        print("ready", flush=True)
        try:
            time.sleep(600)
        except KeyboardInterrupt:
            print("interrupted, bye", flush=True)
            raise SystemExit(130)
    """)
    sup = Supervised([PY, polite]).start()
    wait_for(lambda: "ready" in sup.tail())
    sup.guard.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does to the guard
    result = sup.wait(timeout=20)
    assert result.returncode == 130 and "interrupted, bye" in result.tail and not result.timed_out


def test_an_exception_in_the_with_block_stops_everything(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with Supervised([PY, script(tmp_path, "s.py", SLEEPER)]) as sup:
            pids = wait_for(sup.pids)
            raise KeyboardInterrupt
    assert sup.result is not None and all_gone(pids)


def test_an_abandoned_supervisor_stops_its_command_when_collected(tmp_path):
    sup = Supervised([PY, script(tmp_path, "s.py", SLEEPER)]).start()
    pids = wait_for(sup.pids)
    del sup
    gc.collect()
    wait_for(lambda: all_gone(pids))


CALLER = """
    import sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from labnet.measure.supervisor import Supervised
    started = []
    go = lambda: started.append(Supervised([sys.executable, sys.argv[2]]).start())
    if sys.argv[3] == "thread":     # no parent-death signal then: the guard watches its parent's PID
        t = threading.Thread(target=go)
        t.start()
        t.join()
    else:
        go()
    sup = started[0]
    while len(sup.pids()) < 2:
        time.sleep(0.02)
    print(sup.guard.pid, *sup.pids(), flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_when_the_caller_is_killed_the_command_goes_too(tmp_path, where):
    child = script(tmp_path, "c.py", """
        import os, time
        os.fork()
        print("up", flush=True)
        time.sleep(600)
    """)
    caller = subprocess.Popen([PY, script(tmp_path, "caller.py", CALLER), ROOT, child, where],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        pids = [int(p) for p in caller.stdout.readline().split()]
        assert len(pids) >= 3 and all(alive(p) for p in pids), pids  # the guard outlived the starting thread
        caller.kill()
        caller.wait(10)
        wait_for(lambda: all_gone(pids), timeout=10)
    finally:
        caller.kill()
        caller.wait(10)
        caller.stdout.close()


HOG = """
    import os, sys, time
    if sys.argv[1] == "two":    # two processes of 100 MB: each under the limit, together over it
        os.fork()
        steps = 5
    else:
        steps = 15
    held = []
    for i in range(steps):
        held.append(bytearray(b"x") * 20_000_000)   # written, so resident
        print("allocated", 20 * (i + 1), "MB", flush=True)
        time.sleep(0.05)
    print("ALL ALLOCATED", flush=True)
    time.sleep(600)
"""


def hog(tmp_path, shape: str, mechanism: str) -> Supervised:
    return Supervised([PY, script(tmp_path, "hog.py", HOG), shape], memory_limit="150MB",
                      memory_mechanism=mechanism).start()  # fmt: skip


@pytest.mark.parametrize("shape", ["one", "two"])
def test_the_watchdog_stops_a_tree_over_its_memory_limit(tmp_path, shape):
    sup = hog(tmp_path, shape, "watchdog")
    assert sup.memory_guard == "watchdog"
    result = sup.wait(timeout=60)
    assert result.memory_exceeded and result.memory_mechanism == "watchdog" and not result.timed_out
    assert result.returncode == -signal.SIGKILL and "ALL ALLOCATED" not in result.tail
    assert "over its memory limit of 150 MB" in result.tail and "memory limit" in result.describe()
    assert 150_000_000 < result.peak_tree_rss < 400_000_000


def our_cgroups(parent: Path) -> list[Path]:
    return [d for d in parent.iterdir() if d.name.startswith(f"labnet-{os.getpid()}-")]


@pytest.mark.skipif(CGROUP_PARENT is None, reason=f"no cgroup v2 memory controller here: {CGROUP_WHY}")
def test_the_cgroup_stops_a_tree_over_its_memory_limit(tmp_path):
    sup = hog(tmp_path, "one", "cgroup")
    [cgroup] = our_cgroups(CGROUP_PARENT)
    assert sup.memory_guard == "cgroup" and (cgroup / "memory.max").read_text().strip() == "150000000"
    result = sup.wait(timeout=60)
    assert result.memory_exceeded and result.memory_mechanism == "cgroup"
    assert result.returncode == -signal.SIGKILL and "ALL ALLOCATED" not in result.tail
    assert not our_cgroups(CGROUP_PARENT)  # cleaned up


def test_a_cgroup_the_command_was_not_moved_into_leaves_the_watchdog_in_charge(tmp_path, monkeypatch):
    # a plain folder stands for the cgroup: everything is written as for a real one, but the
    # kernel does not move the command, and the supervisor must notice it
    fake = tmp_path / "cgroups"
    fake.mkdir()
    monkeypatch.setattr(supervisor, "probe_cgroup_memory", lambda: (fake, "a folder posing as a cgroup"))
    sup = hog(tmp_path, "one", "auto")
    [cgroup] = our_cgroups(fake)
    assert (cgroup / "memory.max").read_text() == "150000000" and (cgroup / "memory.swap.max").read_text() == "0"
    assert (cgroup / "cgroup.procs").read_text() == "0"  # written by the command's process before exec
    assert sup.memory_guard == "watchdog" and "was not moved into" in sup.memory_note
    result = sup.wait(timeout=60)
    assert result.memory_exceeded and result.memory_mechanism == "watchdog"


@pytest.mark.skipif(CGROUP_PARENT is not None, reason="this machine has a cgroup v2 memory controller")
def test_without_a_cgroup_auto_falls_back_to_the_watchdog_and_cgroup_refuses(tmp_path):
    sup = Supervised([PY, "-c", "pass"], memory_limit="150MB")
    assert sup.start().memory_guard == "watchdog" and sup.memory_note == CGROUP_WHY
    assert not sup.wait(timeout=20).memory_exceeded
    with pytest.raises(SupervisorError, match="memory_mechanism='cgroup', but"):
        Supervised([PY, "-c", "pass"], memory_limit="150MB", memory_mechanism="cgroup").start()


def test_no_memory_limit_means_no_mechanism(tmp_path):
    sup = Supervised([PY, "-c", "pass"]).start()
    result = sup.wait(timeout=20)
    assert sup.memory_guard is None and result.memory_mechanism is None and not result.memory_exceeded


def test_bad_arguments_are_usage_errors(tmp_path):
    for kwargs in ({"memory_mechanism": "rlimit"}, {"cwd": tmp_path / "missing"}):
        with pytest.raises(UsageError):
            Supervised([PY, "-c", "pass"], **kwargs)
    with pytest.raises(UsageError):
        Supervised([])


def time_wait_port() -> int:
    """A port with a connection in TIME_WAIT: the server side closes first (the active closer waits)."""
    listener = socket.socket()  # no SO_REUSEADDR, like a sloppy student server
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()
    assert client.recv(1) == b""
    client.close()
    listener.close()
    return port


def test_wait_port_free_waits_out_time_wait_within_its_bound():
    port = time_wait_port()
    messages = []
    t0 = time.monotonic()
    try:
        waited = wait_port_free("127.0.0.1", port, timeout=0.6, on_wait=messages.append)
    except PortNotFree as err:  # the usual case: TIME_WAIT lasts 60 s on Linux
        assert 0.5 < time.monotonic() - t0 < 5
        assert "TIME_WAIT" in str(err) and f"port {port}" in str(err)
        assert len(messages) == 1 and "TIME_WAIT" in messages[0] and "SO_REUSEADDR" in messages[0]
    else:  # a kernel that lets the port go early
        assert waited < 1


def test_wait_port_free_returns_at_once_for_a_free_port_and_names_a_busy_one():
    messages = []
    assert wait_port_free("127.0.0.1", free_port(), timeout=5, on_wait=messages.append) < 1 and not messages
    with socket.create_server(("127.0.0.1", 0)) as busy:
        with pytest.raises(PortNotFree, match="in use"):
            wait_port_free("127.0.0.1", busy.getsockname()[1], timeout=0.3)


def test_the_guard_runs_by_hand_as_a_module():
    out = subprocess.run([PY, "-m", "labnet.measure.supervisor", "--", PY, "-c", "print('hi')"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "hi")
    out = subprocess.run([PY, "-m", "labnet.measure.supervisor"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 1 and "usage:" in out.stderr


def test_stop_all_stops_every_running_command(tmp_path):
    sups = [Supervised([PY, script(tmp_path, "s.py", SLEEPER)]).start() for _ in range(2)]
    pids = [p for sup in sups for p in wait_for(sup.pids)]
    stop_all()
    assert all(sup.result is not None for sup in sups) and all_gone(pids)


def test_a_forked_child_does_not_stop_its_parents_commands(tmp_path):
    sup = Supervised([PY, script(tmp_path, "s.py", SLEEPER)]).start()
    pids = wait_for(sup.pids)
    child = os.fork()
    if child == 0:  # what a fork-based pool worker would do at exit
        stop_all()
        sup.stop()
        os._exit(0)
    os.waitpid(child, 0)
    assert all(alive(p) for p in pids)
    sup.stop()
    assert all_gone(pids)


def test_the_sampler_thread_ends_with_the_supervisor(tmp_path):
    before = {t for t in threading.enumerate() if t.name == "labnet-supervisor-sampler"}
    Supervised([PY, "-c", "pass"]).start().wait(timeout=20)
    wait_for(lambda: {t for t in threading.enumerate() if t.name == "labnet-supervisor-sampler"} <= before)
