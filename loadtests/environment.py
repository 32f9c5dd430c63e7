"""What a run was measured on: machine, pinning, versions, settings, commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import time

PACKAGES = (
    "torch",
    "tensorflow",
    "keras",
    "tensorflow-serving-api",
    "torchserve",
    "torch-model-archiver",
    "flask",
    "gunicorn",
    "locust",
    "numpy",
    "grpcio",
    "protobuf",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    probe = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip().splitlines()[0] if probe.returncode == 0 and probe.stdout else None


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    java = shutil.which("java")
    if java:
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        found["java"] = (probe.stderr or probe.stdout).splitlines()[0] if probe.stderr else "?"
    tfs = shutil.which("tensorflow_model_server")
    found["tensorflow_model_server"] = tfs or "not on PATH (TF Serving legs skipped)"
    return found


def git_commit() -> str:
    """The checkout's short commit (+"-dirty"); DIGITNET_GIT_COMMIT where there is no git
    (the load generator image records the commit it was built from)."""
    if shutil.which("git") is None:
        return os.environ.get("DIGITNET_GIT_COMMIT") or "unknown"
    probe = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = probe.stdout.strip() or "unknown"
    return commit + ("-dirty" if dirty.stdout.strip() else "")


def provenance() -> str:
    """One line for a split's Markdown (fair, batching, sizes, codecs): what made it, where."""
    return (f"Made at {git_commit()} on {cpu_model()}, {len(os.sched_getaffinity(0))} usable "
            f"cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def with_provenance(markdown: list[str], made: str | None = None) -> list[str]:
    """A split's Markdown with `made` (default: provenance() now) under its title line."""
    return [*markdown[:1], "", made or provenance(), *markdown[1:]]


def describe(extra: dict) -> dict:
    """The run's environment block; `extra` adds pinning, threads and profile settings."""
    return {
        "cpu_model": cpu_model(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": git_commit(),
        **extra,
    }
