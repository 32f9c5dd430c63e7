"""The Flask app of services/flask_torch/app.py with the SavedModel behind it:

    gunicorn -c services/flask_torch/gunicorn.conf.py "services.flask_tf.app:create_app()"

Same routes, codec, limits, errors and gunicorn config; only the model differs.
"""

from __future__ import annotations

from flask import Flask

from services.flask_tf.predictor import SavedModelModel
from services.flask_torch import app as flask_app
from services.flask_torch.predictor import ServedModel
from services.flask_torch.settings import Settings


def create_app(settings: Settings | None = None, model: ServedModel | None = None) -> Flask:
    """services.flask_torch.app.create_app with a SavedModelModel (FLASK_TORCH_MODEL_PATH
    names the SavedModel's version folder)."""
    settings = settings or Settings.from_env()
    return flask_app.create_app(settings, model if model is not None else SavedModelModel(settings))
