"""Fixtures for the Flask app, in the style of the Flask tutorial's conftest: `app` builds
the application with its factory and `client` is Flask's test client for it."""

from __future__ import annotations

import dataclasses

import pytest
from flask import Flask
from flask.testing import FlaskClient

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec, ServingLimits
from services.flask_torch.app import create_app
from services.flask_torch.predictor import TorchScriptModel
from services.flask_torch.settings import Settings

LOAD_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def settings(artifacts: ArtifactPaths, spec: ModelSpec, limits: ServingLimits) -> Settings:
    """The real TorchScript file from the session's artifacts, on the CPU."""
    return Settings(
        model_path=artifacts.torchscript,
        spec=spec,
        limits=limits,
        torch_threads=1,
        device="cpu",
        warmup_iterations=1,
    )


@pytest.fixture(scope="module")
def loaded_model(settings: Settings) -> TorchScriptModel:
    """The real model, loaded once per module; apps built on it skip the loading thread."""
    model = TorchScriptModel(settings)
    model.load()
    assert model.ready, model.load_error
    return model


@pytest.fixture
def app(settings: Settings, loaded_model: TorchScriptModel) -> Flask:
    app = create_app(settings, model=loaded_model)
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def quick_settings(settings: Settings) -> Settings:
    """Settings whose predict requests do not wait for a loading model (answer 503 at once)."""
    return dataclasses.replace(settings, load_wait_s=0.0)
