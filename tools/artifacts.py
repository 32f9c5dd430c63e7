"""`make artifacts`: trains the model and writes every artifact the stacks serve
(harness.artifacts: the shared model files, then each stack plugin's own build).

    python -m tools.artifacts --out artifacts [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from digitnet.artifacts import DEFAULT_ARTIFACTS, ArtifactPaths
from digitnet.spec import ModelSpec
from harness.artifacts import build_all, complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_ARTIFACTS)
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = parser.parse_args()
    spec = ModelSpec.from_env()
    paths = ArtifactPaths(args.out, spec)
    if complete(paths) and not args.force:
        print(f"artifacts: up to date in {args.out} (use --force to rebuild)")
        return
    metrics = build_all(args.out, spec)
    print(
        f"artifacts: trained {spec.name} in {metrics['train_seconds']} s; test accuracy "
        f"torch {metrics['test_accuracy_torch']:.4f}, keras {metrics['test_accuracy_keras']:.4f} "
        f"on {metrics['test_size']} held-out digits -> {args.out}"
    )


if __name__ == "__main__":
    main()
