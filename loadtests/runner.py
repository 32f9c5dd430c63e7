"""Headless Locust runs: one point, or a whole sweep over every stack and protocol.

  python -m loadtests.runner sweep --profile quick      # what `make bench` runs
  python -m loadtests.runner point --stack flask_torch --protocol rest --users 8

Servers are started here on free loopback ports, pinned to the server cores, unless
`make deploy-local` already runs them (then they are used as they are, unpinned, and the
environment block says so). Locust runs pinned to the other cores; its CPU and the
server's CPU and memory are sampled for every point. Results go to results/<run-id>/:
raw/ (per-request CSVs), points.jsonl (one line per measured point), environment.json,
baselines.json, then summary.json and REPORT.md from loadtests.report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from digitnet.clients import TFS_METRICS_PATH, RestClient
from loadtests import analysis, environment
from loadtests.profiles import PROFILES, Profile
from loadtests.sampler import TreeSampler
from loadtests.server_metrics import breakdown, scrape
from loadtests.settings import PROTOCOLS, Mode, Protocol, Stack
from services.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths, ensure_artifacts
from services.process import ServerProcess, free_port, usable_cores
from services.registry import load_stack

RESULTS = Path(os.environ.get("DIGITNET_RESULTS", "results"))
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {
    (Stack.TORCHSERVE, Protocol.REST): "TorchServeRestUser",
    (Stack.FLASK_TORCH, Protocol.REST): "FlaskRestUser",
    (Stack.TF_SERVING, Protocol.REST): "TfServingRestUser",
    (Stack.TF_SERVING, Protocol.GRPC): "TfServingGrpcUser",
}
READY_TIMEOUT_S = 180.0


def split_cores(cores: list[int]) -> tuple[list[int], list[int]]:
    """(server cores, generator cores). The generator gets a quarter of the cores (one
    at least), the server the rest; with one core both share it, and the report says so."""
    if len(cores) < 2:
        return cores, cores
    generator = max(1, len(cores) // 4)
    return cores[:-generator], cores[-generator:]


DEVICES = ("cpu", "cuda")
GPU_STACKS = (Stack.TORCHSERVE, Stack.FLASK_TORCH)


def device_env(device: str, cuda_available: bool) -> dict[str, str]:
    """Environment that puts both torch stacks on `device`.

    CPU hides every GPU (TorchServe would otherwise pick one up by itself); CUDA asks the
    Flask app for it explicitly. Asking for CUDA where there is none is an error, never a
    silent CPU run labelled GPU.
    """
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "", "FLASK_TORCH_DEVICE": "cpu"}
    if device == "cuda":
        if not cuda_available:
            raise ValueError("device cuda requested but torch.cuda.is_available() is False")
        return {"FLASK_TORCH_DEVICE": "cuda"}
    raise ValueError(f"unknown device {device!r}; choose from {DEVICES}")


def default_devices(cuda_available: bool) -> list[str]:
    """CPU always; CUDA too when this machine has it, so one run holds both columns."""
    return ["cpu", "cuda"] if cuda_available else ["cpu"]


@contextmanager
def environment_patch(values: dict[str, str]) -> Iterator[None]:
    """Sets variables for the servers started inside (start_process copies os.environ)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Target:
    """Where Locust sends one stack's protocol, and how to read the server's metrics."""

    stack: Stack
    protocol: Protocol
    host: str
    env: dict[str, str]
    # None when the server runs elsewhere (a pod in a cluster): then it is not sampled.
    server_pid: int | None
    metrics_url: str | None = None
    device: str = "cpu"


@dataclass
class RunningStack:
    stack: Stack
    server: ServerProcess
    ports: dict[str, int]
    clients: list = field(default_factory=list)
    started_here: bool = True


