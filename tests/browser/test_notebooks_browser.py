"""Real browser: every notebook of the lab, opened in JupyterLab in chromium, Run All Cells, as a student would.

Run with ``make test-browser`` (skipped otherwise).  nbval (``tests/notebook``) runs the notebooks' code in a
kernel but never renders anything; this test sees what a student sees: widgets that did not render, a
traceback some child process printed in red, a Run All that stopped half-way.

One JupyterLab (quick mode, ``LABNET_QUICK=1``) and one chromium for the whole module; for each
``notebooks/[0-9][0-9]-*.ipynb`` (found by glob, so renumbered or new notebooks are picked up):

1. a copy goes into the temporary project folder (the real notebook is never saved with outputs);
2. a fresh browser context opens it, waits for an idle kernel, and clicks Run > Run All Cells;
3. it waits, bounded by :data:`NOTEBOOK_TIMEOUT`, until the kernel is idle, no cell is queued or
   running, and either every code cell has an execution count or an error stopped the run;
4. the outputs are read from the page (DOM), then the notebook is saved through File > Save Notebook
   and read back through the contents API (the saved model tells an ``error`` output from a stream);
5. a screenshot goes to ``build/browser/<notebook>.png`` (scrolled to the first problem, if any);
6. the kernel is shut down through ``DELETE /api/sessions/{id}``, and no process the kernel started
   may outlive it.

A notebook fails on: an ``error`` output, a traceback on stderr (DOM or saved model, also inside Output
widgets), a widget that did not render ("Loading widget..." left, "Error displaying widget", model not
found, or a widget output shown as its text repr), a code cell without an execution count, or a
process left behind.  The message names the cell index (as in the ``.ipynb``) and the traceback's first lines.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from lab import (
    MS,
    NOTEBOOK_DIR,
    SHOTS,
    SKIP_UNLESS_ENABLED,
    kill_all,
    launch_chromium,
    run_all_cells,
    running_lab,
    save_notebook,
    sync_playwright_api,
    wait_for_kernel,
)

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
NOTEBOOK_TIMEOUT = 240  # s from Run All to the last cell; measured 2-18 s idle, 4-41 s at load 25 on 2 cores
WIDGET_SETTLE_TIMEOUT = 15  # seconds for "Loading widget..." placeholders to be replaced once the kernel is idle
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
STDERR = "application/vnd.jupyter.stderr"
TRACEBACK_LINES = 12
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
IPYTHON_ERROR_AT = re.compile(r"^\s*Cell In\s*\[\d+\], line \d+", re.MULTILINE)
# ipywidgets' text/plain repr of a widget (HBox(children=(...)), IntProgress(value=0, ...)): what shows when
# the front end could not render the view
WIDGET_REPR = re.compile(r"^\s*[A-Z]\w*\((children|value|layout|description|outputs|options|max|min)=")

pytestmark = [pytest.mark.browser, SKIP_UNLESS_ENABLED, pytest.mark.timeout(NOTEBOOK_TIMEOUT + 180)]

# Everything the checks need from the page, per cell in notebook order (windowingMode "none" keeps every
# cell in the DOM).  `outputs`: the cell's own outputs, one per output of the model, in order; `nested`:
# every rendered output inside the cell, Output widgets' included (a callback's traceback lands there).
READ_CELLS_JS = """() => Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')).map(cell => {
  const prompt = cell.querySelector('.jp-InputPrompt');
  const own = cell.querySelectorAll(':scope .jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output');
  const all = cell.querySelectorAll('.jp-Cell-outputArea .jp-OutputArea-output');
  const read = o => ({mime: o.getAttribute('data-mime-type'), text: (o.innerText || o.textContent || '').slice(0, 6000),
                      widget: o.classList.contains('jupyter-widgets') || !!o.querySelector('.jupyter-widgets')});
  return {code: cell.classList.contains('jp-CodeCell'), prompt: prompt ? prompt.textContent.trim() : '',
          outputs: Array.from(own).map(read), nested: Array.from(all).map(read)};
})"""


def executed(prompt: str) -> bool:
    return re.fullmatch(r"\[\d+\]:", prompt) is not None


def pending(prompt: str) -> bool:
    return prompt == "[*]:"


def clean(text: str) -> str:
    return ANSI.sub("", text)


def head(text: str, n: int = TRACEBACK_LINES) -> str:
    lines = [line for line in clean(text).splitlines() if line.strip()]
    shown = lines[:n] + (["    ...", lines[-1]] if len(lines) > n else [])
    return "\n".join("    " + line for line in shown)


def has_traceback(text: str) -> bool:
    """A Python traceback, or IPython's way of showing an error without one (a SyntaxError's ``Cell In[n]``)."""
    text = clean(text)
    return "Traceback (most recent call last)" in text or IPYTHON_ERROR_AT.search(text) is not None


def dom_error_shown(cells: list[dict]) -> bool:
    """An error output or a traceback anywhere in the page's outputs (a Run All stops at an error)."""
    return any(o["mime"] == STDERR and has_traceback(o["text"]) for c in cells for o in c["nested"])


