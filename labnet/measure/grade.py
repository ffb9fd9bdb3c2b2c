"""``labnet grade``: a whole class's submissions, one at a time, measured the same way, resumable.

>>> summary = grade_class("submissions", "results/grade", select="quick")
>>> summary.graded, summary.skipped, summary.table_paths      # class.csv, class.md, class.html

Per submission (a folder with a ``labnet.toml``, :mod:`labnet.measure.grade_manifest`), in a scratch
copy of the folder, in order: ``labnet probe`` of its server (thread model first), the selected
matrix rows against its servers (``run_matrix`` with ``server_cmd``, under the supervisor: own
process group, memory limit, time limit), labnet's own servers on the same rows in the same run
(for comparison: same machine, same minute), then its client against labnet's server
(:func:`run_student_client`, the one place that calls ``client_matrix``).

How one submission is run (:func:`grade_class`): labnet re-invokes itself, ``python -m labnet grade
--one FOLDER --work DIR``, inside a network namespace of its own (:mod:`labnet.measure.netns`: only
``lo`` up, so a server binding ``0.0.0.0`` reaches nothing) when this machine allows it, else on
loopback with a warning.  That child runs :func:`grade_submission` and writes ``child.json``; the
parent gives it the submission's time budget, then SIGTERM (the child stops its servers: SIGTERM
is turned into ``KeyboardInterrupt``), then SIGKILL of its process group, then deletes the
namespace, which kills whatever is still inside.  The result is saved as
``OUT/submissions/<folder>/result.json`` (atomically); a rerun skips submissions with a result
(``graded`` or ``over_budget``) unless ``fresh``.  Ctrl-C stops the submission in progress (its
result is not written) and leaves the finished ones.

NOT a sandbox: time and memory limits and a namespace do not stop a submission from reading or
deleting files, or from using the CPU.  Run the grader in a container or VM (README).

Imports the measuring tools, ``errors``, ``config`` and ``procutil``; not the server package (labnet's
servers are child processes), not the notebook package, not matplotlib (plots: ``run_matrix``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from labnet.config import parse_size, size_label
from labnet.errors import LabnetError, UsageError
from labnet.measure import client_matrix, grade_report, netns
from labnet.measure.grade_manifest import MANIFEST_NAME, Manifest, load_manifest
from labnet.measure.matrix_plan import QUICK_DIMENSIONS, plan_cells
from labnet.measure.matrix_run import run_matrix
from labnet.measure.matrix_servers import one_line
from labnet.measure.matrix_setup import fill_template, free_port
from labnet.measure.matrix_table import read_rows
from labnet.measure.probe import probe
from labnet.measure.supervisor import Supervised, SupervisorError
from labnet.procutil import set_parent_death_signal

DEFAULT_BUDGET = 1800.0  # seconds per submission
DEFAULT_MEMORY = "1GB"
QUICK_SELECT = "quick"
FINISHED = ("graded", "over_budget")  # results a rerun keeps; others (manifest_error, grader_error) are redone
STOP_GRACE = 10.0  # seconds the child gets to stop its servers after SIGTERM
PROBE_WORKERS = 2


# --------------------------------------------------------------------------
# Which rows (--select)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RowSpec:
    """One selected row: ``quick`` says which table numbers it (the quick table or the full ETS one)."""

    op: str
    volume: int
    clients: int
    server_workers: int
    quick: bool = False

    def text(self) -> str:
        return f"{self.op}:{size_label(self.volume)}:{self.clients}:{self.server_workers}"


def parse_select(text: str | None) -> list[RowSpec]:
    """``--select``: ``quick`` (default: upload and download of 1 MB, 4 clients, 2 server workers), numbers of
    the ETS table (``1,5,28``, MB = 10^6 bytes: those rows use 10/50/100 MB files), or ``op:volume:clients:workers``
    (``upload:1MB:4:2``); comma-separated, mixed."""
    specs: list[RowSpec] = []
    ets = {c.number: c for c in plan_cells(quick=False, server_models="thread")}
    for part in (text or QUICK_SELECT).split(","):
        part = part.strip()
        if not part:
            continue
        if part.lower() == QUICK_SELECT:
            vol, cli, srv = max(QUICK_DIMENSIONS["volumes"]), max(QUICK_DIMENSIONS["clients"]), \
                max(QUICK_DIMENSIONS["server_workers"])  # fmt: skip
            specs += [RowSpec(op, vol, cli, srv, quick=True) for op in QUICK_DIMENSIONS["ops"]]
        elif part.isdigit():
            cell = ets.get(int(part))
            if cell is None:
                raise UsageError(f"--select: there is no row {part} in the ETS table (1..{len(ets)})")
            specs.append(RowSpec(cell.op, cell.volume, cell.clients, cell.server_workers))
        else:
            fields = part.split(":")
            if len(fields) != 4 or fields[0] not in ("upload", "download"):
                raise UsageError(f"--select: {part!r} is not a row number, 'quick' or op:volume:clients:workers "
                                 "(e.g. upload:1MB:4:2)")  # fmt: skip
            try:
                specs.append(RowSpec(fields[0], parse_size(fields[1]), int(fields[2]), int(fields[3])))
            except ValueError:
                raise UsageError(f"--select: {part!r}: clients and workers must be whole numbers") from None
    if not specs:
        raise UsageError("--select chose no row")
    return list(dict.fromkeys(specs))


# --------------------------------------------------------------------------
# One submission (runs in the child, inside the namespace)
# --------------------------------------------------------------------------


def _deadline_left(deadline: float) -> float:
    return deadline - time.monotonic()


def _scratch_copy(folder: Path, work: Path) -> Path:
    scratch = work / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(folder, scratch, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    return scratch


def _moved(path: Path | None, manifest: Manifest, scratch: Path) -> Path | None:
    """A path of the submission, in the scratch copy."""
    return None if path is None else scratch / path.relative_to(manifest.folder)


def probe_server(manifest: Manifest, scratch: Path, work: Path, *, memory_limit: int, timeout: float = 30.0) -> dict:
    """Start the submission's server (thread model first) under the supervisor and probe it; never raises for
    what the server does.  ``{"ok", "model", "steps", "passed", "required", "error", "peak_rss_bytes"}``."""
    model = next(m for m in ("thread", "process") if m in manifest.server_commands)
    port = manifest.server_port or free_port()
    root = _moved(manifest.server_files, manifest, scratch) or (work / "probe_files")
    root.mkdir(parents=True, exist_ok=True)
    command = fill_template(manifest.server_commands[model], port=port, workers=manifest.server_workers or
                            PROBE_WORKERS, host="127.0.0.1", root=root, model=model)  # fmt: skip
    uses_root = "{root}" in manifest.server_commands[model] or manifest.server_files is not None
    out = {"model": model, "ok": False, "steps": [], "passed": 0, "required": 0, "error": "", "peak_rss_bytes": 0}
    sup = Supervised(command, cwd=scratch, memory_limit=memory_limit, log_path=work / "probe-server.log")
    try:
        with sup:
            sup.wait_listening("127.0.0.1", port, timeout=timeout)
            result = probe(manifest.dialect, "127.0.0.1", port, profile=manifest.profile, timeout=timeout,
                           server_root=root if uses_root else None)  # fmt: skip
        out.update(result.to_dict())
        required = [s for s in result.steps if s.required]
        out.update(ok=result.ok, passed=sum(1 for s in required if s.ok), required=len(required))
    except SupervisorError as exc:
        first, _, rest = str(exc).partition("\n")  # what happened, then the tail of its output
        out["error"] = " ⏎ ".join(filter(None, (first, one_line(rest, lines=4, chars=400)))) or type(exc).__name__
    finally:
        if sup.result is not None:
            out["peak_rss_bytes"] = sup.result.peak_tree_rss
            if sup.result.memory_exceeded:
                out["error"] = out["error"] or "the server went over its memory limit during the probe"
    return out


def run_student_client(manifest: Manifest, scratch: Path, work: Path, specs, *, time_limit: float,
                       progress: bool = False) -> dict:  # fmt: skip
    """The student's client against labnet's server on the selected rows: the one call into
    ``labnet.measure.client_matrix`` (another engineer's).  ``{"rows": [...], "note": ...}``."""
    if manifest.client_command is None:
        return {"rows": [], "note": "no client command in the manifest"}
    rows = []
    for spec in specs:
        optional = {k: v for k, v in (("client_files", _moved(manifest.client_files, manifest, scratch)),
                                      ("client_downloads", _moved(manifest.client_downloads, manifest, scratch)),
                                      ("file_name", manifest.client_file_name)) if v is not None}  # fmt: skip
        result = client_matrix.run_client_matrix(
            work / "client", command=manifest.client_command, dialect=manifest.dialect, profile=manifest.profile,
            client_cwd=scratch, client_log_regex=manifest.client_log_regex, ops=spec.op, volumes=spec.volume,
            clients=spec.clients, server_workers=spec.server_workers, server_models="thread",
            client_pools=list(manifest.client_pools), quick=spec.quick, time_limit=time_limit, progress=progress,
            env=manifest.client_env, lab_files=work / "files", **optional)  # fmt: skip
        rows += [grade_report.slim_row(r) for r in result.rows]
    return {"rows": rows, "note": ""}


def grade_submission(folder, work, specs, *, budget: float = DEFAULT_BUDGET, memory_limit=DEFAULT_MEMORY,
                     cell_time_limit: float | None = None, progress: bool = False, say=print) -> dict:  # fmt: skip
    """Grade one submission here (the child's work): probe, rows against its servers and labnet's, its client.

    ``work``: a folder of its own (scratch copy, matrix CSV, logs).  Returns the result dict (``status``,
    ``probe``, ``student_rows``, ``labnet_rows``, ``client``, ``claims``, ``notes``...: what
    :func:`grade_report.class_row` reads); raises ``KeyboardInterrupt`` through after stopping what it started.
    """
    folder, work = Path(folder).resolve(), Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S")
    manifest, problems = load_manifest(folder)
    result = {"folder": folder.name, "started_at": started, "problems": problems, "status": "manifest_error",
              "notes": []}  # fmt: skip
    if manifest is None:
        return result
    budget = manifest.time_budget or budget
    limit = manifest.memory_limit or parse_size(memory_limit)
    deadline = t0 + budget
    result.update(student_id=manifest.student_id, student_name=manifest.student_name, dialect=manifest.dialect,
                  budget_s=budget, memory_limit_bytes=limit, rows_selected=[s.text() for s in specs])  # fmt: skip
    scratch = _scratch_copy(folder, work)
    per_cell = cell_time_limit or max(10.0, min(600.0, budget / (4 * max(1, len(specs)))))
    if manifest.server_commands:
        say(f"  probe of {manifest.who}'s server")
        result["probe"] = probe_server(manifest, scratch, work, memory_limit=limit)
        out = work / "matrix"
        models = list(manifest.server_commands)
        commands = [f"{m}={c}" for m, c in manifest.server_commands.items()]
        server_root = _moved(manifest.server_files, manifest, scratch)
        for i, spec in enumerate(specs):
            if _deadline_left(deadline) < 5:
                result["notes"].append(f"time budget of {budget:g} s used up before row {spec.text()}")
                break
            workers = manifest.server_workers if manifest.server_workers and not all(
                "{workers}" in c for c in manifest.server_commands.values()) else spec.server_workers
            common = dict(ops=spec.op, volumes=spec.volume, clients=spec.clients, server_workers=workers,
                          server_models=models, quick=spec.quick, client_pools="thread", progress=progress,
                          files_dir=work / "files", downloads_dir=work / "downloads",
                          cell_time_limit=min(per_cell, max(5.0, _deadline_left(deadline))))  # fmt: skip
            say(f"  row {spec.text()} against {manifest.who}'s servers ({', '.join(models)}) and labnet's")
            plots = i == len(specs) - 1 and importlib.util.find_spec("matplotlib") is not None  # a lab extra
            for whose, kwargs in (("their", dict(label="student", dialect=manifest.dialect, profile=manifest.profile,
                                                 server_cmd=commands, server_port=manifest.server_port,
                                                 server_cwd=scratch, memory_limit=limit, plots=False,
                                                 server_root=server_root if server_root and server_root.is_dir()
                                                 else None, **common)),
                                  ("labnet's", dict(plots=plots, **{**common, "server_workers": spec.server_workers}))):
                try:
                    run_matrix(out, **kwargs)
                except (LabnetError, OSError) as exc:  # a row that could not be run at all: said, not fatal
                    result["notes"].append(f"row {spec.text()} on {whose} servers: {type(exc).__name__}: {exc}")
        wanted = {(s.op, s.volume, s.clients) for s in specs}
        rows = [r for r in (read_rows(out / "ets.csv").values() if (out / "ets.csv").exists() else ())
                if (r["op"], r["volume_bytes"], r["client_workers"]) in wanted]  # not rows of an older --select
        result["student_rows"] = [grade_report.slim_row(r) for r in rows if r["label"] == "student"]
        result["labnet_rows"] = [grade_report.slim_row(r) for r in rows if r["label"] == "labnet"]
        result["plots"] = sorted(str(p.relative_to(work)) for p in out.glob("*.png"))
    if manifest.client_command is not None and _deadline_left(deadline) > 5:
        say(f"  {manifest.who}'s client against labnet's server")
        try:
            result["client"] = run_student_client(manifest, scratch, work, specs, progress=progress,
                                                  time_limit=min(per_cell, max(5.0, _deadline_left(deadline))))
        except (LabnetError, OSError) as exc:
            result["client"] = {"rows": [], "note": f"the client run failed: {type(exc).__name__}: {exc}"}
    if manifest.table_path is not None:
        result["claims"] = grade_report.check_claims(manifest.table_path, result.get("student_rows", []))
    result.update(status="graded", seconds=round(time.monotonic() - t0, 3))
    for bulky in ("scratch", "files", "downloads", "probe_files"):  # copies and test files: a class adds up
        shutil.rmtree(work / bulky, ignore_errors=True)
    return result


# --------------------------------------------------------------------------
# The class (the parent): one child per submission, in a namespace when possible
# --------------------------------------------------------------------------


@dataclass
class ClassSummary:
    graded: list = field(default_factory=list)  # folder names graded now
    skipped: list = field(default_factory=list)  # finished before: kept
    isolation: str = ""
    table_paths: dict = field(default_factory=dict)
    results: list = field(default_factory=list)


def find_submissions(submissions_dir) -> list[Path]:
    """The folders of ``submissions_dir`` (sorted by name) -- with or without a manifest (the table says so)."""
    root = Path(submissions_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder of submissions")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_class(submissions_dir) -> list[str]:
    """Every problem of every manifest (``file:field: problem``); [] when all are usable.  Runs nothing."""
    problems = []
    for folder in find_submissions(submissions_dir):
        problems += load_manifest(folder)[1]
    return problems


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str), encoding="utf-8")
    os.replace(temp, path)


