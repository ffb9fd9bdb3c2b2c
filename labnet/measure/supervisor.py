"""Students' servers and clients, run safely and measured: :class:`Supervised`.

>>> with Supervised(f"python3 srv.py --port {port}", cwd=work, memory_limit="500MB") as cmd:
...     cmd.wait_listening("127.0.0.1", port, timeout=20)    # then drive it with labnet's client
>>> cmd.result.describe(), cmd.result.peak_tree_rss, cmd.result.memory_exceeded

A command (a shell string for ``/bin/sh -c``, or an argv list) runs under a small labnet **guard**,
``python -m labnet.measure.supervisor [--grace S] [--status FILE] [--cgroup DIR] -- CMD...``, which
stays in the caller's process group and starts CMD in a **session of its own** (so its group can
be killed whole; a terminal's Ctrl-C reaches the guard, which relays SIGINT).  The guard is a child
*subreaper*: a descendant that double-forks out of the group comes back to it, not to init.

Resource rules
--------------
* No orphan ever.  The guard kills the command (SIGTERM to its group, ``grace`` s, SIGKILL to the
  group and to every descendant) on SIGTERM or SIGHUP, when the command ends (what it left in the
  background goes too), and when the caller dies: parent-death signal (from the main thread only:
  it fires when the starting *thread* ends) and a parent-PID check every 0.1 s.  ``stop()`` then
  kills every PID ever seen in the tree (start time checked: a reused PID is never hit);
  idempotent, it also runs at exit (atexit) and on garbage collection.
* Output goes to a log file (append mode), never to a pipe that could fill; ``tail()``.
* ``memory_limit`` arms a cgroup v2 ``memory.max`` (swap 0, whole-group OOM kill, seen in
  ``memory.events``) where this machine lets us make a child cgroup with the memory controller,
  else a sampling watchdog (SIGKILL once the tree's summed RSS passes it: one sample late, it may
  overshoot).  Never RLIMIT_AS: it limits *virtual* memory and misfires on threaded Python.
  ``peak_tree_rss``: the larger of the biggest summed RSS and the biggest VmHWM of one process.
* ``wait_listening`` connects, sends NOTHING and closes at once: a student server may log that, or
  even crash on it (the error then says how it ended).  A port held outside the tree is not ready.
  Errors: ``ServerDidNotStart`` (``returncode``, ``tail``), ``PortNotFree``: ``SupervisorError``.

Imports ``errors``, ``config`` and ``procutil`` only; it must not import the server package, the
notebook package or the client (the guard must start fast and small).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from labnet.config import parse_size
from labnet.errors import LabnetError, UsageError
from labnet.procutil import alive, peak_rss_bytes, process_tree, rss_bytes, set_parent_death_signal

ROOT = Path(__file__).resolve().parents[2]  # the guard imports *this* labnet, whatever the command's cwd
MECHANISMS = ("auto", "cgroup", "watchdog")
_BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "  # run with -I: the student's env must not steer it
         "from labnet.measure.supervisor import guard_main; sys.exit(guard_main(sys.argv[1:]))")  # fmt: skip
_LIVE: weakref.WeakSet = weakref.WeakSet()


class SupervisorError(LabnetError):
    """A supervised command could not be run or measured as asked."""

    def __str__(self) -> str:
        return self.message


class ServerDidNotStart(SupervisorError):
    """The command ended, or never listened, before its port accepted a connection."""

    def __init__(self, message: str, returncode: int | None = None, tail: str = ""):
        super().__init__(message)
        self.returncode, self.tail = returncode, tail


class PortNotFree(SupervisorError):
    """A port stayed unbindable (TIME_WAIT, or another process) for the whole wait."""


def describe_status(rc: int | None) -> str:
    sig = signal.Signals(-rc).name if rc is not None and -rc in signal.valid_signals() else f"signal {-(rc or 0)}"
    return "ended (status unknown)" if rc is None else f"exited with status {rc}" if rc >= 0 else f"was killed by {sig}"


@dataclass(frozen=True)
class SupervisedResult:
    """What happened to a supervised command (``returncode`` is -N when signal N killed it)."""

    returncode: int | None
    timed_out: bool = False
    memory_exceeded: bool = False
    memory_mechanism: str | None = None  # what stopped it for memory: "cgroup", "watchdog" or None
    peak_tree_rss: int = 0
    pids_seen: frozenset = frozenset()
    tail: str = ""
    log_path: Path | None = None

    def describe(self) -> str:
        what = describe_status(self.returncode)
        if self.memory_exceeded:
            what = f"went over its memory limit and was killed ({self.memory_mechanism})"
        elif self.timed_out:
            what = f"ran past its time limit and was stopped ({what})"
        return f"the command {what}" + (f"; its last lines:\n{self.tail}" if self.tail else "")


def _read(path) -> str:
    with suppress(OSError):
        return Path(path).read_text()
    return ""


def _cgroup_of(pid) -> str | None:
    return next((ln[3:].strip() for ln in _read(f"/proc/{pid}/cgroup").splitlines() if ln.startswith("0::")), None)


def probe_cgroup_memory() -> tuple[Path | None, str]:
    """``(folder to make child cgroups in, how)`` where a cgroup v2 ``memory.max`` is allowed, else
    ``(None, why not)``.  Changes nothing: a cgroup that holds processes cannot enable controllers
    for its children, so this looks for the nearest ancestor that already has."""
    mount = next((Path(f[1]) for f in map(str.split, _read("/proc/self/mounts").splitlines())
                  if len(f) > 2 and f[2] == "cgroup2"), None)  # fmt: skip
    if mount is None or "memory" not in _read(mount / "cgroup.controllers").split():
        return None, (f"the cgroup v2 hierarchy at {mount} has no memory controller (cgroup v1 holds it?)"
                      if mount else "no cgroup v2 hierarchy is mounted")  # fmt: skip
    own = _cgroup_of("self") or "/"
    folder = mount / own.lstrip("/")
    while "memory" not in _read(folder / "cgroup.subtree_control").split():
        if folder == mount:
            return None, f"no cgroup above this process ({own}) enables the memory controller below it"
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        return None, f"no permission to create a cgroup in {folder}"
    return folder, f"child cgroups of {folder}"


def _oom_kills(path: Path) -> int:
    return sum(int(ln.split()[1]) for ln in _read(path / "memory.events").splitlines() if ln.startswith("oom_kill "))


def _remove_cgroup(path, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return os.rmdir(path)
        except OSError as exc:
            if exc.errno != errno.EBUSY:  # EBUSY until the last process has left; anything else is final
                return
        time.sleep(0.02)


def _start_time(pid: int) -> int | None:
    with suppress(OSError, IndexError, ValueError):
        return int(_read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[19])  # field 22, starttime
    return None


def _kill(pid: int, sig: int, started: int | None = -1) -> None:
    """Signal ``pid`` (-pgid: a group); given ``started``, only if it is still the process seen then."""
    if started == -1 or (started is not None and _start_time(pid) == started):
        with suppress(OSError):
            os.kill(pid, sig)


def _tcp_sockets(port: int, state: str) -> set[str]:
    """TCP sockets on local ``port`` in ``state`` (``0A`` LISTEN, ``06`` TIME_WAIT), inode last."""
    lines = _read("/proc/net/tcp").splitlines()[1:] + _read("/proc/net/tcp6").splitlines()[1:]
    return {f"{f[1]} {f[2]} {f[9]}" for f in map(str.split, lines)
            if len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == state}  # fmt: skip


def _owns_listener(port: int, pids) -> bool | None:
    """Whether one of ``pids`` holds a LISTEN socket on ``port`` (None: no listener to be seen)."""
    inodes = {f"socket:[{s.rsplit(' ', 1)[1]}]" for s in _tcp_sockets(port, "0A")}
    for pid in pids if inodes else ():
        with suppress(OSError):  # an fd closed meanwhile: the next look sees it right
            if inodes & {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}:
                return True
    return False if inodes else None


class Supervised:
    """A student's command under supervision.  See the module docstring for the rules."""

    def __init__(self, command, *, cwd=None, env=None, log_path=None, memory_limit=None,
                 memory_mechanism: str = "auto", grace: float = 2.0, sample_every: float = 0.05,
                 start_timeout: float = 15.0):  # fmt: skip
        self.argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [os.fspath(a) for a in command]
        if not self.argv[-1:] or memory_mechanism not in MECHANISMS or not (cwd is None or Path(cwd).is_dir()):
            raise UsageError(f"need a command, memory_mechanism in {MECHANISMS} and an existing cwd: "
                             f"{command!r}, {memory_mechanism!r}, {cwd!r}")  # fmt: skip
        self.command, self.cwd, self.env, self.grace = command, cwd, env, float(grace)
        self.memory_limit = parse_size(memory_limit) if memory_limit is not None else None
        self.memory_mechanism, self.sample_every, self.start_timeout = memory_mechanism, sample_every, start_timeout
        self.log_path = Path(log_path) if log_path is not None else None
        self.memory_guard, self.memory_note = None, ""  # armed at start ("cgroup", "watchdog"); why not cgroup
        self.guard = self.pid = self.result = None  # the guard's Popen; the command's PID (its group's ID)
        self._dir = self._cgroup = self._acted = None
        self._seen: dict[int, int | None] = {}  # every PID ever seen in the tree -> its start time
        self._peak_sum, self._hwm, self._timed_out = 0, {}, False
        self._lock, self._done, self._owner = threading.RLock(), threading.Event(), os.getpid()

    def start(self) -> Supervised:
        if self.guard is not None:
            return self
        if self.memory_limit is not None:
            self._arm_memory()
        self._owner, self._dir = os.getpid(), tempfile.mkdtemp(prefix="labnet-supervised-")
        self.log_path = self.log_path or Path(self._dir) / "output.log"
        cmd = [sys.executable, "-I", "-c", _BOOT, str(ROOT), "--parent", str(os.getpid()), "--grace", str(self.grace),
               "--pdeathsig", str(int(threading.current_thread() is threading.main_thread())), "--status",
               os.path.join(self._dir, "status"), *(["--cgroup", str(self._cgroup)] if self._cgroup else []),
               "--", *self.argv]  # fmt: skip
        try:
            with open(self.log_path, "ab") as log:
                self.guard = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            _LIVE.add(self)
            self._wait_started()
        except BaseException:
            if self.guard is None and self._cgroup:
                _remove_cgroup(self._cgroup)
            self.stop()
            raise
        threading.Thread(target=_sample_loop, args=(weakref.ref(self), self._done, self.sample_every),
                         name="labnet-supervisor-sampler", daemon=True).start()  # fmt: skip
        return self

    def _arm_memory(self) -> None:
        parent, self.memory_note = probe_cgroup_memory() if self.memory_mechanism != "watchdog" else (None, "asked")
        path = parent / f"labnet-{os.getpid()}-{id(self):x}" if parent else None
        try:
            if path:
                path.mkdir()
                (path / "memory.max").write_text(str(self.memory_limit))
                self._cgroup = path
        except OSError as exc:
            self.memory_note = f"cannot set up a cgroup in {parent}: {exc.strerror}"
            _remove_cgroup(path)
        # swap 0: a hog is killed, not swapped (swapping is what freezes a laptop); oom.group: the OOM
        # kill takes the whole tree.  Older kernels lack them; memory.max still holds.
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")) if self._cgroup else ():
            with suppress(OSError):
                (path / name).write_text(value)
        self.memory_guard = "cgroup" if self._cgroup else "watchdog"
        if self.memory_mechanism == "cgroup" and self._cgroup is None:
            raise SupervisorError(f"memory_mechanism='cgroup', but {self.memory_note}")

    def _wait_started(self) -> None:
        end = time.monotonic() + self.start_timeout
        while not {"pid", "exit"} & self._status().keys() and self.guard.poll() is None:
            if time.monotonic() > end:
                raise SupervisorError(f"the supervisor did not start in {self.start_timeout:g} s:\n{self.tail()}")
            time.sleep(0.01)
        self.pid = self._status().get("pid")
        if self.pid is not None:
            self._seen[self.pid] = _start_time(self.pid)
            where = _cgroup_of(self.pid)  # None: it has ended already
            if self._cgroup and where is not None and not where.endswith("/" + self._cgroup.name):
                self.memory_guard, self.memory_note = "watchdog", f"the command was not moved into {self._cgroup}"

    def wait(self, timeout: float | None = None) -> SupervisedResult:
        """Wait for the command to end (a client); at ``timeout`` s stop it and report ``timed_out``."""
        self._timed_out = not self._wait_guard(timeout)
        return self.stop()

    def stop(self) -> SupervisedResult | None:
        """Stop the command and everything it started; idempotent.  None if it never started."""
        if self._owner != os.getpid():  # a forked child: not ours (and the lock may be held forever)
            return None
        with self._lock:
            if self.result is not None or self.guard is None:
                return self.result
            try:
                self._sample()
                if self.guard.poll() is None:
                    self.guard.send_signal(signal.SIGTERM)  # the guard: SIGTERM, grace, SIGKILL, reap
                    self._wait_guard(self.grace + 5)
            finally:
                self._finish()
            return self.result

    def _finish(self) -> None:
        self._done.set()
        if self.guard.poll() is None:  # the guard did not do its job in time: do it here
            for pid in process_tree(self.guard.pid)[1:]:
                self._seen.setdefault(pid, _start_time(pid))
            self.guard.kill()
        if "exit" not in self._status() and self.pid is not None:
            _kill(-self.pid, signal.SIGKILL)
        end = time.monotonic() + 5  # SIGKILL to whatever is left, for up to 5 s
        while time.monotonic() < end and (left := [p for p, t in self._seen.items() if alive(p) and t == _start_time(p)]):
            for pid in left:
                _kill(pid, signal.SIGKILL, self._seen[pid])
            time.sleep(0.02)
        self._wait_guard(5)
        if self._cgroup:
            self._acted = self._acted or ("cgroup" if self._status().get("oom") or _oom_kills(self._cgroup) else None)
            _remove_cgroup(self._cgroup)
        self.result = SupervisedResult(self._status().get("exit"), self._timed_out, self._acted is not None,
                                       self._acted, self.peak_tree_rss, frozenset(self._seen), self.tail(),
                                       self.log_path)  # fmt: skip
        with suppress(OSError):
            os.unlink(os.path.join(self._dir, "status"))
            os.rmdir(self._dir)  # only when empty: a log in there stays for the student to read
        _LIVE.discard(self)

    def _wait_guard(self, timeout: float | None) -> bool:
        with suppress(subprocess.TimeoutExpired):
            return self.guard.wait(timeout) is not None
        return False

    def __enter__(self) -> Supervised:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        with suppress(Exception):
            self.stop()

    def wait_listening(self, host: str, port: int, timeout: float = 30.0) -> None:
        """Return once ``host:port`` accepts a TCP connection served by this tree; else ``ServerDidNotStart``."""
        target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        end = time.monotonic() + timeout
        while True:
            if "exit" in self._status() or self.guard.poll() is not None or not alive(self.pid or 0):
                self._wait_guard(self.grace + 5)  # the guard writes the status once the group is gone
                rc, tail = self._status().get("exit"), self.tail()
                why = " (over its memory limit)" if self._acted or self._status().get("oom") else ""
                raise ServerDidNotStart(f"the server {describe_status(rc)}{why} before it listened on {host}:{port}"
                                        f"; its last lines:\n{tail}", rc, tail)  # fmt: skip
            with suppress(OSError):
                with socket.create_connection((target, port), timeout=max(0.05, min(1.0, end - time.monotonic()))):
                    pass  # sends nothing, closes at once
                if _owns_listener(port, self.pids()) is not False:  # False: an old server still holds it?
                    return
            if time.monotonic() >= end:
                raise ServerDidNotStart(f"the server did not listen on {host}:{port} within {timeout:g} s (still "
                                        f"running); its last lines:\n{self.tail()}", None, self.tail())  # fmt: skip
            time.sleep(0.05)

    def _status(self) -> dict:
        """The guard's status file: ``pid N`` once the command runs, ``exit N`` (or ``exit ?``) at the end."""
        pairs = (line.partition(" ")[::2] for line in _read(os.path.join(self._dir, "status")).splitlines())
        return {key: int(value) if value.lstrip("-").isdigit() else None for key, value in pairs}

    def _sample(self) -> None:
        with self._lock:
            if self.guard is None or self.guard.returncode is not None:
                return
            tree, total = process_tree(self.guard.pid)[1:], 0  # not the guard: it is labnet's, not the student's
            for pid in tree:
                self._seen.setdefault(pid, _start_time(pid))
                total += rss_bytes(pid)
                self._hwm[pid] = max(self._hwm.get(pid, 0), peak_rss_bytes(pid))
            self._peak_sum = max(self._peak_sum, total)
            if self._acted is None and self.memory_guard == "cgroup":
                self._acted = "cgroup" if _oom_kills(self._cgroup) else None
            elif self._acted is None and self.memory_guard == "watchdog" and total > self.memory_limit:
                self._acted = "watchdog"
                for pid in tree:  # SIGKILL at once: a hog gets no grace to grow further
                    _kill(pid, signal.SIGKILL, self._seen[pid])
                with suppress(OSError), open(self.log_path, "ab") as log:
                    log.write(f"\nlabnet: the command's processes used {total / 1e6:.0f} MB together, over its "
                              f"memory limit of {self.memory_limit / 1e6:.0f} MB: killed\n".encode())  # fmt: skip

    @property
    def peak_tree_rss(self) -> int:
        return max([self._peak_sum, *self._hwm.values()])

    def pids(self) -> list[int]:
        """The command's processes now (not the guard)."""
        with self._lock:
            return [] if self.guard is None or self.guard.poll() is not None else process_tree(self.guard.pid)[1:]

    def tail(self, lines: int = 20) -> str:
        """The log's last ``lines`` lines."""
        with suppress(OSError, TypeError), open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").strip().splitlines()[-lines:])
        return ""


