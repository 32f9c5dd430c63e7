"""Settings defaults and env overrides, the worker/thread split, and device selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitnet.spec import ModelSpec, ServingLimits
from services.cores import CoreSplit
from services.flask_torch.settings import (
    DEFAULT_MODEL_PATH,
    Settings,
    parallelism_from_env,
    select_device,
)

ENV_NAMES = [
    "FLASK_TORCH_MODEL_PATH",
    "FLASK_TORCH_THREADS",
    "FLASK_TORCH_WORKERS",
    "FLASK_TORCH_DEVICE",
    "FLASK_TORCH_WARMUP_ITERATIONS",
    "FLASK_TORCH_LOAD_WAIT_S",
    "DIGITNET_NAME",
    "DIGITNET_MAX_BATCH",
    "DIGITNET_MAX_BODY_BYTES",
]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_without_variables_gives_the_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.model_path == DEFAULT_MODEL_PATH
    assert DEFAULT_MODEL_PATH == Path("artifacts/torchscript/digitnet.torchscript.pt")
    assert settings.spec == ModelSpec()
    assert settings.limits == ServingLimits()
    assert (settings.torch_threads, settings.device) == (1, "cpu")


def test_every_setting_follows_its_environment_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_MODEL_PATH", "/models/x.pt")
    clean_env.setenv("FLASK_TORCH_THREADS", "3")
    clean_env.setenv("FLASK_TORCH_DEVICE", "auto")
    clean_env.setenv("FLASK_TORCH_WARMUP_ITERATIONS", "0")
    clean_env.setenv("FLASK_TORCH_LOAD_WAIT_S", "2.5")
    clean_env.setenv("DIGITNET_NAME", "digits-big")
    clean_env.setenv("DIGITNET_MAX_BATCH", "8")
    clean_env.setenv("DIGITNET_MAX_BODY_BYTES", "1000")
    settings = Settings.from_env()
    assert settings.model_path == Path("/models/x.pt")
    assert settings.torch_threads == 3
    assert settings.device == "auto"
    assert settings.warmup_iterations == 0
    assert settings.load_wait_s == 2.5
    assert settings.spec.name == "digits-big"
    assert (settings.limits.max_batch, settings.limits.max_body_bytes) == (8, 1000)


def test_default_model_path_follows_the_model_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DIGITNET_NAME", "digits-big")
    model_path = Settings.from_env().model_path
    assert model_path == Path("artifacts/torchscript/digits-big.torchscript.pt")


def test_non_integer_variable_is_an_error_naming_it(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_THREADS", "two")
    with pytest.raises(ValueError, match="FLASK_TORCH_THREADS"):
        Settings.from_env()


@pytest.mark.parametrize(
    "field, value",
    [("torch_threads", 0), ("warmup_iterations", -1), ("load_wait_s", -1.0)],
)
def test_invalid_values_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})


def test_parallelism_from_env_uses_the_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("FLASK_TORCH_THREADS", "2")
    assert parallelism_from_env(8) == CoreSplit(4, 2)
    clean_env.setenv("FLASK_TORCH_WORKERS", "3")
    assert parallelism_from_env(8) == CoreSplit(3, 2)
    clean_env.setenv("FLASK_TORCH_WORKERS", "8")
    with pytest.raises(ValueError, match="FLASK_TORCH_WORKERS or FLASK_TORCH_THREADS"):
        parallelism_from_env(8)


@pytest.mark.parametrize(
    "requested, cuda_available, expected",
    [
        ("cpu", False, "cpu"),
        ("cpu", True, "cpu"),
        ("CPU", False, "cpu"),
        ("auto", False, "cpu"),
        ("auto", True, "cuda"),
        ("cuda", True, "cuda"),
        ("cuda:1", True, "cuda:1"),
    ],
)
def test_select_device(requested: str, cuda_available: bool, expected: str) -> None:
    assert select_device(requested, cuda_available) == expected


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda_is_an_error_not_a_silent_fallback(requested: str) -> None:
    with pytest.raises(ValueError, match="CUDA is not available.*auto"):
        select_device(requested, cuda_available=False)


@pytest.mark.parametrize("requested", ["gpu", "cuda:x", "mps", ""])
def test_unknown_device_is_an_error(requested: str) -> None:
    with pytest.raises(ValueError, match="device must be"):
        select_device(requested, cuda_available=True)