def start_stack(
    name: Stack, paths: ArtifactPaths, run_dir: Path, cores: list[int], exits: ExitStack
) -> RunningStack | str:
    """Starts one stack pinned to `cores`; returns the reason instead when it cannot run."""
    stack = load_stack(name.value)
    ok, reason = stack.available()
    if not ok:
        return reason
    ports = {port_name: free_port() for port_name in stack.default_ports}
    server = stack.start(paths, run_dir / name.value, ports, cores=cores)
    exits.callback(stack.stop, server)
    stack.wait_ready(server, READY_TIMEOUT_S)
    return RunningStack(name, server, ports, stack.clients(server, paths))


def targets_of(running: RunningStack, device: str = "cpu") -> list[Target]:
    targets = []
    for client in running.clients:
        protocol = Protocol.REST if isinstance(client, RestClient) else Protocol.GRPC
        env: dict[str, str] = {}
        if protocol is Protocol.REST:
            host = client.base_url
            auth = client.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                env["TORCHSERVE_TOKEN"] = auth.removeprefix("Bearer ")
        else:
            host = f"http://{client.target}"
            env["TFS_GRPC_TARGET"] = client.target
        metrics_url = None
        if running.stack is Stack.TORCHSERVE and "metrics" in running.ports:
            metrics_url = f"http://127.0.0.1:{running.ports['metrics']}/metrics"
        if running.stack is Stack.TF_SERVING and "rest" in running.ports:
            metrics_url = f"http://127.0.0.1:{running.ports['rest']}{TFS_METRICS_PATH}"
        targets.append(
            Target(running.stack, protocol, host, env, running.server.pid, metrics_url, device)
        )
    return targets


@dataclass(frozen=True)
class Load:
    mode: Mode
    batch_size: int
    users: int
    rate: float = 0.0

    @property
    def slug(self) -> str:
        level = f"u{self.users}" if self.mode is Mode.CLOSED else f"r{self.rate:.0f}"
        return f"{self.mode.value}-b{self.batch_size}-{level}"


def run_point(
    target: Target,
    load: Load,
    profile: Profile,
    paths: ArtifactPaths,
    raw_dir: Path,
    generator_cores: list[int],
    repeat: int,
    generator_cpus: float | None = None,
) -> dict:
    """One headless Locust run; returns its point record (figures after warm-up).

    generator_cpus: the CPUs Locust may use, when a quota rather than its cores bounds it
    (a pod's CPU limit); len(generator_cores) if None.
    """
    name = f"{target.stack.value}-{target.protocol.value}-{target.device}-{load.slug}-rep{repeat}"
    records = raw_dir / f"{name}.csv"
    run_s = profile.warmup_s + profile.duration_s
    env = {
        **os.environ,
        **target.env,
        "LOADTEST_BATCH_SIZE": str(load.batch_size),
        "LOADTEST_MODE": load.mode.value,
        "LOADTEST_RATE": str(load.rate),
        "LOADTEST_USERS": str(load.users),
        "LOADTEST_REFERENCE": str(paths.reference_predictions),
        "LOADTEST_RECORDS": str(records),
    }
    command = [
        "taskset", "-c", ",".join(map(str, generator_cores)),
        str(Path(sys.executable).parent / "locust"),
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary", "--skip-log-setup",
        "-u", str(load.users), "-r", str(load.users),
        "-t", f"{math.ceil(run_s)}s", "--stop-timeout", "2",
        "--host", target.host,
        "--exit-code-on-error", "0",
        USER_CLASSES[(target.stack, target.protocol)],
    ]  # fmt: skip
    before = scrape(target.metrics_url) if target.metrics_url else {}
    log = raw_dir / f"{name}.log"
    with open(log, "wb") as log_handle:
        locust = subprocess.Popen(command, env=env, stdout=log_handle, stderr=subprocess.STDOUT)
        with ExitStack() as sampling:
            server_sampler = None
            if target.server_pid is not None:
                server_sampler = sampling.enter_context(TreeSampler(target.server_pid))
            gen = sampling.enter_context(TreeSampler(locust.pid))
            code = locust.wait(timeout=run_s + 60)
    after = scrape(target.metrics_url) if target.metrics_url else {}
    if code != 0 or not records.exists():
        raise RuntimeError(f"locust failed ({code}) for {name}; see {log}")
    stats = analysis.point_stats(analysis.read_records([records]), profile.warmup_s,
                                 load.batch_size)
    generator_capacity = 100.0 * (generator_cpus or len(generator_cores))
    point = {
        "stack": target.stack.value,
        "protocol": target.protocol.value,
        "device": target.device,
        "batch_size": load.batch_size,
        "mode": load.mode.value,
        "users": load.users,
        "rate": load.rate if load.mode is Mode.OPEN else None,
        "repeat": repeat,
        "raw": records.name,
        **stats,
        "generator_cpu_pct": gen.samples.mean_cpu(),
        "generator_saturated": gen.samples.mean_cpu()
        >= analysis.GENERATOR_SATURATED_PCT / 100.0 * generator_capacity,
        "server_cpu_pct": server_sampler.samples.mean_cpu() if server_sampler else None,
        "server_rss_mb": server_sampler.samples.max_rss() if server_sampler else None,
    }
    point.update(breakdown(target.stack.value, before, after))
    return point


