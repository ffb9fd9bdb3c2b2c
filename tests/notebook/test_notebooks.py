"""The notebooks are the product: every one of them runs under nbval in quick mode, and leaves nothing behind.

Each notebook runs in its own ``python -m pytest --nbval-lax`` subprocess
(``LABNET_QUICK=1``: small files, small pools) with kernel-startup and cell
timeouts.  ``--nbval-lax`` executes every cell and fails on any exception;
the notebooks' own self-check cells ``assert`` what their text claims.

Every process the run starts (kernel, servers, their workers, stress worker
processes) inherits a unique ``LABNET_NBVAL_TAG`` in its environment; after
the run none of them may still be alive.  Also checked: notebooks are
committed without outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from procfind import processes_with_env

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]-*.ipynb"))
EXPECTED = ["00-start-here", "01-framing", "02-encoding-and-integrity", "03-thread-pool-server", "04-process-pool-server",
            "05-stress-dashboard", "06-ets-table", "07-lab-network", "08-measure-your-own-server"]  # fmt: skip
CELL_TIMEOUT = 300
KERNEL_STARTUP_TIMEOUT = 120
RUN_TIMEOUT = 900


def tagged_processes(tag: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of live processes whose environment carries ``LABNET_NBVAL_TAG=tag``."""
    return processes_with_env("LABNET_NBVAL_TAG", tag)


def wait_gone(tag: str, seconds: float = 15.0) -> list[tuple[int, str]]:
    """Give exiting processes a moment (a server's grace period), then report what is still there."""
    end = time.monotonic() + seconds
    while True:
        left = tagged_processes(tag)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.2)


def test_every_notebook_of_the_lab_is_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_committed_without_outputs(notebook):
    nb = json.loads(notebook.read_text())
    dirty = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]  # fmt: skip
    assert not dirty, f"{notebook.name}: cells {dirty} have outputs; clear them before committing"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.slow  # about 2.5 minutes for all notebooks: make test-slow (run by .ci/run), and make test-browser runs them too
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_nbval(notebook, tmp_path):
    tag = uuid.uuid4().hex
    # LABNET_ETS_OUT: notebook 06 writes its table here, so every test run fills it afresh
    env = dict(os.environ, LABNET_QUICK="1", LABNET_NBVAL_TAG=tag, PYTHONUNBUFFERED="1",
               LABNET_ETS_OUT=str(tmp_path / "ets"))  # fmt: skip
    env.pop("LABNET_BROWSER", None)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", str(notebook.relative_to(ROOT)),
           "-p", "no:cacheprovider", "--nbval-kernel-name", "python3",
           "--nbval-cell-timeout", str(CELL_TIMEOUT), "--nbval-kernel-startup-timeout", str(KERNEL_STARTUP_TIMEOUT),
           "-o", "addopts=", "-q", "--no-header", "-rfE"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{notebook.name} did not finish within {RUN_TIMEOUT} s:\n{out[-4000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = wait_gone(tag)
        for pid, _ in left:  # do not leave them to the next test, then fail below
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    elapsed = time.monotonic() - t0
    print(f"{notebook.name}: {elapsed:.1f} s")
    assert proc.returncode == 0, f"{notebook.name} failed under nbval (exit {proc.returncode}):\n{out[-6000:]}"
    assert not left, f"{notebook.name} left processes behind: {left}"
