"""Reliability knobs: visible defaults, each overridable by <PREFIX>_<FIELD>."""

from __future__ import annotations

import pytest

from reliability.settings import FaultSettings, SoakSettings, from_env


def test_defaults_without_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOAK_DURATION_S", raising=False)
    assert from_env(SoakSettings, "SOAK") == SoakSettings()
    assert SoakSettings().duration_s == 600.0 and SoakSettings().rate == 100.0


def test_variables_override_and_keep_the_field_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOAK_DURATION_S", "60")
    monkeypatch.setenv("FAULT_CLIENTS", "8")
    assert from_env(SoakSettings, "SOAK").duration_s == 60.0
    clients = from_env(FaultSettings, "FAULT").clients
    assert clients == 8 and isinstance(clients, int)


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOAK_RATE", "fast")
    with pytest.raises(ValueError, match="SOAK_RATE"):
        from_env(SoakSettings, "SOAK")