class Progress:
    """Prints point i of N, elapsed and remaining time, and the last point's figures."""

    def __init__(self, total: int, seconds_per_point: float) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.estimate = seconds_per_point

    def point(self, label: str, result: dict) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        per_point = elapsed / self.done if self.done else self.estimate
        remaining = per_point * (self.total - self.done)
        flag = "  GENERATOR SATURATED" if result.get("generator_saturated") else ""
        print(
            f"[{self.done:>3}/{self.total}] {label:<42} "
            f"{result.get('rps', 0):7.0f} req/s  p50 {result.get('p50_ms', 0):6.2f} ms  "
            f"p99 {result.get('p99_ms', 0):6.2f} ms  fail {result.get('failures', 0)}  "
            f"| {elapsed / 60:4.1f} min elapsed, ~{remaining / 60:4.1f} min left{flag}",
            flush=True,
        )


def closed_loads(profile: Profile) -> list[Load]:
    return [
        Load(Mode.CLOSED, batch, users)
        for batch, levels in profile.closed_users.items()
        for users in levels
    ]


def sweep(
    profile: Profile,
    stacks: list[Stack],
    paths: ArtifactPaths,
    run_dir: Path,
    devices: list[str] | None = None,
) -> None:
    devices = devices or default_devices(cuda_available())
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    server_cores, generator_cores = split_cores(usable_cores())
    env_block = environment.describe(
        {
            "profile": profile.name,
            "server_cores": server_cores,
            "generator_cores": generator_cores,
            "pinning": "taskset: servers and in-process baselines on server cores, "
            "Locust on generator cores",
            "warmup_s": profile.warmup_s,
            "duration_s": profile.duration_s,
            "repeats": profile.repeats,
            "slo_p99_ms": profile.slo_p99_ms,
            "devices": devices,
            "model": model_block(paths),
        }
    )
    print(f"bench: baselines in-process on cores {server_cores} ...", flush=True)
    subprocess.run(
        [
            sys.executable, "-m", "loadtests.baselines",
            "--artifacts", str(paths.root),
            "--batches", ",".join(map(str, profile.baseline_batches)),
            "--iterations", str(profile.baseline_iterations),
            "--cores", ",".join(map(str, server_cores)),
            "--out", str(run_dir / "baselines.json"),
        ],
        check=True,
    )  # fmt: skip
    points_file = run_dir / "points.jsonl"
    skipped: dict[str, str] = {}
    per_target = len(closed_loads(profile)) + len(profile.open_fractions)
    planned = (
        len(devices) * sum(len(PROTOCOLS[s]) for s in stacks) * per_target * profile.repeats
    )
    progress = Progress(planned, profile.warmup_s + profile.duration_s + 3)
    print(f"bench: up to {planned} points; servers on cores {server_cores}, "
          f"Locust on cores {generator_cores}", flush=True)
    for device in devices:
        for stack in stacks:
            key = f"{stack.value}/{device}"
            if device != "cpu" and stack not in GPU_STACKS:
                skipped[key] = "GPU rows cover the torch stacks (TF Serving on GPU needs the " \
                    "tensorflow/serving:*-gpu image: see k8s/overlays/gpu)"
                progress.total -= len(PROTOCOLS[stack]) * per_target * profile.repeats
                continue
            with ExitStack() as exits:
                with environment_patch(device_env(device, cuda_available())):
                    running = start_stack(stack, paths, run_dir / "servers" / device,
                                          server_cores, exits)
                if isinstance(running, str):
                    skipped[key] = running
                    progress.total -= len(PROTOCOLS[stack]) * per_target * profile.repeats
                    print(f"bench: {key} SKIPPED: {running}", flush=True)
                    continue
                env_block.setdefault("servers", {})[key] = server_settings(running)
                for target in targets_of(running, device):
                    sweep_target(target, profile, paths, raw_dir, generator_cores,
                                 points_file, progress)
    env_block["skipped"] = skipped
    (run_dir / "environment.json").write_text(json.dumps(env_block, indent=2) + "\n")


