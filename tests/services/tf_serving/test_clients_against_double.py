"""Our TF Serving clients and readiness check against the PROTOCOL TEST DOUBLE.

These tests check our client code (URLs, payloads, response parsing, error surfacing), not
TF Serving: the double only imitates its protocol. test_real_server.py runs the same
clients against the real binary where it is installed.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
)

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import (
    TFS_PREDICT_PATH,
    TFS_STATUS_PATH,
    TfServingGrpcClient,
    tf_serving_rest,
)
from digitnet.codec import decode_predictions, encode_request
from digitnet.data import DigitsSplit
from digitnet.savedmodel import load_signature
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec
from services.process import free_port
from services.tf_serving.launch import model_is_available
from services.tf_serving.warmup import warmup_request
from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble

pytestmark = pytest.mark.integration

LOGITS_TOLERANCE = 1e-5
BATCH = 32


@pytest.fixture(scope="module")
def double(artifacts: ArtifactPaths, spec: ModelSpec) -> Iterator[TfServingProtocolDouble]:
    with TfServingProtocolDouble(
        artifacts.savedmodel, spec.name, spec.version, free_port(), free_port()
    ) as running:
        yield running


@pytest.fixture(scope="module")
def images(split: DigitsSplit) -> np.ndarray:
    return split.test_images[:BATCH]


@pytest.fixture(scope="module")
def expected(artifacts: ArtifactPaths, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    outputs = load_signature(artifacts.savedmodel)(**{INPUT_KEY: tf.constant(images)})
    return outputs[LOGITS_KEY].numpy(), outputs[CLASSES_KEY].numpy()


@pytest.fixture
def grpc_client(double: TfServingProtocolDouble, spec: ModelSpec) -> Iterator[TfServingGrpcClient]:
    client = TfServingGrpcClient(double.grpc_target, spec)
    yield client
    client.close()


def _assert_matches(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]):
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=LOGITS_TOLERANCE)
    np.testing.assert_array_equal(got[1], want[1])


# --- REST -------------------------------------------------------------------------------


def test_rest_client_matches_in_process(double, spec, images, expected) -> None:
    _assert_matches(tf_serving_rest(double.rest_url, spec).predict(images), expected)


def test_rest_client_single_image(double, spec, images, expected) -> None:
    logits, classes = tf_serving_rest(double.rest_url, spec).predict(images[:1])
    assert logits.shape == (1, spec.num_classes)
    _assert_matches((logits, classes), (expected[0][:1], expected[1][:1]))


def test_rest_client_surfaces_unknown_model(double, spec, images) -> None:
    other = ModelSpec(name="not_served")
    with pytest.raises(RuntimeError, match="HTTP 404"):
        tf_serving_rest(double.rest_url, other).predict(images[:1])
    # The next good request is answered as before.
    assert tf_serving_rest(double.rest_url, spec).predict(images[:2])[0].shape == (2, 10)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [[[0.0] * 7] * 8]}, "shape"),
        ({"instances": [[["x"] * 8] * 8]}, "not of expected type"),
        # TF Serving's wording (util/json_tensor.cc AddInstanceItem).
        ({"instances": [[[0.0] * 8] * 8, [[0.0] * 8] * 7]}, "Expecting tensor size"),
        ({"instances": [{"pixels": [[0.0] * 8] * 8}]}, "does not have named input"),
        ({"rows": []}, "instances"),
    ],
)
def test_rest_bad_input_is_400_json(double, spec, images, body, fragment: str) -> None:
    url = double.rest_url + TFS_PREDICT_PATH.format(name=spec.name)
    response = requests.post(url, json=body, timeout=10)
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    good = requests.post(url, json=encode_request(images[:1]), timeout=10)
    assert good.status_code == 200


def test_codec_reads_the_columnar_answer_as_the_row_one(double, spec, images, expected) -> None:
    """TF Serving answers {"inputs": ...} with {"outputs": {...}}; decode_predictions reads
    both, so a client may send either form."""
    url = double.rest_url + TFS_PREDICT_PATH.format(name=spec.name)
    body = {"inputs": {INPUT_KEY: encode_request(images)["instances"]}}
    response = requests.post(url, json=body, timeout=10)
    assert response.status_code == 200
    assert list(response.json()) == ["outputs"]
    _assert_matches(decode_predictions(response.json(), len(images), spec.num_classes), expected)


def test_rest_malformed_json_is_400(double, spec) -> None:
    url = double.rest_url + TFS_PREDICT_PATH.format(name=spec.name)
    response = requests.post(url, data=b"{not json", timeout=10)
    assert response.status_code == 400
    assert "JSON Parse error" in response.json()["error"]


def test_rest_status_and_readiness_check(double, spec) -> None:
    url = double.rest_url + TFS_STATUS_PATH.format(name=spec.name)
    body = requests.get(url, timeout=10).json()
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    assert body["model_version_status"][0]["version"] == str(spec.version)
    assert model_is_available(url) is True
    assert model_is_available(double.rest_url + TFS_STATUS_PATH.format(name="other")) is False


def test_rest_metadata_names_the_signature(double, spec) -> None:
    url = double.rest_url + TFS_STATUS_PATH.format(name=spec.name) + "/metadata"
    signature_defs = requests.get(url, timeout=10).json()["metadata"]["signature_def"]
    inputs = signature_defs["signatureDef"][SIGNATURE_NAME]["inputs"]
    assert list(inputs) == [INPUT_KEY]


# --- gRPC -------------------------------------------------------------------------------


def test_grpc_client_matches_in_process(grpc_client, images, expected) -> None:
    _assert_matches(grpc_client.predict(images), expected)


def test_warmup_records_are_the_requests_our_grpc_client_sends(grpc_client, spec, images) -> None:
    """The SavedModel's warm-up records warm exactly the request our client sends."""
    assert warmup_request(spec, images) == grpc_client.build_request(images)
    logits, classes = grpc_client.read_reply(
        grpc_client.send(warmup_request(spec, images)), len(images)
    )
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))


