"""The no-op twin every stack can serve beside its model: the same server, config, port
and headers answering a fixed reply, without decoding the body or running the model
(TF Serving decodes every body into tensors before a model runs: its twin is a trivial
SavedModel, services/tf_serving/noop_model.py, and its floor holds that decode).

Measured next to the predict route (loadtests/framework_floor.py), it is the framework's
own floor; the rest of the served latency is our code and the model. The twin is off
unless the server is started with NOOP_ENV=1 (ServingStack.noop_env): production images,
compose and k8s never set it, and local runs set it only where a run measures the floor.

Nothing here imports a framework: the Flask workers, TorchServe's noop handler, the Ray
replica and TF Serving's twin export import it, and so does the gunicorn master (through
flask_torch's settings), which is why numpy is imported only where the reply is built, in
the workers. It lives in digitnet because every image copies that package whole: they run
the same code, twin off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from digitnet.spec import ModelSpec

NOOP_ENV = "DIGITNET_NOOP_TWIN"
# The twin's route beside the predict route of the TF Serving-style APIs (Flask, Ray):
# the same prefix and model name, so routing costs what the predict route's does.
NOOP_PATH = "/v1/models/{name}:noop"
# TorchServe serves the twin as a second model named after the first.
NOOP_MODEL_SUFFIX = "_noop"


def noop_enabled(value: str | None) -> bool:
    """Whether NOOP_ENV's value turns the twin on (only "1": anything else is off)."""
    return (value or "").strip() == "1"


def noop_requested(env: Mapping[str, str] | None) -> bool:
    """Whether a server started with extra environment `env` over this process's own (as
    the plugins' start() gets it) is to serve its twin."""
    return noop_enabled({**os.environ, **(env or {})}.get(NOOP_ENV))


def noop_model_name(spec: ModelSpec) -> str:
    return spec.name + NOOP_MODEL_SUFFIX


def noop_logits(spec: ModelSpec):
    """The twin's fixed logits, float32 [classes]: steps of 1/3.1, so each prints with as
    many digits as a real float32 logit does and a reply holding them is the size of a
    real one. TF Serving's twin (services/tf_serving/noop_model.py) answers these too."""
    import numpy as np

    return (np.arange(spec.num_classes, dtype=np.float32) - 4.5) / np.float32(3.1)


def noop_reply(spec: ModelSpec) -> bytes:
    """The twin's fixed answer: a batch-1 prediction of the model's shape, compact JSON as
    every stack sends it (the shared codec's)."""
    from digitnet.codec import encode_predictions_json

    return encode_predictions_json(noop_logits(spec)[None, :])
