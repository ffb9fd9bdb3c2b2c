"""Notebook 08, "Measure your own client": a student's client against labnet's server, judged by the bytes.

What it holds (thin helpers over :func:`labnet.measure.client_matrix.run_client_matrix`):

* :func:`student_client` -- the command line of one of the student-style clients in
  ``labnet.notebook.students`` (``seed_style_client``, ``faulty_client``, ``reference_style_client``)
  with the matrix's placeholders after it, run by this notebook's Python;
* :func:`measure_client` -- one small client matrix (quick by default) into a temporary folder
  (removed by :func:`cleanup`), or into ``out_dir`` when given;
* :func:`show` -- a row's assignment columns and its note, as text for a notebook cell.

Nothing here imports matplotlib, ipywidgets or IPython.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from labnet.measure.client_matrix import run_client_matrix
from labnet.measure.matrix_table import ETS_NAMES

STUDENTS = "labnet.notebook.students"
SEED_ARGS = "{op} {volume} {clients} {pool}"  # the seed's client_pool.py: its four positional arguments
_TEMP: list[Path] = []


def student_client(name: str, *before: str, after: str = "") -> str:
    """``python -m labnet.notebook.students.<name> [before...] {op} {volume} {clients} {pool} [after]``."""
    return " ".join([sys.executable, "-m", f"{STUDENTS}.{name}", *before, SEED_ARGS, after]).strip()


def measure_client(command: str, dialect: str, out_dir=None, **kw):
    """One client matrix (``run_client_matrix``'s keywords; default: quick, 100 KB, 2 clients, 2 thread
    workers, 60 s per cell, no progress lines) into ``out_dir`` or a new temporary folder."""
    if out_dir is None:
        out_dir = Path(tempfile.mkdtemp(prefix="labnet-client-"))
        _TEMP.append(out_dir)
    opts = dict(quick=True, volumes="100KB", clients="2", server_workers="2", server_models="thread",
                time_limit=60, progress=False, fresh=True)  # fmt: skip
    opts.update(kw)
    return run_client_matrix(out_dir, command=command, dialect=dialect, **opts)


def show(result) -> str:
    """Every row of ``result``: its nine columns, one per line, then the note."""
    out = []
    for row in result.rows:
        out.append(f"--- Nomor {row['Nomor']}: {row['op']} {row['Volume']}, {row['client_workers']} clients, "
                   f"{row['server_model']} server x{row['server_workers']}: {row['status']} ({row['verdict']})")
        out += [f"  {name:<44}{row[name]}" for name in ETS_NAMES[5:]]
        if row.get("note"):
            out.append("  note: " + row["note"])
    return "\n".join(out)


def cleanup() -> None:
    """Remove the temporary folders :func:`measure_client` made."""
    for folder in _TEMP:
        shutil.rmtree(folder, ignore_errors=True)
    _TEMP.clear()