def wait_until_done(page, lab, path: str, timeout: float) -> tuple[list[dict], float]:
    """Poll until the kernel is idle and no cell is queued or running, with every code cell executed or an
    error shown; twice in a row, so a gap between two cells is not taken for the end.  Returns the cells read
    from the page and the seconds it took; raises TimeoutError naming the cells still waiting."""
    t0 = time.monotonic()
    end = t0 + timeout
    settled = 0
    cells: list[dict] = []
    while time.monotonic() < end:
        cells = page.evaluate(READ_CELLS_JS)
        code = [c for c in cells if c["code"]]
        waiting = any(pending(c["prompt"]) for c in code)
        finished = all(executed(c["prompt"]) for c in code) or dom_error_shown(cells)
        sessions = lab.sessions(path)
        idle = bool(sessions) and sessions[0]["kernel"]["execution_state"] == "idle"
        settled = settled + 1 if (idle and finished and not waiting) else 0
        if settled >= 2:
            return cells, time.monotonic() - t0
        time.sleep(0.5)
    running = [i for i, c in enumerate(cells) if c["code"] and pending(c["prompt"])]
    raise TimeoutError(f"Run All not finished after {timeout:g} s; cells still queued or running: {running}")


def wait_widgets_settle(page, timeout: float) -> list[dict]:
    """The cells again once no output still says "Loading widget..." (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while True:
        cells = page.evaluate(READ_CELLS_JS)
        loading = any(o["text"].strip() == "Loading widget..." for c in cells for o in c["nested"])
        if not loading or time.monotonic() > end:
            return cells
        time.sleep(0.5)


def problems_in(cells: list[dict], saved: dict | None) -> list[tuple[int, str]]:
    """``(cell index, what is wrong)`` for every problem the page and the saved model show, in cell order."""
    found: list[tuple[int, str]] = []
    saved_cells = saved["cells"] if saved else None
    if saved_cells is not None and len(saved_cells) != len(cells):
        found.append((-1, f"the page shows {len(cells)} cells, the saved notebook has {len(saved_cells)}"))
        saved_cells = None
    for i, cell in enumerate(cells):
        if not cell["code"]:
            continue
        if not executed(cell["prompt"]):
            found.append((i, f"never ran (prompt {cell['prompt'] or '[ ]:'!r})"))
        model = saved_cells[i] if saved_cells is not None else None
        model_outputs = model.get("outputs", []) if model else []
        for out in model_outputs:
            if out.get("output_type") == "error":
                tb = "\n".join(out.get("traceback") or []) or f"{out.get('ename')}: {out.get('evalue')}"
                found.append((i, f"raised {out.get('ename')}: {clean(str(out.get('evalue')))}\n{head(tb)}"))
            elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = "".join(out.get("text") or "")
                if has_traceback(text):
                    found.append((i, f"printed a traceback on stderr:\n{head(text)}"))
        reported_model_tb = any(i == j for j, _ in found)
        for out in cell["nested"]:
            text = out["text"].strip()
            if text == "Loading widget...":
                found.append((i, "a widget never rendered: 'Loading widget...' left on the page"))
            elif text.startswith("Error displaying widget"):
                found.append((i, f"a widget did not render: {text.splitlines()[0]!r}"))
            elif out["mime"] == STDERR and has_traceback(out["text"]) and not reported_model_tb:
                found.append((i, f"shows a traceback in red:\n{head(out['text'])}"))
                reported_model_tb = True
        for out in cell["outputs"]:
            if out["mime"] == "text/plain" and WIDGET_REPR.match(out["text"]):
                found.append((i, f"a widget shown as its text repr, not rendered: {out['text'][:120]!r}"))
        if model is not None:
            if executed(cell["prompt"]) and f"[{model.get('execution_count')}]:" != cell["prompt"]:
                found.append((i, f"page shows {cell['prompt']}, saved model execution_count "
                                 f"{model.get('execution_count')}"))  # fmt: skip
            for j, out in enumerate(model_outputs):
                if WIDGET_VIEW not in out.get("data", {}):
                    continue
                shown = cell["outputs"][j] if j < len(cell["outputs"]) else None
                if shown is None:
                    found.append((i, f"output {j} is a widget in the saved model but is missing from the page"))
                elif shown["mime"] is not None and not shown["widget"]:
                    found.append((i, f"output {j} is a widget but the page rendered it as {shown['mime']}: "
                                     f"{shown['text'][:120]!r}"))  # fmt: skip
    return found


def describe(notebook: str, problems: list[tuple[int, str]]) -> str:
    lines = [f"{notebook}: {len(problems)} problem(s) after Run All Cells in JupyterLab"]
    for index, what in problems:
        lines.append(f"  cell {index}: {what}" if index >= 0 else f"  {what}")
    return "\n".join(lines)


def first_problem_cell(problems: list[tuple[int, str]]) -> int | None:
    return next((i for i, _ in problems if i >= 0), None)


@dataclass
class Outcome:
    """What one Run All in the browser came to."""

    problems: list[tuple[int, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    sessions: list[dict] = field(default_factory=list)  # the notebook's kernel sessions, before shutdown
    left: list[tuple[int, str]] = field(default_factory=list)  # processes that outlived the kernel
    shot: Path | None = None


def run_all_in_browser(lab, browser, notebook: Path, shot: Path) -> Outcome:
    """Copy ``notebook`` into the lab's project, open it in a fresh browser context, Run All Cells, wait,
    read the page, save and read the saved model, screenshot; then shut its kernel down."""
    path = f"notebooks/{notebook.name}"
    shutil.copy(notebook, lab.workdir / path)
    outcome = Outcome(shot=shot)
    t0 = time.monotonic()
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    try:
        page = context.new_page()
        page.set_default_timeout(60 * MS)
        try:
            page.goto(lab.url(path))
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90 * MS)
            wait_for_kernel(page, lab, path)
            outcome.timings["open"] = time.monotonic() - t0
            run_all_cells(page)
            try:
                cells, outcome.timings["run all"] = wait_until_done(page, lab, path, NOTEBOOK_TIMEOUT)
            except TimeoutError as exc:
                outcome.problems.append((-1, str(exc)))
                cells = page.evaluate(READ_CELLS_JS)
            else:
                cells = wait_widgets_settle(page, WIDGET_SETTLE_TIMEOUT)
            saved = None
            try:
                saved = save_notebook(page, lab, path)
            except Exception as exc:  # the DOM checks still stand; say why the cross-check is missing
                outcome.problems.append((-1, f"could not save the notebook for the cross-check: {exc!r}"))
            outcome.problems += problems_in(cells, saved)
            target = first_problem_cell(outcome.problems)
            if target is not None:
                page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(target).scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(shot))
        except BaseException:
            try:
                page.screenshot(path=str(shot))
            except Exception:
                pass
            raise
    finally:
        context.close()
        outcome.sessions = lab.sessions(path)
        for session in outcome.sessions:
            lab.api("DELETE", f"/api/sessions/{session['id']}", timeout=30)
        outcome.left = lab.descendants_left()
        kill_all(outcome.left)
        outcome.timings["total"] = time.monotonic() - t0
        print(f"{notebook.name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in outcome.timings.items()))
    return outcome


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory.mktemp("lab"), []) as lab:
        yield lab


@pytest.fixture(scope="module", autouse=True)
def fresh_timings():
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "timings.txt").write_text("")


@pytest.fixture(scope="module")
def browser():
    sync_api = sync_playwright_api()
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            yield browser
        finally:
            browser.close()


def test_notebooks_are_found():
    assert NOTEBOOKS, f"no notebooks/[0-9][0-9]-*.ipynb in {NOTEBOOK_DIR}"


def test_the_checks_catch_a_broken_notebook(lab, browser, tmp_path):
    """The checks can fail: a notebook with a good widget, a widget whose model does not exist, a child
    process that dies with a traceback, an exception, and a cell the exception keeps from running."""
    cells = [nbformat.v4.new_markdown_cell("# broken on purpose"),
             nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3)"),
             nbformat.v4.new_code_cell("from IPython.display import display\n"
                                       f"display({{{WIDGET_VIEW!r}: {{'model_id': 'no-such-model', "
                                       "'version_major': 2, 'version_minor': 0}, 'text/plain': 'IntSlider()'}, "
                                       "raw=True)"),
             nbformat.v4.new_code_cell("import subprocess, sys\n"
                                       "subprocess.run([sys.executable, '-c', 'raise OSError(\"child died\")'])"),
             nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
             nbformat.v4.new_code_cell("print('never printed')")]  # fmt: skip
    notebook = tmp_path / "99-broken-on-purpose.ipynb"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    outcome = run_all_in_browser(lab, browser, notebook, tmp_path / "broken.png")
    by_cell = {}
    for index, what in outcome.problems:
        by_cell.setdefault(index, []).append(what)
    report = describe(notebook.name, outcome.problems)
    print(report)
    assert outcome.sessions and not outcome.left, report
    assert 1 not in by_cell, report  # a widget that renders is no problem
    assert any("widget" in w for w in by_cell.get(2, [])), report
    # the child's stderr reaches the notebook the way a student's JupyterLab shows it: through the kernel's
    # captured file descriptor, in red, under the running cell (or the next, if the capture lags)
    child = [i for i, whats in by_cell.items() if any("traceback" in w and "OSError: child died" in w for w in whats)]
    assert child in ([3], [4]), report
    assert any(w.startswith("raised ValueError: broken on purpose") for w in by_cell.get(4, [])), report
    assert any("never ran" in w for w in by_cell.get(5, [])), report
    assert set(by_cell) <= {2, 3, 4, 5}, report


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_all_cells_in_jupyterlab(notebook, lab, browser):
    if not notebook.exists():  # notebooks get renamed while others work: not this notebook's failure
        pytest.skip(f"{notebook.name} was removed or renamed after the tests were collected")
    SHOTS.mkdir(parents=True, exist_ok=True)
    outcome = run_all_in_browser(lab, browser, notebook, SHOTS / f"{notebook.stem}.png")
    with open(SHOTS / "timings.txt", "a") as f:  # budget watch: make test-browser must stay near 10 minutes
        f.write(f"{notebook.name}\t" + "\t".join(f"{k} {v:.1f} s" for k, v in outcome.timings.items())
                + f"\t{len(outcome.problems)} problem(s)\n")  # fmt: skip
    assert outcome.sessions, f"{notebook.name}: no kernel session to shut down"
    assert not outcome.left, f"{notebook.name}: processes left behind after its kernel was shut down: {outcome.left}"
    assert not outcome.problems, describe(notebook.name, outcome.problems) + f"\n  screenshot: {outcome.shot}"
