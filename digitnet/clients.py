"""One client per stack and protocol; every caller (deploy-local, parity, tests, load
tests) predicts through these, so URLs, headers and the payload are written once.

All clients take float32 images [N, side, side] and return (logits [N, C], classes [N]).
A REST client speaks one body codec (digitnet.wire): the JSON schema by default, the
binary tensor body with `codec=BINARY_WIRE` (with_codec turns one client into the other).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import requests

from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, SIGNATURE_NAME, ModelSpec
from digitnet.wire import JSON_WIRE, WireCodec

# URL formats of each server's REST API. The Flask app mirrors TF Serving's routes.
TFS_PREDICT_PATH = "/v1/models/{name}:predict"
TFS_STATUS_PATH = "/v1/models/{name}"
TFS_METRICS_PATH = "/monitoring/prometheus/metrics"
TORCHSERVE_PREDICT_PATH = "/predictions/{name}"
TORCHSERVE_PING_PATH = "/ping"
TORCHSERVE_MODEL_PATH = "/models/{name}"
FLASK_PREDICT_PATH = TFS_PREDICT_PATH
FLASK_READY_PATH = "/readyz"
FLASK_LIVE_PATH = "/healthz"

DEFAULT_TIMEOUT_S = 10.0


class Predictor(Protocol):
    """What parity checks and deploy-local need from any client."""

    label: str
    protocol: str

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def bearer(token: str | None) -> dict[str, str]:
    """TorchServe's token-auth header; empty when auth is off or not needed."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class RestClient:
    """POSTs one predict body codec (`codec`, JSON by default) to one predict URL."""

    protocol = "rest"
    label: str
    base_url: str
    path: str
    spec: ModelSpec
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    session: requests.Session = field(default_factory=requests.Session)
    codec: WireCodec = JSON_WIRE

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + self.path

    def post_raw(self, images: np.ndarray) -> requests.Response:
        return self.session.post(
            self.url,
            data=self.codec.encode_request(images),
            headers={"Content-Type": self.codec.content_type, **self.headers},
            timeout=self.timeout_s,
        )

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        response = self.post_raw(images)
        if response.status_code != 200:
            raise RuntimeError(f"{self.label}: HTTP {response.status_code}: {response.text[:300]}")
        return self.codec.decode_reply(response.content, len(images), self.spec.num_classes)


def with_codec(client: RestClient, codec: WireCodec) -> RestClient:
    """The same endpoint and headers spoken in `codec`, on a session of its own; its label
    names the codec unless it is JSON ("flask/rest" -> "flask/rest+binary").

    Args:
        client: a REST client of any stack (its plugin's clients()).
        codec: the body codec the new client sends and expects back.
    """
    base = client.label.split("+", 1)[0]
    label = base if codec is JSON_WIRE else f"{base}+{codec.name}"
    return dataclasses.replace(client, label=label, codec=codec, session=requests.Session())


def tf_serving_rest(base_url: str, spec: ModelSpec) -> RestClient:
    return RestClient("tf_serving/rest", base_url, TFS_PREDICT_PATH.format(name=spec.name), spec)


def torchserve_rest(base_url: str, spec: ModelSpec, token: str | None) -> RestClient:
    return RestClient(
        "torchserve/rest",
        base_url,
        TORCHSERVE_PREDICT_PATH.format(name=spec.name),
        spec,
        headers=bearer(token),
    )


def flask_rest(base_url: str, spec: ModelSpec) -> RestClient:
    return RestClient("flask/rest", base_url, FLASK_PREDICT_PATH.format(name=spec.name), spec)


def grpc_predict_request(spec: ModelSpec, images: np.ndarray):
    """TF Serving's PredictRequest for float32 images [N, side, side] (the tensor's values
    in tensor_content); needs tensorflow and tensorflow-serving-api.

    Args:
        spec: names the model; the signature and input key are digitnet.spec's.
        images: the batch to send.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.name
    request.model_spec.signature_name = SIGNATURE_NAME
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(np.asarray(images, dtype=np.float32)))
    return request


class TfServingGrpcClient:
    """PredictionService.Predict with tensorflow-serving-api's generated stubs."""

    protocol = "grpc"

    def __init__(self, target: str, spec: ModelSpec, timeout_s: float = DEFAULT_TIMEOUT_S):
        # Imported here: tensorflow takes seconds to import and only gRPC callers need it.
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.label = "tf_serving/grpc"
        self.target = target
        self.spec = spec
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def build_request(self, images: np.ndarray):
        return grpc_predict_request(self.spec, images)

    def send(self, request):
        """One Predict call; split from encoding so load tests time only the call."""
        return self.stub.Predict(request, timeout=self.timeout_s)

    def read_reply(self, response, rows: int) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        logits = tf.make_ndarray(response.outputs[LOGITS_KEY]).astype(np.float32)
        classes = tf.make_ndarray(response.outputs[CLASSES_KEY]).astype(np.int64)
        if logits.shape != (rows, self.spec.num_classes) or classes.shape != (rows,):
            raise ValueError(f"{self.label}: logits {logits.shape}, classes {classes.shape}")
        return logits, classes

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.read_reply(self.send(self.build_request(images)), len(images))

    def close(self) -> None:
        self.channel.close()
