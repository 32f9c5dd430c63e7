"""TorchScriptModel on its own: threads, warm-up checks and load failures."""

from __future__ import annotations

import dataclasses
import gc
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from digitnet.data import DigitsSplit
from digitnet.spec import ModelSpec
from digitnet.torch_net import DigitConvNet
from digitnet.torchscript import export_torchscript, load_torchscript
from services.flask_torch.predictor import ModelNotReady, TorchScriptModel
from services.flask_torch.settings import Settings


def test_nothing_is_loaded_until_load(settings: Settings, split: DigitsSplit) -> None:
    model = TorchScriptModel(settings)
    assert not model.ready
    with pytest.raises(ModelNotReady, match="loading"):
        model.predict(split.test_images[:1])


def test_load_sets_torch_threads_for_every_thread_and_predicts_the_real_logits(
    settings: Settings, split: DigitsSplit
) -> None:
    model = TorchScriptModel(dataclasses.replace(settings, torch_threads=2))
    # Loaded on one thread, as create_app does; requests run on gunicorn's other threads.
    loader = threading.Thread(target=model.load)
    loader.start()
    loader.join()
    seen_by_request_thread: list[int] = []
    request_thread = threading.Thread(
        target=lambda: seen_by_request_thread.append(torch.get_num_threads())
    )
    request_thread.start()
    request_thread.join()
    try:
        assert model.ready, model.load_error
        assert model.device == "cpu"
        assert seen_by_request_thread == [2]
        images = split.test_images[:5]
        with torch.inference_mode():
            expected = load_torchscript(settings.model_path)(torch.from_numpy(images)).numpy()
        np.testing.assert_allclose(model.predict(images), expected, atol=1e-6)
    finally:
        torch.set_num_threads(settings.torch_threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cuda_requested_on_a_cpu_machine_fails_the_load_with_the_reason(
    settings: Settings,
) -> None:
    model = TorchScriptModel(dataclasses.replace(settings, device="cuda"))
    model.load()
    assert not model.ready
    assert "CUDA is not available" in (model.load_error or "")


def test_model_of_the_wrong_size_fails_the_warm_up(settings: Settings, tmp_path: Path) -> None:
    # A real model with a different head: loads fine, but its output would not match the spec.
    other = export_torchscript(
        DigitConvNet(ModelSpec(num_classes=3)), tmp_path / "three-classes.pt"
    )
    model = TorchScriptModel(dataclasses.replace(settings, model_path=other))
    model.load()
    assert not model.ready
    assert "wrong model file" in (model.load_error or "")


def test_what_the_load_leaves_is_frozen_out_of_the_collectors_reach(
    settings: Settings, split: DigitsSplit
) -> None:
    """The loaded model and everything alive then move to the permanent generation, so a
    full collection under load scans only what requests leave behind."""
    gc.unfreeze()
    try:
        model = TorchScriptModel(settings)
        model.load()
        assert model.ready, model.load_error
        assert gc.get_freeze_count() > 0
        assert gc.is_tracked(model)  # an object the collector follows, frozen now
        tracked = {id(o) for o in gc.get_objects()}
        assert id(model) not in tracked  # frozen objects are out of every generation
        assert model.predict(split.test_images[:1]).shape == (1, settings.spec.num_classes)
    finally:
        gc.unfreeze()
