"""Where runs write their results: one root for load tests, reliability runs and audits."""

from __future__ import annotations

import time
from pathlib import Path

from digitnet.env import env_str

RESULTS_ROOT = Path(env_str("DIGITNET_RESULTS", "results"))


def timestamped_dir(kind: str | None = None, run_id: str | None = None) -> Path:
    """results/[<kind>/]<run_id or a timestamp>/, created."""
    base = RESULTS_ROOT / kind if kind else RESULTS_ROOT
    out = base / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    return out
