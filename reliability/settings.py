"""Every knob of the reliability runs, with its default visible here and an environment
variable to override it (the Makefile and the tests set some of them).

Durations are bounded on purpose: every loop here stops by itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from digitnet.env import env_float
from digitnet.spec import AdmissionPolicy

# Same root as the load-test results (loadtests.runner), one folder per kind of run.
RESULTS_ROOT = Path(os.environ.get("DIGITNET_RESULTS", "results"))
# How long a stack may take to become ready (TorchServe starts a JVM and its workers).
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class MatrixSettings:
    # After each hostile request the stack must be ready again within this long.
    health_timeout_s: float = 30.0
    # Per-request client timeout; a server that hangs on a bad request fails the cell.
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class FaultSettings:
    # Concurrent closed-loop clients while a worker is killed or SIGTERM arrives: enough to
    # keep every worker busy on a 2-core machine without saturating the client side.
    clients: int = 4
    # Load before the fault, so the fault lands on a warm, busy server.
    lead_s: float = 3.0
    # Load kept up after the service looks recovered, to catch late failures.
    tail_s: float = 3.0
    # Longest a recovery may take before the run is declared not recovered.
    recovery_timeout_s: float = 60.0
    # Per-request timeout of the load clients.
    request_timeout_s: float = 10.0
    # SIGTERM: how long the slow "in-flight" requests take to send their body. They are
    # started before the signal and finish sending after it, so they are surely in flight.
    inflight_body_s: float = 1.5
    inflight_requests: int = 2


@dataclass(frozen=True)
class SlowClientSettings:
    # Slow connections held open at once: more than gthread's 2 workers x 4 threads, so a
    # thread-per-connection server would be starved by them.
    slow_clients: int = 32
    # Each slow client sends one body byte this often (a "slow POST" attack).
    byte_interval_s: float = 0.25
    # How long normal clients measure while the slow ones trickle.
    duration_s: float = 6.0
    # A normal request slower than this counts as starved (timeout), not merely slow.
    request_timeout_s: float = 5.0
    normal_clients: int = 2


@dataclass(frozen=True)
class FloodSettings:
    # Issue 12's floods: keep-alive connections left idle after one request each, and
    # slow clients sending their body one byte per interval, each held while normal
    # clients run; then big-batch senders (the largest batch, and the largest body).
    idle_connections: int = 1000
    slow_clients: int = 200
    # 419 bytes of a batch-1 body at one byte per 0.5 s: no slow body completes in a run.
    byte_interval_s: float = 0.5
    big_clients: int = 16
    # Each phase (baseline, idle, slow, big) measures the normal clients this long.
    duration_s: float = 8.0
    normal_clients: int = 2
    request_timeout_s: float = 5.0
    # The normal clients' p99 under a connection flood may be at most this times baseline.
    max_p99_ratio: float = 2.0
    sample_interval_s: float = 0.25


@dataclass(frozen=True)
class SoakSettings:
    # Open-loop arrival rate: moderate, well under every stack's closed-loop peak here.
    rate: float = 100.0
    duration_s: float = 600.0
    # RSS before this is discarded: model load, JIT profiling runs and first GCs.
    warmup_s: float = 60.0
    sample_interval_s: float = 1.0
    # A leak verdict: RSS slope after warm-up above this. At 100 req/s, 1 MiB/min is about
    # 175 bytes kept per request: one leaked small object per request exceeds it, while
    # allocator and GC noise averages out over minutes. See reliability/README.md.
    max_slope_mib_per_min: float = 1.0
    # Client threads sending the scheduled requests (each waits for its reply).
    senders: int = 8
    request_timeout_s: float = 10.0


@dataclass(frozen=True)
class OverloadSettings:
    # Multiples of the stack's capacity, each held for phase_s (issue 12: 1.5x, 2x, 5x).
    levels: tuple[float, ...] = (1.5, 2.0, 5.0)
    phase_s: float = 20.0
    # After each level, this share of capacity for recovery_s: how fast it is normal again.
    recovery_fraction: float = 0.5
    recovery_s: float = 10.0
    # At recovery_fraction before the first level, not reported (a cold server's first
    # requests pay for lazy initialisation, and TorchServe's JVM compiles its hot paths:
    # after 2 s its first level, whichever multiple it was, had 62% goodput at 2x where
    # after 10 s it had 153%).
    warmup_s: float = 10.0
    # The p99 objective goodput is counted against: the one admission control derives its
    # bound from (digitnet.spec, equal to loadtests/profiles.py slo_p99_ms).
    objective_ms: float = AdmissionPolicy().objective_ms
    # Recovery is judged in windows this long: recovered once every later window has at
    # least recovered_share of its requests answered right within the objective.
    recovery_window_s: float = 0.5
    recovered_share: float = 0.99
    # Sender threads, one keep-alive connection each: at 5x capacity with replies of a
    # few ms, tens are in flight; more leave room for a server that holds requests long.
    senders: int = 128
    request_timeout_s: float = 5.0
    # The generator's own lateness p99 above which a level measures the generator (it
    # could not send at the offered rate), not the server: a tenth of the objective.
    max_generator_late_ms: float = 5.0
    # Without a bench run's capacity: a closed-loop peak with this many clients.
    capacity_clients: int = 8
    capacity_s: float = 5.0
    sample_interval_s: float = 0.5
    # After the Python generator, each level again from the independent C client
    # (reliability/openloop.c), shorter: check_phase_s at the level, check_recovery_s at
    # recovery_fraction. 0 leaves it out. Its keep-alive connections: at most check_max_conns,
    # enough for 5x of a server that answers nothing for a whole timeout (Ray Serve: 239
    # req/s x 5 s); with fewer, the connections freed by a wave of timeouts are reused in
    # one burst and the client itself is late.
    check_phase_s: float = 10.0
    check_recovery_s: float = 5.0
    check_max_conns: int = 4096


def _env_floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} must be numbers like 1.5,2,5, got {raw!r}") from None


def from_env(cls: type, prefix: str):
    """`cls()` with each field overridable by <PREFIX>_<FIELD> (upper case), e.g.
    SOAK_DURATION_S=60, FAULT_CLIENTS=8 or OVERLOAD_LEVELS=2,5 (a tuple: comma-separated)."""
    values = {}
    for field in fields(cls):
        name = f"{prefix}_{field.name.upper()}"
        default = getattr(cls(), field.name)
        if isinstance(default, tuple):
            values[field.name] = _env_floats(name, default)
            continue
        value = env_float(name, float(default))
        values[field.name] = int(value) if isinstance(default, int) else value
    return cls(**values)
