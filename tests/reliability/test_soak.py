"""The soak: a short run on every stack (zero errors, memory traced per role), and the
leak verdict checked on real processes that do and do not grow."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.lifecycle import RunningStack
from reliability.report import soak_markdown
from reliability.settings import SoakSettings
from reliability.soak import MemoryTrace, RoleSampler, memory_verdict, slope_mib_per_min, soak

# About 10 s per stack: long enough for a few hundred checked requests at a steady rate,
# short enough for CI. `make soak` runs 600 s.
SHORT = SoakSettings(rate=50.0, duration_s=8.0, warmup_s=2.0, sample_interval_s=0.5,
                     max_slope_mib_per_min=1.0, senders=4, request_timeout_s=10.0)
# Grows by 1 MiB every 50 ms (1200 MiB/min) and keeps it; the flat one only sleeps.
GROWING = ("import time\nkept = []\nfor _ in range(200):\n"
           "    kept.append(b\"x\" * 2**20); time.sleep(0.05)\ntime.sleep(30)")
FLAT = "import time\ntime.sleep(30)"


@pytest.mark.integration
def test_short_soak_answers_every_request_correctly(running: RunningStack) -> None:
    result = soak(running, SHORT)

    assert result["requests"] == round(SHORT.rate * SHORT.duration_s)
    assert result["failed"] == 0, result["outcomes"]
    assert result["outcomes"] == {"ok": result["requests"]}
    memory = result["memory"]
    assert memory["samples_after_warmup"] >= 3
    assert memory["slope_mib_per_min"] is not None
    assert memory["roles"], "no process of the server was sampled"
    row = soak_markdown({"runs": [result]})[4]
    assert row.startswith(f"| {running.name} | 50 | 8 | {result['requests']} | 0 |")


def sample_process(code: str, seconds: float) -> MemoryTrace:
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)  # past the interpreter's start-up
        with RoleSampler(proc.pid, interval_s=0.1) as sampler:
            time.sleep(seconds)
        return sampler.trace
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_a_growing_process_is_reported_as_a_leak() -> None:
    verdict = memory_verdict(sample_process(GROWING, 2.0), warmup_s=0.3,
                             max_slope=SHORT.max_slope_mib_per_min)
    assert not verdict["flat"]
    assert verdict["slope_mib_per_min"] > 100.0
    assert verdict["end_mib"] > verdict["start_mib"]


def test_a_process_that_does_not_grow_is_flat() -> None:
    verdict = memory_verdict(sample_process(FLAT, 1.5), warmup_s=0.3,
                             max_slope=SHORT.max_slope_mib_per_min)
    assert verdict["flat"], verdict


def test_slope_is_in_mib_per_minute_and_needs_three_samples() -> None:
    assert slope_mib_per_min([0.0, 30.0, 60.0], [100.0, 101.0, 102.0]) == pytest.approx(2.0)
    assert slope_mib_per_min([0.0, 1.0], [1.0, 2.0]) is None


def test_a_jvm_is_judged_by_its_live_heap_when_there_is_a_reading() -> None:
    times = [float(t) for t in range(60)]
    # The JVM's RSS grows 60 MiB/min (committed heap); the model worker stays flat.
    trace = MemoryTrace(times, {"jvm": [200 + t for t in times], "model worker": [500.0] * 60})
    live = {"after_warmup_mib": 70.0, "end_mib": 70.4, "slope_mib_per_min": 0.4}
    assert memory_verdict(trace, 0.0, 1.0, live)["flat"]
    leaking = {**live, "slope_mib_per_min": 5.0}
    assert memory_verdict(trace, 0.0, 1.0, leaking)["growing"] == ["JVM live heap after full GC"]
    # Without a live-heap reading the JVM's RSS is judged.
    assert memory_verdict(trace, 0.0, 1.0, None)["growing"] == ["JVM RSS"]


def test_warm_up_samples_are_left_out_of_the_verdict() -> None:
    # Start-up growth (model load) in the first 10 s, flat afterwards.
    times = [float(t) for t in range(60)]
    trace = MemoryTrace(times, {"worker": [min(t, 10.0) * 50 + 500 for t in times]})
    assert memory_verdict(trace, warmup_s=12.0, max_slope=1.0)["flat"]
    assert not memory_verdict(trace, warmup_s=0.0, max_slope=1.0)["flat"]
