"""The one rule that splits a server's cores into workers x threads, for every stack."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.cores import CoreSplit, split_cores


@pytest.mark.parametrize(
    "cores, workers, threads, expected",
    [
        (1, None, None, CoreSplit(1, 1)),
        (2, None, None, CoreSplit(2, 1)),
        (16, None, None, CoreSplit(16, 1)),
        (8, None, 2, CoreSplit(4, 2)),
        (3, None, 2, CoreSplit(1, 2)),
        (8, 2, None, CoreSplit(2, 4)),
        (7, 2, None, CoreSplit(2, 3)),
        (4, 2, 2, CoreSplit(2, 2)),
    ],
)
def test_split_cores(
    cores: int, workers: int | None, threads: int | None, expected: CoreSplit
) -> None:
    assert split_cores(cores, workers, threads) == expected


@pytest.mark.parametrize(
    "cores, workers, threads, message",
    [
        (2, 2, 2, "exceeds the 2 cores"),
        (2, 3, None, "exceeds the 2 cores"),
        (2, None, 4, "exceeds the 2 cores"),
        (0, None, None, "cores"),
        (4, 0, None, "workers"),
        (4, None, 0, "threads"),
    ],
)
def test_split_cores_refuses_oversubscription_and_zero(
    cores: int, workers: int | None, threads: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_cores(cores, workers, threads)


@given(
    cores=st.integers(1, 256),
    workers=st.none() | st.integers(1, 256),
    threads=st.none() | st.integers(1, 256),
)
def test_derived_split_never_exceeds_the_cores(
    cores: int, workers: int | None, threads: int | None
) -> None:
    try:
        split = split_cores(cores, workers, threads)
    except ValueError:
        # Refused only when explicit numbers alone oversubscribe the cores.
        assert (workers or 1) * (threads or 1) > cores
        return
    assert split.workers * split.threads <= cores
    assert split.workers >= 1 and split.threads >= 1
    assert workers is None or split.workers == workers
    assert threads is None or split.threads == threads
