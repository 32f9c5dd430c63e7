"""Keeps one Locust worker process connected to the master, point after point.

  python -m loadtests.worker --master-host loadgen-master [--master-port 5557]

A Locust worker exits when its master quits, and loadtests.runner starts one master per
point (`--master --expect-workers N`, loadtests/distributed.py). So each worker pod runs
this loop: a worker process per point, the next one started as soon as the last exits,
connecting (with Locust's own retries) until the next master listens. A fresh process per
point also means no state of one point reaches the next. SIGTERM (the pod stopping) stops
the worker and the loop.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtests.distributed import MASTER_PORT
from loadtests.runner import LOCUSTFILE

# A worker that exits at once again and again (a master refusing it, a broken image)
# is restarted after a growing pause, up to this.
MAX_BACKOFF_S = 30.0
# A worker that ran at least this long counts as having served: the pause starts over.
SERVED_S = 10.0


def worker_command(master_host: str, master_port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "locust"), "-f", str(LOCUSTFILE), "--worker",
            "--master-host", master_host, "--master-port", str(master_port)]  # fmt: skip


class Supervisor:
    def __init__(self, command: list[str], max_runs: int | None = None,
                 pid_file: Path | None = None) -> None:
        self.command = command
        self.max_runs = max_runs
        # The running worker's pid, for the pod's probes (k8s/base/loadgen-workers.yaml).
        self.pid_file = pid_file
        self.child: subprocess.Popen | None = None
        self.stopping = False
        self.runs = 0

    def stop(self, *_args) -> None:
        self.stopping = True
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def loop(self) -> int:
        pause = 1.0
        while not self.stopping and (self.max_runs is None or self.runs < self.max_runs):
            started = time.monotonic()
            self.child = subprocess.Popen(self.command)
            if self.pid_file is not None:
                self.pid_file.write_text(f"{self.child.pid}\n")
            code = self.child.wait()
            self.runs += 1
            served = time.monotonic() - started >= SERVED_S
            print(f"worker: Locust worker exited ({code}) after "
                  f"{time.monotonic() - started:.0f} s; run {self.runs}", flush=True)
            if self.stopping:
                break
            pause = 1.0 if served or code == 0 else min(MAX_BACKOFF_S, pause * 2)
            time.sleep(pause if code != 0 else 0.0)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--master-host", required=True)
    parser.add_argument("--master-port", type=int, default=MASTER_PORT)
    parser.add_argument("--max-runs", type=int, default=None,
                        help="stop after this many worker processes (tests)")
    parser.add_argument("--pid-file", type=Path, default=None,
                        help="where to write the running worker's pid (the pod's probes)")
    args = parser.parse_args(argv)
    supervisor = Supervisor(worker_command(args.master_host, args.master_port), args.max_runs,
                            args.pid_file)  # fmt: skip
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.loop()


if __name__ == "__main__":
    sys.exit(main())
