"""The load-test sweep from inside a cluster, against servers given by URL.

  python -m loadtests.cluster --out /results --run-id k8s-gpu-20260101-1200 \\
      --profile quick --device cuda \\
      --target tf_serving/rest=http://tf-serving:8501 --target tf_serving/grpc=tf-serving:8500 \\
      --target torchserve/rest=http://torchserve:8080 \\
      --target flask_torch/rest=http://flask-torch:8000 \\
      --secret-file torchserve=/var/run/secrets/digitnet/torchserve/inference-key

Each target's client comes from its stack plugin (`remote_client`), and `--secret-file`
hands a stack the credential its clients need (TorchServe's inference key). With
`--workers N` (LOADTEST_WORKERS) every window runs Locust's distributed mode: a master in
this pod, the users in N worker processes, one per worker pod (k8s/base/loadgen.yaml,
loadtests/worker.py), each judged for saturation on its own CPU (loadtests/distributed.py).

The Job made from k8s/base/loadgen.yaml runs this (image: loadtests/Dockerfile). Each
target gets the same phases as in `make bench` (loadtests.sweep.measure_targets: the same
locustfile, profiles, answer key, per-request records, wrk beside each closed REST level
and the SLO capacity search; calibrated against the null server in the pod), and the
run directory gets what `make bench` writes except what needs the servers' own machine:
raw/, points.jsonl, levels.jsonl, capacity.jsonl and environment.json, but no in-process
baselines and no server CPU/RSS (the servers are
other pods). When done it writes <out>/<run-id>.complete (or .failed) and waits, up to
--hold-s, for `make k8s-loadtest` to copy the run out and create <out>/<run-id>.collected;
the report is built there, where matplotlib is (k8s/cluster.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.clients import Predictor
from digitnet.env import env_float, env_int, env_str
from digitnet.spec import ModelSpec
from harness.payload import PayloadSet, check_answer
from loadtests import environment
from loadtests.distributed import MASTER_PORT, Workers
from loadtests.profiles import PROFILES
from loadtests.runner import Progress, Target, model_block, target_for
from loadtests.sweep import (
    Run,
    calibrate,
    measure_targets,
    planned_points,
    served_on_their_device,
)
from services.process import usable_cores
from services.registry import load_stack

CGROUP_ROOT = Path("/sys/fs/cgroup")
READY_TIMEOUT_S = 300.0
READY_POLL_S = 5.0
HOLD_POLL_S = 2.0
COMPLETE_SUFFIX = ".complete"
FAILED_SUFFIX = ".failed"
COLLECTED_SUFFIX = ".collected"


@dataclass
class RemoteTarget:
    """A stack's protocol served elsewhere: the plugin's client for it and the load target
    made from that client."""

    client: Predictor
    target: Target


def parse_target(text: str, device: str, spec: ModelSpec,
                 secrets: dict[str, str] | None = None) -> RemoteTarget:
    """`stack/protocol=url` -> the stack plugin's client and the runner Target for a server
    that runs elsewhere.

    REST urls are base urls (http://torchserve:8080); gRPC takes host:port. The server's
    process is not ours to sample (server_pid None), and metrics ports are loopback-only in
    their pods by design, so no metrics_url either.

    Raises:
        ValueError: for a malformed spec, an unknown stack, a protocol the stack does not
            serve, or a stack whose client needs a secret that was not given.
        KeyError: for a stack that is not registered.
    """
    key, sep, url = text.partition("=")
    stack_name, slash, protocol = key.partition("/")
    if not sep or not slash or not url:
        raise ValueError(f"target {text!r} is not stack/protocol=url")
    stack = load_stack(stack_name)
    if protocol not in stack.protocols:
        raise ValueError(f"{stack.name} does not serve {protocol}")
    client = stack.remote_client(protocol, url.rstrip("/"), spec, (secrets or {}).get(stack.name))
    return RemoteTarget(client, target_for(stack, client, device))


def secret_paths(items: list[str]) -> dict[str, Path]:
    """`stack=path` items -> stack -> path.

    Raises:
        ValueError: for an item without `=`.
    """
    paths = {}
    for item in items:
        stack, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--secret-file {item!r} is not stack=path")
        paths[stack] = Path(path)
    return paths


def parse_secret_files(items: list[str]) -> dict[str, str]:
    """`stack=path` items -> stack -> the file's content (stripped).

    Raises:
        ValueError: for an item without `=`.
    """
    return {stack: path.read_text().strip() for stack, path in secret_paths(items).items()}


class KeyRefresher:
    """Run.refresh for a cluster sweep: before every window, each target whose stack has a
    secret file is rebuilt when the file's content changed.

    TorchServe writes a new key_file.json whenever it restarts, so a restart mid-run makes
    every request 401 until the client has the new key. `make k8s-loadtest` watches the
    TorchServe pod and copies its new key into the mounted Secret (k8s/cluster.py), which
    the kubelet then updates in this pod; the window under way when the key changed shows
    its 401s (`key_rejected`, flagged in the report), and the next ones use the new key.
    """

    def __init__(self, texts: list[str], device: str, spec: ModelSpec,
                 paths: dict[str, Path], secrets: dict[str, str]) -> None:
        self.texts = {text.partition("=")[0]: text for text in texts}
        self.device = device
        self.spec = spec
        self.paths = paths
        self.secrets = dict(secrets)
        # target key -> the target rebuilt with the newest key, once one changed.
        self.latest: dict[str, Target] = {}

    def __call__(self, target: Target) -> Target:
        path = self.paths.get(target.stack)
        if path is None:
            return target
        try:
            secret = path.read_text().strip()
        except OSError as err:
            print(f"loadgen: could not re-read {target.stack}'s key at {path}: {err}; "
                  "keeping the one in use", flush=True)
            return self.latest.get(target.key, target)
        if not secret or secret == self.secrets.get(target.stack):
            return self.latest.get(target.key, target)
        self.secrets[target.stack] = secret
        print(f"loadgen: {target.stack}'s key changed (the server restarted and rotated it): "
              "the windows from here on use the new one", flush=True)
        fresh = parse_target(self.texts[f"{target.stack}/{target.protocol}"], self.device,
                             self.spec, self.secrets).target
        self.latest[target.key] = fresh
        return fresh


def target_key(target: Target) -> str:
    return f"{target.stack}/{target.protocol}/{target.device}"


def cgroup_cpus(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this container in CPUs (a pod's limits.cpu), or None if unlimited.

    In a pod the CPU affinity is the whole node; the limit is a CFS quota, visible only
    here (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us).
    """
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file = root / "cpu" / "cpu.cfs_quota_us"
        period_file = root / "cpu" / "cpu.cfs_period_us"
        if quota_file.exists() and period_file.exists():
            quota_us = int(quota_file.read_text())
            return None if quota_us <= 0 else quota_us / int(period_file.read_text())
    except (OSError, ValueError):
        return None
    return None


def answer_problem(remote: RemoteTarget, payloads: PayloadSet) -> str | None:
    """One real predict through the stack's own client; None when the answer is right."""
    batch = payloads.batches[0]
    try:
        logits, classes = remote.client.predict(batch.images)
    except Exception as err:  # noqa: BLE001 - any failure means "not answering yet"
        return f"{type(err).__name__}: {str(err)[:300]}"
    return check_answer(batch, logits, classes)


def wait_for_answers(
    targets: list[RemoteTarget],
    payloads: PayloadSet,
    timeout_s: float = READY_TIMEOUT_S,
    poll_s: float = READY_POLL_S,
) -> dict[str, str]:
    """Polls each target until it answers correctly; returns the reasons of those that
    never did by the deadline (they are skipped and the report lists them)."""
    pending = {target_key(t.target): t for t in targets}
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for key, target in list(pending.items()):
            problem = answer_problem(target, payloads)
            if problem is None:
                print(f"loadgen: {key} answers correctly at {target.target.host}", flush=True)
                del pending[key]
                reasons.pop(key, None)
            else:
                reasons[key] = problem
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return {key: f"no correct answer within {timeout_s:.0f} s: {reasons[key]}" for key in pending}


def sweep(args: argparse.Namespace, run_dir: Path) -> None:
    profile = PROFILES[args.profile]
    spec = ModelSpec.from_env()
    paths = ArtifactPaths(args.artifacts, spec)
    secrets = parse_secret_files(args.secret_file)
    remotes = [parse_target(text, args.device, spec, secrets) for text in args.target]
    targets = [remote.target for remote in remotes]
    generator_cores = usable_cores()
    generator_cpus = cgroup_cpus() or float(len(generator_cores))
    workers = (Workers(args.workers, port=args.master_port, bind_host=args.master_bind_host)
               if args.workers else None)  # fmt: skip
    raw_dir = run_dir / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    where = (f"{args.workers} Locust worker processes, one per worker pod (1 CPU each), "
             f"their master in the Locust pod ({generator_cpus:g} CPUs, with wrk and the "
             "calibration)" if workers else f"{generator_cpus:g} CPUs (the Locust pod's limit)")
    env_block = environment.describe(
        {
            "profile": profile.name,
            "server_cores": "their pods' CPU limits (Kubernetes)",
            "generator_cores": where,
            "pinning": "Kubernetes: Locust pod on a node without server pods "
            "(podAntiAffinity), each server in its own pod with Guaranteed QoS",
            "warmup_s": profile.warmup_s,
            "duration_s": profile.duration_s,
            "repeats": profile.min_windows,
            "slo_p99_ms": profile.slo_p99_ms,
            "devices": [args.device],
            "model": model_block(paths),
            "targets": {target_key(t): t.host for t in targets},
            "cluster": {"node": env_str("NODE_NAME", "") or None,
                        "pod": env_str("POD_NAME", "") or None},
        }
    )
    env_block["versions"]["tensorflow_model_server"] = "in the tf-serving pod (see servers)"
    payloads = PayloadSet(spec, 1, paths.reference_predictions)
    skipped = wait_for_answers(remotes, payloads, args.ready_timeout_s)
    live = [t for t in targets if target_key(t) not in skipped]
    for key, reason in skipped.items():
        print(f"loadgen: {key} SKIPPED: {reason}", flush=True)
    # A GPU pod whose server fell back to its CPU is refused, never measured as a GPU.
    live, refused = served_on_their_device(paths, live)
    skipped.update(refused)
    progress = Progress(planned_points(profile, len(live)),
                        profile.warmup_s + profile.duration_s + 3)  # fmt: skip
    print(f"loadgen: about {progress.total} windows against {len(live)} targets, profile "
          f"{profile.name}, Locust on {where}", flush=True)  # fmt: skip
    (run_dir / "points.jsonl").touch()
    # The same phases as `make bench` (interleaved levels, wrk beside each closed REST
    # level, the SLO capacity search).
    refresh = KeyRefresher(args.target, args.device, spec, secret_paths(args.secret_file),
                           secrets)
    run = Run(profile, paths, run_dir, [], generator_cores, progress,
              generator_cpus=generator_cpus, refresh=refresh, workers=workers)  # fmt: skip
    # The generator's floor, in this pod: Locust and wrk against the null server answering
    # each target's own reply (the image has nginx). It shares the pod's CPUs with the
    # generator (locally it has the server cores), so the floor is a little high, never low.
    calibrated, why = calibrate(run, live)
    print(f"loadgen: {why}", flush=True)
    measure_targets(run, live)
    env_block["calibrated"] = calibrated
    env_block["calibration_reason"] = (
        f"{why} (in the Locust pod, the null server sharing its CPUs)" if calibrated else why)
    env_block["skipped"] = skipped
    (run_dir / "environment.json").write_text(json.dumps(env_block, indent=2) + "\n")


def hold(out: Path, run_id: str, hold_s: float, poll_s: float = HOLD_POLL_S) -> bool:
    """Keeps the pod (and so its emptyDir) alive until the results were collected.

    Returns:
        True when the collector signalled, False when hold_s ran out first.
    """
    collected = out / f"{run_id}{COLLECTED_SUFFIX}"
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        if collected.exists():
            return True
        time.sleep(poll_s)
    return collected.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder (an emptyDir)")
    parser.add_argument("--run-id", default=env_str("LOADTEST_RUN_ID", "")
                        or time.strftime("k8s-%Y%m%d-%H%M%S"))  # fmt: skip
    parser.add_argument("--profile", choices=sorted(PROFILES),
                        default=env_str("LOADTEST_PROFILE", "quick"))  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default=env_str("LOADTEST_DEVICE", "cpu"))  # fmt: skip
    parser.add_argument("--target", action="append", required=True,
                        help="stack/protocol=url, once per target")  # fmt: skip
    parser.add_argument("--secret-file", action="append", default=[],
                        help="stack=path: the credential that stack's clients need")
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--ready-timeout-s", type=float, default=READY_TIMEOUT_S)
    parser.add_argument("--workers", type=int, default=env_int("LOADTEST_WORKERS", 0),
                        help="Locust worker processes elsewhere (worker pods, "
                        "loadtests.worker) for this pod's master; 0: Locust runs here")
    parser.add_argument("--master-port", type=int, default=MASTER_PORT)
    parser.add_argument("--master-bind-host", default="*",
                        help="where the master listens (every address of the pod)")
    parser.add_argument("--hold-s", type=float,
                        default=env_float("LOADTEST_HOLD_S", 3600.0))  # fmt: skip
    args = parser.parse_args(argv)
    run_dir = args.out / args.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        sweep(args, run_dir)
        (args.out / f"{args.run_id}{COMPLETE_SUFFIX}").write_text("ok\n")
        print(f"loadgen: results ready in {run_dir}", flush=True)
    except Exception:  # noqa: BLE001 - reported, kept for collection, then the Job fails
        failed = True
        error = traceback.format_exc()
        print(error, file=sys.stderr, flush=True)
        (args.out / f"{args.run_id}{FAILED_SUFFIX}").write_text(error)
    print(f"loadgen: waiting up to {args.hold_s:.0f} s for the results to be copied out "
          "(make k8s-loadtest)", flush=True)  # fmt: skip
    collected = hold(args.out, args.run_id, args.hold_s)
    print(f"loadgen: {'collected' if collected else 'not collected; giving up'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
