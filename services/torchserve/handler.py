"""TorchServe handler: the shared JSON schema in, logits and class out.

Lifecycle: `initialize` once per worker, then `handle` per dynamic batch. Each request
in the batch is validated on its own, so one bad request gets its own 4xx and the rest
of the batch is still answered (a handler that raises would fail the whole batch with 503).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from digitnet.codec import JSON_CONTENT_TYPE, PayloadError, decode_request, encode_predictions
from digitnet.spec import ModelSpec, ServingLimits
from digitnet.torchscript import load_torchscript

THREADS_ENV = "DIGITNET_TORCH_THREADS"


class DigitNetHandler:
    """Per-worker state: the scripted model and the request limits."""

    def __init__(self) -> None:
        self.model = None
        self.device = "cpu"
        self.spec = ModelSpec.from_env()
        self.limits = ServingLimits.from_env()
        self.initialized = False

    def initialize(self, context) -> None:
        """Called once when a worker starts: loads TorchScript and warms it up."""
        properties = context.system_properties
        torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            self.device = f"cuda:{gpu_id}"
        serialized = context.manifest["model"]["serializedFile"]
        self.model = load_torchscript(Path(properties["model_dir"]) / serialized, self.device)
        with torch.inference_mode():
            self.model(torch.zeros(1, self.spec.side, self.spec.side, device=self.device))
        self.initialized = True

    def handle(self, data: list[dict], context) -> list[dict]:
        """Called per dynamic batch: one entry in `data` per client request."""
        responses: list[dict] = [{} for _ in data]
        valid: list[tuple[int, torch.Tensor]] = []
        for idx, request in enumerate(data):
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            try:
                payload = request.get("body")
                if payload is None:
                    payload = request.get("data")
                if payload is None:
                    raise PayloadError(400, "empty_body", "request body is empty")
                images = decode_request(payload, self.spec, self.limits)
            except PayloadError as err:
                context.set_response_status(err.status, err.message, idx)
                responses[idx] = err.to_json()
                continue
            valid.append((idx, torch.from_numpy(images)))
        if valid:
            batch = torch.cat([images for _, images in valid]).to(self.device)
            with torch.inference_mode():
                logits = self.model(batch).cpu().numpy()
            start = 0
            for idx, images in valid:
                rows = len(images)
                responses[idx] = encode_predictions(logits[start : start + rows])
                start += rows
        return responses
