"""Fixtures for the TorchServe tests.

`worker` drives TorchServe's real Python worker code (ts.protocol.otf_message_handler,
ts.model_loader, ts.service, ts.context) on the real .mar, without the Java frontend,
through services/torchserve/worker_frames.py: only the socket is replaced, and the
Java-side form decoding is not emulated, so multipart/form bodies are covered by the
integration tests against the real server.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.noop import noop_model_name
from digitnet.spec import ModelSpec
from services.torchserve.launch import mar_path, noop_mar_path
from services.torchserve.worker_frames import (
    DECODE_INPUT_VARIABLE,
    FrontendRequest,
    WorkerReply,
    load_service,
    run_batch,
)


@pytest.fixture(scope="session")
def worker_service(
    artifacts: ArtifactPaths, spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The model's archive (handler.py) in TorchServe's worker code."""
    service, module = load_service(mar_path(artifacts), spec.name,
                                   tmp_path_factory.mktemp("mar"))  # fmt: skip
    yield service
    sys.modules.pop(module, None)


@pytest.fixture(scope="session")
def noop_worker_service(
    artifacts: ArtifactPaths, spec: ModelSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The no-op twin's archive (noop_handler.py) in TorchServe's worker code."""
    service, module = load_service(noop_mar_path(artifacts), noop_model_name(spec),
                                   tmp_path_factory.mktemp("noop-mar"))  # fmt: skip
    yield service
    sys.modules.pop(module, None)


@pytest.fixture
def decode_input_request() -> str:
    """config.properties' decode_input_request; tests parametrize it to cover "true" too."""
    return "false"


def batch_runner(service: Any) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """Sends one dynamic batch through the real worker code; returns one reply per request
    and checks the batch as a whole succeeded (per-request errors are in the replies)."""

    def run(requests: Sequence[FrontendRequest]) -> list[WorkerReply]:
        code, replies = run_batch(service, requests)
        assert code == 200, replies
        assert len(replies) == len(requests)
        return replies

    return run


@pytest.fixture
def worker(
    worker_service: Any, decode_input_request: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """The model's worker (batch_runner)."""
    # The frontend passes decode_input_request to workers as this variable, which the
    # worker reads for every request.
    monkeypatch.setenv(DECODE_INPUT_VARIABLE, decode_input_request)
    return batch_runner(worker_service)


@pytest.fixture
def noop_worker(
    noop_worker_service: Any, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Sequence[FrontendRequest]], list[WorkerReply]]:
    """The no-op twin's worker (batch_runner), with config.properties' decoding setting."""
    monkeypatch.setenv(DECODE_INPUT_VARIABLE, "false")
    return batch_runner(noop_worker_service)
