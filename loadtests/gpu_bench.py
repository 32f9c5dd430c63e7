"""`make gpu-bench`: the torch stacks on one NVIDIA GPU, a report labelled with the card.

  python -m loadtests.gpu_bench                         # what `make gpu-bench` runs
  python -m loadtests.gpu_bench --server-cpus 2         # each server gets 2 CPU cores
  python -m loadtests.gpu_bench --check                 # only the refusal checks

Runs the sweep (loadtests.sweep) with profile `gpu` (about 8 minutes) for flask_torch,
torchserve and ray_serve on CUDA only. Every point reads back the device its server
computes on and is refused if that is the CPU (loadtests.devices); every point samples the
GPU's own counters (loadtests.gpu_telemetry), and the report says what bounded each one.
environment.json's `gpu_run` and the report's header name the card, the driver, the
driver's CUDA version and torch's.

Before any server starts it checks that torch is a CUDA build that sees a GPU and that NVML
sees one; otherwise it exits 2 and says which is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from digitnet.artifacts import DEFAULT_ARTIFACTS
from harness.artifacts import ensure_artifacts
from harness.paths import timestamped_dir
from loadtests import gpu_telemetry
from loadtests.gpu_telemetry import Inventory
from loadtests.profiles import PROFILES, Profile
from loadtests.runner import limit_cores, split_cores
from loadtests.sweep import floor_loads, sweep
from services.process import usable_cores
from services.registry import load_stack, parse_stacks
from services.stack import CUDA

TORCH_STACKS = ("flask_torch", "torchserve", "ray_serve")
EXIT_NO_GPU = 2
EXIT_REFUSED_POINTS = 1
# The reference run's promise: the torch stacks in about this long.
BUDGET_S = 8 * 60
# Per Locust window beyond its warm-up and duration: Locust's start and its stop timeout
# (2 s), the device read-back and the drift loops around the window.
WINDOW_OVERHEAD_S = 3.0
# Per wrk run beyond its duration: wrk's start and its Lua script's summary.
WRK_OVERHEAD_S = 1.0
# Starting one torch server on a GPU until ready (the CUDA context, the model moved to
# the GPU, TorchServe's JVM or Ray's cluster); the Flask stack starts twice more for the
# gunicorn worker-class comparison (loadtests.sweep.worker_class_tradeoff).
START_S = 25.0
FLASK_RESTARTS = 2
# The in-process baselines before the servers start (loadtests.baselines).
BASELINES_S = 15.0


@dataclass(frozen=True)
class GpuCheck:
    """Whether this machine can run the GPU reference run, and what it would be run on."""

    problems: tuple[str, ...]
    torch_version: str | None
    torch_cuda: str | None
    inventory: Inventory | None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_gpu(torch: ModuleType | Any = None, nvml: Any = None,
              visible: str | None = None) -> GpuCheck:
    """Whether torch is a CUDA build that sees a GPU, and NVML sees one too.

    Args:
        torch: the torch module, or a stand-in (tests); None imports torch.
        nvml: pynvml, or a stand-in (tests); None imports pynvml.
        visible: CUDA_VISIBLE_DEVICES' value for NVML; None reads the environment.

    Returns:
        The problems, each in words that say what to install or fix; none when it can run.
    """
    problems = []
    version = cuda = None
    if torch is None:
        try:
            import torch
        except ImportError as err:
            torch = None
            problems.append(f"torch is not installed ({err})")
    if torch is not None:
        version, cuda = torch.__version__, torch.version.cuda
        if cuda is None:
            problems.append(
                f"no CUDA torch: torch {version} is a CPU-only build (torch.version.cuda is "
                "None); install a CUDA wheel (https://download.pytorch.org/whl/cu130, or cu126 "
                "for drivers older than CUDA 13)")
        elif not torch.cuda.is_available():
            problems.append(
                f"no GPU for torch: torch {version} is built for CUDA {cuda} but "
                "torch.cuda.is_available() is False (no NVIDIA GPU, a driver too old for "
                f"CUDA {cuda}, or CUDA_VISIBLE_DEVICES hides every GPU)")
    inventory, why = gpu_telemetry.probe(nvml=nvml, visible=visible)
    if why:
        problems.append(f"no GPU for NVML (GPU telemetry): {why}")
    return GpuCheck(tuple(problems), version, cuda, inventory)


def refusal(check: GpuCheck) -> str:
    return ("gpu-bench: refused before starting any server, no CUDA device answers:\n"
            + "\n".join(f"  - {p}" for p in check.problems)
            + "\nRun it on a machine with an NVIDIA GPU, its driver and a CUDA build of torch "
            "(README.md, \"A GPU reference run\").")  # fmt: skip


def planned_seconds(profile: Profile, stacks: int = len(TORCH_STACKS)) -> float:
    """The longest a gpu-bench sweep of `stacks` REST targets, the Flask stack among them,
    should take: every window at its profile's most (max_windows, every capacity trial and
    retry), plus the fixed overheads above. Arithmetic on the profile, so it can be checked
    without a GPU.
    """
    window = profile.warmup_s + profile.duration_s + WINDOW_OVERHEAD_S
    floor = profile.calibration_warmup_s + profile.calibration_duration_s + WINDOW_OVERHEAD_S
    trial = profile.warmup_s + profile.capacity_duration_s + WINDOW_OVERHEAD_S
    wrk_run = profile.wrk_duration_s + WRK_OVERHEAD_S
    levels = sum(len(users) for users in profile.closed_users.values())
    floors = sum(len(floor_loads(profile, batch)) for batch in profile.closed_users)
    per_target = (floors * floor + levels * profile.max_windows * window
                  + levels * profile.wrk_repeats * wrk_run
                  + profile.capacity_max_trials * (1 + profile.capacity_retries) * trial)
    flask_classes = (1 + FLASK_RESTARTS) * wrk_run + FLASK_RESTARTS * START_S
    return BASELINES_S + stacks * (START_S + per_target) + flask_classes


def gpu_run_block(check: GpuCheck, server_cpus: int, stacks: list[str]) -> dict:
    """environment.json's `gpu_run`: what labels the report."""
    return {"label": check.inventory.label() if check.inventory else None,
            "inventory": check.inventory.to_json() if check.inventory else None,
            "torch": check.torch_version, "torch_cuda": check.torch_cuda,
            "server_cpus": server_cpus, "stacks": stacks}  # fmt: skip


