"""The no-op twin route through Flask's test client: registered only when asked for, a
fixed reply the size of a prediction, no decoding, no model (it answers while the model
has never loaded, and never calls it)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from flask import Flask

from digitnet.clients import FLASK_PREDICT_PATH
from digitnet.codec import JSON_CONTENT_TYPE, decode_predictions, encode_request
from digitnet.data import DigitsSplit
from digitnet.noop import NOOP_ENV, NOOP_PATH, noop_reply
from services.flask_torch.app import create_app
from services.flask_torch.settings import Settings

JSON_HEADERS = {"Content-Type": JSON_CONTENT_TYPE}


class UnloadedModel:
    """A ServedModel whose load never finishes; counts the calls that would run it."""

    ready = False
    load_error = None
    device = None

    def __init__(self) -> None:
        self.calls = 0

    def load(self) -> None:
        """What create_app's loader thread runs: returns with the model still not ready."""

    def wait_ready(self, timeout_s: float) -> bool:
        self.calls += 1
        return False

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        self.calls += 1
        raise AssertionError("the model ran")


def noop_app(settings: Settings, model, on: bool) -> Flask:
    app = create_app(dataclasses.replace(settings, noop_route=on, load_wait_s=0.0), model=model)
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def unloaded() -> UnloadedModel:
    return UnloadedModel()


@pytest.mark.parametrize("body", [b"{not json", b"", None])
def test_the_twin_answers_its_fixed_reply_without_decoding_or_the_model(
    settings: Settings, unloaded: UnloadedModel, body
) -> None:
    client = noop_app(settings, unloaded, on=True).test_client()
    path = NOOP_PATH.format(name=settings.spec.name)
    response = client.post(path, data=body or json.dumps({"instances": [[[0.0]]]}),
                           headers=JSON_HEADERS)  # fmt: skip

    assert response.status_code == 200
    assert response.mimetype == JSON_CONTENT_TYPE
    assert response.get_data() == noop_reply(settings.spec)
    assert unloaded.calls == 0
    # The same app's predict route, meanwhile, waits for the model that never loads.
    predict = client.post(FLASK_PREDICT_PATH.format(name=settings.spec.name),
                          data=json.dumps(encode_request(np.zeros((1, 8, 8), np.float32))),
                          headers=JSON_HEADERS)  # fmt: skip
    assert predict.status_code == 503 and predict.get_json()["reason"] == "model_not_ready"


def test_without_the_switch_there_is_no_twin_route(settings: Settings,
                                                   unloaded: UnloadedModel) -> None:  # fmt: skip
    client = noop_app(settings, unloaded, on=False).test_client()
    response = client.post(NOOP_PATH.format(name=settings.spec.name), data=b"{}",
                           headers=JSON_HEADERS)  # fmt: skip
    assert response.status_code == 404 and response.get_json()["reason"] == "not_found"


def test_the_fixed_reply_is_a_prediction_the_size_of_a_real_one(
    client, settings: Settings, split: DigitsSplit
) -> None:
    real = client.post(FLASK_PREDICT_PATH.format(name=settings.spec.name),
                       data=json.dumps(encode_request(split.test_images[:1])),
                       headers=JSON_HEADERS).get_data()  # fmt: skip
    fixed = noop_reply(settings.spec)
    logits, _ = decode_predictions(json.loads(fixed), 1, settings.spec.num_classes)
    assert logits.shape == (1, settings.spec.num_classes)
    # Within a tenth of the real reply's bytes: what the twin writes costs what ours does.
    assert abs(len(fixed) - len(real)) <= len(real) / 10


def test_the_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NOOP_ENV, raising=False)
    assert Settings.from_env().noop_route is False
    monkeypatch.setenv(NOOP_ENV, "1")
    assert Settings.from_env().noop_route is True
    monkeypatch.setenv(NOOP_ENV, "yes")
    assert Settings.from_env().noop_route is False
