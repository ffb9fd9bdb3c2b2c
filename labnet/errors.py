"""Error codes and exception types shared by every part of labnet.

Two families, because they call for different reactions:

* ``PeerError`` -- *the other side* broke the protocol or asked for something
  that cannot be done (bad request line, bad name, missing file, digest
  mismatch...).  A server answers it with ``ERR <CODE> <message>`` and keeps
  serving; a client reports it and does not retry blindly.
* ``LocalError`` -- *we* failed (disk full, read-only folder, a bug).  The
  server answers ``ERR STORAGE`` or ``ERR SERVER_ERROR`` and logs it.

On the client side a reply ``ERR <CODE> ...`` from the server becomes a
``RemoteError`` carrying that code.

This module must not import anything from labnet.
"""

from __future__ import annotations

import enum


class Code(str, enum.Enum):
    """The reply codes of ``ERR <CODE> <message>`` (documented in docs/protocol.md)."""

    BAD_REQUEST = "BAD_REQUEST"  # malformed line, unknown verb, bad size or encoding
    BAD_NAME = "BAD_NAME"  # file name breaks the name rule
    NOT_FOUND = "NOT_FOUND"  # no such file
    TOO_LARGE = "TOO_LARGE"  # upload larger than the server's limit
    INTEGRITY = "INTEGRITY"  # body does not match its SHA-256, or is not valid base64
    BUSY = "BUSY"  # every worker busy and the waiting list full
    TIMEOUT = "TIMEOUT"  # idle too long, or request line too slow
    STORAGE = "STORAGE"  # disk full, read-only folder: the server could not store
    SHUTDOWN = "SHUTDOWN"  # the server is shutting down
    SERVER_ERROR = "SERVER_ERROR"  # anything else that is the server's fault

    def __str__(self) -> str:
        return self.value


class LabnetError(Exception):
    """Base class: every labnet failure has a code and a one-line message."""

    default_code = Code.SERVER_ERROR

    def __init__(self, message: str, code: Code | None = None):
        super().__init__(message)
        self.message = message
        self.code = Code(code) if code is not None else self.default_code

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class PeerError(LabnetError):
    """The peer broke the protocol or asked for something impossible."""

    default_code = Code.BAD_REQUEST


class LocalError(LabnetError):
    """We failed: storage, resources, or a bug on this side."""

    default_code = Code.SERVER_ERROR


class RemoteError(LabnetError):
    """Client side: the server replied ``ERR <code> <message>``."""


class UsageError(LabnetError):
    """Bad arguments given to a labnet command or function (not a network error)."""

    default_code = Code.BAD_REQUEST

    def __str__(self) -> str:
        return self.message
