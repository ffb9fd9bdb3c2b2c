"""A submission's manifest, ``labnet.toml``: what to run and how, checked; and the table the student submitted.

>>> manifest, problems = load_manifest("submissions/5025221138")
>>> problems                         # ["submissions/5025221138/labnet.toml:server.thread: unknown placeholder {prot}"]
>>> write_template("submissions/new")    # a commented labnet.toml to fill in
>>> claims, problems = read_claims(manifest.table_path)   # the student's ETS rows, as claims

What it holds: :data:`MANIFEST_NAME`, :data:`TEMPLATE` (the commented manifest ``labnet grade --init``
writes), :class:`Manifest` (the fields, paths resolved inside the submission), :func:`load_manifest`
(every problem as ``file:field: problem``, never only the first), :class:`Claim` and
:func:`read_claims` (the submitted table in the assignment's columns: ``Operasi``, ``Volume``,
``Jumlah client worker pool``, ``Jumlah server worker pool``, ``Throughput per client``, ``Jumlah
worker client yang sukses dan gagal``, ``Jumlah worker server yang sukses dan gagal``; an optional
``Model`` column says thread or process).

Pure reading and checking: it starts nothing.  Imports ``errors``, ``config``, the dialects and
``matrix_setup`` (the server command's placeholders, checked as ``labnet matrix`` checks them) only.
"""

from __future__ import annotations

import csv
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from labnet.config import CLIENT_POOLS, MB, SERVER_MODELS, parse_size
from labnet.errors import LabnetError, UsageError
from labnet.measure.matrix_setup import parse_server_cmd
from labnet.protocol.dialects import DIALECTS, PROFILES, get_profile

MANIFEST_NAME = "labnet.toml"
# client_matrix.CLIENT_PLACEHOLDERS, repeated so that checking a manifest loads no socket code (a test compares)
CLIENT_PLACEHOLDERS = ("op", "volume", "volume_lower", "volume_bytes", "clients", "pool", "host", "port", "file",
                       "workers", "model")  # fmt: skip
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
KNOWN = {
    "": {"dialect", "profile", "student", "server", "client", "table", "limits"},
    "student": {"id", "name"},
    "server": {"thread", "process", "port", "workers", "files"},
    "client": {"command", "files", "downloads", "file_name", "log_regex", "pools", "env"},
    "table": {"csv"},
    "limits": {"time_budget", "memory"},
}

TEMPLATE = '''\
# labnet.toml -- how `labnet grade` runs this submission (README: "Grading a class").
# Commands run in a scratch copy of this folder, in a network namespace of their own when the
# grader can make one.  Placeholders are filled in by labnet; do not quote them yourself.

dialect = "course"            # what the server and the client speak: course or sentinel
# profile = "course-line"     # optional: a built-in profile name, or a TOML file in this folder

[student]
id = "5025221138"             # NRP / student number
name = "Nama Mahasiswa"

[server]
# One command per concurrency model.  Placeholders: {port} {workers} {host} {root} {model}
thread = "python3 server_thread_pool.py --port {port} --workers {workers}"
process = "python3 server_process_pool.py --port {port} --workers {workers}"
# port = 8989                 # when the commands have no {port}: the port the server always uses
# workers = 5                 # when the commands have no {workers}: the pool size they always use
# files = "server_files"      # the folder (in this submission) where the server keeps its files

[client]
# The stress client, run against labnet's server speaking your dialect.  Placeholders: {op} {volume}
# (10MB) {volume_lower} {volume_bytes} {clients} {pool} {host} {port} {file} {workers} {model};
# it also gets SERVER_HOST and SERVER_PORT in its environment.
command = "python3 client_pool.py {op} {volume} {clients} {pool}"
# files = "client_files"           # where the client reads files to upload (in this submission)
# downloads = "client_downloads"   # where it writes downloaded files (in this submission)
# file_name = "test_{volume_lower}.txt"   # the name it uses for a volume (default: the seed's)
# pools = ["thread"]               # client worker pools to run: thread, process
# env = { SERVER_PROTOCOL = "course" }    # extra environment variables for the client
# log_regex = ['^Success count\\s*:\\s*(?P<ok>\\d+)', '^Fail count\\s*:\\s*(?P<failed>\\d+)']  # its own counts

[table]
# csv = "ets.csv"             # optional: the table you submitted, in the assignment's columns
#                             # (Nomor, Operasi, Volume, Jumlah client worker pool, ...)

[limits]
# time_budget = 1800          # seconds for this whole submission (default: the grader's --budget)
# memory = "1GB"              # a server over this is stopped (MB = 10^6 bytes)
'''


