"""Load profiles as data: what a sweep runs, how long, how often.

Open-loop points come from the SLO capacity search (loadtests/sweep.py): bisection over
the offered rate, starting from the stack's closed-loop peak.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    warmup_s: float
    duration_s: float
    # Windows per level of a single `make loadtest` point; a sweep uses min/max_windows.
    repeats: int
    # Closed loop: concurrent users per level, for each batch size.
    closed_users: dict[int, tuple[int, ...]]
    # Users available to the open-loop schedule (bounds in-flight requests).
    open_users: int
    baseline_batches: tuple[int, ...]
    baseline_iterations: int
    slo_p99_ms: float = 50.0
    # Stability: a level repeats until its last `min_windows` windows agree within
    # `stability_tolerance` (req/s and p99), at most `max_windows` windows.
    min_windows: int = 3
    max_windows: int = 4
    stability_tolerance: float = 0.10
    # A p99 needs at least this many requests in a window (1% of them are the tail).
    min_requests: int = 1000
    # The generator's floor against the null server: closed at every profile level, open
    # at these rates (floors between them are interpolated, never extrapolated).
    calibration_warmup_s: float = 1.0
    calibration_duration_s: float = 3.0
    calibration_rates: tuple[float, ...] = (100.0, 400.0, 1600.0, 6400.0)
    # The independent client (wrk) after each closed-loop REST level, same connections,
    # run `wrk_repeats` times back to back: a claim resting on wrk's figure carries the
    # spread of its own runs, as one resting on Locust's carries its windows'.
    wrk_duration_s: int = 5
    wrk_repeats: int = 3
    # SLO capacity by bisection over the open-loop rate: window, precision, trial cap.
    capacity_duration_s: float = 6.0
    capacity_precision: float = 0.05
    capacity_max_trials: int = 8
    # Times a trial the generator spoilt is measured again before it counts as such.
    capacity_retries: int = 1
    # Open-loop arrivals: Poisson (MLPerf's Server scenario) or constant, and the seed.
    arrivals: str = "poisson"
    seed: int = 0
    # Cold starts per stack and warm-up mode at the end of a sweep (loadtests/coldstart.py).
    coldstart_repeats: int = 5
    # Framework floor after each device's levels (loadtests/framework_floor.py): wrk at one
    # connection, this many runs of this many seconds per path (predict, no-op twin),
    # interleaved, and as many near capacity on the predict path where the stack times its
    # app; 0 runs: the phase is off and the stacks start without their twins.
    framework_floor_runs: int = 3
    framework_floor_s: int = 3
    # Then our own code in process (loadtests/own_code.py): requests per route and mode,
    # and hot-loop calls per piece.
    own_code_iterations: int = 2000


PROFILES = {
    # About 20 minutes on a 2-core box for TorchServe and the two Flask stacks.
    "quick": Profile(
        name="quick",
        warmup_s=2.0,
        duration_s=8.0,
        repeats=3,
        closed_users={1: (1, 4, 16), 8: (16,)},
        open_users=32,
        baseline_batches=(1, 8, 64),
        baseline_iterations=300,
    ),
    # Real hardware: longer points, more levels, bigger batches.
    "full": Profile(
        name="full",
        warmup_s=10.0,
        duration_s=60.0,
        repeats=3,
        closed_users={1: (1, 2, 4, 8, 16, 32, 64, 128), 8: (1, 4, 16, 64), 64: (1, 4, 16)},
        open_users=256,
        baseline_batches=(1, 8, 64),
        baseline_iterations=2000,
        framework_floor_runs=5,
        framework_floor_s=5,
    ),
    # `make gpu-bench` (loadtests/gpu_bench.py): the three torch stacks on one GPU in about
    # 8 minutes, starts included (gpu_bench.planned_seconds; tests/loadtests/
    # test_gpu_bench.py holds it to that). Short windows are enough because a GPU point's
    # requests come fast; batch 16 is where a GPU earns its keep. One calibration rate,
    # one wrk run per level, three capacity trials, no cold starts and no framework floor
    # (the CPU profiles measure those) keep the rest inside the budget.
    "gpu": Profile(
        name="gpu",
        warmup_s=1.5,
        duration_s=4.0,
        repeats=2,
        closed_users={1: (1, 32), 16: (4,)},
        open_users=32,
        baseline_batches=(1, 16),
        baseline_iterations=300,
        min_windows=2,
        max_windows=2,
        # 500 requests still put 5 in the slowest 1 %.
        min_requests=500,
        calibration_warmup_s=0.5,
        calibration_duration_s=2.0,
        calibration_rates=(1000.0,),
        wrk_duration_s=3,
        wrk_repeats=1,
        capacity_duration_s=3.0,
        capacity_precision=0.25,
        capacity_max_trials=3,
        capacity_retries=0,
        coldstart_repeats=0,
        framework_floor_runs=0,
    ),
    # Seconds: for tests and smoke checks of the pipeline, never for figures.
    "smoke": Profile(
        name="smoke",
        warmup_s=0.5,
        duration_s=2.0,
        repeats=1,
        closed_users={1: (2,)},
        open_users=4,
        baseline_batches=(1,),
        baseline_iterations=20,
        min_windows=1,
        max_windows=1,
        min_requests=0,
        calibration_warmup_s=0.5,
        calibration_duration_s=1.0,
        calibration_rates=(50.0,),
        wrk_duration_s=1,
        wrk_repeats=2,
        capacity_duration_s=1.5,
        capacity_precision=0.5,
        capacity_max_trials=2,
        coldstart_repeats=0,
        framework_floor_runs=1,
        framework_floor_s=1,
        own_code_iterations=50,
    ),
}
