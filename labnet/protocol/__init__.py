"""The sans-IO core: bytes in, events out; values in, bytes out.  No sockets, threads, processes or files.

* ``receiver`` -- :class:`~labnet.protocol.receiver.Receiver` cuts a byte stream into lines and
  length-prefixed bodies (checked against their SHA-256 trailer); ``BodySender`` frames a body
* ``messages`` -- the wire grammar both ways: requests, and every reply (written by servers, read by the client)
* ``codec``    -- streamed base64 (pybase64, binascii fallback)
* ``names``    -- the file-name rule
* ``console``  -- the ready and status lines a server prints and labnet's tools read back

Imports nothing of labnet but ``errors`` and ``config``.
"""
