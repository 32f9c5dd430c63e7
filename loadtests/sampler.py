"""Samples CPU and resident memory of a process tree while a load point runs."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil


@dataclass
class ResourceSamples:
    cpu_pct: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    # Per process of the tree (pid -> CPU % at each sample it was alive for): a tree of
    # single-threaded processes (Locust's --processes workers) is saturated when one of
    # them is, whatever the sum says.
    process_cpu_pct: dict[int, list[float]] = field(default_factory=dict)

    def mean_cpu(self) -> float:
        return sum(self.cpu_pct) / len(self.cpu_pct) if self.cpu_pct else 0.0

    def max_cpu(self) -> float:
        return max(self.cpu_pct, default=0.0)

    def max_rss(self) -> float:
        return max(self.rss_mb, default=0.0)

    def busiest_process_cpu(self) -> float:
        """The highest mean CPU % of any one process of the tree (100 = one core)."""
        return max((sum(v) / len(v) for v in self.process_cpu_pct.values() if v), default=0.0)


class TreeSampler:
    """Every `interval_s`, sums CPU % (100 = one core) and RSS over `pid` and its children.

    Children are re-listed each time: TorchServe and gunicorn replace workers.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples = ResourceSamples()
        self._known: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[psutil.Process]:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        tree = []
        for proc in procs:
            # Reuse Process objects: cpu_percent() measures since the previous call on it.
            known = self._known.setdefault(proc.pid, proc)
            tree.append(known)
        return tree

    def _sample(self) -> tuple[float, float, dict[int, float]]:
        cpu = rss = 0.0
        each: dict[int, float] = {}
        for proc in self._tree():
            try:
                each[proc.pid] = proc.cpu_percent(None)
                rss += proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            cpu += each[proc.pid]
        return cpu, rss, each

    def _run(self) -> None:
        self._sample()  # primes cpu_percent
        while not self._stop.wait(self.interval_s):
            cpu, rss, each = self._sample()
            self.samples.cpu_pct.append(cpu)
            self.samples.rss_mb.append(rss)
            for pid, pct in each.items():
                self.samples.process_cpu_pct.setdefault(pid, []).append(pct)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
