"""Real browser: JupyterLab + Debian's chromium driven by Playwright, on notebook 04's dashboard.

Run with ``make test-browser`` (``LABNET_QUICK=1 LABNET_BROWSER=1 pytest -m browser tests/browser``);
skipped otherwise, so plain ``make test`` does not need a browser.

What happens:

1. a copy of ``notebooks/04-stress-dashboard.ipynb`` in a temporary project
   folder (so the real notebook is never saved with outputs), JupyterLab on
   a free loopback port with a random token, autosave off, every cell kept
   in the page (``windowingMode: none``);
2. chromium opens the notebook and runs all cells (the notebook's own
   self-check drives one run from code);
3. the test sets every dashboard control as a user would, clicks Run, waits
   (bounded) for the progress bar to reach 100 % and the summary to appear,
   and checks the numbers shown against the settings;
4. a screenshot goes to ``build/browser/dashboard.png``;
5. the kernel is shut down through ``DELETE /api/sessions/{id}``, JupyterLab
   is stopped, and no process started by the test may survive.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from procfind import processes_with_env

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "04-stress-dashboard.ipynb"
SHOTS = ROOT / "build" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
LAB_START_TIMEOUT = 90
MS = 1000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("LABNET_BROWSER") != "1", reason="real-browser test: run `make test-browser`"),
    pytest.mark.timeout(420),
]

SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none",
                                                                   "autoStartDefaultKernel": True},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of live processes whose environment carries ``LABNET_BROWSER_TAG=tag``."""
    return processes_with_env("LABNET_BROWSER_TAG", tag)


class Lab:
    """A JupyterLab server for one test; :meth:`stop` shuts kernels down through the REST API, then the server."""

    def __init__(self, workdir: Path, tmp: Path):
        self.workdir, self.tmp = workdir, tmp
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.tag = uuid.uuid4().hex
        self.log_path = tmp / "jupyter-lab.log"
        self.proc: subprocess.Popen | None = None

    def api(self, method: str, path: str, timeout: float = 10):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
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

    def shutdown_kernels(self) -> list[str]:
        """``DELETE /api/sessions/{id}`` for every session (this shuts its kernel down); returns the ids."""
        ids = []
        for session in self.api("GET", "/api/sessions") or []:
            self.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)
            ids.append(session["id"])
        end = time.monotonic() + 30
        while self.api("GET", "/api/kernels") and time.monotonic() < end:
            time.sleep(0.2)
        return ids

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


@pytest.fixture
def lab(tmp_path):
    workdir = tmp_path / "project"
    (workdir / "notebooks").mkdir(parents=True)
    for folder in ("server_files", "client_files", "client_downloads"):
        (workdir / folder).mkdir()
    shutil.copy(NOTEBOOK, workdir / "notebooks" / NOTEBOOK.name)
    lab = Lab(workdir, tmp_path)
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
        for pid, _ in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        assert not left, f"processes left behind by the browser test: {left}"


def wait_for_kernel(page, lab: Lab, timeout: float = 90) -> None:
    """Until the notebook has a running, idle kernel (answering the kernel dialog if one shows up)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.get_by_text("Select Kernel").count():
            dialog.locator("button", has_text="Select").click()
        sessions = lab.api("GET", "/api/sessions") or []
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle":
            return
        time.sleep(0.3)
    raise TimeoutError(f"no idle kernel after {timeout:g} s:\n{lab.log_tail()}")


def run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_dashboard_in_a_real_browser(lab):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    want = {"op": "upload", "volume": "1MB", "clients": 5, "client_pool": "thread", "server_model": "process",
            "server_workers": 2, "encoding": "raw"}  # fmt: skip

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.set_default_timeout(60 * MS)
            page.goto(lab.url(f"notebooks/{NOTEBOOK.name}"))
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90 * MS)
            wait_for_kernel(page, lab)

            run_all_cells(page)
            # The notebook's own self-check run, then its last cell (which stops that server).
            outputs = page.locator(".jp-OutputArea-output")
            outputs.filter(has_text="dashboard self-check OK").wait_for(timeout=180 * MS)
            outputs.filter(has_text="dashboard server stopped").wait_for(timeout=120 * MS)
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                has_text="Traceback").count() == 0  # fmt: skip

            dash = page.locator(".labnet-dashboard")
            dash.scroll_into_view_if_needed()
            dash.wait_for(state="visible")
            # real widgets, not their text repr
            assert page.locator(".labnet-dashboard .widget-toggle-buttons").count() >= 4
            assert "VBox(children" not in page.locator(".jp-NotebookPanel").inner_text()

            page.locator(".labnet-op button", has_text=want["op"]).click()
            page.locator(".labnet-volume select").select_option(label=want["volume"])
            page.locator(".labnet-clients select").select_option(label=str(want["clients"]))
            page.locator(".labnet-client-pool button", has_text=want["client_pool"]).click()
            page.locator(".labnet-server-model button", has_text=want["server_model"]).click()
            page.locator(".labnet-server-workers select").select_option(label=str(want["server_workers"]))
            page.locator(".labnet-encoding button", has_text=want["encoding"]).click()
            page.locator("button.labnet-run").click()

            summary = page.locator(f".labnet-summary-body[data-clients='{want['clients']}']")
            summary.wait_for(timeout=180 * MS)
            label = page.locator(".labnet-progress-label")
            label_text = label.inner_text()
            summary_text = summary.inner_text()
            bar_width = page.locator(".labnet-progress .progress-bar").evaluate("e => e.style.width")
            plot_width = page.locator("img.labnet-plot").evaluate("e => e.complete ? e.naturalWidth : 0")
            page.get_by_text("Server counters").first.wait_for()
            page.locator(".labnet-counters").get_by_text("counters after the run").wait_for(timeout=30 * MS)
            counters_text = page.locator(".labnet-counters").inner_text()
            dash.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(SHOTS / "dashboard.png"))
            dash.screenshot(path=str(SHOTS / "dashboard-widget.png"))

            assert "100%" in label_text and f"{want['clients']}/{want['clients']} clients done" in label_text, label_text
            assert bar_width == "100%", bar_width
            assert summary.get_attribute("data-ok") == str(want["clients"]), summary_text
            assert summary.get_attribute("data-failed") == "0", summary_text
            assert summary.get_attribute("data-server-ok") == str(want["clients"]), summary_text
            assert f"{want['op']} {want['volume']} × {want['clients']} {want['client_pool']}" in summary_text
            assert f"({want['encoding']})" in summary_text and f"{want['server_model']} pool × {want['server_workers']}" in summary_text
            assert f"{want['clients']} / 0" in summary_text  # client workers ok / failed
            assert plot_width > 300, plot_width
            assert "upload ok / failed" in counters_text
        except BaseException:
            try:
                page.screenshot(path=str(SHOTS / "failure.png"), full_page=True)
                (SHOTS / "failure.html").write_text(page.content())
            except Exception:
                pass
            raise
        finally:
            browser.close()
    ids = lab.shutdown_kernels()
    assert ids, "the notebook had no kernel session to shut down"
