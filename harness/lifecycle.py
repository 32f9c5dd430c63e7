"""Run a stack on free loopback ports until the caller is done: the one start-up path of
`make deploy-local`, parity, the load runner, the reliability runs and the tests.

    with running_stack("flask_torch", paths, run_dir) as running:
        running.clients[0].predict(images)

Start, register the stop, wait until the model answers, take the clients: in that order,
so a server that never gets ready is still stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.clients import Predictor, RestClient, TfServingGrpcClient
from digitnet.env import env_float
from harness.payload import PayloadSet
from services.process import ServerProcess, free_port
from services.registry import load_stack, stack_names
from services.stack import ServingStack

# How long a stack may take to become ready (TorchServe starts a JVM and its workers).
READY_TIMEOUT_S = env_float("DIGITNET_READY_TIMEOUT_S", 180.0)
# A port the kernel called free may be taken before the server binds it: Ray opens tens of
# ports of its own at random while it starts, and once took the one chosen for its HTTP
# proxy ("Failed to bind to address '127.0.0.1:44227'": `make floors`, Ray Serve started
# again under the latency preset). A start on free ports that fails so is tried again, on
# fresh ones; ports the caller chose are never changed.
PORT_RACE_SIGNS = ("Address already in use", "Failed to bind", "Connection in use")
PORT_RACE_RETRIES = 2
# What a start that never got ready raises: a plugin's RuntimeError (its first line why,
# then the server's log tail), a TimeoutError, or an OSError from the spawn.
START_ERRORS = (RuntimeError, TimeoutError, OSError)


@dataclass
class RunningStack:
    """One started, ready stack: its plugin, process, ports and clients."""

    stack: ServingStack
    server: ServerProcess
    paths: ArtifactPaths
    ports: dict[str, int]
    clients: list[Predictor] = field(default_factory=list)
    ready_s: float = 0.0

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def rest(self) -> RestClient | None:
        return next((c for c in self.clients if isinstance(c, RestClient)), None)

    @property
    def grpc(self) -> TfServingGrpcClient | None:
        return next((c for c in self.clients if isinstance(c, TfServingGrpcClient)), None)

    def payloads(self, batch_size: int = 1) -> PayloadSet:
        return PayloadSet(self.paths.spec, batch_size, self.paths.reference_predictions)

    def ready(self, timeout_s: float) -> bool:
        """The stack's own readiness (model loaded and answering), within `timeout_s`."""
        try:
            self.stack.wait_ready(self.server, timeout_s)
        except (TimeoutError, RuntimeError):
            return False
        return True


def resolve(stack: ServingStack | str) -> ServingStack:
    return load_stack(stack) if isinstance(stack, str) else stack


def launch(
    stack: ServingStack | str,
    paths: ArtifactPaths,
    run_dir: Path,
    *,
    on_start: Callable[[ServerProcess], None],
    ports: Mapping[str, int] | None = None,
    cores: Sequence[int] | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
    ready_poll_s: float | None = None,
) -> RunningStack:
    """Starts `stack`, hands the server to `on_start` (register its stop there), waits
    until it is ready and returns it with its clients.

    Args:
        ports: one port per name in the stack's default_ports; free ports if None.
        cores: CPUs the server may use (pinned with taskset); all usable ones if None.
        env: extra environment for the server (e.g. the plugin's device_env).
        ready_poll_s: how often to ask whether it is ready; None: the plugin's own.
    """
    plugin = resolve(stack)
    for attempt in range(PORT_RACE_RETRIES + 1):
        chosen = dict(ports) if ports is not None else {
            name: free_port() for name in plugin.default_ports}
        server = plugin.start(paths, run_dir, chosen, cores=cores, env=env)
        on_start(server)
        try:
            ready_s = plugin.wait_ready(server, timeout_s, ready_poll_s)
        except (RuntimeError, TimeoutError) as err:
            if ports is not None or attempt == PORT_RACE_RETRIES or not lost_port_race(err):
                raise
            # Stopped now, its port freed; on_start's stop, run again later, finds nothing.
            plugin.stop(server)
            continue
        return RunningStack(plugin, server, paths, chosen, plugin.clients(server, paths),
                            ready_s)  # fmt: skip
    raise AssertionError("unreachable: the last attempt returns or raises")


def start_failure(err: BaseException) -> str:
    """Why a start failed, in one line (a START_ERRORS error's first; the server's log is
    in its run folder)."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def did_not_start(err: BaseException, config: str | None = None) -> str:
    """A phase's skip reason for a stack whose start failed (under `config`, where the
    phase starts it in several): a phase goes on with the other stacks, never lost whole
    to one failed start (Ray Serve's node start timed out once in 18 starts here)."""
    under = f" under {config}" if config else ""
    return f"did not start{under}: {start_failure(err)}"


def lost_port_race(err: BaseException) -> bool:
    """Whether a start failed because a port chosen free was taken before the server bound
    it (the error carries the server's log tail)."""
    return any(sign in str(err) for sign in PORT_RACE_SIGNS)


def start_stack(
    stack: ServingStack | str,
    paths: ArtifactPaths,
    run_dir: Path,
    exits: ExitStack,
    **options,
) -> RunningStack:
    """launch() whose stop runs when `exits` closes (even if a fault run already stopped
    or killed the server: stop() then only sweeps up what is left and waits for ports)."""
    plugin = resolve(stack)
    return launch(plugin, paths, run_dir,
                  on_start=lambda server: exits.callback(plugin.stop, server), **options)


@contextmanager
def running_stack(
    stack: ServingStack | str, paths: ArtifactPaths, run_dir: Path, **options
) -> Iterator[RunningStack]:
    """The stack started on free ports and ready inside the block, stopped after it."""
    with ExitStack() as exits:
        yield start_stack(stack, paths, run_dir, exits, **options)


def skipped_reason(stack: ServingStack | str) -> str | None:
    """Why the stack cannot run on this machine (and how to get it), or None."""
    ok, reason = resolve(stack).available()
    return None if ok else reason


@contextmanager
def running_stacks(
    paths: ArtifactPaths, run_root: Path, names: Sequence[str] | None = None, **options
) -> Iterator[tuple[list[RunningStack], dict[str, str]]]:
    """Starts every available stack in `names` (default: all registered), each in
    `run_root/<name>`; yields (running, skipped) where skipped maps a stack that cannot
    run here to why."""
    running: list[RunningStack] = []
    skipped: dict[str, str] = {}
    with ExitStack() as exits:
        for name in names or stack_names():
            reason = skipped_reason(name)
            if reason is not None:
                skipped[name] = reason
                continue
            running.append(start_stack(name, paths, run_root / name, exits, **options))
        yield running, skipped
