"""The stress dashboard of notebook 05: ipywidgets controls around ``labnet.measure.stress.run``.

>>> dash = Dashboard()
>>> dash                      # shows the controls in a notebook
>>> dash.configure(op="download", volume="10MB", clients=5)
>>> result = dash.run_blocking(timeout=300)   # what the Run button does, waiting for the end
>>> dash.shutdown()           # stop the run, the poller and the server

Threads and widgets
-------------------
* The Run button (or :meth:`run`) starts the server if the model or worker
  count changed, then runs the stress test on a **background thread**: the
  cell returns at once and the kernel stays free, so Stop works and other
  cells run.  :attr:`done` (a ``threading.Event``) is set when a run ends,
  whatever the outcome; :attr:`result` / :attr:`error` say how.
* Widgets are only ever updated by *setting their values* (progress,
  HTML, image) or with ``Output.append_stdout``; never with ``with output:``
  from a thread (ipykernel routes a thread's prints to whichever cell ran
  last, so they would land in the wrong place).
* Progress reaches the widget through ``stress.run(progress=...)``, throttled
  to 10 updates a second so 50 workers cannot flood the browser.
* **base64 with** (``pybase64`` / ``binascii``) is the codec of both ends: the
  server is started with ``--base64`` (a change starts a fresh one, like the
  model or pool size) and ``stress.run(base64=...)`` gets it for the clients.

Live server counters
--------------------
``STATS`` is a request like any other: a worker has to take the connection
before it is answered.  Polling it during a run would queue behind the
clients (with 1 server worker it waits until a transfer ends) and take a
worker away from them.  So the counters shown come from the server's
counters listener (``BackgroundServer.counters()``): a second port that the
accept loop answers itself, with the same snapshot, costing no worker --
live during a run every ``poll_every`` seconds, and once more after it, so
even a run shorter than one poll shows what happened.  The summary uses the
exact ``STATS`` counts ``stress.run`` takes before and after.
"""

from __future__ import annotations

import html
import threading
import time
import traceback

from labnet.config import CLIENT_POOLS, ENCODINGS, SERVER_MODELS, parse_size, quick_mode, size_label
from labnet.measure import stress
from labnet.measure.launcher import BackgroundServer
from labnet.notebook.dashboard_view import MB, counters_html, figure_png, plot_run, summary_html
from labnet.notebook.envcheck import lab_sizes
from labnet.protocol import codec
from labnet.protocol.codec import BACKENDS

CLIENT_CHOICES = (1, 2, 5, 10, 20, 50)
SERVER_CHOICES = (1, 2, 5, 10, 20, 50)


def default_volumes() -> tuple[str, ...]:
    return tuple(lab_sizes())


# ---------------------------------------------------------------------------
# The dashboard
# ---------------------------------------------------------------------------


class _Throttle:
    def __init__(self, every: float):
        self.every, self.last = every, 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            return True
        return False


