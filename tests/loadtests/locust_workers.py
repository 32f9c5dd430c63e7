"""Locust worker loops for tests of the distributed mode: the worker pods' entry point
(python -m loadtests.worker) run as local processes, connecting to 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.process import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def supervised_workers(count: int, port: int, log_dir: Path,
                       extra: tuple[str, ...] | list[str] = ()) -> Iterator[list]:
    """`count` worker loops (python -m loadtests.worker) connecting to 127.0.0.1:port."""
    loops = []
    try:
        for index in range(count):
            log = open(log_dir / f"worker-loop-{index}.log", "wb")  # noqa: SIM115
            loops.append((subprocess.Popen(
                [sys.executable, "-m", "loadtests.worker", "--master-host", LOOPBACK,
                 "--master-port", str(port), *extra],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)}), log))  # fmt: skip
        yield [proc for proc, _ in loops]
    finally:
        for proc, log in loops:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


