"""`make deploy-local` / `make stop` / `make status`: every stack on this workstation.

With a docker engine, docker compose runs the stacks that declare a compose service (the
official tensorflow/serving image included). Without one, each registered stack runs as
native processes on its default ports (harness.lifecycle.launch); a stack this machine
cannot run is skipped with the reason and how to get it. State lives in run/state.json so
`stop` and `status` find what `up` started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.data import load_split
from digitnet.spec import ModelSpec
from harness.artifacts import ensure_artifacts
from harness.lifecycle import launch
from services.process import LOOPBACK, ServerProcess, port_is_free
from services.registry import all_stacks, load_stack

RUN_DIR = Path(os.environ.get("DIGITNET_RUN_DIR", "run"))
STATE_FILE = RUN_DIR / "state.json"
COMPOSE_FILE = Path("docker-compose.yml")


def docker_engine_available() -> bool:
    """True only when a docker engine answers (the CLI alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


def load_state() -> dict:
    return json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {"stacks": {}}


def save_state(state: dict) -> None:
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")


def show_prediction(label: str, url_hint: str, client, images, labels) -> None:
    logits, classes = client.predict(images[:1])
    print(
        f"  {label:<18} {url_hint}\n"
        f"  {'':<18} digit labelled {labels[0]} -> predicted {classes[0]}, "
        f"logits[:3]={[round(float(v), 3) for v in logits[0][:3]]}"
    )


def up_native(paths: ArtifactPaths, mode: str) -> int:
    state = load_state()
    if any(ServerProcess.from_json(s["server"]).alive() for s in state["stacks"].values()):
        print("deploy-local: stacks from an earlier `up` are still running; `make stop` first")
        return 1
    split = load_split(paths.spec)
    state = {"mode": mode, "stacks": {}}
    skipped = []
    for stack in all_stacks():
        ok, reason = stack.available()
        if not ok:
            skipped.append((stack.name, reason))
            continue
        busy = [port for port in stack.default_ports.values() if not port_is_free(port)]
        if busy:
            skipped.append((stack.name, f"ports {busy} are already in use by another program"))
            continue
        started = time.monotonic()

        def remember(server: ServerProcess, stack=stack) -> None:
            # Saved before waiting, so `make stop` finds a server that never gets ready.
            state["stacks"][stack.name] = {
                "server": server.to_json(),
                "ports": dict(stack.default_ports),
                "started_at": time.time(),
            }
            save_state(state)

        try:
            running = launch(stack, paths, RUN_DIR / stack.name, on_start=remember,
                             ports=stack.default_ports)
        except (TimeoutError, RuntimeError) as err:
            print(f"deploy-local: {stack.name} failed to become ready: {err}")
            return 1
        ready_s = time.monotonic() - started
        state["stacks"][stack.name]["ready_seconds"] = round(ready_s, 2)
        save_state(state)
        print(f"{stack.name}: ready in {ready_s:.1f} s from start (model answering)")
        print(f"  log: {running.server.log_path}")
        for client in running.clients:
            show_prediction(
                client.label,
                getattr(client, "url", str(running.server.endpoints)),
                client,
                split.test_images,
                split.test_labels,
            )
    for name, reason in skipped:
        print(f"{name}: SKIPPED: {reason}")
    print("stop everything with `make stop`; see what runs with `make status`")
    return 0


def compose_read_file(service: str, path: str) -> str:
    """A file's content inside a running compose service's container."""
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "exec", "-T", service, "cat", path],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def compose_clients(spec: ModelSpec) -> list:
    """Clients for every stack's compose service on its published loopback ports."""
    clients = []
    for stack in all_stacks():
        if stack.compose_service is None:
            continue
        service = stack.compose_service
        secret = stack.compose_secret(lambda path, s=service: compose_read_file(s, path))
        for protocol in stack.protocols:
            port = stack.default_ports[stack.protocol_ports[protocol]]
            clients.append(stack.remote_client(protocol, f"http://{LOOPBACK}:{port}", spec, secret))
    return clients


def up_compose(paths: ArtifactPaths) -> int:
    started = time.monotonic()
    subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "up", "-d", "--build", "--wait"],
        check=True,
    )
    save_state({"mode": "compose", "stacks": {}})
    print(
        f"deploy-local: docker compose stacks healthy after {time.monotonic() - started:.1f} s "
        "(image builds included; `docker compose ps` lists them)"
    )
    split = load_split(paths.spec)
    for client in compose_clients(paths.spec):
        url = getattr(client, "url", getattr(client, "target", ""))
        show_prediction(client.label, url, client, split.test_images, split.test_labels)
    return 0


def stop() -> int:
    state = load_state()
    if state.get("mode") == "compose":
        subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), "down"], check=False)
    for name, entry in state["stacks"].items():
        server = ServerProcess.from_json(entry["server"])
        was_running = server.alive()
        load_stack(name).stop(server)
        print(f"{name}: {'stopped' if was_running else 'was not running'}")
    if STATE_FILE.exists():
        STATE_FILE.unlink()
    if not state["stacks"] and state.get("mode") != "compose":
        print("stop: nothing was started by deploy-local")
    return 0


def status() -> int:
    state = load_state()
    if not state["stacks"]:
        print(f"status: nothing started by deploy-local ({state.get('mode', 'no state')})")
        return 0
    for name, entry in state["stacks"].items():
        server = ServerProcess.from_json(entry["server"])
        alive = server.alive()
        print(
            f"{name:<12} pid {server.pid:<8} {'running' if alive else 'DEAD':<8} "
            f"ports {entry['ports']}  ready in {entry.get('ready_seconds', '?')} s  "
            f"log {server.log_path}"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "stop", "status"])
    parser.add_argument("--artifacts", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument(
        "--mode",
        choices=["auto", "native", "compose"],
        default=os.environ.get("DEPLOY_MODE", "auto"),
        help="auto: compose when a docker engine answers, else native processes",
    )
    args = parser.parse_args()
    if args.command == "stop":
        return stop()
    if args.command == "status":
        return status()
    paths = ensure_artifacts(args.artifacts)
    mode = args.mode
    if mode == "auto":
        mode = "compose" if docker_engine_available() else "native"
        if mode == "native":
            print("deploy-local: no docker engine answers; running the stacks as native processes")
    return up_compose(paths) if mode == "compose" else up_native(paths, mode)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