class Dashboard:
    """Controls, live progress, live server counters, summary and plot of stress runs.

    ``volumes``: sizes offered (default: the lab's, small ones in quick mode);
    ``root``: the server's folder (default ``server_files/``);
    ``poll_every``: seconds between counter updates; ``time_limit``: seconds a run may take.
    """

    def __init__(self, volumes=None, root=None, poll_every: float = 0.5, time_limit: float = 1800.0,
                 timeout: float = 60.0):  # fmt: skip
        import ipywidgets as W

        self.W = W
        self.root = root
        self.poll_every = poll_every
        self.time_limit, self.timeout = time_limit, timeout
        self.server: BackgroundServer | None = None
        self.result = None
        self.results: list = []
        self.error: str | None = None
        self.done = threading.Event()
        self.done.set()  # nothing running yet
        self._cancel = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._lock = threading.Lock()
        self._running = False
        self._moved = 0
        self._total = 0
        self._finished_workers = 0
        self._t0 = 0.0

        volumes = tuple(volumes or default_volumes())
        quick = quick_mode()
        style = {"description_width": "110px"}
        lay = W.Layout(width="260px")

        rows = {}

        def toggle(options, value, desc, cls):
            # ToggleButtons put their description above the buttons; a label of the dropdowns' width
            # beside them keeps every control on one line.
            w = W.ToggleButtons(options=options, value=value, style={"button_width": "90px"},
                                tooltips=[f"{desc}: {o}" for o in options])  # fmt: skip
            w.add_class(cls)
            label = W.HTML(f"<div style='text-align:right;padding-right:8px'>{html.escape(desc)}</div>",
                           layout=W.Layout(width="118px"))  # fmt: skip
            rows[cls] = W.HBox([label, w])
            return w

        def dropdown(options, value, desc, cls):
            w = W.Dropdown(options=options, value=value, description=desc, style=style, layout=lay)
            w.add_class(cls)
            return w

        self.op = toggle(["download", "upload"], "download", "Operation", "labnet-op")
        self.volume = dropdown(list(volumes), volumes[0], "Volume", "labnet-volume")
        self.clients = dropdown(list(CLIENT_CHOICES), 2 if quick else 5, "Client workers", "labnet-clients")
        self.client_pool = toggle(list(CLIENT_POOLS), "thread", "Client pool", "labnet-client-pool")
        self.server_model = toggle(list(SERVER_MODELS), "thread", "Server model", "labnet-server-model")
        self.server_workers = dropdown(list(SERVER_CHOICES), 2 if quick else 5, "Server workers", "labnet-server-workers")
        self.encoding = toggle(list(ENCODINGS), "b64", "Encoding", "labnet-encoding")
        # the codec of both ends: binascii is the standard library's (what students use: it holds the GIL)
        self.base64 = toggle(list(BACKENDS), codec.BACKEND, "base64 with", "labnet-base64")
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.run_button.add_class("labnet-run")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.stop_button.add_class("labnet-stop")
        self.status = W.HTML("<i>idle: choose a test and press Run</i>")
        self.status.add_class("labnet-status")
        self.progress = W.FloatProgress(value=0, min=0, max=1, description="Progress", bar_style="info",
                                        style={"description_width": "70px"}, layout=W.Layout(width="420px"))  # fmt: skip
        self.progress.add_class("labnet-progress")
        self.progress_label = W.HTML("0%")
        self.progress_label.add_class("labnet-progress-label")
        self.counters = W.HTML(counters_html(None), layout=W.Layout(width="440px"))
        self.counters.add_class("labnet-counters")
        self.summary = W.HTML("<i>The summary of a run appears here when it ends.</i>")
        self.summary.add_class("labnet-summary")
        self.plot = W.Image(format="png", layout=W.Layout(max_width="900px"))
        self.plot.add_class("labnet-plot")
        self.log = W.Output(layout=W.Layout(max_height="160px", overflow="auto"))
        self.log.add_class("labnet-log")

        self.run_button.on_click(lambda _b: self.run())
        self.stop_button.on_click(lambda _b: self.stop())

        self._controls = [self.op, self.volume, self.clients, self.client_pool, self.server_model,
                          self.server_workers, self.encoding, self.base64]  # fmt: skip
        left = W.VBox([W.HTML("<b>Clients</b>"), rows["labnet-op"], self.volume, self.clients, rows["labnet-client-pool"],
                       rows["labnet-encoding"], rows["labnet-base64"]], layout=W.Layout(width="420px"))  # fmt: skip
        right = W.VBox([W.HTML("<b>Server</b>"), rows["labnet-server-model"], self.server_workers,
                        W.HBox([self.run_button, self.stop_button]), self.status],
                       layout=W.Layout(width="440px"))  # fmt: skip
        self.widget = W.VBox([
            W.HBox([left, right]),
            W.HBox([self.progress, self.progress_label]),
            W.HBox([self.counters, self.summary], layout=W.Layout(grid_gap="24px")),
            self.plot,
            self.log,
        ])  # fmt: skip
        self.widget.add_class("labnet-dashboard")

    # -- display ---------------------------------------------------------------

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        state = "running" if self.running else "idle"
        return f"<labnet Dashboard {state}, {len(self.results)} run(s), server {self.server!r}>"

    # -- programmatic API ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def settings(self) -> dict:
        return {"op": self.op.value, "volume": self.volume.value, "clients": self.clients.value,
                "client_pool": self.client_pool.value, "server_model": self.server_model.value,
                "server_workers": self.server_workers.value, "encoding": self.encoding.value,
                "base64": self.base64.value}  # fmt: skip

    def configure(self, op=None, volume=None, clients=None, client_pool=None, server_model=None,
                  server_workers=None, encoding=None, base64=None) -> Dashboard:  # fmt: skip
        """Set the controls as a user would (values outside the lists are added to them)."""
        for widget, value in ((self.op, op), (self.client_pool, client_pool), (self.server_model, server_model),
                              (self.encoding, encoding), (self.base64, base64)):  # fmt: skip
            if value is not None:
                widget.value = value
        if volume is not None:
            label = size_label(parse_size(volume))
            if label not in self.volume.options:
                self.volume.options = (*self.volume.options, label)
            self.volume.value = label
        for widget, value in ((self.clients, clients), (self.server_workers, server_workers)):
            if value is not None:
                if int(value) not in widget.options:
                    widget.options = tuple(sorted({*widget.options, int(value)}))
                widget.value = int(value)
        return self

    def run(self) -> threading.Thread | None:
        """Start a run with the current settings on a background thread (what Run does)."""
        with self._lock:
            if self._running:
                self._say("a run is already going: press Stop first", "warn")
                return None
            self._running = True
            self.done.clear()
        self.error = None
        self._cancel.clear()
        cfg = self.settings()
        self._set_busy(True)
        try:
            self._ensure_server(cfg["server_model"], cfg["server_workers"], cfg["base64"])
        except Exception as exc:  # a server that cannot start: say so, stay usable
            self._finish(error=f"server did not start: {exc}")
            return None
        self._thread = threading.Thread(target=self._run_thread, args=(cfg,), name="labnet-dashboard-run", daemon=True)
        self._thread.start()
        return self._thread

    def run_blocking(self, timeout: float = 600.0, **settings):
        """Configure (optional), run, wait for the end; return the ``StressResult``.  For tests and scripts."""
        if settings:
            self.configure(**settings)
        if self.run() is None and self.error:
            raise RuntimeError(self.error)
        if not self.done.wait(timeout):
            self.stop()
            self.done.wait(30)
            raise TimeoutError(f"the run did not finish within {timeout:g} s")
        if self.error:
            raise RuntimeError(self.error)
        return self.result

    def stop(self) -> None:
        """Cancel the run in progress (what Stop does); its result still arrives, marked cancelled."""
        if self._running:
            self._cancel.set()
            self._say("stopping: unfinished clients are cancelled...", "warn")

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop any run, the counter poller and the server.  Idempotent; the notebook's last cell calls it.

        The controls stay usable: pressing Run again starts a new server (and
        the kernel's exit stops that one).
        """
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._closing.set()
        if self._poller is not None:
            self._poller.join(5)
            self._poller = None
        if self.server is not None:
            self.server.stop()
        self._closing.clear()
        self.counters.value = counters_html(None, server="server stopped")
        self.status.value = "<i>server stopped; press Run to start a new one</i>"

    close = shutdown

    # -- internals ---------------------------------------------------------------

    def _server_desc(self) -> str:
        s = self.server
        if not (s and s.running):
            return "not running"
        return f"{s.model} pool × {s.workers} on {s.address[0]}:{s.address[1]}, base64 with {s.base64 or '?'}"

    def _ensure_server(self, model: str, workers: int, base64: str | None = None) -> None:
        s = self.server
        if s is not None and s.running and s.model == model and s.workers == workers and \
                (base64 is None or s.base64 == base64):
            return
        if s is not None:
            self._say(f"stopping the {s.model} × {s.workers} server...", "info")
            s.stop()
        self._say(f"starting a {model} server with {workers} worker(s)...", "info")
        kw = {"root": self.root} if self.root is not None else {}
        self.server = BackgroundServer(model, workers=workers, base64=base64, **kw).start()
        self._refresh_counters()
        if self._poller is None or not self._poller.is_alive():
            self._poller = threading.Thread(target=self._poll, name="labnet-dashboard-poll", daemon=True)
            self._poller.start()

    def _refresh_counters(self, source: str = "counters") -> None:
        try:
            snap = self.server.counters()
            self.counters.value = counters_html(snap, source, self._server_desc())
        except Exception as exc:
            self.counters.value = counters_html(None, server=f"reading the counters failed: {exc}")

    def _poll(self) -> None:
        while not self._closing.wait(self.poll_every):
            try:
                srv = self.server
                if srv is None or not srv.running or not self._running:
                    continue
                self._refresh_counters(f"live, read every {self.poll_every:g} s without a worker")
            except Exception:  # never let the display kill the poller
                pass

    def _set_busy(self, busy: bool) -> None:
        for w in self._controls:
            w.disabled = busy
        self.run_button.disabled = busy
        self.stop_button.disabled = not busy

    def _say(self, text: str, kind: str = "info") -> None:
        colour = {"info": "#333", "warn": "#b26a00", "error": "#b00020", "ok": "#1b7f3b"}[kind]
        self.status.value = f"<span style='color:{colour}'>{html.escape(text)}</span>"
        if kind in ("warn", "error"):
            self.log.append_stdout(f"[{time.strftime('%H:%M:%S')}] {text}\n")

    def _on_bytes(self, n: int) -> None:
        self._moved += n
        if self._throttle.ready():
            self._show_progress()

    def _on_record(self, _rec) -> None:
        self._finished_workers += 1

    def _show_progress(self, final: bool = False) -> None:
        total = self._total or 1
        frac = min(self._moved / total, 1.0)
        pct = int(frac * 100)  # floor: 100% only when every byte moved
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        self.progress.value = frac
        self.progress_label.value = (f"<b>{pct}%</b> &nbsp; {self._moved / MB:.1f} / {total / MB:.1f} MB"
                                     f" &nbsp; {self._moved / MB / elapsed:.1f} MB/s &nbsp; "
                                     f"{self._finished_workers}/{self._clients} clients done")  # fmt: skip

    def _run_thread(self, cfg: dict) -> None:
        try:
            size = parse_size(cfg["volume"])
            self._total, self._moved, self._finished_workers = size * cfg["clients"], 0, 0
            self._clients = cfg["clients"]
            self._throttle = _Throttle(0.1)
            self.progress.bar_style = "info"
            self._t0 = time.perf_counter()
            self._show_progress()
            host, port = self.server.address
            self._say(f"running: {cfg['op']} {cfg['volume']} × {cfg['clients']} {cfg['client_pool']} clients "
                      f"against a {self._server_desc()}...")  # fmt: skip
            result = stress.run(cfg["op"], size, cfg["clients"], pool=cfg["client_pool"], host=host, port=port,
                                encoding=cfg["encoding"], timeout=self.timeout, time_limit=self.time_limit,
                                progress=self._on_bytes, per_worker_bars=False, on_record=self._on_record,
                                cancel=self._cancel, keep_downloads=False, base64=cfg["base64"])  # fmt: skip
            result.config["server"] = f"{self.server.model[0]}{self.server.workers}"
            result.config["server_model"], result.config["server_workers"] = self.server.model, self.server.workers
            self._show_progress(final=True)
            self.progress.bar_style = ("success" if result.ok else
                                       "warning" if result.summary["cancelled"] else "danger")  # fmt: skip
            self.results.append(result)
            self.result = result
            self.summary.value = summary_html(result.summary, self._server_desc())
            try:
                self.plot.value = figure_png(plot_run(result, self.results))
            except Exception as exc:
                self.log.append_stdout(f"plot failed: {exc}\n")
            self._refresh_counters("counters after the run")
            s = result.summary
            state = "cancelled" if s["cancelled"] else ("done" if result.ok else "done, with failures")
            self._finish(message=f"{state}: {s['ok']} ok, {s['failed']} failed in {s['wall_seconds']:.2f} s",
                         kind="ok" if result.ok else "warn")  # fmt: skip
        except Exception as exc:
            self.log.append_stderr(traceback.format_exc())
            self._finish(error=f"{type(exc).__name__}: {exc}")

    def _finish(self, message: str = "", kind: str = "ok", error: str | None = None) -> None:
        if error:
            self.error = error
            self.progress.bar_style = "danger"
            self._say(error, "error")
        else:
            self._say(message, kind)
        self._set_busy(False)
        with self._lock:
            self._running = False
        self.done.set()


def show(**kw) -> Dashboard:
    """Create a dashboard and display it (in a notebook)."""
    from IPython.display import display

    dash = Dashboard(**kw)
    display(dash)
    return dash
