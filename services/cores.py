"""How a server's cores are split between worker processes and threads per worker: one
rule for every stack (gunicorn workers x torch threads, TorchServe workers x torch
threads, TF Serving's inter-op x intra-op pools).

Rule: workers x threads <= cores, always. Whatever is not given is derived: by default one
single-threaded worker per core (a request's time on this model is Python and JSON, which
processes run in parallel, while more intra-op threads only add synchronisation); given
threads, as many workers as fit; given workers, the remaining cores go to their threads.
Explicit counts that oversubscribe the cores are refused, never silently clamped: a
benchmark must run the configuration it was asked for, or say why not.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.env import env_optional_int


@dataclass(frozen=True)
class CoreSplit:
    """`workers` processes (or concurrent batches) x `threads` compute threads each."""

    workers: int
    threads: int


def split_cores(cores: int, workers: int | None = None, threads: int | None = None) -> CoreSplit:
    """Applies the rule in the module docstring.

    Args:
        cores: CPUs the server may use (at least 1).
        workers: an explicit worker count, or None to derive it.
        threads: an explicit thread count per worker, or None to derive it.

    Returns:
        The split; both numbers are at least 1 and their product at most `cores`.

    Raises:
        ValueError: naming the setting, if a count is below 1 or explicit counts
            oversubscribe the cores.
    """
    if cores < 1:
        raise ValueError(f"cores must be >= 1, got {cores}")
    for label, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if workers is None and threads is None:
        threads = 1
    if workers is None:
        workers = max(1, cores // threads)
    if threads is None:
        threads = max(1, cores // workers)
    if workers * threads > cores:
        raise ValueError(
            f"{workers} workers x {threads} threads = {workers * threads} exceeds the "
            f"{cores} cores available"
        )
    return CoreSplit(workers=workers, threads=threads)


def split_from_env(cores: int, workers_env: str, threads_env: str) -> CoreSplit:
    """split_cores with two environment variables as the explicit counts (unset: derived).

    Raises:
        ValueError: naming both variables when they oversubscribe the cores.
    """
    try:
        return split_cores(cores, env_optional_int(workers_env), env_optional_int(threads_env))
    except ValueError as err:
        raise ValueError(f"{err}; lower {workers_env} or {threads_env}") from None
