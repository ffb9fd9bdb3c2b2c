"""The environment check of notebook 00: is this machine ready for the lab?

Every check gives one :class:`Check` row: what was looked at, what was found,
and a plain verdict (``ok``, ``warn`` or ``missing``) with advice when it is
not ``ok``.  Nothing here installs or changes anything.

Reads ``/proc/meminfo`` for memory (Linux), ``shutil.disk_usage`` for disk
and ``importlib.metadata`` for package versions, so it needs nothing beyond
the standard library.
"""

from __future__ import annotations

import html
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from labnet import __version__
from labnet.config import parse_size, quick_mode, size_label
from labnet.measure.files import project_dir
from labnet.measure.matrix_plan import ETS_DIMENSIONS, QUICK_DIMENSIONS

MIN_PYTHON = (3, 10)
# (distribution, import name, required?, what it is for)
PACKAGES = (
    ("tqdm", "tqdm", True, "progress bars"),
    ("pybase64", "pybase64", False, "fast base64 (labnet falls back to binascii without it)"),
    ("jupyterlab", "jupyterlab", True, "the lab itself"),
    ("ipykernel", "ipykernel", True, "the Python kernel behind the notebooks"),
    ("ipywidgets", "ipywidgets", True, "the dashboard in 04 and the progress bars"),
    ("matplotlib", "matplotlib", True, "every plot"),
    ("pytest", "pytest", False, "make test"),
    ("nbval", "nbval", False, "make test runs the notebooks"),
    ("playwright", "playwright", False, "make test-browser"),
)
# Disk the test files take plus room for downloads and uploads of the biggest run.
WORKING_SPACE = 2 * 10**9


@dataclass
class Check:
    name: str
    found: str
    status: str  # "ok" | "warn" | "missing"
    advice: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def version_of(dist: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = sys.version_info
    found = f"{platform.python_implementation()} {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) >= MIN_PYTHON:
        return Check("Python", found, "ok")
    return Check("Python", found, "missing", f"labnet needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer")


def check_cores() -> Check:
    n = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = n
    found = f"{usable} usable of {n}"
    if usable >= 2:
        return Check("CPU cores", found, "ok")
    return Check("CPU cores", found, "warn",
                 "one core: process pools cannot run in parallel, so thread vs process will look alike")  # fmt: skip


def check_memory() -> Check:
    info = _meminfo()
    total, avail = info.get("MemTotal"), info.get("MemAvailable")
    if not total:
        return Check("Memory", "unknown (no /proc/meminfo)", "warn", "could not read the memory size")
    found = f"{avail / 1e9:.1f} GB available of {total / 1e9:.1f} GB"
    if avail is not None and avail < 1e9:
        return Check("Memory", found, "warn",
                     "under 1 GB free: close other programs; labnet streams files, but 50 clients still need room")  # fmt: skip
    return Check("Memory", found, "ok")


def check_disk(folder=None) -> Check:
    folder = Path(folder or project_dir())
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return Check("Free disk", f"cannot read ({exc})", "warn", "check the project folder exists")
    need = WORKING_SPACE if not quick_mode() else 50 * 10**6
    found = f"{usage.free / 1e9:.1f} GB free in {folder}"
    if usage.free < need:
        return Check("Free disk", found, "missing",
                     f"the lab needs about {need / 1e9:.1f} GB for test files, uploads and downloads")  # fmt: skip
    return Check("Free disk", found, "ok")


def check_packages() -> list[Check]:
    rows = []
    for dist, _module, required, purpose in PACKAGES:
        v = version_of(dist)
        if v:
            rows.append(Check(dist, f"{v} ({purpose})", "ok"))
        elif required:
            rows.append(Check(dist, f"not installed ({purpose})", "missing",
                              "run `make lab` (or `pip install -e '.[lab,test]'`) from the project folder"))  # fmt: skip
        else:
            rows.append(Check(dist, f"not installed ({purpose})", "warn", "optional"))
    return rows


def check_labnet() -> Check:
    here = Path(__file__).resolve().parents[1]  # the labnet package
    return Check("labnet", f"{__version__} from {here}", "ok")


def check_data_folders(root=None) -> Check:
    root = Path(root or project_dir())
    missing = [k for k in ("server_files", "client_files", "client_downloads") if not (root / k).is_dir()]
    if missing:
        return Check("Data folders", f"missing in {root}: {', '.join(missing)}", "warn",
                     "they are created on first use; run the notebooks from the project's notebooks/ folder")  # fmt: skip
    return Check("Data folders", f"server_files/, client_files/, client_downloads/ in {root}", "ok")


def run_checks() -> list[Check]:
    """Every check, in the order notebook 00 shows them."""
    return [check_python(), check_cores(), check_memory(), check_disk(), check_labnet(),
            check_data_folders(), *check_packages()]  # fmt: skip


def missing(checks) -> list[Check]:
    return [c for c in checks if c.status == "missing"]


def report_text(checks) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        mark = {"ok": "ok  ", "warn": "WARN", "missing": "MISS"}[c.status]
        lines.append(f"[{mark}] {c.name:<{width}}  {c.found}" + (f"  -> {c.advice}" if c.advice else ""))
    bad = missing(checks)
    lines.append("")
    lines.append("Everything the lab needs is here." if not bad else
                 "Missing: " + ", ".join(c.name for c in bad) + ". Fix these before going on.")  # fmt: skip
    return "\n".join(lines)


class Report:
    """Shows as a table in a notebook, as text elsewhere."""

    def __init__(self, checks):
        self.checks = list(checks)

    @property
    def missing(self) -> list[Check]:
        return missing(self.checks)

    def __str__(self) -> str:
        return report_text(self.checks)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = {"ok": "#1b7f3b", "warn": "#b26a00", "missing": "#b00020"}
        rows = "".join(
            f"<tr><td><b style='color:{colour[c.status]}'>{c.status}</b></td><td>{html.escape(c.name)}</td>"
            f"<td>{html.escape(c.found)}</td><td>{html.escape(c.advice)}</td></tr>"
            for c in self.checks
        )
        bad = self.missing
        verdict = ("<p><b>Everything the lab needs is here.</b></p>" if not bad else
                   "<p><b style='color:#b00020'>Missing: " + html.escape(", ".join(c.name for c in bad)) +
                   ". Fix these before going on.</b></p>")  # fmt: skip
        return ("<table><tr><th>status</th><th>check</th><th>found</th><th>advice</th></tr>"
                f"{rows}</table>{verdict}")  # fmt: skip


def environment_report() -> Report:
    return Report(run_checks())


def lab_dimensions() -> dict:
    """The matrix the lab uses (``labnet.measure.matrix_run``): the assignment's, or the small one in quick mode.

    ``{"ops", "volumes" (bytes), "clients", "server_workers"}``.
    """
    return dict(QUICK_DIMENSIONS if quick_mode() else ETS_DIMENSIONS)


def lab_sizes() -> tuple[str, ...]:
    """The test-file sizes the lab uses as labels: the assignment's 10/50/100 MB, or small ones in quick mode."""
    return tuple(size_label(v) for v in lab_dimensions()["volumes"])


def lab_bytes() -> int:
    return sum(parse_size(s) for s in lab_sizes())
