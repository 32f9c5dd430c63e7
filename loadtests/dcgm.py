"""GPU telemetry in a cluster: NVIDIA's DCGM exporter, scraped while a load point runs.

The load generator's pod cannot open NVML on the servers' GPUs (they are other pods, often
other nodes), but the GPU operator runs the DCGM exporter on every GPU node, and its
Prometheus metrics carry, with Kubernetes pod mapping on (the operator's default), the
`namespace` and `pod` each GPU is allocated to. A CUDA point in the cluster
(loadtests.cluster, `--dcgm-url` or LOADTEST_DCGM_URL) scrapes it every `interval_s` and
keeps the GPUs of its server's pods, the same block gpu_telemetry.GpuSampler writes
locally: utilization, memory, power and clocks per GPU.

The exporter refreshes its figures every `-c` ms (30 000 by default): run it with
`-c 1000` (the operator's `dcgmExporter.args`), or a 10 s window sees one or two values.
Repeated readings with the same exporter timestamp are kept once.

Nothing here raises: where the exporter cannot be reached or has no GPU of the server's
pods, the block's `reason` says so and its `gpus` list is empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.gpu_telemetry import GpuDevice, GpuSample, gpu_summary, unsampled

DCGM_URL_ENV = "LOADTEST_DCGM_URL"
# The servers' namespace: the pod's own (the manifest's downward API), else the project's.
NAMESPACE_ENV = "POD_NAMESPACE"
DEFAULT_NAMESPACE = "digitnet-serving"
INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 2.0
# DCGM field -> GpuSample field, with the factor to its unit.
FIELDS = {
    "DCGM_FI_DEV_GPU_UTIL": ("util_pct", 1.0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("memory_util_pct", 1.0),
    "DCGM_FI_DEV_FB_USED": ("memory_used_mib", 1.0),  # MiB
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),  # W
    "DCGM_FI_DEV_SM_CLOCK": ("sm_clock_mhz", 1.0),
    "DCGM_FI_DEV_MEM_CLOCK": ("memory_clock_mhz", 1.0),
}
FREE_FIELD = "DCGM_FI_DEV_FB_FREE"


def parse(text: str, namespace: str, pod_prefix: str
          ) -> tuple[dict[str, GpuDevice], dict[str, dict[str, float]], str | None]:
    """The exporter's text -> the GPUs allocated to pods named `pod_prefix`* in
    `namespace` (by UUID: the device, and field -> value), and the driver version."""
    devices: dict[str, GpuDevice] = {}
    values: dict[str, dict[str, float]] = {}
    free: dict[str, float] = {}
    driver = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") != namespace or not labels.get("pod", "").startswith(
                    pod_prefix):
                continue
            uuid = labels.get("UUID") or labels.get("uuid") or labels.get("gpu", "?")
            driver = driver or labels.get("DCGM_FI_DRIVER_VERSION")
            if sample.name == FREE_FIELD:
                free[uuid] = sample.value
            elif sample.name in FIELDS:
                field, factor = FIELDS[sample.name]
                values.setdefault(uuid, {})[field] = sample.value * factor
            else:
                continue
            if uuid not in devices:
                devices[uuid] = GpuDevice(int(labels.get("gpu", "0") or 0),
                                          labels.get("modelName", "?"), uuid, None)
    for uuid, device in devices.items():
        used = values.get(uuid, {}).get("memory_used_mib")
        if used is not None and uuid in free:
            devices[uuid] = GpuDevice(device.index, device.name, uuid, used + free[uuid])
    return devices, values, driver


class DcgmSampler:
    """Scrapes the DCGM exporter every `interval_s` in a background thread, keeping the
    GPUs of one server's pods; a context manager around a load point, summary() after."""

    def __init__(self, url: str, namespace: str, pod_prefix: str,
                 interval_s: float = INTERVAL_S,
                 get: Callable[..., requests.Response] = requests.get) -> None:
        self.url = url
        self.namespace = namespace
        self.pod_prefix = pod_prefix
        self.interval_s = interval_s
        self.devices: dict[str, GpuDevice] = {}
        self.samples: list[GpuSample] = []
        self.driver: str | None = None
        self.errors: list[str] = []
        self._get = get
        self._seen: set[tuple] = set()
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dcgm", daemon=True)

    def __enter__(self) -> DcgmSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._scrape()
            if self._stop.wait(self.interval_s):
                return

    def _scrape(self) -> None:
        try:
            reply = self._get(self.url, timeout=SCRAPE_TIMEOUT_S)
            reply.raise_for_status()
            devices, values, driver = parse(reply.text, self.namespace, self.pod_prefix)
        except (requests.RequestException, ValueError) as err:
            self.errors.append(str(err)[:200])
            return
        self.devices.update(devices)
        self.driver = self.driver or driver
        now = round(time.monotonic() - self._started, 3)
        for uuid, fields in values.items():
            key = (uuid, *sorted(fields.items()))
            if key in self._seen:  # the exporter has not refreshed since the last scrape
                continue
            self._seen.add(key)
            self.samples.append(GpuSample(
                t_s=now, index=devices[uuid].index,
                **{name: fields.get(name) for name, _ in FIELDS.values()}))  # fmt: skip

    def summary(self) -> dict:
        """The point's GPU block (gpu_telemetry's shape), `source` naming the exporter."""
        if not self.devices:
            why = (f"the DCGM exporter at {self.url} could not be read: {self.errors[-1]}"
                   if self.errors else
                   f"the DCGM exporter at {self.url} lists no GPU of pods {self.pod_prefix}* "
                   f"in namespace {self.namespace} (is its Kubernetes pod mapping on?)")
            return {**unsampled(why), "source": self.url}
        return {
            "reason": None, "interval_s": self.interval_s, "source": self.url,
            "driver_version": self.driver, "cuda_version": None,
            "gpus": [gpu_summary(device, [s for s in self.samples if s.index == device.index])
                     for device in self.devices.values()],
        }  # fmt: skip
