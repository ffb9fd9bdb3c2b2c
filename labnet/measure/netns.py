"""Linux network namespaces for running untrusted code with only a loopback: create, run in, delete, clean up.

>>> ok, why = can_create()
>>> with Namespace(new_name()) as ns:          # "labnet-grade-<pid>-<n>", only ``lo`` up inside
...     subprocess.run(ns.exec_argv(["python", "-m", "labnet", "grade", "--one", ...]))
>>> remove_stale()                             # namespaces of a labnet run that was killed

Why a namespace: a student's server that binds ``0.0.0.0`` (most do) is reachable from the whole
lab network while it is graded; inside a namespace of its own with only ``lo`` up it reaches
nothing and nothing reaches it, and two submissions can use the same fixed port (8989) at once.
It is NOT a sandbox: the code still sees the file system, the users and the other processes.

Every name starts with :data:`PREFIX` and carries the PID of the run that made it, so a later run
(:func:`remove_stale`) deletes the namespaces of runs whose process is gone -- a run killed with
SIGKILL cannot clean up after itself.  :func:`delete` first kills every process still inside the
namespace (``ip netns pids``), so nothing outlives it.

Uses ``ip`` from iproute2 (``ip netns add/exec/pids/delete``); needs root or CAP_NET_ADMIN and
CAP_SYS_ADMIN.  :func:`can_create` says whether this machine allows it, and why not.

Imports ``errors`` and ``procutil`` only; no sockets, no threads, no other labnet module.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from labnet.errors import LabnetError
from labnet.procutil import alive

PREFIX = "labnet-grade-"
NETNS_DIR = Path("/run/netns")  # where iproute2 keeps its named namespaces
_TAIL = re.compile(r"(?P<pid>\d+)-(?P<n>\d+)")  # what follows the prefix
_COUNTER = itertools.count(1)
IP_TIMEOUT = 20.0  # seconds an ``ip`` call may take (it is instant; a hung one must not hang the grader)


class NamespaceError(LabnetError):
    """A namespace could not be created, entered or deleted."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    ip = shutil.which("ip") or "/usr/sbin/ip"
    try:
        done = subprocess.run([ip, *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    except FileNotFoundError:
        raise NamespaceError("the ip command (iproute2) is not installed") from None
    except subprocess.TimeoutExpired:
        raise NamespaceError(f"ip {' '.join(args)} did not finish in {IP_TIMEOUT:g} s") from None
    if check and done.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)}: {done.stderr.strip() or f'status {done.returncode}'}")
    return done


def new_name(prefix: str = PREFIX) -> str:
    """A fresh name for this process: ``<prefix><pid>-<n>``."""
    return f"{prefix}{os.getpid()}-{next(_COUNTER)}"


def owner_pid(name: str, prefix: str = PREFIX) -> int | None:
    """The PID a namespace name carries, or None when the name is not one of ``prefix``'s."""
    if not name.startswith(prefix):
        return None
    m = _TAIL.fullmatch(name[len(prefix):])
    return int(m.group("pid")) if m else None


def list_names(prefix: str = PREFIX) -> list[str]:
    """The named namespaces that start with ``prefix`` (none when ``ip`` or ``/run/netns`` is absent)."""
    try:
        done = _ip("netns", "list", check=False)
    except NamespaceError:
        return []
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def create(name: str) -> str:
    """Create ``name`` and bring its loopback up (nothing else exists inside); return the name."""
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except NamespaceError:
        delete(name)
        raise
    return name


def pids_in(name: str) -> list[int]:
    """The processes whose network namespace is ``name``."""
    try:
        done = _ip("netns", "pids", name, check=False)
    except NamespaceError:
        return []
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_all_in(name: str, timeout: float = 5.0) -> int:
    """SIGKILL every process inside ``name`` until none is left (or ``timeout``); return how many were seen."""
    seen: set[int] = set()
    end = time.monotonic() + timeout
    while True:
        pids = [p for p in pids_in(name) if p != os.getpid()]
        if not pids or time.monotonic() > end:
            return len(seen)
        for pid in pids:
            seen.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def delete(name: str) -> None:
    """Kill what still runs inside ``name``, then delete it.  No error when it is already gone."""
    if name not in list_names(prefix=name):
        return
    kill_all_in(name)
    _ip("netns", "delete", name, check=False)


def exec_argv(name: str, argv: list[str]) -> list[str]:
    """``argv`` run inside ``name`` (``ip netns exec NAME ...``: the cwd and environment are kept)."""
    return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", name, *argv]


def remove_stale(prefix: str = PREFIX) -> list[str]:
    """Delete the namespaces of ``prefix`` whose run (the PID in the name) is no longer alive; return their names."""
    gone = []
    for name in list_names(prefix):
        pid = owner_pid(name, prefix)
        if pid is not None and pid != os.getpid() and not alive(pid):
            delete(name)
            gone.append(name)
    return gone


def can_create(prefix: str = PREFIX) -> tuple[bool, str]:
    """``(True, how)`` when a namespace can be made and entered here, else ``(False, why not)``.

    Tries it for real (create, run ``true`` inside, delete): permission is more than uid 0 -- a
    container without CAP_SYS_ADMIN is root and still cannot.
    """
    if not hasattr(os, "geteuid"):
        return False, "network namespaces are a Linux feature"
    if shutil.which("ip") is None and not Path("/usr/sbin/ip").exists():
        return False, "the ip command (iproute2) is not installed"
    name = new_name(prefix)
    try:
        create(name)
        done = subprocess.run(exec_argv(name, ["true"]), capture_output=True, text=True, timeout=IP_TIMEOUT)
        if done.returncode != 0:
            return False, f"cannot run inside a namespace: {done.stderr.strip() or done.returncode}"
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        hint = "" if os.geteuid() == 0 else " (not root: run as root, or with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        return False, f"cannot create a network namespace: {exc}{hint}"
    finally:
        delete(name)
    return True, "ip netns works here (root, CAP_NET_ADMIN)"


class Namespace:
    """A namespace for the duration of a ``with`` block: created on entry, emptied and deleted on exit."""

    def __init__(self, name: str | None = None):
        self.name = name or new_name()

    def __enter__(self) -> Namespace:
        create(self.name)
        return self

    def __exit__(self, *exc) -> None:
        delete(self.name)

    def exec_argv(self, argv: list[str]) -> list[str]:
        return exec_argv(self.name, argv)

    def pids(self) -> list[int]:
        return pids_in(self.name)


__all__ = ["PREFIX", "Namespace", "NamespaceError", "can_create", "create", "delete", "exec_argv", "kill_all_in",
           "list_names", "new_name", "owner_pid", "pids_in", "remove_stale"]