def _stop_child(child: subprocess.Popen) -> None:
    """SIGTERM (the child stops its servers), then SIGKILL to its whole process group."""
    if child.poll() is None:
        try:
            child.send_signal(signal.SIGTERM)
            child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except OSError:
        pass
    child.wait()


def isolation_mode(use_netns: bool | None = None) -> tuple[bool, str]:
    """``(in namespaces?, what to say)``: ``use_netns`` None tries; False says loopback on purpose."""
    if use_netns is False:
        return False, "loopback (namespaces turned off): student servers that bind 0.0.0.0 are reachable"
    ok, why = netns.can_create()
    if ok:
        return True, "one network namespace per submission (only lo up inside)"
    if use_netns:
        raise UsageError(f"--netns asked, but {why}")
    return False, (f"WARNING: loopback only -- {why}; a student server that binds 0.0.0.0 is reachable from "
                   "the network while it runs")  # fmt: skip


def run_isolated(folder: Path, work: Path, argv_tail: list[str], *, in_netns: bool, budget: float,
                 say=print) -> dict:  # fmt: skip
    """Run ``labnet grade --one`` for one submission as a child (in a namespace of its own when ``in_netns``),
    within ``budget`` seconds; return its result dict (``over_budget``/``grader_error`` when it gave none)."""
    child_json = work / "child.json"
    child_json.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "labnet", "grade", "--one", str(folder), "--work", str(work),
            "--child-json", str(child_json), *argv_tail]  # fmt: skip
    ns = netns.Namespace() if in_netns else None
    log_path = work / "grader.log"
    t0 = time.monotonic()
    timed_out = False
    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))}
    try:
        if ns is not None:
            ns.__enter__()
            argv = ns.exec_argv(argv)
        with open(log_path, "ab") as log:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=env)  # fmt: skip
        try:
            child.wait(budget + STOP_GRACE)
        except subprocess.TimeoutExpired:
            timed_out = True
            say(f"  over its time budget of {budget:g} s: stopping it")
        finally:
            _stop_child(child)  # also on Ctrl-C: nothing of this submission survives
    finally:
        if ns is not None:
            ns.__exit__(None, None, None)
    seconds = round(time.monotonic() - t0, 3)
    try:
        result = json.loads(child_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-1500:] if log_path.exists() else ""
        result = {"folder": folder.name, "status": "over_budget" if timed_out else "grader_error",
                  "notes": [f"no result from the grader's child (status {child.returncode}); its last output: "
                            f"{tail}"]}  # fmt: skip
        manifest, _ = load_manifest(folder)
        if manifest is not None:
            result.update(student_id=manifest.student_id, student_name=manifest.student_name)
    if timed_out:
        result["status"] = "over_budget"
        result.setdefault("notes", []).append(f"stopped after its time budget of {budget:g} s")
    result["wall_seconds"] = seconds
    return result