def label_run(run_dir: Path, check: GpuCheck, server_cpus: int | None, stacks: list[str]
              ) -> dict:
    """Adds `gpu_run` to the sweep's environment.json (the report's label); returns it.

    Args:
        server_cpus: the CPU budget asked for; None: the servers had every server core.
    """
    env_file = run_dir / "environment.json"
    env = json.loads(env_file.read_text())
    cpus = server_cpus or len(env.get("server_cores") or [])
    env["gpu_run"] = gpu_run_block(check, cpus, stacks)
    env_file.write_text(json.dumps(env, indent=2) + "\n")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default=",".join(TORCH_STACKS))
    parser.add_argument("--server-cpus", type=int, default=None,
                        help="CPU cores per GPU server (`make gpu-bench GPU_SERVER_CPUS=`); "
                             "default: every server core")  # fmt: skip
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--run-id", default=None)
    parser.add_argument("--check", action="store_true",
                        help="only check for a CUDA torch and a GPU, start nothing")
    args = parser.parse_args(argv)
    try:
        stacks = parse_stacks(args.stacks)
    except ValueError as err:
        parser.error(str(err))
    not_cuda = [name for name in stacks if CUDA not in load_stack(name).devices]
    if not_cuda:
        parser.error(f"{', '.join(not_cuda)} cannot run on CUDA; choose from "
                     f"{', '.join(TORCH_STACKS)}")  # fmt: skip
    try:
        limit_cores(split_cores(usable_cores())[0], args.server_cpus)
    except ValueError as err:
        parser.error(f"--server-cpus (GPU_SERVER_CPUS): {err}")

    check = check_gpu()
    if not check.ok:
        print(refusal(check), file=sys.stderr, flush=True)
        return EXIT_NO_GPU
    print(f"gpu-bench: {check.inventory.label()}; torch {check.torch_version} "
          f"(CUDA {check.torch_cuda})", flush=True)
    if args.check:
        return 0
    return run(args, stacks, check)


def run(args: argparse.Namespace, stacks: list[str], check: GpuCheck) -> int:
    """The sweep on CUDA, the run labelled, the report; 1 when a point was refused."""
    # Imported here as the runner does: the report pulls in matplotlib.
    from loadtests.report import write_report

    paths = ensure_artifacts(args.artifacts)
    run_dir = timestamped_dir(run_id=args.run_id)
    sweep(PROFILES[args.profile], stacks, paths, run_dir, [CUDA], server_cpus=args.server_cpus)
    env = label_run(run_dir, check, args.server_cpus, stacks)
    report = write_report(run_dir)
    print(f"gpu-bench: report {report}", flush=True)
    refused = env.get("skipped", {})
    if refused:
        # A stack that fell back to the CPU, or could not start, leaves a GPU run without
        # it: the report says so, and the exit status does too.
        for key, why in refused.items():
            print(f"gpu-bench: {key} not measured: {why}", file=sys.stderr, flush=True)
        return EXIT_REFUSED_POINTS
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
