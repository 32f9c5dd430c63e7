"""Sustained load: a fixed arrival rate for a long while, errors counted and memory watched.

Every `sample_interval_s` the resident memory of each process in the server's tree is
read, grouped by role (e.g. TorchServe's JVM frontend vs its Python workers). After the
warm-up, a least-squares line through the total RSS gives its slope in MiB per minute.

Verdict: zero failed requests (every reply checked against the answer key) and memory
growing at most `max_slope_mib_per_min`; otherwise the report names what grew and by how
much. A JVM (TorchServe's frontend) is judged by its live heap after a full GC, read with
`jcmd` once after the warm-up and once at the end: its RSS measures the heap it has
committed, which G1 grows towards MaxRAMPercentage of the machine's memory long before it
needs to collect, so RSS growth alone does not tell a leak. Every other process is judged
by its RSS. Without `jcmd` the JVM's RSS is judged too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import psutil

from harness.lifecycle import RunningStack
from reliability.client import endpoint_of
from reliability.load import latency_ms, outcome_counts, run_open_loop
from reliability.settings import SoakSettings
from services.stack import ServingStack

MIB = 2**20
JVM_ROLE = "jvm"
JCMD_TIMEOUT_S = 60.0


def process_role(proc: psutil.Process, stack: ServingStack | None = None) -> str:
    """A short name for what a server process is: the stack plugin's name for it (a
    TorchServe worker, a gunicorn master), else "jvm" for any JVM (judged by its live
    heap, see the module docstring), else the process name."""
    try:
        role = stack.process_role(proc) if stack is not None else None
        if role:
            return role
        name = proc.name()
    except psutil.Error:
        return "gone"
    return JVM_ROLE if name == "java" else name


def jvm_live_heap_mib(pid: int) -> float | None:
    """The JVM's heap in use right after a full GC (`jcmd GC.run`, then `GC.heap_info`),
    in MiB; None without jcmd or when its answer cannot be read."""
    jcmd = shutil.which("jcmd")
    if jcmd is None:
        return None
    try:
        subprocess.run([jcmd, str(pid), "GC.run"], capture_output=True,
                       timeout=JCMD_TIMEOUT_S, check=True)
        info = subprocess.run([jcmd, str(pid), "GC.heap_info"], capture_output=True,
                              text=True, timeout=JCMD_TIMEOUT_S, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    match = re.search(r"heap\s+total \d+K, used (\d+)K", info)
    return int(match[1]) / 1024 if match else None


class LiveHeapProbe:
    """Reads the live heap of every JVM in a process tree now and again `later_s` from now."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.readings: list[tuple[float, float]] = []  # (monotonic time, MiB)

    def _jvm_pids(self) -> list[int]:
        try:
            tree = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p.pid for p in tree if process_role(p) == JVM_ROLE]

    def read(self) -> None:
        pids = self._jvm_pids()
        values = [jvm_live_heap_mib(pid) for pid in pids]
        if pids and all(v is not None for v in values):
            self.readings.append((time.monotonic(), float(sum(values))))

    def summary(self) -> dict | None:
        if len(self.readings) < 2:
            return None
        (t0, first), (t1, last) = self.readings[0], self.readings[-1]
        return {"after_warmup_mib": first, "end_mib": last,
                "slope_mib_per_min": (last - first) / ((t1 - t0) / 60.0) if t1 > t0 else None}


@dataclass
class MemoryTrace:
    """Timestamps (s since start) and RSS in MiB per role; `total` sums the roles."""

    times_s: list[float] = field(default_factory=list)
    by_role: dict[str, list[float]] = field(default_factory=dict)

    @property
    def total(self) -> list[float]:
        if not self.by_role:
            return []
        return [float(sum(values)) for values in zip(*self.by_role.values(), strict=True)]


class RoleSampler:
    """Samples RSS of a process tree per role in a background thread."""

    def __init__(self, pid: int, interval_s: float,
                 role: Callable[[psutil.Process], str] = process_role) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.role = role
        self.trace = MemoryTrace()
        self._roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def sample(self) -> dict[str, float]:
        rss: dict[str, float] = {}
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return rss
        for proc in procs:
            try:
                # Roles are looked up once per pid: a pid's role does not change.
                role = self._roles.setdefault(proc.pid, self.role(proc))
                rss[role] = rss.get(role, 0.0) + proc.memory_info().rss / MIB
            except psutil.Error:
                continue
        return rss

    def _record(self) -> None:
        rss = self.sample()
        count = len(self.trace.times_s)
        for role in rss.keys() - self.trace.by_role.keys():
            self.trace.by_role[role] = [0.0] * count
        for role, values in self.trace.by_role.items():
            values.append(rss.get(role, 0.0))
        self.trace.times_s.append(time.monotonic() - self._started)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._record()

    def __enter__(self) -> RoleSampler:
        self._started = time.monotonic()
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def slope_mib_per_min(times_s: list[float], rss_mib: list[float]) -> float | None:
    """Least-squares slope of RSS against time, in MiB per minute (None: < 3 samples)."""
    if len(times_s) < 3:
        return None
    slope_per_s = np.polyfit(np.asarray(times_s), np.asarray(rss_mib), 1)[0]
    return float(slope_per_s * 60.0)


