"""The Flask app through Flask's test client, with the real TorchScript model."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from flask import Flask
from flask.testing import FlaskClient

from digitnet.binary_codec import (
    BINARY_CONTENT_TYPE,
    decode_binary_predictions,
    encode_binary_request,
)
from digitnet.clients import FLASK_LIVE_PATH, FLASK_PREDICT_PATH, FLASK_READY_PATH, TFS_STATUS_PATH
from digitnet.codec import (
    APP_STAGE,
    BATCH_HEADER,
    DEVICE_HEADER,
    INFERENCE_TIME_HEADER,
    STAGE_HEADER,
    STAGES,
    decode_predictions,
    encode_request,
    parse_server_timing,
)
from digitnet.data import DigitsSplit
from digitnet.torchscript import load_torchscript
from reliability.matrix import BAD_REQUESTS as MATRIX_CASES
from reliability.matrix import BadRequest as MatrixCase
from services.flask_torch.app import create_app
from services.flask_torch.predictor import TorchScriptModel
from services.flask_torch.settings import Settings

PREDICT = FLASK_PREDICT_PATH.format(name="digitnet")
STATUS = TFS_STATUS_PATH.format(name="digitnet")
JSON_HEADERS = {"Content-Type": "application/json"}
WAIT_S = 30.0


def post_json_text(client: FlaskClient, text: str | bytes, path: str = PREDICT, **kwargs):
    return client.post(path, data=text, headers=kwargs.pop("headers", JSON_HEADERS), **kwargs)


def image_rows(split: DigitsSplit, count: int = 2) -> list:
    return encode_request(split.test_images[:count])["instances"]


def body_with_pixel(split: DigitsSplit, pixel: object) -> str:
    """A good two-image request with one pixel replaced (json.dumps writes NaN literally)."""
    instances = image_rows(split)
    instances[1][3][4] = pixel
    return json.dumps({"instances": instances})


def assert_predicts_correctly(client: FlaskClient, split: DigitsSplit, settings: Settings) -> None:
    """The request after a bad one: answered, and with the model's own logits."""
    images = split.test_images[:3]
    response = post_json_text(client, json.dumps(encode_request(images)))
    assert response.status_code == 200, response.get_data(as_text=True)
    logits, _ = decode_predictions(response.get_json(), len(images), settings.spec.num_classes)
    with torch.inference_mode():
        expected = load_torchscript(settings.model_path)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)


@pytest.fixture(scope="module")
def expected_logits(settings: Settings, split: DigitsSplit) -> np.ndarray:
    """The TorchScript model's own logits on the whole test split, without any server."""
    with torch.inference_mode():
        module = load_torchscript(settings.model_path)
        return module(torch.from_numpy(split.test_images)).numpy()


def test_predictions_equal_torchscript_logits_on_test_split(
    client: FlaskClient, split: DigitsSplit, settings: Settings, expected_logits: np.ndarray
) -> None:
    batch = settings.limits.max_batch
    got = []
    for start in range(0, len(split.test_images), batch):
        images = split.test_images[start : start + batch]
        response = post_json_text(client, json.dumps(encode_request(images)))
        assert response.status_code == 200, response.get_data(as_text=True)
        logits, classes = decode_predictions(
            response.get_json(), len(images), settings.spec.num_classes
        )
        np.testing.assert_array_equal(classes, logits.argmax(axis=1))
        got.append(logits)
    logits = np.concatenate(got)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(axis=1), expected_logits.argmax(axis=1))
    # The served model is the trained one, not merely some model of the right shape.
    assert (logits.argmax(axis=1) == split.test_labels).mean() > 0.95


