"""The PROTOCOL TEST DOUBLE against TF Serving's own test cases (vectors.py): for every
vector it must answer what TF Serving answers, so that our clients, tested against the
double, are tested against TF Serving's behaviour and not against the double's guesses."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from digitnet.codec import decode_predictions, encode_request
from digitnet.spec import CLASSES_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec
from services.process import free_port
from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble
from tests.services.tf_serving.vectors import GRPC_VECTORS, REST_VECTORS, GrpcVector, RestVector

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def double(artifacts, spec: ModelSpec) -> Iterator[TfServingProtocolDouble]:
    with TfServingProtocolDouble(
        artifacts.savedmodel, spec.name, spec.version, free_port(), free_port()
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stub(
    double: TfServingProtocolDouble,
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(double.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _send(double: TfServingProtocolDouble, spec: ModelSpec, vector: RestVector):
    url = double.rest_url + vector.url_path(spec.name)
    return requests.request(
        vector.method, url, data=vector.body, timeout=TIMEOUT_S,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip


def _check_answer(body: dict, vector: RestVector, spec: ModelSpec) -> None:
    """TF Serving's response shapes for our two-output signature (json_tensor_test.cc
    FromJsonMultipleNamedTensors): one object per row, or one list per output."""
    assert list(body) == [vector.response_key], body
    if vector.response_key == "predictions":
        rows = body["predictions"]
        assert len(rows) == vector.rows
        assert all(set(row) == {LOGITS_KEY, CLASSES_KEY} for row in rows)
        assert all(len(row[LOGITS_KEY]) == spec.num_classes for row in rows)
    else:
        outputs = body["outputs"]
        assert set(outputs) == {LOGITS_KEY, CLASSES_KEY}
        assert np.asarray(outputs[LOGITS_KEY]).shape == (vector.rows, spec.num_classes)
        assert np.asarray(outputs[CLASSES_KEY]).shape == (vector.rows,)


@pytest.mark.parametrize("vector", REST_VECTORS, ids=lambda v: v.name)
def test_double_answers_each_rest_vector_as_tf_serving(double, spec, vector: RestVector) -> None:
    response = _send(double, spec, vector)

    assert response.status_code == vector.status, (vector.source, response.text[:300])
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    if vector.error is None:
        _check_answer(body, vector, spec)
    else:
        # TF Serving's error body (json_tensor.cc MakeJsonFromStatus): one "error" key.
        assert list(body) == ["error"], body
        assert vector.error in body["error"], (vector.source, body["error"][:300])


def test_columnar_answer_carries_the_same_numbers_as_the_row_answer(double, spec, split) -> None:
    images = split.test_images[:5]
    url = double.rest_url + f"/v1/models/{spec.name}:predict"
    row = requests.post(url, json=encode_request(images), timeout=TIMEOUT_S).json()
    columnar = requests.post(
        url, json={"inputs": encode_request(images)["instances"]}, timeout=TIMEOUT_S
    ).json()
    row_logits, row_classes = decode_predictions(row, 5, spec.num_classes)
    col_logits, col_classes = decode_predictions(columnar, 5, spec.num_classes)
    np.testing.assert_array_equal(row_logits, col_logits)
    np.testing.assert_array_equal(row_classes, col_classes)


@pytest.mark.parametrize("vector", GRPC_VECTORS, ids=lambda v: v.name)
def test_double_answers_each_grpc_vector_as_tf_serving(stub, spec, vector: GrpcVector) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(vector.build(spec), timeout=TIMEOUT_S)

    assert info.value.code().name == vector.code, (vector.source, info.value.details())
    assert vector.error in info.value.details(), (vector.source, info.value.details())


def test_grpc_response_names_the_default_signature_and_version(stub, spec, split) -> None:
    """predict_util_test.cc PredictionSuccess: a request without a signature name is
    answered with model_spec.signature_name "serving_default" and the served version."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.name
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(split.test_images[:2]))
    response = stub.Predict(request, timeout=TIMEOUT_S)

    assert response.model_spec.signature_name == SIGNATURE_NAME
    assert response.model_spec.version.value == spec.version
    assert set(response.outputs) == {LOGITS_KEY, CLASSES_KEY}
