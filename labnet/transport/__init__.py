"""Blocking-socket glue around the sans-IO protocol: shared by servers and the client.

* ``channel``  -- one socket with deadlines, idle limits, abort polling and ``sendfile``
* ``transfer`` -- one file body over a channel, both directions (``sendfile`` / ``splice`` where possible)
* ``pipeline`` -- SHA-256 and file writes in a bounded helper thread
* ``digests``  -- digests remembered per file version

Imports the protocol layer, ``errors``, ``config`` and ``procutil``; no server, client or lab module.
"""
