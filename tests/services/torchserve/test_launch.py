"""The local launcher's pure parts: thread plan, properties parsing, derived config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import ModelSpec
from services.cores import CoreSplit
from services.process import ServerProcess
from services.torchserve.launch import (
    CONFIG_TEMPLATE,
    DECODE_INPUT_ENV,
    STACK,
    THREADS_ENV,
    WORKERS_ENV,
    decode_input_request,
    derive_config,
    local_overrides,
    model_store,
    plan_for,
    read_properties,
    read_tokens,
)

PORTS = {"inference": 18080, "management": 18081, "metrics": 18082,
         "grpc_inference": 17070, "grpc_management": 17071}


@pytest.mark.parametrize(
    ("cores", "workers", "plan"),
    [
        (1, None, CoreSplit(1, 1)),
        (2, None, CoreSplit(2, 1)),
        (4, "2", CoreSplit(2, 2)),
        (3, "2", CoreSplit(2, 1)),
    ],
)
def test_worker_plan_follows_the_shared_rule(monkeypatch, cores, workers, plan) -> None:
    if workers is None:
        monkeypatch.delenv(WORKERS_ENV, raising=False)
    else:
        monkeypatch.setenv(WORKERS_ENV, workers)
    assert plan_for(list(range(cores))) == plan


@pytest.mark.parametrize("workers", ["8", "0"])
def test_worker_override_that_does_not_fit_is_refused_not_clamped(monkeypatch, workers) -> None:
    # One rule for every stack (services.cores): asked-for counts run as asked, or fail.
    monkeypatch.setenv(WORKERS_ENV, workers)
    with pytest.raises(ValueError, match="workers"):
        plan_for([0, 1])


def test_stack_shape() -> None:
    assert STACK.name == "torchserve"
    assert dict(STACK.default_ports) == {"inference": 8080, "management": 8081,
                                         "metrics": 8082, "grpc_inference": 7070,
                                         "grpc_management": 7071}


def test_read_properties_handles_comments_escapes_and_refuses_continuations() -> None:
    text = "# comment\n! also\n\nkey = value \npath=a\\\\b\\.c\nempty=\n"
    assert read_properties(text) == {"key": "value", "path": "a\\b.c", "empty": ""}
    with pytest.raises(ValueError, match="line 1"):
        read_properties("key=first \\\n  second\n")
    with pytest.raises(ValueError, match="line 2"):
        read_properties("a=1\njust-a-word\n")


def test_derived_config_rebinds_to_loopback_and_keeps_security(tmp_path: Path) -> None:
    store_root = tmp_path / "art+(x)"
    paths = ArtifactPaths(store_root, ModelSpec())
    template = CONFIG_TEMPLATE.read_text()
    derived = read_properties(
        derive_config(template, local_overrides(paths, PORTS, CoreSplit(2, 1)))
    )
    production = read_properties(template)

    for key, name in (("inference_address", "inference"), ("management_address", "management"),
                      ("metrics_address", "metrics")):
        url = urlsplit(derived[key])
        assert (url.hostname, url.port) == ("127.0.0.1", PORTS[name])
    assert derived["grpc_inference_address"] == derived["grpc_management_address"] == "127.0.0.1"
    assert derived["grpc_inference_port"] == "17070"
    assert derived["grpc_management_port"] == "17071"
    assert derived["model_store"] == str(model_store(paths).resolve())
    assert derived["default_workers_per_model"] == "2"
    # The store path holds regex metacharacters; they must stay literal.
    pattern = re.compile(derived["allowed_urls"], re.IGNORECASE)
    assert pattern.fullmatch(f"file://{model_store(paths).resolve()}/digitnet.mar")
    assert not pattern.fullmatch("file:///elsewhere/digitnet.mar")
    unchanged = set(production) - set(local_overrides(paths, PORTS, CoreSplit(2, 1)))
    assert {"disable_token_authorization", "enable_model_api",
            "token_expiration_min", "decode_input_request"} <= unchanged
    # Generated from the spec: with the default environment, the committed values.
    assert derived["max_request_size"] == production["max_request_size"]
    assert derived["models"] == production["models"]
    assert {key: derived[key] for key in unchanged} == {key: production[key] for key in unchanged}


def test_derive_config_appends_unknown_keys_and_keeps_comments() -> None:
    derived = derive_config("# why\na=1\n", {"a": "2", "b": "3"})
    assert derived.startswith("# why\na=2\n")
    assert read_properties(derived) == {"a": "2", "b": "3"}


def test_read_tokens(tmp_path: Path) -> None:
    keys = {"management": {"key": "m", "expiration time": "x"},
            "inference": {"key": "i", "expiration time": "x"}, "API": {"key": "a"}}
    (tmp_path / "key_file.json").write_text(json.dumps(keys))
    tokens = read_tokens(tmp_path)
    assert (tokens.inference, tokens.management, tokens.api) == ("i", "m", "a")


def test_start_refuses_a_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="digitnet.mar"):
        STACK.start(ArtifactPaths(tmp_path, ModelSpec()), tmp_path / "run", PORTS)


def test_start_refuses_a_run_dir_too_deep_for_worker_sockets(
    tmp_path: Path, artifacts: ArtifactPaths
) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(ValueError, match="socket"):
        STACK.start(artifacts, deep, PORTS)


def test_the_plugin_names_the_handlers_own_variables():
    # The plugin must import without torch, so it spells them again; they must agree.
    from services.torchserve import handler, launch

    assert launch.THREADS_ENV == handler.THREADS_ENV
    assert launch.STACK.warmup_off_env == {handler.WARMUP_ENV: "0"}


def test_the_noop_twin_is_loaded_beside_the_model_under_the_same_registration(
    tmp_path: Path,
) -> None:
    paths = ArtifactPaths(tmp_path, ModelSpec())
    plain = local_overrides(paths, PORTS, CoreSplit(2, 1))
    twin = local_overrides(paths, PORTS, CoreSplit(2, 1), noop=True)

    assert plain["load_models"] == "digitnet=digitnet.mar"
    assert twin["load_models"] == "digitnet=digitnet.mar,digitnet_noop=digitnet_noop.mar"
    assert set(json.loads(plain["models"])) == {"digitnet"}
    models = json.loads(twin["models"])
    # Same workers, batching and timeout: only the archive differs.
    assert models["digitnet_noop"]["1"] == {**models["digitnet"]["1"],
                                            "marName": "digitnet_noop.mar"}  # fmt: skip
    pattern = re.compile(twin["allowed_urls"], re.IGNORECASE)
    assert pattern.fullmatch(f"file://{model_store(paths).resolve()}/digitnet_noop.mar")
    # The committed production config never loads it.
    assert read_properties(CONFIG_TEMPLATE.read_text())["load_models"] == "digitnet=digitnet.mar"


@pytest.mark.parametrize(("noop", "path"), [(False, None), (True, "/predictions/digitnet_noop")])
def test_the_twin_path_is_read_back_from_the_config_the_server_runs(
    tmp_path: Path, noop: bool, path: str | None
) -> None:
    paths = ArtifactPaths(tmp_path / "artifacts", ModelSpec())
    config = derive_config(CONFIG_TEMPLATE.read_text(),
                           local_overrides(paths, PORTS, CoreSplit(1, 1), noop))  # fmt: skip
    (tmp_path / "config.properties").write_text(config)
    server = ServerProcess("torchserve", pid=0, log_path=tmp_path / "torchserve.log")
    assert STACK.noop_path(server) == path
    assert STACK._model_name(server) == "digitnet"


def test_decode_input_request_is_the_configs_unless_the_environment_says(monkeypatch) -> None:
    monkeypatch.delenv(DECODE_INPUT_ENV, raising=False)
    assert decode_input_request() == read_properties(CONFIG_TEMPLATE.read_text())[
        "decode_input_request"] == "false"  # fmt: skip
    monkeypatch.setenv(DECODE_INPUT_ENV, "true")
    assert decode_input_request() == "true"


def test_the_handlers_environment_follows_the_cores_and_the_spec(artifacts) -> None:
    env = STACK.app_env(artifacts, [0], {"EXTRA": "1"})
    assert env[THREADS_ENV] == env["OMP_NUM_THREADS"] == "1"
    assert env["EXTRA"] == "1"
    assert all(env[name] == value for name, value in artifacts.spec.env().items())
