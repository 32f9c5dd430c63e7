"""How a stack's own code is called in process (loadtests.in_process): a probe refuses a
route that errs or answers wrongly before anything is timed, and calls each route as its
server would."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from digitnet.clients import FLASK_PREDICT_PATH
from digitnet.noop import NOOP_PATH
from harness.payload import PayloadSet
from loadtests import in_process
from services.flask_torch.app import create_app
from services.flask_torch.predictor import TorchScriptModel
from services.flask_torch.settings import Settings


class WrongModel:
    """A ServedModel that is ready and answers zeros: a wrong answer, not an error."""

    ready = True
    load_error = None
    device = "cpu"

    def load(self) -> None:
        pass

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        return np.zeros((len(images), 10), dtype=np.float32), 0.0


class UnloadedModel(WrongModel):
    """Never ready: the predict route answers 503."""

    ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        return False


@pytest.fixture
def served(artifacts, spec, limits) -> tuple[Settings, tuple[str, str], object]:
    settings = Settings(model_path=artifacts.torchscript, spec=spec, limits=limits,
                        torch_threads=1, device="cpu", warmup_iterations=1, noop_route=True,
                        load_wait_s=0.0)  # fmt: skip
    paths = (FLASK_PREDICT_PATH.format(name=spec.name), NOOP_PATH.format(name=spec.name))
    batch = PayloadSet(spec, 1, artifacts.reference_predictions, limit=1).batches[0]
    return settings, paths, batch


@pytest.fixture
def loaded(served) -> TorchScriptModel:
    """The real model (its load sets this process's torch threads to 1, as a worker's)."""
    model = TorchScriptModel(served[0])
    model.load()
    assert model.ready, model.load_error
    return model


def test_a_wrong_answer_is_refused_before_anything_is_timed(served) -> None:
    settings, paths, batch = served
    app = create_app(settings, model=WrongModel())
    with pytest.raises(RuntimeError, match="answered wrongly in process"):
        in_process.check_wsgi(app, paths, batch, settings.spec.num_classes)


def test_an_error_reply_is_refused_before_anything_is_timed(served) -> None:
    settings, paths, batch = served
    app = create_app(settings, model=UnloadedModel())
    with pytest.raises(RuntimeError, match="answered 503"):
        in_process.check_wsgi(app, paths, batch, settings.spec.num_classes)


def test_a_route_is_called_as_the_server_calls_it_and_returns_its_stages(served,
                                                                         loaded) -> None:
    settings, paths, batch = served
    app = create_app(dataclasses.replace(settings, noop_route=True), model=loaded)
    predict, noop = (in_process.wsgi_call(app, path, batch.body) for path in paths)
    assert predict[1].startswith("200") and noop[1].startswith("200")
    assert in_process.wsgi_call(app, "/nowhere", batch.body)[1].startswith("404")
    # The predict reply names its stages; the twin's only the app's span.
    assert "decode;dur=" in predict[2] and "model;dur=" in predict[2]
    assert "app;dur=" in noop[2] and "decode" not in noop[2]
    in_process.check_wsgi(app, paths, batch, settings.spec.num_classes)
