"""labnet: a teaching lab for concurrent network programming (file service, pools, stress tests).

The package is one folder per layer, each importing only the layers above it
in this list (``tests/test_layers.py`` checks it):

* ``errors``, ``config`` -- the two error families; the shared vocabulary and defaults
* ``protocol/``  -- the sans-IO core: wire grammar, receiver, codec, name rule, console lines
* ``transport/`` -- blocking-socket glue: channel, body transfer, hashing helpers, remembered digests
* ``server/``    -- the accept loop, its thread and process models, one connection's session, store, counters
* ``client/``    -- the clients: labnet's own protocol, and the students' dialects
* ``measure/``   -- the lab's measuring tools: launcher, test files, stress runner, the ETS matrix
* ``notebook/``  -- what only the notebooks use: dashboard, lessons, environment check (ipywidgets lives here)
* ``procutil``   -- process and memory helpers of the operating system (imports nothing of labnet)
* ``cli``        -- ``labnet`` / ``python -m labnet``

The names documented for students' own code are importable from ``labnet``
itself: ``Client``, ``TransferResult``, ``StudentClient``, ``BackgroundServer``,
``stress`` (``stress.run``), ``run_matrix``, ``probe``, ``ServerConfig``, ``make_test_file``,
``parse_size``, ``size_label``, ``quick_mode``.  They are loaded on first use
(PEP 562 ``__getattr__``), so that ``import labnet.protocol`` stays as light
as the protocol layer and loads no socket code.
"""

from __future__ import annotations

import importlib

__version__ = "1.0.0"

# public name -> (module, attribute or None for the module itself)
_PUBLIC = {
    "Client": ("labnet.client", "Client"),
    "TransferResult": ("labnet.client", "TransferResult"),
    "StudentClient": ("labnet.client", "StudentClient"),
    "probe": ("labnet.measure.probe", "probe"),
    "BackgroundServer": ("labnet.measure.launcher", "BackgroundServer"),
    "stress": ("labnet.measure.stress", None),
    "run_matrix": ("labnet.measure.matrix_run", "run_matrix"),
    "ServerConfig": ("labnet.config", "ServerConfig"),
    "parse_size": ("labnet.config", "parse_size"),
    "size_label": ("labnet.config", "size_label"),
    "quick_mode": ("labnet.config", "quick_mode"),
    "make_test_file": ("labnet.measure.files", "make_test_file"),
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    try:
        module, attr = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'labnet' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    return value if attr is None else getattr(value, attr)


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