def sweep_target(
    target: Target,
    profile: Profile,
    paths: ArtifactPaths,
    raw_dir: Path,
    generator_cores: list[int],
    points_file: Path,
    progress: Progress,
    generator_cpus: float | None = None,
) -> None:
    """The profile's closed-loop levels, then its open-loop rates as fractions of the
    closed-loop peak, against one target (local runs and loadtests.cluster alike)."""
    peak = 0.0
    for load in closed_loads(profile):
        peak = max(peak, measure(target, load, profile, paths, raw_dir, generator_cores,
                                 points_file, progress, generator_cpus))
    for fraction in profile.open_fractions:
        load = Load(Mode.OPEN, 1, profile.open_users, rate=round(peak * fraction))
        measure(target, load, profile, paths, raw_dir, generator_cores, points_file,
                progress, generator_cpus)


def measure(target, load, profile, paths, raw_dir, generator_cores, points_file, progress,
            generator_cpus=None):
    """Runs the repeats of one load level; returns the best throughput seen (batch 1)."""
    best = 0.0
    for repeat in range(profile.repeats):
        point = run_point(target, load, profile, paths, raw_dir, generator_cores, repeat,
                          generator_cpus)
        with open(points_file, "a") as handle:
            handle.write(json.dumps(point) + "\n")
        progress.point(f"{target.stack.value}/{target.protocol.value} {load.slug} #{repeat}",
                       point)
        if load.batch_size == 1:
            best = max(best, point.get("rps", 0.0))
    return best


# Environment variables that set a server's workers and threads (read back from the
# running processes, so the report shows what ran, not what was meant to run).
THREAD_SETTINGS = (
    "DIGITNET_TORCH_THREADS",
    "DIGITNET_TORCHSERVE_WORKERS",
    "FLASK_TORCH_WORKERS",
    "FLASK_TORCH_THREADS",
    "OMP_NUM_THREADS",
)


def server_settings(running: RunningStack) -> dict:
    """Workers, threads and pinning as the server runs them (read from its process tree)."""
    try:
        proc = psutil.Process(running.server.pid)
        tree = [proc, *proc.children(recursive=True)]
        threads = sum(p.num_threads() for p in tree)
        affinity = sorted(proc.cpu_affinity())
        environ = {}
        for member in tree:
            environ.update({k: v for k, v in member.environ().items() if k in THREAD_SETTINGS})
        workers = sum(
            1
            for member in tree
            if "model_service_worker" in " ".join(member.cmdline())
            or (running.stack is Stack.FLASK_TORCH and member.ppid() == proc.pid)
        )
    except psutil.Error:
        tree, threads, affinity, environ, workers = [], 0, [], {}, 0
    return {
        "worker_processes": workers,
        "thread_settings": environ,
        "processes": len(tree),
        "os_threads": threads,
        "cpu_affinity": affinity,
        "ports": running.ports,
    }


