"""The matrix's server arguments, checked once: whose server, which dialect, how it is started.

>>> setup = server_setup(dialect="course", server_cmd="python3 srv.py --port {port} --workers {workers}",
...                      server_models="thread")
>>> setup.kind, setup.label, fill_template(setup.commands["thread"], port=6666, workers=5)
('command', 'course', 'python3 srv.py --port 6666 --workers 5')

What it holds: :class:`ServerSetup` (kind ``labnet``: labnet's own servers; ``command``: a
command labnet starts, from a template per server model; ``hand``: a server someone runs by hand),
:func:`server_setup` (``run_matrix``'s arguments and the ``labnet matrix`` flags -> a setup; every
``UsageError`` names the flag), :func:`parse_server_cmd` (``COMMAND``, ``thread=COMMAND``,
``process=COMMAND``), :func:`fill_template` (placeholders :data:`PLACEHOLDERS`; a value with spaces
or quotes is shell-quoted, so do not quote ``{root}`` yourself) and :func:`free_port`.

Pure checking: it starts nothing.  Must not import ``labnet.measure.matrix_run``,
``matrix_servers`` (they import it), the supervisor, the launcher, stress, threads or matplotlib.
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path

from labnet.config import DEFAULT_HOST, MB, SERVER_MODELS, parse_size
from labnet.errors import UsageError
from labnet.protocol.dialects import DIALECTS, get_profile

PLACEHOLDERS = ("port", "workers", "host", "root", "model")
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${HOME} is the shell's, not ours
_MODEL_CMD = re.compile(r"^\s*(thread|process)\s*=(.*)$", re.S)


@dataclass(frozen=True)
class ServerSetup:
    """How the matrix gets its servers.  ``kind``: ``labnet`` (its own), ``command`` or ``hand``."""

    kind: str = "labnet"
    dialect: str = "labnet"
    profile: object = None  # a dialect Profile (None for labnet)
    label: str = "labnet"
    commands: dict = field(default_factory=dict)  # model -> command template (kind "command")
    host: str = DEFAULT_HOST  # where the server listens ({host}; a hand-run server's address)
    port: int | None = None  # a fixed port: --server-port, or a hand-run server's --port
    cwd: Path | None = None
    root: Path | None = None  # --server-root: the server's folder on this machine
    memory_limit: int | None = None
    log_regex: re.Pattern | None = None
    workers_declared: bool = False  # the pool size is someone's word (hand-run, or no {workers})
    shown_model: str | None = None  # a hand-run server's model as given, or "unknown"
    plan_models: tuple | None = None  # the server models to plan cells for (None: the caller's filter)

    @property
    def connect_host(self) -> str:
        return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

    def uses(self, placeholder: str) -> bool:
        return any(placeholder in _placeholders(t) for t in self.commands.values())

    def stored_root(self, default_root: Path) -> Path | None:
        """The server's folder when it is on this machine (uploads are checked by hashing it), else None."""
        if self.root is not None:
            return self.root
        if self.kind == "labnet" or (self.kind == "command" and self.uses("root")):
            return default_root
        return None

    def adapt_cells(self, cells: list) -> list:
        """The planned cells as this setup runs them: its label and dialect, a hand-run server's model."""
        cells = [replace(c, server_label=self.label, dialect=self.dialect) for c in cells]
        if self.workers_declared and len({c.server_workers for c in cells}) > 1:
            raise UsageError("--server-workers must be one value here (the pool size the server was started "
                             "with: labnet cannot change it)")  # fmt: skip
        if self.shown_model:
            cells = [replace(c, server_model=self.shown_model) for c in cells]
        return cells


def _placeholders(template: str) -> set[str]:
    return set(_PLACEHOLDER.findall(template))


