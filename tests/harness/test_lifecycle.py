"""harness.lifecycle.launch: a start that lost its free port to another process before it
bound it is tried again on fresh ports; any other failure, and ports the caller chose,
are not."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import lifecycle
from services.process import ServerProcess


class FlakyStack:
    """Fails its first `failures` starts at readiness with `error`, then answers."""

    name = "flaky"
    default_ports = {"http": 0}

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error = failures, error
        self.started: list[dict] = []
        self.stopped: list[ServerProcess] = []
        self.polls: list[float | None] = []

    def start(self, paths, run_dir, ports, cores=None, env=None) -> ServerProcess:
        self.started.append(dict(ports))
        return ServerProcess(self.name, len(self.started), Path("log"))

    def wait_ready(self, server: ServerProcess, timeout_s: float,
                   poll_s: float | None = None) -> float:  # fmt: skip
        self.polls.append(poll_s)
        if server.pid <= self.failures:
            raise self.error
        return 0.5

    def stop(self, server: ServerProcess) -> None:
        self.stopped.append(server)

    def clients(self, server, paths) -> list:
        return []


BIND_LOST = RuntimeError("ray_serve: Failed to bind to address '127.0.0.1:44227'.\n"
                         "OSError: [Errno 98] Address already in use")  # fmt: skip


def launch(stack: FlakyStack, **options) -> lifecycle.RunningStack:
    return lifecycle.launch(stack, None, Path("run"), on_start=lambda server: None,
                            **options)  # fmt: skip


def test_a_start_that_lost_its_port_is_tried_again_on_fresh_ports() -> None:
    stack = FlakyStack(1, BIND_LOST)
    running = launch(stack)
    assert running.server.pid == 2 and running.ready_s == 0.5
    assert len(stack.started) == 2 and running.ports == stack.started[1]
    assert [s.pid for s in stack.stopped] == [1]  # the failed one, stopped before the next


def test_it_gives_up_after_the_retries_with_the_servers_error() -> None:
    stack = FlakyStack(lifecycle.PORT_RACE_RETRIES + 1, BIND_LOST)
    with pytest.raises(RuntimeError, match="Address already in use"):
        launch(stack)
    assert len(stack.started) == lifecycle.PORT_RACE_RETRIES + 1


@pytest.mark.parametrize("error", [RuntimeError("model failed to load"),
                                   TimeoutError("flaky not ready after 180 s")])
def test_any_other_failure_is_not_retried(error: Exception) -> None:
    stack = FlakyStack(1, error)
    with pytest.raises(type(error)):
        launch(stack)
    assert len(stack.started) == 1


def test_ports_the_caller_chose_are_never_changed() -> None:
    stack = FlakyStack(1, BIND_LOST)
    with pytest.raises(RuntimeError):
        launch(stack, ports={"http": 8000})
    assert stack.started == [{"http": 8000}]


def test_the_callers_ready_interval_reaches_the_plugin_and_none_leaves_its_own() -> None:
    stack = FlakyStack(0, BIND_LOST)
    launch(stack)
    launch(stack, ready_poll_s=0.02)
    assert stack.polls == [None, 0.02]
