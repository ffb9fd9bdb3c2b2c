"""Test helper for the real-browser tests: a throwaway JupyterLab, Debian's chromium, and the page actions they share.

What is here: :class:`Lab` (one ``jupyter lab`` on a free loopback port with a random token, autosave off,
every cell kept in the page), :func:`running_lab` (a temporary project folder holding *copies* of notebooks,
so the real ones are never saved with outputs; on exit every kernel is shut down through
``DELETE /api/sessions/{id}``, the server is stopped, and no process it started may survive),
:func:`launch_chromium`, :func:`wait_for_kernel`, :func:`run_all_cells`, :func:`save_notebook`.

Every process the server starts (kernels, the servers and workers the notebooks start) inherits
``LABNET_BROWSER_TAG`` in its environment: that is how :func:`leftover_processes` finds them, however deep.

Imports only the standard library, pytest and ``tests/procfind.py``; never labnet itself (the notebooks run it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from procfind import processes_with_env

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
SHOTS = ROOT / "build" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
LAB_START_TIMEOUT = 90
MS = 1000
DATA_FOLDERS = ("server_files", "client_files", "client_downloads")  # what labnet's project_dir() looks for

SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                   "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}  # fmt: skip

BROWSER_ENABLED = os.environ.get("LABNET_BROWSER") == "1"
SKIP_UNLESS_ENABLED = pytest.mark.skipif(not BROWSER_ENABLED, reason="real-browser test: run `make test-browser`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of live processes whose environment carries ``LABNET_BROWSER_TAG=tag``."""
    return processes_with_env("LABNET_BROWSER_TAG", tag)


def sync_playwright_api():
    """Playwright's sync API, or a skip when it or chromium is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    return sync_api


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class Lab:
    """A JupyterLab server; :meth:`stop` shuts kernels down through the REST API, then the server."""

    def __init__(self, workdir: Path, tmp: Path, env: dict[str, str] | None = None):
        self.workdir, self.tmp = workdir, tmp
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.tag = uuid.uuid4().hex
        self.extra_env = dict(env or {})
        self.log_path = tmp / "jupyter-lab.log"
        self.proc: subprocess.Popen | None = None

    def api(self, method: str, path: str, timeout: float = 10, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=data,
                                     headers={"Authorization": f"token {self.token}"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def start(self) -> Lab:
        settings = self.tmp / "lab-settings"
        for name, value in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        env = dict(os.environ, LABNET_QUICK="1", LABNET_BROWSER_TAG=self.tag,
                   JUPYTER_CONFIG_DIR=str(self.tmp / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(self.tmp / "jupyter-runtime"),
                   JUPYTER_DATA_DIR=str(self.tmp / "jupyter-data"), JUPYTER_PLATFORM_DIRS="1")  # fmt: skip
        env.pop("LABNET_BROWSER", None)
        # ipykernel does not capture file-descriptor output (what child processes write on the stderr they
        # inherit) when it sees PYTEST_CURRENT_TEST; a student's JupyterLab does, so the kernels must not see it
        for name in [name for name in env if name.startswith("PYTEST_")]:
            del env[name]
        env.update(self.extra_env)
        cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ip", "127.0.0.1",
               "--port", str(self.port), "--ServerApp.port_retries=0", f"--ServerApp.token={self.token}",
               "--allow-root", f"--ServerApp.root_dir={self.workdir}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        end = time.monotonic() + LAB_START_TIMEOUT
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return self
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"jupyter lab not ready after {LAB_START_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def url(self, notebook: str, workspace: str = "labnet-browser-test") -> str:
        return f"http://127.0.0.1:{self.port}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def sessions(self, path: str | None = None) -> list[dict]:
        """Live sessions, only those of the notebook at ``path`` (relative to the project) when given."""
        found = self.api("GET", "/api/sessions") or []
        return [s for s in found if path is None or s.get("path") == path]

    def contents(self, path: str, content: bool = True) -> dict:
        quoted = urllib.parse.quote(path)
        return self.api("GET", f"/api/contents/{quoted}?content={int(content)}", timeout=30)

    def shutdown_kernels(self) -> list[str]:
        """``DELETE /api/sessions/{id}`` for every session (this shuts its kernel down); returns the ids."""
        ids = []
        for session in self.sessions():
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)
            ids.append(session["id"])
        end = time.monotonic() + 30
        while self.api("GET", "/api/kernels") and time.monotonic() < end:
            time.sleep(0.2)
        return ids

    def descendants_left(self, grace: float = 15.0) -> list[tuple[int, str]]:
        """Tagged processes other than the server itself (kernels and what they started), after up to
        ``grace`` seconds for them to exit (a server's own grace period)."""
        end = time.monotonic() + grace
        while True:
            left = [(pid, cmd) for pid, cmd in tagged_processes(self.tag) if self.proc is None or pid != self.proc.pid]
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self.log.close()


def kill_all(processes: Iterable[tuple[int, str]]) -> None:
    for pid, _ in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def make_project(tmp: Path, notebooks: Iterable[Path]) -> Path:
    """A temporary project folder: the data folders and copies of ``notebooks`` in ``notebooks/``."""
    workdir = tmp / "project"
    (workdir / "notebooks").mkdir(parents=True)
    for folder in DATA_FOLDERS:
        (workdir / folder).mkdir()
    for notebook in notebooks:
        shutil.copy(notebook, workdir / "notebooks" / notebook.name)
    return workdir


@contextlib.contextmanager
def running_lab(tmp: Path, notebooks: Iterable[Path], env: dict[str, str] | None = None) -> Iterator[Lab]:
    """JupyterLab on a temporary project holding copies of ``notebooks``.  On exit: kernels shut down
    through the REST API, server stopped, and an AssertionError if any process it started survived
    (they are killed first, so the next test starts clean)."""
    lab = Lab(make_project(tmp, notebooks), tmp, env)
    try:
        yield lab.start()
    finally:
        try:
            if lab.proc is not None and lab.proc.poll() is None:
                lab.shutdown_kernels()
        finally:
            lab.stop()
        end = time.monotonic() + 15
        while tagged_processes(lab.tag) and time.monotonic() < end:
            time.sleep(0.2)
        left = tagged_processes(lab.tag)
        kill_all(left)
        assert not left, f"processes left behind by the browser test: {left}"


def wait_for_kernel(page, lab: Lab, path: str | None = None, timeout: float = 90) -> dict:
    """Until the notebook (at ``path``, else any) has a running, idle kernel (answering the kernel dialog
    if one shows up); returns its session."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.get_by_text("Select Kernel").count():
            dialog.locator("button", has_text="Select").click()
        sessions = lab.sessions(path)
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return sessions[0]
        time.sleep(0.3)
    raise TimeoutError(f"no idle kernel after {timeout:g} s:\n{lab.log_tail()}")


def run_all_cells(page) -> None:
    """Run > Run All Cells, through the menu as a student would."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def save_notebook(page, lab: Lab, path: str, timeout: float = 30) -> dict:
    """File > Save Notebook through the menu, then the saved notebook as the contents API reads it from disk."""
    before = lab.contents(path, content=False)["last_modified"]
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel", has_text="Save Notebook").first.click()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        model = lab.contents(path, content=False)
        if model["last_modified"] != before:
            return lab.contents(path)["content"]
        time.sleep(0.2)
    raise TimeoutError(f"{path} was not saved within {timeout:g} s")