def memory_verdict(trace: MemoryTrace, warmup_s: float, max_slope: float,
                   live_heap: dict | None = None) -> dict:
    """Slopes after warm-up: of the total RSS, of each role, and the judged ones: the RSS
    of everything but the JVM, and the JVM's live heap (`live_heap`, from LiveHeapProbe)
    or its RSS when there is no such reading. `flat` when every judged slope is at most
    `max_slope` MiB/min; `growing` names the judged parts above it."""
    keep = [i for i, t in enumerate(trace.times_s) if t >= warmup_s]
    times = [trace.times_s[i] for i in keep]
    total = [trace.total[i] for i in keep]
    roles = {}
    for role, values in sorted(trace.by_role.items()):
        kept = [values[i] for i in keep]
        roles[role] = {
            "slope_mib_per_min": slope_mib_per_min(times, kept),
            "start_mib": kept[0] if kept else None,
            "end_mib": kept[-1] if kept else None,
        }
    jvm = [trace.by_role[JVM_ROLE][i] for i in keep] if JVM_ROLE in trace.by_role else None
    judged: dict[str, float | None] = {
        "RSS without the JVM" if jvm else "RSS": slope_mib_per_min(
            times, [t - j for t, j in zip(total, jvm, strict=True)] if jvm else total),
    }
    if jvm:
        if live_heap and live_heap.get("slope_mib_per_min") is not None:
            judged["JVM live heap after full GC"] = live_heap["slope_mib_per_min"]
        else:
            judged["JVM RSS"] = roles[JVM_ROLE]["slope_mib_per_min"]
    growing = [name for name, slope in judged.items() if slope is None or slope > max_slope]
    return {
        "samples_after_warmup": len(keep),
        "slope_mib_per_min": slope_mib_per_min(times, total),
        "max_slope_mib_per_min": max_slope,
        "start_mib": total[0] if total else None,
        "end_mib": total[-1] if total else None,
        "peak_mib": max(trace.total, default=None),
        "roles": roles,
        "jvm_live_heap": live_heap,
        "judged_slopes": judged,
        "growing": growing,
        "flat": bool(keep) and not growing,
    }


def soak(running: RunningStack, settings: SoakSettings, progress: bool = False) -> dict:
    """Runs the open loop at `settings.rate` for `settings.duration_s` against `running`."""

    def tick(elapsed: float) -> None:
        if progress and int(elapsed) % 30 == 0:
            print(f"soak {running.name}: {elapsed:5.0f} / {settings.duration_s:.0f} s",
                  flush=True)

    heap = LiveHeapProbe(running.server.pid)
    # The first live-heap reading when the warm-up ends (its full GC is one short pause).
    first_reading = threading.Timer(settings.warmup_s, heap.read)
    with RoleSampler(running.server.pid, settings.sample_interval_s,
                     lambda proc: process_role(proc, running.stack)) as sampler:
        first_reading.start()
        try:
            samples = run_open_loop(endpoint_of(running), running.payloads(), settings.rate,
                                    settings.duration_s, settings.senders,
                                    settings.request_timeout_s, on_tick=tick)
        finally:
            first_reading.cancel()
            first_reading.join()
        heap.read()
    memory = memory_verdict(sampler.trace, settings.warmup_s, settings.max_slope_mib_per_min,
                            heap.summary())
    failed = [s for s in samples if not s.ok]
    span = max(s.end_s for s in samples) - min(s.start_s for s in samples)
    return {
        "stack": running.name,
        "rate": settings.rate,
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "requests": len(samples),
        "achieved_rps": len(samples) / span if span > 0 else None,
        "outcomes": outcome_counts(samples),
        "failed": len(failed),
        "latency": latency_ms(samples),
        "memory": memory,
        "trace": {"times_s": [round(t, 2) for t in sampler.trace.times_s],
                  "by_role": {r: [round(v, 1) for v in values]
                              for r, values in sampler.trace.by_role.items()}},
        "passed": not failed and memory["flat"],
        "errors": sorted({s.error for s in failed})[:5],
    }
