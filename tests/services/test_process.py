"""services/process.py: the helpers every stack plugin and harness shares."""

from __future__ import annotations

import os

import pytest

from services.process import pinned, usable_cores


def test_pinned_holds_the_process_on_the_cores_given_and_gives_its_own_back() -> None:
    before = os.sched_getaffinity(0)
    last = usable_cores()[-1]
    with pinned([last]):
        assert os.sched_getaffinity(0) == {last}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(RuntimeError), pinned([last]):
        raise RuntimeError("a client failed inside the block")
    assert os.sched_getaffinity(0) == before


def test_pinned_without_cores_leaves_the_process_where_it_was() -> None:
    before = os.sched_getaffinity(0)
    for cores in (None, []):
        with pinned(cores):
            assert os.sched_getaffinity(0) == before
