"""`make configs`: writes every committed config file that a stack generates from
digitnet.spec's defaults (TF Serving's batching parameters and their k8s copy, TorchServe's
config.properties serving lines), and the TF Serving image tag that compose, both k8s
overlays and the READMEs name (k8s/images.py TF_SERVING_VERSION); `--check` only says
which are out of date.

    python -m tools.configs [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from k8s.images import tf_serving_generated_files
from services.registry import all_stacks


def stale_files() -> dict[Path, str]:
    """Generated files whose committed text differs from what their stack generates."""
    stale = {}
    generated = [stack.generated_files() for stack in all_stacks()]
    for files in [*generated, tf_serving_generated_files()]:
        for path, text in files.items():
            if not path.exists() or path.read_text() != text:
                stale[path] = text
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args()
    stale = stale_files()
    for path, text in stale.items():
        if args.check:
            print(f"configs: {path} is out of date (run `make configs`)")
        else:
            path.write_text(text)
            print(f"configs: wrote {path}")
    if not stale:
        print("configs: every generated config is up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
