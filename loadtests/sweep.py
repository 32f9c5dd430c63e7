"""`make bench`: the whole comparison, measured so that a reader can trust each figure.

  python -m loadtests.runner sweep --profile quick

1. In-process baselines on the server cores (loadtests.baselines).
2. Every available stack is started at once, pinned to the server cores; while one is
   measured the others idle there, and their CPU is sampled for every point (the report
   shows it was nil, or not).
3. The generator's floor: for each target, nginx answers with the stack's exact reply
   (captured from the live stack), and the same Locust user class runs at every closed
   level and at the calibration rates (floors.jsonl). Every later point carries its
   generator share (loadtests.calibration); without nginx the run says it is
   uncalibrated.
4. Closed-loop levels, interleaved: level by level, each target in turn (A, B, C, A, B,
   C), so drift over the run hits every stack alike. A level repeats until its last
   windows agree (loadtests.stability); each window records the machine's drift (a fixed
   calibration loop before and after, and CPU steal). Then wrk, an independent client,
   runs the same level on the same server (levels.jsonl, with the divergence).
5. SLO capacity per batch-1 target: bisection over the open-loop offered rate, Poisson
   arrivals from a recorded seed (loadtests.capacity); trials that the generator bounds
   or fell behind on do not pass (capacity.jsonl).
6. Each framework's floor, when the profile asks for it: wrk at one connection on the
   predict path and on the stack's no-op twin on the same server (started with its
   noop_env for the whole device), interleaved (loadtests.framework_floor,
   framework_floor.jsonl); then, on the CPU, each Flask stack's app in process, our code's
   pieces alone against the same request in the app's flow (loadtests.own_code,
   own_code.jsonl).

Every window is a line of points.jsonl; the report (loadtests.report) reads it all.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from digitnet.artifacts import ArtifactPaths
from digitnet.codec import JSON_CONTENT_TYPE
from harness.lifecycle import START_ERRORS, RunningStack, did_not_start, start_stack
from harness.payload import PayloadSet
from loadtests import (
    analysis,
    calibration,
    capacity,
    coldstart,
    devices,
    drift,
    environment,
    framework_floor,
    own_code,
    stability,
    wrk,
)
from loadtests.baselines import command as baseline_command
from loadtests.calibration import GeneratorFloor
from loadtests.distributed import Workers
from loadtests.null_server import NullServer, capture_reply, nginx_available
from loadtests.profiles import Profile
from loadtests.runner import (
    Load,
    Progress,
    Target,
    check_served_device,
    closed_loads,
    cuda_available,
    default_devices,
    generator_processes,
    limit_cores,
    model_block,
    plan_runs,
    run_point,
    server_env,
    server_settings,
    split_cores,
    stack_kind,
    targets_of,
)
from loadtests.settings import Mode
from services.process import usable_cores
from services.registry import load_stack
from services.stack import CPU, REST, ServingStack


def floor_key(target: Target, batch_size: int) -> str:
    """The name a floor is filed under: one per target and batch size, since the null
    server answers with that target's own reply."""
    return f"{target.key}/b{batch_size}"


