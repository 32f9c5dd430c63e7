from __future__ import annotations

import pytest

from digitnet.spec import ModelSpec, ServingLimits


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
