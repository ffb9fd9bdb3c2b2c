"""``labnet probe``: does a server speak its dialect correctly?  A pass/fail table in seconds.

Steps, in order (each timed; a step that cannot run because an earlier one
failed is marked "skipped"):

* ``hello`` -- the first reply fits the dialect.  When it does not, the
  probe says what it saw and which dialect it looks like ("no labnet greeting
  within 2 s; the server replied '{"status": ...}': try --dialect course");
* ``list`` -- LIST answers;
* ``1 KiB`` and ``3 MB`` -- an upload and a download of each, compared by
  SHA-256 with the lab's copy (3 MB is bigger than any one read, so a server
  that takes one ``recv()`` for a whole request fails it); the upload is
  verified by hashing the stored file when ``server_root`` is given, else by
  the download that follows;
* ``name`` -- a name with digits and ``_``;
* ``two clients`` -- two downloads at once;
* ``block padding`` -- whether the server's base64 has ``=`` padding in the
  middle (block-by-block encoding); labnet's decoder recovers such a file, so
  this step passes when the file came out whole and *reports* the finding;
* advisory, shown apart: a 0-byte file and a 1-byte file (many student
  servers fail them without being wrong for the assignment).

Exit status (CLI) 0 when every required step passed.  Test files get names
every student server accepts (lowercase ASCII, digits, ``_``, ``.``; ``GET
<name>`` within 32 bytes).

Must not import the server package, threads' pools or the notebook package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labnet.client import Client, StudentClient
from labnet.errors import LabnetError
from labnet.measure.dialect_transfer import classify_dialect, compare, file_digest
from labnet.measure.stress_report import HINTS
from labnet.protocol.dialects import get_profile

HELLO_WAIT = 2.0  # seconds to wait for a first reply before saying what was (not) seen
KB3 = 3_000_000


@dataclass
class Step:
    name: str
    required: bool
    ok: bool | None = None  # None: skipped
    seconds: float = 0.0
    detail: str = ""
    category: str = ""


@dataclass
class ProbeResult:
    dialect: str
    host: str
    port: int
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps if s.required)

    def to_dict(self) -> dict:
        return {"dialect": self.dialect, "host": self.host, "port": self.port, "ok": self.ok,
                "steps": [asdict(s) for s in self.steps]}  # fmt: skip

    def format(self) -> str:
        lines = [f"labnet probe: {self.dialect} dialect at {self.host}:{self.port}"]
        for title, required in (("required", True), ("advisory (many servers fail these; not needed)", False)):
            lines.append(f"  {title}:")
            for s in (s for s in self.steps if s.required == required):
                mark = "skip" if s.ok is None else ("PASS" if s.ok else "FAIL")
                lines.append(f"    {mark:4}  {s.name:<14} {s.seconds:7.3f} s  {s.detail}")
                if s.ok is False and HINTS.get(s.category):
                    lines.append(f"          hint: {HINTS[s.category]}")
        lines.append(f"  verdict: {'every required step passed' if self.ok else 'some required steps failed'}")
        return "\n".join(lines)


def sniff(host: str, port: int, wait: float = HELLO_WAIT) -> tuple[str, bytes]:
    """``(dialect it looks like, first bytes)``: first listen (labnet greets), then send ``LIST\\r\\n\\r\\n``."""
    with socket.create_connection((host, port), timeout=wait) as s:
        s.settimeout(wait)
        try:
            first = s.recv(200)
        except TimeoutError:
            first = b""
        if first:
            return ("labnet" if first.startswith(b"OK LABNET") or first.startswith(b"ERR ") else "unknown"), first
        s.sendall(b"LIST\r\n\r\n")
        try:
            reply = s.recv(200)
        except TimeoutError:
            reply = b""
    if reply.lstrip().startswith(b"{"):
        return "course", reply
    if reply:
        return "sentinel", reply  # plain text lines, or "Unknown command"
    return "unknown", reply


def _hello(dialect: str, host: str, port: int) -> tuple[bool, str, str]:
    try:
        looks, head = sniff(host, port)
    except ConnectionRefusedError:
        return False, "refused", f"nothing listens on {host}:{port}"
    except OSError as exc:
        return False, "refused", f"cannot connect to {host}:{port}: {exc}"
    if looks == dialect or (dialect == "sentinel" and looks == "sentinel"):
        return True, "", f"first reply fits: {head[:60]!r}"
    if dialect == "labnet":
        said = f"the server replied {head[:60]!r} to LIST" if head else "it said nothing, even to LIST"
        hint = f": try --dialect {looks}" if looks in ("course", "sentinel") else ""
        return False, "not_understood", f"no labnet greeting within {HELLO_WAIT:g} s; {said}{hint}"
    hint = f": try --dialect {looks}" if looks != "unknown" else ""
    return False, "not_understood" if head else "no_reply", f"the first reply does not fit {dialect}: {head[:60]!r}{hint}"


class _Adapter:
    """The probe's view of one client: upload a file under a name, download it, list."""

    def __init__(self, dialect, profile, host, port, timeout):
        self.dialect, self.profile, self.host, self.port, self.timeout = dialect, profile, host, port, timeout

    def _client(self):
        if self.dialect == "labnet":
            return Client(self.host, self.port, timeout=self.timeout, wait_timeout=self.timeout)
        return StudentClient(self.dialect, self.profile, host=self.host, port=self.port, timeout=self.timeout)

    def list(self) -> list[str]:
        with self._client() as c:
            listed = c.list()
        return [n if isinstance(n, str) else n[0] for n in listed]

    def upload(self, path: Path, name: str):
        with self._client() as c:
            r = c.upload(path, name=name)
        return getattr(r, "stored_name", None) or name, r.sha256

    def download(self, name: str, dest: Path):
        with self._client() as c:
            return c.download(name, dest)


