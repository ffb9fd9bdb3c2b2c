"""Real browser: JupyterLab + Debian's chromium driven by Playwright, on notebook 05's dashboard.

Run with ``make test-browser`` (``LABNET_QUICK=1 LABNET_BROWSER=1 pytest -m browser tests/browser``);
skipped otherwise, so plain ``make test`` does not need a browser.

What happens:

1. a copy of ``notebooks/05-stress-dashboard.ipynb`` in a temporary project
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

import pytest
from lab import (
    MS,
    NOTEBOOK_DIR,
    SHOTS,
    SKIP_UNLESS_ENABLED,
    launch_chromium,
    run_all_cells,
    running_lab,
    sync_playwright_api,
    wait_for_kernel,
)

NOTEBOOK = NOTEBOOK_DIR / "05-stress-dashboard.ipynb"

pytestmark = [pytest.mark.browser, SKIP_UNLESS_ENABLED, pytest.mark.timeout(420)]


@pytest.fixture
def lab(tmp_path):
    with running_lab(tmp_path, [NOTEBOOK]) as lab:
        yield lab


def test_dashboard_in_a_real_browser(lab):
    sync_api = sync_playwright_api()
    SHOTS.mkdir(parents=True, exist_ok=True)
    want = {"op": "upload", "volume": "1MB", "clients": 5, "client_pool": "thread", "server_model": "process",
            "server_workers": 2, "encoding": "raw"}  # fmt: skip

    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
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