@dataclass
class Manifest:
    """A checked ``labnet.toml``.  Paths are absolute, inside ``folder``."""

    folder: Path
    path: Path
    student_id: str = ""
    student_name: str = ""
    dialect: str = "course"
    profile: object = None  # what get_profile takes: None, a built-in name, or a Path
    server_commands: dict = field(default_factory=dict)  # model -> template
    server_port: int | None = None
    server_workers: int | None = None
    server_files: Path | None = None
    client_command: str | None = None
    client_files: Path | None = None
    client_downloads: Path | None = None
    client_file_name: str | None = None
    client_env: dict = field(default_factory=dict)
    client_log_regex: list | None = None
    client_pools: tuple = ("thread",)
    table_path: Path | None = None
    time_budget: float | None = None
    memory_limit: int | None = None

    @property
    def who(self) -> str:
        return " ".join(p for p in (self.student_id, self.student_name) if p) or self.folder.name


def write_template(folder) -> Path:
    """Write a commented ``labnet.toml`` into ``folder`` (made if needed); never overwrite one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    if path.exists():
        raise UsageError(f"{path} exists already: edit it, or remove it first")
    path.write_text(TEMPLATE, encoding="utf-8")
    return path


def _inside(folder: Path, text: str) -> Path | None:
    """``text`` as a path inside ``folder``, or None when it leaves it (``..``, absolute)."""
    path = (folder / text).resolve()
    return path if path == folder.resolve() or folder.resolve() in path.parents else None


def load_manifest(folder) -> tuple[Manifest | None, list[str]]:
    """``(manifest, problems)``: the manifest is None when it cannot be used; problems read ``file:field: problem``."""
    folder = Path(folder).resolve()
    path = folder / MANIFEST_NAME
    problems: list[str] = []

    def bad(where: str, what: str) -> None:
        problems.append(f"{path}:{where}: {what}" if where else f"{path}: {what}")

    if not path.is_file():
        return None, [f"{path}: no manifest (labnet grade --init {folder} writes one to fill in)"]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: cannot read it: {exc}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"{path}: not valid TOML: {exc}"]
    m = Manifest(folder=folder, path=path)
    for section, keys in KNOWN.items():
        table = data if section == "" else data.get(section, {})
        if not isinstance(table, dict):
            bad(section, "must be a table ([" + section + "])")
            continue
        for key in table:
            if key not in keys and not (section == "" and isinstance(table[key], dict) and key in KNOWN):
                bad(f"{section + '.' if section else ''}{key}", f"unknown field (known: {', '.join(sorted(keys))})")

    def get(section: str, key: str, kind, what: str):
        table = data.get(section, {}) if section else data
        if not isinstance(table, dict) or key not in table:
            return None
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            bad(f"{section + '.' if section else ''}{key}", f"must be {what}, not {value!r}")
            return None
        return value

    student = data.get("student", {}) if isinstance(data.get("student", {}), dict) else {}
    m.student_id = str(student.get("id", "")).strip()
    m.student_name = str(student.get("name", "")).strip()
    if not m.student_id:
        bad("student.id", "missing: the student's id (NRP), so the class table can name them")
    dialect = get("", "dialect", str, "a dialect name")
    if dialect is None:
        bad("dialect", f"missing: one of {', '.join(d for d in DIALECTS)}")
    elif dialect not in DIALECTS:
        bad("dialect", f"must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    else:
        m.dialect = dialect
    profile = get("", "profile", str, "a built-in profile name or a TOML file")
    if profile is not None:
        if profile in PROFILES:
            m.profile = profile
        else:
            file = _inside(folder, profile)
            if file is None or not file.is_file():
                bad("profile", f"neither a built-in profile ({', '.join(sorted(PROFILES))}) nor a file in the "
                               f"submission: {profile!r}")  # fmt: skip
            else:
                m.profile = file
    if dialect in DIALECTS and (m.profile is not None or dialect != "labnet"):
        try:
            get_profile(m.dialect, m.profile)
        except (LabnetError, OSError, ValueError) as exc:
            bad("profile", str(exc))

    for model in SERVER_MODELS:
        command = get("server", model, str, "a command (a string)")
        if command is None:
            continue
        try:
            m.server_commands[model] = parse_server_cmd({model: command})[model]
        except UsageError as exc:
            bad(f"server.{model}", exc.message.removeprefix("--server-cmd: "))
    port = get("server", "port", int, "a port number")
    if port is not None:
        if not 1 <= port <= 65535:
            bad("server.port", f"must be 1..65535, not {port}")
        else:
            m.server_port = port
    workers = get("server", "workers", int, "a whole number")
    if workers is not None:
        if not 1 <= workers <= 1000:
            bad("server.workers", f"must be 1..1000, not {workers}")
        else:
            m.server_workers = workers
    for model, template in m.server_commands.items():
        names = set(_PLACEHOLDER.findall(template))
        if "port" not in names and m.server_port is None:
            bad(f"server.{model}", "has no {port}: put it in, or give server.port (the port it always uses)")
        if "workers" not in names and m.server_workers is None:
            bad(f"server.{model}", "has no {workers}: put it in, or give server.workers (the pool size it uses)")
    files = get("server", "files", str, "a folder name")
    if files is not None:
        m.server_files = _inside(folder, files)
        if m.server_files is None:
            bad("server.files", f"must be a folder inside the submission, not {files!r}")

    client = get("client", "command", str, "a command (a string)")
    if client is not None:
        unknown = set(_PLACEHOLDER.findall(client)) - set(CLIENT_PLACEHOLDERS)
        if not client.strip():
            bad("client.command", "is empty")
        elif unknown:
            bad("client.command", f"unknown placeholder {{{sorted(unknown)[0]}}} "
                                  f"(known: {', '.join('{' + p + '}' for p in CLIENT_PLACEHOLDERS)})")  # fmt: skip
        else:
            m.client_command = client.strip()
    for key in ("files", "downloads"):
        text = get("client", key, str, "a folder name")
        if text is not None:
            folder_in = _inside(folder, text)
            if folder_in is None:
                bad(f"client.{key}", f"must be a folder inside the submission, not {text!r}")
            setattr(m, f"client_{key}", folder_in)
    file_name = get("client", "file_name", str, "a file name template")
    if file_name is not None:
        if not file_name.strip() or "/" in file_name or file_name.startswith("."):
            bad("client.file_name", f"must be a plain file name such as test_{{volume_lower}}.txt, not {file_name!r}")
        else:
            m.client_file_name = file_name
    env = get("client", "env", dict, "a table of names and strings")
    if env is not None:
        if not all(isinstance(v, str) for v in env.values()):
            bad("client.env", "every value must be a string (quote numbers: SERVER_PORT = \"6666\")")
        else:
            m.client_env = dict(env)
    regex = data.get("client", {}).get("log_regex") if isinstance(data.get("client"), dict) else None
    if regex is not None:
        patterns = [regex] if isinstance(regex, str) else regex
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns) or not patterns:
            bad("client.log_regex", "must be a regular expression or a list of them")
        else:
            groups: set[str] = set()
            for pattern in patterns:
                try:
                    groups |= set(re.compile(pattern).groupindex)
                except re.error as exc:
                    bad("client.log_regex", f"not a regular expression: {exc}: {pattern!r}")
            if not groups & {"ok", "failed"}:
                bad("client.log_regex", "needs a named group (?P<ok>...) or (?P<failed>...)")
            else:
                m.client_log_regex = patterns
    pools = get("client", "pools", list, "a list such as [\"thread\", \"process\"]")
    if pools is not None:
        wrong = [p for p in pools if p not in CLIENT_POOLS]
        if wrong or not pools:
            bad("client.pools", f"must list {' and/or '.join(CLIENT_POOLS)}, not {pools!r}")
        else:
            m.client_pools = tuple(dict.fromkeys(pools))
    given = [k for k in SERVER_MODELS if k in (data.get("server") or {})] + (
        ["command"] if "command" in (data.get("client") or {}) else [])
    if not given:
        bad("server", "nothing to grade: give [server] thread/process commands, a [client] command, or both")

    table = get("table", "csv", str, "a file name")
    if table is not None:
        m.table_path = _inside(folder, table)
        if m.table_path is None or not m.table_path.is_file():
            bad("table.csv", f"no such file in the submission: {table!r}")
            m.table_path = None
        else:
            _, table_problems = read_claims(m.table_path)
            problems.extend(f"{path}:table.csv: {p}" for p in table_problems)
    budget = get("limits", "time_budget", float, "a number of seconds")
    if budget is not None:
        if budget <= 0:
            bad("limits.time_budget", f"must be more than 0 seconds, not {budget:g}")
        else:
            m.time_budget = budget
    memory = get("limits", "memory", str, 'a size such as "500MB"')
    if memory is not None:
        try:
            m.memory_limit = parse_size(memory)
            if m.memory_limit < MB:
                raise UsageError("below 1 MB")
        except (UsageError, ValueError) as exc:
            bad("limits.memory", f"not a size of at least 1 MB ({getattr(exc, 'message', exc)}): {memory!r}")
            m.memory_limit = None
    return (m if not problems else None), problems


# --------------------------------------------------------------------------
# The table the student submitted
# --------------------------------------------------------------------------

CLAIM_COLUMNS = ("Operasi", "Volume", "Jumlah client worker pool", "Jumlah server worker pool")
CLAIM_VALUES = ("Throughput per client", "Jumlah worker client yang sukses dan gagal",
                "Jumlah worker server yang sukses dan gagal")  # fmt: skip
_INT = re.compile(r"\d+")
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)?)\s*([KMG]?i?B(?:ytes?)?\s*/\s*s|[KMG]?B/s|bytes?/s)?", re.I)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


@dataclass(frozen=True)
class Claim:
    """One row of the submitted table.  ``None`` where the cell was empty or unreadable."""

    line: int
    op: str
    volume: int
    clients: int
    server_workers: int
    model: str | None = None
    throughput_Bps: float | None = None
    clients_ok: int | None = None
    clients_failed: int | None = None
    server_ok: int | None = None
    server_failed: int | None = None
    nomor: str = ""


def _pair(text: str) -> tuple[int | None, int | None]:
    """``"5 sukses / 0 gagal"``, ``"5/0"``, ``"sukses: 5, gagal: 0"`` -> ``(5, 0)``."""
    numbers = [int(n) for n in _INT.findall(text or "")]
    return (numbers[0], numbers[1]) if len(numbers) >= 2 else (None, None)


def parse_throughput(text: str) -> float | None:
    """Bytes per second from ``"3.2 MB/s"``, ``"850 KB/s"``, ``"3200000 bytes/s"``, ``"3,2"``.

    A number without a unit reads as MB/s below 10**4 (nobody measured 10 GB/s per client) and as
    bytes/s above; MB = 10^6 bytes (and MiB as 2^20).
    """
    m = _NUMBER.search(text or "")
    if not m:
        return None
    value = float(m.group(1).replace(",", "."))
    unit = (m.group(2) or "").lower().replace(" ", "")
    if not unit:
        return value * MB if value < 10**4 else value
    scale = _UNITS.get(unit[0], 1) if unit[0] in "kmg" else 1
    if "ib" in unit and unit[0] in "kmg":
        scale = {"k": 2**10, "m": 2**20, "g": 2**30}[unit[0]]
    return value * scale


def _op(text: str) -> str | None:
    low = (text or "").strip().lower()
    if low.startswith(("down", "get", "unduh")):
        return "download"
    if low.startswith(("up", "post", "put", "unggah")):
        return "upload"
    return None


def read_claims(path) -> tuple[list[Claim], list[str]]:
    """The rows of a submitted table (CSV; comma or semicolon) as claims, and its problems (``line N: ...``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        return [], [f"cannot read it: {exc}"]
    try:
        dialect = csv.Sniffer().sniff(text.splitlines()[0] if text else ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    header = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
    missing = [c for c in CLAIM_COLUMNS if c.lower() not in header]
    if missing:
        return [], [f"missing column(s) {', '.join(missing)} (the assignment's columns: Nomor, "
                    f"{', '.join(CLAIM_COLUMNS + CLAIM_VALUES)})"]  # fmt: skip
    if not any(c.lower() in header for c in CLAIM_VALUES):
        return [], [f"none of the measured columns ({', '.join(CLAIM_VALUES)})"]

    def cell(record, name):
        key = header.get(name.lower())
        return (record.get(key) or "").strip() if key else ""

    claims, problems = [], []
    for line, record in enumerate(reader, start=2):
        op = _op(cell(record, "Operasi"))
        try:
            volume_text = cell(record, "Volume")
            volume = parse_size(volume_text if not volume_text.replace(".", "").isdigit() else volume_text + "MB")
        except (UsageError, ValueError):
            volume = None
        clients = _INT.search(cell(record, "Jumlah client worker pool"))
        servers = _INT.search(cell(record, "Jumlah server worker pool"))
        if op is None or volume is None or clients is None or servers is None:
            problems.append(f"line {line}: cannot read Operasi/Volume/pool sizes: {dict(record)!r}"[:300])
            continue
        model_text = (cell(record, "Model") or cell(record, "Server")).lower()
        model = next((mo for mo in SERVER_MODELS if mo in model_text), None)
        c_ok, c_failed = _pair(cell(record, "Jumlah worker client yang sukses dan gagal"))
        s_ok, s_failed = _pair(cell(record, "Jumlah worker server yang sukses dan gagal"))
        claims.append(Claim(line, op, volume, int(clients.group()), int(servers.group()), model,
                            parse_throughput(cell(record, "Throughput per client")), c_ok, c_failed, s_ok, s_failed,
                            cell(record, "Nomor")))  # fmt: skip
    return claims, problems
