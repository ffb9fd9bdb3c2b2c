"""The students' wire dialects, sans-IO: bytes in, events out; values in, bytes out.

labnet measures the students' own servers and clients, so it must speak
what they put on the wire (``/work/shared/dialects.md`` in the course
material, condensed in each module's docstring).  Three dialects:

* ``labnet`` -- labnet's own protocol (``labnet.protocol.messages`` and
  ``labnet.protocol.receiver``): length-prefixed, SHA-256 checked; nothing
  here;
* ``course`` -- text requests, JSON replies, a whole file as one base64
  string inside the JSON: ``course_request`` and ``course_reply``;
* ``sentinel`` -- the seed's: prompt, base64, ``__END__`` marker, close:
  ``sentinel``.

A ``profile.Profile`` names one peer's variant of its dialect (verbs,
layouts, keys, terminators, prompt and marker); :func:`get_profile` finds
one.  Shared pieces: ``base64_segments`` (a streaming base64 decoder that
recovers block-by-block encodings and says so), ``json_stream`` (a JSON
object scanned as it arrives, its big string streamed), ``buffers`` (the
parsers' input buffer and the marker search), ``events`` (the events and
typed errors the parsers share).  Every parser follows
``labnet.protocol.receiver``: ``receive_data(bytes)`` (``b""`` when the peer
closed), then ``next_event()`` until ``NEED_DATA``; file content comes out
as ``receiver.Data``.  The I/O layer owns sockets, silences and time limits;
the ``end_of_request()`` methods are how it reports a silence.

Imports nothing of labnet but ``errors``, ``config`` and ``protocol``; must
not import socket, threading, multiprocessing or os.
"""

from __future__ import annotations

from labnet.errors import UsageError
from labnet.protocol.dialects.profile import PROFILES, Profile, builtin_profile, load_profile

DIALECTS = ("labnet", "course", "sentinel")

__all__ = ["DIALECTS", "PROFILES", "Profile", "get_profile", "load_profile"]


def get_profile(dialect: str, profile=None) -> Profile | None:
    """The profile to use for ``dialect``.

    ``profile``: ``None`` (the dialect's own built-in profile), a built-in
    profile's name (``"course-line"``), a ``Profile``, or what
    :func:`load_profile` reads (a path, TOML text).  ``labnet`` has no
    profile: ``None``.  ``UsageError`` for an unknown dialect or a profile of
    another dialect.
    """
    if dialect not in DIALECTS:
        raise UsageError(f"unknown dialect {dialect!r}; dialects: {', '.join(DIALECTS)}")
    if dialect == "labnet":
        if profile is not None:
            raise UsageError("the labnet dialect takes no profile")
        return None
    if profile is None:
        found = PROFILES[dialect]
    elif isinstance(profile, Profile):
        found = profile
    elif isinstance(profile, str) and profile in PROFILES:
        found = builtin_profile(profile)
    elif isinstance(profile, str) and not profile.endswith(".toml") and "=" not in profile and "\n" not in profile:
        # neither a built-in name, a .toml path nor TOML text: a typo, most likely
        raise UsageError(f"unknown profile {profile!r}: give a built-in profile ({', '.join(PROFILES)}) "
                         "or a .toml file")
    else:
        found = load_profile(profile)
    if found.dialect != dialect:
        raise UsageError(f"profile {found.name!r} is for the {found.dialect} dialect, not {dialect}")
    return found