def parse_server_cmd(server_cmd) -> dict:
    """``server_cmd`` (a command, ``"thread=COMMAND"``, a list of those, or a dict) -> ``{model or "": template}``."""
    if isinstance(server_cmd, dict):
        items = [(str(k), str(v)) for k, v in server_cmd.items()]
    else:
        items = []
        for text in [server_cmd] if isinstance(server_cmd, str) else list(server_cmd):
            m = _MODEL_CMD.match(str(text))
            items.append((m.group(1), m.group(2)) if m else ("", str(text)))
    out: dict[str, str] = {}
    for model, template in items:
        if model not in ("", *SERVER_MODELS):
            raise UsageError(f"--server-cmd: {model!r} is not a server model ({', '.join(SERVER_MODELS)})")
        if not template.strip():
            raise UsageError(f"--server-cmd: an empty command{f' for {model}' if model else ''}")
        if model in out:
            raise UsageError(f"--server-cmd given twice for {model or 'every model'}")
        unknown = _placeholders(template) - set(PLACEHOLDERS)
        if unknown:
            raise UsageError(f"--server-cmd: unknown placeholder {{{sorted(unknown)[0]}}} "
                             f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")  # fmt: skip
        out[model] = template.strip()
    return out


def _models_of(server_models) -> tuple | None:
    if server_models is None:
        return None
    given = [server_models] if isinstance(server_models, str) else list(server_models)
    out = []
    for text in given:
        for part in str(text).split(","):
            if part.strip() and part.strip().lower() not in out:
                out.append(part.strip().lower())
    return tuple(out)


def server_setup(*, dialect=None, profile=None, label=None, server_cmd=None, server_port=None, server_cwd=None,
                 server_root=None, memory_limit=None, server_log_regex=None, host=None, port=None,
                 server_models=None, server_workers=None) -> ServerSetup:  # fmt: skip
    """The matrix's server arguments (``run_matrix``'s, the ``labnet matrix`` flags), checked.

    With ``server_cmd``: labnet starts the server (kind ``command``).  Without it but with a
    student ``dialect`` or an explicit ``host``/``port``: a server run by hand (kind ``hand``).
    Otherwise labnet's own servers.  Raises ``UsageError`` naming the flag.
    """
    models = _models_of(server_models)
    kind = "command" if server_cmd else "hand" if (dialect not in (None, "labnet") or host or port) else "labnet"
    dialect = dialect or "labnet"
    if dialect not in DIALECTS:
        raise UsageError(f"--dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    prof = get_profile(dialect, profile)
    label = str(label if label is not None else ("labnet" if kind == "labnet" else dialect)).strip()
    if not label or len(label) > 60 or not label.isprintable():
        raise UsageError(f"--label must be 1..60 printable characters, not {label!r}")
    root = Path(server_root).expanduser().resolve() if server_root else None
    if root is not None and not root.is_dir():
        raise UsageError(f"--server-root {root} is not a folder")
    for flag, value, kinds in (("--server-port", server_port, ("command",)), ("--server-cwd", server_cwd, ("command",)),
                               ("--memory-limit", memory_limit, ("command",)),
                               ("--server-log-regex", server_log_regex, ("command",)),
                               ("--port", port, ("hand",))):  # fmt: skip
        if value is not None and kind not in kinds:
            hint = ("use --server-port for the port the command's server always listens on" if flag == "--port"
                    else "it needs --server-cmd (a server labnet starts)")  # fmt: skip
            raise UsageError(f"{flag} does not apply here: {hint}")
    regex = None
    if server_log_regex is not None:
        try:
            regex = re.compile(server_log_regex)
        except re.error as exc:
            raise UsageError(f"--server-log-regex is not a regular expression: {exc}") from None
        if not {"ok", "failed"} <= set(regex.groupindex):
            raise UsageError("--server-log-regex needs the named groups (?P<ok>...) and (?P<failed>...)")
    limit = parse_size(memory_limit) if memory_limit is not None else None
    if limit is not None and limit < MB:
        raise UsageError(f"--memory-limit {memory_limit} is below 1 MB (MB = 10^6 bytes)")
    cwd = Path(server_cwd).expanduser().resolve() if server_cwd else None
    if cwd is not None and not cwd.is_dir():
        raise UsageError(f"--server-cwd {cwd} is not a folder")
    common = dict(kind=kind, dialect=dialect, profile=prof, label=label, root=root)
    if kind == "labnet":
        return ServerSetup(**common)
    if kind == "hand":
        if port is None:
            raise UsageError("give --port: where the server that runs by hand listens")
        if server_workers is None:
            raise UsageError("give --server-workers N: the pool size the server that runs by hand was started with")
        if models is not None and len(models) != 1:
            raise UsageError("--models: one model for a server that runs by hand (the one it was written with)")
        shown = models[0] if models else "unknown"
        return ServerSetup(**common, host=host or DEFAULT_HOST, port=int(port), workers_declared=True,
                           shown_model=shown, plan_models=("thread",))  # fmt: skip
    commands = parse_server_cmd(server_cmd)
    plain = commands.pop("", None)
    if models is None:
        if plain is not None and "model" not in _placeholders(plain) and not commands:
            raise UsageError("say which model the command's server is: --models thread (or process), or give "
                             "--server-cmd thread=COMMAND / process=COMMAND, or use {model} in it")  # fmt: skip
        models = tuple(m for m in SERVER_MODELS if m in commands or plain is not None)
    for model in models:
        if model not in SERVER_MODELS:
            raise UsageError(f"--models must be {' or '.join(SERVER_MODELS)}, not {model!r}")
        if plain is not None:
            commands.setdefault(model, plain)
        if model not in commands:
            raise UsageError(f"--models includes {model}, but no --server-cmd serves it (give {model}=COMMAND)")
    commands = {m: commands[m] for m in models}
    for model, template in commands.items():
        if "port" not in _placeholders(template) and server_port is None:
            raise UsageError(f"the {model} command has no {{port}}: put it in, or give --server-port P "
                             "(the port that server always listens on)")  # fmt: skip
    declared = any("workers" not in _placeholders(t) for t in commands.values())
    if declared and server_workers is None:
        raise UsageError("the command has no {workers}: give --server-workers N, the pool size it always uses")
    return ServerSetup(**common, commands=commands, host=host or "127.0.0.1",
                       port=int(server_port) if server_port is not None else None, cwd=cwd, memory_limit=limit,
                       log_regex=regex, workers_declared=declared, plan_models=models)  # fmt: skip


def fill_template(template: str, **values) -> str:
    """The command with its placeholders filled in; a value with spaces or quotes is shell-quoted."""
    return _PLACEHOLDER.sub(lambda m: shlex.quote(str(values[m.group(1)])), template)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody holds now on ``host`` (bind to 0, close): the server under test gets it."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