def probe(dialect: str = "labnet", host: str = "127.0.0.1", port: int = 8989, profile=None, timeout: float = 30.0,
          server_root=None) -> ProbeResult:  # fmt: skip
    """Run every step against the server; never raises for what the server does (the steps say it)."""
    profile = get_profile(dialect, profile)
    result = ProbeResult(dialect, host, port)
    client = _Adapter(dialect, profile, host, port, timeout)
    work = Path(tempfile.mkdtemp(prefix="labnet-probe-"))
    try:
        def run(name: str, required: bool, fn, needs: str | None = None):
            step = Step(name, required)
            result.steps.append(step)
            if needs is not None and not next((s.ok for s in result.steps if s.name == needs), False):
                step.detail = f"skipped: {needs} failed"
                return step
            t0 = time.perf_counter()
            try:
                step.ok, step.category, step.detail = fn()
            except (OSError, LabnetError) as exc:
                step.ok = False
                step.category, _, message = classify_dialect(exc, 0)
                step.detail = message
            step.seconds = time.perf_counter() - t0
            return step

        def round_trip(size: int, name: str):
            def do():
                src = work / f"src_{name}"
                src.write_bytes(os.urandom(size))
                want = hashlib.sha256(src.read_bytes()).hexdigest()
                stored, _ = client.upload(src, name)
                if server_root:
                    got_size, got = file_digest(Path(server_root) / stored)
                    bad = compare(got_size, got, size, want)
                    if bad:
                        return False, bad[0], f"stored file {bad[1]}"
                back = client.download(stored, work / "dl")
                bad = compare(back.bytes, back.sha256, size, want)
                if bad:
                    return False, bad[0], f"download {bad[1]}"
                note = getattr(back, "findings", "")
                return True, "", f"{size} bytes up and down, SHA-256 equal" + (f"; {note}" if note else "")
            return do

        hello = run("hello", True, lambda: _hello(dialect, host, port))
        if not hello.ok:
            return result
        run("list", True, lambda: (True, "", f"{len(client.list())} files listed"))
        run("1 KiB", True, round_trip(1024, "probe_1k.bin"), needs="list")
        run("3 MB", True, round_trip(KB3, "probe_3mb.bin"), needs="list")
        run("name", True, round_trip(2048, "probe_2024_x1.bin"), needs="list")

        def two_at_once():
            outcomes = []

            def one(i):
                try:
                    r = client.download("probe_3mb.bin", work / f"two{i}")
                    outcomes.append(r.sha256)
                except (OSError, LabnetError) as exc:
                    outcomes.append(exc)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout * 2)
            want = hashlib.sha256((work / "src_probe_3mb.bin").read_bytes()).hexdigest()
            bad = [o for o in outcomes if o != want]
            if len(outcomes) < 2 or bad:
                first = next((o for o in bad if isinstance(o, Exception)), None)
                category = classify_dialect(first, 0)[0] if first is not None else "corrupted"
                return False, category, f"{2 - len(bad)} of 2 came out whole" + (f": {first}" if first else "")
            return True, "", "two 3 MB downloads at once, both whole"

        run("two clients", True, two_at_once, needs="3 MB")

        def padding():
            back = client.download("probe_3mb.bin", work / "pad")
            note = getattr(back, "findings", "")
            if "padding in the middle" in note:
                return True, "", ("the server encodes block by block: Python's b64decode would keep only the first "
                                  "block; labnet decoded every block")  # fmt: skip
            return True, "", "one continuous base64 string (no padding in the middle)"

        if dialect != "labnet":
            run("block padding", True, padding, needs="3 MB")
        run("0 bytes", False, round_trip(0, "probe_empty.bin"), needs="list")
        run("1 byte", False, round_trip(1, "probe_one.bin"), needs="list")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
