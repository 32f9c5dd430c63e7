"""The real tensorflow_model_server, started through STACK like deploy-local does.

Skipped, with STACK.available()'s reason, where the binary is not installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import TFS_METRICS_PATH, TFS_PREDICT_PATH, TfServingGrpcClient
from digitnet.codec import decode_predictions, encode_request
from digitnet.data import DigitsSplit
from digitnet.noop import noop_logits, noop_model_name
from digitnet.savedmodel import load_signature
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, ModelSpec
from harness.lifecycle import running_stack
from services.process import ServerProcess, free_port
from services.tf_serving.launch import STACK

_AVAILABLE, _REASON = STACK.available()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(not _AVAILABLE, reason=_REASON)]

READY_TIMEOUT_S = 120
LOGITS_TOLERANCE = 1e-5
BATCH = 32


@pytest.fixture(scope="module")
def server(
    artifacts: ArtifactPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    ports = {"rest": free_port(), "grpc": free_port()}
    running = STACK.start(artifacts, tmp_path_factory.mktemp("tf_serving"), ports)
    try:
        STACK.wait_ready(running, READY_TIMEOUT_S)
        yield running
    except Exception:
        print(running.log_tail())
        raise
    finally:
        STACK.stop(running)
    assert not running.alive()


@pytest.fixture(scope="module")
def images(split: DigitsSplit) -> np.ndarray:
    return split.test_images[:BATCH]


@pytest.fixture(scope="module")
def expected(artifacts: ArtifactPaths, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = load_signature(artifacts.savedmodel)(**{INPUT_KEY: tf.constant(images)})
    return outputs[LOGITS_KEY].numpy(), outputs[CLASSES_KEY].numpy()


def test_every_client_matches_in_process(server, artifacts, images, expected) -> None:
    clients = STACK.clients(server, artifacts)
    assert [c.label for c in clients] == ["tf_serving/rest", "tf_serving/grpc"]
    try:
        for client in clients:
            logits, classes = client.predict(images)
            np.testing.assert_allclose(logits, expected[0], rtol=0, atol=LOGITS_TOLERANCE)
            np.testing.assert_array_equal(classes, expected[1])
    finally:
        for client in clients:
            if isinstance(client, TfServingGrpcClient):
                client.close()


def test_rest_bad_shape_is_400_and_server_stays_up(server, spec: ModelSpec, images) -> None:
    url = server.endpoints["rest"] + TFS_PREDICT_PATH.format(name=spec.name)
    bad = requests.post(url, json={"instances": [[[0.0] * 7] * 8]}, timeout=10)
    assert bad.status_code == 400
    assert "error" in bad.json()
    good = requests.post(url, json=encode_request(images[:2]), timeout=10)
    assert good.status_code == 200
    assert len(good.json()["predictions"]) == 2


def test_grpc_bad_shape_is_invalid_argument(server, spec: ModelSpec, images) -> None:
    client = TfServingGrpcClient(server.endpoints["grpc"], spec)
    try:
        with pytest.raises(grpc.RpcError) as info:
            client.stub.Predict(client.build_request(images[:, :, :7]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.predict(images[:1])[0].shape == (1, spec.num_classes)
    finally:
        client.close()


def test_prometheus_metrics(server) -> None:
    assert server.endpoints["metrics"].endswith(TFS_METRICS_PATH)
    response = requests.get(server.endpoints["metrics"], timeout=10)
    assert response.status_code == 200
    assert ":tensorflow:serving:" in response.text


def test_the_twin_answers_beside_the_model(artifacts, spec: ModelSpec, images, expected,
                                           tmp_path) -> None:  # fmt: skip
    # A server of its own: the module's server runs without the twin, as production does.
    with running_stack(STACK, artifacts, tmp_path, env=dict(STACK.noop_env)) as running:
        rest = running.server.endpoints["rest"]
        path = STACK.noop_path(running.server)
        assert path == TFS_PREDICT_PATH.format(name=noop_model_name(spec))
        twin = requests.post(rest + path, json=encode_request(images[:1]), timeout=10)
        real = requests.post(rest + TFS_PREDICT_PATH.format(name=spec.name),
                             json=encode_request(images[:1]), timeout=10)  # fmt: skip
    assert twin.status_code == real.status_code == 200
    logits, classes = decode_predictions(twin.json(), 1, spec.num_classes)
    np.testing.assert_allclose(logits, noop_logits(spec)[None, :], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(classes, [noop_logits(spec).argmax()])
    np.testing.assert_allclose(decode_predictions(real.json(), 1, spec.num_classes)[0],
                               expected[0][:1], rtol=0, atol=LOGITS_TOLERANCE)  # fmt: skip
