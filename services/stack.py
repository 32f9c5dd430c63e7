"""The interface every locally run serving stack implements.

`make deploy-local`, the parity check, the load-test runner and the integration tests
drive TF Serving, TorchServe and Flask through this one shape, so none of them knows a
stack's command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from digitnet.clients import Predictor
from services.artifacts import ArtifactPaths
from services.process import ServerProcess


class LocalStack(Protocol):
    """One serving stack run as native processes on this machine."""

    name: str
    # Port names and the defaults `make deploy-local` uses; tests pass free ports instead.
    default_ports: Mapping[str, int]

    def available(self) -> tuple[bool, str]:
        """Whether this machine can run the stack, and if not, why and how to get it."""
        ...

    def start(
        self,
        paths: ArtifactPaths,
        run_dir: Path,
        ports: Mapping[str, int],
        cores: Sequence[int] | None = None,
    ) -> ServerProcess:
        """Starts the server bound to 127.0.0.1 and returns at once (not yet ready).

        Args:
            paths: the artifacts to serve.
            run_dir: a writable folder for this stack's config copies, logs and keys.
            ports: one port per name in `default_ports`.
            cores: CPUs the server may use; thread counts are derived from their number.
        """
        ...

    def wait_ready(self, server: ServerProcess, timeout_s: float) -> float:
        """Blocks until the model can answer (not merely until the port is open);
        returns the seconds waited."""
        ...

    def clients(self, server: ServerProcess, paths: ArtifactPaths) -> list[Predictor]:
        """One client per protocol the running server offers."""
        ...

    def stop(self, server: ServerProcess) -> None:
        """Stops the server and every process it started."""
        ...
