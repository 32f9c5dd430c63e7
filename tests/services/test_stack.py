"""services.stack: every plugin's wait_ready asks at the interval its caller gives (the
cold start's, loadtests/coldstart.py), and at its own ready_poll_s otherwise."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

from services import registry
from services.process import ServerProcess


@pytest.mark.parametrize("name", registry.stack_names())
def test_wait_ready_asks_at_the_callers_interval_else_its_own(name, monkeypatch) -> None:
    stack = registry.load_stack(name)
    module = sys.modules[type(stack).wait_ready.__module__]
    asked: list[float] = []

    def wait_until(check, timeout_s, what, interval_s=0.1, alive=None) -> float:
        asked.append(interval_s)
        return 0.0

    monkeypatch.setattr(module, "wait_until", wait_until)
    # What a plugin reads before it polls: the models its config loads (read from the
    # run folder by TorchServe and TF Serving), the endpoints by name.
    monkeypatch.setattr(module, "_model_names", lambda server: ["digitnet"], raising=False)
    monkeypatch.setattr(stack, "_model_names", lambda server: ["digitnet"], raising=False)
    server = ServerProcess(name, 1, Path("log"),
                           defaultdict(lambda: "http://127.0.0.1:9"))  # fmt: skip

    stack.wait_ready(server, 1.0, 0.02)
    stack.wait_ready(server, 1.0)
    assert asked == [0.02, stack.ready_poll_s]
    assert 0 < stack.ready_poll_s <= 0.25
