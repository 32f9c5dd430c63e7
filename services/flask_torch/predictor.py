"""The TorchScript model one Flask worker serves: load once, warm up, then predict.

Loading happens when `load()` is called (create_app runs it in a background thread),
never at import, so the gunicorn master never touches torch.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from digitnet.torchscript import load_torchscript
from services.flask_torch.settings import Settings, select_device

log = logging.getLogger(__name__)

# (path, device) -> module; tests inject a slow or failing loader here.
Loader = Callable[[Path, str], torch.jit.ScriptModule]


class ModelNotReady(RuntimeError):
    """predict() was called before the model finished loading, or loading failed."""


class ServedModel(Protocol):
    """What the Flask app needs from a model; TorchScriptModel is the real one."""

    @property
    def ready(self) -> bool: ...

    @property
    def load_error(self) -> str | None: ...

    def load(self) -> None: ...

    def wait_ready(self, timeout_s: float) -> bool: ...

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]: ...

    @property
    def device(self) -> str | None: ...


class BackgroundLoadedModel:
    """Loads once (create_app runs `load` in a background thread), then serves one
    forward pass at a time: readiness, load errors and compute timing for every model
    behind the Flask app. Subclasses say how to load (`_load`), how to turn a request's
    images into the model's input (`_prepare`) and how to run it (`_run`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._served: object | None = None
        self._load_error: str | None = None
        # Set once loading has finished, successfully or not, so waiters never hang.
        self._settled = threading.Event()
        # gevent runs requests in greenlets (tests in threads); one forward pass at a time
        # keeps CPU use at the worker's threads, so workers x threads <= cores holds.
        self._compute_lock = threading.Lock()
        # Where the forward pass runs ("cpu", "cuda:0"), set by _load: every reply says it.
        self._device: str | None = None

    @property
    def device(self) -> str | None:
        return self._device

    @property
    def ready(self) -> bool:
        """True once the model is loaded and warmed up; readiness probes read this."""
        return self._settled.is_set() and self._served is not None

    @property
    def load_error(self) -> str | None:
        """Why loading failed, or None."""
        return self._load_error

    def _load(self) -> tuple[object, str]:
        """Loads and warms up the model; returns it and a line for the log."""
        raise NotImplementedError

    def _prepare(self, images: np.ndarray) -> object:
        return images

    def _run(self, served: object, prepared: object) -> np.ndarray:
        raise NotImplementedError

    def load(self) -> None:
        """Loads and warms up, then sets `ready`.

        A failure is logged and kept in `load_error` (readiness then stays 503 and says
        why) instead of being raised into a background thread where nobody would see it.
        """
        try:
            started = time.perf_counter()
            served, what = self._load()
            # What the load left (the framework's modules, the model, the warm-up's
            # caches) lives as long as the worker: frozen out of the collector's reach,
            # a full collection scans only what requests leave. Measured before it
            # (flask_tf, wrk at 32 connections): full collections of 13-244 ms, one
            # every few runs of 5 s, each a pause of every request in flight.
            gc.collect()
            gc.freeze()
            self._served = served
            log.info("%s in %.2f s", what, time.perf_counter() - started)
        except Exception as err:  # noqa: BLE001 - reported through readiness, see docstring
            self._load_error = f"{type(err).__name__}: {err}"
            log.exception("model %s failed to load", self.settings.model_path)
        finally:
            self._settled.set()

    def wait_ready(self, timeout_s: float) -> bool:
        """Blocks until loading has finished (or `timeout_s` passed); returns `ready`."""
        self._settled.wait(timeout_s)
        return self.ready

    def predict_timed(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        """Logits for float32 [N, side, side] images, and the seconds the forward pass took
        (measured inside the lock: compute only, not the wait for a sibling thread).

        Raises:
            ModelNotReady: if the model is not loaded.
        """
        served = self._served
        if served is None:
            raise ModelNotReady(self._load_error or "model is still loading")
        prepared = self._prepare(np.ascontiguousarray(images, dtype=np.float32))
        with self._compute_lock:
            started = time.perf_counter()
            logits = self._run(served, prepared)
            elapsed = time.perf_counter() - started
        return logits, elapsed

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Logits float32 [N, classes] for float32 [N, side, side] images."""
        return self.predict_timed(images)[0]

    def _check_shape(self, logits_shape: tuple, batch: int) -> None:
        expected = (batch, self.settings.spec.num_classes)
        if tuple(logits_shape) != expected:
            raise ValueError(f"model returns shape {tuple(logits_shape)} for {batch} images, "
                             f"expected {expected}: wrong model file?")

    def _warmup_batches(self) -> list[int]:
        # Both ends of the allowed batch range, so neither the first single-image request
        # nor the first full batch pays for the framework's first-run work.
        return sorted({1, self.settings.limits.max_batch}) * self.settings.warmup_iterations


class TorchScriptModel(BackgroundLoadedModel):
    """A TorchScript file served on one device, safe to call from gunicorn's threads."""

    def __init__(self, settings: Settings, loader: Loader = load_torchscript) -> None:
        super().__init__(settings)
        self._loader = loader

    def _load(self) -> tuple[object, str]:
        device = select_device(self.settings.device, torch.cuda.is_available())
        # Process-wide: torch applies it to each thread on that thread's first parallel op,
        # and request threads run none before the model is ready.
        torch.set_num_threads(self.settings.torch_threads)
        module = self._loader(self.settings.model_path, device)
        side = self.settings.spec.side
        with torch.inference_mode():
            for batch in self._warmup_batches():
                self._check_shape(module(torch.zeros((batch, side, side), device=device)).shape,
                                  batch)  # fmt: skip
        self._device = device
        return module, (f"model {self.settings.model_path} loaded on {device} with "
                        f"{torch.get_num_threads()} torch thread(s)")

    def _prepare(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images)

    def _run(self, served, prepared: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return served(prepared.to(self._device)).cpu().numpy()