def grade_class(submissions_dir, out_dir, *, select: str | None = None, fresh: bool = False,
                budget: float | None = None, memory_limit: str | None = None, use_netns: bool | None = None,
                say=print) -> ClassSummary:  # fmt: skip
    """Grade every submission of ``submissions_dir`` not graded yet into ``out_dir``; write the class table."""
    parse_select(select)  # a bad --select fails here, not once per submission
    out = Path(out_dir).resolve()
    (out / "submissions").mkdir(parents=True, exist_ok=True)
    gone = netns.remove_stale()
    if gone:
        say(f"removed {len(gone)} namespace(s) left by a killed run: {', '.join(gone)}")
    in_netns, isolation = isolation_mode(use_netns)
    say(f"isolation: {isolation}")
    summary = ClassSummary(isolation=isolation)
    folders = find_submissions(submissions_dir)
    for folder in folders:
        work = out / "submissions" / folder.name
        saved = work / "result.json"
        if not (folder / MANIFEST_NAME).is_file():
            say(f"{folder.name}: no {MANIFEST_NAME}, not graded")
            continue
        if saved.exists() and not fresh:
            try:
                old = json.loads(saved.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            if old.get("status") in FINISHED:
                say(f"{folder.name}: finished before ({old['status']}), skipped: --fresh grades it again")
                summary.skipped.append(folder.name)
                continue
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        manifest, _ = load_manifest(folder)
        limit = budget or DEFAULT_BUDGET
        own = manifest.time_budget if manifest is not None and manifest.time_budget else limit
        say(f"{folder.name}: grading ({'namespace' if in_netns else 'loopback'}, budget {own:g} s)")
        tail = ["--select", select or QUICK_SELECT,
                "--budget", str(limit), "--memory-limit", memory_limit or DEFAULT_MEMORY]
        result = run_isolated(folder, work, tail, in_netns=in_netns, budget=own, say=say)
        result["isolation"] = f"netns {netns.PREFIX}*" if in_netns else "loopback"
        _write_json(saved, result)
        summary.graded.append(folder.name)
        say(f"{folder.name}: {result['status']} in {result['wall_seconds']:.1f} s")
    summary.results = grade_report.load_results(out)
    summary.table_paths = grade_report.write_class_table(summary.results, out, isolation=isolation)
    return summary


def child_main(folder, work, child_json, *, select: str | None, budget: float, memory_limit: str) -> int:
    """``labnet grade --one``: grade one submission here, write ``child_json``.  SIGTERM stops it cleanly."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    set_parent_death_signal(signal.SIGTERM)  # a grader killed with SIGKILL still stops this child (own session)
    specs = parse_select(select)
    result = grade_submission(folder, work, specs, budget=budget, memory_limit=memory_limit,
                              say=lambda m: print(m, flush=True))  # fmt: skip
    _write_json(Path(child_json), result)
    return 0


__all__ = ["RowSpec", "ClassSummary", "parse_select", "grade_submission", "grade_class", "check_class",
           "find_submissions", "probe_server", "run_student_client", "run_isolated", "isolation_mode", "child_main"]
