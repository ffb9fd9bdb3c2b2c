"""A Profile: which variant of a student dialect one server or client speaks (verbs, layouts, keys, markers).

dialects.md lists what the students really put on the wire; no two
submissions agree on every detail.  A :class:`Profile` names one server's or
client's choices, so that the same parsers (``course_request``,
``course_reply``, ``sentinel``) can talk to all of them.  The common forms
are built in (:data:`PROFILES`); a small TOML file gives the rest
(:func:`load_profile`), every value checked with a ``UsageError`` that names
the bad key and the values allowed.

Built-in profiles:

* ``course`` -- the common extension of the course's protocol: ``LIST``,
  ``GET <name>``, ``UPLOAD <name> <b64>``, ``DELETE <name>``, each ended by
  ``\\r\\n\\r\\n``; JSON replies with the content in ``data_file``;
* ``course-line`` -- the same, one request per line (``\\n``);
* ``course-reference`` -- the course's reference client: ``LIST`` and
  ``GET`` only, with no terminator at all (the server must end a request at
  a silence), several requests per connection;
* ``sentinel`` -- the seed's protocol: ``UPLOAD``/``DOWNLOAD``/``LIST``, the
  ``READY`` prompt, base64 ended by ``__END__``, one request per connection.

The TOML format.  Every key is optional except ``dialect`` (or ``extends``);
what is not given comes from ``extends`` (a built-in profile) or else from
the dialect's built-in profile of the same name.  ``[upload]`` and
``[reply]`` apply to ``course`` only, ``[sentinel]`` to ``sentinel`` only.
A verb set to ``""`` means the peer does not know that request.

Example 1, a ``course`` server with its own verbs, a JSON upload request
and its own reply keys::

    name = "kelompok-3"
    dialect = "course"

    [verbs]
    list = "LIST"
    upload = "POST"          # "UPLOAD", "POST", "PUT"...; "" = no upload
    download = "DOWNLOAD"
    delete = ""              # this server has no DELETE

    [request]
    terminator = "crlfcrlf"  # "crlfcrlf" (\\r\\n\\r\\n), "lf" (\\n), "none" (the request ends at a silence)
    per_connection = "one"   # "one" (the server closes after each reply) or "many"
    case_sensitive = true    # verbs as written or in upper case; false: any case

    [upload]
    layout = "json"          # "inline", "inline_length", "key_value", "header_body", "json"
    json_requests = "all"    # json layout: "all" requests are JSON objects, or only the "upload"
    command_key = "command"  # the verb's key ("" = none)
    params_key = ""          # "params" = [name, base64] in one array; "" = separate keys:
    name_key = "file_name"
    content_key = "file_content"

    [reply]
    content_key = "file_data"    # the downloaded file's base64: data_file, file_data, data, file_content
    list_key = "files"           # the LIST array: data or files
    message_key = "message"      # the error (and success) text: data or message
    name_key = "data_namafile"   # the file name in a download reply

Example 2, a ``sentinel`` server with other words::

    name = "store-fetch"
    dialect = "sentinel"

    [verbs]
    list = "DIRECTORY"
    upload = "STORE"
    download = "FETCH"

    [sentinel]
    prompt = "READY_FOR_DATA"   # what the server answers before an upload's body: READY, PROCEED...
    marker = "__COMPLETE__"     # what ends a base64 body: __END__, __EOF__...

Other ``[upload]`` keys: ``ready = true`` (``header_body`` only: the server
answers ``{"status": "READY"}`` after the header, before the body);
``length = "file"`` or ``"base64"`` (``inline_length``: what the number
counts).  ``extends = "course-line"`` starts from another built-in profile.

Pure values and checks; reads a file only when :func:`load_profile` is
given a path (with the builtin ``open``).  Imports nothing of labnet but
``errors``; must not import socket, threading, multiprocessing or os.
"""

from __future__ import annotations

import dataclasses
import tomllib  # standard library since 3.11 (labnet requires 3.11): no TOML package to install
from dataclasses import dataclass

from labnet.errors import UsageError

DIALECT_NAMES = ("course", "sentinel")
TERMINATORS = {"crlfcrlf": b"\r\n\r\n", "lf": b"\n", "none": b""}
LAYOUTS = ("inline", "inline_length", "key_value", "header_body", "json")
PER_CONNECTION = ("one", "many")
LENGTH_COUNTS = ("file", "base64")
JSON_REQUESTS = ("upload", "all")
BASE64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