def _sample_loop(ref, done: threading.Event, every: float) -> None:
    # a weak reference only, so that an abandoned Supervised is still collected (and so stopped)
    while not done.wait(every) and (obj := ref()) is not None:
        obj._sample()
        del obj


def wait_port_free(host: str, port: int, timeout: float = 60.0, on_wait=None) -> float:
    """Wait until ``bind()`` *without* SO_REUSEADDR to ``host:port`` succeeds; the seconds waited.

    Why: a server without SO_REUSEADDR cannot restart on its port while connections of its last run
    sit in TIME_WAIT (60 s on Linux).  ``on_wait(message)``: why, at once and every 10 s; ``PortNotFree``."""
    start, told = time.monotonic(), None
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, port))
                sock.listen()
                return time.monotonic() - start
            except OSError as exc:
                error = exc.strerror
        waits, now = len(_tcp_sockets(port, "06")), time.monotonic()
        why = (f"{waits} connection(s) of an earlier run in TIME_WAIT (up to 60 s; a server that sets "
               f"SO_REUSEADDR could bind now)" if waits else f"in use ({error})")  # fmt: skip
        if now - start >= timeout:
            raise PortNotFree(f"port {port} on {host} is still not free after {timeout:g} s: {why}")
        if on_wait is not None and (told is None or now - told >= 10):
            told = now
            on_wait(f"waiting for port {port} on {host}: {why}; {timeout - (now - start):.0f} s left")
        time.sleep(min(0.25, timeout - (now - start)))


