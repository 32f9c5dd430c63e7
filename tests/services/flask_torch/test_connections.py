"""The worker's open connections (services/flask_torch/connections.py): counted while
each connection's handler runs, and no claim to be alone where nothing counts. The real
gevent worker is in test_admission.py's burst test and test_gunicorn_integration.py."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import gevent
import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import FLASK_LIVE_PATH
from harness.lifecycle import start_stack
from loadtests.closed_wrk import rest_request
from loadtests.framework_floor import KeepAlive
from services.flask_torch.connections import OpenConnections, _waiting_for, wrap_handler


def test_a_connection_counts_while_its_handler_runs_and_after_a_failure_no_more() -> None:
    open_ = OpenConnections()
    open_.count = 0  # as attach() leaves it, with nothing waiting for the worker:
    open_._waiting = lambda: False
    seen: list[tuple[int | None, bool]] = []

    def handle(listener, client, addr):
        seen.append((open_.count, open_.alone()))
        if client == "second":
            # A second connection while the first is open: neither is alone.
            open_._counted(handle, listener, "third", addr)
        if client == "broken":
            raise OSError("reset by peer")
        return client

    assert open_._counted(handle, None, "first", None) == "first"
    assert seen == [(1, True)]
    seen.clear()
    open_._counted(handle, None, "second", None)
    assert seen == [(1, True), (2, False)]
    with pytest.raises(OSError):
        open_._counted(handle, None, "broken", None)
    assert open_.count == 0


def test_nothing_counted_means_never_alone() -> None:
    class SyncWorker:
        def handle(self, listener, client, addr):
            return client

    open_, worker = OpenConnections(), SyncWorker()
    assert open_.attach(worker) is False and open_.count is None
    assert open_.alone() is False
    assert wrap_handler(worker, lambda handle, *args: "wrapped") is False
    assert worker.handle(None, "client", None) == "client"


def test_one_connection_is_not_alone_while_another_waits_to_be_accepted_or_started() -> None:
    """A connection in the listener's accept queue, or a greenlet queued to run (an
    accepted connection's handler not started yet), waits for the worker too."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        open_ = OpenConnections()
        open_.count = 1  # the calling request's own connection
        open_._waiting = _waiting_for(SimpleNamespace(sockets=[listener]))
        assert open_.alone()
        with socket.create_connection(listener.getsockname()):
            assert not open_.alone()  # in the accept queue
            accepted, _ = listener.accept()
            accepted.close()
            assert open_.alone()
        queued = gevent.spawn(lambda: None)  # started on the loop's next turn
        assert not open_.alone()
        queued.join()
        assert open_.alone()
        open_.count = 2
        assert not open_.alone()


def test_after_a_reply_the_loop_polls_unless_alone_or_it_already_has() -> None:
    loop = gevent.get_hub().loop
    open_ = OpenConnections()
    open_._waiting = lambda: False
    open_.count = 2  # another connection open: its requests must get read
    open_.take_turns()  # the worker's first reply: the loop polled to accept it
    before = loop.iteration
    open_.take_turns()  # no poll since that reply
    assert loop.iteration > before  # waited for a poll
    gevent.sleep(0.001)  # the loop polls meanwhile (a turn handed over through it)
    polled = loop.iteration
    open_.take_turns()  # others were read since the last reply: no wait
    assert loop.iteration == polled
    open_.count = 1  # alone: nothing to let in
    now = loop.iteration
    open_.take_turns()
    assert loop.iteration == now
    open_.count = None  # not counted (another worker class): never waits
    open_.take_turns()
    assert loop.iteration == now


@pytest.mark.integration
def test_a_pipelined_flood_on_one_connection_lets_another_connection_in(
    artifacts: ArtifactPaths,
    tmp_path: Path,
) -> None:
    """One keep-alive connection sends many cheap requests at once, so the next is always
    in before the worker reads again; a predict on a second connection is answered
    while the flood is still being served, not after it."""
    flood_count = 1500
    with ExitStack() as exits:
        running = start_stack("flask_torch", artifacts, tmp_path, exits,
                              env={"FLASK_TORCH_WORKERS": "1"})  # fmt: skip
        url, body, headers = rest_request(running)
        target = urlsplit(url)
        address = (target.hostname, target.port)
        get = f"GET {FLASK_LIVE_PATH} HTTP/1.1\r\nHost: {target.netloc}\r\n\r\n".encode()
        with socket.create_connection(address, timeout=30) as flood:
            flood.sendall(get * flood_count)
            predict = KeepAlive(url, body, headers)
            status, _fields = predict.post()
            assert status == 200
            flood.setblocking(False)
            answered = b""
            try:
                while chunk := flood.recv(1 << 20):
                    answered += chunk
            except BlockingIOError:
                pass
            # Answered so far when the predict's reply came (all of them, before).
            assert answered.count(b"HTTP/1.1 200") < flood_count // 2