@dataclass(frozen=True)
class Profile:
    """One server's or client's variant of a dialect.  The defaults are the ``course`` profile.

    Field names follow the TOML keys (``upload_layout`` is ``[upload]
    layout``); a bad value raises ``UsageError`` naming the TOML key.
    """

    name: str = "course"
    dialect: str = "course"
    # [verbs]: None = the peer does not know this request
    list_verb: str = "LIST"
    upload_verb: str | None = "UPLOAD"
    download_verb: str = "GET"
    delete_verb: str | None = "DELETE"
    # [request]
    terminator: str = "crlfcrlf"
    per_connection: str = "one"
    case_sensitive: bool = True
    # [upload] (course)
    upload_layout: str = "inline"
    upload_ready: bool = False
    upload_length: str = "file"
    json_requests: str = "upload"
    command_key: str = "command"
    params_key: str = "params"
    request_name_key: str = "filename"
    request_content_key: str = "content"
    # [reply] (course)
    content_key: str = "data_file"
    list_key: str = "data"
    message_key: str = "data"
    name_key: str = "data_namafile"
    # [sentinel]
    prompt: str = "READY"
    marker: str = "__END__"

    def __post_init__(self) -> None:
        _check(self)

    @property
    def terminator_bytes(self) -> bytes:
        """What ends a ``course`` request on the wire (``b""`` for ``none``)."""
        return TERMINATORS[self.terminator]

    def verbs(self) -> dict[str, str]:
        """The requests this peer knows: ``{"list": "LIST", "download": "GET", ...}``."""
        pairs = (("list", self.list_verb), ("upload", self.upload_verb), ("download", self.download_verb),
                 ("delete", self.delete_verb))  # fmt: skip
        return {op: verb for op, verb in pairs if verb}

    def verb_for(self, op: str) -> str:
        """The verb of ``op``; ``UsageError`` when this peer does not know that request."""
        verb = self.verbs().get(op)
        if verb is None:
            raise UsageError(f"profile {self.name!r} has no {op} request")
        return verb

    def op_of(self, verb: str) -> str:
        """Which request ``verb`` is (``"unknown"`` if none).

        Compared as written or in upper case when ``case_sensitive`` (many
        servers compare exactly; clients send upper case), else in any case.
        """
        for op, mine in self.verbs().items():
            if verb == mine or verb == mine.upper() or not self.case_sensitive and verb.upper() == mine.upper():
                return op
        return "unknown"


# TOML key -> field, per section ("" = top level), and what the value must be.
_TOML = {
    "": {"name": ("name", "text"), "dialect": ("dialect", DIALECT_NAMES)},
    "verbs": {"list": ("list_verb", "verb"), "upload": ("upload_verb", "verb?"),
              "download": ("download_verb", "verb"), "delete": ("delete_verb", "verb?")},
    "request": {"terminator": ("terminator", tuple(TERMINATORS)), "per_connection": ("per_connection", PER_CONNECTION),
                "case_sensitive": ("case_sensitive", bool)},
    "upload": {"layout": ("upload_layout", LAYOUTS), "ready": ("upload_ready", bool),
               "length": ("upload_length", LENGTH_COUNTS), "json_requests": ("json_requests", JSON_REQUESTS),
               "command_key": ("command_key", "key?"), "params_key": ("params_key", "key?"),
               "name_key": ("request_name_key", "key"), "content_key": ("request_content_key", "key")},
    "reply": {"content_key": ("content_key", "key"), "list_key": ("list_key", "key"),
              "message_key": ("message_key", "key"), "name_key": ("name_key", "key")},
    "sentinel": {"prompt": ("prompt", "text"), "marker": ("marker", "marker")},
}  # fmt: skip
_KEY_OF = {field: (f"{sec}.{key}" if sec else key) for sec, keys in _TOML.items() for key, (field, _) in keys.items()}
_ONLY_FOR = {"upload": "course", "reply": "course", "sentinel": "sentinel", "request.terminator": "course"}


def _bad(field: str, message: str) -> UsageError:
    return UsageError(f"profile key '{_KEY_OF.get(field, field)}' {message}")


def _check_value(field: str, kind, value) -> None:
    """Check one field's value against its kind (see ``_TOML``)."""
    if isinstance(kind, tuple):
        if value not in kind:
            raise _bad(field, f"is {value!r}; allowed: {', '.join(kind)}")
    elif kind is bool:
        if not isinstance(value, bool):
            raise _bad(field, f"must be true or false, not {value!r}")
    else:
        optional = kind.endswith("?")
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise _bad(field, f"must be a string, not {value!r}")
        if not value and optional and kind != "verb?":
            return
        if not value or not value.isascii() or not value.isprintable():
            raise _bad(field, f"must be non-empty printable ASCII, not {value!r}")
        if kind.startswith(("verb", "marker")) and any(ch.isspace() for ch in value):
            raise _bad(field, f"must be one word (no spaces), not {value!r}")
        if kind == "marker" and set(value) <= BASE64_CHARS:
            raise _bad(field, f"{value!r} could appear inside base64 data: it needs a character such as '_'")


