"""A stand-in for kubectl in tests/k8s/test_collect.py: one load generator pod whose
state lives in a folder ($FAKE_K8S), no cluster.

  $FAKE_K8S/pods/<name>.json   the pod (`get pod <name> -o json`); absent = NotFound
  $FAKE_K8S/fs/<name>/         the pod's filesystem: `exec` runs the command here, with
                               every argument under /results mapped into it
  $FAKE_K8S/hang               present: every `exec` hangs (a dropped connection)
  $FAKE_K8S/calls.log          one line per call
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ["FAKE_K8S"])


def main(argv: list[str]) -> int:
    with (STATE / "calls.log").open("a") as log:
        log.write(" ".join(argv) + "\n")
    if argv[:1] == ["--namespace"]:
        argv = argv[2:]
    verb, name = argv[0], argv[2] if argv[:2] == ["get", "pod"] else argv[1]
    pod_file = STATE / "pods" / f"{name}.json"
    if verb == "get":
        if not pod_file.exists():
            print(f'Error from server (NotFound): pods "{name}" not found', file=sys.stderr)
            return 1
        print(pod_file.read_text())
        return 0
    if verb == "logs":
        print("loadgen: point")
        return 0
    if verb == "exec":
        if (STATE / "hang").exists():
            time.sleep(3600)
        phase = json.loads(pod_file.read_text())["status"]["phase"] if pod_file.exists() else ""
        if phase != "Running":
            print("error: unable to upgrade connection: container not found", file=sys.stderr)
            return 1
        root = STATE / "fs" / name
        command = argv[argv.index("--") + 1:]
        mapped = [a.replace("/results", str(root / "results")) for a in command]
        return subprocess.run(mapped, check=False).returncode
    print(f"fake kubectl: unsupported {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