@dataclass
class Run:
    """Everything the phases share: where to write, what runs, what was measured."""

    profile: Profile
    paths: ArtifactPaths
    run_dir: Path
    server_cores: list[int]
    generator_cores: list[int]
    progress: Progress
    floors: list[GeneratorFloor] = field(default_factory=list)
    neighbours: dict[str, int] = field(default_factory=dict)  # target key -> server pid
    # A pod's CPU quota, when it rather than the generator's cores bounds Locust.
    generator_cpus: float | None = None
    # Called before every window and wrk run: the target with its current credentials
    # (in a cluster, TorchServe's key is re-read from its mounted Secret, which changes
    # when a restart rotates the key). None: targets never change.
    refresh: Callable[[Target], Target] | None = None
    # Locust's distributed mode: the windows' users run in worker processes elsewhere
    # (worker pods), this process runs the master. None: Locust runs here.
    workers: Workers | None = None

    def current(self, target: Target) -> Target:
        return self.refresh(target) if self.refresh else target

    def await_new_key(self, target: Target, refused: Exception) -> Target:
        """`target` once its credential changed, after the server refused the one in use
        (`refused`); polls the refresher for up to KEY_WAIT_S (a Secret's change reaches a
        pod's mounted file within the kubelet's sync, about a minute).

        Raises:
            RuntimeError: naming the target and what to do, when no new key came, or when
                this run has no refresher.
        """
        deadline = time.monotonic() + KEY_WAIT_S
        while self.refresh is not None and time.monotonic() < deadline:
            fresh = self.refresh(target)
            if fresh.headers != target.headers:
                return fresh
            time.sleep(KEY_POLL_S)
        raise RuntimeError(
            f"{target.key}: the server refuses our key ({refused}); it restarted and rotated "
            f"it, and no new key came within {KEY_WAIT_S:.0f} s. In a cluster `make "
            "k8s-loadtest` copies the new key into the Secret while it watches the run; "
            "start it again (the points measured so far are kept)") from refused

    @property
    def raw_dir(self) -> Path:
        return self.run_dir / "raw"

    def append(self, name: str, record: dict) -> None:
        with open(self.run_dir / name, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def others(self, target: Target) -> dict[str, int]:
        """The other servers idling on the server cores while `target` is measured, by
        stack, each process tree once (a server's protocols are targets of one pid)."""
        found: dict[str, int] = {}
        for key, pid in self.neighbours.items():
            if pid != target.server_pid and pid not in found.values():
                found.setdefault(key.split("/", 1)[0], pid)
        return found


# How long a window waits for a new key after the server refused the one in use, and how
# often it looks (KeyRefresher re-reads the mounted Secret).
KEY_WAIT_S = 150.0
KEY_POLL_S = 5.0


# --- 3. the generator's floor ----------------------------------------------------------


def null_target(target: Target, url: str) -> Target:
    """The same target pointed at the null server: same route, headers and user class."""
    return dataclasses.replace(target, host=url, server_pid=None, metrics_url=None,
                               env={**target.env, "LOADTEST_SINGLE_BATCH": "1"})  # fmt: skip


def floor_loads(profile: Profile, batch_size: int) -> list[Load]:
    """The closed levels of `batch_size`, plus for batch 1 the open-loop concurrency
    (whose closed floor is the ceiling open points are read against) and the rates."""
    loads = [Load(Mode.CLOSED, batch_size, users) for users in profile.closed_users[batch_size]]
    if batch_size == 1:
        if profile.open_users not in profile.closed_users[1]:
            loads.append(Load(Mode.CLOSED, 1, profile.open_users))
        loads += [Load(Mode.OPEN, 1, profile.open_users, rate=r) for r in
                  profile.calibration_rates]  # fmt: skip
    return loads


def calibrate(run: Run, targets: list[Target]) -> tuple[bool, str]:
    """Measures the generator's floor for every REST target; returns (calibrated, why)."""
    ok, reason = nginx_available()
    if not ok:
        return False, f"nginx is missing, so the generator was not calibrated: {reason}"
    short = dataclasses.replace(run.profile, warmup_s=run.profile.calibration_warmup_s,
                                duration_s=run.profile.calibration_duration_s)  # fmt: skip
    skipped = []
    for target in targets:
        if target.protocol != REST:
            skipped.append(f"{target.key} (gRPC: the null server speaks HTTP only)")
            continue
        for batch_size in run.profile.closed_users:
            body = PayloadSet(run.paths.spec, batch_size, run.paths.reference_predictions,
                              limit=1).batches[0].body  # fmt: skip
            reply = capture_reply(target.url, body,
                                  {"Content-Type": JSON_CONTENT_TYPE, **target.headers})
            folder = run.run_dir / "null-server" / floor_key(target, batch_size).replace("/", "-")
            with NullServer(reply, folder, cores=run.server_cores) as null:
                fake = null_target(target, null.url)
                for load in floor_loads(run.profile, batch_size):
                    # Locust here, also for a distributed run: the floor is the cost
                    # of one Locust process's client, which the workers run too.
                    point = run_point(fake, load, short, run.paths, run.raw_dir,
                                      run.generator_cores, 0, run.generator_cpus,
                                      label="floor")
                    floor = GeneratorFloor(
                        floor_key(target, batch_size), load.users,
                        load.rate if load.mode is Mode.OPEN else None,
                        point.get("p50_ms", 0.0), point.get("p99_ms", 0.0),
                        point.get("rps", 0.0), point.get("requests", 0),
                    )
                    run.floors.append(floor)
                    run.append("floors.jsonl", {
                        "target": target.key, "batch_size": batch_size,
                        "mode": load.mode.value, "users": load.users, "rate": floor.rate,
                        "p50_ms": floor.p50_ms, "p99_ms": floor.p99_ms, "rps": floor.rps,
                        "requests": floor.requests,
                    })  # fmt: skip
                    run.progress.point(f"floor {target.key} {load.slug}", point)
    if skipped:
        return True, "calibrated, except " + "; ".join(skipped)
    return True, "calibrated against nginx answering each stack's own reply"


# --- one window ------------------------------------------------------------------------


def window(run: Run, target: Target, load: Load, profile: Profile, repeat: int,
           phase: str) -> dict:
    """One Locust window with the machine's drift around it, annotated with the
    generator's share; appended to points.jsonl and returned."""
    def measure(target: Target) -> dict:
        return run_point(target, load, profile, run.paths, run.raw_dir, run.generator_cores,
                         repeat, run.generator_cpus, neighbours=run.others(target),
                         workers=run.workers)  # fmt: skip

    target = run.current(target)
    before = drift.read_drift(repeats=3)
    try:
        point = measure(target)
    except RuntimeError as err:
        if not analysis.key_refused(str(err)):
            raise
        # The device read-back before the window was refused: a rotated key.
        point = measure(run.await_new_key(target, err))
    after = drift.read_drift(repeats=3)
    point["drift"] = drift.drift_between(before, after, run.server_cores or None)
    point["phase"] = phase
    (point,) = calibration.annotate([point], [floor_key(target, load.batch_size)], run.floors)
    point["generator_fell_behind"] = analysis.generator_fell_behind(point,
                                                                    profile.slo_p99_ms)
    run.append("points.jsonl", point)
    run.progress.point(f"{target.stack}/{target.protocol} {load.slug} #{repeat}", point)
    return point


# --- 4. closed-loop levels, with wrk beside them ---------------------------------------


def cross_check(run: Run, target: Target, load: Load, windows: list[dict]) -> dict:
    """wrk at the same connections against the same server, right after the level, run
    profile.wrk_repeats times; the divergence of the windows' median from the runs'."""
    target = run.current(target)
    if target.protocol != REST:
        return {"wrk": None, "wrk_runs": None, "wrk_skipped": "gRPC: wrk speaks HTTP only",
                "divergence": None}  # fmt: skip
    ok, reason = wrk.wrk_available()
    if not ok:
        return {"wrk": None, "wrk_runs": None, "wrk_skipped": reason, "divergence": None}
    body = PayloadSet(run.paths.spec, load.batch_size, run.paths.reference_predictions,
                      limit=1).batches[0].body  # fmt: skip
    runs = [wrk.run_wrk(target.url, body, {"Content-Type": JSON_CONTENT_TYPE, **target.headers},
                        load.users, run.profile.wrk_duration_s, cores=run.generator_cores,
                        script_dir=run.raw_dir)
            for _ in range(max(1, run.profile.wrk_repeats))]  # fmt: skip
    median = {key: statistics.median(w[key] for w in windows if w.get(key) is not None)
              for key in ("rps", "p50_ms") if any(w.get(key) is not None for w in windows)}
    figures = [r.as_point() for r in runs]
    reference = {key: statistics.median(f[key] for f in figures) for key in ("rps", "p50_ms")}
    divergence = wrk.compare_clients(median, reference)
    # `wrk` is the run with the median goodput: a real run, shown in the level tables.
    middle = sorted(runs, key=lambda r: r.goodput_rps)[len(runs) // 2]
    return {"wrk": middle.to_json(), "wrk_runs": [r.to_json() for r in runs],
            "wrk_skipped": None, "divergence": divergence.to_json()}  # fmt: skip


def measure_level(run: Run, target: Target, load: Load) -> tuple[dict, list[dict]]:
    """Windows until stable, then the independent client; the level's record and its
    windows."""
    profile = run.profile
    result = stability.run_until_stable(
        lambda repeat: window(run, target, load, profile, repeat, "sweep"),
        min_windows=profile.min_windows,
        max_trials=profile.max_windows,
        tolerance=profile.stability_tolerance,
        min_requests=profile.min_requests,
    )
    windows = list(result.windows)
    level = {
        "stack": target.stack, "protocol": target.protocol, "device": target.device,
        "batch_size": load.batch_size, "mode": load.mode.value, "users": load.users,
        "rate": None, "stable": result.stable, "stability_reason": result.reason,
        "windows": len(windows), **cross_check(run, target, load, windows),
    }  # fmt: skip
    run.append("levels.jsonl", level)
    return level, windows


# --- 5. SLO capacity by search ----------------------------------------------------------


def trial_result(point: dict, slo_p99_ms: float) -> dict:
    """A capacity trial's figures for the judge: invalid where the generator fell behind
    its schedule (it measured itself); suspect where the generator alone could explain a
    miss of the objective (capacity.judge makes a suspect trial invalid only if it
    misses). A trial that meets the objective through a costly generator stands."""
    behind = None
    if point.get("generator_fell_behind"):
        behind = (f"the generator fell behind its schedule (send lateness p99 "
                  f"{point.get('lateness_p99_ms', 0):.1f} ms)")
    return {**point, "invalid": behind is not None, "invalid_reason": behind or "",
            "suspect_reason": calibration.failure_cause(point, slo_p99_ms)}  # fmt: skip


def search_capacity(run: Run, target: Target, closed_peak_rps: float) -> dict:
    """Bisects the offered rate for the highest one whose p99 meets the objective with at
    most 0.1% errors; writes and returns the bracket."""
    profile = dataclasses.replace(run.profile, duration_s=run.profile.capacity_duration_s)
    trials = iter(range(10_000))

    def measure(rate: float) -> dict:
        load = Load(Mode.OPEN, 1, profile.open_users, rate=round(rate, 1))
        # A trial the generator spoilt (it fell behind, or alone explains the miss) says
        # nothing about the server: measured again, so one hiccup of Locust does not end
        # the search on a lower bound.
        for attempt in range(1 + profile.capacity_retries):
            point = window(run, target, load, profile, next(trials), "capacity")
            result = trial_result(point, profile.slo_p99_ms)
            verdict = capacity.judge(load.rate, result, profile.slo_p99_ms)
            if not verdict.invalid or attempt == profile.capacity_retries:
                return result
            print(f"bench: {target.key} at {load.rate:g} req/s: {verdict.reason}; "
                  "measuring it again", flush=True)  # fmt: skip
        raise AssertionError("unreachable")

    lo, hi = capacity.initial_bracket(closed_peak_rps)
    bracket = capacity.search_capacity(measure, profile.slo_p99_ms, lo, hi,
                                       precision=profile.capacity_precision,
                                       max_trials=profile.capacity_max_trials)  # fmt: skip
    record = {"target": target.key, "stack": target.stack, "protocol": target.protocol,
              "device": target.device, "slo_p99_ms": profile.slo_p99_ms,
              "closed_peak_rps": closed_peak_rps, **bracket.to_json()}  # fmt: skip
    run.append("capacity.jsonl", record)
    return record


# --- the whole run ------------------------------------------------------------------------


def planned_points(profile: Profile, targets: int) -> int:
    """The progress line's total: floors, level windows, capacity trials, each level at
    its most windows and each search at its most trials (counted at the fewest windows,
    a sweep whose levels took more read "[125/116] ... ~-1.8 min left"); a trial measured
    again after the generator spoilt it is the one thing left out (Progress then grows
    the total)."""
    floors = sum(len(floor_loads(profile, b)) for b in profile.closed_users)
    levels = len(closed_loads(profile)) * profile.max_windows
    return targets * (floors + levels + profile.capacity_max_trials)


def run_device(run: Run, device: str, stacks: list[str], env_block: dict) -> None:
    """Phases 2 to 5 for every stack that runs on `device`."""
    with ExitStack() as exits:
        running: list[RunningStack] = []
        plugins = [load_stack(name) for name in stacks]
        for stack, _device, reason in plan_runs(plugins, [device]):
            key = f"{stack.name}/{device}"
            if reason is not None:
                env_block["skipped"][key] = reason
                print(f"bench: {key} SKIPPED: {reason}", flush=True)
                continue
            try:
                started = start_stack(stack, run.paths,
                                      run.run_dir / "servers" / device / stack.name,
                                      exits, cores=run.server_cores,
                                      env={**server_env(stack, device, cuda_available()),
                                           **twin_env(stack, run.profile)})  # fmt: skip
            except START_ERRORS as err:
                # Skipped with its reason: the bench goes on without it (did_not_start).
                env_block["skipped"][key] = did_not_start(err)
                print(f"bench: {key} SKIPPED: {env_block['skipped'][key]}", flush=True)
                continue
            running.append(started)
            env_block["servers"][key] = {**server_settings(started), **worker_class(started),
                                         "noop_path": stack.noop_path(started.server)}
        targets, refused = served_on_their_device(run.paths, [t for r in running
                                                               for t in targets_of(r, device)])
        env_block["skipped"].update(refused)
        run.neighbours = {t.key: t.server_pid for t in targets}
        run.progress.total += planned_points(run.profile, len(targets))
        calibrated, why = calibrate(run, targets)
        env_block["calibrated"] = env_block.get("calibrated", True) and calibrated
        env_block["calibration_reason"] = why
        print(f"bench: {why}", flush=True)
        measure_targets(run, targets)
        measure_floors(run, running, device)
        for started in running:
            if "worker_class" in env_block["servers"].get(f"{started.name}/{device}", {}):
                worker_class_tradeoff(run, started, device)
                break  # one Flask stack shows the server's trade-off; the app is shared


def twin_env(stack: ServingStack, profile: Profile) -> dict[str, str]:
    """The stack's no-op twin switch when the profile measures the framework's floor: on
    for the whole device, so the twin answers on the very server the levels measured (a
    server restarted for it would not be the same one); {} otherwise."""
    if profile.framework_floor_runs < 1 or stack.noop_env is None:
        return {}
    return dict(stack.noop_env)


def measure_floors(run: Run, running: list[RunningStack], device: str) -> None:
    """Phase 6: each running stack's framework floor (loadtests.framework_floor)."""
    profile = run.profile
    if profile.framework_floor_runs < 1:
        return
    plan = framework_floor.FloorPlan(profile.framework_floor_runs, profile.framework_floor_s,
                                     run.generator_cores, run.server_cores)  # fmt: skip
    baselines_file = run.run_dir / "baselines.json"
    baselines = json.loads(baselines_file.read_text()) if baselines_file.exists() else []
    for started in running:
        record = framework_floor.measure_stack(started, device, baselines, plan, run.raw_dir)
        run.append(framework_floor.FLOOR_FILE, record)
        if record["skipped"]:
            print(f"bench: framework floor {started.name}/{device} not measured: "
                  f"{record['skipped']}", flush=True)  # fmt: skip
            continue
        ours = record["our_code_ms"]
        print(f"bench: framework floor {started.name}/{device}: predict p50 "
              f"{record['predict']['p50_ms']:.3f} ms, no-op {record['framework_floor_ms']:.3f} "
              f"ms, our code {'–' if ours is None else f'{ours:.3f}'} ms", flush=True)
    # A stack that batches is started again under the latency preset, beside the others
    # (idle meanwhile): its floor without the batch wait.
    for record in framework_floor.preset_floors(
            [started.stack for started in running], run.paths, baselines, plan, run.raw_dir,
            run.run_dir / "servers" / device, device):  # fmt: skip
        run.append(framework_floor.FLOOR_FILE, record)
        print(f"bench: framework floor {record['stack']}/{device} ({record['preset']} preset): "
              + (f"not measured: {record['skipped']}" if record["skipped"] else
                 f"predict p50 {record['predict']['p50_ms']:.3f} ms, no-op "
                 f"{record['framework_floor_ms']:.3f} ms"), flush=True)  # fmt: skip
    # Why our code's share is what it is: each Flask stack's app in process, on the
    # servers' cores (the others idle meanwhile). The CPU only: the pieces are CPU code.
    if device == CPU:
        for record in own_code.measure_all([started.stack for started in running], run.paths,
                                           run.server_cores, None,
                                           profile.own_code_iterations):  # fmt: skip
            run.append(own_code.OWN_CODE_FILE, record)


def served_on_their_device(paths: ArtifactPaths, targets: list[Target]
                           ) -> tuple[list[Target], dict[str, str]]:
    """The targets whose servers compute on the device they are asked for, and why each
    other one is refused (every point checks again, in run_point)."""
    live, refused = [], {}
    for target in targets:
        try:
            check_served_device(target, paths)
            live.append(target)
        except devices.DeviceMismatch as err:
            refused[target.key] = f"REFUSED: {err}"
            print(f"bench: {target.key} {refused[target.key]}", flush=True)
    return live, refused


def measure_targets(run: Run, targets: list[Target]) -> None:
    """Phases 4 and 5 against running targets (local servers, or pods in a cluster):
    closed-loop levels interleaved across targets, then each one's SLO capacity."""
    peaks: dict[str, float] = {}
    for load in closed_loads(run.profile):
        for target in targets:
            _level, windows = measure_level(run, target, load)
            rates = [w["rps"] for w in windows if w.get("rps")]
            if load.batch_size == 1 and rates:
                peaks[target.key] = max(peaks.get(target.key, 0.0), statistics.median(rates))
    for target in targets:
        if peaks.get(target.key):
            search_capacity(run, target, peaks[target.key])


# Worker classes compared with the configured one (gunicorn's default sync, and gthread):
# the tail under saturation each gives, measured by wrk at the highest closed level.
OTHER_WORKER_CLASSES = ("sync", "gthread")


def worker_class_tradeoff(run: Run, running: RunningStack, device: str) -> None:
    """wrk at the highest batch-1 concurrency against the stack as configured and, one
    at a time, with each other gunicorn worker class (GUNICORN_CMD_ARGS overrides the
    config file); writes worker_classes.jsonl. Slow-client protection is the other side of
    the trade-off, measured by `make faults`."""
    ok, reason = wrk.wrk_available()
    users = max(run.profile.closed_users[1])
    body = PayloadSet(run.paths.spec, 1, run.paths.reference_predictions, limit=1).batches[0].body
    stack = running.stack
    classes = [("configured", {})] + [
        (name, {"GUNICORN_CMD_ARGS": f"--worker-class {name}"}) for name in OTHER_WORKER_CLASSES
    ]
    for label, extra in classes:
        if not ok:
            run.append("worker_classes.jsonl", {"stack": stack.name, "worker_class": label,
                                                "wrk": None, "wrk_skipped": reason})
            continue
        with ExitStack() as exits:
            target_stack = running
            if extra:
                target_stack = start_stack(
                    stack, run.paths, run.run_dir / "servers" / device / f"{stack.name}-{label}",
                    exits, cores=run.server_cores,
                    env={**server_env(stack, device, cuda_available()), **extra})
            (target,) = [t for t in targets_of(target_stack, device) if t.protocol == REST]
            result = wrk.run_wrk(target.url, body,
                                 {"Content-Type": JSON_CONTENT_TYPE, **target.headers}, users,
                                 run.profile.wrk_duration_s, cores=run.generator_cores,
                                 script_dir=run.raw_dir)  # fmt: skip
            used = worker_class(target_stack).get("worker_class", label)
        run.append("worker_classes.jsonl", {
            "stack": stack.name, "worker_class": used, "configured": not extra,
            "connections": users, "wrk": result.to_json(), "wrk_skipped": None,
        })  # fmt: skip
        print(f"bench: {stack.name} worker class {used}: wrk {users} connections, "
              f"{result.goodput_rps:.0f} req/s, p99 {result.p99_ms:.1f} ms", flush=True)


def worker_class(running: RunningStack) -> dict:
    """The gunicorn worker class a Flask stack runs, read from its log (gunicorn prints
    "Using worker: <class>"); {} for other stacks."""
    for line in running.server.log_tail(400).splitlines():
        if "Using worker:" in line:
            return {"worker_class": line.rsplit("Using worker:", 1)[1].strip()}
    return {}


def describe(run: Run, devices: list[str], stacks: list[str]) -> dict:
    profile = run.profile
    processes = generator_processes(run.generator_cores)
    nginx_ok, nginx_why = nginx_available()
    wrk_ok, wrk_why = wrk.wrk_available()
    return environment.describe({
        "profile": profile.name,
        "server_cores": run.server_cores,
        "generator_cores": run.generator_cores,
        "pinning": "taskset: servers, the null server and in-process baselines on server "
        "cores; Locust and wrk on generator cores",
        "warmup_s": profile.warmup_s,
        "duration_s": profile.duration_s,
        "repeats": profile.min_windows,
        "slo_p99_ms": profile.slo_p99_ms,
        "devices": devices,
        "model": model_block(run.paths),
        "floor_paths": {name: load_stack(name).floor_path for name in stacks},
        "stack_kinds": {name: stack_kind(load_stack(name)) for name in stacks},
        "generator_processes": processes,
        "generator_note": (f"{processes} Locust processes (--processes), one per generator "
                           "core" if processes > 1 else
                           "one generator core: Locust runs as one process"),
        "arrivals": {"kind": profile.arrivals, "seed": profile.seed},
        "tools": {"nginx": nginx_why if nginx_ok else f"missing: {nginx_why}",
                  "wrk": wrk_why if wrk_ok else f"missing: {wrk_why}"},
        "generator_rule": calibration.rule_text(),
        "divergence_limit": wrk.DIVERGENCE_LIMIT,
        "wrk_runs": {"repeats": profile.wrk_repeats, "duration_s": profile.wrk_duration_s},
        "framework_floor": {"runs": profile.framework_floor_runs,
                            "duration_s": profile.framework_floor_s,
                            "connections": framework_floor.CONNECTIONS},
        "lateness_share_of_slo": analysis.LATENESS_SHARE_OF_SLO,
        "max_error_rate": capacity.MAX_ERROR_RATE,
        "stability": {"min_windows": profile.min_windows, "max_windows": profile.max_windows,
                      "tolerance": profile.stability_tolerance,
                      "min_requests": profile.min_requests},
        "capacity_search": {"precision": profile.capacity_precision,
                            "max_trials": profile.capacity_max_trials},
        "interleaved": True,
        "neighbour_note": "every stack runs for the whole sweep, idle on the server cores "
        "while another is measured; neighbours_cpu_pct is their CPU during each point",
        "servers": {},
        "skipped": {},
    })  # fmt: skip


def sweep(profile: Profile, stacks: list[str], paths: ArtifactPaths, run_dir: Path,
          devices: list[str] | None = None, baselines: Callable[..., None] | None = None,
          server_cpus: int | None = None) -> None:
    """The whole comparison into `run_dir` (see the module docstring); `server_cpus`
    narrows every server to that many of the server cores (recorded in the run)."""
    devices = devices or default_devices(cuda_available())
    server_cores, generator_cores = split_cores(usable_cores())
    server_cores = limit_cores(server_cores, server_cpus)
    run = Run(profile, paths, run_dir, server_cores, generator_cores,
              Progress(0, profile.warmup_s + profile.duration_s + 3))  # fmt: skip
    run.raw_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "points.jsonl").touch()
    env_block = describe(run, devices, stacks)
    if server_cpus is not None:
        env_block["server_cpus"] = server_cpus
    started = time.monotonic()
    (baselines or run_baselines)(run)
    print(f"bench: servers on cores {server_cores}, Locust and wrk on cores "
          f"{generator_cores}; {env_block['generator_note']}", flush=True)
    for device in devices:
        run_device(run, device, stacks, env_block)
    if profile.coldstart_repeats:
        # After every server is stopped: each start is from nothing, on the server cores.
        print(f"bench: cold start, {profile.coldstart_repeats} per stack and warm-up mode",
              flush=True)  # fmt: skip
        coldstart.measure(stacks, paths, run_dir, server_cores, profile.coldstart_repeats,
                          generator_cores)  # fmt: skip
    env_block["sweep_minutes"] = round((time.monotonic() - started) / 60, 1)
    (run_dir / "environment.json").write_text(json.dumps(env_block, indent=2) + "\n")


def run_baselines(run: Run) -> None:
    print(f"bench: baselines in-process on cores {run.server_cores} ...", flush=True)
    subprocess.run(baseline_command(run.paths.root, run.profile.baseline_batches,
                                    run.profile.baseline_iterations, run.server_cores,
                                    run.run_dir / "baselines.json"), check=True)  # fmt: skip
