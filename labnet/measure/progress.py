"""Progress bars in bytes that work in a terminal and in JupyterLab.

``tqdm.auto`` picks a widget bar in a notebook and a text bar elsewhere.
Worker *processes* cannot drive a bar in the parent, so they send byte
counts through a queue and :class:`QueueFeeder` (a thread in the parent)
updates the one bar; worker threads call :meth:`ByteBar.add` directly
(tqdm's ``update`` is thread-safe).

Must not import sockets or labnet's network modules.
"""

from __future__ import annotations

import threading

from tqdm.auto import tqdm


class ByteBar:
    """A byte-counting bar; ``add(n)`` is the progress callback the client takes."""

    def __init__(self, total: int | None = None, desc: str = "", disable: bool = False, **kw):
        self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000,
                        disable=disable, dynamic_ncols=True, **kw)  # fmt: skip
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bar.update(n)

    @property
    def n(self) -> int:
        return self.bar.n

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ByteBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def byte_bar(total: int | None = None, desc: str = "", disable: bool = False, **kw) -> ByteBar:
    return ByteBar(total=total, desc=desc, disable=disable, **kw)
