"""One stress worker's transfer against a server in a student dialect, and its verdict from the bytes.

``labnet.measure.stress_pools.do_transfer`` hands a worker's spec here when
its dialect is ``course`` or ``sentinel``.  The transfer goes through
``labnet.client.StudentClient``; then the verdict, which never rests on the
server's word ("OK" means nothing until the bytes are compared):

* a download is compared (size and SHA-256) with the lab's own copy of the
  file: shorter is ``truncated`` (with the byte count), the same size but
  other bytes (or longer) is ``corrupted``;
* an upload is verified by hashing the stored file when the server's folder
  is local (``server_root``), else by downloading it back after the timed
  part (``verify_by_download``), else it is ``unverified`` -- not a success;
  a server that says it stored the file under another name
  (``file_path``) is checked under that name;
* what the base64 decoder noticed (block-by-block padding...) is kept in the
  record's ``findings``.

Timing: these dialects have no greeting, so the wait for a server worker
cannot be told from the transfer.  For a download the time to the first
reply byte is used as the wait, labelled approximate (``timing``); for an
upload only the total is known (``timing = "total only"``).

Must not import threads, processes, tqdm, matplotlib or IPython (spawned
stress workers import it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from labnet.client.students import StudentClient
from labnet.errors import Code, PeerError, RemoteError
from labnet.measure.stress_report import WorkerRecord, classify
from labnet.protocol.dialects.events import EndedEarly, NotUnderstood

TIMING_GREETING = "greeting"
TIMING_FIRST_BYTE = "first reply byte (approximate)"
TIMING_TOTAL = "total only"


def file_digest(path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(1 << 20)
            if not piece:
                break
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest()


def compare(received: int, digest: str, size: int, expected: str, what: str = "arrived") -> tuple[str, str] | None:
    """``(category, message)`` when the bytes differ from the lab's copy, None when they match.

    ``what``: how the bytes got there, for the message ("arrived" for a download, "stored" for an upload)."""
    if received == size and digest == expected:
        return None
    if received < size:
        return "truncated", f"truncated: {received} of {size} bytes {what} ({100 * received / max(size, 1):.1f} %)"
    return "corrupted", (f"corrupted: {received} bytes whose SHA-256 {digest[:16]}... differs from the file's "
                         f"{expected[:16]}...")  # fmt: skip


def do_dialect_transfer(spec, cancelled=None, progress=None) -> WorkerRecord:
    """Do ``spec``'s one transfer in its dialect and judge it by the bytes; always returns a record."""
    start = time.perf_counter()
    rec = WorkerRecord(worker=spec.worker, op=spec.op, size=spec.size)
    rec.timing = TIMING_FIRST_BYTE if spec.op == "download" else TIMING_TOTAL
    moved = [0]

    def on_bytes(n: int) -> None:
        moved[0] += n
        if progress is not None:
            progress(n)

    client = StudentClient(spec.dialect, spec.profile, host=spec.host, port=spec.port,
                           timeout=min(spec.timeout, spec.time_limit), time_limit=spec.time_limit)  # fmt: skip
    try:
        if spec.op == "upload":
            result = client.upload(spec.local, name=spec.name, progress=on_bytes)
        else:
            result = client.download(spec.name, spec.local, progress=on_bytes, save_as=spec.save_as)
        rec.total_seconds = time.perf_counter() - start
        if spec.op == "download" and result.first_byte_seconds is not None:
            rec.wait_seconds = result.first_byte_seconds
        rec.transfer_seconds = rec.total_seconds - rec.wait_seconds
        rec.bytes, rec.sha256, rec.path = result.bytes, result.sha256, result.path
        rec.findings = result.findings
        if spec.op == "download":
            bad = compare(result.bytes, result.sha256, spec.size, spec.expected_sha256)
        else:
            bad = _verify_upload(spec, result)
        if bad is not None:
            rec.category, rec.message = bad
            rec.code = Code.INTEGRITY.value if bad[0] in ("truncated", "corrupted") else ""
        else:
            rec.ok = True
            rec.throughput = rec.bytes / rec.total_seconds if rec.total_seconds > 0 else 0.0
            rec.transfer_throughput = rec.bytes / rec.transfer_seconds if rec.transfer_seconds > 0 else 0.0
    except Exception as exc:
        rec.ok = False
        rec.bytes = rec.bytes or moved[0]
        rec.category, rec.code, rec.message = classify_dialect(exc, moved[0])
        if spec.op == "upload" and spec.server_root and rec.category in ("reset", "closed_early", "server_error"):
            _look_at_what_was_stored(spec, rec)
        if rec.category == "timeout" and cancelled is not None and cancelled():
            rec.category, rec.message = "cancelled", "run cancelled"
    finally:
        if not rec.total_seconds:
            rec.total_seconds = time.perf_counter() - start
    if spec.op == "download" and not spec.keep and rec.path:
        try:
            os.unlink(rec.path)
        except OSError:
            pass
    return rec


def _look_at_what_was_stored(spec, rec: WorkerRecord) -> None:
    """An upload whose connection broke (or was refused) may still have left a file: a server that
    stops reading early stores what it got and closes on the rest.  Judge that file by its bytes."""
    path = Path(spec.server_root) / spec.name
    try:
        size, digest = file_digest(path)
        _, want = file_digest(spec.local)
    except OSError:
        return
    bad = compare(size, digest, spec.size, want, "stored")
    if bad is not None:
        rec.category, rec.code = bad[0], Code.INTEGRITY.value
        rec.message = f"{bad[1]}; the connection ended with: {rec.message}"


def _verify_upload(spec, result) -> tuple[str, str] | None:
    """Compare what the server stored with what was sent (see the module docstring)."""
    stored = result.stored_name or spec.name
    if spec.server_root:
        path = Path(spec.server_root) / Path(stored).name
        try:
            size, digest = file_digest(path)
        except FileNotFoundError:
            return "corrupted", f"the server said it stored {stored!r}, but {path} does not exist"
        return compare(size, digest, spec.size, result.sha256, "stored")
    if spec.verify_by_download:
        scratch = tempfile.mkdtemp(prefix="labnet-verify-")
        try:
            back = StudentClient(spec.dialect, spec.profile, host=spec.host, port=spec.port,
                                 timeout=spec.timeout).download(Path(stored).name, scratch)  # fmt: skip
            return compare(back.bytes, back.sha256, spec.size, result.sha256)
        except Exception as exc:
            category, _, message = classify_dialect(exc, 0)
            return "unverified", f"stored file could not be downloaded back to check it ({category}: {message})"
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return "unverified", "the server said OK, but its folder is not local and download-back is off: not checked"


def classify_dialect(exc: BaseException, moved: int) -> tuple[str, str, str]:
    """``(category, code, message)`` of a failed dialect transfer (see ``stress_report.HINTS``)."""
    if isinstance(exc, NotUnderstood):
        return "not_understood", "", exc.message
    if isinstance(exc, EndedEarly):
        return "closed_early", "", exc.message
    if isinstance(exc, RemoteError):
        return "server_error", exc.code.value, f"the server said: {exc.message}"
    if isinstance(exc, PeerError) and exc.code == Code.INTEGRITY and "closed" in exc.message:
        return "closed_early", "", exc.message
    if isinstance(exc, TimeoutError) and moved == 0:
        return "no_reply", "", str(exc)
    return classify(exc)
