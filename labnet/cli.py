"""``labnet`` / ``python -m labnet``: the command line.

Subcommands: ``server``, ``list``, ``upload``, ``download``, ``delete``,
``stats``, ``make-files``, ``stress``, ``matrix``.  Every error a user can
cause ends in one line on stderr and a non-zero exit status: 2 for bad
arguments, 1 for a failed operation (with the server's code when it gave
one).  ``--json`` on client commands prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import LabnetError, UsageError

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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _add_address(p, with_json=True):
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8989, help="server port (default 8989)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds without progress before giving up")
    if with_json:
        p.add_argument("--json", action="store_true", help="print one machine-readable JSON result")


def build_parser() -> argparse.ArgumentParser:
    from .session import ServerConfig

    defaults = ServerConfig()
    parser = _Parser(prog="labnet", description="labnet: file service, clients and stress tests for the lab")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("server", help="run a file server in the foreground (Ctrl-C stops it)")
    p.add_argument("--model", choices=["thread", "process"], default="thread", help="concurrency model")
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

    p = sub.add_parser("list", help="list the server's files")
    _add_address(p)
    p = sub.add_parser("stats", help="show the server's counters")
    _add_address(p)
    p = sub.add_parser("delete", help="delete a file on the server")
    p.add_argument("name")
    _add_address(p)
    p = sub.add_parser("upload", help="upload a file")
    p.add_argument("path")
    p.add_argument("--name", help="name on the server (default: the file's name)")
    p.add_argument("--encoding", choices=["b64", "raw"], default="b64")
    _add_address(p)
    p = sub.add_parser("download", help="download a file (verified before it appears)")
    p.add_argument("name")
    p.add_argument("--dest", default="client_downloads", help="folder to write into")
    p.add_argument("--encoding", choices=["b64", "raw"], default="b64")
    _add_address(p)

    p = sub.add_parser("make-files", help="write the test files (10MB, 50MB, 100MB by default)")
    p.add_argument("--sizes", default="10MB,50MB,100MB", help="comma-separated sizes; MB = 10^6 bytes")
    p.add_argument("--dest", default="client_files")

    # Subcommands defined next to their code set ``func`` (see labnet.stress, labnet.experiments).
    from . import experiments, stress

    stress.add_cli(sub)
    experiments.add_cli(sub)
    return parser


def _client(args):
    from .client import Client

    return Client(args.host, args.port, timeout=args.timeout)


def _emit(args, obj, human: str) -> None:
    print(json.dumps(obj, sort_keys=True) if getattr(args, "json", False) else human)


def run(args) -> int:
    from .files import make_test_files, parse_size

    cmd = args.command
    if getattr(args, "func", None) is not None:
        return args.func(args)
    if cmd == "server":
        from .server import run_server
        from .session import ServerConfig

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        config = ServerConfig(model=args.model, workers=args.workers, host=args.host, port=args.port,
                              root=args.root, backlog=args.backlog, max_waiting=args.max_waiting,
                              idle_timeout=args.idle_timeout, max_upload=parse_size(args.max_upload),
                              status_every=args.status_every, grace=args.grace,
                              start_method=args.start_method)  # fmt: skip
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


def _transfer(client, args):
    from .progress import byte_bar

    # delay: no bar for a transfer that fails at once or ends quickly, so an error stays one line
    with byte_bar(desc=args.command, disable=args.json, delay=0.5) as bar:
        if args.command == "upload":
            return client.upload(args.path, name=args.name, encoding=args.encoding, progress=bar.add)
        return client.download(args.name, args.dest, encoding=args.encoding, progress=bar.add)


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
