"""The SavedModel behind the Flask app: loads, warms up, answers like the signature, and
reports load failures through readiness instead of raising in a background thread."""

from __future__ import annotations

import numpy as np
import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.savedmodel import load_signature
from services.flask_tf.app import create_app
from services.flask_tf.launch import STACK
from services.flask_tf.predictor import SavedModelModel
from services.flask_torch.predictor import ModelNotReady
from services.flask_torch.settings import Settings


def settings_for(artifacts: ArtifactPaths, **changes) -> Settings:
    return Settings(model_path=artifacts.savedmodel, spec=artifacts.spec, warmup_iterations=1,
                    **changes)  # fmt: skip


def test_it_answers_like_the_signature(artifacts: ArtifactPaths, split) -> None:
    model = SavedModelModel(settings_for(artifacts))
    with pytest.raises(ModelNotReady):
        model.predict_timed(split.test_images[:2])
    model.load()
    assert model.ready and model.load_error is None
    # GPUs are hidden from TensorFlow: the graph runs where the reply says it does.
    assert model.device == "cpu"
    images = split.test_images[:16]
    logits, seconds = model.predict_timed(images)
    expected = load_signature(artifacts.savedmodel)(images=images)["logits"].numpy()
    assert np.abs(logits - expected).max() <= 1e-6 and seconds > 0


def test_a_missing_model_is_reported_not_raised(artifacts: ArtifactPaths, tmp_path) -> None:
    model = SavedModelModel(Settings(model_path=tmp_path / "nothing", spec=artifacts.spec))
    model.load()
    assert not model.ready and "nothing" in model.load_error
    assert model.wait_ready(0.1) is False


def test_cuda_is_refused_not_silently_served_on_the_cpu(artifacts: ArtifactPaths) -> None:
    model = SavedModelModel(settings_for(artifacts, device="cuda"))
    model.load()
    assert not model.ready and "CPU only" in model.load_error


def test_the_flask_app_serves_it_with_the_shared_codec(artifacts: ArtifactPaths, split) -> None:
    model = SavedModelModel(settings_for(artifacts))
    model.load()
    client = create_app(settings_for(artifacts), model).test_client()
    ok = client.post("/v1/models/digitnet:predict",
                     json={"instances": split.test_images[:2].tolist()})  # fmt: skip
    assert ok.status_code == 200 and len(ok.get_json()["predictions"]) == 2
    bad = client.post("/v1/models/digitnet:predict", json={"instance": []})
    assert bad.status_code == 400 and bad.get_json()["reason"] == "wrong_schema"


def test_the_plugin_serves_the_savedmodel_beside_flask_torch(artifacts: ArtifactPaths) -> None:
    assert STACK.model_file(artifacts) == artifacts.savedmodel
    assert STACK.floor_path == "SavedModel signature" and STACK.framework == "tensorflow"
    assert STACK.default_ports["http"] != 8000  # flask_torch's: deploy-local runs both


def test_the_flask_app_serves_it_with_the_binary_codec_too(artifacts: ArtifactPaths,
                                                           split) -> None:  # fmt: skip
    """The shared app dispatches on Content-Type, so the SavedModel stack speaks binary
    without code of its own."""
    from digitnet.binary_codec import (
        BINARY_CONTENT_TYPE,
        decode_binary_predictions,
        encode_binary_request,
    )

    model = SavedModelModel(settings_for(artifacts))
    model.load()
    client = create_app(settings_for(artifacts), model).test_client()
    images = split.test_images[:3]
    reply = client.post("/v1/models/digitnet:predict", data=encode_binary_request(images),
                        headers={"Content-Type": BINARY_CONTENT_TYPE})  # fmt: skip
    assert reply.status_code == 200 and reply.mimetype == BINARY_CONTENT_TYPE
    logits, _ = decode_binary_predictions(reply.get_data(), 3, artifacts.spec.num_classes)
    expected = load_signature(artifacts.savedmodel)(images=images)["logits"].numpy()
    assert np.abs(logits - expected).max() <= 1e-6
    assert STACK.codecs == ("json", "binary")
