"""Hypothesis state machine (issue 5): random sequences of uploads, downloads, deletes, lists,
reconnects and interrupted uploads against a dict model, for both server models.

After every step the server's folder on disk must equal the model exactly (no temporary
files, nothing half-written), and every reply must agree with the model.  Example counts
are small so the whole test runs in seconds; hypothesis shrinks any failure to a short
sequence of steps.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from faultproxy import Wire, folder_state, reset_close
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from labnet.client import Client
from labnet.errors import Code, RemoteError

pytestmark = pytest.mark.timeout(120)

NAMES = st.sampled_from(["a.bin", "b.txt", "données.csv", "x"])
ENCODINGS = st.sampled_from(["b64", "raw"])
# Mostly tiny bodies (every base64 padding case), sometimes a few hundred KB (several chunks).
BODIES = st.one_of(
    st.binary(max_size=64),
    st.integers(min_value=0, max_value=400_000).map(lambda n: os.urandom(n)),
)


def make_machine(srv, work):
    class LabnetMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.model: dict[str, bytes] = {}
            self.client = Client(*srv.address, timeout=10)
            for name, _ in self.client.list():  # every example starts from an empty folder
                self.client.delete(name)
            self.counter = 0

        def _local(self, data: bytes) -> os.PathLike:
            self.counter += 1
            path = work / f"src{self.counter}"
            path.write_bytes(data)
            return path

        @rule(name=NAMES, data=BODIES, encoding=ENCODINGS)
        def upload(self, name, data, encoding):
            result = self.client.upload(self._local(data), name=name, encoding=encoding)
            assert result.sha256 == hashlib.sha256(data).hexdigest()
            self.model[name] = data

        @rule(name=NAMES, encoding=ENCODINGS)
        def download(self, name, encoding):
            dest = work / "downloads"
            dest.mkdir(exist_ok=True)
            if name in self.model:
                self.client.download(name, dest, encoding=encoding)
                assert (dest / name).read_bytes() == self.model[name]
                (dest / name).unlink()
            else:
                try:
                    self.client.download(name, dest, encoding=encoding)
                    raise AssertionError(f"downloaded {name}, which does not exist")
                except RemoteError as exc:
                    assert exc.code == Code.NOT_FOUND
                assert not (dest / name).exists()

        @rule(name=NAMES)
        def delete(self, name):
            if name in self.model:
                self.client.delete(name)
                del self.model[name]
            else:
                try:
                    self.client.delete(name)
                    raise AssertionError(f"deleted {name}, which does not exist")
                except RemoteError as exc:
                    assert exc.code == Code.NOT_FOUND

        @rule()
        def list_files(self):
            assert self.client.list() == sorted((n, len(b)) for n, b in self.model.items())

        @rule()
        def reconnect(self):
            self.client.quit()
            self.client = Client(*srv.address, timeout=10)

        @rule(name=NAMES, data=st.binary(min_size=2, max_size=5000), reset=st.booleans())
        def interrupted_upload(self, name, data, reset):
            """Half a body, then a close or a reset: the model (and the folder) must not change."""
            w = Wire(srv.address)
            w.send(f"UPLOAD {name} {len(data)} raw\r\n".encode())
            assert w.line() == f"OK SEND {len(data)}"
            w.send(data[: len(data) // 2])
            reset_close(w.sock) if reset else w.close()
            # The next request on our client is served by another worker; the folder check
            # below waits for nothing, so make sure the server has dealt with the cut first.
            self._wait_idle()

        def _wait_idle(self):
            for _ in range(200):  # bounded: 200 x STATS round trips
                if self.client.stats()["active"] == 1:  # only our own connection left
                    return
            raise AssertionError("the interrupted upload was never cleaned up")

        @invariant()
        def folder_matches_model(self):
            assert folder_state(srv.root) == self.model

        def teardown(self):
            self.client.quit()

    return LabnetMachine


def test_random_operations_match_a_dict_model(start_server, model, tmp_path):
    srv = start_server(model, workers=3, idle_timeout=30)
    work = tmp_path / "work"
    work.mkdir()
    machine = make_machine(srv, work)
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=20, stateful_step_count=20, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]),
    )  # fmt: skip
    with Client(*srv.address, timeout=10) as c:
        listing = c.list()
    assert listing == sorted((n, len(b)) for n, b in folder_state(srv.root).items())
