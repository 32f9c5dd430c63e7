"""TF Serving's no-op twin (services/tf_serving/noop_model.py): the SavedModel itself, and
its REST answer through the PROTOCOL TEST DOUBLE (our client code and the twin's outputs,
not TF Serving; test_real_server.py asks the real binary where it is installed)."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import tensorflow as tf

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import TFS_PREDICT_PATH
from digitnet.codec import decode_predictions, encode_request
from digitnet.noop import noop_logits, noop_model_name
from digitnet.savedmodel import load_signature
from digitnet.spec import CLASSES_KEY, INPUT_KEY, LOGITS_KEY, ModelSpec
from services.process import free_port
from services.tf_serving.launch import STACK, noop_savedmodel
from services.tf_serving.noop_model import export_noop_savedmodel
from services.tf_serving.warmup import read_warmup_requests
from tests.doubles.tf_serving_protocol_double import TfServingProtocolDouble


def _outputs(signature, images: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in signature(**{INPUT_KEY: tf.constant(images)}).items()}


def test_the_build_writes_the_twin_beside_digitnet(artifacts: ArtifactPaths,
                                                   spec: ModelSpec) -> None:  # fmt: skip
    twin = noop_savedmodel(artifacts)
    assert twin == artifacts.tf_serving_base / noop_model_name(spec) / str(spec.version)
    assert (twin / "saved_model.pb").is_file()
    assert twin / "saved_model.pb" in STACK.artifact_files(artifacts)


def test_the_twin_has_digitnets_signature(artifacts: ArtifactPaths) -> None:
    twin = load_signature(noop_savedmodel(artifacts))
    real = load_signature(artifacts.savedmodel)
    assert twin.structured_input_signature == real.structured_input_signature
    assert twin.structured_outputs == real.structured_outputs


@pytest.mark.parametrize("batch", [1, 5])
def test_the_twin_answers_its_fixed_logits_whatever_the_pixels(artifacts: ArtifactPaths,
                                                               spec: ModelSpec,
                                                               batch: int) -> None:  # fmt: skip
    twin = load_signature(noop_savedmodel(artifacts))
    fixed = noop_logits(spec)
    rng = np.random.default_rng(batch)
    for images in (rng.random((batch, spec.side, spec.side), dtype=np.float32),
                   np.zeros((batch, spec.side, spec.side), np.float32)):  # fmt: skip
        got = _outputs(twin, images)
        np.testing.assert_array_equal(got[LOGITS_KEY], np.tile(fixed, (batch, 1)))
        np.testing.assert_array_equal(got[CLASSES_KEY], np.full(batch, fixed.argmax()))
        assert got[CLASSES_KEY].dtype == np.int64


def test_the_twin_replays_digitnets_warmup_records(artifacts: ArtifactPaths,
                                                   spec: ModelSpec) -> None:  # fmt: skip
    twin_dir = noop_savedmodel(artifacts)
    records = read_warmup_requests(twin_dir)
    assert [r.SerializeToString() for r in records] == [
        r.SerializeToString() for r in read_warmup_requests(artifacts.savedmodel)]
    twin = load_signature(twin_dir)
    for record in records:
        images = tf.make_ndarray(record.predict_log.request.inputs[INPUT_KEY])
        assert _outputs(twin, images)[LOGITS_KEY].shape == (len(images), spec.num_classes)


def test_an_export_replaces_an_older_version(tmp_path, spec: ModelSpec) -> None:
    version_dir = tmp_path / "digitnet_noop" / "1"
    (version_dir / "stale").mkdir(parents=True)
    assert export_noop_savedmodel(version_dir, spec) == version_dir
    assert not (version_dir / "stale").exists()
    assert (version_dir / "saved_model.pb").is_file()


@pytest.mark.integration
def test_the_twin_over_rest_decodes_as_a_prediction(artifacts: ArtifactPaths,
                                                    spec: ModelSpec) -> None:  # fmt: skip
    name = noop_model_name(spec)
    with TfServingProtocolDouble(noop_savedmodel(artifacts), name, spec.version,
                                 free_port(), free_port()) as double:  # fmt: skip
        images = np.random.default_rng(0).random((1, spec.side, spec.side), dtype=np.float32)
        reply = requests.post(double.rest_url + TFS_PREDICT_PATH.format(name=name),
                              json=encode_request(images), timeout=10)  # fmt: skip
    assert reply.status_code == 200, reply.text
    logits, classes = decode_predictions(reply.json(), 1, spec.num_classes)
    np.testing.assert_allclose(logits, noop_logits(spec)[None, :], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(classes, [noop_logits(spec).argmax()])
