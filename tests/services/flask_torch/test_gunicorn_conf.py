"""gunicorn.conf.py read the way gunicorn reads it: every name a real gunicorn setting,
the numbers derived from the cores."""

from __future__ import annotations

import os
import runpy
import types

import pytest
from gunicorn.config import Config

from services.flask_torch.launch import GUNICORN_CONF


def load_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in ("FLASK_TORCH_WORKERS", "FLASK_TORCH_THREADS", "FLASK_TORCH_BIND"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(GUNICORN_CONF))
    return {k: v for k, v in namespace.items() if not k.startswith("_") and k.islower()}


def test_every_name_is_a_gunicorn_setting_with_a_valid_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = load_conf(monkeypatch)
    settings = {k: v for k, v in conf.items()
                if not callable(v) and not isinstance(v, types.ModuleType)}
    gunicorn_config = Config()
    unknown = sorted(set(settings) - set(gunicorn_config.settings))
    assert not unknown, f"not gunicorn settings (typo?): {unknown}"
    for name, value in settings.items():
        gunicorn_config.set(name, value)  # runs gunicorn's own validator
    assert gunicorn_config.worker_class_str == "gevent"
    assert gunicorn_config.preload_app is False
    assert gunicorn_config.control_socket_disable is True


def test_defaults_bind_loopback_and_split_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_conf(monkeypatch)
    cores = len(os.sched_getaffinity(0))
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["workers"] == cores
    assert conf["raw_env"] == ["FLASK_TORCH_THREADS=1"]


def test_env_overrides_reach_bind_workers_and_torch_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = load_conf(
        monkeypatch, FLASK_TORCH_BIND="0.0.0.0:9000", FLASK_TORCH_WORKERS="1",
        FLASK_TORCH_THREADS="1",
    )  # fmt: skip
    assert conf["bind"] == ["0.0.0.0:9000"]
    assert conf["workers"] == 1
    assert conf["raw_env"] == ["FLASK_TORCH_THREADS=1"]


def test_oversubscribing_overrides_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match="exceeds"):
        load_conf(monkeypatch, FLASK_TORCH_WORKERS=str(cores), FLASK_TORCH_THREADS="2")
