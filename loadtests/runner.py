"""Headless Locust runs: one point, or a whole sweep over every stack and protocol.

  python -m loadtests.runner sweep --profile quick      # what `make bench` runs
  python -m loadtests.runner point --stack flask_torch --protocol rest --users 8

Servers are started here on free loopback ports, pinned to the server cores. Locust runs
pinned to the other cores (one process per core, Locust's --processes); its CPU and the
server's CPU and memory are sampled for every point, and on CUDA points the GPUs' own
counters too (loadtests.gpu_telemetry). The sweep's phases (generator floor,
interleaved levels with wrk beside them, SLO capacity search) are loadtests.sweep.
Results go to results/<run-id>/: raw/ (per-request CSVs), points.jsonl (one line per
window), levels.jsonl, floors.jsonl, capacity.jsonl, framework_floor.jsonl,
environment.json, baselines.json, then summary.json and REPORT.md from loadtests.report.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.clients import Predictor, RestClient, TfServingGrpcClient
from harness.artifacts import ensure_artifacts
from harness.lifecycle import RunningStack, skipped_reason, start_stack
from harness.paths import timestamped_dir
from harness.payload import PayloadSet
from loadtests import analysis, devices, distributed, environment, gpu_telemetry
from loadtests.dcgm import DCGM_URL_ENV, DEFAULT_NAMESPACE, NAMESPACE_ENV, DcgmSampler
from loadtests.distributed import Workers
from loadtests.gpu_telemetry import GpuSampler
from loadtests.profiles import PROFILES, Profile
from loadtests.records import record_files
from loadtests.sampler import ResourceSamples, TreeSampler
from loadtests.server_metrics import scrape
from loadtests.settings import Mode
from services.process import LOOPBACK, free_port, usable_cores
from services.registry import load_stack, parse_stacks, stack_names
from services.stack import CPU, CUDA, GRPC, REST, ServingStack

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def split_cores(cores: list[int]) -> tuple[list[int], list[int]]:
    """(server cores, generator cores). The generator gets a quarter of the cores (one
    at least), the server the rest; with one core both share it, and the report says so."""
    if len(cores) < 2:
        return cores, cores
    generator = max(1, len(cores) // 4)
    return cores[:-generator], cores[-generator:]


def limit_cores(server_cores: list[int], cpus: int | None) -> list[int]:
    """The first `cpus` of the server cores (a GPU server's CPU budget), all if None.

    The cores left out stay idle rather than going to the generator, so runs with
    different budgets differ only in the server's CPUs.

    Raises:
        ValueError: `cpus` is below 1 or more than the server side has.
    """
    if cpus is None:
        return server_cores
    if not 1 <= cpus <= len(server_cores):
        raise ValueError(f"{cpus} CPUs per server asked, but the server side has "
                         f"{len(server_cores)} cores ({server_cores})")
    return server_cores[:cpus]


DEVICES = (CPU, CUDA)


def server_env(stack: ServingStack, device: str, cuda_available: bool) -> dict[str, str]:
    """The stack plugin's environment for `device`. Asking for CUDA where there is none is
    an error, never a silent CPU run labelled GPU."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {DEVICES}")
    if device == CUDA and not cuda_available:
        raise ValueError("device cuda requested but torch.cuda.is_available() is False")
    return stack.device_env(device)


def default_devices(cuda_available: bool) -> list[str]:
    """CPU always; CUDA too when this machine has it, so one run holds both columns."""
    return [CPU, CUDA] if cuda_available else [CPU]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class Target:
    """Where Locust sends one stack's protocol, and how to read the server's metrics."""

    stack: str
    protocol: str
    host: str
    # LOADTEST_* variables for the Locust process: route, headers, gRPC target.
    env: dict[str, str]
    # None when the server runs elsewhere (a pod in a cluster): then it is not sampled.
    server_pid: int | None
    metrics_url: str | None = None
    device: str = CPU
    # REST: the predict route and the headers (token included) for an independent client.
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.stack}/{self.protocol}/{self.device}"

    @property
    def url(self) -> str:
        return self.host.rstrip("/") + self.path

    @property
    def user_class(self) -> str:
        return load_stack(self.stack).locust_users[self.protocol]


