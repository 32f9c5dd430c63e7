"""GPU telemetry in a cluster from the DCGM exporter (loadtests/dcgm.py): its Prometheus
text read with pod mapping, and the sampler against a small exporter on 127.0.0.1 whose
figures change between scrapes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from loadtests import dcgm, runner
from loadtests.gpu_telemetry import GpuDevice, GpuSampler, gpu_summary
from loadtests.runner import Target
from tests.http_fixture import base_url, serving

NAMESPACE = "digitnet-serving"


def exporter_text(util: float, pod: str = "torchserve-7d9f-abcde") -> str:
    """What dcgm-exporter 3.x serves with Kubernetes pod mapping: one GPU of the
    torchserve pod, one of another namespace's pod."""
    lines = []
    for name, value in (("DCGM_FI_DEV_GPU_UTIL", util), ("DCGM_FI_DEV_MEM_COPY_UTIL", 12),
                        ("DCGM_FI_DEV_FB_USED", 2048), ("DCGM_FI_DEV_FB_FREE", 79000),
                        ("DCGM_FI_DEV_POWER_USAGE", 250.5), ("DCGM_FI_DEV_SM_CLOCK", 1980),
                        ("DCGM_FI_DEV_MEM_CLOCK", 2619)):
        lines += [f"# HELP {name} x", f"# TYPE {name} gauge"]
        for gpu, uuid, where, who in ((0, "GPU-aaa", NAMESPACE, pod),
                                      (1, "GPU-bbb", "other", "someone-else-0")):
            lines.append(
                f'{name}{{gpu="{gpu}",UUID="{uuid}",device="nvidia{gpu}",'
                f'modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",'
                f'DCGM_FI_DRIVER_VERSION="570.86.15",container="server",'
                f'namespace="{where}",pod="{who}"}} {value}')
    return "\n".join(lines) + "\n"


def test_the_exporters_text_gives_the_gpus_of_the_servers_pods() -> None:
    devices, values, driver = dcgm.parse(exporter_text(87), NAMESPACE, "torchserve-")
    assert list(devices) == ["GPU-aaa"] and driver == "570.86.15"
    (device,) = devices.values()
    assert device.index == 0 and device.name == "NVIDIA H100 80GB HBM3"
    assert device.memory_total_mib == 2048 + 79000
    assert values["GPU-aaa"] == {"util_pct": 87, "memory_util_pct": 12, "memory_used_mib": 2048,
                                 "power_w": 250.5, "sm_clock_mhz": 1980,
                                 "memory_clock_mhz": 2619}
    assert dcgm.parse(exporter_text(87), NAMESPACE, "flask-torch-")[0] == {}


@pytest.fixture
def exporter() -> Iterator[tuple[str, list[float]]]:
    """A DCGM exporter on loopback whose utilization is the last value of the list."""
    utils = [40.0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = exporter_text(utils[-1]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as httpd:
        yield f"{base_url(httpd)}/metrics", utils


def test_the_sampler_keeps_each_refresh_once_and_summarizes_like_nvml(exporter) -> None:
    url, utils = exporter
    with dcgm.DcgmSampler(url, NAMESPACE, "torchserve-", interval_s=0.05) as sampler:
        time.sleep(0.3)
        utils.append(90.0)  # the exporter refreshed
        time.sleep(0.3)
    block = sampler.summary()
    assert block["reason"] is None and block["source"] == url
    assert block["driver_version"] == "570.86.15"
    (gpu,) = block["gpus"]
    assert gpu["samples"] == 2  # repeated readings of one refresh are kept once
    assert gpu["util_mean_pct"] == 65.0 and gpu["util_max_pct"] == 90.0
    assert gpu["memory_max_mib"] == 2048 and gpu["power_mean_w"] == 250.5
    # The same figures as a local NVML point's.
    assert set(gpu) == set(gpu_summary(GpuDevice(0, "x", "GPU-x", None), []))


def test_an_exporter_without_the_servers_gpus_or_unreachable_says_why(exporter) -> None:
    url, _ = exporter
    with dcgm.DcgmSampler(url, NAMESPACE, "ray-serve-", interval_s=0.05) as sampler:
        time.sleep(0.15)
    assert "lists no GPU of pods ray-serve-*" in sampler.summary()["reason"]
    with dcgm.DcgmSampler("http://127.0.0.1:9/metrics", NAMESPACE, "torchserve-",
                          interval_s=0.05) as sampler:
        time.sleep(0.15)
    block = sampler.summary()
    assert "could not be read" in block["reason"] and block["gpus"] == []


def test_a_pods_cuda_point_is_sampled_through_the_exporter_when_one_is_named(monkeypatch):
    remote = Target("torchserve", "rest", "http://torchserve:8080", {}, None, device="cuda")
    monkeypatch.delenv(dcgm.DCGM_URL_ENV, raising=False)
    assert runner.gpu_sampler(remote) is None
    assert dcgm.DCGM_URL_ENV in runner.gpu_fields(remote, None)["gpu"]["reason"]
    monkeypatch.setenv(dcgm.DCGM_URL_ENV, "http://dcgm:9400/metrics")
    monkeypatch.setenv(dcgm.NAMESPACE_ENV, "bench")
    sampler = runner.gpu_sampler(remote)
    assert isinstance(sampler, dcgm.DcgmSampler)
    assert (sampler.pod_prefix, sampler.namespace) == ("torchserve-", "bench")
    local = Target("flask_torch", "rest", "http://127.0.0.1:8000", {}, 1234, device="cuda")
    assert isinstance(runner.gpu_sampler(local), GpuSampler)
    assert runner.gpu_sampler(Target("x", "rest", "http://x:1", {}, None)) is None  # CPU
