"""Running stacks for the reliability runs: started through their LocalStack on free
loopback ports (as services.parity does) and stopped afterwards, whatever happens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitnet.clients import Predictor, RestClient, TfServingGrpcClient
from loadtests.payload import PayloadSet, check_answer
from reliability.client import Endpoint
from reliability.settings import READY_TIMEOUT_S
from services.artifacts import ArtifactPaths
from services.process import ServerProcess, free_port
from services.registry import STACK_MODULES, load_stack
from services.stack import LocalStack


@dataclass
class RunningStack:
    """One started stack, its clients and the answer key to check them against."""

    stack: LocalStack
    server: ServerProcess
    paths: ArtifactPaths
    clients: list[Predictor]

    @property
    def name(self) -> str:
        return self.stack.name

    @property
    def rest(self) -> RestClient | None:
        return next((c for c in self.clients if isinstance(c, RestClient)), None)

    @property
    def grpc(self) -> TfServingGrpcClient | None:
        return next((c for c in self.clients if isinstance(c, TfServingGrpcClient)), None)

    def endpoint(self) -> Endpoint:
        if self.rest is None:
            raise ValueError(f"{self.name} offers no REST client")
        return Endpoint.of(self.rest)

    def payloads(self, batch_size: int = 1) -> PayloadSet:
        return PayloadSet(self.paths.spec, batch_size, self.paths.reference_predictions)

    def ready(self, timeout_s: float) -> bool:
        """The stack's own readiness (model loaded and answering), within `timeout_s`."""
        try:
            self.stack.wait_ready(self.server, timeout_s)
        except (TimeoutError, RuntimeError):
            return False
        return True

    def answers_correctly(self, client: Predictor, payloads: PayloadSet) -> str | None:
        return check_prediction(client, payloads)


def check_prediction(client: Predictor, payloads: PayloadSet) -> str | None:
    """None when `client` gets the right answer for the next good batch, else what went
    wrong (the exception or the wrong classes/logits)."""
    batch = payloads.next()
    try:
        logits, classes = client.predict(batch.images)
    except Exception as err:  # noqa: BLE001 - any failure is the finding, reported
        return f"{type(err).__name__}: {str(err)[:200]}"
    return check_answer(batch, np.asarray(logits), np.asarray(classes))


def skipped_reason(name: str) -> str | None:
    """Why the stack cannot run on this machine, or None when it can."""
    ok, reason = load_stack(name).available()
    return None if ok else reason


def start(name: str, paths: ArtifactPaths, run_dir: Path, exits: ExitStack) -> RunningStack:
    """Starts `name` on free ports and waits until it is ready; `exits` stops it."""
    stack = load_stack(name)
    ports = {port: free_port() for port in stack.default_ports}
    server = stack.start(paths, run_dir, ports)
    # Called even when a fault run already stopped or killed it: stop() then only sweeps
    # up what is left and waits for the ports.
    exits.callback(stack.stop, server)
    stack.wait_ready(server, READY_TIMEOUT_S)
    return RunningStack(stack, server, paths, stack.clients(server, paths))


@contextmanager
def running_stacks(
    paths: ArtifactPaths, run_root: Path, names: Sequence[str] | None = None
) -> Iterator[tuple[list[RunningStack], dict[str, str]]]:
    """Starts every available stack in `names` (default: all); yields (running, skipped)
    where skipped maps a stack that cannot run here to why."""
    running: list[RunningStack] = []
    skipped: dict[str, str] = {}
    with ExitStack() as exits:
        for name in names or list(STACK_MODULES):
            reason = skipped_reason(name)
            if reason is not None:
                skipped[name] = reason
                continue
            running.append(start(name, paths, run_root / name, exits))
        yield running, skipped
