"""Load profiles as data: what a sweep runs, how long, how often.

Open-loop rates are fractions of the highest throughput the same stack reached in its
closed-loop sweep, so every stack is compared at the same utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    warmup_s: float
    duration_s: float
    repeats: int
    # Closed loop: concurrent users per level, for each batch size.
    closed_users: dict[int, tuple[int, ...]]
    # Open loop (batch 1): offered rate as a fraction of the closed-loop peak.
    open_fractions: tuple[float, ...]
    # Users available to the open-loop schedule (bounds in-flight requests).
    open_users: int
    baseline_batches: tuple[int, ...]
    baseline_iterations: int
    slo_p99_ms: float = 50.0


PROFILES = {
    # About 15 minutes on a 2-core box for TorchServe + Flask.
    "quick": Profile(
        name="quick",
        warmup_s=2.0,
        duration_s=8.0,
        repeats=3,
        closed_users={1: (1, 4, 8, 16), 8: (4, 16)},
        open_fractions=(0.25, 0.5, 0.75, 0.9),
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
        open_fractions=(0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
        open_users=256,
        baseline_batches=(1, 8, 64),
        baseline_iterations=2000,
    ),
    # Seconds: for tests and smoke checks of the pipeline, never for figures.
    "smoke": Profile(
        name="smoke",
        warmup_s=0.5,
        duration_s=2.0,
        repeats=1,
        closed_users={1: (2,)},
        open_fractions=(0.5,),
        open_users=4,
        baseline_batches=(1,),
        baseline_iterations=20,
    ),
}
