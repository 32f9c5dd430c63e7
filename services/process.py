"""Starting, watching and stopping local server processes.

Shared by every stack plugin and harness.lifecycle, so that every caller starts a stack the
same way and stops all of it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now on `host` (the kernel picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """`count` different ports free right now on `host` (each socket held until all are
    picked, so the kernel cannot hand one out twice)."""
    with ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(count)]  # fmt: skip
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]


def usable_cores() -> list[int]:
    """The CPU ids this process may run on (respects taskset and cgroup pinning)."""
    return sorted(os.sched_getaffinity(0))


@contextmanager
def pinned(cores: Sequence[int] | None) -> Iterator[None]:
    """Runs this thread, and the threads it starts meanwhile, on `cores` inside the block,
    on the ones it had after it; unchanged where none are given. Linux applies affinity
    per thread and new threads inherit it, so a load generator's senders and samplers
    started inside stay on its cores. For clients run in this process (not a child under
    taskset): left free, the kernel tends to wake one on the core whose reply woke it, the
    server's, where it takes the server's time."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def wait_until(
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Polls `check` until it returns True; returns the seconds waited.

    Raises:
        TimeoutError: if `check` never passed within `timeout_s`.
        RuntimeError: if `alive` says the process under watch died meanwhile.
    """
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 - a server that is starting refuses connections
            pass
        if alive is not None and not alive():
            raise RuntimeError(f"{what}: process exited before it was ready")
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"{what}: not ready after {timeout_s:.0f} s")
        time.sleep(interval_s)


@dataclass
class ServerProcess:
    """A server we started: its process group, log file and endpoints."""

    name: str
    pid: int
    log_path: Path
    endpoints: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return psutil.pid_exists(self.pid) and psutil.Process(self.pid).status() != "zombie"

    def to_json(self) -> dict:
        """What `make stop` and `make status` need to find this server again."""
        return {
            "name": self.name,
            "pid": self.pid,
            "log_path": str(self.log_path),
            "endpoints": dict(self.endpoints),
        }

    @classmethod
    def from_json(cls, data: dict) -> ServerProcess:
        return cls(
            name=data["name"],
            pid=int(data["pid"]),
            log_path=Path(data["log_path"]),
            endpoints=dict(data.get("endpoints", {})),
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def start_process(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    cores: Sequence[int] | None = None,
) -> ServerProcess:
    """Starts `argv` in its own session (so stopping it stops its children too).

    Args:
        cores: pins the process (and what it spawns) to these CPUs via taskset, so a
            load generator on other cores does not steal the server's CPU.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = list(argv)
    if cores:
        command = ["taskset", "-c", ",".join(str(c) for c in cores), *command]
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()
    return ServerProcess(name=name, pid=popen.pid, log_path=log_path, popen=popen)


def stop_process_tree(pid: int, grace_s: float = 15.0) -> bool:
    """SIGTERM the process and all its descendants, SIGKILL what is left after `grace_s`.

    Returns:
        True if something was running.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return False
    procs = [root, *root.children(recursive=True)]
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    kill_processes(alive)
    return True


def kill_processes(procs: list[psutil.Process]) -> None:
    """SIGKILL each of `procs` that still runs, and reap them (5 s at most)."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def alive(proc: psutil.Process) -> bool:
    """True while `proc` runs (a zombie counts as gone)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
