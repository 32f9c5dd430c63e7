from __future__ import annotations

import pytest

from digitnet.spec import (
    BATCHING_PRESETS,
    BatchingPolicy,
    ModelSpec,
    ServingLimits,
    batching_preset,
    preset_of,
)


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("DIGITNET_SIDE", "16")
    monkeypatch.setenv("DIGITNET_CHANNELS", "32,64")
    monkeypatch.setenv("DIGITNET_MAX_BATCH", "8")
    spec = ModelSpec.from_env()
    assert (spec.side, spec.channels, spec.head_features) == (16, (32, 64), 64 * 8 * 8)
    assert ServingLimits.from_env().max_batch == 8


@pytest.mark.parametrize("side", [7, 12, 0])
def test_rejects_sides_the_data_cannot_fill(side):
    with pytest.raises(ValueError, match="side"):
        ModelSpec(side=side)


@pytest.fixture
def no_batching_env(monkeypatch):
    for name in ("DIGITNET_BATCHING_PRESET", "DIGITNET_BATCHING", "DIGITNET_BATCH_SIZE",
                 "DIGITNET_BATCH_DELAY_MS"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_batching_preset_is_the_base_the_variables_override(no_batching_env) -> None:
    assert BatchingPolicy.from_env() == BATCHING_PRESETS["default"] == BatchingPolicy()
    no_batching_env.setenv("DIGITNET_BATCHING_PRESET", "latency")
    assert BatchingPolicy.from_env().requests_per_batch == 1
    no_batching_env.setenv("DIGITNET_BATCHING_PRESET", "throughput")
    assert BatchingPolicy.from_env() == BatchingPolicy(max_batch_size=16, max_delay_ms=5.0)
    no_batching_env.setenv("DIGITNET_BATCH_DELAY_MS", "3")
    assert BatchingPolicy.from_env() == BatchingPolicy(max_batch_size=16, max_delay_ms=3.0)


def test_an_unknown_preset_is_refused_with_the_names(no_batching_env) -> None:
    no_batching_env.setenv("DIGITNET_BATCHING_PRESET", "fast")
    with pytest.raises(ValueError, match=r"DIGITNET_BATCHING_PRESET='fast'.*'latency'"):
        BatchingPolicy.from_env()
    with pytest.raises(ValueError, match="throughput"):
        batching_preset("")


def test_a_policy_names_its_preset_and_off_is_off_whatever_its_size() -> None:
    assert preset_of(BatchingPolicy(enabled=False, max_batch_size=32)) == "latency"
    assert preset_of(BatchingPolicy(max_batch_size=16, max_delay_ms=5.0)) == "throughput"
    assert preset_of(BatchingPolicy()) == "default"
    assert preset_of(BatchingPolicy(max_batch_size=8, max_delay_ms=5.0)) is None
    for name, policy in BATCHING_PRESETS.items():
        assert preset_of(policy) == name
