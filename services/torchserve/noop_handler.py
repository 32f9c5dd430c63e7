"""TorchServe handler of the no-op twin (digitnet/noop.py): a fixed reply per request.

Served as a second model beside digitnet, in the same TorchServe, with the same
config.properties, batching policy and workers (launch.py registers it only when the
server is started with DIGITNET_NOOP_TWIN=1), so what it costs is the frontend, the
batching and the worker protocol: TorchServe's own floor. It loads no model file, imports
no torch of its own and never looks at a body.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from digitnet.codec import APP_STAGE, JSON_CONTENT_TYPE, STAGE_HEADER, server_timing
from digitnet.noop import noop_reply
from digitnet.spec import ModelSpec


class NoopHandler:
    """Per-worker state: the reply, built once."""

    def __init__(self) -> None:
        self.reply = ""
        self.initialized = False

    def initialize(self, context: Any) -> None:
        """Called once when a worker starts: builds the fixed reply for the served spec."""
        self.reply = noop_reply(ModelSpec.from_env()).decode()
        self.initialized = True

    def handle(self, data: list[dict], context: Any) -> list[str]:
        """Called per dynamic batch: the fixed reply for every request, with the status
        line and content type the predict handler sets (without a phrase TorchServe would
        send a bare "200 " status line, and another content type would change the bytes).
        Like the predict handler it names its own span (APP_STAGE): the twin's time in
        TorchServe less that is the frontend's and the worker protocol's alone."""
        entered = time.perf_counter()
        for idx in range(len(data)):
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            context.set_response_status(HTTPStatus.OK.value, HTTPStatus.OK.phrase, idx)
            context.set_response_header(
                idx, STAGE_HEADER, server_timing({APP_STAGE: time.perf_counter() - entered})
            )
        return [self.reply] * len(data)
