"""labnet: a teaching lab for concurrent network programming (file service, pools, stress tests).

Modules, one concept each:

* ``errors``   -- reply codes and the two error families
* ``names``    -- the file-name rule
* ``codec``    -- streamed base64 (pybase64 with a binascii fallback)
* ``protocol`` -- the sans-IO wire protocol shared by servers and client
* ``channel``  -- blocking-socket glue with deadlines around the protocol
* ``store``    -- the server's folder: atomic publish, temp-file cleanup
* ``stats``    -- counters shared exactly by threads and processes
* ``session``  -- serving one connection (what every worker runs)
* ``server``, ``server_thread``, ``server_process`` -- the concurrency models
* ``client``   -- the client
* ``files``    -- test-file generation and size parsing
* ``cli``      -- ``python -m labnet ...``
"""

__version__ = "1.0.0"
