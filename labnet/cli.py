"""``labnet`` / ``python -m labnet``: the command line.

Subcommands: ``server``, ``list``, ``upload``, ``download``, ``delete``,
``stats``, ``make-files``, ``stress``, ``matrix``, ``grade``.  Every error a user can
cause ends in one line on stderr and a non-zero exit status: 2 for bad
arguments, 1 for a failed operation (with the server's code when it gave
one).  ``--json`` on client commands prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from labnet.client import StudentClient, open_client
from labnet.config import (
    CLIENT_POOLS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ENCODINGS,
    OPERATIONS,
    SERVER_MODELS,
    ServerConfig,
    parse_size,
)
from labnet.errors import LabnetError, UsageError
from labnet.measure import grade_cli, stress
from labnet.measure.client_matrix import run_client_matrix
from labnet.measure.files import DEFAULT_SIZES, make_test_files
from labnet.measure.matrix_run import run_matrix
from labnet.measure.probe import probe
from labnet.measure.progress import byte_bar
from labnet.protocol.codec import BACKENDS
from labnet.protocol.dialects import DIALECTS
from labnet.server import run_server

EXIT_FAILED, EXIT_USAGE = 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535: {text}")
    return value


def _port_or_off(text: str) -> int | None:
    return None if text.strip().lower() in ("off", "none") else _port(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _add_dialect(p) -> None:
    p.add_argument("--dialect", choices=DIALECTS, default="labnet",
                   help="the server's wire dialect: labnet (default), course or sentinel (a student's server)")
    p.add_argument("--profile", default=None,
                   help="the server's variants: a built-in profile name or a TOML file (see README)")


def _add_base64(p, who: str) -> None:
    p.add_argument("--base64", choices=BACKENDS, default=None,
                   help=f"base64 backend of {who}: pybase64 (SIMD, releases the GIL) or binascii (the standard "
                        "library's, holds the GIL); default LABNET_BASE64, else pybase64")  # fmt: skip


def _add_address(p, with_json=True):
    p.add_argument("--host", default=DEFAULT_HOST, help=f"server address (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds without progress before giving up")
    if with_json:
        p.add_argument("--json", action="store_true", help="print one machine-readable JSON result")


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    parser = _Parser(prog="labnet", description="labnet: file service, clients and stress tests for the lab")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("server", help="run a file server in the foreground (Ctrl-C stops it)")
    p.add_argument("--model", choices=SERVER_MODELS, default=defaults.model, help="concurrency model")
    p.add_argument("--workers", type=_positive_int, default=defaults.workers, help="worker pool size")
    p.add_argument("--host", default=defaults.host, help="address to bind (0.0.0.0 for a lab network)")
    p.add_argument("--port", type=_port, default=defaults.port, help="port (0 picks a free one)")
    p.add_argument("--root", default=defaults.root, help="folder of served files")
    p.add_argument("--status-every", type=_seconds, default=defaults.status_every,
                   help="seconds between status lines; 0 turns them off")  # fmt: skip
    p.add_argument("--backlog", type=_positive_int, default=defaults.backlog, help="listen backlog")
    p.add_argument("--max-waiting", type=_positive_int, default=defaults.max_waiting,
                   help="queued connections before new ones get ERR BUSY")  # fmt: skip
    p.add_argument("--idle-timeout", type=_seconds, default=defaults.idle_timeout,
                   help="seconds a connection may wait without a complete request")  # fmt: skip
    p.add_argument("--max-upload", default=str(defaults.max_upload), help="largest upload accepted (e.g. 2GB)")
    p.add_argument("--grace", type=_seconds, default=defaults.grace, help="seconds transfers get on shutdown")
    p.add_argument("--start-method", choices=["fork", "spawn", "forkserver"], default=None,
                   help="multiprocessing start method for --model process (default fork on Linux)")  # fmt: skip
    p.add_argument("--counters-port", type=_port_or_off, default=defaults.counters_port,
                   help="port on 127.0.0.1 where the accept loop answers one JSON line of counters, without "
                        "taking a worker (default 0: any free port, named in the ready line; 'off': none)")  # fmt: skip
    _add_dialect(p)  # a student dialect: their own clients work against labnet (see README, "In a student dialect")
    _add_base64(p, "its workers")
    p.add_argument("--connection-log", metavar="FILE", help="append one JSON line per closed connection (README)")

    p = sub.add_parser("list", help="list the server's files")
    _add_address(p)
    _add_dialect(p)
    p = sub.add_parser("stats", help="show the server's counters")
    _add_address(p)
    p = sub.add_parser("delete", help="delete a file on the server")
    p.add_argument("name")
    _add_address(p)
    _add_dialect(p)
    p = sub.add_parser("upload", help="upload a file")
    p.add_argument("path")
    p.add_argument("--name", help="name on the server (default: the file's name)")
    p.add_argument("--encoding", choices=ENCODINGS, default="b64")
    _add_address(p)
    _add_dialect(p)
    p = sub.add_parser("download", help="download a file (verified before it appears)")
    p.add_argument("name")
    p.add_argument("--dest", default="client_downloads", help="folder to write into")
    p.add_argument("--encoding", choices=ENCODINGS, default="b64")
    _add_address(p)
    _add_dialect(p)

    p = sub.add_parser("probe", help="check that a server speaks its dialect: a pass/fail table in seconds")
    _add_address(p)
    _add_dialect(p)
    p.add_argument("--server-root", default=None, help="the server's folder, when on this machine (checks uploads)")
    p.set_defaults(func=_run_probe)

    p = sub.add_parser("make-files", help="write the test files (10MB, 50MB, 100MB by default)")
    p.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="comma-separated sizes; MB = 10^6 bytes")
    p.add_argument("--dest", default="client_files")

    _add_stress(sub)
    _add_matrix(sub)
    grade_cli.add_parser(sub)  # labnet grade: its flags and its run are in labnet.measure.grade_cli
    return parser


def _client(args):
    return open_client(getattr(args, "dialect", "labnet"), getattr(args, "profile", None), args.host, args.port,
                       timeout=args.timeout)  # fmt: skip


def _run_probe(args) -> int:
    result = probe(args.dialect, args.host, args.port, profile=args.profile, timeout=args.timeout,
                   server_root=args.server_root)  # fmt: skip
    print(json.dumps(result.to_dict(), sort_keys=True) if args.json else result.format())
    return 0 if result.ok else EXIT_FAILED


def _emit(args, obj, human: str) -> None:
    print(json.dumps(obj, sort_keys=True) if getattr(args, "json", False) else human)


def run(args) -> int:
    cmd = args.command
    if getattr(args, "func", None) is not None:
        return args.func(args)
    if cmd == "server":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        config = ServerConfig(model=args.model, workers=args.workers, host=args.host, port=args.port,
                              root=args.root, backlog=args.backlog, max_waiting=args.max_waiting,
                              idle_timeout=args.idle_timeout, max_upload=parse_size(args.max_upload),
                              status_every=args.status_every, grace=args.grace,
                              start_method=args.start_method, counters_port=args.counters_port, dialect=args.dialect,
                              profile=args.profile, connection_log=args.connection_log,
                              base64=args.base64)  # fmt: skip
        return run_server(config)
    if cmd == "make-files":
        sizes = [s for s in args.sizes.split(",") if s.strip()]
        for s in sizes:
            parse_size(s)  # validate all before writing any
        paths = make_test_files(args.dest, sizes)
        for p in paths:
            print(f"{p} {p.stat().st_size} bytes")
        return 0
    with _client(args) as client:
        if isinstance(client, StudentClient):
            return _student_command(client, args)
        if cmd == "list":
            files = client.list()
            _emit(args, {"files": [{"name": n, "size": s} for n, s in files]},
                  "\n".join(f"{s:>12}  {n}" for n, s in files) or "(no files)")  # fmt: skip
        elif cmd == "stats":
            snap = client.stats()
            _emit(args, snap, json.dumps(snap, indent=2, sort_keys=True))
        elif cmd == "delete":
            client.delete(args.name)
            _emit(args, {"deleted": args.name}, f"deleted {args.name}")
        elif cmd in ("upload", "download"):
            result = _transfer(client, args)
            _emit(args, result.to_dict(),
                  f"{result.op} {result.name}: {result.bytes} bytes in {result.seconds:.3f} s "
                  f"({result.throughput / 1e6:.1f} MB/s), sha256 {result.sha256[:16]}... verified")  # fmt: skip
    return 0


def _student_command(client, args) -> int:
    """list/upload/download/delete in a student's dialect: what moved and what the server said, with
    no claim of success a digest did not show (``labnet probe`` and ``labnet stress`` compare digests)."""
    cmd = args.command
    if cmd == "list":
        names = client.list()
        _emit(args, {"files": [{"name": n} for n in names]}, "\n".join(names) or "(no files)")
    elif cmd == "delete":
        said = client.delete(args.name)
        _emit(args, {"deleted": args.name, "server_said": said}, f"the server said: {said!r}")
    elif cmd == "stats":
        raise UsageError("only labnet's servers answer STATS")
    else:
        with byte_bar(desc=cmd, disable=args.json, delay=0.5) as bar:
            if cmd == "upload":
                r = client.upload(args.path, name=args.name, progress=bar.add)
            else:
                r = client.download(args.name, args.dest, progress=bar.add)
        what = ("sent; the server said " + repr(r.server_said) + " -- not verified: labnet probe or labnet "
                "stress --server-root compare what it stored") if cmd == "upload" else (
                "received (compare its SHA-256 with your copy)" + (f"; {r.findings}" if r.findings else ""))
        _emit(args, r.to_dict(), f"{r.op} {r.name}: {r.bytes} bytes in {r.seconds:.3f} s, sha256 {r.sha256[:16]}... "
                                 f"{what}")  # fmt: skip
    return 0


def _transfer(client, args):
    # delay: no bar for a transfer that fails at once or ends quickly, so an error stays one line
    with byte_bar(desc=args.command, disable=args.json, delay=0.5) as bar:
        if args.command == "upload":
            return client.upload(args.path, name=args.name, encoding=args.encoding, progress=bar.add)
        return client.download(args.name, args.dest, encoding=args.encoding, progress=bar.add)


# --------------------------------------------------------------------------
# CLI: labnet stress OP SIZE CLIENTS [POOL]
# --------------------------------------------------------------------------


def _add_stress(sub) -> None:
    """``labnet stress OP SIZE CLIENTS [POOL]`` (``func`` = :func:`_run_stress`)."""
    p = sub.add_parser("stress", help="N client workers each upload or download a file once, together",
                       description="Seed-compatible form: labnet stress upload 10MB 5 thread.  "
                                   "MB = 10^6 bytes.  Exit status 1 if any worker failed.")  # fmt: skip
    p.add_argument("op", choices=OPERATIONS, help="operation every worker does once")
    p.add_argument("size", help="file size, e.g. 10MB (MB = 10^6 bytes); the file is client_files/<size>.bin")
    p.add_argument("clients", type=_positive_int, help="number of client workers")
    p.add_argument("pool", nargs="?", choices=CLIENT_POOLS, default="thread", help="client worker pool (default thread)")
    p.add_argument("--encoding", choices=ENCODINGS, default="b64")
    _add_base64(p, "the client workers")
    p.add_argument("--time-limit", type=_seconds, default=1800.0,
                   help="seconds after the start when unfinished workers give up (default 1800)")  # fmt: skip
    p.add_argument("--files", default=None, help="folder of files to upload (default client_files)")
    p.add_argument("--dest", default=None, help="folder for downloads (default client_downloads)")
    p.add_argument("--no-keep", action="store_true", help="delete downloaded files once verified")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--per-worker-bars", action="store_true", default=None, help="one bar per worker too")
    p.add_argument("--start-method", choices=["spawn", "forkserver", "fork"], default=None,
                   help="start method of worker processes (default spawn)")  # fmt: skip
    p.add_argument("--csv", action="store_true", help="print the per-worker table as CSV on stdout")
    p.add_argument("--server-root", default=None,
                   help="a student server's folder on this machine: uploads are verified by hashing what it stored")
    p.add_argument("--no-verify", action="store_true",
                   help="without --server-root, do not download uploads back to check them (they stay unverified)")
    _add_address(p)
    _add_dialect(p)
    p.set_defaults(func=_run_stress)


def _run_stress(args) -> int:
    if args.json and args.csv:
        raise UsageError("choose one of --json and --csv")
    result = stress.run(args.op, args.size, args.clients, args.pool, host=args.host, port=args.port,
                 encoding=args.encoding, timeout=args.timeout, time_limit=args.time_limit or 1800.0,
                 files_dir=args.files, downloads_dir=args.dest, keep_downloads=not args.no_keep,
                 progress=not args.no_progress, per_worker_bars=args.per_worker_bars,
                 start_method=args.start_method, dialect=args.dialect, profile=args.profile,
                 server_root=args.server_root, verify_uploads=not args.no_verify, base64=args.base64)  # fmt: skip
    if args.json:
        print(result.to_json())
    elif args.csv:
        print(result.to_csv(), end="")
    else:
        print(result.format())
    return 0 if result.ok else 1


# --------------------------------------------------------------------------
# CLI: labnet matrix [filters] --out DIR
# --------------------------------------------------------------------------


def _add_matrix(sub) -> None:
    """``labnet matrix [filters] --out DIR`` (``func`` = :func:`_run_matrix`)."""
    p = sub.add_parser("matrix", help="run the ETS matrix (or a part) and write ets.csv, ets.md and plots",
                       description="Runs the assignment's table: operation x volume x client workers x server "
                                   "workers, per server model and client pool kind: against labnet's own "
                                   "servers (one per pool size, its peak memory reset before each cell), "
                                   "a server labnet starts from --server-cmd, "
                                   "or one run by hand (--dialect / --host --port).  Resumes DIR/ets.csv; "
                                   "--label keeps several servers in one CSV.  MB = 10^6 bytes.")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default results/ets, or results/ets-quick)")
    p.add_argument("--ops", help="operations, e.g. download,upload")
    p.add_argument("--volumes", help="file sizes, e.g. 10MB,50MB (MB = 10^6 bytes)")
    p.add_argument("--clients", help="client worker pool sizes, e.g. 1,5,50")
    p.add_argument("--server-workers", help="server worker pool sizes, e.g. 1,5,50")
    p.add_argument("--models", help="server models: thread,process (default both)")
    p.add_argument("--client-pools", help="client pool kinds: thread,process (default thread)")
    p.add_argument("--quick", action="store_true", help="small files and pools (also LABNET_QUICK=1)")
    p.add_argument("--encoding", choices=ENCODINGS, default="b64")
    _add_base64(p, "labnet's servers and clients")
    p.add_argument("--time-limit", type=_seconds, default=None, help="seconds per cell (default 600, quick 60)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds without progress before a transfer fails")
    p.add_argument("--fresh", action="store_true", help="start a new ets.csv instead of resuming")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")
    g = p.add_argument_group("whose server (default: labnet's own)")
    g.add_argument("--dialect", choices=DIALECTS, default=None,
                   help="what the clients speak: labnet (default), course or sentinel (a student's server)")
    g.add_argument("--profile", default=None, help="the server's variants: a built-in profile or a TOML file")
    g.add_argument("--label", default=None,
                   help="name of these rows in ets.csv (default: labnet for labnet's servers, else the dialect)")
    g.add_argument("--server-cmd", action="append", default=None, metavar="[MODEL=]COMMAND",
                   help="labnet starts the server under test: a command with {port} {workers} {host} {root} "
                        "{model}; repeat as thread=COMMAND and process=COMMAND for one per model")  # fmt: skip
    g.add_argument("--server-port", type=_port, default=None,
                   help="the port the command's server always listens on ({port} is then this); with "
                        "--client-cmd: the port labnet's server listens on, for a client whose port is a constant")
    g.add_argument("--server-cwd", default=None, help="folder the command runs in")
    g.add_argument("--server-root", default=None,
                   help="the server's folder on this machine: uploads verified by hashing it, downloads copied in")
    g.add_argument("--memory-limit", default=None,
                   help="stop the command's server when its process tree uses more (e.g. 500MB; MB = 10^6 bytes)")
    g.add_argument("--server-log-regex", default=None,
                   help="count the server's own ok/failed from its output: a regex with groups (?P<ok>..) "
                        "and (?P<failed>..); a number sets the count, other text adds one")  # fmt: skip
    g.add_argument("--host", default=None, help="a server run by hand: its address (with --server-cmd: {host})")
    g.add_argument("--port", type=_port, default=None, help="a server run by hand: its port")
    c = p.add_argument_group("a student's client against labnet's server (--client-cmd; needs --dialect)")
    c.add_argument("--client-cmd", default=None, metavar="COMMAND",
                   help="the client under test, e.g. 'python3 client_pool.py {op} {volume} {clients} {pool}'; "
                        "also {host} {port} {file} {volume_lower} {workers} {model}, and SERVER_HOST/SERVER_PORT "
                        "in its environment")  # fmt: skip
    c.add_argument("--client-cwd", default=None, help="folder the client runs in (default DIR/client-work)")
    c.add_argument("--client-files", default=None,
                   help="where it reads the files it uploads, inside --client-cwd (default client_files)")
    c.add_argument("--client-downloads", default=None,
                   help="where it writes downloads, inside --client-cwd (default client_downloads; '.' itself)")
    c.add_argument("--client-file-name", default="test_{volume_lower}.txt",
                   help="the file name it uses for a volume (default test_{volume_lower}.txt: test_10mb.txt)")
    c.add_argument("--client-log-regex", action="append", default=None,
                   help="read the client's own figures from its output: named groups ok, failed (a number sets "
                        "the count, other text adds one), time (s), throughput (B/s); repeatable "
                        "(default: the seed's '[OK] Time: ...' and 'Success count : N' lines)")  # fmt: skip
    p.set_defaults(func=_run_matrix)


def _client_matrix(args):
    """``labnet matrix --client-cmd``: a student's client against labnet's server (``client_matrix``)."""
    if args.server_cmd or args.host or args.port:
        raise UsageError("--client-cmd runs labnet's own server for the client: drop --server-cmd/--host/--port")
    if args.dialect in (None, "labnet"):
        raise UsageError("--client-cmd needs --dialect course or sentinel: what the client speaks")
    return run_client_matrix(args.out or "results/ets-client", command=args.client_cmd, dialect=args.dialect,
                             profile=args.profile, client_cwd=args.client_cwd, client_files=args.client_files,
                             client_downloads=args.client_downloads, client_log_regex=args.client_log_regex,
                             file_name=args.client_file_name, ops=args.ops, volumes=args.volumes,
                             clients=args.clients, server_workers=args.server_workers, server_models=args.models,
                             client_pools=args.client_pools, quick=True if args.quick else None,
                             time_limit=args.time_limit, fresh=args.fresh, progress=not args.no_progress,
                             label=args.label or "client", server_port=args.server_port)  # fmt: skip


def _run_matrix(args) -> int:
    try:
        if args.client_cmd:
            result = _client_matrix(args)
        else:
            result = run_matrix(args.out, ops=args.ops, volumes=args.volumes, clients=args.clients,
                                server_workers=args.server_workers, server_models=args.models,
                                client_pools=args.client_pools, quick=True if args.quick else None,
                                encoding=args.encoding, cell_time_limit=args.time_limit or None,
                                timeout=args.timeout or 60.0, fresh=args.fresh, plots=not args.no_plots,
                                progress=not args.no_progress, dialect=args.dialect, profile=args.profile,
                                label=args.label, server_cmd=args.server_cmd, server_port=args.server_port,
                                server_cwd=args.server_cwd, server_root=args.server_root,
                                memory_limit=args.memory_limit, server_log_regex=args.server_log_regex,
                                host=args.host, port=args.port, base64=args.base64)  # fmt: skip
    except KeyboardInterrupt:
        print("labnet: interrupted; finished rows are in ets.csv: run the same command again to resume",
              file=sys.stderr)  # fmt: skip
        return 130
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(result.markdown())
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items()))
        print(f"\n{summary['label']} ({summary['dialect']}): {summary['rows']} rows ({summary['ran']} run now, "
              f"{summary['resumed']} resumed, {summary['skipped']} skipped; verdicts: {verdicts or '-'}), "
              f"{summary['client_failures']} client failures, {summary['digest_mismatches']} digest mismatches, "
              f"{summary['wall_seconds']:.1f} s")  # fmt: skip
        print(f"wrote {result.csv_path} and {result.md_path}"
              + (f" and {len(result.plot_paths)} plots" if result.plot_paths else ""))  # fmt: skip
    bad = summary["client_failures"] or summary["digest_mismatches"] or summary["statuses"].get("failed") \
        or summary["statuses"].get("error")
    return 1 if bad else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args) or 0
    except UsageError as exc:
        print(f"labnet: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except LabnetError as exc:
        print(f"labnet: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ConnectionRefusedError:
        print(f"labnet: failed: cannot connect to {args.host}:{args.port}: connection refused "
              "(is a server running there?)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    except OSError as exc:
        print(f"labnet: failed: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("labnet: interrupted", file=sys.stderr)
        return 130
