"""labnet's clients: one for labnet's own protocol, one for the students' dialects.

* ``native``   -- :class:`Client`: labnet's own protocol (length-prefixed, SHA-256 checked both ways)
* ``students`` -- :class:`StudentClient`: the ``course`` and ``sentinel`` dialects (``labnet.protocol.dialects``)

:func:`open_client` picks one by dialect name.  Imports the protocol and
transport layers, ``errors``, ``config`` and ``procutil``; never the server,
the lab's tools or the notebooks.  Must not import threading or
multiprocessing (hashing helpers live in ``labnet.transport.pipeline``).
"""

from __future__ import annotations

from labnet.client.native import UPLOAD_DIGESTS, Client, TransferResult
from labnet.client.students import DialectResult, StudentClient
from labnet.config import DEFAULT_HOST, DEFAULT_PORT
from labnet.errors import UsageError

__all__ = ["Client", "TransferResult", "UPLOAD_DIGESTS", "StudentClient", "DialectResult", "open_client"]


def open_client(dialect: str = "labnet", profile=None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                timeout: float = 60.0):  # fmt: skip
    """A client for ``dialect``: ``labnet`` -> :class:`Client`, ``course``/``sentinel`` -> :class:`StudentClient`."""
    if dialect == "labnet":
        if profile is not None:
            raise UsageError("the labnet dialect takes no profile")
        return Client(host, port, timeout=timeout)
    return StudentClient(dialect, profile, host=host, port=port, timeout=timeout)