def stop_all() -> None:
    """Stop every command this process supervises (also runs at exit)."""
    for sup in list(_LIVE):
        sup.stop()


atexit.register(stop_all)
os.register_at_fork(after_in_child=_LIVE.clear)  # a forked child must not stop its parent's commands


def guard_main(argv: list[str]) -> int:
    """The guard: ``[--parent PID] [--pdeathsig 0|1] [--grace S] [--status FILE] [--cgroup DIR] -- CMD...``."""
    if "--" not in argv[:-1]:
        sys.exit("usage: python -m labnet.measure.supervisor [--grace S] [--status FILE] [--cgroup DIR] -- CMD...")
    split = argv.index("--")
    opts, cmd = dict(zip(argv[:split:2], argv[1:split:2], strict=False)), argv[split + 1:]
    parent, grace = int(opts.get("--parent", os.getppid())), float(opts.get("--grace", 2.0))
    cgroup, stop, interrupts, rc = opts.get("--cgroup"), [], [], []
    for sig, flags in ((signal.SIGTERM, stop), (signal.SIGHUP, stop), (signal.SIGINT, interrupts)):
        signal.signal(sig, lambda signum, frame, flags=flags: flags.append(signum))
    with suppress(OSError, AttributeError):  # without it, the caller's PID sweep still catches escapees
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    if opts.get("--pdeathsig", "1") == "1":
        set_parent_death_signal(signal.SIGTERM)
    if stop or os.getppid() != parent:  # told to stop, or the caller died before we could watch it
        return 0
    status = open(opts.get("--status", os.devnull), "a", buffering=1)  # line-buffered, open until exit

    def join_cgroup():  # in the child between fork and exec: no process of the command runs outside it
        with suppress(OSError), open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
            f.write("0")  # on failure the caller sees where the command landed, and watches instead

    def reap() -> bool:  # every child ended (a subreaper inherits orphans); True while any is left
        with suppress(ChildProcessError):
            while (got := os.waitpid(-1, os.WNOHANG))[0]:
                rc.extend([os.waitstatus_to_exitcode(got[1])] if got[0] == proc.pid else [])
            return True
        return False

    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                                preexec_fn=join_cgroup if cgroup else None)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"labnet supervisor: cannot run {cmd[0]!r}: {exc}", file=sys.stderr, flush=True)
        print("exit 127", file=status)
        return 0
    print(f"pid {proc.pid}", file=status)
    while not rc and not stop and os.getppid() == parent:
        if interrupts:
            interrupts.clear()
            _kill(-proc.pid, signal.SIGINT)
        time.sleep(0.1)
        reap()
    # SIGTERM to the group once (a shutdown handler must not be interrupted again), grace, then
    # SIGKILL to the group and to every descendant, escaped into other groups or not
    left = {pid for pid in process_tree(os.getpid())[1:] if pid != proc.pid and alive(pid)} if rc else set()
    end = time.monotonic() + grace
    _kill(-proc.pid, signal.SIGTERM)
    while reap() and time.monotonic() < end + 10:  # past that, unkillable: do not hang the caller
        if time.monotonic() >= end:
            _kill(-proc.pid, signal.SIGKILL)
            for pid in process_tree(os.getpid())[1:]:
                _kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    proc.returncode = (rc or [0])[0]  # reaped here, not by Popen
    if left:  # the command ended by itself, but not what it started
        print(f"labnet supervisor: the command {describe_status(rc[0])} and left {len(left)} process(es) running;"
              f" they were stopped", file=sys.stderr, flush=True)  # fmt: skip
    if cgroup:  # the caller may be gone: clean up here too, once the OOM count is saved for it
        print(f"oom {_oom_kills(Path(cgroup))}", file=status)
        _remove_cgroup(cgroup)
    print(f"exit {rc[0] if rc else '?'}", file=status)
    return 0


if __name__ == "__main__":
    sys.exit(guard_main(sys.argv[1:]))
