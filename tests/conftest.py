"""Shared fixtures: the model spec, limits and one set of trained artifacts per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Quiet TensorFlow's start-up banner in test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from digitnet.artifacts import ArtifactPaths
from digitnet.data import DigitsSplit, load_split  # noqa: E402
from digitnet.spec import ModelSpec, ServingLimits  # noqa: E402
from harness.artifacts import build_all, complete  # noqa: E402


@pytest.fixture(scope="session")
def spec() -> ModelSpec:
    return ModelSpec()


@pytest.fixture(scope="session")
def limits() -> ServingLimits:
    return ServingLimits()


@pytest.fixture(scope="session")
def split(spec: ModelSpec) -> DigitsSplit:
    return load_split(spec)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, spec: ModelSpec) -> ArtifactPaths:
    """Trains and exports once per test session (about 10 s) into a temporary folder.

    Set DIGITNET_TEST_ARTIFACTS to reuse a folder built by `make artifacts`.
    """
    reuse = os.environ.get("DIGITNET_TEST_ARTIFACTS")
    if reuse:
        paths = ArtifactPaths(Path(reuse), spec)
        if complete(paths):
            return paths
    root = tmp_path_factory.mktemp("artifacts")
    build_all(root, spec)
    return ArtifactPaths(root, spec)