def model_block(paths: ArtifactPaths) -> dict:
    spec = paths.spec
    return {"name": spec.name, "side": spec.side, "channels": list(spec.channels)}


def new_run_dir(run_id: str | None) -> Path:
    run_dir = RESULTS / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sweep_cmd = sub.add_parser("sweep", help="every stack and protocol, then the report")
    sweep_cmd.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    sweep_cmd.add_argument("--stacks", default=",".join(s.value for s in Stack))
    sweep_cmd.add_argument(
        "--devices", default="", help="cpu,cuda (default: cpu, plus cuda when available)"
    )
    point_cmd = sub.add_parser("point", help="one load point against one stack")
    point_cmd.add_argument("--stack", choices=[s.value for s in Stack], required=True)
    point_cmd.add_argument("--protocol", choices=[p.value for p in Protocol], default="rest")
    point_cmd.add_argument("--users", type=int, default=8)
    point_cmd.add_argument("--rate", type=float, default=0.0, help="open loop when > 0")
    point_cmd.add_argument("--batch", type=int, default=1)
    point_cmd.add_argument("--duration", type=float, default=20.0)
    point_cmd.add_argument("--warmup", type=float, default=3.0)
    point_cmd.add_argument("--device", choices=DEVICES, default="cpu")
    for cmd in (sweep_cmd, point_cmd):
        cmd.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
        cmd.add_argument("--run-id", default=None)
    args = parser.parse_args()
    paths = ensure_artifacts(args.artifacts)
    run_dir = new_run_dir(args.run_id)
    from loadtests.report import write_report

    if args.command == "sweep":
        stacks = [Stack(s) for s in args.stacks.split(",") if s]
        devices = [d for d in args.devices.split(",") if d] or None
        sweep(PROFILES[args.profile], stacks, paths, run_dir, devices)
    else:
        run_single_point(args, paths, run_dir)
    report = write_report(run_dir)
    print(f"bench: report {report}")
    return 0


def run_single_point(args, paths: ArtifactPaths, run_dir: Path) -> None:
    stack, protocol = Stack(args.stack), Protocol(args.protocol)
    profile = Profile(
        name="point", warmup_s=args.warmup, duration_s=args.duration, repeats=1,
        closed_users={}, open_fractions=(), open_users=args.users, baseline_batches=(),
        baseline_iterations=0,
    )  # fmt: skip
    server_cores, generator_cores = split_cores(usable_cores())
    mode = Mode.OPEN if args.rate > 0 else Mode.CLOSED
    load = Load(mode, args.batch, args.users, args.rate)
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as exits:
        with environment_patch(device_env(args.device, cuda_available())):
            running = start_stack(stack, paths, run_dir / "servers", server_cores, exits)
        if isinstance(running, str):
            raise SystemExit(f"loadtest: {stack.value} cannot run here: {running}")
        target = next(t for t in targets_of(running, args.device) if t.protocol is protocol)
        env_block = environment.describe(
            {"profile": "point", "server_cores": server_cores,
             "generator_cores": generator_cores, "warmup_s": args.warmup,
             "duration_s": args.duration, "repeats": 1, "slo_p99_ms": 50.0,
             "servers": {stack.value: server_settings(running)}, "skipped": {},
             "model": model_block(paths)}
        )  # fmt: skip
        progress = Progress(1, args.warmup + args.duration)
        measure(target, load, profile, paths, raw_dir, generator_cores,
                run_dir / "points.jsonl", progress)
    (run_dir / "environment.json").write_text(json.dumps(env_block, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
