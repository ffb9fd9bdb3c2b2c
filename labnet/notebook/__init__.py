"""What only the notebooks use: the only package that imports ipywidgets and IPython.

* ``dashboard``, ``dashboard_view`` -- the stress dashboard of notebook 05; what it shows
* ``envcheck``  -- notebook 00's environment check, and the lab's file sizes and pools for this machine
* ``netinfo``   -- notebook 07: addresses, reachability
* ``lessons_framing``, ``lessons_course`` -- notebook 01-framing (the course's recv(32) server, its listen backlog)
* ``lessons_encoding`` -- notebook 02-encoding-and-integrity; ``lessons_pools`` -- the pool notebooks
* ``lessons_ets`` -- notebook 06: the table's selection, glossary, aggregate throughput, time estimate
* ``own_server`` -- notebook 08's helpers: a student's server command started under a guard, measured
* ``students/`` -- small servers written the way students write them (correct ones, and ones with one
  deliberate bug each): shared by the notebooks, the tests and the lessons; standard library only

May import every other layer.
"""
