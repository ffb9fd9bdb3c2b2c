"""The ETS table for a student's own *client*: ``labnet matrix --client-cmd``.

>>> result = run_client_matrix("results/ets-client", dialect="sentinel", client_cwd="~/tugas",
...                            command="python3 client_pool.py {op} {volume} {clients} {pool}")
>>> result.rows[0]["clients_ok"], result.rows[0]["client_reported_ok"], result.rows[0]["note"]

For each cell (:func:`labnet.measure.matrix_plan.plan_cells`: op x volume x client workers x server
workers, per server model and client pool): a fresh labnet server (``BackgroundServer``) of the
cell's model and pool size speaking the student's dialect, in a fresh folder, with a connection log;
the lab's test file put where the client expects it (downloads: in the server's folder under the
name the client asks for; uploads: in the client's ``client_files``); the student's command run under
:class:`labnet.measure.supervisor.Supervised` (own process group, the cell's time limit, the whole
tree killed, its peak memory); then the row (:mod:`labnet.measure.client_verify`):

* times and throughput from what labnet's server logged per connection (accept to close, file
  bytes), the client's own printed figures beside them (``client_log_regex``, default the seed's lines);
* every file the server stored (upload) or the client wrote into its downloads folder (download)
  compared with the lab's copy by SHA-256.  When every worker uses the same file name (the seed's
  client), per-worker verification is impossible and the row says what was verified instead;
* a command that ends with no transfer reaching the server (a usage message, a crash) is a failure
  with its output's tail (``no_transfer``), a hang is killed at the time limit (``timeout``), and
  the client's printed success count stands beside the verified one, a difference said in words.

The client finds the server through placeholders in the command (``{host}``, ``{port}``) and the
environment variables ``SERVER_HOST`` / ``SERVER_PORT`` (what ``labnet.notebook.students``' clients
read).  File names and volume spellings are templates (:data:`DEFAULT_FILE_NAME`: the seed's
``test_10mb.txt``); placeholders :data:`CLIENT_PLACEHOLDERS` plus any given in ``placeholders``.

Rows go to ``out_dir/ets.csv`` with the matrix's columns (resumable, ``matrix_table``); what the CSV
has no column for (the client's claims, how it was verified, the files checked) goes to
``out_dir/client_cells.jsonl`` and is merged back on resume.  The client's output stays in
``out_dir/client-logs/``, each server's connection log in ``out_dir/connection-logs/``.

Must not import the server package (labnet's server runs as a child process), matplotlib at import
time, or the notebook package.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labnet.config import quick_mode, size_label
from labnet.errors import LabnetError, UsageError
from labnet.measure.client_verify import (
    SEED_CLAIMS,
    check_file,
    claims_text,
    client_claims,
    compile_claims,
    judge,
    read_connection_log,
    server_view,
)
from labnet.measure.files import data_dir, make_test_file
from labnet.measure.launcher import BackgroundServer
from labnet.measure.matrix_plan import Cell, plan_cells
from labnet.measure.matrix_run import MatrixResult, base_row, finish_row
from labnet.measure.matrix_setup import fill_template
from labnet.measure.matrix_table import (
    append_row,
    ets_table,
    is_finished,
    prepare_csv,
    read_rows,
    row_key,
)
from labnet.measure.stress import file_sha256
from labnet.measure.supervisor import Supervised, SupervisorError
from labnet.protocol.dialects import DIALECTS

CLIENT_PLACEHOLDERS = ("op", "volume", "volume_lower", "volume_bytes", "clients", "pool", "host", "port", "file",
                       "workers", "model")  # fmt: skip
DEFAULT_FILE_NAME = "test_{volume_lower}.txt"  # the seed's client_pool.py: "10MB" -> test_10mb.txt
DEFAULT_FILES = "client_files"  # where the seed's client reads uploads (relative to its folder)
DEFAULT_DOWNLOADS = "client_downloads"  # where it writes downloads
EXTRA_FIELDS = ("client_reported_ok", "client_reported_failed", "client_time_mean_s", "client_throughput_mean_Bps",
                "per_worker_verified", "transfers_logged", "connections_logged", "files_checked", "client_exit",
                "client_timed_out", "client_peak_tree_rss_bytes", "client_log", "connection_log", "command")  # fmt: skip


def _placeholder_values(cell: Cell, host: str, port: int, file_name: str, extra: dict) -> dict:
    volume = size_label(cell.volume)
    values = dict(op=cell.op, volume=volume, volume_lower=volume.lower(), volume_bytes=cell.volume,
                  clients=cell.clients, pool=cell.client_pool, host=host, port=port, file=file_name,
                  workers=cell.server_workers, model=cell.server_model)  # fmt: skip
    return {**values, **extra}


def _file_name(template: str, cell: Cell, extra: dict) -> str:
    name = _fill(template, _placeholder_values(cell, "", 0, "", extra), quote=False)
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"the client's file name {name!r} (from {template!r}) must be a plain file name")
    return name


def _fill(template: str, values: dict, quote: bool = True) -> str:
    try:
        return fill_template(template, **values) if quote else template.format(**values)
    except (KeyError, IndexError) as exc:
        raise UsageError(f"unknown placeholder {exc} in {template!r} (known: "
                         f"{', '.join('{' + p + '}' for p in values)})") from None  # fmt: skip


def _place(source: Path, target: Path) -> None:
    """``target`` holds the lab's file (copied unless it already has the same bytes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.is_file() and target.stat().st_size == source.stat().st_size
            and file_sha256(target) == file_sha256(source)):  # fmt: skip
        tmp = target.with_name(f".{target.name}.labnet-part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


def _snapshot(folder: Path) -> dict:
    out = {}
    for p in folder.iterdir() if folder.is_dir() else ():
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            out[p.name] = (st.st_size, st.st_mtime_ns)
    return out


def _finish_row(row: dict) -> dict:
    finish_row(row)
    if row["status"] in ("ok", "failed"):
        said = claims_text(row)
        source = " [server log: accept to close]" if row.get("time_mean_s") is not None else ""
        for column, key in (("Waktu total per client", "time"), ("Throughput per client", "throughput")):
            row[column] += (source if column.startswith("Waktu") else "") + (f"; {said[key]}" if key in said else "")
        row["Jumlah worker client yang sukses dan gagal"] += " (SHA-256)" + (
            f"; {said['counts']}" if "counts" in said else "")
        row["Jumlah worker server yang sukses dan gagal"] += " (connection log)"
    return row


class ClientCell:
    """How every cell runs the student's command (the checked arguments of :func:`run_client_matrix`)."""

    def __init__(self, *, command: str, dialect: str, profile, cwd: Path, files: Path, downloads: Path,
                 file_name: str, claims, placeholders: dict, env: dict, out_dir: Path, lab_files: Path,
                 time_limit: float, server_port: int = 0):  # fmt: skip
        self.command, self.dialect, self.profile = command, dialect, profile
        self.cwd, self.files, self.downloads, self.file_name = cwd, files, downloads, file_name
        self.claims, self.placeholders, self.env = claims, placeholders, env
        self.out_dir, self.lab_files, self.time_limit = out_dir, lab_files, time_limit
        self.server_port = server_port

    def run(self, cell: Cell) -> dict:
        row, t0 = base_row(cell, "b64"), time.perf_counter()
        try:
            return self._run(cell, row, t0)
        except (LabnetError, OSError) as exc:
            row.update(status="error", note=f"{type(exc).__name__}: {exc}", cell_seconds=time.perf_counter() - t0)
            return _finish_row(row)

    def _run(self, cell: Cell, row: dict, t0: float) -> dict:
        name = _file_name(self.file_name, cell, self.placeholders)
        lab_file = make_test_file(self.lab_files, cell.volume)
        expected = file_sha256(lab_file)
        stamp = f"{cell.server_label}_{cell.server_model}_{cell.client_pool}_n{cell.number:03d}_{time.strftime('%H%M%S')}"
        root = self.out_dir / ".client-server-files"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        conn_log = self.out_dir / "connection-logs" / f"{stamp}.jsonl"
        conn_log.parent.mkdir(parents=True, exist_ok=True)
        client_log = self.out_dir / "client-logs" / f"{stamp}.log"
        client_log.parent.mkdir(parents=True, exist_ok=True)
        if cell.op == "download":
            _place(lab_file, root / name)
            (self.downloads / name).unlink(missing_ok=True)  # an old copy must not pass for this cell's
        else:
            _place(lab_file, self.files / name)
        self.downloads.mkdir(parents=True, exist_ok=True)
        before = _snapshot(self.downloads)
        server = BackgroundServer(cell.server_model, cell.server_workers, port=self.server_port, root=root,
                                  status_every=0, grace=2.0,
                                  max_waiting=max(128, 2 * cell.clients), dialect=self.dialect,
                                  profile=self.profile, connection_log=conn_log)  # fmt: skip
        try:
            server.start()
            host, port = server.address
            command = _fill(self.command, _placeholder_values(cell, host, port, name, self.placeholders))
            env = {**os.environ, **self.env, "SERVER_HOST": host, "SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
            began = time.time()
            sup = Supervised(command, cwd=self.cwd, env=env, log_path=client_log)
            try:
                sup.start()
                result = sup.wait(self.time_limit)
                client_wall = time.time() - began
            finally:
                sup.stop()
            peaks = server.peak_rss()
        except SupervisorError as exc:
            raise LabnetError(f"cannot run the client's command: {exc}") from None
        finally:
            server.stop()  # every connection closes now: its log line is written
            server.cleanup_log()
        entries = [e for e in read_connection_log(conn_log) if (e.get("closed") or began) >= began]
        view = server_view(entries, cell.op, cell.volume)
        if cell.op == "upload":
            stored = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
            files, shown = [check_file(p, expected, cell.volume) for p in stored], "labnet's server folder"
        else:
            after = _snapshot(self.downloads)
            written = sorted(self.downloads / n for n, v in after.items() if before.get(n) != v)
            files, shown = [check_file(p, expected, cell.volume) for p in written], str(self.downloads)
        output = client_log.read_text(errors="replace") if client_log.is_file() else ""
        claims = client_claims(output, self.claims)
        row.update(judge(op=cell.op, clients=cell.clients, volume=cell.volume, files=files, view=view, claims=claims,
                         returncode=result.returncode, timed_out=result.timed_out, tail=result.tail,
                         shown_folder=shown, file_name=name))  # fmt: skip
        row.update(server_peak_rss_max_bytes=max(peaks.values()) if peaks else None, server_processes=len(peaks),
                   wall_s=client_wall, client_exit=result.returncode, client_timed_out=result.timed_out,
                   client_peak_tree_rss_bytes=result.peak_tree_rss, client_log=str(client_log),
                   connection_log=str(conn_log), command=command, cell_seconds=time.perf_counter() - t0)  # fmt: skip
        if row["status"] == "ok":  # verified: free the disk (a failed cell's files stay to look at)
            shutil.rmtree(root, ignore_errors=True)
            for p in files:
                if cell.op == "download":
                    p.path.unlink(missing_ok=True)
        return _finish_row(row)


CLIENT_TABLE_NOTE = (
    "*Client rows* (label given to `--client-cmd`, default `client`): labnet's own server ran in the client's "
    "dialect, so the columns read differently from the notes above. *Waktu total per client* and *Throughput "
    "per client*: per connection as labnet's server logged it (accept to close, file bytes), over the transfers "
    "that carried the whole file; the client's own printed figures follow as `client: ...`. *Jumlah worker "
    "client*: clients verified by SHA-256 (the files the server stored, or the client wrote), the client's "
    "printed count beside it; when every worker used one file name the row says what was verified instead. "
    "*Jumlah worker server*: requests labnet's server logged as completed / not completed (connection log)."
)


@dataclass
class ClientMatrixResult(MatrixResult):
    """A :class:`labnet.measure.matrix_run.MatrixResult` whose Markdown explains the client rows' columns."""

    def markdown(self) -> str:
        return ets_table(self.rows) + "\n" + CLIENT_TABLE_NOTE + "\n"


def _extras_path(out_dir: Path) -> Path:
    return out_dir / "client_cells.jsonl"


def _read_extras(out_dir: Path) -> dict:
    out = {}
    with_lines = _extras_path(out_dir)
    if with_lines.is_file():
        for line in with_lines.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
                out[tuple(obj["key"])] = obj["extra"]
            except (ValueError, KeyError, TypeError):
                continue
    return out


def _write_extras(out_dir: Path, row: dict) -> None:
    extra = {k: row.get(k) for k in EXTRA_FIELDS}
    with open(_extras_path(out_dir), "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": list(row_key(row)), "extra": extra}) + "\n")