def test_charset_parameter_in_content_type_is_accepted(
    client: FlaskClient, split: DigitsSplit
) -> None:
    response = post_json_text(
        client,
        json.dumps({"instances": image_rows(split, 1)}),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def test_inference_time_header_is_a_non_negative_number(
    client: FlaskClient, split: DigitsSplit
) -> None:
    response = post_json_text(client, json.dumps({"instances": image_rows(split, 4)}))
    assert response.status_code == 200
    assert float(response.headers[INFERENCE_TIME_HEADER]) >= 0.0


def test_replies_name_every_stage_and_the_model_stage_is_the_forward_pass(
    client: FlaskClient, split: DigitsSplit
) -> None:
    response = post_json_text(client, json.dumps({"instances": image_rows(split, 4)}))
    assert response.status_code == 200
    stages = parse_server_timing(response.headers[STAGE_HEADER])
    # One header: the stages, then the app's whole time (AppTimer), which holds them all.
    assert response.headers.getlist(STAGE_HEADER) == [response.headers[STAGE_HEADER]]
    assert list(stages) == [*STAGES, APP_STAGE]
    assert all(ms >= 0.0 for ms in stages.values())
    assert stages[APP_STAGE] >= sum(stages[name] for name in STAGES)
    # The same perf_counter interval as the forward pass's own header.
    assert stages["model"] == pytest.approx(float(response.headers[INFERENCE_TIME_HEADER]),
                                            abs=0.001)  # fmt: skip


def test_replies_name_the_device_the_model_runs_on(client: FlaskClient, split: DigitsSplit) -> None:
    response = post_json_text(client, json.dumps({"instances": image_rows(split, 1)}))
    assert response.status_code == 200
    assert response.headers[DEVICE_HEADER] == "cpu"
    # The app runs one forward pass per request, whatever the load.
    assert response.headers[BATCH_HEADER] == "1"


def test_liveness_and_readiness_of_a_loaded_app(client: FlaskClient) -> None:
    assert client.get(FLASK_LIVE_PATH).status_code == 200
    ready = client.get(FLASK_READY_PATH)
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready"}


def test_model_status_mirrors_tf_serving(client: FlaskClient, settings: Settings) -> None:
    response = client.get(STATUS)
    assert response.status_code == 200
    (version,) = response.get_json()["model_version_status"]
    assert version["version"] == str(settings.spec.version)
    assert version["state"] == "AVAILABLE"
    assert version["status"]["error_code"] == "OK"


# (id, body builder, headers, path, expected status, expected reason, words the message names)
BAD_REQUESTS = [
    ("malformed_json", lambda s: '{"instances": [1, 2,, 3]}', None, None, 400,
     "malformed_json", ["malformed JSON"]),
    ("truncated_json", lambda s: json.dumps({"instances": image_rows(s)})[:-7], None, None, 400,
     "malformed_json", ["malformed JSON"]),
    ("not_utf8", lambda s: b'{"instances": "\xff\xfe"}', None, None, 400,
     "malformed_json", ["UTF-8"]),
    ("too_deep", lambda s: "[" * 50_000 + "]" * 50_000, None, None, 400,
     "too_deep", ["too deep"]),
    ("top_level_list", lambda s: json.dumps(image_rows(s)), None, None, 400,
     "wrong_schema", ["JSON object"]),
    ("missing_key", lambda s: "{}", None, None, 400, "wrong_schema", ['"instances"']),
    ("misspelled_key", lambda s: json.dumps({"instance": image_rows(s)}), None, None, 400,
     "wrong_schema", ['"instances"', "'instance'"]),
    ("extra_key", lambda s: json.dumps({"instances": image_rows(s), "inputs": 1}), None, None,
     400, "wrong_schema", ["'inputs'"]),
    ("instances_not_a_list", lambda s: '{"instances": 5}', None, None, 400,
     "wrong_schema", ["must be a list"]),
    # One image sent without the batch axis: each "instance" is then a row of numbers.
    ("rank_too_low", lambda s: json.dumps({"instances": image_rows(s)[0]}), None, None, 400,
     "wrong_shape", ["instances[0][0]", "8 numbers", "float"]),
    ("rank_too_high", lambda s: json.dumps({"instances": [image_rows(s)]}), None, None, 400,
     "wrong_shape", ["instances[0]", "[8, 8]", "length 2"]),
    ("wrong_side", lambda s: json.dumps({"instances": [row[:7] for row in image_rows(s)]}),
     None, None, 400, "wrong_shape", ["instances[0]", "[8, 8]"]),
    ("string_pixel", lambda s: body_with_pixel(s, "0.5"), None, None, 400,
     "wrong_dtype", ["instances[1][3]", "str"]),
    ("null_pixel", lambda s: body_with_pixel(s, None), None, None, 400,
     "wrong_dtype", ["instances[1][3]", "null"]),
    ("bool_pixel", lambda s: body_with_pixel(s, True), None, None, 400,
     "wrong_dtype", ["instances[1][3]", "bool"]),
    ("nan_literal", lambda s: body_with_pixel(s, float("nan")), None, None, 400,
     "non_finite", ["NaN"]),
    ("infinity_literal", lambda s: body_with_pixel(s, float("inf")), None, None, 400,
     "non_finite", ["Infinity"]),
    ("minus_infinity_literal", lambda s: body_with_pixel(s, float("-inf")), None, None, 400,
     "non_finite", ["-Infinity"]),
    # 1e308 * 10: JSON has no overflow error, Python parses 1e309 to inf.
    ("overflowing_number", lambda s: body_with_pixel(s, 0.25).replace("0.25", "1e309", 1),
     None, None, 400, "non_finite", ["infinite"]),
    ("huge_finite_number", lambda s: body_with_pixel(s, 1e308), None, None, 400,
     "out_of_range", ["within"]),
    ("empty_batch", lambda s: '{"instances": []}', None, None, 400, "empty_batch", ["empty"]),
    ("batch_over_max", lambda s: json.dumps({"instances": image_rows(s, 1) * 65}), None, None,
     413, "batch_too_large", ["65", "64"]),
    ("body_over_max_content_length", lambda s: " " * (4 * 1024 * 1024 + 1), None, None, 413,
     "body_too_large", [str(4 * 1024 * 1024)]),
    ("wrong_content_type", lambda s: json.dumps({"instances": image_rows(s)}),
     {"Content-Type": "text/plain"}, None, 415, "unsupported_media_type", ["text/plain"]),
    ("missing_content_type", lambda s: json.dumps({"instances": image_rows(s)}), {}, None, 415,
     "unsupported_media_type", ["application/json"]),
    ("wrong_model_name", lambda s: json.dumps({"instances": image_rows(s)}), None,
     FLASK_PREDICT_PATH.format(name="resnet"), 404, "model_not_found", ["'resnet'"]),
    ("wrong_path", lambda s: json.dumps({"instances": image_rows(s)}), None, "/v1/predict", 404,
     "not_found", ["not found"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "build, headers, path, status, reason, words",
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_json_4xx_then_next_request_succeeds(
    client: FlaskClient,
    split: DigitsSplit,
    settings: Settings,
    build,
    headers,
    path,
    status: int,
    reason: str,
    words: list[str],
) -> None:
    response = post_json_text(
        client,
        build(split),
        path=path or PREDICT,
        headers=JSON_HEADERS if headers is None else headers,
    )
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["reason"] == reason
    for word in words:
        assert word in body["error"], body
    assert_predicts_correctly(client, split, settings)


@pytest.mark.parametrize("named", [False, True], ids=["bare", "named"])
def test_columnar_request_gets_a_columnar_answer_with_the_same_logits(
    client: FlaskClient, split: DigitsSplit, settings: Settings, expected_logits, named: bool
) -> None:
    """TF Serving's columnar form ({"inputs": ...}) is answered in its columnar form
    ({"outputs": {"logits": [...], "classes": [...]}}), as TF Serving answers it."""
    rows = image_rows(split, 3)
    inputs = {"images": rows} if named else rows
    response = post_json_text(client, json.dumps({"inputs": inputs}))

    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert list(body) == ["outputs"] and set(body["outputs"]) == {"logits", "classes"}
    logits, classes = decode_predictions(body, 3, settings.spec.num_classes)
    np.testing.assert_allclose(logits, expected_logits[:3], atol=1e-5)
    np.testing.assert_array_equal(classes, expected_logits[:3].argmax(axis=1))


def test_row_request_still_gets_a_row_answer(client: FlaskClient, split: DigitsSplit) -> None:
    response = post_json_text(client, json.dumps({"instances": image_rows(split, 2)}))
    assert list(response.get_json()) == ["predictions"]
    assert len(response.get_json()["predictions"]) == 2


@pytest.mark.parametrize(
    ("document", "status", "reason", "words"),
    [
        # Both forms at once: TF Serving refuses it too ("expecting only one of ...").
        ({"instances": [[[0.5] * 8] * 8], "inputs": [[[0.5] * 8] * 8]}, 400, "wrong_schema",
         "only one of"),
        ({"inputs": {"pixels": [[[0.5] * 8] * 8]}}, 400, "wrong_schema", "'pixels'"),
        ({"inputs": [[[0.5] * 7] * 8]}, 400, "wrong_shape", "inputs[0][0]"),
        ({"inputs": [[[0.5] * 8] * 8] * 65}, 413, "batch_too_large", "65 instances"),
    ],
    ids=["instances_and_inputs", "unknown_named_input", "short_rows", "batch_over_max"],
)  # fmt: skip
def test_bad_columnar_request_gets_json_4xx_then_next_request_succeeds(
    client: FlaskClient, split: DigitsSplit, settings: Settings, document, status, reason, words
) -> None:
    response = post_json_text(client, json.dumps(document))
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert set(body) == {"error", "reason"}
    assert body["reason"] == reason and words in body["error"], body
    assert_predicts_correctly(client, split, settings)


def test_get_on_predict_is_405_json_naming_post(
    client: FlaskClient, split: DigitsSplit, settings: Settings
) -> None:
    response = client.get(PREDICT)
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json()["reason"] == "method_not_allowed"
    assert "use POST" in response.get_json()["error"]
    assert "POST" in response.headers["Allow"]
    assert_predicts_correctly(client, split, settings)


def test_status_of_unknown_model_is_404_json(client: FlaskClient) -> None:
    response = client.get(TFS_STATUS_PATH.format(name="resnet"))
    assert response.status_code == 404
    assert response.get_json()["reason"] == "model_not_found"


class GatedLoaderDouble:
    """Test double for the loader: blocks until released, then loads the real file."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: Path, device: str) -> torch.jit.ScriptModule:
        self.entered.set()
        if not self.release.wait(WAIT_S):
            raise TimeoutError("test never released the loader")
        return load_torchscript(path, device)


def test_readiness_turns_from_503_to_200_once_the_slow_load_finishes(
    quick_settings: Settings, split: DigitsSplit
) -> None:
    loader = GatedLoaderDouble()
    model = TorchScriptModel(quick_settings, loader=loader)
    client = create_app(quick_settings, model=model).test_client()
    try:
        assert loader.entered.wait(WAIT_S), "create_app did not start loading"
        loading = client.get(FLASK_READY_PATH)
        assert loading.status_code == 503
        assert loading.get_json()["reason"] == "model_not_ready"
        assert "Retry-After" in loading.headers
        assert client.get(FLASK_LIVE_PATH).status_code == 200
        state = client.get(STATUS).get_json()["model_version_status"][0]["state"]
        assert state == "LOADING"
        early = post_json_text(client, json.dumps({"instances": image_rows(split)}))
        assert early.status_code == 503
        assert early.get_json()["reason"] == "model_not_ready"
    finally:
        loader.release.set()
    assert model.wait_ready(WAIT_S), model.load_error
    assert client.get(FLASK_READY_PATH).status_code == 200
    assert client.get(STATUS).get_json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert_predicts_correctly(client, split, quick_settings)


class WaitSignallingModel(TorchScriptModel):
    """The real model, plus an event that tells the test a request is waiting for it."""

    def __init__(self, settings: Settings, loader: GatedLoaderDouble) -> None:
        super().__init__(settings, loader=loader)
        self.request_waiting = threading.Event()

    def wait_ready(self, timeout_s: float) -> bool:
        self.request_waiting.set()
        return super().wait_ready(timeout_s)


def test_predict_arriving_during_load_waits_for_the_model(
    settings: Settings, split: DigitsSplit
) -> None:
    loader = GatedLoaderDouble()
    model = WaitSignallingModel(settings, loader)
    app = create_app(settings, model=model)
    responses = []

    def post() -> None:
        body = json.dumps({"instances": image_rows(split)})
        responses.append(post_json_text(app.test_client(), body))

    thread = threading.Thread(target=post)
    thread.start()
    try:
        assert model.request_waiting.wait(WAIT_S)
        assert not model.ready
    finally:
        loader.release.set()
        thread.join(WAIT_S)
    (response,) = responses
    assert response.status_code == 200, response.get_data(as_text=True)


def test_failed_load_reports_why_on_readiness_and_status(
    quick_settings: Settings, tmp_path: Path, split: DigitsSplit
) -> None:
    missing = tmp_path / "no-such-model.pt"
    settings = Settings(
        model_path=missing, spec=quick_settings.spec, limits=quick_settings.limits, load_wait_s=0
    )
    model = TorchScriptModel(settings)
    client = create_app(settings, model=model).test_client()
    assert not model.wait_ready(WAIT_S)
    ready = client.get(FLASK_READY_PATH)
    assert ready.status_code == 503
    assert ready.get_json()["reason"] == "load_failed"
    assert "no-such-model.pt" in ready.get_json()["error"]
    status = client.get(STATUS).get_json()["model_version_status"][0]
    assert status["state"] == "END"
    assert "no-such-model.pt" in status["status"]["error_message"]
    predict = post_json_text(client, json.dumps({"instances": image_rows(split)}))
    assert predict.status_code == 503
    assert predict.get_json()["reason"] == "load_failed"
    assert client.get(FLASK_LIVE_PATH).status_code == 200


class ExplodingModelDouble:
    """Test double: a ready model whose forward pass raises, to exercise the 500 path."""

    ready = True
    load_error = None

    def load(self) -> None:
        raise AssertionError("a ready model is never loaded again")

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        raise RuntimeError("secret internal detail /srv/model.pt")


def test_unexpected_error_is_500_json_without_internals(
    settings: Settings, split: DigitsSplit
) -> None:
    app: Flask = create_app(settings, model=ExplodingModelDouble())
    response = post_json_text(app.test_client(), json.dumps({"instances": image_rows(split)}))
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal server error", "reason": "internal"}
    text = response.get_data(as_text=True)
    assert "secret" not in text and "Traceback" not in text


def test_app_is_not_in_debug_mode_and_limits_bodies(app: Flask, settings: Settings) -> None:
    assert app.debug is False
    assert app.config["MAX_CONTENT_LENGTH"] == settings.limits.max_body_bytes


# --- the binary tensor body (digitnet.binary_codec) ---------------------------------------

BINARY_HEADERS = {"Content-Type": BINARY_CONTENT_TYPE}
# The robustness matrix's binary cases (reliability/matrix.py), tried in-process here.
MATRIX_BINARY_CASES = [case for case in MATRIX_CASES if case.codec == "binary"]


@pytest.mark.parametrize("count", [1, 64])
def test_binary_request_gets_a_binary_reply_with_the_json_logits(
    client: FlaskClient, split: DigitsSplit, settings: Settings, count: int
) -> None:
    images = split.test_images[:count]
    as_json = post_json_text(client, json.dumps(encode_request(images)))
    as_binary = client.post(PREDICT, data=encode_binary_request(images), headers=BINARY_HEADERS)

    assert as_binary.status_code == 200, as_binary.get_data()[:300]
    assert as_binary.mimetype == BINARY_CONTENT_TYPE
    logits, classes = decode_binary_predictions(as_binary.get_data(), count,
                                                settings.spec.num_classes)  # fmt: skip
    expected, _ = decode_predictions(as_json.get_json(), count, settings.spec.num_classes)
    np.testing.assert_allclose(logits, expected, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(classes, expected.argmax(axis=1))
    # Every header the JSON reply carries.
    for header in (INFERENCE_TIME_HEADER, DEVICE_HEADER, BATCH_HEADER, STAGE_HEADER):
        assert header in as_binary.headers and header in as_json.headers, header
    assert as_binary.headers[DEVICE_HEADER] == "cpu" and as_binary.headers[BATCH_HEADER] == "1"
    assert list(parse_server_timing(as_binary.headers[STAGE_HEADER])) == [*STAGES, APP_STAGE]


@pytest.mark.parametrize("case", MATRIX_BINARY_CASES, ids=lambda case: case.name)
def test_bad_binary_body_gets_a_json_4xx_then_next_request_succeeds(
    client: FlaskClient, split: DigitsSplit, settings: Settings, case: MatrixCase
) -> None:
    response = client.post(PREDICT, data=case.body, headers={"Content-Type": case.content_type})

    assert response.status_code == case.status, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/json"
    assert response.get_json()["reason"] == case.reason
    assert case.needle in response.get_json()["error"]
    assert_predicts_correctly(client, split, settings)


def test_unsupported_media_type_names_both_accepted_types(client: FlaskClient) -> None:
    response = client.post(PREDICT, data=b"x", headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 415
    message = response.get_json()["error"]
    assert "application/json" in message and BINARY_CONTENT_TYPE in message
    assert "'application/octet-stream'" in message
