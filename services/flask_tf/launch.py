"""The flask_tf plugin: gunicorn serving the SavedModel through the Flask app, codec and
gunicorn config of flask_torch (services/flask_torch/launch.py's FlaskStack)."""

from __future__ import annotations

from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from services.flask_torch.launch import HTTP, FlaskStack


class FlaskTfStack(FlaskStack):
    """The SavedModel signature behind the Flask app."""

    name = "flask_tf"
    # Beside flask_torch's 8000, so `make deploy-local` runs both.
    default_ports = {HTTP: 8001}
    app_factory = "services.flask_tf.app:create_app()"
    required_modules = ("flask", "gunicorn", "tensorflow")
    floor_path = "SavedModel signature"
    framework = "tensorflow"
    not_deployed_why = (
        "no container image yet: compose and k8s run the three original stacks; locally "
        "it runs like flask_torch (make deploy-local, make bench)"
    )

    def model_file(self, paths: ArtifactPaths) -> Path:
        return paths.savedmodel


STACK = FlaskTfStack()
