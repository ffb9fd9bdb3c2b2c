"""Base64 encoding of file bodies, streamed, with a fast and a fallback backend.

The seed project encoded every 1 MiB chunk on its own, so every chunk whose
length is not a multiple of 3 ended in ``=`` padding, and decoding the
concatenation stopped at the first padding: only the first chunk survived.
Here an encoder only ever encodes whole 3-byte groups until the very last
chunk, so the wire carries *one* valid base64 string, and a decoder only ever
decodes whole 4-character groups, keeping the remainder for the next chunk.

Two backends, one output: ``pybase64`` (SIMD, ~10-50x faster than the
standard library, and it releases the GIL while it works) and ``binascii``
(what the standard library's ``base64`` module runs, and what students use:
it holds the GIL, so two threads encoding take about as long as one doing
both, measured in notebook 03).  The backend is a visible choice: the
``--base64 pybase64|binascii`` option of ``labnet server``, ``stress`` and
``matrix`` calls :func:`use_backend` in every process that encodes (server
workers and stress workers too, also under spawn).  Without a choice,
``LABNET_BASE64`` (``pybase64`` or ``binascii``) decides at import, then
pybase64 when it is installed.  :data:`BACKEND` names the one in use.

Pure computation: this module must not import sockets, threads or files.
"""

from __future__ import annotations

import binascii
import os
from contextlib import contextmanager

from labnet.config import ENCODINGS
from labnet.errors import Code, PeerError, UsageError

BACKENDS = ("pybase64", "binascii")  # the choices of --base64, fastest first


def _binascii_decode(data):
    return binascii.a2b_base64(data, strict_mode=True)


def _functions(name: str):
    """``(encode, decode)`` of backend ``name``; ``UsageError`` if it is unknown or not installed."""
    if name == "binascii":
        return binascii.b2a_base64, _binascii_decode
    if name != "pybase64":
        raise UsageError(f"unknown base64 backend {name!r}; choose {' or '.join(BACKENDS)}")
    try:
        import pybase64
    except ImportError:
        raise UsageError("the pybase64 backend is not installed (pip install pybase64), use binascii") from None
    return pybase64.b64encode, lambda data: pybase64.b64decode(data, validate=True)


def default_backend() -> str:
    """The backend without a choice: ``LABNET_BASE64`` if set, else pybase64 when installed."""
    wanted = os.environ.get("LABNET_BASE64", "").strip().lower()
    if wanted in BACKENDS:
        return wanted
    try:
        import pybase64  # noqa: F401
    except ImportError:  # pragma: no cover - pybase64 is a dependency
        return "binascii"
    return "pybase64"


def use_backend(name: str | None) -> str:
    """Encode and decode with backend ``name`` from now on, in this process; returns the name.

    ``None`` or ``""`` means :func:`default_backend`.  Process-wide (module state): a spawned
    process starts from the default, so whoever starts one passes the choice along.
    """
    global BACKEND, _b64encode_raw, _b64decode_raw
    name = (name or default_backend()).strip().lower()
    _b64encode_raw, _b64decode_raw = _functions(name)
    BACKEND = name
    return name


@contextmanager
def backend(name: str | None):
    """``with backend("binascii"): ...``: :func:`use_backend` for a block, the previous one restored after
    (``None``: keep the current one).  Process-wide: not for two threads wanting two backends at once."""
    previous = BACKEND
    if name:
        use_backend(name)
    try:
        yield BACKEND
    finally:
        use_backend(previous)


BACKEND = ""
use_backend(None)


def _b64encode(data) -> bytes:
    if BACKEND == "binascii":
        return _b64encode_raw(data, newline=False)
    return _b64encode_raw(data)


def wire_length(size: int, encoding: str) -> int:
    """Number of bytes a body of ``size`` file bytes takes on the wire."""
    if encoding == "raw":
        return size
    return 4 * ((size + 2) // 3)


class Encoder:
    """Encode a file body chunk by chunk into one continuous wire string.

    Feed chunks of any length with :meth:`encode`; call :meth:`finish` once at
    the end.  Only the bytes of a final incomplete 3-byte group are held back.
    """

    def __init__(self, encoding: str):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}")
        self.encoding = encoding
        self._held = b""

    def encode(self, chunk) -> bytes:
        if self.encoding == "raw":
            return bytes(chunk) if not isinstance(chunk, bytes) else chunk
        if self._held:
            chunk = self._held + bytes(chunk)
        cut = len(chunk) - len(chunk) % 3
        self._held = bytes(chunk[cut:])
        return _b64encode(chunk[:cut]) if cut else b""

    def finish(self) -> bytes:
        held, self._held = self._held, b""
        if self.encoding == "raw" or not held:
            return b""
        return _b64encode(held)


class Decoder:
    """Decode a wire body chunk by chunk; raise ``PeerError(INTEGRITY)`` on bad base64.

    Padding (``=``) is accepted only in the last group of the whole body; the
    caller says which chunk completes the body with ``decode(chunk, final=True)``
    (or calls :meth:`finish` after the last chunk).  A padded group at the end
    of a non-final chunk is held back: it is refused only if more data follows.
    """

    def __init__(self, encoding: str):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}")
        self.encoding = encoding
        self._held = b""

    def decode(self, chunk, final: bool = False) -> bytes:
        if self.encoding == "raw":
            return chunk
        if self._held:
            chunk = self._held + chunk
        elif not isinstance(chunk, (bytes, bytearray)):
            chunk = bytes(chunk)
        self._held = b""
        data, used = self.decode_prefix(chunk, len(chunk), final)
        self._held = bytes(chunk[used:])
        return data

    def take_held(self) -> bytes:
        """Hand back the bytes :meth:`decode` kept for the next chunk (at most 4), forgetting them."""
        held, self._held = self._held, b""
        return held

    def decode_prefix(self, buf, end: int, final: bool = False) -> tuple[bytes, int]:
        """Decode the longest run of whole groups at the start of ``buf[:end]``, in place.

        Returns ``(data, used)``: the decoded bytes and how many of the
        ``end`` bytes they came from.  The ``end - used`` bytes left over (at
        most 3, or a padded group that may not be the body's last) are *not*
        kept here: the caller offers them again, at the front of what follows.
        ``buf`` is a ``bytes`` or ``bytearray`` (a receive buffer the caller
        reuses); nothing of it is copied except by the decoding itself.  Only
        for a decoder that holds nothing back from :meth:`decode`.
        """
        if self.encoding == "raw":
            return bytes(buf[:end]), end
        if self._held:
            raise RuntimeError("decode_prefix() after decode() kept bytes back")
        cut = end if final else end - end % 4
        if not final and cut and buf.find(b"=", cut - 4, cut) != -1:
            cut -= 4  # maybe the body's last group: decide when we know what follows
        if not cut:
            return b"", 0
        # A "=" anywhere but in the final group would make a decoder stop
        # early or mis-align: exactly the seed's silent truncation.
        eq = buf.find(b"=", 0, cut)
        if eq != -1 and (not final or eq < cut - 2):
            raise PeerError("base64 padding in the middle of the body", Code.INTEGRITY)
        body = buf if cut == len(buf) and isinstance(buf, bytes) else memoryview(buf)[:cut]  # no copy
        try:
            return _b64decode_raw(body), cut
        except (binascii.Error, ValueError) as exc:
            raise PeerError(f"invalid base64 in body: {exc}", Code.INTEGRITY) from None

    def finish(self) -> bytes:
        """Decode what is held back, as the end of the body (raises if it is not a whole group)."""
        return self.decode(b"", final=True)
