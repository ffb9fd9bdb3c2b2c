"""The lab's measuring tools: what runs servers and clients and turns them into numbers.

* ``launcher``     -- ``BackgroundServer``: a labnet server in a child process, stopped whatever happens
* ``files``        -- the test files (pseudo-random, every MiB different) and the lab's folders
* ``progress``     -- byte progress bars (``tqdm.auto``)
* ``stress``, ``stress_pools``, ``stress_report`` -- N clients at once: the runner, its pools, its records and maths
* ``dialect_transfer`` -- one transfer in a student's dialect, judged by its bytes (truncated, corrupted...)
* ``probe``        -- ``labnet probe``: does a server speak its dialect? a pass/fail table in seconds
* ``supervisor``   -- ``Supervised``: a student's server or client command under a guard (own process group,
  killed whole even if the caller dies), with memory and time limits and the peak RSS of its tree
* ``matrix_setup``, ``matrix_servers`` -- the matrix's arguments checked once; where a cell's server comes from
  (labnet's own, a student's command under the supervisor, or one run by hand)
* ``matrix_plan``, ``matrix_run``, ``matrix_table``, ``plotting`` -- the ETS matrix: plan and pre-flight,
  running it cell by cell, the table (CSV/Markdown, resume), its figures

Imports the clients, the protocol, ``errors``, ``config`` and ``procutil``; never the server
package (servers run in child processes) and never ipywidgets or IPython.  ``plotting`` is the
only module that imports matplotlib, and nothing else here imports ``plotting`` at import time.
"""
