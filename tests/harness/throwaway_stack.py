"""A throwaway stack for tests/harness/test_plugin.py: registered for one test only, it
declares itself through the plugin interface and nothing else, and cannot run here."""

from __future__ import annotations

from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from services.stack import ServingStack

WHY = "the throwaway test stack never runs"


class ThrowawayStack(ServingStack):
    name = "throwaway"
    default_ports = {"http": 9}
    protocol_ports = {"rest": "http"}
    floor_path = "TorchScript"
    framework = "pytorch"
    server_kind = "throwaway server"
    k8s_deployment = "throwaway"
    not_deployed_why = "a test stack"

    def available(self) -> tuple[bool, str]:
        return False, WHY

    def artifact_files(self, paths: ArtifactPaths) -> list[Path]:
        return []


STACK = ThrowawayStack()
