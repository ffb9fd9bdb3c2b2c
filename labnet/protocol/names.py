"""The file-name rule of the flat namespace a labnet server serves.

A name is accepted when it is a single, visible, harmless path component:

* not empty, at most 255 bytes in UTF-8 (the limit of most file systems);
* not ``.`` or ``..`` and not starting with a dot (dot-names are hidden, and
  the store keeps its temporary files under dot-names);
* no path separator (``/`` or ``\\``), no NUL, no control character
  (U+0000..U+001F, U+007F..U+009F), no whitespace at all -- the protocol
  separates arguments with spaces, so a name is one word;
* valid UTF-8 text (the request line is decoded before the name is seen).

Whether a name *resolves* inside the root is checked again by the store
(``labnet.server.store``), which also refuses symbolic links that point outside.

Pure functions only: this module must not import sockets, threads or the
file system.
"""

from __future__ import annotations

import unicodedata

from labnet.errors import Code, PeerError

MAX_NAME_BYTES = 255


def name_problem(name: str) -> str | None:
    """Return why ``name`` is not acceptable, or ``None`` when it is."""
    if not name:
        return "name is empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"name is longer than {MAX_NAME_BYTES} bytes"
    if name in (".", ".."):
        return "name may not be '.' or '..'"
    if name.startswith("."):
        return "name may not start with a dot"
    for ch in name:
        if ch in "/\\":
            return "name may not contain a path separator"
        if ch == "\x00":
            return "name may not contain NUL"
        if ch.isspace():
            return "name may not contain whitespace"
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return f"name may not contain control character U+{ord(ch):04X}"
    return None


def check_name(name: str) -> str:
    """Return ``name`` unchanged if it follows the rule, else raise ``PeerError(BAD_NAME)``."""
    problem = name_problem(name)
    if problem is not None:
        raise PeerError(f"{problem}: {name!r}"[:200], Code.BAD_NAME)
    return name
