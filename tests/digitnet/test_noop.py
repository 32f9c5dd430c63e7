"""The no-op twin's switch, as every plugin's start() reads it."""

from __future__ import annotations

import pytest

from digitnet.noop import NOOP_ENV, noop_enabled, noop_requested


def test_only_one_turns_the_twin_on() -> None:
    assert noop_enabled("1") and noop_enabled(" 1\n")
    assert not any(noop_enabled(v) for v in (None, "", "0", "true", "yes", "11"))


def test_a_starts_own_environment_overrides_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NOOP_ENV, raising=False)
    assert not noop_requested(None) and not noop_requested({})
    assert noop_requested({NOOP_ENV: "1"})
    monkeypatch.setenv(NOOP_ENV, "1")
    assert noop_requested(None)
    assert not noop_requested({NOOP_ENV: "0"})