def run_client_matrix(out_dir, *, command: str, dialect: str, profile=None, client_cwd=None, client_downloads=None,
                      client_log_regex=None, ops=None, volumes=None, clients=None, server_workers=None,
                      server_models=None, client_pools=None, quick: bool | None = None, time_limit=None, env=None,
                      fresh: bool = False, progress=True, placeholders=None, label: str = "client",
                      client_files=None, file_name: str = DEFAULT_FILE_NAME, lab_files=None,
                      server_port: int | None = None, on_row=None) -> MatrixResult:  # fmt: skip
    """Run the selected cells against the student's client ``command``; returns a ``MatrixResult``.

    ``command``: a shell command with placeholders (:data:`CLIENT_PLACEHOLDERS`: ``{op}`` ``{volume}``
    (``10MB``) ``{volume_lower}`` ``{volume_bytes}`` ``{clients}`` ``{pool}`` ``{host}`` ``{port}``
    ``{file}`` ``{workers}`` ``{model}``, and the keys of ``placeholders``); it also gets
    ``SERVER_HOST``/``SERVER_PORT`` in its environment (plus ``env``).  ``dialect``: ``course`` or
    ``sentinel`` (labnet's server speaks it; ``profile``: its variant).  ``client_cwd``: where the
    command runs (default ``out_dir/client-work``); ``client_files``/``client_downloads``: where it
    reads uploads and writes downloads (default ``client_files``/``client_downloads`` inside
    ``client_cwd``); ``file_name``: the name it uses for a volume (default the seed's
    ``test_{volume_lower}.txt``).  ``client_log_regex``: regex(es) reading its own figures (named
    groups ``ok``, ``failed``, ``time``, ``throughput``; default :data:`SEED_CLAIMS`).
    ``time_limit``: seconds per cell before the client is killed (default 600, quick 60).
    ``server_port``: the port labnet's server listens on (default a free one per cell): for a client
    whose address is a constant, set it to ``127.0.0.1`` and its port, and give that port here.
    Rows have the matrix's fields plus :data:`EXTRA_FIELDS`; label ``label`` in ``ets.csv``.
    """
    if dialect not in DIALECTS or dialect == "labnet":
        raise UsageError(f"--dialect must be the client's: {', '.join(d for d in DIALECTS if d != 'labnet')}")
    if not command or not str(command).strip():
        raise UsageError("--client-cmd: an empty command")
    quick = quick_mode() if quick is None else quick
    extra = {str(k): v for k, v in (placeholders or {}).items()}
    probe_values = {p: "" for p in (*CLIENT_PLACEHOLDERS, *extra)}
    _fill(command, probe_values)  # an unknown placeholder is a usage error now, not in every cell
    cells = plan_cells(ops=ops, volumes=volumes, clients=clients, server_workers=server_workers,
                       server_models=server_models, client_pools=client_pools, quick=quick, label=label,
                       dialect=dialect)  # fmt: skip
    for cell in cells:
        _file_name(file_name, cell, extra)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    cwd = Path(client_cwd).expanduser().resolve() if client_cwd else out_dir / "client-work"
    if client_cwd and not cwd.is_dir():
        raise UsageError(f"--client-cwd {cwd} is not a folder")
    cwd.mkdir(parents=True, exist_ok=True)
    runner = ClientCell(command=str(command), dialect=dialect, profile=profile, cwd=cwd,
                        files=cwd / (client_files or DEFAULT_FILES), downloads=cwd / (client_downloads or DEFAULT_DOWNLOADS),
                        file_name=file_name, claims=compile_claims(client_log_regex or SEED_CLAIMS),
                        placeholders=extra, env={str(k): str(v) for k, v in (env or {}).items()}, out_dir=out_dir,
                        lab_files=Path(lab_files) if lab_files else data_dir("client_files"),
                        time_limit=float(time_limit or (60.0 if quick else 600.0)),
                        server_port=int(server_port or 0))  # fmt: skip
    csv_path = out_dir / "ets.csv"
    if fresh:
        for path in (csv_path, _extras_path(out_dir)):
            if path.exists():
                os.replace(path, path.with_name(path.name + ".bak"))
    prepare_csv(csv_path)
    done, extras = read_rows(csv_path), _read_extras(out_dir)
    for key, row in done.items():
        row.update(extras.get(key, {}))
    todo = [c for c in cells if not is_finished(done.get(c.key))]
    result = ClientMatrixResult(rows=[], cells=cells, csv_path=csv_path, md_path=None, resumed=len(cells) - len(todo),
                          label=label, dialect=dialect, server_kind="labnet")  # fmt: skip
    t0 = time.perf_counter()
    try:
        for i, cell in enumerate(todo, 1):
            if progress:
                print(f"[{i}/{len(todo)}] {cell.label()}", file=sys.stderr, flush=True)
            row = runner.run(cell)
            append_row(csv_path, row)
            _write_extras(out_dir, row)
            done[cell.key] = row
            result.ran += 1
            result.server_starts.append((cell.server_model, cell.server_workers))
            if progress:
                print(f"    {row['verdict']}: {row['Jumlah worker client yang sukses dan gagal']}", file=sys.stderr)
            if on_row is not None:
                on_row(row)
    finally:
        result.wall_seconds = time.perf_counter() - t0
        result.rows = [done[c.key] for c in cells if c.key in done]
        shutil.rmtree(out_dir / ".client-server-files", ignore_errors=True)
    result.md_path = out_dir / "ets.md"
    every_row = list(read_rows(csv_path).values())
    result.md_path.write_text(ets_table(every_row, title="ETS: stress-test table") + "\n" + CLIENT_TABLE_NOTE + "\n",
                              encoding="utf-8")  # fmt: skip
    return result