def _check(p: Profile) -> None:
    for keys in _TOML.values():
        for field, kind in keys.values():
            _check_value(field, kind, getattr(p, field))
    verbs = [(f, getattr(p, f)) for f in ("list_verb", "upload_verb", "download_verb", "delete_verb")]
    seen: dict[str, str] = {}
    for field, verb in verbs:
        if verb and verb.upper() in seen:
            raise _bad(field, f"is {verb!r}, the same word as '{_KEY_OF[seen[verb.upper()]]}'")
        if verb:
            seen[verb.upper()] = field
    if p.dialect == "sentinel" and p.delete_verb:
        raise _bad("delete_verb", "must be empty: the sentinel dialect has no delete")
    if p.upload_ready and p.upload_layout != "header_body":
        raise _bad("upload_ready", f'needs upload.layout = "header_body" (the layout is {p.upload_layout!r})')
    if p.upload_layout == "header_body" and p.terminator == "lf":
        raise _bad("upload_layout", '"header_body" cannot end requests at a newline: its header is a line')
    if p.upload_layout == "json" and p.json_requests == "all" and not p.command_key:
        raise _bad("command_key", 'may not be empty when upload.json_requests = "all" (LIST needs its verb)')
    if p.upload_layout == "json" and not p.params_key and p.request_name_key == p.request_content_key:
        raise _bad("request_content_key", "must differ from upload.name_key")


# -- built-in profiles ---------------------------------------------------------------------

PROFILES: dict[str, Profile] = {
    "course": Profile(),
    "course-line": Profile(name="course-line", terminator="lf"),
    "course-reference": Profile(
        name="course-reference", upload_verb=None, delete_verb=None, terminator="none", per_connection="many"
    ),  # fmt: skip
    "sentinel": Profile(name="sentinel", dialect="sentinel", download_verb="DOWNLOAD", delete_verb=None),
}


def builtin_profile(name: str) -> Profile:
    """A built-in profile by name; ``UsageError`` listing them otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"no built-in profile {name!r}; built in: {', '.join(PROFILES)}") from None


# -- TOML ------------------------------------------------------------------------------------


def load_profile(source) -> Profile:
    """Read a profile from TOML: ``source`` is a path (``pathlib.Path``, or a string ending in ``.toml``),
    or the TOML text itself (``str`` or ``bytes``).  ``UsageError`` names any bad key."""
    if hasattr(source, "__fspath__") or isinstance(source, str) and source.endswith(".toml") and "\n" not in source:
        where = str(source)
        try:
            with open(source, "rb") as fh:
                source = fh.read()
        except OSError as exc:
            raise UsageError(f"{where}: cannot read the profile: {exc.strerror or exc}") from None
    else:
        where = "TOML profile"
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{where}: not UTF-8 text") from None
    try:
        table = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML: {exc}") from None
    try:
        return profile_from_dict(table)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc.message}") from None


def profile_from_dict(table: dict) -> Profile:
    """Build a profile from an already parsed TOML table (see the module docstring for its keys)."""
    top = dict(table)
    extends = top.pop("extends", None)
    if extends is not None and not isinstance(extends, str):
        raise UsageError(f"profile key 'extends' must be a string, not {extends!r}")
    dialect = top.get("dialect")
    if extends is None and dialect is None:
        raise UsageError(f"profile needs 'dialect' ({', '.join(DIALECT_NAMES)}) or 'extends' (a built-in profile)")
    if extends is not None:
        base = builtin_profile(extends)
    else:
        _check_value("dialect", DIALECT_NAMES, dialect)
        base = PROFILES[dialect]
    if dialect is not None and dialect != base.dialect:
        raise UsageError(f"profile key 'dialect' is {dialect!r} but 'extends' = {extends!r} is {base.dialect!r}")
    dialect = base.dialect
    changes: dict = {}
    for key, value in top.items():
        if isinstance(value, dict):
            if key not in _TOML or not key:
                raise UsageError(f"profile has an unknown section [{key}] (sections: {', '.join(_sections())})")
            _read_section(key, value, dialect, changes)
        elif key in _TOML[""]:
            changes[_TOML[""][key][0]] = value
        elif key in _TOML:
            raise UsageError(f"profile key '{key}' must be a section [{key}], not {value!r}")
        else:
            allowed = ", ".join(["dialect", "extends", "name"] + [f"[{s}]" for s in _sections()])
            raise UsageError(f"profile has an unknown key '{key}' (allowed: {allowed})")
    return dataclasses.replace(base, **changes)


def _sections() -> list[str]:
    return [s for s in _TOML if s]


def _read_section(section: str, values: dict, dialect: str, changes: dict) -> None:
    if _ONLY_FOR.get(section, dialect) != dialect:
        raise UsageError(f"profile section [{section}] applies to dialect '{_ONLY_FOR[section]}' only, "
                         f"and this profile is '{dialect}'")  # fmt: skip
    known = _TOML[section]
    for key, value in values.items():
        full = f"{section}.{key}"
        if key not in known:
            raise UsageError(f"profile has an unknown key '{full}' (allowed in [{section}]: {', '.join(known)})")
        if _ONLY_FOR.get(full, dialect) != dialect:
            raise UsageError(f"profile key '{full}' applies to dialect '{_ONLY_FOR[full]}' only")
        field, kind = known[key]
        if isinstance(kind, str) and kind.startswith("verb") and value == "":
            if not kind.endswith("?"):
                raise UsageError(f"profile key '{full}' may not be empty: every peer knows this request")
            value = None
        _check_value(field, kind, value)
        changes[field] = value
