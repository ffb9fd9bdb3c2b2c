"""Small file servers written the way students write them -- including what NOT to do.

These are *examples of student code*, not labnet code: each module plays one
student's server, so it imports only the standard library (never labnet),
is short, and reads like the assignment's submissions (``socket``, a
``ThreadPoolExecutor`` or ``ProcessPoolExecutor``, one file in memory, JSON
replies).  The notebooks, the tests and the lessons share them: they are the
servers labnet measures and whose bugs it must catch.  Copy none of them as
an example of how to write a server -- labnet's own server
(``labnet.server``) is that.

Every module runs the same way and prints one line, ``listening on
HOST:PORT`` (flushed), once it listens (``--port 0``: a free port, the line
says which)::

    python -m labnet.notebook.students.<name> --host H --port P --workers N --root DIR [--backlog B]

and stops within about a second on SIGTERM or SIGINT, exiting with status 0
(``exits_on_start`` excepted: that is its point).  Each module's docstring
names its dialect and its one deliberate bug; the line of the bug is marked
``# BUG (deliberate): ...``.  The buggy ``course`` servers are
``course_thread_server`` with one change, so ``diff`` shows the bug.

The baseline, without deliberate bugs (a measurement expects them to pass):

* ``course_thread_server``  -- dialect ``course``, thread pool
* ``course_process_server`` -- dialect ``course``, process pool (the parent
  reads requests, the pool does the file work)
* ``sentinel_server``       -- dialect ``sentinel`` (the seed's), thread pool

One deliberate bug each:

* ``course_truncating_server`` -- takes a short ``recv()`` for the end of the
  request: a slow or large upload is stored cut short, answered ``OK``
* ``sentinel_blockpad_server`` -- base64-encodes downloads 1 MiB at a time:
  ``=`` padding mid-stream, ``base64.b64decode`` keeps the first block only
* ``course_lowercase_server``  -- lowercases the whole request: corrupts the
  base64 of an upload, lowercases names
* ``course_noreply_server``    -- closes a GET without any reply
* ``course_notjson_server``    -- answers a GET in plain text, not JSON
* ``course_endless_server``    -- answers a GET with a reply that never ends
* ``course_recv32_server``     -- the course's reference server's framing: each ``recv(32)`` is taken as
  a whole request, so one UPLOAD is answered piece by piece (``--backlog 1`` gives its ``listen(1)``)
* ``exits_on_start``           -- crashes at once (a forgotten import), status 1
* ``never_listens``            -- runs but never listens (its accept loop sits
  after a ``with ThreadPoolExecutor`` block that never ends)

Clients, for ``labnet matrix --client-cmd`` (they find the server through the
environment variables ``SERVER_HOST`` / ``SERVER_PORT``; no ``listening on`` line):

* ``reference_style_client``   -- the course's reference client (``LIST`` / ``GET`` with no
  terminator, ``recv(16)`` until ``\\r\\n\\r\\n``)
* ``seed_style_client``        -- the seed's ``client_pool.py {op} {volume} {clients} {pool}``
  (``--protocol sentinel|course``; block-by-block base64, one shared download file)
* ``faulty_client``            -- ``MODE`` truncating / crashing / usage / hanging, one fault each
"""