def _raw_predict(client: TfServingGrpcClient, request: predict_pb2.PredictRequest):
    return client.stub.Predict(request, timeout=10)


def _assert_grpc_code(client, request, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _raw_predict(client, request)
    assert info.value.code() == code, info.value.details()
    return info.value


def test_grpc_wrong_shape_is_invalid_argument(grpc_client, images, expected) -> None:
    request = grpc_client.build_request(images[:, :, :7])
    error = _assert_grpc_code(grpc_client, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "shape" in error.details()
    # The server keeps answering good requests.
    _assert_matches(grpc_client.predict(images), expected)


def test_grpc_wrong_dtype_is_invalid_argument(grpc_client, images) -> None:
    request = grpc_client.build_request(images)
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(images.astype(np.int32)))
    error = _assert_grpc_code(grpc_client, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "int32" in error.details()


def test_grpc_wrong_input_key_is_invalid_argument(grpc_client, images) -> None:
    request = grpc_client.build_request(images)
    request.inputs["pixels"].CopyFrom(request.inputs[INPUT_KEY])
    del request.inputs[INPUT_KEY]
    error = _assert_grpc_code(grpc_client, request, grpc.StatusCode.INVALID_ARGUMENT)
    assert "pixels" in error.details()


def test_grpc_unknown_model_is_not_found(grpc_client, images) -> None:
    request = grpc_client.build_request(images)
    request.model_spec.name = "not_served"
    _assert_grpc_code(grpc_client, request, grpc.StatusCode.NOT_FOUND)


def test_grpc_unknown_signature_is_failed_precondition(grpc_client, images) -> None:
    request = grpc_client.build_request(images)
    request.model_spec.signature_name = "predict_v2"
    _assert_grpc_code(grpc_client, request, grpc.StatusCode.FAILED_PRECONDITION)


def test_grpc_client_raises_on_error(double, images) -> None:
    client = TfServingGrpcClient(double.grpc_target, ModelSpec(name="not_served"))
    try:
        with pytest.raises(grpc.RpcError):
            client.predict(images)
    finally:
        client.close()


def test_grpc_metadata_and_status(grpc_client, spec) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = spec.name
    request.metadata_field.append("signature_def")
    response = grpc_client.stub.GetModelMetadata(request, timeout=10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def[SIGNATURE_NAME].outputs) == {LOGITS_KEY, CLASSES_KEY}

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = spec.name
    models = model_service_pb2_grpc.ModelServiceStub(grpc_client.channel)
    (version,) = models.GetModelStatus(status_request, timeout=10).model_version_status
    assert version.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
