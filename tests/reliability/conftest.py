"""A running stack per parameter, shared by the matrix, fuzz, kill, slow-client and soak
tests (pytest runs all tests of one stack, then stops it and starts the next).
TF Serving is a parameter too: where its binary is missing its tests are skipped with
the reason, so the skip shows in the summary instead of the stack silently missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from digitnet.artifacts import ArtifactPaths
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from services.registry import stack_names

STACKS = stack_names()


@pytest.fixture(scope="session", params=STACKS)
def running(
    request: pytest.FixtureRequest,
    artifacts: ArtifactPaths,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningStack]:
    name = request.param
    reason = skipped_reason(name)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    with ExitStack() as exits:
        yield start_stack(name, artifacts, tmp_path_factory.mktemp(f"{name}-run"), exits)