def target_for(
    stack: ServingStack,
    client: Predictor,
    device: str = CPU,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> Target:
    """The load target behind one of the stack's clients: the client's route, headers
    (a token included) and address, passed to Locust as data."""
    env = {"LOADTEST_TARGET": f"{stack.name}/{client.protocol}"}
    path, headers = "", {}
    if isinstance(client, RestClient):
        host, path, headers = client.base_url, client.path, dict(client.headers)
        env["LOADTEST_PATH"] = path
        env["LOADTEST_HEADERS"] = json.dumps(headers)
    elif isinstance(client, TfServingGrpcClient):
        host = f"http://{client.target}"
        env["LOADTEST_GRPC_TARGET"] = client.target
    else:
        raise TypeError(f"{stack.name}: no load target for client {client!r}")
    if client.protocol not in stack.locust_users:
        raise ValueError(f"{stack.name} declares no Locust user for {client.protocol}")
    return Target(stack.name, client.protocol, host, env, server_pid, metrics_url, device,
                  path, headers)


def targets_of(running: RunningStack, device: str = CPU) -> list[Target]:
    metrics_url = running.stack.metrics_url(running.server)
    return [
        target_for(running.stack, client, device, running.server.pid, metrics_url)
        for client in running.clients
    ]


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


@functools.cache
def one_image_body(paths: ArtifactPaths) -> bytes:
    """A batch-1 request body of a real test digit, encoded once per run (the device is
    read back before every window)."""
    return PayloadSet(paths.spec, 1, paths.reference_predictions, limit=1).batches[0].body


def check_served_device(target: Target, paths: ArtifactPaths) -> str:
    """What the target's server computes on, read back from one real reply; raises
    devices.DeviceMismatch when that is not the device the point is asked for."""
    stack = load_stack(target.stack)
    served = None
    if target.protocol == REST and stack.reports_device:
        served = devices.read_back(target.url, one_image_body(paths), target.headers)
    # gRPC replies carry no header of ours; the stack's REST reply speaks for the server.
    return devices.check(target.key, target.device, served,
                         stack.reports_device and target.protocol == REST)


def generator_processes(generator_cores: list[int], generator_cpus: float | None = None) -> int:
    """Locust processes for the generator's cores: one per core (Locust's own
    --processes), so a many-core machine is not measured through one Python process."""
    return max(1, int(generator_cpus) if generator_cpus else len(generator_cores))


def spread_args(processes: int, workers: Workers | None = None) -> list[str]:
    """Locust's arguments for its processes: a master for `workers` elsewhere, or
    `processes` local ones (--processes) whose master listens on a free loopback port
    only. Locust's own default is every address on 5557: in the load generator's pod,
    the worker pods (which connect to that port between windows) would join a local run,
    such as the calibration's, and send its load from their pods."""
    if workers:
        return workers.master_args()
    if processes <= 1:
        return []
    port = str(free_port())
    return ["--processes", str(processes), "--master-bind-host", LOOPBACK,
            "--master-bind-port", port, "--master-port", port]  # fmt: skip


def run_point(
    target: Target,
    load: Load,
    profile: Profile,
    paths: ArtifactPaths,
    raw_dir: Path,
    generator_cores: list[int],
    repeat: int,
    generator_cpus: float | None = None,
    neighbours: Mapping[str, int] | None = None,
    label: str = "",
    workers: Workers | None = None,
) -> dict:
    """One headless Locust run; returns its point record (figures after warm-up).

    Args:
        generator_cpus: the CPUs Locust may use, when a quota rather than its cores bounds
            it (a pod's CPU limit); len(generator_cores) if None.
        neighbours: other servers idling on the server cores meanwhile (stack -> pid);
            their CPU is sampled, each tree apart, so the report can show how much they
            took of the server's cores during this point, and whose it was.
        label: prefixes the raw file names (e.g. "floor" for the generator's floor runs).
        workers: Locust's distributed mode: this process runs the master, the users run
            in `workers.count` worker processes elsewhere (loadtests/distributed.py).
    """
    name = f"{target.stack}-{target.protocol}-{target.device}-{load.slug}-rep{repeat}"
    name = f"{label}-{name}" if label else name
    records = raw_dir / f"{name}.csv"
    run_s = profile.warmup_s + profile.duration_s
    processes = workers.count if workers else generator_processes(generator_cores,
                                                                  generator_cpus)
    env = {
        **os.environ,
        **target.env,
        "LOADTEST_BATCH_SIZE": str(load.batch_size),
        "LOADTEST_MODE": load.mode.value,
        "LOADTEST_RATE": str(load.rate),
        "LOADTEST_USERS": str(load.users),
        "LOADTEST_REFERENCE": str(paths.reference_predictions),
        "LOADTEST_RECORDS": str(records),
        "LOADTEST_ARRIVALS": profile.arrivals,
        "LOADTEST_SEED": str(profile.seed + repeat),
        # Longer than the run: the schedule must not end before Locust's run time does.
        "LOADTEST_SCHEDULE_S": str(run_s + 30),
        "LOADTEST_PROCESSES": str(processes),
        "LOADTEST_DISTRIBUTED": "1" if workers else "0",
    }
    spread = spread_args(processes, workers)
    command = [
        "taskset", "-c", ",".join(map(str, generator_cores)),
        str(Path(sys.executable).parent / "locust"),
        "-f", str(LOCUSTFILE),
        "--headless", "--only-summary", "--skip-log-setup",
        "-u", str(load.users), "-r", str(load.users),
        "-t", f"{math.ceil(run_s)}s", "--stop-timeout", "2",
        "--host", target.host,
        "--exit-code-on-error", "0",
        *spread,
        target.user_class,
    ]  # fmt: skip
    # The null server of a generator floor computes nothing: no device to read back.
    served_device = None if label == "floor" else check_served_device(target, paths)
    before = scrape(target.metrics_url) if target.metrics_url else {}
    log = raw_dir / f"{name}.log"
    with open(log, "wb") as log_handle:
        locust = subprocess.Popen(command, env=env, stdout=log_handle, stderr=subprocess.STDOUT)
        with ExitStack() as sampling:
            server_sampler = None
            if target.server_pid is not None:
                server_sampler = sampling.enter_context(TreeSampler(target.server_pid))
            gen = sampling.enter_context(TreeSampler(locust.pid))
            sampler = gpu_sampler(target)
            gpu = sampling.enter_context(sampler) if sampler is not None else None
            idle = {name: sampling.enter_context(TreeSampler(pid))
                    for name, pid in (neighbours or {}).items()}  # fmt: skip
            # A master also waits for its workers, and then for their records.
            wait_s = workers.wait_s + distributed.COLLECT_TIMEOUT_S if workers else 0.0
            code = locust.wait(timeout=run_s + 60 + wait_s)
    after = scrape(target.metrics_url) if target.metrics_url else {}
    files = record_files(records)
    if workers and code != 0 and distributed.WORKERS_MISSING in log.read_text(errors="replace"):
        raise RuntimeError(f"{name}: the master's {workers.count} Locust workers did not all "
                           f"connect within {workers.wait_s:g} s (are the worker processes "
                           "running and able to reach the master? In a cluster: `kubectl get "
                           "pods -l app.kubernetes.io/component=loadgen-worker`)")
    if code != 0 or not files:
        raise RuntimeError(f"locust failed ({code}) for {name}; see {log}")
    spread_fields = {}
    if workers:
        summary = distributed.read_workers(records)
        problem = distributed.workers_problem(summary)
        if problem:
            raise RuntimeError(f"{name}: {problem}; see {log}")
        spread_fields = distributed_generator(summary, gen.samples)
    stats = analysis.point_stats(analysis.read_records(files), profile.warmup_s,
                                 load.batch_size, profile.duration_s)
    generator_capacity = 100.0 * (generator_cpus or len(generator_cores))
    point = {
        "stack": target.stack,
        "protocol": target.protocol,
        "device": target.device,
        "served_device": served_device,
        "batch_size": load.batch_size,
        "mode": load.mode.value,
        "users": load.users,
        "rate": load.rate if load.mode is Mode.OPEN else None,
        "repeat": repeat,
        "raw": records.name,
        "warmup_s": profile.warmup_s,
        "duration_s": profile.duration_s,
        **stats,
        "generator_cpu_pct": gen.samples.mean_cpu(),
        "generator_busiest_process_cpu_pct": gen.samples.busiest_process_cpu(),
        "generator_saturated": generator_saturated(gen.samples, generator_capacity),
        "server_cpu_pct": server_sampler.samples.mean_cpu() if server_sampler else None,
        "server_rss_mb": server_sampler.samples.max_rss() if server_sampler else None,
        "neighbours_cpu_pct": (sum(n.samples.mean_cpu() for n in idle.values()) if idle
                               else None),
        "neighbours_cpu_by_stack": {name: n.samples.mean_cpu() for name, n in idle.items()}
                                   or None,
        "generator_processes": processes,
        "arrivals": profile.arrivals if load.mode is Mode.OPEN else None,
        "seed": profile.seed + repeat if load.mode is Mode.OPEN else None,
    }
    point.update(spread_fields)
    point.update(gpu_fields(target, gpu))
    point.update(load_stack(target.stack).server_timings(before, after))
    return point


def distributed_generator(summary: dict, master: ResourceSamples) -> dict:
    """A distributed point's generator figures: every worker process's CPU as it reported
    it (each on a CPU of its own: one Locust process per worker pod), the master's as
    sampled here. Saturated when any worker, or the master, was busy
    GENERATOR_SATURATED_PCT of a core: a single-threaded worker at 100% starves its users
    whatever the others do."""
    cpus = [w["cpu_pct"] or 0.0 for w in summary["workers"]]
    busiest = max([*cpus, master.busiest_process_cpu()])
    return {
        "generator_cpu_pct": master.mean_cpu() + sum(cpus),
        "generator_busiest_process_cpu_pct": busiest,
        "generator_saturated": busiest >= analysis.GENERATOR_SATURATED_PCT,
        "generator_master_cpu_pct": master.mean_cpu(),
        "generator_workers": [{k: w[k] for k in ("index", "host", "cpu_pct", "requests")}
                              for w in summary["workers"]],  # fmt: skip
    }


def generator_saturated(samples: ResourceSamples, capacity_pct: float) -> bool:
    """Whether the generator was too busy to be trusted: its tree used
    GENERATOR_SATURATED_PCT of the CPU it may use (`capacity_pct`, 100 per CPU), or any one
    of its processes did of one core. Locust's processes are single-threaded (gevent): with
    --processes N in a pod of N CPUs, one worker at 100% while the others idle is hidden in
    the sum (180% of 200 passes the sum's gate), and its users are the ones starved."""
    share = analysis.GENERATOR_SATURATED_PCT / 100.0
    return (samples.mean_cpu() >= share * capacity_pct
            or samples.busiest_process_cpu() >= analysis.GENERATOR_SATURATED_PCT)


def samples_gpu(target: Target) -> bool:
    """NVML here sees the server's GPU only when the server was started here."""
    return target.device == CUDA and target.server_pid is not None


def gpu_sampler(target: Target) -> GpuSampler | DcgmSampler | None:
    """What samples a CUDA point's GPU: NVML here for a server started here; for a server
    in a pod, the DCGM exporter when LOADTEST_DCGM_URL names it (loadtests/dcgm.py: the
    GPUs of the pods behind the target's Service name); else nothing."""
    if target.device != CUDA:
        return None
    if samples_gpu(target):
        return GpuSampler()
    url = os.environ.get(DCGM_URL_ENV, "").strip()
    if not url:
        return None
    service = urlsplit(target.host).hostname or target.stack
    return DcgmSampler(url, os.environ.get(NAMESPACE_ENV, "").strip() or DEFAULT_NAMESPACE,
                       f"{service}-")


def gpu_fields(target: Target, sampler: GpuSampler | DcgmSampler | None) -> dict:
    """{"gpu": summary} for a CUDA point, saying why where it is empty; {} for a CPU
    point, which carries no GPU block."""
    if target.device != CUDA:
        return {}
    if sampler is None:
        return {"gpu": gpu_telemetry.unsampled(
            "the server runs on another machine (a pod): this machine's NVML cannot see "
            f"its GPU, and no DCGM exporter was named ({DCGM_URL_ENV})")}  # fmt: skip
    return {"gpu": sampler.summary()}


class Progress:
    """Prints point i of N, elapsed and remaining time, and the last point's figures. N
    is an estimate (sweep.planned_points: each level at its most windows, so a run
    usually ends before it); a point beyond it grows N, never a negative time left."""

    def __init__(self, total: int, seconds_per_point: float) -> None:
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.estimate = seconds_per_point

    def point(self, label: str, result: dict) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        elapsed = time.monotonic() - self.started
        per_point = elapsed / self.done if self.done else self.estimate
        remaining = per_point * (self.total - self.done)
        flag = "  GENERATOR SATURATED" if result.get("generator_saturated") else ""
        if result.get("key_rejected"):
            flag += f"  KEY REJECTED ({result['key_rejected']} requests)"
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


def plan_runs(
    stacks: list[ServingStack], devices: list[str]
) -> list[tuple[ServingStack, str, str | None]]:
    """(stack, device, why it is skipped or None) for every stack on every device, in the
    order a sweep runs them."""
    plan = []
    for device in devices:
        for stack in stacks:
            reason = skipped_reason(stack)
            if reason is None and device not in stack.devices:
                reason = f"{stack.name} runs on {', '.join(stack.devices)}, not {device}"
            plan.append((stack, device, reason))
    return plan


def measure(target, load, profile, paths, raw_dir, generator_cores, points_file, progress,
            generator_cpus=None):
    """Runs the repeats of one load level; returns the best throughput seen (batch 1)."""
    best = 0.0
    for repeat in range(profile.repeats):
        point = run_point(target, load, profile, paths, raw_dir, generator_cores, repeat,
                          generator_cpus)
        with open(points_file, "a") as handle:
            handle.write(json.dumps(point) + "\n")
        progress.point(f"{target.stack}/{target.protocol} {load.slug} #{repeat}",
                       point)
        if load.batch_size == 1:
            best = max(best, point.get("rps", 0.0))
    return best


def server_settings(running: RunningStack) -> dict:
    """Workers, threads and pinning as the server runs them (read from its process tree,
    so the report shows what ran, not what was meant to run)."""
    stack = running.stack
    try:
        proc = psutil.Process(running.server.pid)
        tree = [proc, *proc.children(recursive=True)]
        threads = sum(p.num_threads() for p in tree)
        affinity = sorted(proc.cpu_affinity())
        environ = {}
        for member in tree:
            environ.update(
                {k: v for k, v in member.environ().items() if k in stack.thread_settings}
            )
        workers = len(stack.workers(running.server))
    except psutil.Error:
        tree, threads, affinity, environ, workers = [], 0, [], {}, 0
    return {
        "worker_processes": workers,
        "thread_settings": environ,
        "processes": len(tree),
        "os_threads": threads,
        "cpu_affinity": affinity,
        "ports": running.ports,
        "ready_s": round(running.ready_s, 2),
    }


def stack_kind(stack: ServingStack) -> dict[str, str]:
    """What the report's framework x server table files a stack under."""
    return {"framework": stack.framework, "server": stack.server_kind}


def model_block(paths: ArtifactPaths) -> dict:
    spec = paths.spec
    return {"name": spec.name, "side": spec.side, "channels": list(spec.channels)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sweep_cmd = sub.add_parser("sweep", help="every stack and protocol, then the report")
    sweep_cmd.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    sweep_cmd.add_argument("--stacks", default=",".join(stack_names()))
    sweep_cmd.add_argument(
        "--devices", default="", help="cpu,cuda (default: cpu, plus cuda when available)"
    )
    point_cmd = sub.add_parser("point", help="one load point against one stack")
    point_cmd.add_argument("--stack", choices=stack_names(), required=True)
    point_cmd.add_argument("--protocol", choices=(REST, GRPC), default=REST)
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
    if args.command == "sweep":
        try:
            stacks = parse_stacks(args.stacks)
        except ValueError as err:
            parser.error(str(err))
    run_dir = timestamped_dir(run_id=args.run_id)
    from loadtests.report import write_report

    if args.command == "sweep":
        from loadtests.sweep import sweep

        devices = [d for d in args.devices.split(",") if d] or None
        sweep(PROFILES[args.profile], stacks, paths, run_dir, devices)
    else:
        run_single_point(args, paths, run_dir)
    report = write_report(run_dir)
    print(f"bench: report {report}")
    return 0


def run_single_point(args, paths: ArtifactPaths, run_dir: Path) -> None:
    stack = load_stack(args.stack)
    if args.protocol not in stack.protocols:
        raise SystemExit(f"loadtest: {stack.name} serves {', '.join(stack.protocols)}")
    profile = Profile(
        name="point", warmup_s=args.warmup, duration_s=args.duration, repeats=1,
        closed_users={}, open_users=args.users, baseline_batches=(),
        baseline_iterations=0,
    )  # fmt: skip
    server_cores, generator_cores = split_cores(usable_cores())
    mode = Mode.OPEN if args.rate > 0 else Mode.CLOSED
    load = Load(mode, args.batch, args.users, args.rate)
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    reason = skipped_reason(stack)
    if reason is not None:
        raise SystemExit(f"loadtest: {stack.name} cannot run here: {reason}")
    with ExitStack() as exits:
        running = start_stack(stack, paths, run_dir / "servers" / stack.name, exits,
                              cores=server_cores,
                              env=server_env(stack, args.device, cuda_available()))
        target = next(t for t in targets_of(running, args.device) if t.protocol == args.protocol)
        env_block = environment.describe(
            {"profile": "point", "server_cores": server_cores,
             "generator_cores": generator_cores, "warmup_s": args.warmup,
             "duration_s": args.duration, "repeats": 1, "slo_p99_ms": 50.0,
             "servers": {stack.name: server_settings(running)}, "skipped": {},
             "model": model_block(paths), "floor_paths": {stack.name: stack.floor_path},
             "stack_kinds": {stack.name: stack_kind(stack)}}
        )  # fmt: skip
        progress = Progress(1, args.warmup + args.duration)
        measure(target, load, profile, paths, raw_dir, generator_cores,
                run_dir / "points.jsonl", progress)
    (run_dir / "environment.json").write_text(json.dumps(env_block, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
