"""TorchServe readiness: the model's workers are READY, asked of the management API.

/ping is not enough: it answers Healthy while workers are still loading or have died.
Standard library only, because the Docker image runs this file as its HEALTHCHECK;
services/torchserve/launch.py uses the same functions for wait_ready.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

READY_STATUS = "READY"
DEFAULT_MANAGEMENT_URL = "http://127.0.0.1:8081"
DEFAULT_MODEL = "digitnet"
# TorchServe writes this into its working directory when token authorization is on.
KEY_FILE = "key_file.json"
DEFAULT_TIMEOUT_S = 5.0


def management_key(key_file: Path) -> str:
    """The management key from TorchServe's key_file.json.

    Raises:
        FileNotFoundError: before TorchServe has written it.
    """
    return json.loads(key_file.read_text())["management"]["key"]


def model_status(
    management_url: str, model_name: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """GET /models/<name>: version, batch settings and one entry per worker.

    Raises:
        urllib.error.URLError: when the API does not answer 200.
    """
    request = urllib.request.Request(
        f"{management_url.rstrip('/')}/models/{model_name}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        return json.loads(response.read())[0]


def workers_ready(status: dict[str, Any]) -> bool:
    """True when the model has at least minWorkers workers and every one is READY."""
    workers = status.get("workers", [])
    return len(workers) >= max(1, int(status.get("minWorkers", 1))) and all(
        worker.get("status") == READY_STATUS for worker in workers
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--management-url", default=DEFAULT_MANAGEMENT_URL)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--key-file", type=Path, default=Path(KEY_FILE))
    args = parser.parse_args()
    try:
        status = model_status(args.management_url, args.model, management_key(args.key_file))
    except (OSError, ValueError, KeyError, IndexError) as err:
        print(f"unhealthy: {err}", file=sys.stderr)
        sys.exit(1)
    if not workers_ready(status):
        states = [worker.get("status") for worker in status.get("workers", [])]
        print(f"unhealthy: workers {states}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
